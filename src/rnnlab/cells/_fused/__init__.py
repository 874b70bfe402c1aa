"""The fused CPU loops of the hand-written LSTM and Cho-GRU sequences, a C++ extension.

``fused_cells.cpp`` (next to this file) holds the time loops of
:class:`rnnlab.cells.lstm._LSTMSequence` (every Greff et al. variant but FGR) and of
:class:`rnnlab.cells.gru._ChoGRUSequence`, forward and backward through time, and the whole
sequence's products (``linear``), as registered torch ops (``torch.ops.rnnlab_fused``): per step
one matrix product per recurrent weight block and one vectorised pass of the gate math
(``at::vec``), where the Python loops launch one torch op per gate. The equations, and the
weight gradients around the loops, are those of :mod:`rnnlab.cells.lstm` and
:mod:`rnnlab.cells.gru`.

The extension is compiled on first use with ``torch.utils.cpp_extension.load`` (g++ and ninja)
into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``), once per machine, source version, torch version and CPU
capability (the vector width it is compiled for); later processes only load it.
:func:`fused_ops` returns the ops, or ``None`` when they are off: ``RNNLAB_FUSED=0`` in the
environment, or the build failed (no compiler, say), which warns once and leaves the Python
loops in charge.
"""

from __future__ import annotations

import os
import platform
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

_SOURCE = Path(__file__).with_name("fused_cells.cpp")
_lock = threading.Lock()
_ops: Any = None
_tried = False


def enabled() -> bool:
    """False when ``RNNLAB_FUSED`` is ``0``/``false``/``no``/``off`` in the environment."""
    return os.environ.get("RNNLAB_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


def _capability_flags() -> tuple[str, list[str]]:
    """The vector extension to compile ``at::vec`` for: the one torch's own kernels use on this
    CPU (AVX-512 or AVX2, with FMA; torch reports it), else torch's portable default."""
    cap = torch.backends.cpu.get_cpu_capability()
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "default", ["-DCPU_CAPABILITY=DEFAULT"]
    if cap == "AVX512":
        return "avx512", ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
                          "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if cap == "AVX2":
        return "avx2", ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return "default", ["-DCPU_CAPABILITY=DEFAULT"]


def _build() -> Any:
    from torch.utils import cpp_extension

    tag, flags = _capability_flags()
    # one build per torch version too: a library built against another torch does not load
    version = re.sub(r"[^0-9A-Za-z]", "_", torch.__version__)
    cpp_extension.load(
        name=f"rnnlab_fused_{tag}_torch{version}", sources=[str(_SOURCE)],
        extra_cflags=["-O3", *flags], is_python_module=False, verbose=False,
    )
    return torch.ops.rnnlab_fused


def fused_ops() -> Any | None:
    """``torch.ops.rnnlab_fused`` (built on the first call of the process), or None when the
    fused loops are disabled (``RNNLAB_FUSED=0``) or could not be built (warns once)."""
    global _ops, _tried
    if not enabled():
        return None
    if _tried:
        return _ops
    with _lock:
        if not _tried:
            try:
                _ops = _build()
            except Exception as err:  # any build or load failure means the fallback
                lines = str(err).strip().splitlines()
                warnings.warn(
                    "rnnlab: the fused C++ CPU loops could not be built "
                    f"({type(err).__name__}: {lines[-1] if lines else ''}); "
                    "the LSTM and GRU sequences run their Python loops (slower; the same "
                    "results up to floating-point rounding). "
                    "Set RNNLAB_FUSED=0 to skip the attempt.", RuntimeWarning, stacklevel=3)
                _ops = None
            _tried = True
    return _ops


def built_ops() -> Any:
    """The ops a forward already used, whatever ``RNNLAB_FUSED`` says now: a backward runs the
    loop its forward ran (the environment may change in between)."""
    if _ops is None:
        raise RuntimeError("rnnlab: the fused C++ loops were not built in this process")
    return _ops


def usable(*tensors: torch.Tensor | None) -> bool:
    """True when the fused loops apply to these tensors (all on the CPU, float32 or float64,
    not under tracing) and are built; triggers the build on first use."""
    for t in tensors:
        if t is not None and (t.device.type != "cpu" or t.dtype not in (torch.float32,
                                                                      torch.float64)):
            return False
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return fused_ops() is not None


__all__ = ["built_ops", "enabled", "fused_ops", "usable"]
