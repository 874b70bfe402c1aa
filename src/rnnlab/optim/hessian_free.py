"""Hessian-free optimization (Martens 2010; Martens & Sutskever 2011).

One step minimises a damped quadratic model of the objective ``f(theta) = L(F(theta))`` (``F``
the network's outputs, ``L`` a loss convex in the outputs) around the current parameters::

    q(p) = g^T p + 1/2 p^T (G + lambda I + lambda mu G_S) p,       g = grad f(theta)
    G    = J^T H_L J            Gauss-Newton matrix (Schraudolph 2002; Martens 2010)
    G_S  = J_S^T J_S            structural damping (Martens & Sutskever 2011)

with ``J = dF/dtheta``, ``H_L = d^2 L / dF^2`` (positive semi-definite for a convex loss, so the
model is convex) and ``J_S = dS/dtheta`` the Jacobian of the hidden states ``S(theta)``. No matrix
is ever formed: ``G v`` is one Jacobian-vector product ``J v`` (forward mode), one loss Hessian
product ``H_L u`` (double backward through ``L`` only) and one vector-Jacobian product
``J^T w`` (reverse mode).

``q`` is minimised by preconditioned conjugate gradient (CG) started from the decayed previous
solution and stopped by Martens' relative-progress rule; the step is the best of a few saved CG
iterates (CG-iterate backtracking), scaled by an Armijo line search; ``lambda`` follows the
Levenberg-Marquardt rule on the reduction ratio. ``docs/hessian_free.md`` maps every piece to
its equation and source.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rnnlab.cells import twice_differentiable

Tensor = torch.Tensor
Forward = Callable[[], Tensor]
Loss = Callable[[Tensor], Tensor]


# ----------------------------------------------------------------------------------------------
# flat-vector helpers: CG works on one vector holding every parameter


def _flatten(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    parts, start = [], 0
    for t in like:
        n = t.numel()
        parts.append(vec[start:start + n].view_as(t))
        start += n
    return parts


def _check_params(params: Iterable[Tensor]) -> list[Tensor]:
    params = list(params)
    if not params:
        raise ValueError("params is empty: the optimizer has nothing to optimize")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(f"params[{i}] has dtype {p.dtype}; Hessian-free needs floating point")
        if p.is_sparse:
            raise ValueError(f"params[{i}] is sparse; Hessian-free supports dense parameters only")
    dtypes = {p.dtype for p in params}
    devices = {p.device for p in params}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(
            "all parameters must share one dtype and one device (they form a single vector), "
            f"got dtypes {sorted(map(str, dtypes))} and devices {sorted(map(str, devices))}"
        )
    return params


def _param_names(model: nn.Module, params: Sequence[Tensor]) -> list[str]:
    names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise ValueError(
            f"params {missing} are not parameters of the model given as model=; pass the "
            "model whose parameters are optimized (or leave model=None)"
        )
    return [names[id(p)] for p in params]


class _ClosureModule(nn.Module):
    """Runs a user closure as the forward of a module that owns ``model``.

    ``functional_call`` swaps the parameters of ``self.model`` for the duration of the call; the
    closure refers to the same model object, so it sees the swapped tensors. This is what lets a
    zero-argument closure such as ``lambda: model(x)[0]`` be differentiated by ``torch.func``.
    """

    def __init__(self, model: nn.Module, fn: Forward) -> None:
        super().__init__()
        self.model = model
        self._fn = fn

    def forward(self) -> Tensor:
        return self._fn()


def _check_output(name: str, out: object) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(
            f"{name}() must return one torch.Tensor, got {type(out).__name__}; for a model that "
            "returns a tuple select the outputs, e.g. lambda: model(x)[0]"
        )
    if not out.is_floating_point():
        raise TypeError(f"{name}() returned dtype {out.dtype}; a floating point tensor is needed")
    return out


def _check_scalar(value: object) -> Tensor:
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"loss(outputs) must return a scalar tensor, got {shape}")
    return value.reshape(())


# ----------------------------------------------------------------------------------------------
# Gauss-Newton operator


class GaussNewton:
    """The Gauss-Newton matrix ``G = J^T H_L J`` of ``loss(forward())`` as a matrix-free operator.

    Built at the current values of ``params`` (Schraudolph 2002; Martens 2010)::

        G v = J^T ( H_L ( J v ) ),   J = d forward() / d params,   H_L = d^2 loss / d outputs^2

    ``J v`` is a forward-mode product, ``J^T w`` a reverse-mode one and ``H_L u`` a Hessian-vector
    product of the loss alone (double backward through ``loss`` at the fixed outputs), so any loss
    that is twice differentiable in the outputs works; ``G`` is positive semi-definite exactly
    when ``H_L`` is, i.e. for a loss convex in the outputs (squared error, softmax cross-entropy
    on logits, logistic loss).

    Two backends compute ``J v`` and ``J^T w``:

    * ``model`` given: ``torch.func.jvp`` and ``torch.func.vjp`` of ``functional_call`` on the
      model's parameters (true forward mode, the R-operator of Pearlmutter 1994);
    * ``model=None``: plain autograd on the closure's graph, ``J v`` by the double-vjp identity
      ``J v = d/du (J^T u) . v`` (works for any closure that reads ``params``).

    Both differentiate the forward graph beyond first-order reverse mode, so ``forward`` runs
    inside :func:`rnnlab.cells.twice_differentiable`: rnnlab layers with ``impl="auto"`` then
    run the plain step loop rather than a first-order fast path.

    Attributes (all detached): ``value`` the loss, ``outputs`` the forward output,
    ``output_gradient`` dL/d outputs, ``gradient`` the flat gradient ``J^T dL/d outputs``.
    """

    def __init__(
        self,
        forward: Forward,
        loss: Loss,
        params: Iterable[Tensor],
        *,
        model: nn.Module | None = None,
    ) -> None:
        self.params = _check_params(params)
        # twice_differentiable: the curvature products differentiate the forward graph twice
        # (model=None: J v by double vjp) or under torch.func; "auto" layers then run the plain
        # loop, whose graph supports both (a fused or hand-written sequence is first-order fast)
        with torch.enable_grad(), twice_differentiable():
            if model is None:
                out = self._setup_autograd(forward)
            else:
                out = self._setup_func(forward, model)
            self.outputs = out.detach()
            # The loss Hessian is taken at fixed outputs: a leaf of its own, so H_L u never
            # differentiates through the network.
            self._out_leaf = self.outputs.clone().requires_grad_(True)
            value = _check_scalar(loss(self._out_leaf))
            self.value = value.detach()
            (dl,) = torch.autograd.grad(value, self._out_leaf, create_graph=True,
                                        allow_unused=True)
        if dl is None:
            dl = torch.zeros_like(self.outputs)
        self._dl = dl
        self.output_gradient = dl.detach()
        self.gradient = _flatten(self._vjp(self.output_gradient))

    # -- backends ------------------------------------------------------------------------------
    def _setup_autograd(self, forward: Forward) -> Tensor:
        for i, p in enumerate(self.params):
            if not p.requires_grad:
                raise ValueError(f"params[{i}] does not require grad; autograd cannot reach it")
        out = _check_output("forward", forward())
        if not out.requires_grad:
            raise ValueError("forward() output does not depend on the optimized parameters")
        self._out = out
        # J^T u is linear in the dummy u; differentiating it w.r.t. u along v gives J v.
        self._u = torch.zeros_like(out, requires_grad=True)
        jtu = torch.autograd.grad(out, self.params, self._u, create_graph=True, allow_unused=True)
        self._jtu = [(k, g) for k, g in enumerate(jtu) if g is not None and g.requires_grad]
        self._jvp = self._jvp_autograd
        self._vjp = self._vjp_autograd
        self._batched_vjp = self._batched_vjp_autograd
        return out

    def _setup_func(self, forward: Forward, model: nn.Module) -> Tensor:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        names = ["model." + n for n in _param_names(model, self.params)]
        holder = _ClosureModule(model, forward)

        def fn(*ps: Tensor) -> Tensor:
            out = torch.func.functional_call(holder, dict(zip(names, ps, strict=True)), ())
            return _check_output("forward", out)

        self._fn = fn
        self._primals = tuple(p.detach() for p in self.params)
        out, self._vjp_fn = torch.func.vjp(fn, *self._primals)
        self._jvp = self._jvp_func
        self._vjp = self._vjp_func
        self._batched_vjp = self._batched_vjp_func
        return out

    def _jvp_autograd(self, parts: list[Tensor]) -> Tensor:
        if not self._jtu:
            return torch.zeros_like(self.outputs)
        (jv,) = torch.autograd.grad(
            [g for _, g in self._jtu], self._u, [parts[k] for k, _ in self._jtu],
            retain_graph=True, allow_unused=True,
        )
        return torch.zeros_like(self.outputs) if jv is None else jv

    def _vjp_autograd(self, w: Tensor) -> list[Tensor]:
        grads = torch.autograd.grad(self._out, self.params, w, retain_graph=True,
                                    allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads,
                                                                          strict=True)]

    def _batched_vjp_autograd(self, w: Tensor) -> list[Tensor]:
        grads = torch.autograd.grad(self._out, self.params, w, retain_graph=True,
                                    allow_unused=True, is_grads_batched=True)
        return [w.new_zeros(w.shape[0], *p.shape) if g is None else g
                for p, g in zip(self.params, grads, strict=True)]

    def _jvp_func(self, parts: list[Tensor]) -> Tensor:
        return torch.func.jvp(self._fn, self._primals, tuple(parts))[1]

    def _vjp_func(self, w: Tensor) -> list[Tensor]:
        return list(self._vjp_fn(w))

    def _batched_vjp_func(self, w: Tensor) -> list[Tensor]:
        return list(torch.func.vmap(self._vjp_fn)(w))

    # -- products ------------------------------------------------------------------------------
    def loss_hessian_product(self, u: Tensor) -> Tensor:
        """``H_L u`` for ``u`` shaped like the outputs."""
        if not self._dl.requires_grad:  # loss linear in the outputs
            return torch.zeros_like(u)
        (hu,) = torch.autograd.grad(self._dl, self._out_leaf, u, retain_graph=True,
                                    allow_unused=True)
        return torch.zeros_like(u) if hu is None else hu

    def jvp(self, v: Tensor) -> Tensor:
        """``J v`` for a flat parameter-space vector ``v``; shaped like the outputs."""
        return self._jvp(_unflatten(v, self.params))

    def vjp(self, w: Tensor) -> Tensor:
        """``J^T w`` for ``w`` shaped like the outputs; a flat parameter-space vector."""
        return _flatten(self._vjp(w))

    def matvec(self, v: Tensor) -> Tensor:
        """``G v = J^T H_L J v`` for a flat vector ``v`` (parameter order of ``params``)."""
        return self.vjp(self.loss_hessian_product(self.jvp(v)))

    __call__ = matvec

    def per_sample_square_gradients(self, chunk_size: int = 64) -> Tensor:
        """``sum_i g_i * g_i`` with ``g_i`` sample ``i``'s share of the gradient (flat).

        Sample ``i`` is index ``i`` of the outputs' first (batch) dimension; ``g_i = J^T e_i``
        where ``e_i`` is ``dL/d outputs`` restricted to that sample, which is the gradient of
        sample ``i``'s term when the loss is a sum (or mean) of per-sample terms. This is the
        diagonal of the empirical Fisher used by Martens' (2010) preconditioner.
        """
        if self.outputs.dim() == 0:
            raise ValueError("the preconditioner needs batch-first outputs; forward() gave a "
                             "0-dimensional tensor")
        dl = self.output_gradient
        batch = dl.shape[0]
        total = dl.new_zeros(sum(p.numel() for p in self.params))
        for start in range(0, batch, chunk_size):
            idx = torch.arange(start, min(batch, start + chunk_size), device=dl.device)
            cot = dl.new_zeros(len(idx), *dl.shape)
            cot[torch.arange(len(idx), device=dl.device), idx] = dl[idx]
            grads = self._batched_vjp(cot)
            total += torch.cat([g.pow(2).sum(0).reshape(-1) for g in grads])
        return total


def _half_squared_distance(h: Tensor) -> Tensor:
    # D_S(h) = 1/2 ||h - h_n||^2 evaluated at h_n: value 0, gradient 0, Hessian I.
    return 0.5 * (h - h.detach()).pow(2).sum()


# ----------------------------------------------------------------------------------------------
# conjugate gradient


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
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters must be a positive int, got {max_iters!r}")
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


# ----------------------------------------------------------------------------------------------
# the optimizer


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _in_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool,
              hi_open: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{rb}, got {value!r}")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


class HessianFree(torch.optim.Optimizer):
    """Martens' Hessian-free optimizer with structural damping, ``torch.optim`` style.

    Each :meth:`step` (Martens 2010; Martens & Sutskever 2011):

    1. ``g = grad f``, ``f(theta) = loss(forward())``, and the damped curvature
       ``A = G + lambda I + lambda mu G_S`` as matrix-free products (:class:`GaussNewton`);
    2. preconditioned CG on ``q(p) = g^T p + 1/2 p^T A p`` from ``cg_decay * p_prev``,
       stopped by the relative-progress rule or ``max_cg_iters`` (:func:`conjugate_gradient`);
    3. CG-iterate backtracking: of the iterates saved at ``i = ceil(1.3^j)`` the best by ``f``,
       walking back from the last;
    4. Levenberg-Marquardt on the damped model ``q`` that CG minimised:
       ``rho = (f(theta + p) - f(theta)) / q(p)``; ``rho < 1/4``:
       ``lambda *= damping_boost`` (3/2); ``rho > 3/4``: ``lambda *= damping_drop`` (2/3);
    5. Armijo backtracking line search: the largest ``alpha = lr * ls_decay^j`` with
       ``f(theta + alpha p) <= f(theta) + armijo_c * alpha * g^T p``; ``theta += alpha p``.

    Args:
        params: the parameters (one group; per-group options are not supported, as in LBFGS).
        lr: the first step length the line search tries (Martens: 1).
        damping: the initial Tikhonov damping ``lambda`` (> 0). ``param_groups[0]["damping"]``
            holds the current value and is adapted by the LM rule.
        model: the ``nn.Module`` owning ``params``. Given, the curvature products use
            ``torch.func`` (``functional_call`` + ``jvp``/``vjp``); ``None``, plain autograd
            (double vjp), which works for any closure.
        max_cg_iters: CG iteration cap (Martens: 250).
        cg_progress_eps: ``eps`` of the relative-progress rule (Martens: 5e-4).
        cg_decay: warm start factor for the previous CG solution (Martens: 0.95).
        cg_backtrack_gamma: spacing of the saved CG iterates (Martens: 1.3).
        preconditioner: use ``M = (diag(sum_i g_i^2) + lambda)^precond_exponent`` (Martens 2010)
            with ``g_i`` per-sample gradients; needs batch-first outputs and a loss
            that is a sum or mean over samples.
        precond_exponent: ``alpha`` of the preconditioner (Martens: 0.75).
        structural_damping: ``mu >= 0``, the weight of the hidden-state term relative to
            ``lambda`` (Martens & Sutskever 2011); ``> 0`` needs ``hidden`` in :meth:`step`.
        adapt_damping: apply the Levenberg-Marquardt rule.
        damping_boost, damping_drop: LM factors (Martens: 3/2 and 2/3).
        line_search: run the Armijo line search; otherwise take ``alpha = lr`` (a step to a
            non-finite objective is still refused).
        armijo_c, ls_decay, max_ls_iters: Armijo constant (1e-2), step shrink factor (0.8)
            and the number of trials before giving up the step (60).

    Usage::

        opt = HessianFree(model.parameters(), damping=1.0, model=model,
                          structural_damping=0.1)
        for _ in range(steps):
            opt.step(forward=lambda: model(x)[0],
                     loss=lambda out: (out - y).pow(2).sum(),
                     hidden=lambda: model.hidden_states(x))

    Bad steps: a damping that is not finite and positive (for example edited in
    ``param_groups``), a non-finite loss, gradient, preconditioner or curvature product makes
    :meth:`step` skip: the parameters are left exactly as they were, a ``RuntimeWarning`` says
    why, and ``skipped_steps`` (``state["skipped_steps"]``) counts it. ``last_step`` holds the
    diagnostics of the latest step (rho, CG iterations and stop reason, the chosen iterate,
    alpha, the damping used and the next one).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        damping: float = 1.0,
        *,
        model: nn.Module | None = None,
        max_cg_iters: int = 250,
        cg_progress_eps: float = 5e-4,
        cg_decay: float = 0.95,
        cg_backtrack_gamma: float = 1.3,
        preconditioner: bool = False,
        precond_exponent: float = 0.75,
        structural_damping: float = 0.0,
        adapt_damping: bool = True,
        damping_boost: float = 1.5,
        damping_drop: float = 2.0 / 3.0,
        line_search: bool = True,
        armijo_c: float = 1e-2,
        ls_decay: float = 0.8,
        max_ls_iters: int = 60,
    ) -> None:
        defaults = {
            "lr": _positive("lr", lr),
            "damping": _positive("damping", damping),
            "max_cg_iters": _positive_int("max_cg_iters", max_cg_iters),
            "cg_progress_eps": _positive("cg_progress_eps", cg_progress_eps),
            "cg_decay": _in_range("cg_decay", cg_decay, 0.0, 1.0, lo_open=False, hi_open=False),
            "cg_backtrack_gamma": _in_range("cg_backtrack_gamma", cg_backtrack_gamma, 1.0,
                                            math.inf, lo_open=True, hi_open=True),
            "preconditioner": bool(preconditioner),
            "precond_exponent": _in_range("precond_exponent", precond_exponent, 0.0, 1.0,
                                          lo_open=False, hi_open=False),
            "structural_damping": _in_range("structural_damping", structural_damping, 0.0,
                                            math.inf, lo_open=False, hi_open=True),
            "adapt_damping": bool(adapt_damping),
            "damping_boost": _in_range("damping_boost", damping_boost, 1.0, math.inf,
                                       lo_open=True, hi_open=True),
            "damping_drop": _in_range("damping_drop", damping_drop, 0.0, 1.0, lo_open=True,
                                      hi_open=True),
            "line_search": bool(line_search),
            "armijo_c": _in_range("armijo_c", armijo_c, 0.0, 1.0, lo_open=True, hi_open=True),
            "ls_decay": _in_range("ls_decay", ls_decay, 0.0, 1.0, lo_open=True, hi_open=True),
            "max_ls_iters": _positive_int("max_ls_iters", max_ls_iters),
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("HessianFree doesn't support per-parameter options (parameter "
                             "groups): pass one iterable of parameters")
        self._params = _check_params(self.param_groups[0]["params"])
        if model is not None:
            if not isinstance(model, nn.Module):
                raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
            _param_names(model, self._params)
        self.model = model
        self.state["step"] = 0
        self.state["skipped_steps"] = 0
        self.state["cg_init"] = None
        self.state["last_step"] = {}

    # -- public helpers ------------------------------------------------------------------------
    @property
    def damping(self) -> float:
        """The current Tikhonov damping ``lambda``."""
        return self.param_groups[0]["damping"]

    @property
    def skipped_steps(self) -> int:
        return self.state["skipped_steps"]

    @property
    def last_step(self) -> dict[str, Any]:
        return self.state["last_step"]

    def gauss_newton(self, forward: Forward, loss: Loss) -> GaussNewton:
        """The :class:`GaussNewton` operator of ``loss(forward())`` at the current parameters."""
        return GaussNewton(forward, loss, self._params, model=self.model)

    def curvature_operator(
        self, forward: Forward, loss: Loss, hidden: Forward | None = None
    ) -> Callable[[Tensor], Tensor]:
        """``v -> (G + lambda I + lambda mu G_S) v`` at the current parameters and damping."""
        mu = self._check_hidden(hidden)
        gn = self.gauss_newton(forward, loss)
        gs = None if hidden is None else GaussNewton(hidden, _half_squared_distance,
                                                     self._params, model=self.model)
        return self._damped(gn, gs, self.damping, mu)

    # -- internals -----------------------------------------------------------------------------
    def _check_hidden(self, hidden: Forward | None) -> float:
        mu = self.param_groups[0]["structural_damping"]
        if mu > 0 and hidden is None:
            raise ValueError(f"structural_damping = {mu} needs hidden=, a closure returning the "
                             "hidden states (e.g. lambda: model.hidden_states(x))")
        if hidden is not None and mu == 0:
            raise ValueError("hidden= was given but structural_damping is 0; set "
                             "structural_damping > 0 to use it")
        if hidden is not None and not callable(hidden):
            raise TypeError("hidden must be a callable returning the hidden states")
        return mu

    @staticmethod
    def _damped(gn: GaussNewton, gs: GaussNewton | None, lam: float,
                mu: float) -> Callable[[Tensor], Tensor]:
        def matvec(v: Tensor) -> Tensor:
            out = gn.matvec(v) + lam * v
            if gs is not None:
                out = out + (lam * mu) * gs.matvec(v)
            return out

        return matvec

    def _set(self, flat: Tensor) -> None:
        with torch.no_grad():
            for p, part in zip(self._params, _unflatten(flat, self._params), strict=True):
                p.copy_(part)

    @staticmethod
    def _evaluate(forward: Forward, loss: Loss) -> float:
        with torch.no_grad():
            value = float(_check_scalar(loss(_check_output("forward", forward()))))
        return value if math.isfinite(value) else math.inf

    def _skip(self, reason: str, value: Tensor) -> Tensor:
        self.state["skipped_steps"] += 1
        self.state["last_step"] = {"skipped": True, "reason": reason, "damping": self.damping}
        warnings.warn(f"HessianFree step skipped: {reason}; the parameters were not changed",
                      RuntimeWarning, stacklevel=3)
        return value

    # -- the step ------------------------------------------------------------------------------
    def step(  # type: ignore[override]
        self, forward: Forward, loss: Loss, hidden: Forward | None = None
    ) -> Tensor:
        """One Hessian-free update; returns the loss before it.

        Args:
            forward: closure returning the network outputs ``F(theta)`` (one tensor, batch first
                when the preconditioner is on), e.g. ``lambda: model(x)[0]``.
            loss: the loss of the outputs, ``L(outputs) -> scalar``, convex in the outputs for
                the Gauss-Newton matrix to be positive semi-definite.
            hidden: closure returning the hidden states ``S(theta)`` (any shape), required when
                ``structural_damping > 0``; the damping term is ``1/2 ||S(theta + p) -
                S(theta)||^2``, whose Gauss-Newton matrix is ``J_S^T J_S``.
        """
        if not callable(forward) or not callable(loss):
            raise TypeError("forward and loss must be callables: forward() -> outputs, "
                            "loss(outputs) -> scalar")
        group = self.param_groups[0]
        mu = self._check_hidden(hidden)
        self.state["step"] += 1
        ref = group["params"][0]  # a skipped step returns NaN where the loss would live
        nan = torch.full((), math.nan, dtype=ref.dtype, device=ref.device)
        lam = group["damping"]
        if isinstance(lam, bool) or not isinstance(lam, int | float) or not math.isfinite(lam) \
                or lam <= 0:
            return self._skip(f"damping must be a finite number > 0, got {lam!r}", nan)

        gn = self.gauss_newton(forward, loss)
        f0 = float(gn.value)
        if not math.isfinite(f0):
            return self._skip(f"the loss is non-finite ({f0})", gn.value)
        g = gn.gradient
        if not bool(torch.isfinite(g).all()):
            return self._skip("the gradient is non-finite", gn.value)
        if not bool(g.any()):
            self.state["last_step"] = {"skipped": False, "loss": f0, "new_loss": f0,
                                       "alpha": 0.0, "damping": lam, "reason": "zero gradient"}
            return gn.value
        gs = None if hidden is None else GaussNewton(hidden, _half_squared_distance,
                                                     self._params, model=self.model)
        precond = None
        if group["preconditioner"]:
            sq = gn.per_sample_square_gradients()
            if not bool(torch.isfinite(sq).all()):
                return self._skip("the preconditioner (per-sample gradients) is non-finite",
                                  gn.value)
            precond = (sq + lam).pow(group["precond_exponent"])

        x0 = self.state["cg_init"]
        if x0 is not None and (x0.shape != g.shape or x0.dtype != g.dtype
                               or x0.device != g.device):
            x0 = None  # the parameters changed shape, dtype or device: no warm start
        cg = conjugate_gradient(
            self._damped(gn, gs, lam, mu), -g,
            None if x0 is None else group["cg_decay"] * x0,
            max_iters=group["max_cg_iters"], progress_eps=group["cg_progress_eps"],
            preconditioner=precond, save_gamma=group["cg_backtrack_gamma"],
        )
        if cg.stop_reason == "non_finite" or not bool(torch.isfinite(cg.x).all()):
            return self._skip("a curvature-vector product is non-finite", gn.value)
        self.state["cg_init"] = cg.x.detach().clone()

        theta0 = _flatten([p.detach() for p in self._params]).clone()
        alpha, new_loss = 0.0, f0
        try:
            def objective(p: Tensor) -> float:
                self._set(theta0 + p)
                return self._evaluate(forward, loss)

            cands = [x for _, x, _ in cg.saved]
            idx, f_p, tried = _cg_backtrack(cands, objective)
            it, p, q = cg.saved[idx]
            # q(p) < 0 is the predicted decrease; without one (p = 0 after negative curvature)
            # the model is not trusted: count it as a bad step so lambda grows.
            rho = (f_p - f0) / q if q < 0 and math.isfinite(f_p) else -math.inf

            slope = float(torch.dot(g, p))
            lr = group["lr"]
            if slope < 0:
                if group["line_search"]:
                    a = lr
                    for _ in range(group["max_ls_iters"]):
                        f_a = f_p if a == 1.0 else objective(a * p)
                        if f_a <= f0 + group["armijo_c"] * a * slope:
                            alpha, new_loss = a, f_a
                            break
                        a *= group["ls_decay"]
                else:
                    f_a = f_p if lr == 1.0 else objective(lr * p)
                    if math.isfinite(f_a):
                        alpha, new_loss = lr, f_a
        finally:
            self._set(theta0 + alpha * p if alpha > 0 else theta0)

        next_lam = lam
        if group["adapt_damping"]:
            if rho < 0.25:
                next_lam = lam * group["damping_boost"]
            elif rho > 0.75:
                next_lam = lam * group["damping_drop"]
        group["damping"] = next_lam
        self.state["last_step"] = {
            "skipped": False, "loss": f0, "new_loss": new_loss, "rho": rho, "alpha": alpha,
            "damping": lam, "next_damping": next_lam, "cg_iterations": cg.iterations,
            "cg_stop": cg.stop_reason, "cg_restarted": cg.restarted,
            "cg_initial_objective": cg.phi[0],
            "backtrack_iteration": it, "backtrack_losses": tried, "model_decrease": q,
        }
        return gn.value
