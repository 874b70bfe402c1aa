"""rnnlab._native.inference_linear: oneDNN's matmul for inference loops, F.linear otherwise."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import rnnlab._native as native
from rnnlab._native import inference_linear

EPS32 = torch.finfo(torch.float32).eps
HAS_ONEDNN = native._onednn_linear_op() is not None


def _data(n=37, k=129, m=70, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=g, dtype=dtype),
            torch.randn(m, k, generator=g, dtype=dtype), torch.randn(m, generator=g, dtype=dtype))


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of the oneDNN op (native code on, whatever the environment says)."""
    monkeypatch.setenv("RNNLAB_FUSED", "1")
    count = []
    op = native._onednn_linear_op()

    def counted(*args):
        count.append(1)
        return op(*args)

    monkeypatch.setattr(native, "_onednn_linear_op", lambda: None if op is None else counted)
    return count


@pytest.mark.skipif(not HAS_ONEDNN, reason="this torch build has no oneDNN")
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_linear_within_float32_rounding(bias, contiguous, calls):
    x, w, b = _data()
    b = b if bias else None
    if not contiguous:  # the same values, rows 2 apart in memory
        x = torch.stack([x, torch.full_like(x, float("nan"))], dim=1)[:, 0]
        assert not x.is_contiguous()
    with torch.no_grad():
        got = inference_linear(x, w, b)
    assert calls  # oneDNN computed it
    ref = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    # a k-term dot product in float32, any summation order: |error| <= k eps sum_i |x_i w_i|
    # (+ the bias' rounding); 2x for the margin
    size = x.abs().double() @ w.abs().double().T + (0 if b is None else b.abs().double())
    bound = 2 * (x.shape[1] + 1) * EPS32 * size
    assert got.dtype == torch.float32 and got.shape == (37, 70)
    assert bool(((got.double() - ref).abs() <= bound).all())
    # and it is not off by a transpose or a dropped bias (the values are O(10))
    assert (got.double() - ref).abs().max() < 1e-3


@pytest.mark.skipif(not HAS_ONEDNN, reason="this torch build has no oneDNN")
def test_onednn_runs_only_where_it_applies(calls, monkeypatch):
    x, w, b = _data()
    with torch.no_grad():
        inference_linear(x, w, b)
        inference_linear(x, w)
    assert len(calls) == 2
    del calls[:]
    xd, wd, bd = _data(dtype=torch.float64)
    wide = torch.randn(70, 200)
    with torch.no_grad():
        cases = [
            (xd, wd, bd),  # float64: oneDNN has no double matmul
            (x, wide[:, :129], b),  # a strided weight: oneDNN would reorder it on every call
            (x[None], w, b),  # not 2-D
            (x[:0], w, b),  # no rows
            (x[:, :0], w[:, :0], b),  # no inputs (F.linear gives the bias)
            (x, w, b[:1]),  # a bias that broadcasts
            (x, w, b[0]),  # a 0-d bias
        ]
        for args in cases:
            out = inference_linear(*args)
            ref = torch.nn.functional.linear(*args)
            # the same call of F.linear: the same numbers
            torch.testing.assert_close(out, ref, rtol=0, atol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # F.linear gives bfloat16 there
            assert inference_linear(x, w, b).dtype == torch.bfloat16
        with fwAD.dual_level():  # a forward-mode tangent goes through F.linear
            dual = fwAD.make_dual(x, torch.ones_like(x))
            tangent = fwAD.unpack_dual(inference_linear(dual, w, b)).tangent
            torch.testing.assert_close(tangent, torch.ones_like(x) @ w.T, rtol=1e-5, atol=1e-4)
        batched = torch.func.vmap(lambda row: inference_linear(row[None], w, b))(x)
        torch.testing.assert_close(batched[:, 0], torch.nn.functional.linear(x, w, b))
        monkeypatch.setenv("RNNLAB_FUSED", "0")
        inference_linear(x, w, b)
    assert not calls
    # with a gradient to compute: F.linear, whose backward gives the weight's gradient
    w.requires_grad_(True)
    y = inference_linear(x, w, b)
    assert not calls and y.grad_fn is not None
    y.sum().backward()
    torch.testing.assert_close(w.grad, x.sum(0).expand(70, -1), rtol=1e-6, atol=1e-5)


@pytest.mark.skipif(not HAS_ONEDNN, reason="this torch build has no oneDNN")
def test_seq2seq_decoding_uses_it_and_training_does_not(calls):
    from rnnlab.seq2seq import Seq2Seq, beam_search

    m = Seq2Seq(11, 13, embed_size=8, hidden_size=12, seed=0).eval()
    src = torch.randint(3, 11, (3, 5), generator=torch.Generator().manual_seed(1))
    sl = torch.tensor([5, 3, 4])
    tgt = torch.randint(3, 13, (3, 4), generator=torch.Generator().manual_seed(2))
    m(src, sl, tgt).logits.sum().backward()  # training: gradients needed
    assert not calls
    with torch.no_grad():
        fast = m(src, sl, tgt).logits  # the same forward without gradients: oneDNN
    assert calls
    slow = m(src, sl, tgt).logits.detach()
    # float32 logits of O(1) from sums of <= 41 terms: equal up to rounding
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-5)
    hyps = beam_search(m, src, sl, beam_size=2, max_len=6)
    assert len(hyps) == 3


@pytest.mark.skipif(not HAS_ONEDNN, reason="this torch build has no oneDNN")
def test_seq2seq_readout_hooks_see_their_forward(calls):
    from rnnlab.seq2seq import Seq2Seq

    m = Seq2Seq(11, 13, embed_size=8, hidden_size=12, seed=0).eval()
    src, sl = torch.randint(3, 11, (2, 4), generator=torch.Generator().manual_seed(3)), \
        torch.tensor([4, 2])
    tgt = torch.randint(3, 13, (2, 3), generator=torch.Generator().manual_seed(4))
    seen = []
    handle = m.readout.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    with torch.no_grad():
        m(src, sl, tgt)
    assert len(seen) == 3  # one readout per decoder step, through the module and its hook
    before = len(calls)  # the attention's W q still went through oneDNN
    handle.remove()
    del seen[:]
    with torch.no_grad():
        m(src, sl, tgt)
    assert not seen and len(calls) > 2 * before  # now the readout does too
