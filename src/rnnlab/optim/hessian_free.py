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
its equation and source. The pieces live in their own modules: the Gauss-Newton operator in
:mod:`rnnlab.optim.gauss_newton`, the CG solver and its backtracking in :mod:`rnnlab.optim.cg`
(both re-exported here); this module is the optimizer.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from rnnlab._validation import check_number, check_positive_int
from rnnlab.optim import _common
from rnnlab.optim._common import Forward, Loss, Tensor
from rnnlab.optim.cg import CGResult, _cg_backtrack, conjugate_gradient
from rnnlab.optim.gauss_newton import GaussNewton

__all__ = ["CGResult", "GaussNewton", "HessianFree", "conjugate_gradient"]


def _half_squared_distance(h: Tensor) -> Tensor:
    # D_S(h) = 1/2 ||h - h_n||^2 evaluated at h_n: value 0, gradient 0, Hessian I.
    return 0.5 * (h - h.detach()).pow(2).sum()


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
        num = check_number
        defaults = {
            "lr": num("lr", lr, low=0.0, low_open=True),
            "damping": num("damping", damping, low=0.0, low_open=True),
            "max_cg_iters": check_positive_int("max_cg_iters", max_cg_iters),
            "cg_progress_eps": num("cg_progress_eps", cg_progress_eps, low=0.0, low_open=True),
            "cg_decay": num("cg_decay", cg_decay, low=0.0, high=1.0),
            "cg_backtrack_gamma": num("cg_backtrack_gamma", cg_backtrack_gamma, low=1.0,
                                      low_open=True),
            "preconditioner": bool(preconditioner),
            "precond_exponent": num("precond_exponent", precond_exponent, low=0.0, high=1.0),
            "structural_damping": num("structural_damping", structural_damping, low=0.0),
            "adapt_damping": bool(adapt_damping),
            "damping_boost": num("damping_boost", damping_boost, low=1.0, low_open=True),
            "damping_drop": num("damping_drop", damping_drop, low=0.0, high=1.0, low_open=True,
                                high_open=True),
            "line_search": bool(line_search),
            "armijo_c": num("armijo_c", armijo_c, low=0.0, high=1.0, low_open=True,
                            high_open=True),
            "ls_decay": num("ls_decay", ls_decay, low=0.0, high=1.0, low_open=True,
                            high_open=True),
            "max_ls_iters": check_positive_int("max_ls_iters", max_ls_iters),
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("HessianFree doesn't support per-parameter options (parameter "
                             "groups): pass one iterable of parameters")
        self._params = _common._check_params(self.param_groups[0]["params"])
        if model is not None:
            if not isinstance(model, nn.Module):
                raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
            _common._param_names(model, self._params)
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
            for p, part in zip(self._params, _common._unflatten(flat, self._params), strict=True):
                p.copy_(part)

    @staticmethod
    def _evaluate(forward: Forward, loss: Loss) -> float:
        with torch.no_grad():
            value = float(_common._check_scalar(loss(_common._check_output("forward", forward()))))
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

        theta0 = _common._flatten([p.detach() for p in self._params]).clone()
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
