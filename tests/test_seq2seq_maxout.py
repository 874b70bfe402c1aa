"""The deep output with a maxout layer of Bahdanau et al. (2015, App. A.2.2) and of Cho et al.
(2014, Sec. 4.1 and App. A; ``context="last_state"``): shapes, a hand computation of every
logit, the gradient against finite differences, decoding."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.seq2seq import Seq2Seq, beam_search, greedy_decode, maxout

PAD, BOS, EOS = 0, 1, 2


def _model(cell: str = "gru", **kw) -> Seq2Seq:
    opts = dict(embed_size=4, hidden_size=6, bidirectional=True, cell=cell, seed=1,
                readout="maxout", maxout_size=3)
    opts.update(kw)
    return Seq2Seq(9, 7, **opts).double().eval()


def _batch():
    g = torch.Generator().manual_seed(0)
    sl = torch.tensor([5, 2, 4])
    src = torch.randint(3, 9, (3, 5), generator=g)
    src[torch.arange(5)[None] >= sl[:, None]] = PAD
    tgt = torch.randint(3, 7, (3, 4), generator=g)
    return src, sl, tgt


def test_maxout_takes_the_larger_of_each_pair():
    pre = torch.tensor([[1.0, -2.0, 0.5, 3.0, -1.0, -0.25]], dtype=torch.float64)
    # t_j = max(t~_{2j-1}, t~_{2j}) (1-based pairs)
    assert maxout(pre, 3).tolist() == [[1.0, 3.0, -0.25]]
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    ref = torch.stack([torch.maximum(x[..., 2 * j], x[..., 2 * j + 1]) for j in range(4)], -1)
    assert torch.equal(maxout(x, 4), ref)


def test_maxout_readout_shapes():
    m = _model(maxout_size=5)
    src, sl, tgt = _batch()
    out = m(src, sl, tgt)
    assert out.logits.shape == (3, 4, 7) and out.attention.shape == (3, 4, 5)
    # [U_o V_o C_o] read [s_{t-1}; E y_{t-1}; c_t] (6 + 4 + 6) into 2l = 10; W_o: l = 5 -> 7
    assert m.deep_output.weight.shape == (10, 16) and m.readout.weight.shape == (7, 5)
    assert _model(maxout_size=None).maxout_size == 3  # default l = hidden_size // 2


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_maxout_readout_against_hand_computation(cell):
    m = _model(cell)
    src, sl, tgt = _batch()
    with torch.no_grad():
        logits = m(src, sl, tgt).logits
        memory = m.encode(src, sl)
        out_enc, final = memory[0], m.initial_state(memory)[:-1]
        # the decoder recurrence with torch's own cell (copied weights), the readout by hand
        Cell = torch.nn.GRUCell if cell == "gru" else torch.nn.LSTMCell
        rnn = Cell(4 + 6, 6).double()
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(rnn, name).copy_(getattr(m.rnn, name + "_l0"))
        state = tuple(f[:, -1] for f in final)
        W, U, v = m.attn.W.weight, m.attn.U, m.attn.v.weight[0]
        prev = torch.full((3,), BOS)
        M, b_m = m.deep_output.weight, m.deep_output.bias
        W_o, b_o = m.readout.weight, m.readout.bias
        for t in range(tgt.shape[1]):
            s_prev = state[0]
            e = m.embedding.weight[prev]
            for b in range(3):
                n = int(sl[b])
                energy = torch.stack([v @ torch.tanh(W @ s_prev[b] + U(out_enc[b, j]))
                                      for j in range(n)])
                alpha = torch.softmax(energy, 0)
                c = sum(alpha[j] * out_enc[b, j] for j in range(n))
                pre = M @ torch.cat([s_prev[b], e[b], c]) + b_m
                t_max = torch.stack([max(pre[2 * j], pre[2 * j + 1]) for j in range(3)])
                ref = W_o @ t_max + b_o
                torch.testing.assert_close(logits[b, t], ref, atol=1e-12, rtol=0)
                if b == 0:
                    ctx = [c]
                else:
                    ctx.append(c)
            x = torch.cat([e, torch.stack(ctx)], -1)
            state = (rnn(x, state[0]),) if cell == "gru" else rnn(x, state)
            prev = tgt[:, t]


def _gradcheck(m: Seq2Seq, names: tuple[str, ...]) -> bool:
    """``gradcheck`` of the teacher-forced log-probabilities in the parameters ``names``:
    float64 central differences (torch's eps 1e-6) against the analytic gradient; its
    tolerances (atol 1e-5, rtol 1e-3) are far above the O(eps^2) truncation error, and no two
    maxout inputs are closer than eps here, so the max is differentiable at this point."""
    src, sl, tgt = _batch()
    params = {k: v.detach().clone().requires_grad_(True)
              for k, v in m.named_parameters() if k in names}
    assert set(params) == set(names)

    def f(*tensors):
        out = torch.func.functional_call(m, dict(zip(names, tensors, strict=True)),
                                         (src, sl, tgt))
        return torch.log_softmax(out.logits, -1)

    return torch.autograd.gradcheck(f, tuple(params[k] for k in names))


def test_maxout_readout_gradient_against_finite_differences():
    assert _gradcheck(_model(), ("deep_output.weight", "readout.weight", "attn.v.weight",
                                 "embedding.weight"))


def _cho(cell: str = "gru", **kw) -> Seq2Seq:
    opts = dict(context="last_state", embed_size=4, hidden_size=6, cell=cell, seed=1,
                readout="maxout", maxout_size=3)
    opts.update(kw)
    return Seq2Seq(9, 7, **opts).double().eval()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cho_maxout_readout_against_hand_computation(cell):
    m = _cho(cell)
    src, sl, tgt = _batch()
    # [O_h O_y O_c] reads [h_t; E y_{t-1}; c] (6 + 4 + 6) into 2l = 6; G: l = 3 -> 7
    assert m.deep_output.weight.shape == (6, 16) and m.readout.weight.shape == (7, 3)
    with torch.no_grad():
        logits = m(src, sl, tgt).logits
        stepped = m(src, sl, tgt, step_by_step=True).logits
        out_enc = m.encode(src, sl)[0]
        # c: the (unidirectional, one-layer) encoder's output at each source's own last step
        c = torch.stack([out_enc[b, int(sl[b]) - 1] for b in range(3)])
        h = torch.tanh(c @ m.bridge.weight.T + m.bridge.bias)  # h_0 = tanh(V c)
        Cell = torch.nn.GRUCell if cell == "gru" else torch.nn.LSTMCell
        rnn = Cell(4 + 6, 6).double()
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(rnn, name).copy_(getattr(m.rnn, name + "_l0"))
        state = (h,) if cell == "gru" else (h, torch.zeros_like(h))
        prev = torch.full((3,), BOS)
        O_all, b_o = m.deep_output.weight, m.deep_output.bias
        G, b_g = m.readout.weight, m.readout.bias
        for t in range(tgt.shape[1]):
            e = m.embedding.weight[prev]
            x = torch.cat([e, c], -1)  # c fed at every step
            state = (rnn(x, state[0]),) if cell == "gru" else rnn(x, state)
            for b in range(3):
                pre = O_all @ torch.cat([state[0][b], e[b], c[b]]) + b_o  # reads h_t, current
                s_max = torch.stack([max(pre[2 * j], pre[2 * j + 1]) for j in range(3)])
                ref = G @ s_max + b_g
                # float64, ~40 multiply-adds per output of O(1) terms: rounding ~1e-15
                torch.testing.assert_close(logits[b, t], ref, atol=1e-12, rtol=0)
                torch.testing.assert_close(stepped[b, t], ref, atol=1e-12, rtol=0)
            prev = tgt[:, t]


def test_cho_maxout_gradient_against_finite_differences():
    assert _gradcheck(_cho(), ("deep_output.weight", "deep_output.bias", "readout.weight",
                               "bridge.weight", "embedding.weight"))


def test_cho_maxout_parameter_count():
    lin = Seq2Seq(9, 7, context="last_state", embed_size=4, hidden_size=6, cell="gru")
    mo = _cho(maxout_size=5)
    # the linear readout (16 + 1) * 7 becomes (16 + 1) * 10 + (5 + 1) * 7
    diff = sum(p.numel() for p in mo.parameters()) - sum(p.numel() for p in lin.parameters())
    assert diff == 17 * 10 + 6 * 7 - 17 * 7


@pytest.mark.parametrize("build", [_model, _cho], ids=["bahdanau", "cho"])
def test_maxout_model_decodes(build):
    m = build()
    src, sl, _ = _batch()
    greedy = greedy_decode(m, src, sl, max_len=6)
    hyps = beam_search(m, src, sl, beam_size=1, max_len=6)
    for b in range(3):
        n = int(greedy.lengths[b])
        assert hyps[b][0].tokens.tolist() == greedy.tokens[b, :n].tolist()
        assert hyps[b][0].log_prob == pytest.approx(float(greedy.log_prob[b]), abs=1e-12)
    wide = beam_search(m, src, sl, beam_size=4, max_len=6)
    for b in range(3):
        assert wide[b][0].log_prob >= float(greedy.log_prob[b]) - 1e-12
        assert math.isfinite(wide[b][0].score)


def test_maxout_bad_input():
    with pytest.raises(ValueError, match="attention='bahdanau'"):
        Seq2Seq(9, 7, attention="dot", readout="maxout")
    with pytest.raises(ValueError, match="initial_state' has no c"):
        Seq2Seq(9, 7, context="initial_state", readout="maxout")
    with pytest.raises(ValueError, match="Luong"):
        Seq2Seq(9, 7, attention="general", readout="maxout")
    assert Seq2Seq(9, 7, context="last_state", readout="maxout").maxout_size == 32
    with pytest.raises(ValueError, match="readout"):
        Seq2Seq(9, 7, readout="softmax")
    with pytest.raises(ValueError, match="maxout_size"):
        Seq2Seq(9, 7, readout="maxout", maxout_size=0)
