"""The fused CPU loops of the hand-written LSTM and Cho-GRU sequences, a C++ extension.

``fused_cells.cpp`` (next to this file) holds the time loops of
:class:`rnnlab.cells.lstm._LSTMSequence` (every Greff et al. variant; FGR's gate-to-gate
recurrence is one more product per step) and of :class:`rnnlab.cells.gru._ChoGRUSequence`,
forward and backward through time, and the whole sequence's products (``linear``), as
registered torch ops (``torch.ops.rnnlab_fused``): per step one matrix product per recurrent
weight block and one vectorised pass of the gate math (``at::vec``), where the Python loops
launch one torch op per gate. A forward that no backward follows stores only the states. The
equations, and the weight gradients around the loops, are those of :mod:`rnnlab.cells.lstm` and
:mod:`rnnlab.cells.gru`; FGR's Python counterpart is the plain step loop.

The extension is built and loaded by :class:`rnnlab._native.NativeOps` (compiled on first use
with g++ and ninja into torch's extension cache, once per machine, source version, torch version
and CPU capability). :func:`fused_ops` returns the ops, or ``None`` when they are off:
``RNNLAB_FUSED=0`` in the environment, or the build failed (no compiler, say), which warns once
and leaves the Python loops in charge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rnnlab._native import NativeOps, enabled

NATIVE = NativeOps("rnnlab_fused", [Path(__file__).with_name("fused_cells.cpp")],
                   fallback="the LSTM and GRU sequences run their Python loops")


def fused_ops() -> Any | None:
    """``torch.ops.rnnlab_fused`` (built on the first call of the process), or None when the
    fused loops are disabled (``RNNLAB_FUSED=0``) or could not be built (warns once)."""
    return NATIVE.ops()


def built_ops() -> Any:
    """The ops a forward already used, whatever ``RNNLAB_FUSED`` says now: a backward runs the
    loop its forward ran (the environment may change in between)."""
    return NATIVE.built()


def usable(*tensors: torch.Tensor | None) -> bool:
    """True when the fused loops apply to these tensors (all on the CPU, float32 or float64,
    not under tracing) and are built; triggers the build on first use."""
    return NATIVE.usable(*tensors)


__all__ = ["NATIVE", "built_ops", "enabled", "fused_ops", "usable"]
