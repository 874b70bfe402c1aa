"""The echo state network's time loop on CUDA, replayed as a CUDA graph.

On a GPU a reservoir step is tiny work (for N = 1000 and one sequence, a matrix-vector product
over 8 MB that sits in the L2 cache, then tanh and the leak over 1000 numbers) and the torch
loop spends most of each step launching its three or four kernels from Python. A CUDA graph
(``torch.cuda.CUDAGraph``) records the kernels of ``GRAPH_STEPS`` consecutive steps once and
replays them with one launch, so the per-step cost becomes the kernels' own time.

The recorded step is the package's one reservoir step (:func:`rnnlab.reservoir._step.step`,
shared with the eager loop of :meth:`EchoStateNetwork.recur
<rnnlab.reservoir.esn.EchoStateNetwork.recur>` and intrinsic plasticity, so they cannot drift
apart), in its dense ``out=`` form::

    x(t) = (1 - a) x(t-1) + a f(g (drive(t) + W x(t-1)) + s)        f = tanh or sigmoid

A graph reads and writes fixed addresses: it is recorded on its own buffers (the drive of
``GRAPH_STEPS`` steps, overwritten by the states, and the carried state), and each replay
copies a block of the drive in and the states out. It reads W, the leak, the gain and the shift
from the module's buffers at replay time, so values changed in place (intrinsic plasticity's
gains) are seen; it is recorded again when one of them is replaced (their address, shape and
strides are part of the cache key), for another batch size, device or dtype, and when torch's
float32 matmul precision settings change. The steps left over after the last whole block run
in the eager loop. Recording costs about as much as running a few blocks eagerly, so graphs
are used for runs of at least ``GRAPH_MIN_STEPS`` steps, and not under ``torch.autocast``
(whose casts would be frozen into the graph).

The graphs are kept per module in a weak dictionary (not as module attributes, so that
``copy.deepcopy`` and pickling of the module are unaffected), up to ``LOOPS_PER_MODULE`` per
module (e.g. the batch sizes of training and test), each with its memory pool (the
intermediate tensors of ``GRAPH_STEPS`` steps, e.g. 32 MB for 32 sequences of 1000 float64
units). A loop's buffers are its own: a replay on another CUDA stream first waits for the
previous one, and a lock serialises the host side of recording and replay across threads.
"""

from __future__ import annotations

import collections
import threading
import warnings
import weakref
from typing import Any

import torch

from rnnlab.reservoir._step import step as _reservoir_step

# Steps recorded in one graph, and the shortest run that uses graphs.
GRAPH_STEPS = 64
GRAPH_MIN_STEPS = 2 * GRAPH_STEPS


def dense_step(drive_t: torch.Tensor, x: torch.Tensor, w_t: torch.Tensor, gain: torch.Tensor,
               shift: torch.Tensor, leak: torch.Tensor, plain: bool, full_leak: bool,
               out: torch.Tensor | None = None, activation: str = "tanh") -> torch.Tensor:
    """One step with a dense W (``w_t`` is W transposed): :func:`rnnlab.reservoir._step.step`
    (kept under this name for callers of the earlier module)."""
    return _reservoir_step(drive_t, x, w_t, gain, shift, leak, plain, full_leak, out,
                           activation=activation)


class _GraphLoop:
    """``GRAPH_STEPS`` steps of one ESN for one batch size, recorded as a CUDA graph.

    ``esn`` is duck-typed (its buffers ``W``, ``leak``, ``a``, ``b``, its ``units`` and
    ``activation``), so that this backend does not import the network built on it."""

    def __init__(self, esn: Any, batch: int, plain: bool, full_leak: bool) -> None:
        dev, dt = esn.W.device, esn.W.dtype
        self.device = dev
        self.steps = GRAPH_STEPS
        self._last_stream: torch.cuda.Stream | None = None
        self._home_stream = torch.cuda.current_stream(dev)  # where the buffers are allocated
        # on the module's GPU whatever the current device is, as normal tensors even when the
        # first call runs under inference_mode (later calls may not), without autograd
        with torch.cuda.device(dev), torch.inference_mode(False), torch.no_grad():
            self.buf = torch.zeros(batch, self.steps, esn.units, device=dev, dtype=dt)
            self.x = torch.zeros(batch, esn.units, device=dev, dtype=dt)
            self._args = (esn.W.t(), esn.a, esn.b, esn.leak, plain, full_leak,
                          getattr(esn, "activation", "tanh"))
            # cuBLAS sets up its handle and workspace on first use, which must not happen
            # during recording: run the body once on the recording stream first (as torch's
            # documentation asks), then record on that same stream
            side = torch.cuda.Stream(device=dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                self._body()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=side):
                self._body()
            torch.cuda.current_stream(dev).wait_stream(side)

    def _body(self) -> None:
        w_t, gain, shift, leak, plain, full_leak, activation = self._args
        x = self.x
        for t in range(self.steps):
            x = _reservoir_step(self.buf[:, t], x, w_t, gain, shift, leak, plain, full_leak,
                                out=self.buf[:, t], activation=activation)
        self.x.copy_(x)

    def run(self, drive: torch.Tensor, state: torch.Tensor, out: torch.Tensor) -> int:
        """Replays over the whole blocks of ``drive``; returns the number of steps done (the
        final state is then ``out[:, done - 1]``)."""
        with _LOCK, torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            if self._last_stream is not None and self._last_stream != stream:
                # the buffers are this loop's own: a replay queued on another stream must be
                # done with them first
                stream.wait_stream(self._last_stream)
            self._last_stream = stream
            if stream != self._home_stream:
                # freeing the buffers later must wait for this stream's use of them
                self.buf.record_stream(stream)
                self.x.record_stream(stream)
            self.x.copy_(state)
            k, done = self.steps, 0
            while done + k <= drive.shape[1]:
                self.buf.copy_(drive[:, done:done + k])
                self.graph.replay()
                out[:, done:done + k].copy_(self.buf)
                done += k
            return done


# One module's recorded loops, by key (a few batch sizes at once), least recently used first.
_LOOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FAILED: weakref.WeakSet = weakref.WeakSet()
_LOCK = threading.RLock()
LOOPS_PER_MODULE = 4


def _key(esn: Any, batch: int, plain: bool, full_leak: bool) -> tuple:
    # What the recorded kernels depend on: the buffers' addresses and layouts (the graph reads
    # their memory at each replay, so values changed in place need no new recording), the
    # flags that chose the step's operations, and the matmul precision settings that chose
    # cuBLAS's kernel.
    tensors = (esn.W, esn.leak, esn.a, esn.b)
    return (batch, plain, full_leak, getattr(esn, "activation", "tanh"), esn.W.device,
            esn.W.dtype,
            tuple((t.data_ptr(), tuple(t.shape), t.stride()) for t in tensors),
            torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())


def graph_loop(esn: Any, batch: int, plain: bool, full_leak: bool
               ) -> _GraphLoop | None:
    """The module's recorded loop for this batch size (recorded now if none of its cached
    loops fits: another batch size, device, dtype or matmul precision, or buffers replaced).

    ``None`` if recording failed (e.g. a CUDA runtime that cannot capture): that is warned
    once per module and the module then runs the eager loop, so a long run does not stop."""
    with _LOCK:
        if esn in _FAILED:
            return None
        key = _key(esn, batch, plain, full_leak)
        loops = _LOOPS.setdefault(esn, collections.OrderedDict())
        if key in loops:
            loops.move_to_end(key)
            return loops[key]
        while len(loops) >= LOOPS_PER_MODULE:
            loops.popitem(last=False)
        try:
            loop = _GraphLoop(esn, batch, plain, full_leak)
        except RuntimeError as err:
            _FAILED.add(esn)
            warnings.warn(f"recording the ESN time loop as a CUDA graph failed ({err}); this "
                          f"module runs the eager torch loop from now on", RuntimeWarning,
                          stacklevel=3)
            return None
        loops[key] = loop
        return loop


def recorded_graphs(esn: Any) -> int:
    """How many recorded loops are cached for ``esn`` (for tests)."""
    return len(_LOOPS.get(esn, ()))
