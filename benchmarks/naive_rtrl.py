"""A deliberately naive, exact RTRL for :class:`rnnlab.ElmanRNN`: the speed baseline.

At every step it asks autograd (``torch.func.jacrev``, vmapped over the batch) for the two
Jacobians of the cell ``h(t) = tanh(U x(t) + W h(t-1) + b)``:

* ``J_h(t)     = dh(t)/dh(t-1)``, ``(batch, N, N)``,
* ``J_theta(t) = dh(t)/d(W, U, b)`` (immediate, with h(t-1) held fixed), ``(batch, N, |theta|)``,

and updates the influence matrix ``P(t) = J_h(t) P(t-1) + J_theta(t)`` with a dense batched
matmul. The gradient is ``g(t)^T P(t)`` with ``g(t) = de(t)/dh(t)``, also from autograd. Nothing
about the structure of the Elman cell is used: ``J_theta`` is materialized densely although it
is zero off the ``k == i`` diagonal. The columns of ``P`` are ordered as in
:class:`rnnlab.learning.RTRL` (W, U, b, each row-major), so the two can be compared.

This module is for benchmarks and cross-checks, not part of the package.
"""

from __future__ import annotations

import torch
from torch.func import jacrev, vmap

from rnnlab import ElmanRNN
from rnnlab.learning.base import add_to_grad


def _cell(
    W: torch.Tensor, U: torch.Tensor, b: torch.Tensor, x: torch.Tensor, h: torch.Tensor
) -> torch.Tensor:
    """One sample's step, ``h(t) = tanh(U x + W h + b)``, as a pure function for torch.func."""
    return torch.tanh(U @ x + W @ h + b)


# d cell / d (W, U, b, h), one sample at a time, vmapped over the batch (parameters shared).
_jacobians = vmap(jacrev(_cell, argnums=(0, 1, 2, 4)), in_dims=(None, None, None, 0, 0))


class NaiveRTRL:
    """Exact RTRL by autograd Jacobians: ``o_t = rule.step(x_t, y_t)`` adds ``de(t)/dtheta`` to
    every ``param.grad`` (loss summed over the batch, as ``RTRL(reduction="sum")``).

    ``rule.P`` is the influence matrix, ``(batch, N, N*N + N*D + N)``.
    """

    def __init__(self, model: ElmanRNN) -> None:
        self.model = model
        self.P: torch.Tensor | None = None
        self.h: torch.Tensor | None = None
        self.last_loss: torch.Tensor | None = None

    @property
    def n_influence(self) -> int:
        m = self.model
        return m.hidden_size * (m.hidden_size + m.input_size + 1)

    def reset(self, batch_size: int) -> None:
        """h(0) = 0 and P(0) = 0."""
        m = self.model
        self.h = m.initial_state(batch_size)
        self.P = m.W.new_zeros(batch_size, m.hidden_size, self.n_influence)

    def step(self, x_t: torch.Tensor, y_t: torch.Tensor | None = None) -> torch.Tensor:
        """Advance one step; add ``de(t)/dtheta`` to ``.grad`` when ``y_t`` is given."""
        m = self.model
        if self.h is None or self.P is None or self.h.shape[0] != x_t.shape[0]:
            self.reset(x_t.shape[0])
        assert self.h is not None and self.P is not None
        batch = x_t.shape[0]
        W, U, b = m.W.detach(), m.U.detach(), m.b.detach()
        h_prev = self.h

        # The Jacobians, by autograd, densely.
        j_w, j_u, j_b, j_h = _jacobians(W, U, b, x_t, h_prev)
        j_theta = torch.cat(
            [j_w.reshape(batch, m.hidden_size, -1), j_u.reshape(batch, m.hidden_size, -1), j_b],
            dim=2,
        )
        # P(t) = J_h P(t-1) + J_theta.
        self.P = torch.baddbmm(j_theta, j_h, self.P)

        with torch.no_grad():
            h = _cell_batch(W, U, b, x_t, h_prev)
        if y_t is None:
            self.last_loss = None
            with torch.no_grad():
                o = m.output(h)
        else:
            # g = de/dh(t), and the readout's own gradients, by autograd.
            h_leaf = h.detach().requires_grad_(True)
            with torch.enable_grad():
                o = m.output(h_leaf)
                loss = (y_t - o).pow(2).sum()
                g, g_v, g_c = torch.autograd.grad(loss, (h_leaf, m.V, m.c))
            self.last_loss = loss.detach()
            add_to_grad(m.V, g_v)
            add_to_grad(m.c, g_c)
            grad = torch.einsum("bk,bkp->p", g, self.P)           # sum_b g_b^T P_b
            n, d = m.hidden_size, m.input_size
            add_to_grad(m.W, grad[: n * n].view(n, n))
            add_to_grad(m.U, grad[n * n : n * n + n * d].view(n, d))
            add_to_grad(m.b, grad[n * n + n * d :])
        self.h = h
        return o.detach()


def _cell_batch(
    W: torch.Tensor, U: torch.Tensor, b: torch.Tensor, x: torch.Tensor, h: torch.Tensor
) -> torch.Tensor:
    return torch.tanh(x @ U.t() + h @ W.t() + b)
