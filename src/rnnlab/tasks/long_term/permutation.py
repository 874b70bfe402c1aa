"""The random permutation problem (Martens & Sutskever 2011; Pascanu et al. 2013)."""

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
)
from rnnlab.tasks.long_term._scoring import _check_task, _scored, _summarise
from rnnlab.tasks.long_term.losses import masked_cross_entropy

PERMUTATION_VARIANTS = ("pascanu2013", "martens2011")


def random_permutation(
    batch: int,
    length: int = 100,
    *,
    n_symbols: int = 100,
    variant: str = "pascanu2013",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """Random permutation problem (Martens & Sutskever 2011; Pascanu et al. 2013): remember the
    first symbol over ``length - 1`` random ones.

    After H&S 1997 experiment 2 (noise-free sequences with long time lags), in the form of
    Martens & Sutskever's and Pascanu's code: an alphabet of ``n_symbols`` (100) one-hot
    symbols; ``x(0)`` is symbol 0 or 1 (a fair coin), ``x(1..T-1)`` are i.i.d. uniform on
    ``{2, ..., n_symbols - 1}`` (despite the name, not a permutation). Fixed length ``T``.
    At the end the first symbol comes back: ``y(T - 1) = x(0)``.

    ``variant="pascanu2013"``: that is the only target (``mask`` at the last step only).
    ``variant="martens2011"``: next-symbol prediction at every step, ``y(t) = x(t + 1)`` for
    ``t < T - 1`` (``mask`` all True; only the last step is predictable).
    Metric (both): correct when the argmax of the output at the last step is ``x(0)``.
    Chance: 0.5 (guess symbol 0 or 1).
    """
    check_positive_int("batch", batch)
    check_positive_int("length", length)
    check_positive_int("n_symbols", n_symbols)
    check_choice("variant", variant, PERMUTATION_VARIANTS)
    check_float_dtype(dtype)
    if length < 2:
        raise ValueError(f"length must be >= 2 (a first symbol and a last step), got {length}")
    if n_symbols < 3:
        raise ValueError(f"n_symbols must be >= 3 (two symbols to remember and at least one "
                         f"distractor), got {n_symbols}")
    gen = _generator(seed, generator)
    first = torch.randint(0, 2, (batch,), generator=gen)
    rest = torch.randint(2, n_symbols, (batch, length - 1), generator=gen)
    sequence = torch.cat([first.unsqueeze(1), rest, first.unsqueeze(1)], dim=1)
    valid = torch.ones(batch, length, dtype=torch.bool)
    inputs = _one_hot(sequence[:, :-1], n_symbols, valid)
    targets = _one_hot(sequence[:, 1:], n_symbols, valid)
    lengths = torch.full((batch,), length, dtype=torch.int64)
    if variant == "pascanu2013":
        mask = _last_step_mask(lengths, length)
        targets = targets * mask.unsqueeze(-1)
    else:
        mask = valid.clone()
    params = {"length": length, "n_symbols": n_symbols, "variant": variant}
    info = {"labels": first}
    return _finish("random_permutation", variant, inputs, targets, mask, lengths, params, info,
                   0.5, 0.5, dtype, device)


def random_permutation_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    """Score a :func:`random_permutation` batch: correct when the argmax of the output at the
    last step is the first symbol (whatever the loss mask; the other steps are unpredictable)."""
    task = _check_task(task, "random_permutation")
    last = _last_step_mask(task.lengths.cpu(), task.max_length).to(task.mask.device)
    out, target, rows = _scored(outputs, task, last)
    ok = out.argmax(1) == target.argmax(1)
    return _summarise(ok, out, target, rows, task.batch_size,
                      "argmax at the last step is the first symbol")


# This task's entry of the registry rnnlab.tasks.long_term.LONG_TERM_TASKS.
SPEC = LongTermTaskSpec("random_permutation", random_permutation, random_permutation_score,
                        masked_cross_entropy,
                        "Martens & Sutskever 2011; Pascanu et al. 2013", PERMUTATION_VARIANTS)
