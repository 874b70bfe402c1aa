"""The spoken-digits task: cochleagrams (and BSA spike trains) of synthesised digit words, split
by held-out voices, with a static spectral baseline and the word error rate.

Pipeline: :func:`~rnnlab.tasks.speech.synth.synthesize_digits` (eSpeak NG voices, random pitch
and rate) -> :func:`~rnnlab.tasks.speech.lyon.cochleagram` (Lyon's passive ear) -> optional
normalisation of each utterance to a peak of 1 -> optional spike trains
(:func:`~rnnlab.tasks.speech.bsa.bsa_encode`, each channel upsampled to the spike time step).
This is the front end of Verstraeten, Schrauwen, Stroobandt & Van Campenhout 2005 ("Isolated
word recognition with the Liquid State Machine: a case study", Information Processing Letters
95(6)), on synthetic rather than recorded speech.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np
import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_bool, check_int, check_number, check_tensor
from rnnlab.tasks._checks import check_choice, check_float_dtype
from rnnlab.tasks.speech.bsa import bsa_encode, bsa_filter
from rnnlab.tasks.speech.lyon import cochleagram, design_lyon_filters
from rnnlab.tasks.speech.synth import (
    DEFAULT_SAMPLE_RATE,
    Utterances,
    split_voices,
    synthesize_digits,
    voice_variants,
)

N_CLASSES = 10
NORMALIZATIONS = ("utterance", "none")


@dataclass(frozen=True)
class SpokenDigits:
    """One split. ``inputs[i, :lengths[i]]`` is utterance i's cochleagram (zero after it);
    ``spikes`` (if asked for) holds its BSA spike trains, ``spike_upsample`` steps per frame."""

    inputs: torch.Tensor  # (batch, frames, channels)
    lengths: torch.Tensor  # (batch,) int64, frames
    labels: torch.Tensor  # (batch,) int64, the digit 0..9
    voices: tuple[str, ...]  # the voice variant of each utterance
    frame_rate: float  # frames per second
    centre_frequencies: torch.Tensor  # (channels,) float64, Hz, decreasing
    spikes: torch.Tensor | None = None  # (batch, frames * spike_upsample, channels), 0/1
    spike_upsample: int = 1

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _cochleagrams(utterances: Utterances, decimation: int, ear_q: float,
                  step_factor: float | None, normalize: str, batch: int = 32
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-utterance cochleagrams (frames, channels), computed in zero-padded batches of
    similar length (the cascade is causal, so padding at the end changes no kept frame)."""
    fs = utterances.sample_rate
    filters = design_lyon_filters(fs, ear_q=ear_q, step_factor=step_factor)
    waves = utterances.waves
    order = np.argsort([w.size for w in waves], kind="stable")
    out: list[np.ndarray] = [np.empty(0)] * len(waves)
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        longest = max(max(waves[i].size for i in chunk), decimation)
        padded = np.zeros((len(chunk), longest))
        for row, i in enumerate(chunk):
            padded[row, :waves[i].size] = waves[i]
        cg = cochleagram(padded, fs, decimation=decimation, filters=filters)
        for row, i in enumerate(chunk):
            frames = max(1, waves[i].size // decimation)
            c = cg[row, :frames]
            if normalize == "utterance":
                peak = c.max()
                c = c / peak if peak > 0 else c
            out[i] = c
    return out, filters.centre_frequencies


def _split(utterances: Utterances, *, decimation: int, ear_q: float,
           step_factor: float | None, normalize: str, spikes: bool, spike_upsample: int,
           spike_filter: np.ndarray, spike_threshold: float, dtype: torch.dtype
           ) -> SpokenDigits:
    grams, cf = _cochleagrams(utterances, decimation, ear_q, step_factor, normalize)
    lengths = np.array([g.shape[0] for g in grams])
    channels = grams[0].shape[1]
    inputs = np.zeros((len(grams), lengths.max(), channels))
    for i, g in enumerate(grams):
        inputs[i, :g.shape[0]] = g
    trains = None
    if spikes:
        # Piecewise-constant upsampling to the spike time step, then one BSA walk over all
        # (utterance, channel) rows at once; padding frames are zero and draw no spikes.
        # In chunks of utterances: the walk holds a float64 copy of its rows.
        trains = torch.zeros((len(grams), inputs.shape[1] * spike_upsample, channels),
                             dtype=dtype)
        for start in range(0, len(grams), 32):
            fine = np.repeat(inputs[start:start + 32], spike_upsample, axis=1)
            code = bsa_encode(fine.transpose(0, 2, 1), spike_filter, spike_threshold)
            trains[start:start + 32] = torch.from_numpy(code.transpose(0, 2, 1).copy())
    return SpokenDigits(
        inputs=torch.from_numpy(inputs).to(dtype),
        lengths=torch.from_numpy(lengths).to(torch.int64),
        labels=torch.from_numpy(utterances.labels.copy()),
        voices=utterances.voices,
        frame_rate=utterances.sample_rate / decimation,
        centre_frequencies=torch.from_numpy(cf.copy()),
        spikes=trains,
        spike_upsample=spike_upsample,
    )


def spoken_digits(*, voices: tuple[str, ...] | list[str] | None = None, n_test_voices: int = 4,
                  repeats: int = 2, digits: tuple[int, ...] | list[int] = tuple(range(10)),
                  sample_rate: int = DEFAULT_SAMPLE_RATE, decimation: int = 80,
                  ear_q: float = 8.0, step_factor: float | None = None,
                  normalize: str = "utterance", spikes: bool = False, spike_upsample: int = 10,
                  spike_filter_length: int = 20, spike_cutoff: float = 0.08,
                  spike_threshold: float = 0.9, seed: int | None = 0,
                  generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                  cache_dir: str | os.PathLike[str] | None = None
                  ) -> tuple[SpokenDigits, SpokenDigits]:
    """``(train, test)`` spoken-digit splits whose test voices are held out of training.

    ``voices`` (default: every variant the installed eSpeak NG data holds) are split by
    :func:`~rnnlab.tasks.speech.synth.split_voices` into ``n_test_voices`` test voices and the
    rest; each voice says each digit ``repeats`` times at random pitch and rate. Cochleagrams
    (Lyon's model at ``sample_rate`` with ``decimation``: ``sample_rate / decimation`` frames
    per second) are scaled to a peak of 1 per utterance (``normalize="utterance"``) or left in
    the model's units (``"none"``). With ``spikes=True`` each split also carries BSA spike trains
    of the (normalised) cochleagram, ``spike_upsample`` spike steps per frame, for the decoding
    filter :func:`~rnnlab.tasks.speech.bsa.bsa_filter` (``spike_filter_length`` taps,
    ``spike_cutoff``, sum 1) and threshold ``spike_threshold`` (a fraction of the filter's sum;
    needs ``normalize="utterance"``). Seeded: the split, pitches and rates come from one
    generator, so the same seed gives the same data.
    """
    all_voices = voice_variants()
    voices = all_voices if voices is None else tuple(voices)
    n_test_voices = check_int("n_test_voices", n_test_voices, low=1)
    if n_test_voices >= len(voices):
        raise ValueError(f"n_test_voices ({n_test_voices}) must leave training voices: "
                         f"only {len(voices)} voices given")
    normalize = check_choice("normalize", normalize, NORMALIZATIONS)
    spikes = check_bool("spikes", spikes)
    spike_upsample = check_int("spike_upsample", spike_upsample, low=1)
    spike_threshold = check_number("spike_threshold", spike_threshold, low=0.0)
    dtype = check_float_dtype(dtype)
    decimation = check_int("decimation", decimation, low=1)
    if spikes and normalize != "utterance":
        raise ValueError("spikes=True needs normalize='utterance' (BSA needs the signal on the "
                         "filter's scale, [0, 1])")
    h = bsa_filter(spike_filter_length, spike_cutoff)
    gen = make_generator(seed, generator)
    train_voices, test_voices = split_voices(voices, n_test_voices, generator=gen)
    common = dict(decimation=decimation, ear_q=ear_q, step_factor=step_factor,
                  normalize=normalize, spikes=spikes, spike_upsample=spike_upsample,
                  spike_filter=h, spike_threshold=spike_threshold * h.sum(), dtype=dtype)
    splits = []
    for names in (train_voices, test_voices):
        utterances = synthesize_digits(names, repeats=repeats, digits=digits,
                                       sample_rate=sample_rate, generator=gen,
                                       cache_dir=cache_dir)
        splits.append(_split(utterances, **common))
    return splits[0], splits[1]


def static_features(inputs: torch.Tensor, lengths: torch.Tensor, *, segments: int = 3,
                    bands: int | None = None, floor: float = 1e-6) -> torch.Tensor:
    """Static spectral features for a linear (ridge) baseline: each utterance's frames
    ``inputs[i, :lengths[i]]`` (channels in order) cut into ``segments`` equal time segments,
    adjacent channels pooled into ``bands`` bands (default: none pooled), and the log of the
    mean energy in each (segment, band) cell, ``log(floor + mean)``. Shape
    ``(batch, segments * bands)``: a coarse spectrogram with the time order of 3 segments kept,
    as MFCC-like band energies per segment are used in isolated-word baselines."""
    x = check_tensor("inputs", inputs, ndim=3)
    if not x.dtype.is_floating_point:
        raise TypeError(f"inputs must be a float tensor, got {x.dtype}")
    lengths = check_tensor("lengths", lengths, ndim=1)
    if lengths.shape[0] != x.shape[0]:
        raise ValueError(f"lengths has {lengths.shape[0]} entries for a batch of {x.shape[0]}")
    if lengths.dtype.is_floating_point or bool((lengths < 1).any()) \
            or bool((lengths > x.shape[1]).any()):
        raise ValueError(f"lengths must be integers in 1..{x.shape[1]}")
    segments = check_int("segments", segments, low=1)
    channels = x.shape[2]
    bands = channels if bands is None else check_int("bands", bands, low=1, high=channels)
    floor = check_number("floor", floor, low=0.0, low_open=True)
    band_edges = np.linspace(0, channels, bands + 1).round().astype(int)
    rows = []
    for i in range(x.shape[0]):
        n = int(lengths[i])
        if n < segments:
            raise ValueError(f"utterance {i} has {n} frames, fewer than segments={segments}")
        edges = np.linspace(0, n, segments + 1).round().astype(int)
        cells = [x[i, a:b, c:d].mean() for a, b in itertools.pairwise(edges)
                 for c, d in itertools.pairwise(band_edges)]
        rows.append(torch.stack(cells))
    return torch.log(floor + torch.stack(rows))


def word_error_rate(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of isolated words misrecognised (for one word per utterance the word error
    rate is the classification error rate)."""
    p = check_tensor("predicted", predicted, ndim=1)
    y = check_tensor("labels", labels, ndim=1)
    if p.shape != y.shape:
        raise ValueError(f"predicted {tuple(p.shape)} and labels {tuple(y.shape)} differ")
    if p.numel() == 0:
        raise ValueError("no words to score")
    return float((p != y).double().mean())
