"""Streaming fit and prediction: a reservoir and a ridge readout over a long sequence, chunk by
chunk.

The reservoir runs over a long sequence (or batch) chunk by chunk, carrying the state (and the
fed-back target) across chunks; each chunk's states go into the ridge normal equations
(:class:`~rnnlab.reservoir.readout.RidgeReadout` statistics ``X^T X``, ``X^T Y``, sums) and
are dropped, so memory is O(chunk x batch x N + N^2) whatever the length. The Gram matrix
``X^T X`` of a chunk is formed by numpy's ``a.T @ a``, which calls the BLAS symmetric rank-k
update (syrk: half the multiply-adds of a general product; torch has no syrk). The Gram must
stay float64: accumulated in float32 it raised the Mackey-Glass test NRMSE by a factor of
about 60, while float32 *states* with a float64 Gram gave the same NRMSE.

With more than one kernel thread (:func:`~rnnlab.reservoir.set_kernel_threads`),
:func:`fit_streaming` uses the cores for both halves of the work: each chunk's states on split
rows, then its ``X^T X`` as one syrk per thread on slices of the samples (numpy's BLAS held to
one thread meanwhile, so that the pools do not oversubscribe the cores); or, with
``overlap=True``, the states of chunk k + 1 on one core while the Gram of chunk k is built on
another. Timings against ReservoirPy are in ``docs/reservoir.md`` and
``benchmarks/bench_reservoirpy.py``.

This module sits above the network (:mod:`rnnlab.reservoir.esn`, duck-typed: its ``states``,
``units``, ``input_size``, ``has_feedback``, ``output_size``, ``W``, ``uses_numba`` and
``uses_cuda_graph``) and the readout (:mod:`rnnlab.reservoir.readout`); neither imports it.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import torch

from rnnlab._validation import check_positive_int, check_tensor, check_washout
from rnnlab.reservoir import _numba, cuda_graphs
from rnnlab.reservoir._numba import kernel_threads
from rnnlab.reservoir.readout import RidgeReadout, accumulate_statistics

__all__ = ["CUDA_CHUNK_BYTES", "DEFAULT_CHUNK_SAMPLES", "OVERLAP_MIN_BATCH", "fit_streaming",
           "predict_streaming"]

# An EchoStateNetwork or anything with its streaming surface (module docstring).
EchoStateNetwork = Any

# Samples (batch x time steps) per chunk in the streaming helpers: large enough for the syrk of
# a chunk to run near full speed, small enough to keep the chunk's states in a few MB per unit.
DEFAULT_CHUNK_SAMPLES = 2048
# On CUDA, larger chunks: each chunk's Gram matrix is one GPU matmul (launches, not arithmetic,
# bound small ones), and GPU memory is larger: about this many bytes of states per chunk
# (16384 steps of one sequence of 1000 float64 units).
CUDA_CHUNK_BYTES = 128 * 2**20
# Batch size from which fit_streaming on more than one thread overlaps the Gram matrix with a
# serial state loop rather than splitting both (see fit_streaming's ``overlap``).
OVERLAP_MIN_BATCH = 8



def _runs_kernel(esn: EchoStateNetwork, batch: int) -> bool:
    """Whether ``esn`` runs ``batch`` sequences through the numba kernel (CPU, float32/64)."""
    uses = getattr(esn, "uses_numba", None)
    return callable(uses) and bool(uses(batch))


def _cuda_chunk(esn: EchoStateNetwork, batch: int) -> int:
    """Time steps per chunk on CUDA: about ``CUDA_CHUNK_BYTES`` of states, a whole number of
    CUDA-graph blocks (so no step of a chunk runs eagerly) and at least the shortest run that
    is replayed, where the ESN replays graphs."""
    per_step = batch * esn.units * esn.W.element_size()
    steps = max(1, CUDA_CHUNK_BYTES // per_step)
    uses = getattr(esn, "uses_cuda_graph", None)
    if callable(uses) and uses(batch, cuda_graphs.GRAPH_MIN_STEPS):
        block = cuda_graphs.GRAPH_STEPS
        steps = max(cuda_graphs.GRAPH_MIN_STEPS, steps // block * block)
    return steps


def _check_streaming(esn: EchoStateNetwork, readout: RidgeReadout, inputs: torch.Tensor,
                     chunk: int | None) -> tuple[int, int, int]:
    if not isinstance(readout, RidgeReadout):
        raise TypeError(f"readout must be a RidgeReadout, got {type(readout).__name__}")
    if not hasattr(esn, "states") or not hasattr(esn, "units"):
        raise TypeError(f"esn must be an EchoStateNetwork, got {type(esn).__name__}")
    check_tensor("inputs", inputs, ndim=3, last_dim=esn.input_size, dtype=esn.W.dtype,
                 device=esn.W.device, layout="(batch, time, features)")
    batch, steps, _ = inputs.shape
    if chunk is None:
        if esn.W.device.type == "cuda":
            chunk = _cuda_chunk(esn, batch)
        else:
            chunk = max(1, DEFAULT_CHUNK_SAMPLES // batch)
    check_positive_int("chunk", chunk)
    if readout.n_features != esn.units:
        raise ValueError(f"the readout takes {readout.n_features} features, the ESN has "
                         f"{esn.units} units")
    return batch, steps, chunk


def _check_targets(name: str, y: torch.Tensor, batch: int, steps: int, width: int,
                   esn: EchoStateNetwork) -> torch.Tensor:
    check_tensor(name, y, ndim=3, last_dim=width, device=esn.W.device,
                 layout="(batch, time, outputs)")
    if tuple(y.shape[:2]) != (batch, steps):
        raise ValueError(f"{name} has batch and time {tuple(y.shape[:2])}, the inputs "
                         f"{(batch, steps)}")
    return y


def fit_streaming(
    esn: EchoStateNetwork,
    readout: RidgeReadout,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk: int | None = None,
    washout: int = 0,
    state0: torch.Tensor | None = None,
    feedback0: torch.Tensor | None = None,
    solve: bool = True,
    overlap: bool | None = None,
) -> torch.Tensor:
    """Fit ``readout`` on the states of ``esn`` driven by ``inputs``, chunk by chunk.

    The reservoir runs over ``chunk`` time steps at a time (default ``DEFAULT_CHUNK_SAMPLES //
    batch``; on CUDA about ``CUDA_CHUNK_BYTES`` of states, in whole CUDA-graph blocks),
    carrying the state across chunks; each chunk's states (after the first ``washout`` steps
    of the sequences) and targets go into the readout's normal equations
    (:meth:`RidgeReadout.partial_fit`, here with the syrk of
    :func:`~rnnlab.reservoir.readout.accumulate_statistics`) and are dropped, so memory is
    O(batch x chunk x N) for the states plus the readout's O(N^2), whatever the length. The
    result equals ``readout.fit(esn(inputs, washout=washout)[0], targets[:, washout:])`` up to
    round-off. With output feedback the targets are the teacher signal, fed back one step late
    (``feedback0`` is y(-1), default 0), as in ``esn(inputs, teacher=targets)``.

    Args:
        esn: the reservoir.
        readout: a :class:`RidgeReadout` with ``n_features = esn.units``; its statistics are
            added to (call ``readout.reset()`` first to start afresh).
        inputs: ``(batch, time, D)``.
        targets: ``(batch, time, O)``, aligned with ``inputs`` step by step.
        chunk: time steps per chunk.
        washout: initial steps of every sequence left out of the regression.
        state0: x(-1), ``(batch, N)`` (default 0).
        feedback0: y(-1) for output feedback, ``(batch, O)``.
        solve: call ``readout.solve()`` at the end.
        overlap: how more than one core is used when :func:`kernel_threads` is above 1 (and
            the statistics live on the CPU). ``False``: each chunk's states are computed with
            the rows split across the kernel threads, then its ``X^T X`` as one syrk per
            thread on slices of the samples. ``True``: the reservoir runs the next chunk on
            one core while the normal equations of the previous chunk are built on another
            (the numba kernel and BLAS both release the GIL); the sums are then those of the
            serial fit, bit for bit. ``None`` (default): ``True`` for batches of at least
            ``OVERLAP_MIN_BATCH`` sequences, whose batched step gains little from split rows
            (it is bound by cache bandwidth; timings in ``docs/reservoir.md``), else ``False``;
            always ``True`` where the ESN runs the torch loop (no split rows).
            In both, numpy's BLAS and torch run one thread per call during the fit
            (``threadpoolctl``, ``torch.set_num_threads``). With one kernel thread: serial.

    Returns:
        The final state x(T-1), ``(batch, N)`` (e.g. to continue into a test sequence).
    """
    batch, steps, chunk = _check_streaming(esn, readout, inputs, chunk)
    _check_targets("targets", targets, batch, steps, readout.n_outputs, esn)
    washout = check_washout(washout, steps)
    if not esn.has_feedback and feedback0 is not None:
        raise ValueError("feedback0 given but this ESN has no output feedback")
    stats = readout.statistics()
    # The states come from checked inputs through tanh: finite, so each chunk skips the scan
    # for NaN that partial_fit would make (10% of the fit time at N = 1000).
    on_cpu = stats["xtx"].device.type == "cpu" and esn.W.device.type == "cpu"
    threads = kernel_threads() if on_cpu else 1
    if overlap is None:
        overlap = batch >= OVERLAP_MIN_BATCH
    if not _runs_kernel(esn, batch):
        # the torch loop (kernel="torch", or a batch where it is the faster one) has no split
        # rows: the second core builds the Gram matrix meanwhile instead
        overlap = True
    overlap = bool(overlap) and threads > 1
    x, y_prev = state0, feedback0
    pool = _numba.fit_pool(threads)
    pending: Future | None = None
    # the chunks' states go into buffers allocated once (two when one is being read by the
    # overlapped Gram while the next is written): a fresh 16 MB tensor per chunk cost its page
    # faults every time
    width = batch * min(chunk, steps) * esn.units
    buffers = [torch.empty(width, dtype=esn.W.dtype, device=esn.W.device)
               for _ in range(2 if overlap else 1)]
    try:
        with torch.no_grad(), _numba.single_threaded_pools(threads > 1), \
                _numba.serial_kernels(overlap):
            for index, start in enumerate(range(0, steps, chunk)):
                stop = min(start + chunk, steps)
                teach = {}
                if esn.has_feedback:
                    teach = {"teacher": targets[:, start:stop], "feedback0": y_prev}
                    y_prev = targets[:, stop - 1]
                buf = buffers[index % len(buffers)][:batch * (stop - start) * esn.units]
                xs = esn.states(inputs[:, start:stop], x, **teach,
                                out=buf.view(batch, stop - start, esn.units))
                x = xs[:, -1].clone()
                first = max(washout - start, 0)
                if first < stop - start:
                    xc, yc = xs[:, first:], targets[:, start + first:stop]
                    if not on_cpu:
                        readout.partial_fit(xc, yc)
                    else:
                        xc = xc.reshape(-1, esn.units)
                        yc = yc.reshape(-1, readout.n_outputs)
                        if not overlap:
                            accumulate_statistics(stats, xc, yc, pool=pool, parts=threads)
                        else:
                            # one chunk in flight: its statistics are added before the next
                            # chunk's, so the sums are the serial ones
                            if pending is not None:
                                pending.result()
                            pending = pool.submit(accumulate_statistics, stats, xc, yc)
                del xs
            if pending is not None:
                pending.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if solve:
        readout.solve()
    return x


def predict_streaming(
    esn: EchoStateNetwork,
    readout: RidgeReadout,
    inputs: torch.Tensor,
    *,
    chunk: int | None = None,
    state0: torch.Tensor | None = None,
    teacher: torch.Tensor | None = None,
    feedback0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The readout's outputs on the states driven by ``inputs``, chunk by chunk.

    Equals ``(readout(esn(inputs, state0, teacher=teacher)[0]), final state)`` without holding
    the states of the whole sequence: memory O(batch x chunk x N) plus the outputs. With output
    feedback, ``teacher`` ``(batch, time, O)`` is the true output sequence fed back one step
    late (teacher forcing, e.g. one-step-ahead prediction); free-running generation is
    :meth:`EchoStateNetwork.generate <rnnlab.reservoir.esn.EchoStateNetwork.generate>`. Each
    chunk's states are cast to the readout's dtype (e.g. float32 states, float64 readout).

    Returns ``(outputs (batch, time, O), final state (batch, N))``.
    """
    batch, steps, chunk = _check_streaming(esn, readout, inputs, chunk)
    if esn.has_feedback:
        if teacher is None:
            raise ValueError("this ESN feeds its output back: pass teacher= (the true outputs, "
                             "teacher forcing) or use esn.generate()")
        _check_targets("teacher", teacher, batch, steps, esn.output_size, esn)
    elif teacher is not None or feedback0 is not None:
        raise ValueError("teacher/feedback0 given but this ESN has no output feedback")
    outputs = []
    x, y_prev = state0, feedback0
    parallel = kernel_threads() > 1 and _runs_kernel(esn, batch)
    with torch.no_grad(), _numba.single_threaded_pools(parallel):
        for start in range(0, steps, chunk):
            stop = min(start + chunk, steps)
            teach = {}
            if esn.has_feedback:
                teach = {"teacher": teacher[:, start:stop], "feedback0": y_prev}
                y_prev = teacher[:, stop - 1]
            xs = esn.states(inputs[:, start:stop], x, **teach)
            x = xs[:, -1].clone()
            outputs.append(readout.predict(xs.to(readout.weight.dtype)))
            del xs
    return torch.cat(outputs, dim=1), x

