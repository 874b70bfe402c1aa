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
their cache lines move between cores twice per step (taken for writing, then read back by the
others); one miss at a time, that exchange costs as much as a third of the step. Prefetch
hints (``llvm.prefetch``: ``prefetchw``, ``prefetcht0``) request all those lines at once, ahead
of the stores and of the gathers.

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


def _prefetch_intrinsic(write: int):
    @intrinsic
    def prefetch(typingctx, arr, idx):
        if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            aryty, idxty = sig.args
            ary = context.make_array(aryty)(context, builder, args[0])
            i = context.cast(builder, args[1], idxty, types.intp)
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [i])
            i8p, i32 = ir.PointerType(ir.IntType(8)), ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            # (address, read 0 / write 1, locality 3: keep in all levels, data cache)
            builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, write),
                              ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(arr, idx), codegen

    return prefetch


prefetch_read = _prefetch_intrinsic(0)
prefetch_read.__doc__ = "Hint: bring the cache line of ``arr[idx]`` in for reading."
prefetch_write = _prefetch_intrinsic(1)
prefetch_write.__doc__ = ("Hint: bring the cache line of ``arr[idx]`` in for writing (take it "
                          "from the other cores' caches ahead of the stores).")


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
