"""Two primitives for the kernels' parallel rows: an acquire/release step counter and a wait.

The parallel kernels (:mod:`rnnlab.reservoir.kernels`) run one time loop per thread, each
thread over its own block of rows, with one synchronisation per step: a thread publishes the
number of steps it has finished (a release store) and, before reading the state it did not
write, waits until every other thread has published at least as many (acquire loads). A fork
and join per step (numba's ``prange``) costs tens of microseconds, as much as the step of a
1000-unit reservoir; this wait costs a cache-line transfer when the threads keep pace.

numba has no atomics, so the two memory operations are LLVM's atomic load and store, emitted
through ``numba.extending.intrinsic``; the spin uses the x86 ``pause`` hint (none elsewhere)
and, after ``SPINS`` tries, ``sched_yield`` so that a thread whose partner was descheduled by
a busy machine gives its core back. Counters sit ``LINE`` int64 apart (128 bytes: no false
sharing); the slot after the last counter is an abort flag that any thread (or the Python
side, when a thread failed) sets so that the others stop waiting.

Each step a thread's rows of the state are written by it and read by every other thread, so
their cache lines move between cores (measured: 2 threads gave 30-41 us per step against 51-62
serial at N = 1000, not half; prefetch hints for those lines, tried, gained nothing measurable).

This module needs numba; :mod:`rnnlab.reservoir.kernels` imports it only when numba imports.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

LINE = 16
SPINS = 4000

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _checked_array(arr) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1


@intrinsic
def load_acquire(typingctx, arr, idx):
    """``arr[idx]`` of a 1-D int64 array as an atomic load with acquire ordering."""
    if not _checked_array(arr) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        aryty, idxty = sig.args
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(arr, idx), codegen


@intrinsic
def store_release(typingctx, arr, idx, val):
    """``arr[idx] = val`` of a 1-D int64 array as an atomic store with release ordering."""
    if (not _checked_array(arr) or not isinstance(idx, types.Integer)
            or not isinstance(val, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        aryty, idxty, valty = sig.args
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        v = context.cast(builder, args[2], valty, types.int64)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i])
        builder.store_atomic(v, ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(arr, idx, val), codegen


@intrinsic
def cpu_relax(typingctx):
    """The x86 ``pause`` spin-wait hint (a no-op on other machines)."""

    def codegen(context, builder, sig, args):
        if _X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty,
                                                        "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return types.void(), codegen


def _find_sched_yield():
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).sched_yield
    except (OSError, AttributeError, TypeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_int, []
    return fn


_sched_yield = _find_sched_yield()

if _sched_yield is not None:
    @numba.njit(nogil=True, cache=False)
    def yield_cpu() -> None:
        _sched_yield()
else:  # pragma: no cover - no C library with sched_yield (the spin just goes on)
    @numba.njit(nogil=True, cache=True)
    def yield_cpu() -> None:
        cpu_relax()


@numba.njit(nogil=True, cache=False)
def wait_for_parts(flags, part, parts, target) -> bool:
    """Wait until every part other than ``part`` has published a count >= ``target`` in
    ``flags[q * LINE]``; False (at once) if the abort slot ``flags[parts * LINE]`` is set."""
    for q in range(parts):
        if q == part:
            continue
        spins = 0
        while load_acquire(flags, q * LINE) < target:
            if load_acquire(flags, parts * LINE) != 0:
                return False
            spins += 1
            if spins < SPINS:
                cpu_relax()
            else:
                yield_cpu()
    return load_acquire(flags, parts * LINE) == 0
