"""Free-running generation (closed loop) for the echo state networks of this package.

At each step the network's own readout output ``y(t-1)`` is fed back (as the next input when no
inputs are given: autoregression; and into the output feedback ``W_fb``, if any); see
:meth:`EchoStateNetwork.generate <rnnlab.reservoir.esn.EchoStateNetwork.generate>`. Shared by
the shallow and the deep network, duck-typed on their ``step``, ``has_feedback``,
``initial_state``, ``_check_state``, ``_check_inputs``, ``input_size`` and ``output_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rnnlab._validation import check_positive_int, check_tensor


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
    See :meth:`EchoStateNetwork.generate`."""
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
