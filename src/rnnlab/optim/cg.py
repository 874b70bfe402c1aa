"""Preconditioned conjugate gradient with Martens' (2010) relative-progress stopping rule and
CG-iterate backtracking: the inner solver of the Hessian-free optimizer
(:mod:`rnnlab.optim.hessian_free`), on one flat vector holding every parameter."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from rnnlab._validation import check_positive_int

Tensor = torch.Tensor


@dataclass
class CGResult:
    """What :func:`conjugate_gradient` returns.

    ``x`` the final iterate; ``iterations`` how many CG iterations ran; ``stop_reason`` one of
    ``"relative_progress"``, ``"max_iters"``, ``"converged"``, ``"negative_curvature"``,
    ``"non_finite"``; ``phi`` the objective ``phi(x_i) = 1/2 x_i^T A x_i - b^T x_i`` for
    ``i = 0..iterations``; ``saved`` the iterates kept for backtracking, as
    ``(i, x_i, phi(x_i))`` at ``i = ceil(gamma^j)`` and at the last iteration; ``restarted``
    whether a warm start worse than zero was replaced by zero.
    """

    x: Tensor
    iterations: int
    stop_reason: str
    phi: list[float]
    saved: list[tuple[int, Tensor, float]] = field(default_factory=list)
    restarted: bool = False


def _save_schedule(gamma: float, max_iters: int) -> set[int]:
    marks, v = set(), 1.0
    while v <= max_iters:
        marks.add(math.ceil(v))
        v *= gamma
    return marks


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    *,
    max_iters: int = 250,
    progress_eps: float = 5e-4,
    min_gap: int = 10,
    gap_fraction: float = 0.1,
    preconditioner: Tensor | None = None,
    save_gamma: float = 1.3,
) -> CGResult:
    """Preconditioned CG on ``phi(x) = 1/2 x^T A x - b^T x`` with Martens' (2010) stopping rule.

    ``A`` (symmetric positive definite) is given by ``matvec``; ``preconditioner`` is the
    diagonal of ``M`` (CG then runs on ``M^-1 A``). Stops at iteration ``i`` when

        i > k,  phi(x_i) < 0  and  (phi(x_i) - phi(x_{i-k})) / phi(x_i) < k * progress_eps,
        k = max(min_gap, ceil(gap_fraction * i))          (Martens 2010)

    or after ``max_iters`` iterations, or when the residual ``A x - b`` vanishes to rounding
    (then in at most ``dim`` iterations in exact arithmetic). ``phi`` is tracked without extra
    products through ``phi(x) = 1/2 x^T (r - b)``, ``r = A x - b``. Iterates at
    ``i = ceil(save_gamma^j)`` are kept for backtracking (Martens 2010). A warm start
    ``x0`` with ``phi(x0) >= 0`` is no better than zero and is replaced by zero.
    """
    if not isinstance(b, Tensor) or b.dim() != 1:
        raise ValueError("b must be a 1-D tensor (the flat right-hand side)")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("b contains non-finite values")
    check_positive_int("max_iters", max_iters)
    if not progress_eps > 0:
        raise ValueError(f"progress_eps must be > 0, got {progress_eps}")
    if not save_gamma > 1:
        raise ValueError(f"save_gamma must be > 1, got {save_gamma}")
    if preconditioner is not None:
        if preconditioner.shape != b.shape:
            raise ValueError(f"preconditioner has shape {tuple(preconditioner.shape)}, b has "
                             f"{tuple(b.shape)}")
        if not bool(torch.isfinite(preconditioner).all()) or bool((preconditioner <= 0).any()):
            raise ValueError("preconditioner must be finite and positive")

    def precond(r: Tensor) -> Tensor:
        return r if preconditioner is None else r / preconditioner

    restarted = False
    x = torch.zeros_like(b)
    r = -b
    if x0 is not None:
        if x0.shape != b.shape:
            raise ValueError(f"x0 has shape {tuple(x0.shape)}, b has {tuple(b.shape)}")
        r0 = matvec(x0) - b
        phi0 = float(0.5 * torch.dot(x0, r0 - b))
        if math.isfinite(phi0) and phi0 < 0:
            x, r = x0.clone(), r0
        else:
            restarted = True
    y = precond(r)
    d = -y
    ry = float(torch.dot(r, y))
    phis = [float(0.5 * torch.dot(x, r - b))]
    marks = _save_schedule(save_gamma, max_iters)
    saved: list[tuple[int, Tensor, float]] = []
    tol = 10.0 * torch.finfo(b.dtype).eps * float(torch.linalg.vector_norm(b))
    reason = "max_iters"
    for i in range(1, max_iters + 1):
        if ry <= 0 or float(torch.linalg.vector_norm(r)) <= tol:
            reason = "converged"
            break
        ad = matvec(d)
        dad = float(torch.dot(d, ad))
        if not math.isfinite(dad):
            reason = "non_finite"
            break
        if dad <= 0:
            reason = "negative_curvature"
            break
        alpha = ry / dad
        x = x + alpha * d
        r = r + alpha * ad
        y = precond(r)
        ry_new = float(torch.dot(r, y))
        d = -y + (ry_new / ry) * d
        ry = ry_new
        phi = float(0.5 * torch.dot(x, r - b))
        phis.append(phi)
        if i in marks:
            saved.append((i, x.clone(), phi))
        k = max(min_gap, math.ceil(gap_fraction * i))
        if i > k and phi < 0 and (phi - phis[i - k]) / phi < k * progress_eps:
            reason = "relative_progress"
            break
    iterations = len(phis) - 1
    if not saved or saved[-1][0] != iterations:
        saved.append((iterations, x.clone(), phis[-1]))
    return CGResult(x=x, iterations=iterations, stop_reason=reason, phi=phis, saved=saved,
                    restarted=restarted)


def _cg_backtrack(
    candidates: Sequence[Tensor], objective: Callable[[Tensor], float]
) -> tuple[int, float, list[float]]:
    """Martens (2010): from the last saved iterate go back while ``f`` keeps falling.

    Returns the chosen index, its objective and the objectives evaluated (last first).
    """
    best = len(candidates) - 1
    f_best = objective(candidates[best])
    evaluated = [f_best]
    for j in range(best - 1, -1, -1):
        f_j = objective(candidates[j])
        evaluated.append(f_j)
        if not f_j < f_best:
            break
        best, f_best = j, f_j
    return best, f_best, evaluated
