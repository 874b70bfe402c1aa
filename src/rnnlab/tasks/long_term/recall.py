"""Delayed recall (the course's definition of a long-term dependency): ``y(t) = x(t - tau)``."""

from __future__ import annotations

import torch

from rnnlab._validation import check_number, check_positive_int
from rnnlab.tasks._checks import check_choice, check_float_dtype
from rnnlab.tasks.long_term._common import LongTermTask, LongTermTaskSpec, TaskScore
from rnnlab.tasks.long_term._draw import _finish, _generator
from rnnlab.tasks.long_term._scoring import _check_task, _scored, _summarise
from rnnlab.tasks.long_term.losses import masked_mse

RECALL_DISTRIBUTIONS = ("bits", "uniform")


def delayed_recall(
    batch: int,
    length: int,
    tau: int,
    *,
    features: int = 1,
    distribution: str = "bits",
    tolerance: float = 0.1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """Delayed recall (the course's definition of a long-term dependency): ``y(t) = x(t - tau)``.

    ``x(t)``, ``t = 0..length-1``, is i.i.d. with ``features`` components: ``"bits"`` are fair
    coin flips in {0, 1}; ``"uniform"`` are U[-1, 1). The target ``y(t) = x(t - tau)`` is
    defined for ``t >= tau`` (``mask`` True there); steps ``t < tau`` carry no loss.

    Success criterion (ours; the course gives none): a step is correct when every component is
    (bits) on the right side of 0.5, or (uniform) within ``tolerance`` of the target; a
    sequence is correct when all its ``length - tau`` scored steps are.
    Chance (input-independent prediction: 0.5 for bits, 0 for uniform): per step
    ``0.5^features`` (bits) or ``tolerance^features`` (uniform, ``tolerance <= 1``); per
    sequence that to the power ``length - tau``.
    """
    check_positive_int("batch", batch)
    check_positive_int("length", length)
    check_positive_int("tau", tau)
    check_positive_int("features", features)
    check_choice("distribution", distribution, RECALL_DISTRIBUTIONS)
    tolerance = check_number("tolerance", tolerance, low=0.0, low_open=True)
    check_float_dtype(dtype)
    if tau >= length:
        raise ValueError(f"tau must be smaller than length (the target x(t - tau) needs "
                         f"t - tau >= 0 for some t < length), got tau={tau}, length={length}")
    gen = _generator(seed, generator)
    if distribution == "bits":
        x = torch.randint(0, 2, (batch, length, features), generator=gen).to(torch.float64)
        p_step = 0.5**features
    else:
        x = torch.rand(batch, length, features, generator=gen, dtype=torch.float64) * 2 - 1
        x = x.to(dtype).to(torch.float64)
        p_step = min(tolerance, 1.0) ** features
    y = torch.zeros_like(x)
    y[:, tau:] = x[:, : length - tau]
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[:, tau:] = True
    lengths = torch.full((batch,), length, dtype=torch.int64)
    params = {"length": length, "tau": tau, "features": features,
              "distribution": distribution, "tolerance": tolerance}
    return _finish("delayed_recall", distribution, x, y, mask, lengths, params, {},
                   p_step ** (length - tau), p_step, dtype, device)


def delayed_recall_score(
    outputs: torch.Tensor, task: LongTermTask, tolerance: float | None = None
) -> TaskScore:
    """Score a :func:`delayed_recall` batch (``outputs`` ``(batch, time, features)``).

    A step ``t >= tau`` is correct when every component is on the right side of 0.5 (bits) or
    within ``tolerance`` (default: the task's) of ``x(t - tau)`` (uniform); a sequence is
    correct when all its scored steps are.
    """
    task = _check_task(task, "delayed_recall")
    out, target, rows = _scored(outputs, task, task.mask)
    if task.variant == "bits":
        ok = ((out > 0.5) == (target > 0.5)).all(1)
        criterion = "every bit on the right side of 0.5 at every step t >= tau"
    else:
        tol = float(task.params["tolerance"]) if tolerance is None else \
            check_number("tolerance", tolerance, low=0.0, low_open=True)
        ok = ((out - target).abs() < tol).all(1)
        criterion = f"|error| < {tol} at every step t >= tau"
    return _summarise(ok, out, target, rows, task.batch_size, criterion)


# This task's entry of the registry rnnlab.tasks.long_term.LONG_TERM_TASKS.
SPEC = LongTermTaskSpec("delayed_recall", delayed_recall, delayed_recall_score, masked_mse,
                        "the course: y(t) = x(t - tau)", RECALL_DISTRIBUTIONS)
