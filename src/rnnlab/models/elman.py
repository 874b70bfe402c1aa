"""The Elman RNN of the course, with its five parameters U, W, b, V, c.

Equations (Elman 1990; the notation of the course and of Williams & Zipser 1989)::

    h(0)   = 0
    a_h(t) = U x(t) + W h(t-1) + b,      h(t) = tanh(a_h(t))
    a_o(t) = V h(t) + c,                 o(t) = f(a_o(t))
    L      = sum_t e(t) = sum_t ||y(t) - o(t)||^2

with ``f`` the readout activation: ``tanh`` as in the course, ``identity`` or ``sigmoid``.

There is one Elman recurrence in rnnlab: :class:`rnnlab.cells.ElmanCell`. ``ElmanRNN`` is the
:class:`rnnlab.models.RecurrentNetwork` over that cell (with one bias, ``recurrent_bias=False``)
and a one-layer readout; U, W, b, V, c are the course's names for the very same parameter
objects as ``cell.weight_ih``, ``cell.weight_hh``, ``cell.bias_ih``, ``readout.weight``,
``readout.bias``, registered first so that ``named_parameters()`` and ``state_dict()`` list
them, once each, by the course's names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from rnnlab._validation import check_choice, check_positive_int, check_tensor
from rnnlab.cells.base import run_cell, uniform_init_
from rnnlab.cells.elman import ElmanCell
from rnnlab.models.recurrent import READOUTS, RecurrentNetwork

# The course's name of each parameter -> where it lives in the network over the cell.
COURSE_NAMES: dict[str, str] = {
    "U": "cell.weight_ih",
    "W": "cell.weight_hh",
    "b": "cell.bias_ih",
    "V": "readout.weight",
    "c": "readout.bias",
}


class ElmanRNN(RecurrentNetwork):
    """Elman (tanh) recurrent network with a readout: ``model(x) -> (outputs, h_T)``.

    Parameters (named as in the course): ``U`` (N x D) input weights, ``W`` (N x N) recurrent
    weights, ``b`` (N) hidden bias, ``V`` (O x N) readout weights, ``c`` (O) readout bias. They
    are the parameters of ``model.cell`` (an :class:`~rnnlab.cells.ElmanCell` with one bias) and
    ``model.readout`` (an ``nn.Linear``) under the course's names.

    Args:
        input_size: D, features of x(t).
        hidden_size: N, units of h(t).
        output_size: O, features of o(t).
        readout: readout activation f: ``"tanh"`` (the course), ``"identity"`` or ``"sigmoid"``
            (kept as ``readout_name``; ``model.readout`` is the ``nn.Linear`` V, c).
        impl: how the cell runs over a sequence (see :class:`~rnnlab.models.RecurrentLayer`).
        check_finite: NaN/inf scan of the inputs (see :class:`~rnnlab.models.RecurrentLayer`).
        device, dtype: as for any ``torch.nn`` module.

    Tensors are batch first: ``x`` is ``(batch, time, D)``, outputs ``(batch, time, O)``, the
    state ``(batch, N)``. ``lengths``, a ``PackedSequence`` and ``return_states`` work as for
    any :class:`~rnnlab.models.RecurrentNetwork`. ``state_dict()`` has the keys U, W, b, V, c
    (as before the network was built over the cell), and loads them.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        readout: str = "tanh",
        *,
        impl: str = "auto",
        check_finite: bool | str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("output_size", output_size)
        check_choice("readout", readout, READOUTS)
        # The cell and the readout (nn.Linear draws in its own __init__) are built without
        # touching torch's global random stream; reset_parameters below then draws U, W, b, V, c
        # in that order from it: the same weights from the same seed, and the same stream
        # afterwards, as before this class was built over the cell.
        with torch.random.fork_rng(devices=_cuda_indices(device)):
            cell = ElmanCell(input_size, hidden_size, recurrent_bias=False, device=device,
                             dtype=dtype)
            super().__init__(cell, output_size, readout, impl=impl, check_finite=check_finite,
                             device=device, dtype=dtype)
        self._tie()
        self.register_state_dict_post_hook(_drop_duplicate_keys)
        self.register_load_state_dict_pre_hook(_add_duplicate_keys)
        self.register_load_state_dict_post_hook(lambda module, _: module._tie())
        self.reset_parameters()

    def _tie(self) -> None:
        """(Re-)register the cell's and the readout's parameters under the course's names, on
        the network itself: named_parameters() then yields them first, once each. Called again
        after anything that may replace parameter objects (``load_state_dict(assign=True)``,
        ``.to()`` with torch's overwrite-on-conversion setting)."""
        for short, path in COURSE_NAMES.items():
            owner, name = path.split(".")
            self.register_parameter(short, getattr(getattr(self, owner), name))

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        result = super()._apply(fn, recurse)
        self._tie()
        return result

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every parameter, as ``torch.nn.RNN``.

        U, W and b use fan-in N (like ``nn.RNN``); V and c use N, the readout's fan-in. Drawn in
        the order U, W, b, V, c.
        """
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in (self.U, self.W, self.b, self.V, self.c):
                uniform_init_(p, bound, generator)

    # ----------------------------------------------------------------------------------------
    @property
    def output_activation(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return READOUTS[self.readout_name][0]

    @property
    def output_derivative(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """f'(a_o) as a function of o = f(a_o)."""
        return READOUTS[self.readout_name][1]

    def check_input(
        self, x: torch.Tensor, name: str = "x", *, check_finite: bool | str | None = None
    ) -> torch.Tensor:
        return check_tensor(
            name, x, ndim=3, last_dim=self.input_size, dtype=self.W.dtype, device=self.W.device,
            finite=self._finite(check_finite), layout="(batch, time, features)",
        )

    def check_state(
        self, h: torch.Tensor, batch_size: int, name: str = "h0", *,
        check_finite: bool | str | None = None,
    ) -> torch.Tensor:
        check_tensor(name, h, ndim=2, last_dim=self.hidden_size, dtype=self.W.dtype,
                     device=self.W.device, finite=self._finite(check_finite),
                     layout="(batch, hidden)")
        if h.shape[0] != batch_size:
            raise ValueError(f"{name} has batch size {h.shape[0]}, the input has {batch_size}")
        return h

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """The readout ``o = f(V h + c)`` for states of any leading shape."""
        return self.output_activation(torch.nn.functional.linear(h, self.V, self.c))

    def hidden_states(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """All states h(1..T), shape ``(batch, time, N)``."""
        self._check_h0(x, h0)
        return run_cell(self.cell, x, h0, impl=self.impl, check_finite=self.check_finite)[0]

    def _check_h0(self, x: object, h0: torch.Tensor | None) -> None:
        # the course model's own messages for h0 ("h0 has batch size ...", "h0 contains
        # non-finite values"); run_cell checks x
        if h0 is not None and isinstance(x, torch.Tensor) and x.dim() == 3:
            self.check_state(h0, x.shape[0])

    def forward(
        self,
        x: torch.Tensor | PackedSequence,
        h0: torch.Tensor | None = None,
        lengths: torch.Tensor | Sequence[int] | None = None,
        return_states: bool = False,
    ):
        """Run over ``x`` ``(batch, time, D)``; return ``(outputs (batch, time, O), h_T)``
        (and every step's state with ``return_states``)."""
        self._check_h0(x, h0)
        return super().forward(x, h0, lengths, return_states)

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"output_size={self.output_size}, readout={self.readout_name!r}, "
            f"parameters=U{tuple(self.U.shape)} W{tuple(self.W.shape)} b{tuple(self.b.shape)} "
            f"V{tuple(self.V.shape)} c{tuple(self.c.shape)}, "
            f"dtype={self.W.dtype}, device={self.W.device}"
        )


def _cuda_indices(device: torch.device | str | None) -> list[int]:
    """The CUDA device whose generator building on ``device`` may draw from (for fork_rng)."""
    if device is None or torch.device(device).type != "cuda":
        return []
    index = torch.device(device).index
    return [torch.cuda.current_device() if index is None else index]


def _drop_duplicate_keys(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """state_dict post-hook: the cell's and readout's keys repeat U, W, b, V, c; keep those."""
    for path in COURSE_NAMES.values():
        state_dict.pop(prefix + path, None)


def _add_duplicate_keys(
    module: nn.Module, state_dict: Mapping[str, Any], prefix: str, *args: Any
) -> None:
    """load pre-hook: fill the cell's and readout's keys from U, W, b, V, c (and the other way
    round), so that checkpoints of either spelling load."""
    for short, path in COURSE_NAMES.items():
        if prefix + short in state_dict:
            state_dict.setdefault(prefix + path, state_dict[prefix + short])  # type: ignore
        elif prefix + path in state_dict:
            state_dict[prefix + short] = state_dict[prefix + path]  # type: ignore[index]
