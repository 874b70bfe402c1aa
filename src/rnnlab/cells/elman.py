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
from rnnlab.cells.base import (
    RecurrentCell,
    State,
    check_bool,
    fused_rnn,
    torch_shaped,
    uniform_init_,
)

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


class ElmanCell(RecurrentCell):
    """``h(t) = phi(W_ih x(t) + b_ih + W_hh h(t-1) + b_hh)``; state ``h`` ``(batch, H)``.

    Args:
        input_size: D.
        hidden_size: H.
        bias: whether the biases exist (as ``torch.nn.RNNCell``).
        nonlinearity: ``"tanh"`` or ``"relu"`` (keyword only).
        recurrent_bias: ``False`` keeps one bias ``b = bias_ih`` and no ``bias_hh`` (the course's
            Elman RNN, :class:`rnnlab.models.ElmanRNN`, has one bias ``b``); the math is the
            same as with ``bias_hh = 0``.
        generator: seeds the initialization (uniform(-1/sqrt(H), 1/sqrt(H)), as torch.nn.RNN).
        device, dtype: as for any ``torch.nn`` module.

    The third positional argument is ``bias``, as in torch; the order before (``nonlinearity``,
    ``bias`` positional) still works for one release, with a ``DeprecationWarning``.

    Example::

        cell = ElmanCell(3, 8, nonlinearity="relu")
        h = cell(torch.randn(5, 3), cell.initial_state(5))    # (5, 8)
    """

    @torch_shaped("nonlinearity", "bias")
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        nonlinearity: str = "tanh",
        recurrent_bias: bool = True,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        check_bool("bias", bias)
        check_bool("recurrent_bias", recurrent_bias)
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {nonlinearity!r}"
            )
        self.nonlinearity = nonlinearity
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size, **factory)) if bias else None
        self.bias_hh = (nn.Parameter(torch.empty(hidden_size, **factory))
                        if bias and recurrent_bias else None)
        if bias and not recurrent_bias:
            # torch's fused kernel takes both biases or none: a zero b_hh makes it compute the
            # one-bias step exactly (adding 0 is exact); not saved in the state_dict
            self.register_buffer("_zero_bias_hh", torch.zeros(hidden_size, **factory),
                                 persistent=False)
        else:
            self._zero_bias_hh = None
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
            weights += [self.bias_ih,
                        self._zero_bias_hh if self.bias_hh is None else self.bias_hh]
        return f"rnn_{self.nonlinearity}", weights

    def _sequence(self, impl, x, state0, lengths, return_states):
        kind, weights = self.fused_weights()
        outputs, final = fused_rnn(kind, x, state0, weights, lengths)
        return outputs, final, (outputs if return_states else None)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}, "
            f"nonlinearity={self.nonlinearity!r}"
            + ("" if self.bias_ih is None or self.bias_hh is not None else ", recurrent_bias=False")
        )
