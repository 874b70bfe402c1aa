"""The adding problem (Hochreiter & Schmidhuber 1997 exp. 4; Pascanu et al. 2013)."""

from __future__ import annotations

import torch

from rnnlab.tasks.long_term._common import LongTermTask, LongTermTaskSpec, TaskScore
from rnnlab.tasks.long_term._marker import MARKER_VARIANTS, _marker_problem, _marker_score
from rnnlab.tasks.long_term._scoring import _check_task
from rnnlab.tasks.long_term.losses import masked_mse


def adding_problem(
    batch: int,
    length: int = 100,
    *,
    variant: str = "hochreiter1997",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """The adding problem. Inputs have two channels, ``(value, marker)``; one target at the end.

    ``variant="hochreiter1997"`` (H&S 1997, experiment 4): each sequence has a random length
    ``L`` uniform on ``{T, ..., T + floor(T/10)}`` (``T = length``). Values are U[-1, 1).
    Exactly two pairs are marked (marker 1): the first uniformly among the first 10 (positions
    0..9), the second uniformly among "the first T/2 - 1 still unmarked pairs", i.e. positions
    ``{0, ..., T//2 - 1}`` minus the first one (so the minimal lag to the end is T/2, as in
    the paper's table). All other markers are 0, except at the first and last pairs (positions 0
    and ``L - 1``), which are -1 unless marked. If position 0 is marked its value is set to 0
    (the paper's rule, applied to whichever marker lands there). Target at ``L - 1``:
    ``0.5 + (X1 + X2) / 4``. Correct when ``|error| < 0.04`` there.
    Chance (predict 0.5): about 0.154 (0.1544 for T = 100; exact value in ``task.chance``).

    ``variant="pascanu2013"`` (Pascanu et al. 2013, supplementary material and code; after
    Martens & Sutskever 2011): ``L`` as above; values U[0, 1); markers 1 at one position
    uniform on ``[0, L//10)`` and one uniform on ``[L//10, L//2)``, 0 everywhere else (no -1
    markers). Target ``(X1 + X2) / 2``. A sequence is wrong when its squared error exceeds 0.04
    (so correct when ``|error| <= 0.2``; this is what the paper and its code use, which makes
    chance 0.64). A run is solved when under 1% of test sequences are wrong
    (:attr:`TaskScore.solved`). Their code draws the length once per batch and from
    ``[T, T + T/10)``; here each sequence draws its own length from the paper's closed range.

    ``info``: ``positions`` ``(batch, 2)`` (first, second marker) and ``values`` (X1, X2).
    """
    return _marker_problem("adding_problem", batch, length, variant, seed, generator, dtype,
                           device)


def adding_problem_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    """Score an :func:`adding_problem` batch; ``outputs`` ``(batch, time, 1)`` or ``(batch, 1)``.

    hochreiter1997: correct when ``|o - y| < 0.04`` at the last step; pascanu2013: correct when
    ``(o - y)^2 <= 0.04``.
    """
    return _marker_score(outputs, _check_task(task, "adding_problem"))


# This task's entry of the registry rnnlab.tasks.long_term.LONG_TERM_TASKS.
SPEC = LongTermTaskSpec("adding_problem", adding_problem, adding_problem_score, masked_mse,
                        "Hochreiter & Schmidhuber 1997 exp. 4; Pascanu et al. 2013",
                        MARKER_VARIANTS)
