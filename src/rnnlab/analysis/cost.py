"""Measured cost: peak memory, wall time per call and growth exponents.

The complexity claims of the course (RTRL: O(N^4) time and O(N^3) memory per step; BPTT: O(N T)
memory) are checked here by measuring, not by counting:

* :func:`peak_memory_bytes` — the peak of the bytes torch allocated while a function ran, above
  the level when it started (CUDA: the caching allocator's statistics; CPU: the allocation and
  free events of ``torch.profiler``, replayed in time order).
* :func:`time_per_call` — the median wall time of a call, with warmup and CUDA synchronization.
* :func:`fit_power_law` — the slope of ``log y`` against ``log x``: the measured exponent.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["fit_power_law", "peak_memory_bytes", "time_per_call"]

DeviceLike = torch.device | str | int | None


def _as_device(device: DeviceLike) -> torch.device:
    """``None`` means the CPU; an int means that CUDA device."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, int):
        return torch.device("cuda", device)
    return torch.device(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(fn: Callable[[], object], device: DeviceLike = None) -> int:
    """The peak extra memory, in bytes, that torch allocates on ``device`` while ``fn()`` runs.

    Args:
        fn: called once, with no arguments. Its result is released at the end of the
            measurement, so a tensor it returns counts at the peak like any other allocation.
        device: where to measure: ``None`` or ``"cpu"`` for host memory, ``"cuda"``/``"cuda:i"``
            (or an int ``i``) for a GPU.

    Returns:
        ``max over the run of (bytes live now - bytes live when fn started)``, at least 0.

    On CUDA this is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
    ``memory_allocated`` before the call (tensor bytes, not the allocator's cached reserve). On
    the CPU torch keeps no peak statistic, so ``fn`` runs under the profiler of
    ``torch.profiler.profile(activities=[CPU], profile_memory=True)`` and the profiler's
    allocation (positive) and free (negative) ``[memory]`` events are replayed in time order.
    Only allocations made through torch's CPU allocator are seen (tensors, not Python objects or
    NumPy arrays). The profiler does not know the size of a block allocated before it started,
    so on the CPU, freeing such a block inside ``fn`` does not lower the level (torch warns
    "Memory block of unknown size..."): if ``fn`` frees pre-existing tensors and reuses the room,
    the CPU figure is an upper bound. The profiler slows ``fn`` down: measure time separately.
    """
    dev = _as_device(device)
    if dev.type == "cuda":
        return _peak_cuda(fn, dev)
    if dev.type != "cpu":
        raise ValueError(f"peak_memory_bytes supports cpu and cuda devices, got {dev}")
    return _peak_cpu(fn)


def _peak_cuda(fn: Callable[[], object], dev: torch.device) -> int:
    torch.cuda.synchronize(dev)
    before = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    result = fn()
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev)
    del result
    return max(0, int(peak - before))


def _peak_cpu(fn: Callable[[], object]) -> int:
    # torch.autograd.profiler.profile is the engine of
    # torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True); used
    # directly it records the same events but skips the wrapper's first-use import of
    # torch._inductor (seconds).
    from torch.autograd import profiler

    with profiler.profile(use_cpu=True, profile_memory=True, use_kineto=True) as prof:
        result = fn()
        del result  # a returned tensor is freed inside the window, after its peak
    deltas = _cpu_memory_events(prof)
    live = peak = 0
    for _, nbytes in deltas:
        live += nbytes
        peak = max(peak, live)
    return int(peak)


def _cpu_memory_events(prof: object) -> list[tuple[int, int]]:
    """``(time_ns, +/-bytes)`` of every CPU allocation/free seen by ``prof``, in time order.

    ``prof``: a finished ``torch.autograd.profiler.profile`` (or ``torch.profiler.profile``).
    """
    from torch.autograd import DeviceType

    inner = getattr(prof, "profiler", prof)  # torch.profiler.profile wraps the autograd one
    results = getattr(inner, "kineto_results", None)
    if results is None:  # pragma: no cover - a torch without the kineto results
        raise RuntimeError("this torch build's profiler does not expose its memory events")
    # The raw profiler events: every allocation and free is its own "[memory]" event carrying
    # its signed size, including those made inside an operator (which prof.events() folds into
    # the operator's cpu_memory_usage).
    events = [
        (int(e.start_ns()), int(e.nbytes()))
        for e in results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    ]
    # A stable sort keeps the recorded order of events with equal time stamps.
    events.sort(key=lambda item: item[0])
    return events


def time_per_call(
    fn: Callable[[], object],
    repeats: int = 5,
    warmup: int = 1,
    device: DeviceLike = None,
    timer: Callable[[], float] = time.perf_counter,
) -> float:
    """The median wall time, in seconds, of ``fn()`` over ``repeats`` timed calls.

    Args:
        fn: called ``warmup + repeats`` times with no arguments.
        repeats: timed calls (>= 1); the median is robust to a few slow ones.
        warmup: untimed calls first (lazy initialization, allocator and cache warmup).
        device: when it is a CUDA device (or ``None`` while CUDA is initialized), the device is
            synchronized before and after every timed call, so queued kernels are counted.
        timer: the clock, :func:`time.perf_counter` (wall time) by default. On a shared CPU,
            :func:`time.process_time` (CPU seconds of this process, all its threads) leaves out
            the time the process waited for a core; it equals wall time for single-threaded
            work on an idle machine but not for CUDA work or several threads.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if device is None:
        sync_dev = (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else torch.device("cpu")
        )
    else:
        sync_dev = _as_device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(sync_dev)
        start = timer()
        fn()
        _synchronize(sync_dev)
        times.append(timer() - start)
    return float(statistics.median(times))


def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``log y = slope * log x + intercept``; returns ``(slope, intercept)``.

    ``slope`` is the growth exponent (``y ~ exp(intercept) * x**slope``); natural logarithms.
    Needs at least two distinct, positive ``xs`` and positive ``ys`` of the same length.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length: {len(xs)} and {len(ys)}")
    if len(xs) < 2:
        raise ValueError(f"need at least 2 points, got {len(xs)}")
    if any(not x > 0 for x in xs) or any(not y > 0 for y in ys):
        raise ValueError("a power law fit needs positive xs and ys")
    lx = [math.log(float(x)) for x in xs]
    ly = [math.log(float(y)) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    if sxx == 0.0:
        raise ValueError("a power law fit needs at least two distinct xs")
    sxy = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    slope = sxy / sxx
    return float(slope), float(my - slope * mx)
