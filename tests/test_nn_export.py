"""torch.jit.trace and torch.export.export of rnnlab.nn layers with torch's options.

Reference: the eager layer itself, on inputs of another batch size and length than the traced
ones (a trace that froze a shape or skipped a branch would differ or fail). Tolerance 1e-6 in
float32: the traced graph runs the same kernel on the same data (observed bit-equal), the
tolerance only allows for a different kernel choice in a graph runtime.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import rnnlab.nn as rnn

LAYERS = [
    (rnn.LSTM, {}), (rnn.LSTM, {"proj_size": 2}), (rnn.GRU, {}), (rnn.RNN, {}),
    (rnn.RNN, {"nonlinearity": "relu"}),
]
IDS = ["LSTM", "LSTM-proj", "GRU", "RNN", "RNN-relu"]


def _layer(cls, kw):
    return cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, **kw,
               generator=torch.Generator().manual_seed(0)).eval()


def _close(a, b):
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    else:
        for u, v in zip(a, b, strict=True):
            _close(u, v)


@pytest.mark.parametrize(("cls", "kw"), LAYERS, ids=IDS)
def test_jit_trace(cls, kw):
    layer = _layer(cls, kw)
    g = torch.Generator().manual_seed(1)
    with warnings.catch_warnings():
        # torch.jit.trace itself is deprecated in favour of torch.export; a TracerWarning
        # (a Python value frozen into the trace) must not come from the layer
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(layer, (torch.randn(2, 5, 3, generator=g),))
    x = torch.randn(4, 7, 3, generator=g)
    _close(traced(x), layer(x))


@pytest.mark.parametrize(("cls", "kw"), LAYERS, ids=IDS)
def test_torch_export(cls, kw):
    layer = _layer(cls, kw)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 3, generator=g)
    exported = torch.export.export(layer, (x,))
    _close(exported.module()(x), layer(x))
    x2 = torch.randn(2, 5, 3, generator=g)
    _close(exported.module()(x2), layer(x2))


def test_export_with_a_dynamic_batch():
    # a dynamic batch, as torch.nn.LSTM's export allows (torch's own export of nn.LSTM
    # specializes the time dimension: the kernel's decomposition unrolls the steps)
    layer = _layer(rnn.LSTM, {})
    g = torch.Generator().manual_seed(3)
    batch = torch.export.Dim("batch", min=2, max=64)
    exported = torch.export.export(layer, (torch.randn(3, 5, 3, generator=g),),
                                   dynamic_shapes=({0: batch},))
    x = torch.randn(6, 5, 3, generator=g)
    _close(exported.module()(x), layer(x))


@pytest.mark.slow  # Inductor's compile takes ~1 min per layer on 2 shared cores
@pytest.mark.parametrize(("cls", "kw"), [(rnn.LSTM, {}), (rnn.GRU, {"form": "cho"})],
                         ids=["LSTM", "GRU-cho"])
def test_torch_compile_fullgraph(cls, kw):
    # torch.compile cannot lower torch's fused RNN kernels (it refuses nn.LSTM outright); the
    # layer then traces the cells' step loop, which must give the kernel's result (float32:
    # another summation order, 1e-6)
    layer = cls(3, 4, batch_first=True, **kw, generator=torch.Generator().manual_seed(4)).eval()
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(5))
    _close(compiled(x), layer(x))
