"""The Gauss-Newton matrix ``G = J^T H_L J`` as a matrix-free operator (Schraudolph 2002;
Martens 2010), the curvature of the Hessian-free optimizer (:mod:`rnnlab.optim.hessian_free`).

With ``J = dF/dtheta`` and ``H_L = d^2 L / dF^2`` (positive semi-definite for a convex loss), no
matrix is ever formed: ``G v`` is one Jacobian-vector product ``J v`` (forward mode), one loss
Hessian product ``H_L u`` (double backward through ``L`` only) and one vector-Jacobian product
``J^T w`` (reverse mode). The optimizer builds its structural-damping term
``G_S = J_S^T J_S`` (``J_S = dS/dtheta``, the Jacobian of the hidden states) the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from rnnlab.cells import twice_differentiable
from rnnlab.optim._common import (
    Forward,
    Loss,
    Tensor,
    _check_output,
    _check_params,
    _check_scalar,
    _flatten,
    _param_names,
    _unflatten,
)


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
