"""Exact Real-Time Recurrent Learning for the Elman RNN (Williams & Zipser 1989).

RTRL carries the influence (sensitivity) tensors of the state with respect to the recurrent
parameters and updates them during the forward pass, so the gradient of every step's loss is
available at that step, with no unrolling. For the Elman RNN
``h(t) = tanh(U x(t) + W h(t-1) + b)`` and ``theta in {W, U, b}``::

    P(t)[k, i, j] = dh_k(t)/dtheta_ij
                  = (1 - h_k(t)^2) * ( sum_l W[k, l] P(t-1)[l, i, j] + delta_ki z_j(t) )

with ``z = h(t-1)`` for W, ``z = x(t)`` for U and ``z = 1`` for b, and ``P(0) = 0``. The step's
gradient is ``de(t)/dtheta = sum_k g_k(t) P(t)[k, :, :]`` with ``g(t) = de(t)/dh(t) = V^T delta_o``
and ``delta_o = de/do * f'(a_o)``; V and c get ``delta_o h^T`` and ``delta_o`` directly.

Implementation: the three influence tensors are columns of one matrix ``M(t)`` of shape
``(batch, N, |W| + |U| + |b|)``, so the update is one batched matmul
``diag(d) W @ M(t-1)`` with ``d = 1 - h(t)^2`` folded into W's rows, plus a diagonal
(``delta_ki``) term added through strided views. The step's gradient ``g^T M(t)`` is one more
row ``(g * d)^T W`` stacked under ``diag(d) W`` in the same matmul, so M is read once per step.
Cost per step: O(N^2 (N^2 + N D)) time, i.e. O(N^4), and O(N^3) memory (Williams & Zipser).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rnnlab._validation import check_positive_int, check_tensor
from rnnlab.learning.base import (
    LearningRule,
    add_to_grad,
    check_reduction,
    check_saved_tensor,
    load_checked,
)
from rnnlab.models.elman import ElmanRNN


class RTRL(LearningRule):
    """Exact RTRL: ``o_t = rule.step(x_t, y_t)`` adds ``de(t)/dtheta`` to every ``param.grad``.

    Args:
        model: the :class:`~rnnlab.ElmanRNN` to train.
        reduction: ``"sum"`` (the course's loss summed over the batch) or ``"mean"`` over it.
        check_finite: check each step's data for NaN/inf (one device sync per step; turn off
            for speed on a GPU once data are known to be clean).

    ``rule.influence`` holds the current influence tensors as views:
    ``influence["W"]`` is ``(batch, N, N, N)`` with ``[:, k, i, j] = dh_k(t)/dW_ij``;
    ``influence["U"]`` is ``(batch, N, N, D)``; ``influence["b"]`` is ``(batch, N, N)``.
    """

    def __init__(self, model: ElmanRNN, reduction: str = "sum", check_finite: bool = True):
        if not isinstance(model, ElmanRNN):
            raise TypeError(
                f"RTRL needs an ElmanRNN, got {type(model).__name__}"
            )
        self.model = model
        self.reduction = check_reduction(reduction)
        self.check_finite = check_finite
        self._batch: int | None = None
        self._h: torch.Tensor | None = None
        self._buffers: list[torch.Tensor] = []
        self._current = 0
        self._rows: torch.Tensor | None = None
        # Per buffer: (P rows, diagonal of the W block, of the U block, of the b block, the
        # gradient rows); views made once per allocation instead of every step.
        self._views: list[tuple[torch.Tensor, ...]] = []
        self.last_loss: torch.Tensor | None = None
        self.steps = 0

    # ---------------------------------------------------------------------------------------
    @property
    def grad_ready(self) -> bool:
        return True

    @property
    def state(self) -> torch.Tensor | None:
        """h(t) after the last step, shape ``(batch, N)``."""
        return self._h

    @property
    def n_influence(self) -> int:
        m = self.model
        return m.hidden_size * (m.hidden_size + m.input_size + 1)

    def reset(self, batch_size: int | None = None, h0: torch.Tensor | None = None) -> None:
        """Start new sequences: h(0) = ``h0`` (default 0) and P(0) = 0."""
        m = self.model
        if h0 is not None:
            batch_size = h0.shape[0] if batch_size is None else batch_size
            m.check_state(h0, batch_size)
        batch_size = 1 if batch_size is None else check_positive_int("batch_size", batch_size)
        n = m.hidden_size
        shape = (batch_size, n + 1, self.n_influence)
        if not self._buffers or self._buffers[0].shape != shape or \
                self._buffers[0].dtype != m.W.dtype or self._buffers[0].device != m.W.device:
            self._buffers = [m.W.new_zeros(shape), m.W.new_zeros(shape)]
            self._rows = m.W.new_empty(batch_size, n + 1, n)
            self._views = []
            for buf in self._buffers:
                infl = self._split(buf[:, :n])
                self._views.append((
                    buf[:, :n],
                    torch.diagonal(infl["W"], dim1=1, dim2=2),   # (batch, N_j, N_k)
                    torch.diagonal(infl["U"], dim1=1, dim2=2),   # (batch, D, N_k)
                    torch.diagonal(infl["b"], dim1=1, dim2=2),   # (batch, N_k)
                    buf[:, n],                                   # (batch, |theta|)
                ))
        else:
            self._buffers[0].zero_()
            self._buffers[1].zero_()
        self._current = 0
        self._batch = batch_size
        self._h = m.initial_state(batch_size) if h0 is None else h0.detach().clone()
        self.steps = 0

    @property
    def influence(self) -> dict[str, torch.Tensor]:
        if self._batch is None:
            raise RuntimeError("RTRL has no state yet: call rule.reset() or rule.step() first")
        return self._split(self._buffers[self._current][:, : self.model.hidden_size])

    def _split(self, mat: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.model
        n, d, b = m.hidden_size, m.input_size, mat.shape[0]
        lead = mat.shape[1:-1]
        nw, nu = n * n, n * d
        return {
            "W": mat[..., :nw].view(b, *lead, n, n),
            "U": mat[..., nw : nw + nu].view(b, *lead, n, d),
            "b": mat[..., nw + nu :],
        }

    # ---------------------------------------------------------------------------------------
    def _check_step_input(
        self, x_t: torch.Tensor, y_t: torch.Tensor | None, finite: bool | None = None
    ) -> None:
        m = self.model
        if finite is None and self.check_finite:
            # One reduction and one sync for both tensors: NaN/inf propagate through the sum.
            # Only if it is not finite (bad data, or a finite overflow) run the exact checks.
            self._check_step_input(x_t, y_t, finite=False)
            total = x_t.sum() if y_t is None else x_t.sum() + y_t.sum()
            if not math.isfinite(float(total)):
                self._check_step_input(x_t, y_t, finite=True)
            return
        finite = bool(finite)
        check_tensor("x_t", x_t, ndim=2, last_dim=m.input_size, dtype=m.W.dtype,
                     device=m.W.device, finite=finite, layout="(batch, features)")
        if y_t is not None:
            check_tensor("y_t", y_t, ndim=2, last_dim=m.output_size, dtype=m.W.dtype,
                         device=m.W.device, finite=finite, layout="(batch, outputs)")
            if y_t.shape[0] != x_t.shape[0]:
                raise ValueError(
                    f"y_t has batch size {y_t.shape[0]} but x_t has {x_t.shape[0]}"
                )
        self._begin_step(x_t, self._batch)
        buf = self._buffers[0]
        if buf.dtype != m.W.dtype or buf.device != m.W.device:
            raise ValueError(
                f"the model moved to {m.W.dtype}/{m.W.device} since the rule was reset "
                f"({buf.dtype}/{buf.device}); call rule.reset()"
            )

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, y_t: torch.Tensor | None = None) -> torch.Tensor:
        """Advance one step; add ``de(t)/dtheta`` to ``.grad`` when ``y_t`` is given.

        ``x_t``: ``(batch, D)``; ``y_t``: ``(batch, O)`` or None (advance without a loss).
        Returns o(t), ``(batch, O)``.
        """
        self._check_step_input(x_t, y_t)
        m = self.model
        n, nd = m.hidden_size, m.hidden_size * (m.hidden_size + m.input_size)
        W, U, V = m.W.detach(), m.U.detach(), m.V.detach()
        h_prev = self._h
        h = torch.addmm(m.b, x_t, U.t()).addmm_(h_prev, W.t()).tanh_()
        d = torch.mul(h, h).neg_().add_(1.0)                     # 1 - h^2
        o = m.output_activation(torch.addmm(m.c, h, V.t()))

        rows = self._rows
        torch.mul(d.unsqueeze(2), W, out=rows[:, :n])        # diag(d) W, one per sample
        gd = None
        if y_t is not None:
            scale = 1.0 / x_t.shape[0] if self.reduction == "mean" else 1.0
            err = (o - y_t).view(-1)
            self.last_loss = torch.dot(err, err) * scale
            delta_o = err.view_as(o).mul_(m.output_derivative(o)).mul_(2.0 * scale)  # de/da_o
            _add_product_to_grad(m.V, delta_o.t(), h)
            add_to_grad(m.c, delta_o.sum(0))
            gd = (delta_o @ V).mul_(d)                           # (g * d), g = de/dh(t)
            rows[:, n].copy_(gd @ W)                             # the gradient row (g*d)^T W
        else:
            self.last_loss = None
            rows[:, n].zero_()

        old = self._views[self._current][0]
        self._current ^= 1
        _, diag_w, diag_u, diag_b, grad_rows = self._views[self._current]
        torch.bmm(rows, old, out=self._buffers[self._current])  # the one W @ P product
        # The delta_ki z_j(t) term, times d_k, on the diagonal k == i of each block.
        d_k = d.unsqueeze(1)
        diag_w.addcmul_(d_k, h_prev.unsqueeze(2))
        diag_u.addcmul_(d_k, x_t.unsqueeze(2))
        diag_b.add_(d)

        if gd is not None:
            # g^T P(t) = (g*d)^T W P(t-1) + (g*d)^T Z(t): the stacked row plus the same
            # diagonal term, contracted with g*d.
            total = grad_rows[0] if grad_rows.shape[0] == 1 else grad_rows.sum(0)
            _add_product_to_grad(m.W, gd.t(), h_prev, total[: n * n].view(n, n))
            _add_product_to_grad(m.U, gd.t(), x_t, total[n * n : nd].view(n, -1))
            add_to_grad(m.b, gd.sum(0).add_(total[nd:]))

        self._h = h
        self.steps += 1
        return o

    def state_dict(self) -> dict[str, Any]:
        """The online state: ``{"kind": "RTRL", "state": h(t) (batch, N) or None (not started),
        "influence": {"W": (batch, N, N, N), "U": (batch, N, N, D), "b": (batch, N, N)} or
        None, "steps": int}`` (copies, in the model's dtype)."""
        if self._batch is None:
            return {"kind": "RTRL", "state": None, "influence": None, "steps": self.steps}
        return {"kind": "RTRL", "state": self._h.detach().clone(),
                "influence": {k: v.clone() for k, v in self.influence.items()},
                "steps": self.steps}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, onto the model's device; a state of
        another rule, model size or dtype raises ``ValueError`` and changes nothing."""
        load_checked(self, saved, ("state", "influence", "steps"), self._load_state)

    def _load_state(self, saved: dict[str, Any]) -> None:
        h = saved["state"]
        if h is None:
            self._batch, self._h, self.last_loss = None, None, None
            self.steps = int(saved["steps"])
            return
        m = self.model
        h = check_saved_tensor("state", h, m.W.new_empty(h.shape[0], m.hidden_size))
        influence = saved["influence"]
        if not isinstance(influence, dict) or set(influence) != {"W", "U", "b"}:
            raise ValueError("the saved RTRL influence must be a dict with keys W, U, b")
        self.reset(h.shape[0], h0=h)
        views = self.influence
        checked = {k: check_saved_tensor(f"influence[{k!r}]", influence[k], views[k])
                   for k in views}
        for key, view in views.items():  # views into the rule's buffer
            view.copy_(checked[key])
        self.steps = int(saved["steps"])

    def memory_bytes(self) -> int:
        """Bytes held by the rule's influence buffers and state (the O(N^3) of RTRL)."""
        tensors = [*self._buffers, self._rows, self._h]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _add_product_to_grad(
    param: torch.Tensor, a: torch.Tensor, b: torch.Tensor, base: torch.Tensor | None = None
) -> None:
    """``param.grad += base + a @ b`` with one fused ``addmm`` (a fresh tensor if no grad yet)."""
    if param.grad is None:
        param.grad = torch.mm(a, b) if base is None else torch.addmm(base, a, b)
        return
    if base is not None:
        param.grad.add_(base)
    param.grad.addmm_(a, b)
