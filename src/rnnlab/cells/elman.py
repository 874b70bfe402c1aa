"""The Elman (simple) recurrent cell with torch.nn's parameter names.

Equation (Elman 1990; as ``torch.nn.RNNCell``)::

    h(t) = phi(W_ih x(t) + b_ih + W_hh h(t-1) + b_hh),     phi = tanh (default) or relu

``weight_ih`` (H x D), ``weight_hh`` (H x H), ``bias_ih``, ``bias_hh`` (H) copy to and from
``nn.RNN``/``nn.RNNCell``. This is the cell-protocol form of :class:`rnnlab.models.ElmanRNN`'s
recurrence (``U = weight_ih``, ``W = weight_hh``, ``b = bias_ih + bias_hh``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab._validation import check_positive_int
from rnnlab.cells.base import RecurrentCell, State, fused_rnn, uniform_init_

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


class ElmanCell(RecurrentCell):
    """``h(t) = phi(W_ih x(t) + b_ih + W_hh h(t-1) + b_hh)``; state ``h`` ``(batch, H)``.

    Args:
        input_size: D.
        hidden_size: H.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bias: whether ``bias_ih``/``bias_hh`` exist.
        generator: seeds the initialization (uniform(-1/sqrt(H), 1/sqrt(H)), as torch.nn.RNN).
        device, dtype: as for any ``torch.nn`` module.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: str = "tanh",
        bias: bool = True,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {nonlinearity!r}"
            )
        self.nonlinearity = nonlinearity
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters(generator)
        self.layout_for_cudnn()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, as ``torch.nn.RNN``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                uniform_init_(p, bound, generator)

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)

    def step(self, u_t: torch.Tensor, state: State) -> torch.Tensor:
        return NONLINEARITIES[self.nonlinearity](
            u_t + F.linear(state, self.weight_hh, self.bias_hh)  # type: ignore[arg-type]
        )

    def available_impls(self, return_states: bool = False) -> tuple[str, ...]:
        # The state is h itself, so the fused kernel's outputs are every step's state.
        return ("fused", "loop")

    def fused_weights(self) -> tuple[str, list[torch.Tensor]]:
        weights = [self.weight_ih, self.weight_hh]
        if self.bias_ih is not None:
            weights += [self.bias_ih, self.bias_hh]
        return f"rnn_{self.nonlinearity}", weights

    def _sequence(self, impl, x, state0, lengths, return_states):
        kind, weights = self.fused_weights()
        outputs, final = fused_rnn(kind, x, state0, weights, lengths)
        return outputs, final, (outputs if return_states else None)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, nonlinearity={self.nonlinearity!r}, "
            f"bias={self.bias_ih is not None}"
        )
