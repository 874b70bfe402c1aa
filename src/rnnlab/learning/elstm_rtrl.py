"""Exact RTRL for the element-wise LSTM in O(N D) per step (Irie et al. 2023).

With element-wise recurrence, dc_k(t)/dc_l(t-1) = 0 for k != l and row k's parameters reach only
c_k, so the influence is a ``(batch, N, 2D + 4)`` tensor (per unit: its rows of W_z, W_f and its
w_z, w_f, b_z, b_f). With a_z, a_f the pre-activations and ``z, f`` as in
:mod:`rnnlab.cells.elstm`::

    J_k = dc_k(t)/dc_k(t-1)
        = f_k + f_k (1 - f_k) w_f,k (c_k(t-1) - z_k) + (1 - f_k)(1 - z_k^2) w_z,k
    dc_k/da_f,k = f_k (1 - f_k)(c_k(t-1) - z_k),     dc_k/da_z,k = (1 - f_k)(1 - z_k^2)
    M_k(t) = J_k M_k(t-1) + [dc_k/da_z * (x, c_k(t-1), 1),  dc_k/da_f * (x, c_k(t-1), 1)]

The step's gradient is ``g_c,k M_k(t)`` with ``g_c = de(t)/dc(t)`` (through h and the readout,
by autograd); the output gate and the readout do not feed the recurrence and get their gradient
directly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rnnlab._validation import check_tensor
from rnnlab.cells.elstm import ELSTMCell
from rnnlab.learning.base import (
    LearningRule,
    add_to_grad,
    check_reduction,
    check_saved_tensor,
    clone_state,
    load_checked,
    saved_state_to,
    squared_error,
)


class ELSTMRTRL(LearningRule):
    """Exact, O(N D)-per-step RTRL for a model whose ``cell`` is an :class:`ELSTMCell` and
    that has ``initial_state(batch)`` and ``output(state)`` (a linear readout of the hidden
    state). :class:`~rnnlab.models.RecurrentNetwork` does not take an ELSTMCell (a plain
    ``nn.Module`` cell, not a :class:`~rnnlab.cells.RecurrentCell`), so such a model is a small
    ``nn.Module`` of the user's."""

    def __init__(self, model: nn.Module, reduction: str = "sum") -> None:
        if not isinstance(getattr(model, "cell", None), ELSTMCell):
            raise TypeError("ELSTMRTRL needs a model whose .cell is an ELSTMCell")
        self.model = model
        self.cell: ELSTMCell = model.cell
        self.reduction = check_reduction(reduction)
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.influence: torch.Tensor | None = None
        self.last_loss: torch.Tensor | None = None

    @property
    def grad_ready(self) -> bool:
        return True

    @property
    def state(self):
        return self._state

    def reset(self, batch_size: int | None = None, h0=None) -> None:
        batch_size = 1 if batch_size is None else batch_size
        self._state = self.cell.initial_state(batch_size) if h0 is None else h0
        d = self.cell.input_size
        self.influence = self._state[0].new_zeros(batch_size, self.cell.hidden_size, 2 * d + 4)

    def step(self, x_t: torch.Tensor, y_t: torch.Tensor | None = None) -> torch.Tensor:
        cell = self.cell
        check_tensor("x_t", x_t, ndim=2, last_dim=cell.input_size, dtype=cell.weight_z.dtype,
                     device=cell.weight_z.device, layout="(batch, features)")
        self._begin_step(x_t, None if self._state is None else self._state[0].shape[0])
        c_prev = self._state[0]
        with torch.no_grad():
            z, f, c = cell.gates(x_t, c_prev)
            dz = (1.0 - f) * (1.0 - z * z)                 # dc/da_z
            df = f * (1.0 - f) * (c_prev - z)              # dc/da_f
            jac = f + df * cell.recurrent_f + dz * cell.recurrent_z
            d = cell.input_size
            # per unit: [x (D), c_prev, 1] for z, then the same for f
            zpart = torch.cat([dz.unsqueeze(2) * x_t.unsqueeze(1),
                               (dz * c_prev).unsqueeze(2), dz.unsqueeze(2)], dim=2)
            fpart = torch.cat([df.unsqueeze(2) * x_t.unsqueeze(1),
                               (df * c_prev).unsqueeze(2), df.unsqueeze(2)], dim=2)
            self.influence = jac.unsqueeze(2) * self.influence + torch.cat([zpart, fpart], 2)
        leaf = c.detach().requires_grad_(True)
        with torch.enable_grad():
            h = cell.output_gate(x_t, leaf)
            o = self.model.output((leaf, h))
            self.last_loss = None
            if y_t is not None:
                self._check_step_target(y_t, o)
                loss = squared_error(o, y_t, self.reduction)
                recurrent = {id(getattr(cell, n)) for n in _RECURRENT}
                direct = [p for p in self.model.parameters() if id(p) not in recurrent]
                g_c = self._state_gradient(loss, leaf, direct)
                self.last_loss = loss.detach()
                with torch.no_grad():
                    per_unit = (g_c.unsqueeze(2) * self.influence).sum(0)  # (N, 2D+4)
                    add_to_grad(cell.weight_z, per_unit[:, :d])
                    add_to_grad(cell.recurrent_z, per_unit[:, d])
                    add_to_grad(cell.bias_z, per_unit[:, d + 1])
                    add_to_grad(cell.weight_f, per_unit[:, d + 2 : 2 * d + 2])
                    add_to_grad(cell.recurrent_f, per_unit[:, 2 * d + 2])
                    add_to_grad(cell.bias_f, per_unit[:, 2 * d + 3])
        self._state = (c, h.detach())
        return o.detach()

    def state_dict(self) -> dict[str, Any]:
        """The online state: ``{"kind": "ELSTMRTRL", "state": (c, h) or None (not started),
        "influence": (batch, N, 2D + 4) or None}`` (copies)."""
        influence = None if self._state is None else self.influence.detach().clone()
        return {"kind": "ELSTMRTRL", "state": clone_state(self._state), "influence": influence}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; a state of another rule, size or dtype
        raises ``ValueError`` and changes nothing."""
        load_checked(self, saved, ("state", "influence"), self._load_state)

    def _load_state(self, saved: dict[str, Any]) -> None:
        state = saved["state"]
        if state is None:
            self._state, self.influence, self.last_loss = None, None, None
            return
        batch = state[0].shape[0]
        self.reset(batch, h0=saved_state_to(state, self.cell.initial_state(batch)))
        self.influence = check_saved_tensor("influence", saved["influence"], self.influence)


_RECURRENT = {"weight_z", "weight_f", "recurrent_z", "recurrent_f", "bias_z", "bias_f"}
