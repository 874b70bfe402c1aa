"""Deep echo state networks (Gallicchio, Micheli & Pedrelli 2017, "Deep reservoir computing: a
critical experimental analysis", Neurocomputing 268; Gallicchio & Micheli 2017, "Echo state
property of deep reservoir computing networks", Cognitive Computation 9), optionally with output
feedback (Jaeger 2001).

L leaky reservoir layers, layer l with N_l units, leak a_l, gains/shifts g_l, s_l (1 and 0 unless
intrinsic plasticity changed them), recurrent W_l scaled to its own spectral radius::

    x_l(t) = (1 - a_l) x_l(t-1) + a_l tanh(g_l (W_in,l v_l(t) + bias_l + W_l x_l(t-1)
                                                 + W_fb,l y(t-1)) + s_l)

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
``[x_1(t); ...; x_L(t)]`` (:meth:`DeepEchoStateNetwork.states`)::

    y(t) = W_out [x_1(t); ...; x_L(t)] + c

Output feedback. ``W_fb,l y(t-1)`` is the output fed back into layer l, as in the shallow
network of Jaeger (2001), "The 'echo state' approach to analysing and training recurrent neural
networks", GMD Report 148, whose W_fb is ``W^back``: in training the teacher signal is fed back
(teacher forcing, ``y(t-1) = d(t-1)``, the target one step late; ``y(-1)`` is ``feedback0``,
default 0), in generation the readout's own prediction (closed loop). It enters every layer
(``feedback_layers="all"``, W_fb,l uniform on ``[-feedback_scaling_l, feedback_scaling_l]``) or
only the first (``"first"``: W_fb,l = 0 for l > 1, so the upper layers see the output only
through the layers below). The deep ESN papers above have no output feedback; putting the same
``y(t-1)`` into every layer's net input is the direct extension of Jaeger's equation to each
reservoir of the stack. With feedback off (``output_size = 0`` or ``feedback_scaling = 0``)
the equation is the one of Gallicchio et al. and W_fb,l is absent.

Every layer is an :class:`~rnnlab.reservoir.esn.EchoStateNetwork` (``layers[l]``, with the deep
network's ``activation``), so its fixed weights are buffers (``layers.<l>.W``,
``layers.<l>.W_fb`` etc. in the ``state_dict``) and its time loop, sparse kernel and
teacher-forced input drive are the shallow network's. Since layer l at time t needs only layer
l-1 at time t, its own past and y(t-1) (the teacher, known in advance), a teacher-forced
sequence is run layer by layer (each layer's input projection one matmul over all steps), which
gives the same states as advancing the stack step by step. Free-running generation cannot:
y(t-1) is the readout of all layers at t-1, so :meth:`DeepEchoStateNetwork.generate` advances
the whole stack one step at a time.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnlab._random import make_generator
from rnnlab._validation import (
    check_int,
    check_number,
    check_positive_int,
)
from rnnlab.reservoir._generate import ReservoirModule
from rnnlab.reservoir._step import ACTIVATIONS
from rnnlab.reservoir.esn import EchoStateNetwork

VARIANTS = ("deepESN", "deepESN-IA", "groupedESN")
FEEDBACK_LAYERS = ("all", "first")


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


class DeepEchoStateNetwork(ReservoirModule):
    """A stack of leaky reservoirs: ``deep(u) -> (states of all layers, final state)``.

    Args:
        input_size: D, features of u(t).
        units: N_l: one int (with ``layers``) or one per layer.
        layers: L, the number of layers (needed when ``units`` is one int).
        output_size: O, features of the output y(t) that is fed back (0: none). Feedback is on
            when ``output_size > 0`` and some layer's ``feedback_scaling > 0``.
        variant: ``"deepESN"``, ``"deepESN-IA"`` or ``"groupedESN"`` (module docstring).
        spectral_radius, leak, input_scaling, inter_scaling, bias_scaling, density, topology,
            distribution, r, backward_weight: as for
            :class:`~rnnlab.reservoir.esn.EchoStateNetwork`, each one value for all layers or a
            sequence with one entry per layer (a layer's ``leak`` entry may itself be one value
            per unit). ``input_scaling`` scales the weights from u(t) (layer 1, and every layer
            of ``deepESN-IA`` and ``groupedESN``), ``inter_scaling`` those from x_{l-1}(t)
            (layers l > 1 of ``deepESN`` and ``deepESN-IA``).
        feedback_scaling: W_fb,l is uniform on ``[-feedback_scaling_l, feedback_scaling_l]``;
            one value for all layers or one per layer (0: no feedback into that layer).
        feedback_layers: ``"all"`` (y(t-1) enters every layer) or ``"first"`` (only layer 1;
            a per-layer ``feedback_scaling`` must then be 0 for the other layers).
        activation: ``"tanh"`` or ``"logistic"`` units.
        sparse: the shallow network's dense/CSR choice, for every layer.
        seed, generator: one CPU generator draws layer 1's W, W_in and bias, then layer 2's,
            ... (each in the shallow network's order), and after all of them, when
            ``output_size > 0``, an ``N_l x O`` block for every layer's W_fb in layer order
            (drawn for every layer, also those without feedback, so ``feedback_layers`` and
            one layer's scaling do not change the other layers' W_fb). So adding feedback
            leaves the other weights of a seed unchanged, and one seed gives the same network
            in every dtype.
        device, dtype: as for any ``torch.nn`` module.

    Tensors are batch first: inputs ``(batch, time, D)``, states ``(batch, time, sum N_l)`` with
    the layers side by side in order, a state ``(batch, sum N_l)`` (:meth:`split_state` splits
    it per layer), teacher/outputs ``(batch, time, O)``, one output ``(batch, O)``. The
    attributes ``output_size``, ``feedback_layers`` and ``feedback_scaling`` (the scaling each
    layer got, one float per layer, 0 where it has no ``W_fb``) record the feedback settings.
    """

    def __init__(
        self,
        input_size: int,
        units: int | Sequence[int],
        layers: int | None = None,
        output_size: int = 0,
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
        feedback_scaling: float | Sequence[float] = 0.0,
        feedback_layers: str = "all",
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
        output_size = check_int("output_size", output_size, low=0)
        if feedback_layers not in FEEDBACK_LAYERS:
            raise ValueError(f"feedback_layers must be one of {FEEDBACK_LAYERS}, "
                             f"got {feedback_layers!r}")
        if isinstance(units, numbers.Integral) and not isinstance(units, (bool, np.bool_)):
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
        self.output_size, self.feedback_layers = output_size, feedback_layers
        fb_scales = self._feedback_scales(feedback_scaling, n_layers)
        per = {name: _per_layer(name, value, n_layers) for name, value in (
            ("spectral_radius", spectral_radius), ("leak", leak),
            ("input_scaling", input_scaling), ("inter_scaling", inter_scaling),
            ("bias_scaling", bias_scaling), ("density", density), ("topology", topology),
            ("distribution", distribution), ("r", r), ("backward_weight", backward_weight))}
        gen = make_generator(seed, generator)
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
                built.append(EchoStateNetwork(
                    input_size=width, units=n, topology=per["topology"][i],
                    spectral_radius=per["spectral_radius"][i], density=per["density"][i],
                    distribution=per["distribution"][i], r=per["r"][i],
                    backward_weight=per["backward_weight"][i], leak=per["leak"][i],
                    input_scaling=scaling, bias_scaling=per["bias_scaling"][i], sparse=sparse,
                    activation=activation, generator=gen, device=device, dtype=dtype))
            except (ValueError, TypeError, RuntimeError) as err:
                raise type(err)(f"layer {i}: {err}") from err
        # W_fb is drawn after every other weight, not by each layer's constructor (which draws
        # it right after that layer's bias and so would shift the draws of all later layers).
        if output_size > 0:
            for esn, scale in zip(built, fb_scales, strict=True):
                w_fb = scale * (2.0 * torch.rand(esn.units, output_size, generator=gen,
                                                 dtype=torch.float64) - 1.0)
                if scale > 0:
                    # The layer's own buffer (registered as None by its constructor): its
                    # input_drive/step then feed y(t-1) back, and state_dict saves it.
                    esn.output_size = output_size
                    esn.W_fb = w_fb.to(device=esn.W.device, dtype=esn.W.dtype)
        self.feedback_scaling = fb_scales
        self.layers = nn.ModuleList(built)

    def _feedback_scales(self, feedback_scaling: Any, n_layers: int) -> list[float]:
        scales = []
        for i, value in enumerate(_per_layer("feedback_scaling", feedback_scaling, n_layers)):
            try:
                scales.append(check_number("feedback_scaling", value, low=0.0))
            except (ValueError, TypeError) as err:
                raise type(err)(f"layer {i}: {err}") from err
        if self.output_size == 0 and any(s > 0 for s in scales):
            raise ValueError("feedback_scaling > 0 needs output_size > 0 (the fed-back outputs)")
        if self.feedback_layers == "first":
            one_value = not isinstance(feedback_scaling, (Sequence, torch.Tensor)) or (
                isinstance(feedback_scaling, torch.Tensor) and feedback_scaling.dim() == 0)
            if not one_value and any(s > 0 for s in scales[1:]):
                raise ValueError("feedback_layers='first' feeds y(t-1) into layer 0 only: give "
                                 "one feedback_scaling, or 0 for the layers after the first")
            scales[1:] = [0.0] * (n_layers - 1)
        return scales

    # --------------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    @property
    def total_units(self) -> int:
        """sum N_l: the width of :meth:`states` (the readout's features)."""
        return sum(self.sizes)

    @property
    def has_feedback(self) -> bool:
        """Whether y(t-1) is fed back into some layer (that layer has a ``W_fb`` buffer)."""
        return any(esn.has_feedback for esn in self.layers)

    _state_layout = "(batch, sum of the layers' units)"

    def _ref(self) -> torch.Tensor:
        return self.layers[0].W

    def _state_size(self) -> int:
        return self.total_units

    def split_state(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer views ``(..., N_l)`` of a state or states ``(..., sum N_l)``."""
        if not isinstance(state, torch.Tensor):
            raise TypeError(f"state must be a torch.Tensor, got {type(state).__name__}")
        if state.dim() < 1 or state.shape[-1] != self.total_units:
            raise ValueError(f"state must have sum N_l = {self.total_units} features in its last "
                             f"dimension, got shape {tuple(state.shape)}")
        return list(torch.split(state, self.sizes, dim=-1))

    def _check_state0(self, state0: torch.Tensor | None, batch: int) -> list[Any]:
        if state0 is None:
            return [None] * self.num_layers
        return self.split_state(self._check_state(state0, batch, "state0"))

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

    def _run(self, inputs: torch.Tensor, state0: torch.Tensor | None,
             teacher: torch.Tensor | None, feedback0: torch.Tensor | None,
             drives: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        self._check_inputs(inputs)
        # the shapes are checked by the layers' own input_drive
        self._check_teacher(teacher, feedback0)
        starts = self._check_state0(state0, inputs.shape[0])
        out: list[torch.Tensor] = []
        below = None
        for i, esn in enumerate(self.layers):
            v = self.layer_input(i, inputs, below)
            y, y0 = (teacher, feedback0) if esn.has_feedback else (None, None)
            if drives is None:
                below = esn.states(v, starts[i], y, y0)
            else:
                drive = esn.input_drive(v, y, y0)
                drives.append(drive)
                x0 = esn.initial_state(inputs.shape[0]) if starts[i] is None else starts[i]
                below = esn.recur(drive, x0)  # out=None: keeps the drive
            out.append(below)
        return out

    def input_drive(
        self,
        inputs: torch.Tensor,
        teacher: torch.Tensor | None = None,
        feedback0: torch.Tensor | None = None,
        state0: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Every layer's ``W_in,l v_l(t) + bias_l (+ W_fb,l y(t-1))``, a list of ``(batch,
        time, N_l)``: the net input without ``W_l x_l(t-1)``. ``y(t-1)`` is ``teacher[:, t-1]``
        and, at t = 0, ``feedback0`` (default 0), as for the shallow network. Unlike there, the
        v_l of the upper layers of ``deepESN``/``deepESN-IA`` are the states of the layer below,
        so this runs the stack (from ``state0``, default 0)."""
        drives: list[torch.Tensor] = []
        self._run(inputs, state0, teacher, feedback0, drives)
        return drives

    def layer_states(
        self,
        inputs: torch.Tensor,
        state0: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None,
        feedback0: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Every layer's states x_l(0..T-1), a list of ``(batch, time, N_l)``, from x_l(-1) =
        the matching part of ``state0`` (default 0). With output feedback, ``teacher``
        ``(batch, time, O)`` is fed back one step late (teacher forcing) and ``feedback0``
        ``(batch, O)`` is y(-1) (default 0)."""
        return self._run(inputs, state0, teacher, feedback0)

    def states(
        self,
        inputs: torch.Tensor,
        state0: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None,
        feedback0: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The states of all layers side by side, ``(batch, time, sum N_l)``: the features of a
        readout on all layers (``teacher``, ``feedback0`` as in :meth:`layer_states`)."""
        return torch.cat(self.layer_states(inputs, state0, teacher, feedback0), dim=-1)

    def step(
        self, u_t: torch.Tensor, state: torch.Tensor, feedback: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One update of the whole stack: ``u_t`` ``(batch, D)``, ``state`` ``(batch, sum N_l)``
        (x_l(t-1) of every layer), ``feedback`` y(t-1) ``(batch, O)`` (needed iff the network
        has output feedback); returns the new ``(batch, sum N_l)``."""
        parts = self.split_state(self._check_step(u_t, state, feedback))
        new: list[torch.Tensor] = []
        below = None
        for i, esn in enumerate(self.layers):
            below = esn.step(self.layer_input(i, u_t, below), parts[i],
                             feedback if esn.has_feedback else None)
            new.append(below)
        return torch.cat(new, dim=-1)

    def extra_repr(self) -> str:
        ref = self._ref()
        return (f"input_size={self.input_size}, units={self.sizes}, output_size="
                f"{self.output_size}, variant={self.variant!r}, activation={self.activation!r}, "
                f"feedback={self.has_feedback}, feedback_layers={self.feedback_layers!r}, "
                f"dtype={ref.dtype}, device={ref.device}")
