"""The C++ decoding kernels of rnnlab.seq2seq (``rnnlab.seq2seq._kernels``, issue 14 part 7)
against independent references and against the torch path they replace.

Tolerances, from the computations:

* energies ``e = v^T tanh(q + k)``: each ``tanh`` is off by a few units of roundoff ``u`` of 1
  (torch's ``exp`` within 20 ulp in float32, then ``1 - 2 / (e + 1)``: absolute, since tanh is
  bounded by 1), and the ``A``-term float sum adds at most ``A u sum|v_a|``; so
  ``|error| <= (A + 32) u sum|v|`` against a float64 evaluation (``u = 2^-24`` or ``2^-53``);
* attention: a softmax moves by at most twice the largest energy error (relative), the context
  by that times ``max|values|`` plus an ``S``-term sum's rounding;
* beam candidates: both paths form the same correctly rounded float64 sum of the same two
  operands (a float64 running score and a log-probability), so their values are equal exactly,
  which is what the tests check;
* whole searches: tokens identical; log-probabilities of float64 models within 1e-9 (the only
  difference is the energies' ~1e-15), of float32 models within ``64 u`` per step times the
  output length (a logit moves by ~u per step; 64 is margin over the measured 2e-7).

The tests need the compiler (g++) and skip when the kernels cannot be built here.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from rnnlab.seq2seq import PointerNetwork, Seq2Seq, beam_search
from rnnlab.seq2seq._common import additive_energy, masked_softmax
from rnnlab.seq2seq._kernels import NATIVE, inference_ops
from rnnlab.seq2seq.decoding import _beam_step_torch, beam_step, top_candidates

F32, F64 = torch.float32, torch.float64
U = {F32: 2.0 ** -24, F64: 2.0 ** -53}


@pytest.fixture(scope="module")
def ops():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        built = NATIVE.ops()
    if built is None:
        pytest.skip("the seq2seq C++ kernels are not available here (no compiler or "
                    "RNNLAB_FUSED=0)")
    return built


def _inputs(dtype, N=7, S=9, A=37, D=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(N, A, generator=g, dtype=dtype)
    k = 1.5 * torch.randn(N, S, A, generator=g, dtype=dtype)
    v = torch.randn(A, generator=g, dtype=dtype) / math.sqrt(A)
    lengths = torch.randint(1, S + 1, (N,), generator=g)
    lengths[0] = S
    mask = torch.arange(S)[None] < lengths[:, None]
    values = torch.randn(N, S, D, generator=g, dtype=dtype)
    return q, k, v, mask, values


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("A", [1, 16, 37, 128])  # below, at and beyond the vector widths
def test_energy_against_float64_tanh(ops, dtype, A):
    q, k, v, _, _ = _inputs(dtype, A=A)
    k[0, 0, 0] = 60.0  # saturation both ways: exp overflows / underflows
    k[0, 1, 0] = -60.0
    ref = torch.tanh(q[:, None].double() + k.double()) @ v.double()
    got = ops.additive_energy(q, k, v)
    assert got.dtype == dtype and got.shape == ref.shape
    tol = (A + 32) * U[dtype] * float(v.abs().sum())
    assert float((got.double() - ref).abs().max()) <= tol
    # the torch path of additive_energy (2 v^T sigmoid(2z) - sum v) agrees to the same order
    lin = torch.nn.Linear(A, 1, bias=False).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(v[None])
    with torch.enable_grad():  # a gradient needed: the torch expression
        lin.weight.requires_grad_(True)
        py = additive_energy(q[:, None], k, lin).detach()
    assert float((py.double() - ref).abs().max()) <= 2 * tol
    with torch.no_grad():  # no gradient: the same kernel call as `got`, repeated
        assert torch.equal(additive_energy(q[:, None], k, lin), got)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_attention_step_against_reference(ops, dtype):
    q, k, v, mask, values = _inputs(dtype)
    attn, ctx = ops.additive_attention(q, k, v, mask, values)
    e = torch.tanh(q[:, None].double() + k.double()) @ v.double()
    ref_a = torch.softmax(e.masked_fill(~mask, -math.inf), -1)
    ref_c = torch.bmm(ref_a[:, None], values.double())[:, 0]
    tol_e = (k.shape[2] + 32) * U[dtype] * float(v.abs().sum())
    tol_a = 2 * tol_e + 8 * U[dtype]
    assert bool((attn[~mask] == 0).all())  # exactly zero on padding
    assert float((attn.double() - ref_a).abs().max()) <= tol_a
    assert float((attn.double().sum(-1) - 1).abs().max()) <= k.shape[1] * U[dtype] * 4
    scale = float(values.abs().max())
    assert float((ctx.double() - ref_c).abs().max()) <= (k.shape[1] * tol_a
                                                         + 8 * k.shape[1] * U[dtype]) * scale


def test_attention_padding_changes_nothing_and_empty_rows_are_nan(ops):
    q, k, v, mask, values = _inputs(F32)
    a1, c1 = ops.additive_attention(q, k, v, mask, values)
    # four more padded positions holding garbage: the valid ones run the same operations in
    # the same order (same code path), so the results are the same numbers
    pad = lambda x, fill: torch.cat([x, torch.full((x.shape[0], 4, *x.shape[2:]), fill,  # noqa: E731
                                                   dtype=x.dtype)], 1)
    a2, c2 = ops.additive_attention(q, pad(k, 7.0), v, pad(mask, False), pad(values, 1e6))
    assert torch.equal(a2[:, :9], a1) and bool((a2[:, 9:] == 0).all())
    assert torch.equal(c2, c1)
    mask[2] = False  # no valid position: NaN, as torch.softmax over all -inf
    a3, c3 = ops.additive_attention(q, k, v, mask, values)
    assert bool(a3[2].isnan().all()) and bool(c3[2].isnan().all())
    assert torch.equal(a3[3], a1[3])


@pytest.mark.parametrize("dtype", [F32, F64])
def test_attention_rows_sharing_a_source(ops, dtype):
    # N = 3 M rows, row n reading source n // 3, equals the same rows with the sources copied
    # (the same operations per row: the same numbers)
    q, k, v, mask, values = _inputs(dtype, N=12)
    k, mask, values = k[:4], mask[:4], values[:4]
    rows = torch.arange(12) // 3
    a1, c1 = ops.additive_attention(q, k, v, mask, values)
    a2, c2 = ops.additive_attention(q, k[rows], v, mask[rows], values[rows])
    assert torch.equal(a1, a2) and torch.equal(c1, c2)
    with pytest.raises(RuntimeError, match="share"):
        ops.additive_attention(q[:10], k, v, mask, values)


def test_attend_method_native_equals_torch(ops, monkeypatch):
    m = Seq2Seq(11, 13, embed_size=5, hidden_size=12, seed=3).eval()
    q, k, _, mask, values = _inputs(F32, A=12, D=12)
    with torch.no_grad():
        a_n, c_n = m.attn.attend(q[:, :12], k, mask, values)
        monkeypatch.setenv("RNNLAB_FUSED", "0")
        assert inference_ops(q) is None
        a_t, c_t = m.attn.attend(q[:, :12], k, mask, values)
        ref = masked_softmax(m.attn.scores(q[:, :12], k), mask)
        g_t = m.attn.attend(q[:, :12], k[:1], mask[:1], values[:1])  # one shared source
        monkeypatch.delenv("RNNLAB_FUSED")
        g_n = m.attn.attend(q[:, :12], k[:1], mask[:1], values[:1])
    assert torch.equal(a_t, ref)
    # energies within (A + 32) u sum|v| (module docstring): ~1e-5 here; softmax and context
    # move by at most a few times that
    for (an, cn), (at, ct) in (((a_n, c_n), (a_t, c_t)), (g_n, g_t)):
        torch.testing.assert_close(an, at, atol=1e-5, rtol=0)
        torch.testing.assert_close(cn, ct, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="evenly"):
        m.attn.attend(q[:, :12], k[:2], mask[:2], values[:2])


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("B,Kt,V,n", [(6, 1, 50, 4), (5, 3, 40, 6), (4, 5, 1000, 10),
                                      (3, 2, 3, 6), (2, 4, 7, 28)])
def test_beam_topk_equals_torch_topk(ops, dtype, B, Kt, V, n):
    g = torch.Generator().manual_seed(B * 100 + V)
    logp = torch.log_softmax(3 * torch.randn(B * Kt, V, generator=g, dtype=dtype), -1)
    logp[:, : min(2, V - 1)] = -math.inf  # pad and bos excluded
    scores = -20 * torch.rand(B, Kt, generator=g, dtype=F64)
    if Kt > 1:
        scores[0, 1] = -math.inf  # a dead beam
    top, idx = ops.beam_topk(logp, scores, n)
    cand = (scores[:, :, None] + logp.view(B, Kt, V)).view(B, Kt * V)
    ref_top, ref_idx = cand.topk(n, dim=1)
    assert torch.equal(top, ref_top)  # the same float64 sums (module docstring)
    finite = torch.isfinite(ref_top)  # ties among -inf: any order
    assert torch.equal(idx[finite], ref_idx[finite])
    assert bool((cand.gather(1, idx) == top).all())  # every index holds its value


def test_beam_topk_ties_go_to_the_smaller_index(ops):
    logp = torch.full((2 * 3, 8), -2.0)
    logp[:, 5] = -1.0
    scores = torch.zeros(2, 3, dtype=F64)
    top, idx = ops.beam_topk(logp, scores, 4)
    assert top.tolist() == [[-1.0] * 3 + [-2.0]] * 2
    assert idx.tolist() == [[5, 13, 21, 0]] * 2


def _step_inputs(seed, B=6, K=4, V=30, first=False, eos=2):
    g = torch.Generator().manual_seed(seed)
    Kt = 1 if first else K
    logp = torch.log_softmax(2 * torch.randn(B * Kt, V, generator=g), -1)
    logp[:, :2] = -math.inf
    logp[::3, eos] = -0.01  # eos often among the best: finished hypotheses
    scores = -5 * torch.rand(B, Kt, generator=g, dtype=F64)
    if not first:
        scores[1, 2] = -math.inf
        scores[4] = -math.inf  # a done sentence
    limits = torch.tensor([3, 9, 9, 2, 9, 9][:B])
    kept = torch.full((B, 2), -math.inf, dtype=F64)
    kept[0, 0] = -1.5
    done = torch.zeros(B, dtype=torch.bool)
    done[4] = True
    lp_max = torch.linspace(1.0, 2.0, B, dtype=F64)
    return logp, scores, K, limits, kept, lp_max, done


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t", [0, 1, 2])
@pytest.mark.parametrize("eos", [2, None])
def test_beam_step_kernel_equals_torch_bookkeeping(ops, seed, t, eos):
    logp, scores, K, limits, kept, lp_max, done = _step_inputs(seed, first=t == 0)
    lp = 1.0 + 0.25 * t
    args = (logp, scores, K, limits, t, eos, lp, kept, lp_max, done)
    native = beam_step(*args)
    ref = _beam_step_torch(*args)
    assert len(native) == len(ref) == 11
    names = ("fin_score", "fin_top", "fin_beam", "fin_tok", "kept", "scores", "parent", "token",
             "flat", "done", "all_done")
    for name, a, b in zip(names, native, ref, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if a.dtype.is_floating_point:  # the same float64 operations (see the docstring)
            same = (a == b) | (torch.isinf(a) & torch.isinf(b) & (a.sign() == b.sign()))
            assert bool(same.all()), name
        elif name in ("parent", "token", "flat"):  # dead beams (-inf) may point anywhere
            alive = torch.isfinite(ref[5]).reshape(a.shape) if name == "flat" \
                else torch.isfinite(ref[5])
            assert torch.equal(a[alive], b[alive]), name
        else:
            assert torch.equal(a, b), name


def _searches(model, src, sl, monkeypatch, **kw):
    with torch.no_grad():
        assert inference_ops(next(model.parameters()).detach()) is not None
        native = beam_search(model, src, sl, **kw)
        monkeypatch.setenv("RNNLAB_FUSED", "0")
        plain = beam_search(model, src, sl, **kw)
        monkeypatch.delenv("RNNLAB_FUSED")
    return native, plain


def _compare(native, plain, tol_per_step):
    assert len(native) == len(plain)
    for hn, hp in zip(native, plain, strict=True):
        assert len(hn) == len(hp)
        for a, b in zip(hn, hp, strict=True):
            tol = tol_per_step * (max(len(a.tokens), len(b.tokens)) + 1)
            if a.tokens.tolist() != b.tokens.tolist():
                # the two paths round differently: a near-tie may go either way, and then
                # both answers must score the same within the rounding bound
                assert abs(a.score - b.score) <= tol
                continue
            assert a.ended == b.ended
            assert abs(a.log_prob - b.log_prob) <= tol and abs(a.score - b.score) <= tol
            if a.attention is not None:
                assert float((a.attention - b.attention).abs().max()) <= 1e-5


def _source(seed, B=5, S=7, vocab=20):
    g = torch.Generator().manual_seed(seed)
    sl = torch.randint(1, S + 1, (B,), generator=g)
    src = torch.randint(3, vocab, (B, S), generator=g)
    src[torch.arange(S)[None] >= sl[:, None]] = 0
    return src, sl


@pytest.mark.parametrize("opts,dtype,kw", [
    (dict(attention="bahdanau"), F64, dict(beam_size=3)),
    (dict(attention="bahdanau", bidirectional=True), F64,
     dict(beam_size=4, n_best=3, length_penalty="gnmt", alpha=0.8)),
    (dict(attention="bahdanau", readout="maxout"), F64,
     dict(beam_size=2, length_penalty="average")),
    (dict(attention="general"), F64, dict(beam_size=5, n_best=2)),
    (dict(context="last_state"), F64, dict(beam_size=3, length_penalty="gnmt")),
    (dict(attention="bahdanau", bidirectional=True), F32, dict(beam_size=5, n_best=2)),
])
def test_beam_search_native_equals_torch_path(ops, monkeypatch, opts, dtype, kw):
    m = Seq2Seq(20, 15, embed_size=6, hidden_size=8, seed=1, max_target_length=9, **opts)
    m = m.to(dtype).eval()
    with torch.no_grad():  # sharper distributions: eos and ties between paths happen
        m.readout.weight.mul_(4.0)
    src, sl = _source(1)
    native, plain = _searches(m, src, sl, monkeypatch, **kw)
    _compare(native, plain, 1e-9 if dtype == F64 else 64 * U[F32])


@pytest.mark.parametrize("dtype", [F32, F64])
def test_pointer_beam_search_native_equals_torch_path(ops, monkeypatch, dtype):
    p = PointerNetwork(2, 10, seed=0).to(dtype).eval()
    with torch.no_grad():
        p.v.weight.mul_(4.0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 6, 2, generator=g, dtype=dtype)
    ln = torch.tensor([6, 3, 5, 1])
    native, plain = _searches(p, x, ln, monkeypatch, beam_size=4, n_best=2)
    _compare(native, plain, 1e-9 if dtype == F64 else 64 * U[F32])


@pytest.mark.parametrize("native", ["1", "0"])
def test_nan_totals_rank_last_on_both_paths(native, monkeypatch):
    """A NaN log-probability (a broken model) never displaces a finite extension: the C++
    kernel and the torch expression both rank NaN totals last."""
    monkeypatch.setenv("RNNLAB_FUSED", native)
    g = torch.Generator().manual_seed(3)
    logp = torch.log_softmax(torch.randn(2 * 3, 7, generator=g), dim=-1)
    logp[1, :4] = math.nan  # sentence 0, beam 1: four NaN extensions
    scores = torch.tensor([[0.0, -0.5, -1.0], [-0.2, -math.inf, -0.3]], dtype=torch.float64)
    with torch.no_grad():
        top, idx = top_candidates(logp, scores, 6)
    want = (scores[:, :, None] + logp.view(2, 3, 7)).view(2, 21)
    for b in range(2):
        finite = want[b][~want[b].isnan()].sort(descending=True).values[:6]
        torch.testing.assert_close(top[b], finite, rtol=0, atol=1e-12)
        assert not top[b].isnan().any()
        assert torch.equal(want[b][idx[b]].isnan(), torch.zeros(6, dtype=torch.bool))
