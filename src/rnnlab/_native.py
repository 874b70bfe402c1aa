"""rnnlab's C++ CPU kernels: compiled on first use, optional, with a Python fallback.

Each native library (a set of ``.cpp`` files registering torch ops in one namespace, e.g.
``torch.ops.rnnlab_fused``) is compiled with ``torch.utils.cpp_extension.load`` (g++ and ninja)
into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``),
once per machine, source version, torch version and CPU capability (the vector width ``at::vec``
is compiled for); later processes only load it. :meth:`NativeOps.ops` returns the ops, or
``None`` when they are off: ``RNNLAB_FUSED=0`` in the environment (one switch for every native
library), or the build failed (no compiler, say), which warns once per library and leaves the
caller's Python code in charge. Callers keep a Python path that computes the same function; the
tests compare the two.
"""

from __future__ import annotations

import os
import platform
import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad

from rnnlab._validation import functorch_active


def enabled() -> bool:
    """False when ``RNNLAB_FUSED`` is ``0``/``false``/``no``/``off`` in the environment."""
    return os.environ.get("RNNLAB_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


def capability_flags() -> tuple[str, list[str]]:
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


def cpu_float_tensors(*tensors: torch.Tensor | None) -> bool:
    """True when every given tensor is on the CPU in float32 or float64 and nothing is being
    traced or compiled (native ops are opaque to tracing, export and ``torch.compile``)."""
    for t in tensors:
        if t is not None and (t.device.type != "cpu" or t.dtype not in (torch.float32,
                                                                      torch.float64)):
            return False
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling())


class NativeOps:
    """One native library: ``namespace`` is its ``TORCH_LIBRARY`` name, ``sources`` its
    ``.cpp`` files, ``fallback`` what runs instead (said in the warning of a failed build)."""

    def __init__(self, namespace: str, sources: Sequence[Path], fallback: str) -> None:
        self.namespace = namespace
        self.sources = [Path(s) for s in sources]
        self.fallback = fallback
        self._lock = threading.Lock()
        self._ops: Any = None
        self._tried = False

    def build(self) -> Any:
        """Compile (or load from the cache) and return ``torch.ops.<namespace>``."""
        from torch.utils import cpp_extension

        tag, flags = capability_flags()
        # one build per torch version too: a library built against another torch does not load
        version = re.sub(r"[^0-9A-Za-z]", "_", torch.__version__)
        cpp_extension.load(
            name=f"{self.namespace}_{tag}_torch{version}",
            sources=[str(s) for s in self.sources],
            extra_cflags=["-O3", *flags], is_python_module=False, verbose=False,
        )
        return getattr(torch.ops, self.namespace)

    def ops(self) -> Any | None:
        """The ops (built on the first call of the process), or None when native code is
        disabled (``RNNLAB_FUSED=0``) or this library could not be built (warns once)."""
        if not enabled():
            return None
        if self._tried:
            return self._ops
        with self._lock:
            if not self._tried:
                try:
                    self._ops = self.build()
                except Exception as err:  # any build or load failure means the fallback
                    lines = str(err).strip().splitlines()
                    warnings.warn(
                        f"rnnlab: the C++ CPU kernels '{self.namespace}' could not be built "
                        f"({type(err).__name__}: {lines[-1] if lines else ''}); "
                        f"{self.fallback} (slower; the same results up to floating-point "
                        "rounding). Set RNNLAB_FUSED=0 to skip the attempt.",
                        RuntimeWarning, stacklevel=4)
                    self._ops = None
                self._tried = True
        return self._ops

    def built(self) -> Any:
        """The ops a forward already used, whatever ``RNNLAB_FUSED`` says now: a backward runs
        the code its forward ran (the environment may change in between)."""
        if self._ops is None:
            raise RuntimeError(f"rnnlab: the C++ kernels '{self.namespace}' were not built in "
                               "this process")
        return self._ops

    def usable(self, *tensors: torch.Tensor | None) -> bool:
        """True when the ops apply to these tensors (:func:`cpu_float_tensors`) and are built;
        triggers the build on first use."""
        return cpu_float_tensors(*tensors) and self.ops() is not None


def _onednn_linear_op() -> Any | None:
    """torch's oneDNN matmul op (``torch.ops.mkldnn._linear_pointwise``, the one its compiler
    emits for CPU linear layers), or None where this torch build has no oneDNN."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def inference_linear(x: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x W^T + b`` (``torch.nn.functional.linear``) for inference loops such as a decoder's
    readout: for a 2-D float32 ``x`` and a contiguous float32 ``weight`` on the CPU, with nothing
    needing a gradient and native code on (``RNNLAB_FUSED``), oneDNN's matmul; otherwise
    ``F.linear``. Why: torch's CPU ``addmm`` calls MKL, whose sgemm does not use AVX-512 on
    every x86 CPU (on the AMD EPYC of our machines oneDNN's ran 1.9-2.2x faster with 64 and 320
    rows, and no faster with 5: ``benchmarks/bench_seq2seq.py --linear``). The same function up
    to float32 rounding (another summation order). A strided ``weight`` (a column slice) takes
    ``F.linear``: oneDNN would reorder it on every call."""
    if _onednn_applies(x, weight, bias):
        op = _onednn_linear_op()
        if op is not None:
            return op(x.contiguous(), weight, bias, "none", [], "")
    return torch.nn.functional.linear(x, weight, bias)


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether :func:`inference_linear` may hand these to oneDNN: plain float32 CPU tensors of
    matching shapes (2-D ``x`` with rows, ``weight`` contiguous, ``bias`` ``(out,)`` or None),
    nothing that needs a gradient, and no machinery that ``F.linear`` serves and a raw op would
    bypass: autocast, forward-mode AD, ``torch.func`` transforms, tensor subclasses, tracing,
    compiling, export; native code on."""
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (x.dim() == 2 and weight.dim() == 2 and x.shape[0] > 0
            and x.shape[1] == weight.shape[1] > 0 and weight.is_contiguous()
            and (bias is None or (bias.shape == (weight.shape[0],) and bias.is_contiguous()))
            and all(type(t) in (torch.Tensor, torch.nn.Parameter)
                    and t.dtype == torch.float32 for t in tensors)
            and cpu_float_tensors(*tensors) and not torch.compiler.is_exporting()
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            and not torch.is_autocast_enabled("cpu")
            and getattr(forward_ad, "_current_level", 0) < 0 and not functorch_active()
            and enabled())


__all__ = ["NativeOps", "capability_flags", "cpu_float_tensors", "enabled", "inference_linear"]
