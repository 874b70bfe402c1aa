"""The numba backend of the reservoir step: fused CPU time-loop kernels and their threads.

Private to :mod:`rnnlab.reservoir`; it knows nothing of the network class: it takes W as CSR
arrays, the drive, the state and the per-unit vectors. The equation is the one of
:mod:`rnnlab.reservoir._step` with f = tanh (tests hold the two together), for every unit i,
with the drive ``d(t) = W_in u(t) + bias (+ W_fb y(t-1))`` formed for the whole sequence
beforehand::

    x_i(t) = (1 - a_i) x_i(t-1) + a_i tanh(g_i (d_i(t) + sum_j W_ij x_j(t-1)) + s_i)

Why a kernel. A step of a 1000-unit reservoir at density 0.1 is bound by the sparse
matrix-vector product, but a chain of torch calls per step (CSR ``addmm``, ``tanh``, ``lerp``,
a copy) pays a dispatch cost on each, and scipy's CSR loop is not vectorised. The kernels here
do the whole step in one call over the rows of W in CSR form: for row i, the dot product of the
stored weights with the gathered x(t-1), plus the drive, gain and shift, tanh, leak.

* One sequence (batch 1): x(t-1) and x(t) are two length-N buffers; the row's dot product is a
  reduction that the compiler vectorises with AVX gathers (``fastmath`` reassociation: the
  summation order differs from torch's, which changes results by round-off only). Column
  indices are stored as unsigned integers, which spares the negative-index wraparound test on
  every gather. The non-linearity follows in a second pass over the rows (vectorised, see
  ``_tanh``).
* A batch of B sequences: the states are kept column-major, ``(N, B)``, so that each stored
  weight ``W_ij`` multiplies the contiguous row ``x_j(t-1)[0:B]`` (one vectorised
  multiply-add over the batch per stored weight, the index traffic shared by the batch; four
  stored weights per pass over the accumulator row).
* float32 and float64 (the arrays' dtype; one sequence accumulates the row sum in float64;
  tanh is evaluated in float64).
* Parallel rows (opt-in, :func:`set_kernel_threads`): the rows are split into blocks of equal
  numbers of stored weights, one per thread; every thread runs the whole time loop over its
  block and waits for the others once per step (an acquire/release step counter and a short
  spin, :mod:`rnnlab.reservoir._spin`, where a fork and join per step through numba's
  ``prange`` costs as much as the step). Each row is summed by one thread in the serial order,
  so the states are bitwise those of the serial kernel. Used for steps of at least
  ``PARALLEL_MIN_WORK`` weight-times-sequence products.

The thread runtime lives here too: the kernel thread count (:func:`set_kernel_threads`), the
per-thread serial switch (:func:`serial_kernels`), and the helpers that keep torch's and the
BLAS libraries' own pools on one thread while the kernels share the cores out themselves
(:func:`single_threaded_pools`, :func:`fit_pool`). Measured timings, and the tables behind
:func:`numba_is_faster`, are in ``docs/reservoir.md`` ("Kernels: measured").

This module imports without numba (:func:`numba_available` is then False and the kernels
raise); it is a little over 500 lines because the serial and parallel kernels of one and of a
batch of sequences are four variants of one loop, kept side by side so that they stay alike.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch

from rnnlab._validation import check_positive_int, check_tensor

try:
    import numba

    from rnnlab.reservoir import _spin
except ImportError:  # numba is optional: the torch loop is the fallback
    numba = None

KERNELS = ("auto", "numba", "torch", "cuda_graph")
NUMBA_DTYPES = (torch.float32, torch.float64)
# Weight-times-sequence products per step below which splitting a step's rows across threads
# is not worth the wait at its end (each step then costs a few microseconds of exchange: one
# sequence of a 1000-unit, density-0.1 reservoir, 100k products, gained 51-62 -> 30-41 us).
PARALLEL_MIN_WORK = 20_000


def numba_available() -> bool:
    """Whether numba imported (the fused kernels can run)."""
    return numba is not None


_THREADS = {"n": 1}
# Per-thread override of the parallel-rows choice: the overlapped streaming fit runs the state
# kernel serially on one core while the Gram matrix of the previous chunk is built on the other.
_LOCAL = threading.local()


def kernel_threads() -> int:
    """Threads the kernels use (1, the default, unless :func:`set_kernel_threads` changed it)."""
    return _THREADS["n"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under ``taskset`` or a
    container's cpuset; the machine's count where affinity is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def set_kernel_threads(n: int) -> None:
    """Run the kernels' time loops on ``n`` threads (at most the machine's cores).

    Opt-in: with 1 thread (the default) the kernels are serial. With more, a step of at least
    ``PARALLEL_MIN_WORK`` weight-times-sequence products is split by rows across ``n``
    threads that wait for each other once per step (:mod:`rnnlab.reservoir._spin`), and
    :func:`fit_streaming` builds the normal equations of one chunk while the reservoir runs
    the next. On a machine whose cores are busy with other work, a thread that waits for a
    descheduled partner yields its core after a short spin, but the step still takes as long
    as the slowest thread: keep the default there. The parallel kernels are compiled on their
    first use in each process (they call ``sched_yield`` through a ctypes pointer, which
    numba's disk cache cannot keep).
    """
    n = check_positive_int("n", n)
    if numba is None:
        raise ImportError("set_kernel_threads needs the numba package")
    limit = usable_cores()
    if n > limit:
        raise ValueError(f"this process may use {limit} cores; asked for {n} kernel threads "
                         f"(the threads spin-wait for each other: more threads than cores "
                         f"stall)")
    _THREADS["n"] = n



@contextlib.contextmanager
def serial_kernels(active: bool = True) -> Iterator[None]:
    """Within this thread, while ``active``, the kernels run serially whatever
    :func:`kernel_threads` says (the overlapped streaming fit runs the states on one core while
    the Gram matrix of the previous chunk is built on another). Nests; restored on exit."""
    previous = getattr(_LOCAL, "serial", False)
    _LOCAL.serial = previous or bool(active)
    try:
        yield
    finally:
        _LOCAL.serial = previous


def numba_is_faster(units: int, density: float, batch: int = 1,
                    dtype: torch.dtype = torch.float64) -> bool:
    """The ``kernel="auto"`` rule: whether the numba kernel beats the torch loop on the CPU.

    Measured with ``benchmarks/bench_reservoirpy.py --kernels`` (one thread, CPU time per step,
    numba kernel against the torch loop with its own dense-or-CSR choice; the table is in
    ``docs/reservoir.md``, "Kernels: measured").

    One sequence: the fused kernel wins wherever W is sparse (it saves the per-step dispatch
    of several torch calls) and for small dense W; a nearly full large W is faster through
    BLAS. Batches: torch's CSR ``addmm`` (MKL) shares the index traffic across the batch as
    well as the kernel does and vectorises better in float32, so the kernel is kept for sparse
    float64 reservoirs. Rule: batch < 8: density <= 0.25 or N <= 200; batch >= 8: float64,
    density <= 0.15 and N >= 256.
    """
    if batch >= 8:
        return dtype == torch.float64 and density <= 0.15 and units >= 256
    return density <= 0.25 or units <= 200


# ------------------------------------------------------------------------------------------------
# Kernels. Plain functions here, compiled below when numba imports (so that this module imports
# without numba); numba caches the machine code on disk (``cache=True``).

# tanh in float64 without a library call, so that the compiler vectorises it (libm's tanh is
# one call per unit: 32000 calls took 670 us per step of a 1000-unit, 32-sequence batch, more
# than the sparse product). Cephes' forms (Moshier, "Methods and Programs for Mathematical
# Functions", 1989): |x| < 0.625: tanh x = x + x^3 P(x^2) / Q(x^2); otherwise
# tanh |x| = 1 - 2 / (exp(2|x|) + 1), with exp(y) = 2^n exp(r), n = round(y / ln 2), r by the
# two-part ln 2, exp(r) = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)), and 2^n from a table (|x| is
# clipped at 20, where tanh is 1 to double precision). Within 2 ulp of tanh (a test holds it
# to 3e-16 against math.tanh over [-25, 25]).
_TANH_P = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_TANH_Q = (1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)
_EXP_P = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_EXP_Q = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,
          2.00000000000000000009e0)
_LN2_HI, _LN2_LO = 6.93145751953125e-1, 1.42860682030941723212e-6
_POW2 = 2.0 ** np.arange(64)


def _tanh(x):
    ax = min(abs(x), 20.0)
    z = x * x
    small = x + x * z * ((_TANH_P[0] * z + _TANH_P[1]) * z + _TANH_P[2]) / (
        ((z + _TANH_Q[0]) * z + _TANH_Q[1]) * z + _TANH_Q[2])
    y = 2.0 * ax
    n = math.floor(1.4426950408889634 * y + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    rr = r * r
    p = r * ((_EXP_P[0] * rr + _EXP_P[1]) * rr + _EXP_P[2])
    q = ((_EXP_Q[0] * rr + _EXP_Q[1]) * rr + _EXP_Q[2]) * rr + _EXP_Q[3]
    # unsigned, masked index: no wraparound test, and never out of the table
    e = (1.0 + 2.0 * (p / (q - p))) * _POW2[numba.uint64(n) & numba.uint64(63)]
    big = math.copysign(1.0 - 2.0 / (e + 1.0), x)
    return small if ax < 0.625 else big


def _unit(s, p, a, g, sh, plain, full_leak):
    """One unit's new state from its net input ``s`` and previous state ``p``:
    ``(1 - a) p + a tanh(g s + sh)`` (``g s + sh`` is ``s`` when ``plain``; the new state is the
    tanh alone when ``full_leak``), the step of :mod:`rnnlab.reservoir._step` for one unit."""
    if not plain:
        s = sh + g * s
    h = _tanh_jit(s)
    if full_leak:
        return h
    # torch.lerp's two-sided formula, for the same rounding
    return p + a * (h - p) if a < 0.5 else h - (h - p) * (1.0 - a)


def _rows_one(r0, r1, indptr, indices, data, d, xp, xc, leak, gain, shift, plain, full_leak):
    """Rows r0..r1-1 of one step for one sequence: xc from xp and the drive row d."""
    for i in range(r0, r1):
        acc = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            acc += data[k] * xp[indices[k]]
        xc[i] = d[i] + acc
    # the non-linearity in a second pass over the rows: a loop without the gather, which the
    # compiler vectorises (tanh four units at a time; 15 us of 70 saved per step at N = 1000)
    for i in range(r0, r1):
        xc[i] = _unit_jit(xc[i], xp[i], leak[i], gain[i], shift[i], plain, full_leak)


def _run_one(indptr, indices, data, drive, x0, out, leak, gain, shift, plain, full_leak):
    steps, n = drive.shape
    buf = np.empty((2, n), drive.dtype)
    buf[0] = x0
    for t in range(steps):
        xp = buf[t % 2]
        xc = buf[(t + 1) % 2]
        _rows_one_jit(0, n, indptr, indices, data, drive[t], xp, xc, leak, gain, shift,
                      plain, full_leak)
        # after the rows: out may be drive itself, and drive[t] has been read
        out[t] = xc


def _run_one_part(part, parts, flags, bounds, indptr, indices, data, drive, buf, out, leak,
                  gain, shift, plain, full_leak):
    """One thread's share of the time loop (one sequence): rows bounds[part]..bounds[part+1]-1
    of every step, then a wait for the other threads' rows (see :mod:`._spin`)."""
    steps = drive.shape[0]
    r0, r1 = bounds[part], bounds[part + 1]
    for t in range(steps):
        xp = buf[t % 2]
        xc = buf[(t + 1) % 2]
        _rows_one_jit(r0, r1, indptr, indices, data, drive[t], xp, xc, leak, gain, shift,
                      plain, full_leak)
        o = out[t]
        for i in range(r0, r1):
            o[i] = xc[i]
        _spin.store_release(flags, part * _spin.LINE, t + 1)
        # step t + 1 reads every row of xc, and overwrites xp, which the others read in step t
        if not _spin.wait_for_parts(flags, part, parts, t + 1):
            return


def _rows_batch(r0, r1, indptr, indices, data, drive, t, xp, xc, leak, gain, shift, plain,
                full_leak):
    """Rows r0..r1-1 of step t for a batch; xp, xc are column-major states (N, B)."""
    batch = xp.shape[1]
    one, four = numba.uint64(1), numba.uint64(4)  # unsigned offsets keep the index unsigned
    for i in range(r0, r1):
        o = xc[i]
        for b in range(batch):
            o[b] = 0.0
        k, end = indptr[i], indptr[i + 1]
        # four stored weights per pass over the batch row: a quarter of the loads and stores of
        # the accumulator row (measured 1.8x faster at B = 32 in float64)
        while k + four <= end:
            w0, w1, w2, w3 = data[k], data[k + one], data[k + 2 * one], data[k + 3 * one]
            x0, x1 = xp[indices[k]], xp[indices[k + one]]
            x2, x3 = xp[indices[k + 2 * one]], xp[indices[k + 3 * one]]
            for b in range(batch):
                o[b] += (w0 * x0[b] + w1 * x1[b]) + (w2 * x2[b] + w3 * x3[b])
            k += four
        while k < end:
            w = data[k]
            row = xp[indices[k]]
            for b in range(batch):
                o[b] += w * row[b]
            k += one
        a, g, sh = leak[i], gain[i], shift[i]
        for b in range(batch):
            o[b] = _unit_jit(drive[b, t, i] + o[b], xp[i, b], a, g, sh, plain, full_leak)


def _run_batch(indptr, indices, data, drive, x0, out, leak, gain, shift, plain, full_leak):
    batch, steps, n = drive.shape
    buf = np.empty((2, n, batch), drive.dtype)
    buf[0] = x0.T
    for t in range(steps):
        xp = buf[t % 2]
        xc = buf[(t + 1) % 2]
        _rows_batch_jit(0, n, indptr, indices, data, drive, t, xp, xc, leak, gain, shift,
                        plain, full_leak)
        for b in range(batch):
            out[b, t] = xc[:, b]


def _run_batch_part(part, parts, flags, bounds, indptr, indices, data, drive, buf, out, leak,
                    gain, shift, plain, full_leak):
    """One thread's share of the time loop for a batch (see :func:`_run_one_part`)."""
    batch, steps = drive.shape[0], drive.shape[1]
    r0, r1 = bounds[part], bounds[part + 1]
    for t in range(steps):
        xp = buf[t % 2]
        xc = buf[(t + 1) % 2]
        _rows_batch_jit(r0, r1, indptr, indices, data, drive, t, xp, xc, leak, gain, shift,
                        plain, full_leak)
        for b in range(batch):
            o = out[b, t]
            for i in range(r0, r1):
                o[i] = xc[i, b]
        _spin.store_release(flags, part * _spin.LINE, t + 1)
        if not _spin.wait_for_parts(flags, part, parts, t + 1):
            return


if numba is not None:
    _OPTS = {"cache": True, "nogil": True, "error_model": "numpy",
             "fastmath": {"reassoc", "contract"}}
    _tanh_jit = numba.njit(inline="always", cache=True, error_model="numpy",
                           fastmath={"contract"})(_tanh)
    # inlined into the row loops (numba IR), compiled with their options as before
    _unit_jit = numba.njit(inline="always", cache=True, error_model="numpy",
                           fastmath={"contract"})(_unit)
    _rows_one_jit = numba.njit(**_OPTS)(_rows_one)
    _rows_batch_jit = numba.njit(**_OPTS)(_rows_batch)
    _run_one_jit = numba.njit(**_OPTS)(_run_one)
    _run_batch_jit = numba.njit(**_OPTS)(_run_batch)
    # not cached: the spin-wait calls sched_yield through a ctypes pointer of this process
    _PART_OPTS = {**_OPTS, "cache": False}
    _run_one_part_jit = numba.njit(**_PART_OPTS)(_run_one_part)
    _run_batch_part_jit = numba.njit(**_PART_OPTS)(_run_batch_part)


# ------------------------------------------------------------------------------------------------
class CSRArrays(NamedTuple):
    """W in CSR form for the kernels: ``indptr`` (uint64, N + 1), ``indices`` (uint32, the
    column of each stored weight, row by row), ``data`` (W's dtype)."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])


def csr_arrays(w: torch.Tensor) -> CSRArrays:
    """The non-zero entries of a square matrix ``w`` as :class:`CSRArrays` (on the CPU)."""
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.shape[0] != w.shape[1]:
        raise ValueError("w must be a square 2-D torch.Tensor")
    if w.dtype not in NUMBA_DTYPES:
        raise TypeError(f"the numba kernels take float32 or float64, got {w.dtype}")
    wn = w.detach().cpu()
    if wn.layout != torch.strided:
        wn = wn.to_dense()
    wn = wn.numpy()
    n = wn.shape[0]
    if n >= 2**32:  # pragma: no cover - beyond any reservoir held densely
        raise ValueError("the kernels index columns with uint32")
    rows, cols = np.nonzero(wn)  # row-major order: the CSR order
    indptr = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return CSRArrays(indptr, cols.astype(np.uint32), np.ascontiguousarray(wn[rows, cols]))


def _row_blocks(indptr: np.ndarray, blocks: int) -> np.ndarray:
    """Row boundaries splitting the stored weights into ``blocks`` nearly equal parts."""
    n = indptr.shape[0] - 1
    targets = np.linspace(0, float(indptr[-1]), blocks + 1)
    bounds = np.searchsorted(indptr.astype(np.float64), targets, side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, n
    return np.maximum.accumulate(np.clip(bounds, 0, n))


def _vector(v: torch.Tensor, n: int, dtype: torch.dtype, name: str) -> np.ndarray:
    v = v.detach().to(dtype=dtype)
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(v.shape)}")
    return np.ascontiguousarray(v.cpu().numpy())


def _run_parallel(csr: CSRArrays, drive: np.ndarray, x0: np.ndarray, out: np.ndarray,
                  leak: np.ndarray, gain: np.ndarray, shift: np.ndarray, plain: bool,
                  full_leak: bool, parts: int) -> None:
    """The time loop on ``parts`` threads (the caller's and ``parts - 1`` more), each over a
    block of rows holding about the same number of stored weights, synchronised once per step
    by :mod:`._spin` (the states are bitwise those of the serial kernel: each row's arithmetic
    is the same)."""
    batch, _, n = drive.shape
    parts = max(1, min(parts, n))
    bounds = _row_blocks(csr.indptr, parts)
    flags = np.zeros((parts + 1) * _spin.LINE, dtype=np.int64)
    if batch == 1:
        buf = np.empty((2, n), drive.dtype)
        buf[0] = x0[0]
        run, d, o = _run_one_part_jit, drive[0], out[0]
    else:
        buf = np.empty((2, n, batch), drive.dtype)
        buf[0] = x0.T
        run, d, o = _run_batch_part_jit, drive, out
    rest = (parts, flags, bounds, csr.indptr, csr.indices, csr.data, d, buf, o, leak, gain,
            shift, plain, full_leak)
    errors: list[BaseException] = []

    def work(part: int) -> None:
        try:
            run(part, *rest)
        except BaseException as err:  # re-raised below, after the other threads stop
            flags[parts * _spin.LINE] = 1  # release the others' waits
            errors.append(err)

    threads = [threading.Thread(target=work, args=(p,), daemon=True) for p in range(1, parts)]
    started = []
    try:
        for th in threads:
            th.start()
            started.append(th)
    except BaseException:
        # the started threads would wait for the missing ones for ever
        flags[parts * _spin.LINE] = 1
        for th in started:
            th.join()
        raise
    work(0)
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


def recur_numba(
    csr: CSRArrays,
    drive: torch.Tensor,
    state: torch.Tensor,
    out: torch.Tensor | None = None,
    leak: torch.Tensor | None = None,
    gain: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    *,
    parallel: bool | None = None,
) -> torch.Tensor:
    """The ESN time loop by the numba kernel (see the module docstring for the equation).

    Args:
        csr: W as :func:`csr_arrays` (its dtype must be the drive's).
        drive: ``(batch, time, N)`` float32/float64 CPU tensor, ``W_in u(t) + bias (+ ...)``.
        state: x(-1), ``(batch, N)``.
        out: where to write the states ``(batch, time, N)`` (may be ``drive`` itself); a new
            tensor if ``None``.
        leak, gain, shift: per-unit ``a``, ``g``, ``s`` (N,); default 1, 1, 0.
        parallel: split the rows across the :func:`kernel_threads` threads (serial when that
            is 1); ``None``: when it is above 1 and the step is large enough
            (``PARALLEL_MIN_WORK``).

    Returns ``out``. No autograd graph is recorded.
    """
    if numba is None:
        raise ImportError("the numba kernels need the numba package (pip install numba); "
                          "use the torch loop (kernel='torch') instead")
    check_tensor("drive", drive, ndim=3, finite=False, layout="(batch, time, units)")
    if drive.device.type != "cpu":
        raise ValueError(f"the numba kernel runs on CPU tensors; drive is on {drive.device} "
                         f"(use kernel='torch')")
    if drive.dtype not in NUMBA_DTYPES:
        raise TypeError(f"the numba kernel takes float32 or float64, got {drive.dtype}")
    batch, n = drive.shape[0], drive.shape[2]
    if csr.indptr.shape[0] != n + 1:
        raise ValueError(f"W has {csr.indptr.shape[0] - 1} rows, the drive {n} units")
    np_dtype = np.float32 if drive.dtype == torch.float32 else np.float64
    if csr.data.dtype != np_dtype:
        raise TypeError(f"W is {csr.data.dtype}, the drive {drive.dtype}")
    check_tensor("state", state, ndim=2, last_dim=n, dtype=drive.dtype, device=drive.device,
                 finite=False, layout="(batch, units)")
    if state.shape[0] != batch:
        raise ValueError(f"state has batch size {state.shape[0]}, the drive {batch}")
    ones = torch.ones(n, dtype=drive.dtype)
    a = _vector(ones if leak is None else leak, n, drive.dtype, "leak")
    g = _vector(ones if gain is None else gain, n, drive.dtype, "gain")
    s = _vector(torch.zeros(n, dtype=drive.dtype) if shift is None else shift, n, drive.dtype,
                "shift")
    full_leak = bool((a == 1).all())
    plain = bool((g == 1).all() and (s == 0).all())

    if out is None:
        out = torch.empty_like(drive, memory_format=torch.contiguous_format)
    elif out.shape != drive.shape or out.dtype != drive.dtype or out.device != drive.device:
        raise ValueError(f"out must be a {drive.dtype} CPU tensor of shape {tuple(drive.shape)}")
    d = drive.detach()
    d = d if d.is_contiguous() else d.contiguous()
    target = out.detach()
    direct = target.is_contiguous()
    work = target if direct else torch.empty_like(d)
    dn, on = d.numpy(), work.numpy()
    x0 = np.ascontiguousarray(state.detach().numpy())

    if parallel is None:
        parallel = (kernel_threads() > 1 and csr.nnz * batch >= PARALLEL_MIN_WORK
                    and not getattr(_LOCAL, "serial", False))
    args = (csr.indptr, csr.indices, csr.data)
    if parallel and kernel_threads() > 1:
        _run_parallel(csr, dn, x0, on, a, g, s, plain, full_leak, kernel_threads())
    elif batch == 1:
        _run_one_jit(*args, dn[0], x0[0], on[0], a, g, s, plain, full_leak)
    else:
        _run_batch_jit(*args, dn, x0, on, a, g, s, plain, full_leak)
    if not direct:
        out.copy_(work)
    return out


# ------------------------------------------------------------------------------------------------
# The thread pools of the streaming fit
@contextlib.contextmanager
def single_threaded_pools(active: bool) -> Iterator[None]:
    """torch's and numpy's own thread pools (OpenMP, BLAS) on one thread while ``active``.

    The parallel fit shares the cores out itself (kernel rows, one syrk per thread); a pool
    on top would oversubscribe them, and the idle workers of OpenMP and OpenBLAS spin for a
    while after each call (measured: the input projection of every chunk, a small torch
    matmul on 2 threads, left a spinning worker that slowed the 2-thread state loop from 30
    to 47 us per step).
    """
    if not active:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with rnnlab[fast]
            yield
            return
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(previous)


def one_thread_worker() -> None:
    """Initializer of the fit's pool threads: torch's and the BLAS libraries' pools on one
    thread in this thread too.

    OpenMP keeps the thread count per thread in some runtimes (Intel's, LLVM's), so a thread
    the pool starts may not see the caller's one-thread setting and would split its Gram
    update over the machine's cores: a sum in another order, and one that depends on the
    machine. Set it here, in the worker itself.
    """
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with rnnlab[fast]
        return
    # not restored: the thread lives only as long as the fit's pool
    threadpool_limits(limits=1)


def fit_pool(threads: int) -> ThreadPoolExecutor | None:
    """The ``threads - 1`` helper threads of a fit on ``threads`` cores (None for one), each
    with one-thread BLAS and OpenMP pools."""
    if threads <= 1:
        return None
    return ThreadPoolExecutor(max_workers=threads - 1, initializer=one_thread_worker)

