"""Layers and networks built from any cell of ``rnnlab.cells``.

* :class:`RecurrentLayer`: runs a cell (or a stack of cells) over ``(batch, time, features)``;
  returns every step's hidden output, the final state and, when asked, every step's full state
  (e.g. the LSTM's cell state c(t) at every step).
* :class:`RecurrentNetwork`: a cell plus a readout ``o(t) = f(V h(t) + c)``, optionally deep
  (Pascanu et al. 2014's deep output, DOT-RNN:
  ``o(t) = f(V_L phi(V_{L-1} ... phi(V_1 h(t) + c_1) ... ) + c_L)``).

Variable-length sequences: pass ``lengths`` (one int per sequence) with a padded batch, or a
``PackedSequence`` (the outputs are then packed alike). Outputs (and recorded states) at padded
steps are zero, the final state of each sequence is its state after its own last step, and padded
input values never reach any output or gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from rnnlab._validation import check_choice, check_finite_option, check_positive_int
from rnnlab.cells.base import IMPLS, RecurrentCell, State, check_lengths, run_cell, uniform_init_
from rnnlab.cells.deep import ACTIVATIONS, StackedCell


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


def _as_cell(cell_or_cells: RecurrentCell | Sequence[RecurrentCell]) -> RecurrentCell:
    if isinstance(cell_or_cells, RecurrentCell):
        return cell_or_cells
    if isinstance(cell_or_cells, (list, tuple, nn.ModuleList)):
        cells = list(cell_or_cells)
        return cells[0] if len(cells) == 1 else StackedCell(cells)
    raise TypeError(
        "expected a RecurrentCell or a list of them (a stack), got "
        f"{type(cell_or_cells).__name__}"
    )


def _check_impl(impl: str) -> str:
    return check_choice("impl", impl, IMPLS)  # type: ignore[return-value]


class _OverCell(nn.Module):
    """What a module that runs ``self.cell`` shows of it: sizes, initial state, dtype, device and
    the cell's input and state checks."""

    cell: RecurrentCell

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    def initial_state(self, batch_size: int) -> State:
        return self.cell.initial_state(batch_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.cell.dtype

    @property
    def device(self) -> torch.device:
        return self.cell.device

    #: NaN/inf scan of the inputs: None follows rnnlab.set_check_finite, else True/False/"auto"
    check_finite: bool | str | None = None

    def check_input(
        self, x: torch.Tensor, name: str = "x", *, check_finite: bool | str | None = None
    ) -> torch.Tensor:
        """Validate a ``(batch, time, input_size)`` sequence against the cell (NaN/inf as
        ``check_finite``, else the module's ``check_finite``, else the global switch, say)."""
        return self.cell.check_input(x, name, check_finite=self._finite(check_finite))

    def check_state(
        self, state: object, batch_size: int, name: str = "state0", *,
        check_finite: bool | str | None = None,
    ) -> State:
        """Check a full state of the cell for ``batch_size`` sequences."""
        return self.cell.check_state(state, batch_size, name,
                                     check_finite=self._finite(check_finite))

    def _finite(self, check_finite: bool | str | None) -> bool | str | None:
        return self.check_finite if check_finite is None else check_finite

    def read(self, hs: torch.Tensor | PackedSequence,
             lengths: torch.Tensor | None) -> torch.Tensor | PackedSequence:
        """The module's outputs from every step's hidden part (here: the hidden part itself)."""
        return hs

    def forward(
        self,
        x: torch.Tensor | PackedSequence,
        state0: State | None = None,
        lengths: torch.Tensor | Sequence[int] | None = None,
        return_states: bool = False,
    ):
        """``x`` ``(batch, time, input_size)`` or packed; returns ``(outputs, final_state)``, and
        with ``return_states`` also every step's state (each part ``(batch, time, width)``,
        nested like the state). The outputs are :meth:`read` of the cell's hidden parts: the
        hidden parts themselves ``(batch, time, hidden_size)`` for a layer, the readout's
        ``(batch, time, O)`` for a network; packed if ``x`` is."""
        if lengths is not None and isinstance(x, torch.Tensor) and x.dim() == 3:
            lengths = check_lengths(lengths, x.shape[0], x.shape[1], x.device)
        hs, final, states = run_cell(self.cell, x, state0, lengths, return_states, self.impl,
                                     check_finite=self.check_finite)
        out = self.read(hs, lengths)
        return (out, final, states) if return_states else (out, final)


class RecurrentLayer(_OverCell):
    """Run a cell over a sequence: ``layer(x) -> (outputs, final_state[, states])``.

    Args:
        cell_or_cells: a cell, or a list of cells to stack (a :class:`StackedCell`).
        impl: ``"auto"`` (the fastest exact implementation the cell has; the plain loop
            under ``torch.func`` transforms, forward-mode AD and
            :func:`rnnlab.cells.twice_differentiable`), ``"fused"``, ``"handwritten"`` or
            ``"loop"`` (see :func:`rnnlab.cells.run_cell`).
        check_finite: scan the input and initial state for NaN/inf at every call: ``None``
            (default: the global switch, :func:`rnnlab.set_check_finite`, which scans here
            unless turned off), ``True``, ``False`` or ``"auto"``. Never while tracing,
            exporting or compiling. Shapes, dtypes and devices are always checked.
    """

    def __init__(
        self, cell_or_cells: RecurrentCell | Sequence[RecurrentCell], impl: str = "auto", *,
        check_finite: bool | str | None = None,
    ) -> None:
        super().__init__()
        self.cell = _as_cell(cell_or_cells)
        self.impl = _check_impl(impl)
        self.check_finite = check_finite_option(check_finite)

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}" + _finite_repr(self.check_finite)


class RecurrentNetwork(_OverCell):
    """A cell (or stack) with a readout: ``o(t) = f(readout(g(cell.hidden(state_t))))``.

    Args:
        cell_or_cells: a cell, or a list of cells to stack.
        output_size: O.
        readout: f, ``"identity"``, ``"tanh"`` or ``"sigmoid"``.
        readout_layers: linear layers of the readout; ``1`` is the usual ``V h + c``, ``L > 1``
            puts ``L - 1`` hidden layers ``g`` before it (deep output, DOT-RNN).
        readout_hidden_size: width of those hidden layers (default: the cell's hidden size).
        readout_activation: their activation phi (``"tanh"``, ``"relu"``, ``"sigmoid"``).
        impl: how the cell runs over a sequence (see :class:`RecurrentLayer`).
        check_finite: NaN/inf scan of the inputs (see :class:`RecurrentLayer`).
        generator: seeds the readout's initialization (uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))).
        device, dtype: of the readout (default: the cell's).

    Attributes: ``cell``, ``readout`` (the last ``nn.Linear``), ``output_hidden`` (the deep
    output's hidden ``nn.Linear`` layers, empty for a plain readout).
    """

    def __init__(
        self,
        cell_or_cells: RecurrentCell | Sequence[RecurrentCell],
        output_size: int,
        readout: str = "identity",
        *,
        readout_layers: int = 1,
        readout_hidden_size: int | None = None,
        readout_activation: str = "tanh",
        impl: str = "auto",
        check_finite: bool | str | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.cell = _as_cell(cell_or_cells)
        self.check_finite = check_finite_option(check_finite)
        self.output_size = check_positive_int("output_size", output_size)
        self.readout_name = check_choice("readout", readout, READOUTS)
        check_positive_int("readout_layers", readout_layers)
        self.readout_activation = check_choice("readout_activation", readout_activation,
                                               ACTIVATIONS)
        self.impl = _check_impl(impl)
        factory = {
            "device": self.cell.device if device is None else device,
            "dtype": self.cell.dtype if dtype is None else dtype,
        }
        width = self.cell.hidden_size
        inner = check_positive_int(
            "readout_hidden_size", width if readout_hidden_size is None else readout_hidden_size
        )
        self.output_hidden = nn.ModuleList()
        for _ in range(readout_layers - 1):
            self.output_hidden.append(nn.Linear(width, inner, **factory))
            width = inner
        self.readout = nn.Linear(width, output_size, **factory)
        self.reset_readout(generator)

    def reset_readout(self, generator: torch.Generator | None = None) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the readout's weights and biases."""
        with torch.no_grad():
            for lin in (*self.output_hidden, self.readout):
                bound = 1.0 / math.sqrt(lin.in_features)
                uniform_init_(lin.weight, bound, generator)
                uniform_init_(lin.bias, bound, generator)

    def output_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """The readout applied to hidden vectors of any leading shape."""
        phi = ACTIVATIONS[self.readout_activation]
        for lin in self.output_hidden:
            h = phi(lin(h))
        return READOUTS[self.readout_name][0](F.linear(h, self.readout.weight, self.readout.bias))

    def output(self, state: State) -> torch.Tensor:
        """``o = f(readout(g(cell.hidden(state))))`` for one step's state."""
        return self.output_from_hidden(self.cell.hidden(state))

    def read(self, hs: torch.Tensor | PackedSequence,
             lengths: torch.Tensor | None) -> torch.Tensor | PackedSequence:
        """The outputs ``(batch, time, O)`` from every step's hidden part: zero at padded steps;
        packed alike for a ``PackedSequence``."""
        if isinstance(hs, PackedSequence):
            # packed rows are exactly the real steps: the readout touches no padding
            return PackedSequence(self.output_from_hidden(hs.data), hs.batch_sizes,
                                  hs.sorted_indices, hs.unsorted_indices)
        out = self.output_from_hidden(hs)
        if lengths is None:
            return out
        keep = torch.arange(hs.shape[1], device=hs.device)[None, :] < lengths[:, None]
        return torch.where(keep.unsqueeze(-1), out, 0.0)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, readout={self.readout_name!r}, "
            f"readout_layers={len(self.output_hidden) + 1}, impl={self.impl!r}"
            + _finite_repr(self.check_finite)
        )


def _finite_repr(check_finite: bool | str | None) -> str:
    return "" if check_finite is None else f", check_finite={check_finite!r}"


__all__ = ["READOUTS", "RecurrentLayer", "RecurrentNetwork"]
