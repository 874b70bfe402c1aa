"""A fused cell's weights are laid out in one cuDNN buffer when the cell is built on, moved to or
copied on the GPU (as nn.LSTM's flatten_parameters does) instead of cuDNN compacting them at
every call: same results as the loop implementation, the same Parameter objects, training still
updates what cuDNN reads, storage re-pointed by others and substituted tensors are left alone.
Needs a CUDA device (CI has none).

Tolerances: cuDNN and the loop sum in other orders. Per step each gate's pre-activation sums
k = 3 + 5 + 2 terms of size <= ~3 (default init, |h| <= 1), so the two differ by at most
2 gamma_10 x 3 ~ 7e-15 (tests.reference.gamma); the default-initialised recurrences contract,
so over 7 steps the outputs differ by < 7 x that ~ 5e-14 and gradients by a few times more:
1e-12 absolute (1e-11 for gradients), with 1e-10 relative for the larger values."""

from __future__ import annotations

import copy
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
    with warnings.catch_warnings():  # laid out by .cuda()
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
    # moved and back, and deep-copied: laid out again, still equal
    cell.cpu().cuda()
    twin = copy.deepcopy(cell)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(fused(x)[0], loop(x)[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(RecurrentLayer(twin, impl="fused")(x)[0], loop(x)[0],
                                   rtol=1e-10, atol=1e-12)


def test_storage_re_pointed_by_others_is_left_alone():
    # as a sharded optimiser's bucket views do: the next fused calls must not move the weights
    # back into a cuDNN buffer (cuDNN compacts per call instead, which is correct)
    cell = CELLS["lstm-np"]().cuda()
    fused, loop = RecurrentLayer(cell, impl="fused"), RecurrentLayer(cell, impl="loop")
    x = torch.randn(2, 7, 3, dtype=F64, device="cuda")
    fused(x)
    params = list(cell.parameters())
    bucket = torch.cat([p.detach().reshape(-1) for p in params])
    offset = 0
    for p in params:
        p.data = bucket[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cuDNN's per-call compaction warning, expected here
        got = fused(x)[0]
    ptr, end = bucket.data_ptr(), bucket.data_ptr() + bucket.numel() * bucket.element_size()
    assert all(ptr <= p.data_ptr() < end for p in cell.parameters())
    torch.testing.assert_close(got, loop(x)[0], rtol=1e-10, atol=1e-12)


def _gru_case():
    cell = CELLS["gru"]().cuda()
    layer = RecurrentLayer(cell, impl="fused")
    x = torch.randn(2, 7, 3, dtype=F64, device="cuda")
    layer.zero_grad()
    RecurrentLayer(cell, impl="loop")(x)[0].square().sum().backward()
    return layer, x


def test_functional_call_with_substituted_tensors():
    layer, x = _gru_case()
    params = {k: torch.nn.Parameter(v.detach().clone()) for k, v in layer.named_parameters()}
    before = [v.data_ptr() for v in params.values()]
    loss = torch.func.functional_call(layer, params, (x,))[0].square().sum()
    grads = torch.autograd.grad(loss, list(params.values()))
    for (_, p), g in zip(layer.named_parameters(), grads, strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-9, atol=1e-11)
    # the substitutes (Parameters, but not the cell's own) were used where they are, not
    # re-pointed into a cuDNN buffer
    assert [v.data_ptr() for v in params.values()] == before


def test_built_on_the_gpu_is_laid_out():
    cell = LSTMCell(3, 5, variant="NP", dtype=F64, device="cuda")
    x = torch.randn(2, 7, 3, dtype=F64, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = RecurrentLayer(cell, impl="fused")(x)[0]
    torch.testing.assert_close(got, RecurrentLayer(cell, impl="loop")(x)[0], rtol=1e-10,
                               atol=1e-12)
