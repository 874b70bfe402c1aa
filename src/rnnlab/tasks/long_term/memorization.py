"""Noiseless memorization (Martens & Sutskever 2011; Pascanu et al. 2013)."""

from __future__ import annotations

import torch

from rnnlab._validation import check_positive_int
from rnnlab.tasks._checks import check_float_dtype
from rnnlab.tasks.long_term._common import LongTermTask, LongTermTaskSpec, TaskScore
from rnnlab.tasks.long_term._draw import _finish, _generator, _one_hot
from rnnlab.tasks.long_term._scoring import _check_task, _scored, _summarise
from rnnlab.tasks.long_term.losses import masked_cross_entropy


def noiseless_memorization(
    batch: int,
    delay: int = 100,
    *,
    n_symbols: int = 2,
    pattern_length: int = 5,
    all_patterns: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """Noiseless memorization (Martens & Sutskever 2011; Pascanu et al. 2013 and code).

    A pattern of ``P = pattern_length`` symbols from ``n_symbols`` is shown, then ``delay`` (T
    in the papers) blank steps, then a trigger; the pattern must be reproduced from the trigger
    step on. Total length ``delay + 2P``. Input channels ``n_symbols + 2``: the symbols, then
    *blank*, then *trigger*; output channels ``n_symbols + 1``: the symbols, then *blank*.

    - steps ``0..P-1``: input the pattern; target blank;
    - steps ``P..P+delay-1``: input blank; target blank;
    - step ``P+delay``: input trigger; target the pattern's first symbol;
    - steps ``P+delay+1..delay+2P-1``: input blank; target the rest of the pattern.

    This is Pascanu's code (the trigger comes at the first recall step; Martens & Sutskever's
    code raises it one step earlier). The loss is on every step (``mask`` all True); a sequence
    is correct when the argmax is right at every step. The "5-bit" problem is
    ``n_symbols=2, pattern_length=5`` (the default; 32 patterns, ``all_patterns=True`` puts
    each once in a batch of 32, in lexicographic order); the "20-bit" one is
    ``n_symbols=5, pattern_length=10`` (log2(5^10) = 23.2 bits).
    Chance: ``n_symbols^-P`` (blanks are predictable from the clock; the pattern is a guess);
    per step ``(delay + P + P / n_symbols) / (delay + 2P)``.
    """
    check_positive_int("batch", batch)
    check_positive_int("delay", delay)
    check_positive_int("n_symbols", n_symbols)
    check_positive_int("pattern_length", pattern_length)
    check_float_dtype(dtype)
    if n_symbols < 2:
        raise ValueError(f"n_symbols must be >= 2 (one symbol carries no information), "
                         f"got {n_symbols}")
    gen = _generator(seed, generator)
    p = pattern_length
    if all_patterns:
        if batch != n_symbols**p:
            raise ValueError(f"all_patterns needs batch == n_symbols ** pattern_length = "
                             f"{n_symbols**p}, got batch={batch}")
        digits = n_symbols ** torch.arange(p - 1, -1, -1)
        pattern = (torch.arange(batch).unsqueeze(1) // digits) % n_symbols
    else:
        pattern = torch.randint(0, n_symbols, (batch, p), generator=gen)
    total = delay + 2 * p
    blank_in, trigger = n_symbols, n_symbols + 1
    blank_out = n_symbols
    x_sym = torch.full((batch, total), blank_in, dtype=torch.int64)
    x_sym[:, :p] = pattern
    x_sym[:, p + delay] = trigger
    y_sym = torch.full((batch, total), blank_out, dtype=torch.int64)
    y_sym[:, p + delay:] = pattern
    valid = torch.ones(batch, total, dtype=torch.bool)
    inputs = _one_hot(x_sym, n_symbols + 2, valid)
    targets = _one_hot(y_sym, n_symbols + 1, valid)
    lengths = torch.full((batch,), total, dtype=torch.int64)
    params = {"delay": delay, "n_symbols": n_symbols, "pattern_length": p,
              "all_patterns": all_patterns}
    chance = float(n_symbols) ** -p
    chance_step = (delay + p + p / n_symbols) / total
    return _finish("noiseless_memorization", f"{n_symbols}x{p}", inputs, targets, valid,
                   lengths, params, {"pattern": pattern}, chance, chance_step, dtype, device)


def noiseless_memorization_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    """Score a :func:`noiseless_memorization` batch (``outputs`` ``(batch, time, n + 1)``):
    a sequence is correct when the argmax is right at every step (Pascanu's code)."""
    task = _check_task(task, "noiseless_memorization")
    out, target, rows = _scored(outputs, task, task.mask)
    ok = out.argmax(1) == target.argmax(1)
    return _summarise(ok, out, target, rows, task.batch_size, "argmax right at every step")


# This task's entry of the registry rnnlab.tasks.long_term.LONG_TERM_TASKS.
SPEC = LongTermTaskSpec("noiseless_memorization", noiseless_memorization,
                        noiseless_memorization_score, masked_cross_entropy,
                        "Martens & Sutskever 2011; Pascanu et al. 2013", ())
