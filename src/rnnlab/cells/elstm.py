"""The element-wise LSTM (eLSTM) of Irie, Gopalakrishnan & Schmidhuber (2023, "Exploring the
Promise and Limits of Real-Time Recurrent Learning"): recurrent connections are element-wise
(vectors, not matrices), so each unit's memory cell depends on its own past only and exact
RTRL costs O(N D) per step instead of O(N^4).

    z(t) = tanh(W_z x(t) + w_z * c(t-1) + b_z)        (cell input)
    f(t) = sigmoid(W_f x(t) + w_f * c(t-1) + b_f)     (forget gate)
    c(t) = f(t) * c(t-1) + (1 - f(t)) * z(t)          (coupled input/forget, as in the paper)
    o(t) = sigmoid(W_o [x(t); c(t)] + b_o)            (output gate, conditioned on c(t))
    h(t) = o(t) * c(t)

``*`` is the element-wise product. The state of the cell protocol is ``(c, h)``; ``h`` is
recomputed from ``x(t)`` and ``c(t)`` at every step (it feeds no recurrence), so the only
recurrent sensitivities are dc_k(t)/d(row k of W_z, W_f, w_z, w_f, b_z, b_f).
"""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.cells.base import check_batch_size, init_sizes, torch_shaped, uniform_reset_


class ELSTMCell(nn.Module):
    """Element-wise LSTM cell (Irie et al. 2023); ``(c, h) = cell(x_t, (c, h))``.

    Args:
        input_size: D.
        hidden_size: N.
        bias: must be True: the cell always has b_z, b_f, b_o (its closed-form RTRL,
            :class:`rnnlab.learning.ELSTMRTRL`, is written with them); the argument is there for
            torch's constructor order ``(input_size, hidden_size, bias=True, *, ...)``.
        forget_bias: added to b_f at initialization (keyword only; positional, the order
            before, still works for one release with a ``DeprecationWarning``).
        device, dtype: as for any ``torch.nn`` module.
    """

    @torch_shaped("forget_bias")
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        forget_bias: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not init_sizes(self, input_size, hidden_size, bias):
            raise ValueError(
                "ELSTMCell has no bias=False: its biases b_z, b_f, b_o are part of the model "
                "(and of ELSTMRTRL's closed form); use ELSTMCell(input_size, hidden_size)"
            )
        self.forget_bias = float(forget_bias)
        factory = {"device": device, "dtype": dtype}
        n, d = hidden_size, input_size
        self.weight_z = nn.Parameter(torch.empty(n, d, **factory))
        self.weight_f = nn.Parameter(torch.empty(n, d, **factory))
        self.recurrent_z = nn.Parameter(torch.empty(n, **factory))
        self.recurrent_f = nn.Parameter(torch.empty(n, **factory))
        self.bias_z = nn.Parameter(torch.empty(n, **factory))
        self.bias_f = nn.Parameter(torch.empty(n, **factory))
        self.weight_o = nn.Parameter(torch.empty(n, d + n, **factory))
        self.bias_o = nn.Parameter(torch.empty(n, **factory))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform(-1/sqrt(N), 1/sqrt(N)) as torch.nn's LSTM; the forget bias is added to b_f."""
        uniform_reset_(self, generator)
        with torch.no_grad():
            self.bias_f.add_(self.forget_bias)

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = self.weight_z.new_zeros(check_batch_size(batch_size), self.hidden_size)
        return zeros, zeros.clone()

    def hidden(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return state[1]

    def gates(
        self, x: torch.Tensor, c_prev: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, f, c)`` for one step (used by the exact O(N D) RTRL rule)."""
        z = torch.tanh(x @ self.weight_z.t() + self.recurrent_z * c_prev + self.bias_z)
        f = torch.sigmoid(x @ self.weight_f.t() + self.recurrent_f * c_prev + self.bias_f)
        return z, f, f * c_prev + (1.0 - f) * z

    def output_gate(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``h = sigmoid(W_o [x; c] + b_o) * c``."""
        return torch.sigmoid(torch.cat([x, c], dim=1) @ self.weight_o.t() + self.bias_o) * c

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c_prev = state[0]
        _, _, c = self.gates(x, c_prev)
        return c, self.output_gate(x, c)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}"
