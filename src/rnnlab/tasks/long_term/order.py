"""Temporal order (Hochreiter & Schmidhuber 1997 exp. 6a/6b; Pascanu et al. 2013)."""

from __future__ import annotations

import torch

from rnnlab._validation import check_positive_int
from rnnlab.tasks._checks import check_choice, check_float_dtype
from rnnlab.tasks.long_term._common import LongTermTask, LongTermTaskSpec, TaskScore
from rnnlab.tasks.long_term._draw import (
    _finish,
    _generator,
    _last_step_mask,
    _one_hot,
    _uniform_int,
    _valid,
    _variable_lengths,
)
from rnnlab.tasks.long_term._scoring import _check_task, _scored, _summarise
from rnnlab.tasks.long_term.losses import masked_cross_entropy

HS_CLASS_TOLERANCE = 0.3  # H&S 1997 exp. 6: every output unit within 0.3 of its target

TEMPORAL_ORDER_VARIANTS = ("hochreiter1997", "pascanu2013")

# Temporal order alphabet (index -> symbol). pascanu2013 uses the first six only.
TEMPORAL_ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")
_X, _TRIGGER, _START = 4, 6, 7
# H&S 1997 windows for the relevant symbols, 1-based positions for T = 100 (exp. 6a, 6b).
_HS_WINDOWS = {2: ((10, 20), (50, 60)), 3: ((10, 20), (33, 43), (66, 76))}
# Pascanu 2013 code: window k starts at floor(s_k T / 10) and is floor(T / 10) wide.
_PASCANU_STARTS = {2: (1, 5), 3: (1, 3, 6)}


def _temporal_order_windows(variant: str, bits: int, length: int) -> list[tuple[int, int]]:
    """0-based inclusive windows of the relevant symbols."""
    if variant == "hochreiter1997":
        # The paper's 1-based positions for T = 100, scaled by T/100 (exact at T = 100).
        return [((a * length + 50) // 100 - 1, (b * length + 50) // 100 - 1)
                for a, b in _HS_WINDOWS[bits]]
    width = length // 10
    return [((s * length) // 10, (s * length) // 10 + width - 1) for s in _PASCANU_STARTS[bits]]


def _temporal_order_windows_ok(variant: str, bits: int, length: int) -> bool:
    windows = _temporal_order_windows(variant, bits, length)
    first = 1 if variant == "hochreiter1997" else 0  # position 0 holds the start symbol E
    last = length - 2 if variant == "hochreiter1997" else length - 1  # L - 1 holds B
    if any(hi < lo for lo, hi in windows):
        return False
    if windows[0][0] < first or windows[-1][1] > last:
        return False
    return all(windows[k][1] < windows[k + 1][0] for k in range(len(windows) - 1))


def temporal_order(
    batch: int,
    length: int = 100,
    *,
    bits: int = 2,
    variant: str = "hochreiter1997",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """Temporal order: classify the order of ``bits`` (2 or 3) relevant symbols X/Y.

    Inputs are one-hot symbols; alphabet (index: symbol) ``0-3: a, b, c, d`` (distractors),
    ``4: X``, ``5: Y``, and for hochreiter1997 also ``6: B`` (trigger) and ``7: E`` (start).
    The target, at the last step only, is one-hot over ``2^bits`` classes:
    ``class = sum_k s_k 2^(bits-1-k)`` with ``s_k = 0`` for X and 1 for Y, first symbol most
    significant, i.e. H&S's order XX->Q, XY->R, YX->S, YY->U (and Q, R, S, U, V, A, B, C for
    three symbols). Each ``s_k`` is a fair coin, so classes are uniform.

    ``variant="hochreiter1997"`` (H&S 1997, experiments 6a: bits=2, 6b: bits=3): length ``L``
    uniform on ``{T, ..., T + floor(T/10)}``; position 0 is E, position ``L - 1`` is B, the
    relevant symbols are at 1-based positions ``t1 in [10, 20]``, ``t2 in [50, 60]`` (6a) or
    ``[10, 20]``, ``[33, 43]``, ``[66, 76]`` (6b) for T = 100 (for other T these windows are
    scaled by T/100 and rounded: our extension), all other positions uniform distractors.
    Correct when every output unit is within 0.3 of its target ("the final absolute error of
    all output units is below 0.3").

    ``variant="pascanu2013"`` (Pascanu et al. 2013 and code; after Martens & Sutskever 2011):
    fixed length T, six symbols (no E/B), relevant symbol k uniform in the window starting at
    ``floor(s_k T/10)`` of width ``floor(T/10)``, with ``s = (1, 5)`` (2 bits) or ``(1, 3, 6)``
    (3 bits). Correct when the argmax of the output is the target class. (Their code numbers
    the classes with the first symbol least significant: a relabelling.)

    Chance: ``1 / 2^bits`` under both criteria (a constant one-hot guess of one class).
    ``info``: ``positions`` ``(batch, bits)``, ``labels`` ``(batch,)``.
    """
    check_positive_int("batch", batch)
    check_positive_int("length", length)
    check_choice("variant", variant, TEMPORAL_ORDER_VARIANTS)
    if bits not in (2, 3):
        raise ValueError(f"bits must be 2 (H&S experiment 6a) or 3 (6b), got {bits!r}")
    check_float_dtype(dtype)
    if not _temporal_order_windows_ok(variant, bits, length):
        shortest = next(t for t in range(1, 1000) if _temporal_order_windows_ok(variant, bits, t))
        raise ValueError(
            f"length={length} is too short for the {variant} temporal order with {bits} bits: "
            f"the windows of the relevant symbols would overlap or leave the sequence; "
            f"use length >= {shortest}")
    gen = _generator(seed, generator)
    rows = torch.arange(batch)
    if variant == "hochreiter1997":
        lengths, n_symbols = _variable_lengths(batch, length, gen), 8
    else:
        lengths, n_symbols = torch.full((batch,), length, dtype=torch.int64), 6
    t_max = int(lengths.max())
    valid = _valid(lengths, t_max)
    symbols = torch.randint(0, 4, (batch, t_max), generator=gen)
    if variant == "hochreiter1997":
        symbols[:, 0] = _START
        symbols[rows, lengths - 1] = _TRIGGER
    windows = _temporal_order_windows(variant, bits, length)
    positions = torch.stack([_uniform_int(lo, hi, (batch,), gen) for lo, hi in windows], 1)
    which = torch.randint(0, 2, (batch, bits), generator=gen)
    symbols[rows.unsqueeze(1), positions] = _X + which
    labels = (which * (2 ** torch.arange(bits - 1, -1, -1))).sum(1)
    inputs = _one_hot(symbols, n_symbols, valid)
    targets = torch.zeros(batch, t_max, 2**bits, dtype=torch.float64)
    targets[rows, lengths - 1, labels] = 1.0
    mask = _last_step_mask(lengths, t_max)
    chance = 1.0 / 2**bits
    params = {"length": length, "bits": bits, "variant": variant}
    info = {"positions": positions, "labels": labels}
    return _finish("temporal_order", variant, inputs, targets, mask, lengths, params, info,
                   chance, chance, dtype, device)


def temporal_order_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    """Score a :func:`temporal_order` batch: ``outputs`` ``(batch, time, 2^bits)`` or final.

    hochreiter1997: correct when every output unit is within 0.3 of the one-hot target;
    pascanu2013: correct when the argmax is the target class. Outputs are taken as they are
    (probabilities, or any scores for the argmax criterion).
    """
    task = _check_task(task, "temporal_order")
    out, target, rows = _scored(outputs, task, task.mask)
    if task.variant == "hochreiter1997":
        ok = ((out - target).abs() < HS_CLASS_TOLERANCE).all(1)
        criterion = f"every output unit within {HS_CLASS_TOLERANCE} of its target (H&S 1997)"
    else:
        ok = out.argmax(1) == target.argmax(1)
        criterion = "argmax at the last step is the target class (Pascanu 2013)"
    return _summarise(ok, out, target, rows, task.batch_size, criterion)


# This task's entry of the registry rnnlab.tasks.long_term.LONG_TERM_TASKS.
SPEC = LongTermTaskSpec("temporal_order", temporal_order, temporal_order_score,
                        masked_cross_entropy,
                        "Hochreiter & Schmidhuber 1997 exp. 6a/6b; Pascanu et al. 2013",
                        TEMPORAL_ORDER_VARIANTS)
