"""The multiplication problem (Hochreiter & Schmidhuber 1997 exp. 5; Pascanu et al. 2013)."""

from __future__ import annotations

import torch

from rnnlab.tasks.long_term._common import LongTermTask, LongTermTaskSpec, TaskScore
from rnnlab.tasks.long_term._marker import MARKER_VARIANTS, _marker_problem, _marker_score
from rnnlab.tasks.long_term._scoring import _check_task
from rnnlab.tasks.long_term.losses import masked_mse


def multiplication_problem(
    batch: int,
    length: int = 100,
    *,
    variant: str = "hochreiter1997",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """The multiplication problem: as :func:`adding_problem`, with target ``X1 * X2``.

    ``variant="hochreiter1997"`` (H&S 1997, experiment 5): values are U[0, 1); the marker
    scheme and lengths are those of experiment 4; if position 0 is marked its value is set to
    1.0 (the paper sets X1 to 1.0, the neutral element). Correct when ``|error| < 0.04``.
    Chance (predict 0.04): about 0.26 (0.258 for T = 100; exact value in ``task.chance``).

    ``variant="pascanu2013"``: the pascanu2013 adding problem with target ``X1 * X2``; wrong
    when the squared error exceeds 0.04. Chance (predict 0.2): ``0.4 (1 - ln 0.4) = 0.767``.

    The exact H&S 1997 wording (value range, the rule for a marked first pair) is given from
    the paper as best we can check it; see ``docs/tasks_long_term.md``.
    """
    return _marker_problem("multiplication_problem", batch, length, variant, seed, generator,
                           dtype, device)


def multiplication_problem_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    """Score a :func:`multiplication_problem` batch (criteria as :func:`adding_problem_score`)."""
    return _marker_score(outputs, _check_task(task, "multiplication_problem"))


# This task's entry of the registry rnnlab.tasks.long_term.LONG_TERM_TASKS.
SPEC = LongTermTaskSpec("multiplication_problem", multiplication_problem,
                        multiplication_problem_score, masked_mse,
                        "Hochreiter & Schmidhuber 1997 exp. 5; Pascanu et al. 2013",
                        MARKER_VARIANTS)
