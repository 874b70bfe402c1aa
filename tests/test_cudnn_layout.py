"""The fused cuDNN path lays a cell's weights out in one buffer once (as nn.LSTM's
flatten_parameters does) instead of letting cuDNN compact them at every call: same results as
the loop implementation, the same Parameter objects, training still updates what cuDNN reads.
Needs a CUDA device (CI has none)."""

from __future__ import annotations

import warnings

import pytest
import torch

from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.models.recurrent import RecurrentLayer

F64 = torch.float64
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CELLS = {
    "elman": lambda: ElmanCell(3, 5, dtype=F64),
    "gru": lambda: GRUCell(3, 5, form="torch", dtype=F64),
    "lstm-np": lambda: LSTMCell(3, 5, variant="NP", dtype=F64),
}


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_fused_weights_laid_out_once_and_trained(kind):
    torch.manual_seed(0)
    cell = CELLS[kind]().cuda()
    fused, loop = RecurrentLayer(cell, impl="fused"), RecurrentLayer(cell, impl="loop")
    params = list(cell.parameters())
    x = torch.randn(2, 7, 3, dtype=F64, device="cuda")
    fused(x)  # the first call lays the weights out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "not part of single contiguous chunk" would raise
        out = fused(x)[0]
    assert [id(p) for p in cell.parameters()] == [id(p) for p in params]
    torch.testing.assert_close(out, loop(x)[0], rtol=1e-10, atol=1e-12)
    # an optimiser step on the re-pointed parameters reaches what cuDNN reads
    opt = torch.optim.SGD(cell.parameters(), lr=0.5)
    fused(x)[0].square().sum().backward()
    grads = [p.grad.clone() for p in cell.parameters()]
    opt.step()
    assert all(g.abs().sum() > 0 for g in grads)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(fused(x)[0], loop(x)[0], rtol=1e-10, atol=1e-12)
    # moved and back: laid out again, still equal
    cell.cpu().cuda()
    torch.testing.assert_close(fused(x)[0], loop(x)[0], rtol=1e-10, atol=1e-12)
