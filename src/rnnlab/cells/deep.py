"""Deep recurrent cells of Pascanu, Gulcehre, Cho & Bengio (2014), "How to construct deep
recurrent neural networks" (ICLR 2014).

* :class:`StackedCell` (sRNN, Section 3.3; Schmidhuber 1992, El Hihi & Bengio 1996): layer l reads
  layer l-1's state of the same step, ``h_l(t) = f_l(h_{l-1}(t), h_l(t-1))`` with
  ``h_0(t) = x(t)``; any cells can be stacked, the state is the tuple of the layers' states.
* :class:`DeepTransitionCell` (DT-RNN, Section 3.2.2, eq. 6): the transition from h(t-1) to h(t)
  is an MLP with L layers::

      z_1(t) = phi(W_1 h(t-1) + U x(t) + b_1)
      z_l(t) = phi(W_l z_{l-1}(t) + b_l),                    l = 2 .. L-1
      h(t)   = tanh(W_L z_{L-1}(t) + b_L [+ W_s h(t-1)])

  ``shortcut=True`` adds the bracket, the shortcut from h(t-1) past the intermediate layers
  (DT(S)-RNN, their Fig. 2 (b*)), which shortens the gradient's path through time.

The deep output (DOT-RNN, Section 3.2.3: o(t) = f(V_L phi(... phi(V_1 h(t))))) is a readout, not a
cell: ``rnnlab.models.recurrent.RecurrentNetwork(..., readout_layers=L)``; Pascanu et al.'s
DOT(S)-RNN is a :class:`DeepTransitionCell` with ``shortcut=True`` under such a readout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab._validation import check_choice, check_positive_int
from rnnlab.cells.base import (
    RecurrentCell,
    State,
    TorchLayoutCell,
    add_affine_parameters,
    init_sizes,
    torch_shaped,
    uniform_init_,
)

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


class DeepTransitionCell(TorchLayoutCell):
    """DT-RNN (and DT(S)-RNN with ``shortcut=True``) step; state ``h`` ``(batch, H)``.

    Args:
        input_size: D.
        hidden_size: H, the state's width.
        bias: whether the layers have biases. The options below are keyword only (the order
            before, with them positional, still works for one release with a
            ``DeprecationWarning``).
        layers: L >= 1, the transition's layers counting the last one that produces h(t)
            (L = 1 is the plain tanh RNN; Pascanu et al. use L = 2).
        transition_size: width of the intermediate layers z_l (default H).
        shortcut: DT(S)-RNN's shortcut ``W_s h(t-1)`` into the last layer (needs L >= 2).
        nonlinearity: phi of the intermediate layers: ``"tanh"``, ``"relu"`` or ``"sigmoid"``
            (the state itself is always tanh).
        generator, device, dtype: initialization seed, as for any ``torch.nn`` module.

    Parameters: ``weight_ih`` (U), ``weight_hh`` (W_1), ``bias_ih`` (b_1) of the first layer,
    ``transition`` (``nn.Linear`` layers 2 .. L), ``weight_shortcut`` (W_s).
    """

    @torch_shaped("layers", "transition_size", "shortcut", "nonlinearity", "bias")
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        layers: int = 2,
        transition_size: int | None = None,
        shortcut: bool = False,
        nonlinearity: str = "tanh",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        bias = init_sizes(self, input_size, hidden_size, bias)
        self.num_layers = check_positive_int("layers", layers)
        self.transition_size = check_positive_int(
            "transition_size", hidden_size if transition_size is None else transition_size
        )
        if shortcut and layers < 2:
            raise ValueError("shortcut needs layers >= 2 (with one layer there is nothing to skip)")
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, ACTIVATIONS)
        self.shortcut = bool(shortcut)
        factory = {"device": device, "dtype": dtype}
        first = hidden_size if layers == 1 else self.transition_size
        # the first layer's U, W_1, b_1 (no separate recurrent bias: one b_1)
        add_affine_parameters(self, first, bias, recurrent_bias=False, **factory)
        widths = [self.transition_size] * (layers - 1) + [hidden_size]
        self.transition = nn.ModuleList(
            nn.Linear(widths[k], widths[k + 1], bias=bias, **factory) for k in range(layers - 1)
        )
        if self.shortcut:
            self.weight_shortcut = nn.Parameter(torch.empty(hidden_size, hidden_size, **factory))
        else:
            self.register_parameter("weight_shortcut", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)); the first layer uses fan-in H as nn.RNN."""
        with torch.no_grad():
            bound = 1.0 / math.sqrt(self.hidden_size)
            for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.weight_shortcut):
                if p is not None:
                    uniform_init_(p, bound, generator)
            for lin in self.transition:
                b = 1.0 / math.sqrt(lin.in_features)
                uniform_init_(lin.weight, b, generator)
                if lin.bias is not None:
                    uniform_init_(lin.bias, b, generator)

    def step(self, u_t: torch.Tensor, state: State) -> torch.Tensor:
        h: torch.Tensor = state  # type: ignore[assignment]
        a = u_t + F.linear(h, self.weight_hh)
        if self.num_layers == 1:
            return torch.tanh(a)
        phi = ACTIVATIONS[self.nonlinearity]
        z = phi(a)
        for lin in self.transition[:-1]:
            z = phi(lin(z))
        a = self.transition[-1](z)
        if self.shortcut:
            a = a + F.linear(h, self.weight_shortcut)
        return torch.tanh(a)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, layers={self.num_layers}, "
            f"transition_size={self.transition_size}, shortcut={self.shortcut}, "
            f"nonlinearity={self.nonlinearity!r}"
        )


class StackedCell(RecurrentCell):
    """Stacked cells (sRNN): layer l's input at step t is layer l-1's ``hidden`` at step t.

    The state is the tuple of the layers' states; ``hidden`` is the top layer's. Layers run a whole
    sequence layer by layer (same result as step by step), so each layer keeps its fast path: a
    stack of ``LSTMCell(variant="NP")`` runs as a multi-layer ``torch.nn.LSTM``.
    """

    def __init__(self, cells: Sequence[RecurrentCell]) -> None:
        super().__init__()
        cells = list(cells)
        if not cells:
            raise ValueError("StackedCell needs at least one cell")
        for k, cell in enumerate(cells):
            if not isinstance(cell, RecurrentCell):
                raise TypeError(f"cells[{k}] must be a RecurrentCell, got {type(cell).__name__}")
            if k and cell.input_size != cells[k - 1].hidden_size:
                raise ValueError(
                    f"cells[{k}] has input_size {cell.input_size} but cells[{k - 1}] has "
                    f"hidden_size {cells[k - 1].hidden_size}; a layer reads the one below"
                )
        self.layers = nn.ModuleList(cells)
        self.input_size = cells[0].input_size
        self.hidden_size = cells[-1].hidden_size
        self.state_names = tuple(f"layer{k}" for k in range(len(cells)))

    def __len__(self) -> int:
        return len(self.layers)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Each layer's own ``reset_parameters``, bottom to top, from ``generator``."""
        for layer in self.layers:
            layer.reset_parameters(generator)  # type: ignore[operator]

    def state_sizes(self) -> object:
        return tuple(layer.state_sizes() for layer in self.layers)

    def hidden(self, state: State) -> torch.Tensor:
        return self.layers[-1].hidden(state[-1])  # type: ignore[index]

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[0].project_input(x)

    def step(self, u_t: torch.Tensor, state: State) -> State:
        new = [self.layers[0].step(u_t, state[0])]  # type: ignore[index]
        for k in range(1, len(self.layers)):
            below = self.layers[k - 1].hidden(new[-1])
            layer = self.layers[k]
            new.append(layer.step(layer.project_input(below), state[k]))  # type: ignore[index]
        return tuple(new)

    def available_impls(self, return_states: bool = False) -> tuple[str, ...]:
        common = None
        for layer in self.layers:
            impls = set(layer.available_impls(return_states))
            common = impls if common is None else common & impls
        # with "auto" every layer picks its own fastest; a named impl must suit every layer
        return (*sorted(common - {"loop"}), "loop")

    def _run(self, x, state0, lengths, return_states, impl):
        if impl not in ("auto", "loop"):
            for k, layer in enumerate(self.layers):
                if impl not in layer.available_impls(return_states):
                    raise ValueError(
                        f"impl={impl!r} is not available for layer {k} ({layer!r}); "
                        f"available there: {', '.join(layer.available_impls(return_states))}"
                    )
        inp = x
        finals, histories = [], []
        for layer, s0 in zip(self.layers, state0, strict=True):
            inp, final, states = layer._run(inp, s0, lengths, return_states, impl)
            finals.append(final)
            histories.append(states)
        return inp, tuple(finals), (tuple(histories) if return_states else None)

    def extra_repr(self) -> str:
        return f"layers={len(self.layers)}"


__all__ = ["ACTIVATIONS", "DeepTransitionCell", "StackedCell"]
