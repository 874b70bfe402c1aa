"""Spoken digits synthesised offline with eSpeak NG, many voice variants, held-out voices.

The synthesiser is eSpeak NG (a formant synthesiser; https://github.com/espeak-ng/espeak-ng)
as shipped inside the PyPI wheel ``espeakng-loader``: the wheel holds ``libespeak-ng.so`` and
its voice data, and the library is driven here through ``ctypes`` with the calls of its public
C API (``speak_lib.h``):

* ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)`` returns the sample rate
  (22050 Hz);
* ``espeak_SetSynthCallback(cb)``: ``cb(short *wav, int n, espeak_EVENT *events)`` receives the
  int16 samples, returning 0 to continue;
* ``espeak_SetVoiceByName("en+<variant>")``, then ``espeak_SetParameter(p, value, 0)`` with
  ``p`` = 1 rate (words per minute, 80..450), 2 volume (0..200), 3 pitch (0..100),
  4 pitch range (0..100);
* ``espeak_Synth(text, len + 1, 0, POS_CHARACTER, 0, espeakCHARS_UTF8, NULL, NULL)`` and
  ``espeak_Synchronize()``.

A *voice* here is an English voice with one of the variant files of the data
(``espeak-ng-data/voices/!v``: ``m1``..``m8``, ``f1``..``f5``, ``croak``, ``whisper``, ``klatt``,
...; :func:`voice_variants` lists what the installed data holds). Pitch and rate of each
utterance are drawn from a seeded generator, so one voice gives many utterances; the train/test
split (:func:`split_voices`) holds whole voices out of training, so a test speaker is never heard
in training.

eSpeak NG keeps its state in process-global variables (the voice, the parameters, the callback)
and is not thread-safe: every in-process use (:func:`synthesize`) goes through one module lock,
held from setting the voice to the end of synthesis. Its output also depends slightly on what
the process spoke before (a C ``static`` pitch-flutter index that nothing resets; see
``_espeak``), so :func:`synthesize_digits` runs each batch in a fresh worker process by default:
the same seed then gives bit-identical waves whatever ran before. Nothing is cached on disk
unless ``cache_dir`` is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_bool, check_int, check_number
from rnnlab.tasks.speech import _espeak

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_SAMPLE_RATE = 8000

_LOCK = threading.Lock()
_ENGINE: _espeak.Engine | None = None


def _engine() -> _espeak.Engine:
    """The in-process library, loaded on first use (under the lock)."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            _ENGINE = _espeak.Engine()
        return _ENGINE


def native_sample_rate() -> int:
    """The synthesiser's own sample rate (Hz), 22050 for eSpeak NG."""
    return _engine().sample_rate


def voice_variants() -> tuple[str, ...]:
    """Names of the voice variants the installed eSpeak NG data holds (``voices/!v``), sorted."""
    return _engine().variants


def _check_variant(variant: object) -> str:
    if not isinstance(variant, str):
        raise TypeError(f"variant must be a str, got {type(variant).__name__}")
    known = voice_variants()
    if variant not in known:
        # eSpeak NG silently falls back to the plain voice on an unknown variant.
        raise ValueError(f"unknown voice variant {variant!r}; the installed data holds "
                         f"{len(known)}: {', '.join(known[:12])}, ...")
    return variant


def trim_silence(wave: np.ndarray, sample_rate: int, *, threshold_db: float = -35.0,
                 window_s: float = 0.01, margin_s: float = 0.01) -> np.ndarray:
    """``wave`` without its leading and trailing silence.

    Silence is where the RMS over ``window_s`` stays below ``threshold_db`` relative to the
    loudest window; ``margin_s`` of it is kept on each side. An all-silent wave is returned as is.
    """
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"wave must be 1-D, got shape {x.shape}")
    check_number("threshold_db", threshold_db, high=0.0, high_open=True)
    width = max(1, round(check_number("window_s", window_s, low=0.0, low_open=True)
                         * sample_rate))
    margin = round(check_number("margin_s", margin_s, low=0.0) * sample_rate)
    if x.size == 0:
        return x
    power = np.convolve(x * x, np.full(width, 1.0 / width), mode="same")
    peak = power.max()
    if peak <= 0.0:
        return x
    loud = np.flatnonzero(power >= peak * 10.0 ** (threshold_db / 10.0))
    start, stop = max(0, loud[0] - margin), min(x.size, loud[-1] + 1 + margin)
    return x[start:stop]


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``wave`` resampled from ``rate_in`` to ``rate_out`` Hz by polyphase filtering
    (``scipy.signal.resample_poly``, a Kaiser-windowed FIR anti-aliasing filter)."""
    from scipy.signal import resample_poly

    rate_in = check_int("rate_in", rate_in, low=1)
    rate_out = check_int("rate_out", rate_out, low=1)
    if rate_in == rate_out:
        return np.asarray(wave, dtype=np.float64)
    ratio = Fraction(rate_out, rate_in)
    return resample_poly(np.asarray(wave, dtype=np.float64), ratio.numerator, ratio.denominator)


def _check_settings(variant: object, rate: object, pitch: object, pitch_range: object,
                    volume: object) -> tuple[str, int, int, int, int]:
    """The arguments of ``_espeak.Engine.synth`` after ``text``, checked, in its order."""
    return (_check_variant(variant), check_int("rate", rate, low=80, high=450),
            check_int("pitch", pitch, low=0, high=100),
            check_int("pitch_range", pitch_range, low=0, high=100),
            check_int("volume", volume, low=1, high=200))


def _finish(samples: np.ndarray, native_rate: int, sample_rate: int, trim: bool,
            what: str) -> np.ndarray:
    if samples.size == 0:
        raise RuntimeError(f"eSpeak NG produced no audio for {what}")
    wave = resample(samples.astype(np.float64) / 32768.0, native_rate, sample_rate)
    return trim_silence(wave, sample_rate) if trim else wave


def synthesize(text: str, *, variant: str = "m1", pitch: int = 50, rate: int = 175,
               pitch_range: int = 50, volume: int = 60,
               sample_rate: int = DEFAULT_SAMPLE_RATE, trim: bool = True,
               seed: int = 0) -> np.ndarray:
    """One utterance of ``text`` by the English voice ``en+variant``, as float64 samples in
    [-1, 1] at ``sample_rate`` Hz, silence trimmed (:func:`trim_silence`) unless ``trim=False``.
    ``seed`` seeds the library's noise (breath, whisper). Runs in this process under the module
    lock (see the module doc on reproducibility).

    ``pitch`` and ``pitch_range`` are eSpeak NG's 0..100 scales (50 = the voice's own),
    ``rate`` is in words per minute (80..450), ``volume`` 0..200 (60 keeps the loudest
    variants below int16 clipping).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty str, got {text!r}")
    settings = _check_settings(variant, rate, pitch, pitch_range, volume)
    sample_rate = check_int("sample_rate", sample_rate, low=1000)
    trim = check_bool("trim", trim)
    seed = check_int("seed", seed, low=0, high=2**31 - 1)
    engine = _engine()
    with _LOCK:
        samples = engine.synth(text, *settings, seed)
    return _finish(samples, engine.sample_rate, sample_rate, trim, f"{text!r} en+{variant}")


def _synthesize_fresh(job: dict) -> tuple[list[np.ndarray], int]:
    """Run ``job`` (see ``_espeak.run_job``) in a new Python process from the library's initial
    state; int16 waves and their sample rate."""
    with tempfile.TemporaryDirectory(prefix="rnnlab-espeak-") as tmp:
        out = os.path.join(tmp, "waves.npz")
        # The worker file runs as a script: it imports numpy and espeakng_loader only.
        done = subprocess.run([sys.executable, _espeak.__file__, out], input=json.dumps(job),
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the eSpeak NG worker process failed (exit {done.returncode}):"
                               f" {done.stderr.strip()[-2000:]}")
        with np.load(out) as stored:
            lengths, flat, rate = stored["lengths"], stored["samples"], int(stored["sample_rate"])
    return np.split(flat, np.cumsum(lengths)[:-1]) if lengths.size else [], rate


@dataclass(frozen=True)
class Utterances:
    """Synthesised words: ``waves[i]`` (float64, 1-D) says ``DIGIT_WORDS[labels[i]]`` in voice
    ``voices[i]`` at ``pitches[i]``/``rates[i]``, sampled at ``sample_rate`` Hz."""

    waves: tuple[np.ndarray, ...]
    labels: np.ndarray  # (n,) int64 in 0..9
    voices: tuple[str, ...]
    pitches: np.ndarray  # (n,) int64, eSpeak 0..100 scale
    rates: np.ndarray  # (n,) int64, words per minute
    sample_rate: int

    def __len__(self) -> int:
        return len(self.waves)


def _check_range(name: str, bounds: object, low: int, high: int) -> tuple[int, int]:
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise TypeError(f"{name} must be a (low, high) pair, got {bounds!r}")
    a = check_int(f"{name}[0]", bounds[0], low=low, high=high)
    b = check_int(f"{name}[1]", bounds[1], low=a, high=high)
    return a, b


def synthesize_digits(voices: tuple[str, ...] | list[str], *, repeats: int = 1,
                      digits: tuple[int, ...] | list[int] = tuple(range(10)),
                      pitch: tuple[int, int] = (30, 70), rate: tuple[int, int] = (130, 230),
                      pitch_range: int = 50, volume: int = 60,
                      sample_rate: int = DEFAULT_SAMPLE_RATE, seed: int | None = 0,
                      generator: torch.Generator | None = None, fresh_process: bool = True,
                      cache_dir: str | os.PathLike[str] | None = None) -> Utterances:
    """Every digit word of ``digits`` spoken ``repeats`` times by every voice variant of
    ``voices``, each utterance at a pitch and rate drawn uniformly (integers, ends included)
    from ``pitch`` and ``rate`` with the seeded generator (:func:`rnnlab._random.make_generator`).

    Order: voice, then repeat, then digit. ``fresh_process=True`` synthesises the batch in a new
    worker process (~1 s to start), so the waves depend on the arguments alone; ``False`` uses
    this process's library under the lock (faster; waves may differ by a few samples of pitch
    jitter with what the process spoke before). With ``cache_dir`` the result is stored there as
    one ``.npz`` named by a digest of the arguments and the library's version, and read back on
    the next identical call; without it nothing touches the disk (but the worker's own temporary
    file).
    """
    if isinstance(voices, str) or not isinstance(voices, (tuple, list)) or not voices:
        raise TypeError(f"voices must be a non-empty list of variant names, got {voices!r}")
    voices = tuple(_check_variant(v) for v in voices)
    if len(set(voices)) != len(voices):
        raise ValueError(f"voices must not repeat a variant, got {voices}")
    repeats = check_int("repeats", repeats, low=1)
    if not isinstance(digits, (tuple, list)) or not digits:
        raise TypeError(f"digits must be a non-empty list of ints 0..9, got {digits!r}")
    digits = tuple(check_int("digit", d, low=0, high=9) for d in digits)
    pitch = _check_range("pitch", pitch, 0, 100)
    rate = _check_range("rate", rate, 80, 450)
    _, _, _, pitch_range, volume = _check_settings(voices[0], 175, 50, pitch_range, volume)
    sample_rate = check_int("sample_rate", sample_rate, low=1000)
    fresh_process = check_bool("fresh_process", fresh_process)
    gen = make_generator(seed, generator)
    n = len(voices) * repeats * len(digits)
    pitches = torch.randint(pitch[0], pitch[1] + 1, (n,), generator=gen).numpy()
    rates = torch.randint(rate[0], rate[1] + 1, (n,), generator=gen).numpy()
    noise_seeds = torch.randint(0, 2**31 - 1, (n,), generator=gen).tolist()
    labels = np.tile(np.asarray(digits, np.int64), len(voices) * repeats)
    names = tuple(v for v in voices for _ in range(repeats * len(digits)))
    path = None
    if cache_dir is not None:
        key = repr((voices, repeats, digits, pitches.tolist(), rates.tolist(), noise_seeds,
                    pitch_range,
                    volume, sample_rate, fresh_process, _engine().version))
        path = os.path.join(os.fspath(cache_dir),
                            f"digits-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz")
        if os.path.isfile(path):
            with np.load(path) as stored:
                lengths, flat = stored["lengths"], stored["samples"]
            waves = tuple(np.split(flat, np.cumsum(lengths)[:-1]))
            return Utterances(waves, labels, names, pitches, rates, sample_rate)
    job = {"texts": [DIGIT_WORDS[d] for d in labels], "variants": list(names),
           "rates": rates.tolist(), "pitches": pitches.tolist(), "ranges": [pitch_range] * n,
           "volumes": [volume] * n, "seeds": noise_seeds}
    if fresh_process:
        raw, native = _synthesize_fresh(job)
    else:
        engine = _engine()
        with _LOCK:
            raw = _espeak.run_job(engine, job)
        native = engine.sample_rate
    waves = tuple(_finish(r, native, sample_rate, True, f"{t!r} en+{v}")
                  for r, t, v in zip(raw, job["texts"], names, strict=True))
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + f".{os.getpid()}.tmp.npz"
        np.savez(tmp, lengths=np.array([w.size for w in waves]), samples=np.concatenate(waves))
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return Utterances(waves, labels, names, pitches, rates, sample_rate)


def split_voices(voices: tuple[str, ...] | list[str], n_test: int, *, seed: int | None = 0,
                 generator: torch.Generator | None = None
                 ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(train_voices, test_voices)``: ``n_test`` of ``voices`` drawn by a seeded permutation
    held out for testing, the rest for training; disjoint, each in the order given."""
    voices = tuple(voices)
    if len(set(voices)) != len(voices):
        raise ValueError(f"voices must not repeat a variant, got {voices}")
    n_test = check_int("n_test", n_test, low=1, high=max(1, len(voices) - 1))
    if len(voices) < 2:
        raise ValueError(f"need at least 2 voices to hold some out, got {len(voices)}")
    order = torch.randperm(len(voices), generator=make_generator(seed, generator)).tolist()
    held = set(order[:n_test])
    return (tuple(v for i, v in enumerate(voices) if i not in held),
            tuple(v for i, v in enumerate(voices) if i in held))
