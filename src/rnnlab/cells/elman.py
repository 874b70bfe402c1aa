"""The Elman (simple) recurrent cell with torch.nn's parameter names.

Equation (Elman 1990; as ``torch.nn.RNNCell``)::

    h(t) = phi(W_ih x(t) + b_ih + W_hh h(t-1) + b_hh),     phi = tanh (default) or relu

``weight_ih`` (H x D), ``weight_hh`` (H x H), ``bias_ih``, ``bias_hh`` (H) copy to and from
``nn.RNN``/``nn.RNNCell``. This is the cell-protocol form of :class:`rnnlab.models.ElmanRNN`'s
recurrence (``U = weight_ih``, ``W = weight_hh``, ``b = bias_ih + bias_hh``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rnnlab._validation import check_bool, check_choice
from rnnlab.cells.base import (
    State,
    TorchLayoutCell,
    add_affine_parameters,
    affine_weights,
    init_sizes,
    torch_shaped,
)

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


class ElmanCell(TorchLayoutCell):
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
        bias = init_sizes(self, input_size, hidden_size, bias)
        check_bool("recurrent_bias", recurrent_bias)
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
        add_affine_parameters(self, self.hidden_size, bias, recurrent_bias=recurrent_bias,
                              device=device, dtype=dtype)
        if bias and not recurrent_bias:
            # torch's fused kernel takes both biases or none: a zero b_hh makes it compute the
            # one-bias step exactly (adding 0 is exact); not saved in the state_dict
            self.register_buffer("_zero_bias_hh",
                                 torch.zeros(self.hidden_size, device=device, dtype=dtype),
                                 persistent=False)
        else:
            self._zero_bias_hh = None
        self.reset_parameters(generator)
        self.layout_for_cudnn()

    def step(self, u_t: torch.Tensor, state: State) -> torch.Tensor:
        return NONLINEARITIES[self.nonlinearity](
            u_t + F.linear(state, self.weight_hh, self.bias_hh)  # type: ignore[arg-type]
        )

    def available_impls(self, return_states: bool = False) -> tuple[str, ...]:
        # The state is h itself, so the fused kernel's outputs are every step's state.
        return ("fused", "loop")

    def fused_weights(self) -> tuple[str, list[torch.Tensor]]:
        return f"rnn_{self.nonlinearity}", affine_weights(self)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}, "
            f"nonlinearity={self.nonlinearity!r}"
            + ("" if self.bias_ih is None or self.bias_hh is not None else ", recurrent_bias=False")
        )
