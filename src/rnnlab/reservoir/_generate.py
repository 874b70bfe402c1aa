"""What the shallow and the deep echo state network share: :class:`ReservoirModule` (the
checks of inputs, states and step arguments, ``forward``, ``initial_state`` and ``generate``) and
free-running generation (:func:`closed_loop`).

In a closed loop the network's own readout output ``y(t-1)`` is fed back at each step (as the
next input when no inputs are given: autoregression; and into the output feedback ``W_fb``, if
any); see :meth:`ReservoirModule.generate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rnnlab._validation import check_int, check_positive_int, check_tensor, check_washout


def closed_loop(
    model: Any,
    steps: int,
    readout: Callable[[torch.Tensor], torch.Tensor],
    state: torch.Tensor | None,
    last_output: torch.Tensor | None,
    inputs: torch.Tensor | None,
    ref: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The free-running loop of ``generate`` for a shallow or deep echo state network
    ``model`` (its ``step``, ``has_feedback``, ``initial_state``, ``_check_state``,
    ``_check_inputs``, ``input_size``, ``output_size``); ``ref`` carries the dtype and device.
    See :meth:`ReservoirModule.generate`."""
    check_positive_int("steps", steps)
    if not callable(readout):
        raise TypeError("readout must be callable: states (batch, units) -> outputs "
                        "(batch, O)")
    if inputs is not None:
        model._check_inputs(inputs)
        if inputs.shape[1] != steps:
            raise ValueError(f"inputs have {inputs.shape[1]} steps, expected {steps}")
    elif last_output is None:
        raise ValueError("autoregressive generation (no inputs) needs last_output = y(-1)")
    if model.has_feedback and last_output is None:
        raise ValueError("this ESN has output feedback: pass last_output = y(-1)")
    if state is not None:
        batch = state.shape[0] if state.dim() == 2 else -1
    elif last_output is not None:
        batch = last_output.shape[0]
    else:
        batch = inputs.shape[0]
    x = model.initial_state(batch) if state is None else model._check_state(state, batch,
                                                                             "state")
    y = None
    if last_output is not None:
        width = model.output_size if model.has_feedback else last_output.shape[-1]
        check_tensor("last_output", last_output, ndim=2, last_dim=width, dtype=ref.dtype,
                     device=ref.device, layout="(batch, outputs)")
        if last_output.shape[0] != batch:
            raise ValueError(f"last_output has batch size {last_output.shape[0]}, "
                             f"expected {batch}")
        if inputs is None and last_output.shape[-1] != model.input_size:
            raise ValueError(
                f"autoregressive generation feeds the output back as input: the output has "
                f"{last_output.shape[-1]} features, the ESN takes {model.input_size}")
        y = last_output
    if inputs is not None and inputs.shape[0] != batch:
        raise ValueError(f"inputs have batch size {inputs.shape[0]}, expected {batch}")
    outputs, states = [], []
    for t in range(steps):
        u = inputs[:, t] if inputs is not None else y
        x = model.step(u, x, y if model.has_feedback else None)
        y_new = readout(x)
        if not isinstance(y_new, torch.Tensor) or y_new.dim() != 2 \
                or y_new.shape[0] != batch:
            raise ValueError("readout must return a (batch, outputs) tensor")
        if y is not None and y_new.shape != y.shape:
            raise ValueError(f"readout returned shape {tuple(y_new.shape)}, expected "
                             f"{tuple(y.shape)} (the shape of last_output)")
        if not bool(torch.isfinite(y_new).all()):
            raise ValueError(f"readout output became non-finite at generation step {t}")
        y = y_new
        outputs.append(y)
        states.append(x)
    return torch.stack(outputs, 1), torch.stack(states, 1)


class ReservoirModule(nn.Module):
    """Base of :class:`~rnnlab.reservoir.esn.EchoStateNetwork` and
    :class:`~rnnlab.reservoir.deep.DeepEchoStateNetwork`: what runs the same over one reservoir
    and a stack of them. A subclass sets ``input_size`` and ``output_size`` and defines
    :meth:`_ref` (a weight tensor: the network's dtype and device), :meth:`_state_size` (the
    width of a state: N, or sum N_l for a stack), ``has_feedback``, ``states`` and ``step``.
    """

    #: the layout of a state, named in error messages
    _state_layout = "(batch, units)"

    def _ref(self) -> torch.Tensor:
        raise NotImplementedError

    def _state_size(self) -> int:
        raise NotImplementedError

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """The zero state x(-1) = 0, ``(batch_size, N)`` (N: all layers' units side by side for
        a deep network) on the module's device and dtype."""
        check_positive_int("batch_size", batch_size)
        return self._ref().new_zeros(batch_size, self._state_size())

    def _check_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        ref = self._ref()
        return check_tensor("inputs", inputs, ndim=3, last_dim=self.input_size, dtype=ref.dtype,
                            device=ref.device, layout="(batch, time, features)")

    def _check_state(self, state: torch.Tensor, batch: int, name: str) -> torch.Tensor:
        ref = self._ref()
        check_tensor(name, state, ndim=2, last_dim=self._state_size(), dtype=ref.dtype,
                     device=ref.device, layout=self._state_layout)
        if state.shape[0] != batch:
            raise ValueError(f"{name} has batch size {state.shape[0]}, the input has {batch}")
        return state

    def _check_teacher(self, teacher: torch.Tensor | None, feedback0: torch.Tensor | None) -> None:
        """Whether the feedback arguments of a teacher-forced run belong (not their shapes)."""
        if self.has_feedback and teacher is None:
            raise ValueError(
                "this ESN feeds its output back (feedback_scaling > 0): pass teacher= (the "
                "target sequence, teacher forcing) or use generate() with a readout")
        if not self.has_feedback and (teacher is not None or feedback0 is not None):
            raise ValueError("teacher/feedback0 given but this ESN has no output feedback "
                             "(output_size = 0 or feedback_scaling = 0)")

    def _check_step(self, u_t: torch.Tensor, state: torch.Tensor,
                    feedback: torch.Tensor | None) -> torch.Tensor:
        """The checks of ``step(u_t, state, feedback)``; returns ``state``."""
        ref = self._ref()
        check_tensor("u_t", u_t, ndim=2, last_dim=self.input_size, dtype=ref.dtype,
                     device=ref.device, layout="(batch, features)")
        self._check_state(state, u_t.shape[0], "state")
        if self.has_feedback and feedback is None:
            raise ValueError("this ESN has output feedback: pass feedback= (y(t-1))")
        if feedback is not None and not self.has_feedback:
            raise ValueError("feedback given but this ESN has no output feedback")
        return state

    def forward(
        self,
        inputs: torch.Tensor,
        state0: torch.Tensor | None = None,
        washout: int = 0,
        teacher: torch.Tensor | None = None,
        feedback0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run over ``inputs`` ``(batch, time, D)``.

        Returns ``(states (batch, time - washout, N), final state (batch, N))`` (N: all layers'
        units side by side for a deep network); the first ``washout`` states are dropped
        (initial transient). With output feedback, ``teacher`` ``(batch, time, O)`` is the
        target sequence, fed back one step late (teacher forcing). Process a long sequence in
        chunks by passing each chunk's final state as the next ``state0`` (and the last target
        as ``feedback0``).
        """
        washout = check_int("washout", washout, low=0)
        self._check_inputs(inputs)
        check_washout(washout, inputs.shape[1])
        xs = self.states(inputs, state0, teacher, feedback0)
        return xs[:, washout:], xs[:, -1]

    @torch.no_grad()
    def generate(
        self,
        steps: int,
        readout: Callable[[torch.Tensor], torch.Tensor],
        state: torch.Tensor | None = None,
        last_output: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Free-running generation for ``steps`` steps with the model's own outputs.

        ``readout`` maps states ``(batch, N)`` (N: all layers' units side by side for a deep
        network) to outputs ``(batch, O)`` (e.g. a :class:`~rnnlab.reservoir.readout.RidgeReadout`
        fitted on the states). At each step ``u(t) = inputs[:, t]`` if ``inputs`` ``(batch,
        steps, D)`` is given, else the previous output ``y(t-1)`` (autoregressive: needs O = D);
        the output feedback, if any, also gets ``y(t-1)``; then ``y(t) = readout(x(t))``.
        ``state`` is x(-1) (e.g. the final state of a teacher-forced run) and ``last_output``
        is y(-1) (e.g. the last target), needed for autoregression or feedback. Returns
        ``(outputs (batch, steps, O), states (batch, steps, N))``.
        """
        return closed_loop(self, steps, readout, state, last_output, inputs, self._ref())
