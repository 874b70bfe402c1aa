"""Spoken digits offline: eSpeak NG synthesis, Lyon's passive-ear cochleagram, BSA spike trains.

See ``docs/speech.md``. The synthesiser (``synth``) needs the ``espeakng-loader`` wheel, loaded
on first use; the cochlea (``lyon``) and the spike codes (``bsa``) need only numpy and scipy.
"""

from rnnlab.tasks.speech.bsa import bsa_encode, bsa_filter, hsa_encode, snr_db, spike_decode
from rnnlab.tasks.speech.digits import (
    N_CLASSES,
    SpokenDigits,
    spoken_digits,
    static_features,
    word_error_rate,
)
from rnnlab.tasks.speech.lyon import (
    LyonFilters,
    cascade_response,
    cochleagram,
    design_lyon_filters,
    ear_bandwidth,
)
from rnnlab.tasks.speech.synth import (
    DIGIT_WORDS,
    Utterances,
    native_sample_rate,
    resample,
    split_voices,
    synthesize,
    synthesize_digits,
    trim_silence,
    voice_variants,
)

__all__ = [
    "DIGIT_WORDS",
    "N_CLASSES",
    "LyonFilters",
    "SpokenDigits",
    "Utterances",
    "bsa_encode",
    "bsa_filter",
    "cascade_response",
    "cochleagram",
    "design_lyon_filters",
    "ear_bandwidth",
    "hsa_encode",
    "native_sample_rate",
    "resample",
    "snr_db",
    "spike_decode",
    "split_voices",
    "spoken_digits",
    "static_features",
    "synthesize",
    "synthesize_digits",
    "trim_silence",
    "voice_variants",
    "word_error_rate",
]
