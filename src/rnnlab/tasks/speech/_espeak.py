"""The eSpeak NG library through ctypes, and a worker that synthesises a batch in a fresh process.

Imports only the standard library, numpy and ``espeakng_loader``: the file also runs as a script
(``python _espeak.py OUT.npz`` with a JSON job on stdin), so a batch can be synthesised from the
library's initial state. That matters because eSpeak NG keeps a C ``static`` counter (the index
into its pitch-flutter table, advanced every 64 samples and never reset, not even by
``espeak_Terminate``/``espeak_Initialize``): in one process, the same word with the same settings
comes out a few samples different after other words have been spoken. A fresh process per batch
makes a batch a function of its job alone.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

import numpy as np

# espeak_PARAMETER values and constants of speak_lib.h.
RATE, VOLUME, PITCH, RANGE = 1, 2, 3, 4
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
INSTALL_HINT = "pip install espeakng-loader"


class Engine:
    """The loaded library, its sample rate and the callback that collects samples. The library
    is process-global and not thread-safe: callers serialise :meth:`synth` with one lock."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:
            raise ImportError(
                f"spoken digits are synthesised with eSpeak NG from the espeakng-loader wheel, "
                f"which is not installed: {INSTALL_HINT}"
            ) from err
        path = espeakng_loader.get_library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as err:
            raise OSError(f"cannot load the eSpeak NG library {path}: {err}") from err
        self.data_path = espeakng_loader.get_data_path()
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        # Seeds the noise sources (breath, whisper): exported since eSpeak NG 1.51.
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                     self.data_path.encode(), 0)
        if rate <= 0:
            raise OSError(f"espeak_Initialize failed (returned {rate}) with data at "
                          f"{self.data_path}")
        self.sample_rate = int(rate)
        self.lib = lib
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short),
                                         ctypes.c_int, ctypes.c_void_p)
        # Kept as an attribute: the C library holds only a raw pointer to it.
        self._callback = callback_type(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        variants_dir = os.path.join(self.data_path, "voices", "!v")
        self.variants = tuple(sorted(
            name for name in os.listdir(variants_dir)
            if os.path.isfile(os.path.join(variants_dir, name))
        ))
        self.version = os.path.basename(os.path.realpath(path))

    def _collect(self, wav: object, count: int, events: object) -> int:
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def synth(self, text: str, variant: str, rate: int, pitch: int, pitch_range: int,
              volume: int, seed: int = 0) -> np.ndarray:
        """int16 samples of ``text`` by ``en+variant`` at ``self.sample_rate``, the library's
        noise generator seeded with ``seed``."""
        lib = self.lib
        if lib.espeak_SetVoiceByName(f"en+{variant}".encode()) != 0:
            raise RuntimeError(f"eSpeak NG refused the voice en+{variant}")
        for parameter, value in ((RATE, rate), (PITCH, pitch), (RANGE, pitch_range),
                                 (VOLUME, volume)):
            lib.espeak_SetParameter(parameter, value, 0)
        self._chunks = []
        if self._set_seed is not None:
            self._set_seed(seed)
        data = text.encode()
        status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                  None, None)
        lib.espeak_Synchronize()
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def run_job(engine: Engine, job: dict) -> list[np.ndarray]:
    """Synthesise every item of ``job`` (lists ``texts``, ``variants``, ``rates``, ``pitches``,
    ``ranges``, ``volumes``, ``seeds`` of one length) in order."""
    return [engine.synth(*item) for item in zip(job["texts"], job["variants"], job["rates"],
                                                job["pitches"], job["ranges"], job["volumes"],
                                                job["seeds"], strict=True)]


def main(out_path: str) -> None:
    """Worker: JSON job on stdin -> ``out_path`` (.npz with ``lengths``, ``samples``,
    ``sample_rate``)."""
    engine = Engine()
    waves = run_job(engine, json.load(sys.stdin))
    np.savez(out_path, lengths=np.array([w.size for w in waves], dtype=np.int64),
             samples=np.concatenate(waves) if waves else np.zeros(0, np.int16),
             sample_rate=np.array(engine.sample_rate))


if __name__ == "__main__":
    main(sys.argv[1])
