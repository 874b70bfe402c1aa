"""Padding and batching piano rolls for next-step prediction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch

from rnnlab._validation import check_positive_int
from rnnlab.tasks.piano_roll.roll import NUM_KEYS, _check_rolls


class PianoRollBatch(NamedTuple):
    """A padded batch for next-step prediction.

    ``inputs`` and ``targets`` are ``(batch, time, 88)``, ``mask`` is ``(batch, time)`` bool
    (True on real steps), ``lengths`` the ``(batch,)`` int64 number of real steps per sequence,
    kept on the CPU as ``torch.nn.utils.rnn.pack_padded_sequence`` wants. Padding is zeros.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor


def pad_rolls(
    rolls: Sequence[torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack rolls of different lengths into ``(batch, max_time, 88)`` with zero padding at the
    end; also return the ``(batch,)`` int64 lengths (on the CPU)."""
    _check_rolls(rolls)
    dtype = dtype or rolls[0].dtype
    device = device if device is not None else rolls[0].device
    lengths = torch.tensor([r.shape[0] for r in rolls], dtype=torch.int64)
    out = torch.zeros(len(rolls), int(lengths.max()), NUM_KEYS, dtype=dtype, device=device)
    for i, r in enumerate(rolls):
        out[i, : r.shape[0]] = r.to(device=device, dtype=dtype)
    return out, lengths


def next_step_batch(
    rolls: Sequence[torch.Tensor],
    *,
    prepend_silence: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> PianoRollBatch:
    """Inputs and next-step targets: the model reads frames ``<= t`` and predicts frame ``t+1``.

    With ``prepend_silence=True`` (default) an all-zero frame is put before every sequence, so
    the input at step s is frame s-1 (silence at s=0) and the target is frame s: every frame of
    every sequence is predicted once and the NLL averages over all frames of the set, as in
    the literature. With ``False`` the input is frames ``0..L-2`` and the target ``1..L-1``
    (the first frame is never predicted; sequences need at least 2 frames).
    """
    _check_rolls(rolls)
    dtype = dtype or rolls[0].dtype
    device = device if device is not None else rolls[0].device
    if prepend_silence:
        inputs = [torch.cat([r.new_zeros(1, NUM_KEYS), r[:-1]]) for r in rolls]
        targets = list(rolls)
    else:
        short = [i for i, r in enumerate(rolls) if r.shape[0] < 2]
        if short:
            raise ValueError(
                f"sequences {short[:5]} have fewer than 2 frames: nothing to predict "
                "without prepend_silence"
            )
        inputs = [r[:-1] for r in rolls]
        targets = [r[1:] for r in rolls]
    x, lengths = pad_rolls(inputs, dtype=dtype, device=device)
    y, _ = pad_rolls(targets, dtype=dtype, device=device)
    mask = torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    return PianoRollBatch(x, y, mask.to(device), lengths)


def piano_roll_batches(
    rolls: Sequence[torch.Tensor],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    prepend_silence: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Iterator[PianoRollBatch]:
    """One epoch of :func:`next_step_batch` batches of ``batch_size`` sequences.

    With ``shuffle`` the order is a permutation drawn from ``generator`` (or a new generator
    seeded with ``seed``; with neither, from torch's global generator).
    """
    _check_rolls(rolls)
    check_positive_int("batch_size", batch_size)
    n = len(rolls)
    if shuffle:
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator).tolist()
    else:
        order = list(range(n))
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if drop_last and len(idx) < batch_size:
            return
        yield next_step_batch(
            [rolls[i] for i in idx], prepend_silence=prepend_silence, dtype=dtype, device=device
        )
