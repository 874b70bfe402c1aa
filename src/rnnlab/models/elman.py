"""The Elman RNN of the course, with its five parameters U, W, b, V, c.

Equations (Elman 1990; the notation of the course and of Williams & Zipser 1989)::

    h(0)   = 0
    a_h(t) = U x(t) + W h(t-1) + b,      h(t) = tanh(a_h(t))
    a_o(t) = V h(t) + c,                 o(t) = f(a_o(t))
    L      = sum_t e(t) = sum_t ||y(t) - o(t)||^2

with ``f`` the readout activation: ``tanh`` as in the course, ``identity`` or ``sigmoid``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from rnnlab._validation import check_positive_int, check_tensor
from rnnlab.cells.base import uniform_init_


def _identity(a: torch.Tensor) -> torch.Tensor:
    return a


# Each readout: the activation and its derivative written in terms of the *output* o = f(a),
# which is what RTRL has at hand without keeping a_o.
READOUTS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor],
                          Callable[[torch.Tensor], torch.Tensor]]] = {
    "tanh": (torch.tanh, lambda o: 1.0 - o * o),
    "identity": (_identity, torch.ones_like),
    "sigmoid": (torch.sigmoid, lambda o: o * (1.0 - o)),
}


class ElmanRNN(nn.Module):
    """Elman (tanh) recurrent network with a readout: ``model(x) -> (outputs, h_T)``.

    Parameters (named as in the course): ``U`` (N x D) input weights, ``W`` (N x N) recurrent
    weights, ``b`` (N) hidden bias, ``V`` (O x N) readout weights, ``c`` (O) readout bias.

    Args:
        input_size: D, features of x(t).
        hidden_size: N, units of h(t).
        output_size: O, features of o(t).
        readout: readout activation f: ``"tanh"`` (the course), ``"identity"`` or ``"sigmoid"``.
        device, dtype: as for any ``torch.nn`` module.

    Tensors are batch first: ``x`` is ``(batch, time, D)``, outputs ``(batch, time, O)``, the
    state ``(batch, N)``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        readout: str = "tanh",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.output_size = check_positive_int("output_size", output_size)
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {sorted(READOUTS)}, got {readout!r}")
        self.readout = readout
        factory = {"device": device, "dtype": dtype}
        n, d, o = hidden_size, input_size, output_size
        self.U = nn.Parameter(torch.empty(n, d, **factory))
        self.W = nn.Parameter(torch.empty(n, n, **factory))
        self.b = nn.Parameter(torch.empty(n, **factory))
        self.V = nn.Parameter(torch.empty(o, n, **factory))
        self.c = nn.Parameter(torch.empty(o, **factory))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every parameter, as ``torch.nn.RNN``.

        U, W and b use fan-in N (like ``nn.RNN``); V and c use N, the readout's fan-in.
        """
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in (self.U, self.W, self.b, self.V, self.c):
                uniform_init_(p, bound, generator)

    # ----------------------------------------------------------------------------------------
    @property
    def output_activation(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return READOUTS[self.readout][0]

    @property
    def output_derivative(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """f'(a_o) as a function of o = f(a_o)."""
        return READOUTS[self.readout][1]

    @property
    def dtype(self) -> torch.dtype:
        return self.W.dtype

    @property
    def device(self) -> torch.device:
        return self.W.device

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """h(0) = 0, shape ``(batch_size, N)`` on the model's device and dtype."""
        check_positive_int("batch_size", batch_size)
        return self.W.new_zeros(batch_size, self.hidden_size)

    def cell(self, x_t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step of the recurrence: ``h(t) = tanh(U x(t) + W h(t-1) + b)``."""
        return torch.tanh(torch.addmm(self.b, x_t, self.U.t()) + h @ self.W.t())

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """The readout ``o = f(V h + c)`` for states of any leading shape."""
        return self.output_activation(h @ self.V.t() + self.c)

    def check_input(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        return check_tensor(
            name, x, ndim=3, last_dim=self.input_size, dtype=self.W.dtype, device=self.W.device,
            layout="(batch, time, features)",
        )

    def check_state(self, h: torch.Tensor, batch_size: int, name: str = "h0") -> torch.Tensor:
        check_tensor(name, h, ndim=2, last_dim=self.hidden_size, dtype=self.W.dtype,
                     device=self.W.device, layout="(batch, hidden)")
        if h.shape[0] != batch_size:
            raise ValueError(f"{name} has batch size {h.shape[0]}, the input has {batch_size}")
        return h

    def hidden_states(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """All states h(1..T), shape ``(batch, time, N)``."""
        self.check_input(x)
        batch, steps, _ = x.shape
        h = self.initial_state(batch) if h0 is None else self.check_state(h0, batch)
        # The input projection of the whole sequence is one matmul outside the time loop.
        drive = torch.addmm(self.b, x.reshape(batch * steps, -1), self.U.t()).view(batch, steps, -1)
        w_t = self.W.t()
        states = []
        for t in range(steps):
            h = torch.tanh(torch.addmm(drive[:, t], h, w_t))
            states.append(h)
        return torch.stack(states, dim=1)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run over ``x`` ``(batch, time, D)``; return ``(outputs (batch, time, O), h_T)``."""
        states = self.hidden_states(x, h0)
        return self.output(states), states[:, -1]

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"output_size={self.output_size}, readout={self.readout!r}, "
            f"parameters=U{tuple(self.U.shape)} W{tuple(self.W.shape)} b{tuple(self.b.shape)} "
            f"V{tuple(self.V.shape)} c{tuple(self.c.shape)}, "
            f"dtype={self.W.dtype}, device={self.W.device}"
        )
