"""Compatibility module: the names that ``rnnlab.reservoir.kernels`` held before the split.

The numba kernels and their thread runtime now live in the private
:mod:`rnnlab.reservoir._numba` (public entry points re-exported by :mod:`rnnlab.reservoir`:
:func:`numba_available`, :func:`kernel_threads`, :func:`set_kernel_threads`), the streaming
fit and prediction in :mod:`rnnlab.reservoir.streaming`. This module re-exports them under
their old names so that existing code keeps running; import from :mod:`rnnlab.reservoir` (or
:mod:`rnnlab.reservoir.streaming`) in new code. :func:`accumulate_normal_equations`, a second
copy of :meth:`RidgeReadout.partial_fit <rnnlab.reservoir.readout.RidgeReadout.partial_fit>`,
is deprecated.
"""

from __future__ import annotations

import warnings

import torch

from rnnlab.reservoir import _numba
from rnnlab.reservoir._numba import (
    _LOCAL,
    _THREADS,
    KERNELS,
    NUMBA_DTYPES,
    PARALLEL_MIN_WORK,
    CSRArrays,
    csr_arrays,
    kernel_threads,
    numba_available,
    numba_is_faster,
    recur_numba,
    set_kernel_threads,
    usable_cores,
)
from rnnlab.reservoir.readout import RidgeReadout
from rnnlab.reservoir.streaming import (
    CUDA_CHUNK_BYTES,
    DEFAULT_CHUNK_SAMPLES,
    OVERLAP_MIN_BATCH,
    _cuda_chunk,
    fit_streaming,
    predict_streaming,
)

# the old private spellings (benchmarks and tests of the earlier layout)
_single_threaded_pools = _numba.single_threaded_pools
_fit_pool = _numba.fit_pool
_one_thread_worker = _numba.one_thread_worker
_row_blocks = _numba._row_blocks
_run_parallel = _numba._run_parallel
if _numba.numba is not None:
    _tanh_jit = _numba._tanh_jit
    _run_one_part_jit = _numba._run_one_part_jit

__all__ = [
    "CUDA_CHUNK_BYTES",
    "DEFAULT_CHUNK_SAMPLES",
    "KERNELS",
    "NUMBA_DTYPES",
    "OVERLAP_MIN_BATCH",
    "PARALLEL_MIN_WORK",
    "_LOCAL",
    "_THREADS",
    "CSRArrays",
    "_cuda_chunk",
    "accumulate_normal_equations",
    "csr_arrays",
    "fit_streaming",
    "kernel_threads",
    "numba_available",
    "numba_is_faster",
    "predict_streaming",
    "recur_numba",
    "set_kernel_threads",
    "usable_cores",
]


def accumulate_normal_equations(
    readout: RidgeReadout, states: torch.Tensor, targets: torch.Tensor
) -> RidgeReadout:
    """Deprecated: ``readout.partial_fit(states, targets)``, which it now calls (it was a
    second copy of it; ``partial_fit`` builds ``X^T X`` by the same BLAS syrk on the CPU)."""
    warnings.warn("accumulate_normal_equations is deprecated: use "
                  "readout.partial_fit(states, targets)", DeprecationWarning, stacklevel=2)
    if not isinstance(readout, RidgeReadout):
        raise TypeError(f"readout must be a RidgeReadout, got {type(readout).__name__}")
    return readout.partial_fit(states, targets)
