"""The marker problems shared by the adding and multiplication tasks (H&S 1997 exp. 4 and 5;
Pascanu et al. 2013): one generator, the chance level of a constant guess and the metric."""

from __future__ import annotations

import math

import torch

from rnnlab._validation import check_positive_int
from rnnlab.tasks._checks import check_choice, check_float_dtype
from rnnlab.tasks.long_term._common import LongTermTask, TaskScore
from rnnlab.tasks.long_term._draw import (
    _finish,
    _generator,
    _last_step_mask,
    _uniform_int,
    _valid,
    _variable_lengths,
)
from rnnlab.tasks.long_term._scoring import _scored, _summarise

# Per-sequence criteria of the sources.
HS_ABS_TOLERANCE = 0.04  # H&S 1997 exp. 4/5: |error| at the end below 0.04
PASCANU_SQ_TOLERANCE = 0.04  # Pascanu 2013: a sequence is wrong if its squared error > 0.04

MARKER_VARIANTS = ("hochreiter1997", "pascanu2013")


def _marker_problem(name: str, batch: int, length: int, variant: str, seed: int | None,
                    generator: torch.Generator | None, dtype: torch.dtype,
                    device: torch.device | str | None) -> LongTermTask:
    check_positive_int("batch", batch)
    check_positive_int("length", length)
    check_choice("variant", variant, MARKER_VARIANTS)
    check_float_dtype(dtype)
    adding = name == "adding_problem"
    if variant == "hochreiter1997" and length < 20:
        raise ValueError(
            f"length (T) must be >= 20 for the hochreiter1997 {name}: the first marker is in the "
            f"first 10 steps and the second among the first T/2 - 1 unmarked ones, got {length}")
    if variant == "pascanu2013" and length < 10:
        raise ValueError(
            f"length (T) must be >= 10 for the pascanu2013 {name}: the first marker is in the "
            f"first T'/10 steps, got {length}")
    gen = _generator(seed, generator)
    rows = torch.arange(batch)
    lengths = _variable_lengths(batch, length, gen)
    t_max = int(lengths.max())
    valid = _valid(lengths, t_max)
    markers = torch.zeros(batch, t_max, dtype=torch.float64)
    if variant == "hochreiter1997":
        half = length // 2
        p1 = _uniform_int(0, 9, (batch,), gen)
        # Uniform over the first T/2 - 1 still unmarked pairs, i.e. {0..T/2-1} minus p1.
        k = _uniform_int(0, half - 2, (batch,), gen)
        p2 = k + (k >= p1).to(torch.int64)
        low, high = (-1.0, 1.0) if adding else (0.0, 1.0)
        values = low + (high - low) * torch.rand(batch, t_max, generator=gen, dtype=torch.float64)
        markers[:, 0] = -1.0
        markers[rows, lengths - 1] = -1.0
        # "In the rare case where the first pair gets marked, we set X1 to zero" (adding) /
        # "to 1.0" (multiplication): the neutral element of the operation.
        first_marked = (p1 == 0) | (p2 == 0)
        values[first_marked, 0] = 0.0 if adding else 1.0
        p_first = 0.1 + 0.9 / (half - 1)
    else:
        p1 = _uniform_int(0, lengths // 10 - 1, (batch,), gen)
        p2 = _uniform_int(lengths // 10, lengths // 2 - 1, (batch,), gen)
        values = torch.rand(batch, t_max, generator=gen, dtype=torch.float64)
        p_first = 0.0
    markers[rows, p1] = 1.0
    markers[rows, p2] = 1.0
    values = (values * valid).to(dtype).to(torch.float64)  # what the network will see
    x1, x2 = values[rows, p1], values[rows, p2]
    if adding:
        target = 0.5 + (x1 + x2) / 4.0 if variant == "hochreiter1997" else (x1 + x2) / 2.0
    else:
        target = x1 * x2
    inputs = torch.stack([values, markers * valid], dim=-1)
    targets = torch.zeros(batch, t_max, 1, dtype=torch.float64)
    targets[rows, lengths - 1, 0] = target
    mask = _last_step_mask(lengths, t_max)
    chance = _marker_chance(adding, variant, p_first)
    info = {"positions": torch.stack([p1, p2], 1), "values": torch.stack([x1, x2], 1)}
    params = {"length": length, "variant": variant}
    return _finish(name, variant, inputs, targets, mask, lengths, params, info, chance, chance,
                   dtype, device)


def _marker_chance(adding: bool, variant: str, p_first: float) -> float:
    """Success rate of the best constant prediction (derivations in docs/tasks_long_term.md)."""
    if adding and variant == "hochreiter1997":
        # Predict 0.5: correct iff |S| < 0.16 with S = X1 + X2 (triangular on [-2, 2]:
        # P = a - a^2/4) or, when the first pair is marked, S = X2 ~ U[-1, 1] (P = a).
        a = 4 * HS_ABS_TOLERANCE
        return p_first * a + (1 - p_first) * (a - a * a / 4)
    if adding:
        # Predict 0.5: correct iff |X1 + X2 - 1| <= 0.4, triangular on [-1, 1]: 2a - a^2.
        a = 2 * math.sqrt(PASCANU_SQ_TOLERANCE)
        return 2 * a - a * a
    # Product Z = X1 X2 of two U[0, 1] has density -ln z, decreasing, so the best window of
    # half-width w is [0, 2w]: P = 2w (1 - ln 2w). A marked first pair leaves Z = X2 ~ U[0, 1].
    w = HS_ABS_TOLERANCE if variant == "hochreiter1997" else math.sqrt(PASCANU_SQ_TOLERANCE)
    return p_first * 2 * w + (1 - p_first) * 2 * w * (1 - math.log(2 * w))


def _marker_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    out, target, rows = _scored(outputs, task, task.mask)
    if task.variant == "hochreiter1997":
        ok = ((out - target).abs() < HS_ABS_TOLERANCE).all(1)
        criterion = f"|error| < {HS_ABS_TOLERANCE} at the last step (H&S 1997)"
    else:
        ok = (out - target).pow(2).sum(1) <= PASCANU_SQ_TOLERANCE
        criterion = f"squared error <= {PASCANU_SQ_TOLERANCE} at the last step (Pascanu 2013)"
    return _summarise(ok, out, target, rows, task.batch_size, criterion)
