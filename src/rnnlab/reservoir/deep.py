"""Deep echo state networks (Gallicchio, Micheli & Pedrelli 2017, "Deep reservoir computing: a
critical experimental analysis", Neurocomputing 268; Gallicchio & Micheli 2017, "Echo state
property of deep reservoir computing networks", Cognitive Computation 9).

L leaky reservoir layers, layer l with N_l units, leak a_l, gains/shifts g_l, s_l (1 and 0 unless
intrinsic plasticity changed them), recurrent W_l scaled to its own spectral radius::

    x_l(t) = (1 - a_l) x_l(t-1) + a_l tanh(g_l (W_in,l v_l(t) + bias_l + W_l x_l(t-1)) + s_l)

The variants differ only in the layer input ``v_l(t)`` (note: the *current* states of the layer
below, so the whole stack advances one time step at a time):

==============  =============================  ==============================================
variant          v_1(t)                        v_l(t), l > 1
==============  =============================  ==============================================
``deepESN``      u(t)                           x_{l-1}(t)
``deepESN-IA``   u(t)                           [u(t); x_{l-1}(t)]   (input to all layers)
``groupedESN``   u(t)                           u(t)                 (independent reservoirs)
==============  =============================  ==============================================

Scalings: the columns of W_in,l that read u(t) are uniform on ``[-input_scaling_l,
input_scaling_l]``, those that read x_{l-1}(t) on ``[-inter_scaling_l, inter_scaling_l]`` (the
paper's inter-layer scaling). The readout is fitted on all layers: on the concatenation
``[x_1(t); ...; x_L(t)]`` (:meth:`DeepEchoStateNetwork.states`).

Every layer is an :class:`~rnnlab.reservoir.esn.EchoStateNetwork` (``layers[l]``; a
:class:`~rnnlab.reservoir.plasticity.LogisticEchoStateNetwork` with ``activation="logistic"``),
so its fixed weights are buffers (``layers.<l>.W`` etc. in the ``state_dict``) and its time loop
and sparse kernel are the shallow network's. Since layer l at time t needs only layer l-1 at time
t and its own past, a whole sequence is run layer by layer (each layer's input projection one
matmul over all steps), which gives the same states as advancing the stack step by step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rnnlab._validation import check_positive_int, check_tensor
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.plasticity import LogisticEchoStateNetwork
from rnnlab.reservoir.topology import _generator

VARIANTS = ("deepESN", "deepESN-IA", "groupedESN")
ACTIVATIONS = ("tanh", "logistic")


def _per_layer(name: str, value: Any, n_layers: int) -> list[Any]:
    """One value for all layers, or a sequence with one entry per layer."""
    if isinstance(value, str) or value is None or not isinstance(value, (Sequence, torch.Tensor)):
        return [value] * n_layers
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return [float(value)] * n_layers
    values = list(value)
    if len(values) != n_layers:
        raise ValueError(f"{name} must be one value or one per layer ({n_layers}), "
                         f"got {len(values)} values")
    return values


class DeepEchoStateNetwork(nn.Module):
    """A stack of leaky reservoirs: ``deep(u) -> (states of all layers, final state)``.

    Args:
        input_size: D, features of u(t).
        units: N_l: one int (with ``layers``) or one per layer.
        layers: L, the number of layers (needed when ``units`` is one int).
        variant: ``"deepESN"``, ``"deepESN-IA"`` or ``"groupedESN"`` (module docstring).
        spectral_radius, leak, input_scaling, inter_scaling, bias_scaling, density, topology,
            distribution, r, backward_weight: as for
            :class:`~rnnlab.reservoir.esn.EchoStateNetwork`, each one value for all layers or a
            sequence with one entry per layer (a layer's ``leak`` entry may itself be one value
            per unit). ``input_scaling`` scales the weights from u(t) (layer 1, and every layer
            of ``deepESN-IA`` and ``groupedESN``), ``inter_scaling`` those from x_{l-1}(t)
            (layers l > 1 of ``deepESN`` and ``deepESN-IA``).
        activation: ``"tanh"`` or ``"logistic"`` units.
        sparse: the shallow network's dense/CSR choice, for every layer.
        seed, generator: one CPU generator draws layer 1's weights, then layer 2's, ... (each
            in the shallow network's order), so one seed gives the same network in every dtype.
        device, dtype: as for any ``torch.nn`` module.

    Tensors are batch first: inputs ``(batch, time, D)``, states ``(batch, time, sum N_l)`` with
    the layers side by side in order, a state ``(batch, sum N_l)`` (:meth:`split_state` splits
    it per layer).
    """

    def __init__(
        self,
        input_size: int,
        units: int | Sequence[int],
        layers: int | None = None,
        *,
        variant: str = "deepESN",
        spectral_radius: float | Sequence[float] = 0.9,
        leak: Any = 1.0,
        input_scaling: float | Sequence[float] = 1.0,
        inter_scaling: float | Sequence[float] = 1.0,
        bias_scaling: float | Sequence[float] = 0.0,
        density: float | Sequence[float] = 0.1,
        topology: str | Sequence[str] = "random",
        distribution: str | Sequence[str] = "uniform",
        r: float | Sequence[float] = 0.5,
        backward_weight: float | Sequence[float] = 0.05,
        activation: str = "tanh",
        sparse: bool | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        d = check_positive_int("input_size", input_size)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if isinstance(units, int) and not isinstance(units, bool):
            if layers is None:
                raise ValueError("give layers (the number of layers) when units is one int, or "
                                 "units as one int per layer")
            n_layers = check_positive_int("layers", layers)
            sizes = [check_positive_int("units", units)] * n_layers
        elif isinstance(units, Sequence) and not isinstance(units, str):
            sizes = [check_positive_int(f"units[{i}]", u) for i, u in enumerate(units)]
            if not sizes:
                raise ValueError("units must name at least one layer")
            if layers is not None and check_positive_int("layers", layers) != len(sizes):
                raise ValueError(f"layers={layers} but units has {len(sizes)} entries")
            n_layers = len(sizes)
        else:
            raise TypeError(f"units must be an int or a sequence of ints, got {units!r}")
        self.input_size, self.variant, self.activation = d, variant, activation
        self.sizes = sizes
        per = {name: _per_layer(name, value, n_layers) for name, value in (
            ("spectral_radius", spectral_radius), ("leak", leak),
            ("input_scaling", input_scaling), ("inter_scaling", inter_scaling),
            ("bias_scaling", bias_scaling), ("density", density), ("topology", topology),
            ("distribution", distribution), ("r", r), ("backward_weight", backward_weight))}
        gen = _generator(generator, seed)
        cls = LogisticEchoStateNetwork if activation == "logistic" else EchoStateNetwork
        built = []
        for i, n in enumerate(sizes):
            in_s, inter_s = per["input_scaling"][i], per["inter_scaling"][i]
            if i == 0 or variant == "groupedESN":
                width, scaling = d, in_s
            elif variant == "deepESN":
                width, scaling = sizes[i - 1], inter_s
            else:  # deepESN-IA: [u(t); x_{l-1}(t)]
                width = d + sizes[i - 1]
                scaling = torch.cat([torch.as_tensor(in_s, dtype=torch.float64).expand(d),
                                     torch.as_tensor(inter_s, dtype=torch.float64)
                                     .expand(sizes[i - 1])])
            try:
                built.append(cls(
                    n, width, topology=per["topology"][i],
                    spectral_radius=per["spectral_radius"][i], density=per["density"][i],
                    distribution=per["distribution"][i], r=per["r"][i],
                    backward_weight=per["backward_weight"][i], leak=per["leak"][i],
                    input_scaling=scaling, bias_scaling=per["bias_scaling"][i], sparse=sparse,
                    generator=gen, device=device, dtype=dtype))
            except (ValueError, TypeError, RuntimeError) as err:
                raise type(err)(f"layer {i}: {err}") from err
        self.layers = nn.ModuleList(built)

    # --------------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    @property
    def total_units(self) -> int:
        """sum N_l: the width of :meth:`states` (the readout's features)."""
        return sum(self.sizes)

    def _ref(self) -> torch.Tensor:
        return self.layers[0].W

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """The zero state of all layers, ``(batch_size, sum N_l)``."""
        check_positive_int("batch_size", batch_size)
        return self._ref().new_zeros(batch_size, self.total_units)

    def split_state(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer views ``(..., N_l)`` of a state or states ``(..., sum N_l)``."""
        if not isinstance(state, torch.Tensor):
            raise TypeError(f"state must be a torch.Tensor, got {type(state).__name__}")
        if state.dim() < 1 or state.shape[-1] != self.total_units:
            raise ValueError(f"state must have sum N_l = {self.total_units} features in its last "
                             f"dimension, got shape {tuple(state.shape)}")
        return list(torch.split(state, self.sizes, dim=-1))

    def _check_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        ref = self._ref()
        return check_tensor("inputs", inputs, ndim=3, last_dim=self.input_size, dtype=ref.dtype,
                            device=ref.device, layout="(batch, time, features)")

    def _check_state0(self, state0: torch.Tensor | None, batch: int) -> list[Any]:
        if state0 is None:
            return [None] * self.num_layers
        ref = self._ref()
        check_tensor("state0", state0, ndim=2, last_dim=self.total_units, dtype=ref.dtype,
                     device=ref.device, layout="(batch, sum of the layers' units)")
        if state0.shape[0] != batch:
            raise ValueError(f"state0 has batch size {state0.shape[0]}, the input has {batch}")
        return self.split_state(state0)

    def layer_input(self, index: int, inputs: torch.Tensor,
                    below: torch.Tensor | None) -> torch.Tensor:
        """v_l for layer ``index`` (0-based) from the inputs u ``(batch, time, D)`` (or
        ``(batch, D)`` for one step) and the states of the layer below (ignored for layer 0
        and for ``groupedESN``)."""
        if index == 0 or self.variant == "groupedESN":
            return inputs
        if below is None:
            raise ValueError(f"layer {index} of a {self.variant} needs the states of layer "
                             f"{index - 1}")
        if self.variant == "deepESN":
            return below
        return torch.cat([inputs, below], dim=-1)

    def layer_states(self, inputs: torch.Tensor, state0: torch.Tensor | None = None
                     ) -> list[torch.Tensor]:
        """Every layer's states x_l(0..T-1), a list of ``(batch, time, N_l)``, from x_l(-1) =
        the matching part of ``state0`` (default 0)."""
        self._check_inputs(inputs)
        starts = self._check_state0(state0, inputs.shape[0])
        out: list[torch.Tensor] = []
        below = None
        for i, esn in enumerate(self.layers):
            below = esn.states(self.layer_input(i, inputs, below), starts[i])
            out.append(below)
        return out

    def states(self, inputs: torch.Tensor, state0: torch.Tensor | None = None) -> torch.Tensor:
        """The states of all layers side by side, ``(batch, time, sum N_l)``: the features of a
        readout on all layers."""
        return torch.cat(self.layer_states(inputs, state0), dim=-1)

    def forward(self, inputs: torch.Tensor, state0: torch.Tensor | None = None,
                washout: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Run over ``inputs`` ``(batch, time, D)``: ``(states (batch, time - washout, sum N_l),
        final state (batch, sum N_l))``. Chunk a long sequence by passing the final state as the
        next ``state0``."""
        if isinstance(washout, bool) or not isinstance(washout, int) or washout < 0:
            raise ValueError(f"washout must be an int >= 0, got {washout!r}")
        self._check_inputs(inputs)
        if washout >= inputs.shape[1]:
            raise ValueError(f"washout ({washout}) must be smaller than the number of time "
                             f"steps ({inputs.shape[1]})")
        xs = self.states(inputs, state0)
        return xs[:, washout:], xs[:, -1]

    def step(self, u_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One update of the whole stack: ``u_t`` ``(batch, D)``, ``state`` ``(batch, sum N_l)``
        (x_l(t-1) of every layer); returns the new ``(batch, sum N_l)``."""
        ref = self._ref()
        check_tensor("u_t", u_t, ndim=2, last_dim=self.input_size, dtype=ref.dtype,
                     device=ref.device, layout="(batch, features)")
        parts = self._check_state0(state, u_t.shape[0])
        new: list[torch.Tensor] = []
        below = None
        for i, esn in enumerate(self.layers):
            below = esn.step(self.layer_input(i, u_t, below), parts[i])
            new.append(below)
        return torch.cat(new, dim=-1)

    def extra_repr(self) -> str:
        ref = self._ref()
        return (f"input_size={self.input_size}, units={self.sizes}, variant={self.variant!r}, "
                f"activation={self.activation!r}, dtype={ref.dtype}, device={ref.device}")
