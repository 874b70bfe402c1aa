"""The echo state network's time loop on CUDA, replayed as a CUDA graph.

On a GPU a reservoir step is tiny work (for N = 1000 and one sequence, a matrix-vector product
over 8 MB that sits in the L2 cache, then tanh and the leak over 1000 numbers) and the torch
loop spends most of each step launching its three or four kernels from Python. A CUDA graph
(``torch.cuda.CUDAGraph``) records the kernels of ``GRAPH_STEPS`` consecutive steps once and
replays them with one launch, so the per-step cost becomes the kernels' own time.

The recorded step is the torch loop's step (:func:`dense_step`, shared with the eager loop of
:meth:`EchoStateNetwork.recur <rnnlab.reservoir.esn.EchoStateNetwork.recur>`, so the two cannot
drift apart)::

    x(t) = (1 - a) x(t-1) + a tanh(g (drive(t) + W x(t-1)) + s)

A graph reads and writes fixed addresses: it is recorded on its own buffers (the drive of
``GRAPH_STEPS`` steps, overwritten by the states, and the carried state), and each replay
copies a block of the drive in and the states out. It reads W, the leak, the gain and the shift
from the module's buffers at replay time; it is recorded again when one of them is replaced or
changed in place (their ``data_ptr`` and ``_version`` are part of the cache key), when the
batch size changes, and when the module moves. The steps left over after the last whole block
run in the eager loop. Recording costs about as much as running a few blocks eagerly, so
graphs are used for runs of at least ``GRAPH_MIN_STEPS`` steps.

The graphs are kept per module in a weak dictionary (not as module attributes, so that
``copy.deepcopy`` and pickling of the module are unaffected), one per module, with its memory
pool (the intermediate tensors of ``GRAPH_STEPS`` steps, e.g. 32 MB for 32 sequences of 1000
float64 units).
"""

from __future__ import annotations

import warnings
import weakref
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from rnnlab.reservoir.esn import EchoStateNetwork

# Steps recorded in one graph, and the shortest run that uses graphs.
GRAPH_STEPS = 64
GRAPH_MIN_STEPS = 2 * GRAPH_STEPS


def dense_step(drive_t: torch.Tensor, x: torch.Tensor, w_t: torch.Tensor, gain: torch.Tensor,
               shift: torch.Tensor, leak: torch.Tensor, plain: bool, full_leak: bool,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """One step with a dense W (``w_t`` is W transposed). ``plain``: gain 1 and shift 0;
    ``full_leak``: leak 1. With ``out`` ``(batch, N)`` (a strided view is fine, and so is the
    memory of ``drive_t``, which is read first) the state is written there and ``out`` is
    returned; ``out=None`` builds a new tensor (and records autograd, which ``out=`` cannot)."""
    pre = torch.addmm(drive_t, x, w_t)
    if not plain:
        pre = torch.addcmul(shift, gain, pre)
    if out is None:
        h = torch.tanh(pre)
        return h if full_leak else torch.lerp(x, h, leak)
    if full_leak:
        return torch.tanh(pre, out=out)
    return torch.lerp(x, torch.tanh_(pre), leak, out=out)


class _GraphLoop:
    """``GRAPH_STEPS`` steps of one ESN for one batch size, recorded as a CUDA graph."""

    def __init__(self, esn: EchoStateNetwork, batch: int, plain: bool, full_leak: bool) -> None:
        dev, dt = esn.W.device, esn.W.dtype
        self.steps = GRAPH_STEPS
        self.buf = torch.zeros(batch, self.steps, esn.units, device=dev, dtype=dt)
        self.x = torch.zeros(batch, esn.units, device=dev, dtype=dt)
        self._args = (esn.W.t(), esn.a, esn.b, esn.leak, plain, full_leak)
        # cuBLAS sets up its handle and workspace on first use, which must not happen during
        # recording: run the body once on a side stream first (as torch's documentation asks)
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), torch.no_grad():
            self._body()
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self._body()

    def _body(self) -> None:
        w_t, gain, shift, leak, plain, full_leak = self._args
        x = self.x
        for t in range(self.steps):
            x = dense_step(self.buf[:, t], x, w_t, gain, shift, leak, plain, full_leak,
                           out=self.buf[:, t])
        self.x.copy_(x)

    def run(self, drive: torch.Tensor, state: torch.Tensor, out: torch.Tensor) -> int:
        """Replays over the whole blocks of ``drive``; returns the number of steps done (the
        final state is then ``out[:, done - 1]``)."""
        self.x.copy_(state)
        k, done = self.steps, 0
        while done + k <= drive.shape[1]:
            self.buf.copy_(drive[:, done:done + k])
            self.graph.replay()
            out[:, done:done + k].copy_(self.buf)
            done += k
        return done


_LOOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FAILED: weakref.WeakSet = weakref.WeakSet()


def _key(esn: EchoStateNetwork, batch: int, plain: bool, full_leak: bool) -> tuple:
    tensors = (esn.W, esn.leak, esn.a, esn.b)
    return (batch, plain, full_leak, esn.W.device, esn.W.dtype,
            tuple((t.data_ptr(), t._version) for t in tensors))


def graph_loop(esn: EchoStateNetwork, batch: int, plain: bool, full_leak: bool
               ) -> _GraphLoop | None:
    """The module's recorded loop for this batch size (recorded now if the cached one does not
    fit: another batch size, device or dtype, or buffers replaced or changed in place).

    ``None`` if recording failed (e.g. a CUDA runtime that cannot capture): that is warned
    once per module and the module then runs the eager loop, so a long run does not stop."""
    if esn in _FAILED:
        return None
    key = _key(esn, batch, plain, full_leak)
    cached = _LOOPS.get(esn)
    if cached is not None and cached[0] == key:
        return cached[1]
    _LOOPS.pop(esn, None)  # free the old graph's memory pool before recording a new one
    try:
        loop = _GraphLoop(esn, batch, plain, full_leak)
    except RuntimeError as err:
        _FAILED.add(esn)
        warnings.warn(f"recording the ESN time loop as a CUDA graph failed ({err}); this "
                      f"module runs the eager torch loop from now on", RuntimeWarning,
                      stacklevel=3)
        return None
    _LOOPS[esn] = (key, loop)
    return loop


def recorded_graphs(esn: EchoStateNetwork) -> int:
    """How many graph loops are cached for ``esn`` (0 or 1; for tests)."""
    return int(esn in _LOOPS)
