"""rnnlab.seq2seq models: attention, masks, padding invariance, the loss, checkpoint averaging,
bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnlab.seq2seq import (
    PointerNetwork,
    Seq2Seq,
    average_checkpoints,
    reverse_within_lengths,
    scheduled_sampling_probability,
    sequence_loss,
)

CONFIGS = [
    dict(context="attention", attention="bahdanau"),
    dict(context="attention", attention="dot", input_feeding=True),
    dict(context="attention", attention="general", input_feeding=False),
    dict(context="last_state"),
    dict(context="initial_state", reverse_source=True),
]
CELLS = ["lstm", "gru"]


def _model(cfg: dict, cell: str = "lstm", **kw) -> Seq2Seq:
    opts = dict(embed_size=6, hidden_size=8, num_layers=2, bidirectional=True, seed=3)
    opts.update(kw)
    return Seq2Seq(9, 7, cell=cell, **cfg, **opts).double().eval()


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src_len = torch.tensor([5, 2, 1, 4])
    tgt_len = torch.tensor([3, 4, 1, 2])
    src = torch.randint(3, 9, (4, 5), generator=g)
    src[torch.arange(5)[None] >= src_len[:, None]] = 0
    tgt = torch.randint(3, 7, (4, 4), generator=g)
    tgt[torch.arange(4)[None] >= tgt_len[:, None]] = 0
    return src, src_len, tgt, tgt_len


def _pad(x: torch.Tensor, extra: int, value: int = 0) -> torch.Tensor:
    return torch.cat([x, torch.full((x.shape[0], extra), value, dtype=x.dtype)], dim=1)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_padding_never_changes_a_result(cfg, cell):
    # float64: the packed encoder and causal decoder see identical numbers, so the only
    # difference allowed is BLAS blocking on other shapes (~1e-15 relative); 1e-10 is far above.
    m = _model(cfg, cell)
    src, sl, tgt, tl = _batch()
    out = m(src, sl, tgt)
    more = m(_pad(src, 3, 0), sl, _pad(tgt, 2, 0))
    T = tgt.shape[1]
    valid = torch.arange(T)[None] < tl[:, None]
    torch.testing.assert_close(more.logits[:, :T][valid], out.logits[valid], atol=1e-10, rtol=0)
    if out.attention is not None:
        torch.testing.assert_close(more.attention[:, :T, :5], out.attention, atol=1e-10, rtol=0)
        assert torch.all(more.attention[:, :, 5:] == 0)
    # padding with a real token id (not pad_id) beyond the lengths is ignored as well
    junk = src.clone()
    junk[torch.arange(5)[None] >= sl[:, None]] = 5
    torch.testing.assert_close(m(junk, sl, tgt).logits, out.logits, atol=1e-10, rtol=0)
    # each sentence alone gives the same result as in the batch
    for b in range(4):
        s = int(sl[b])
        one = m(src[b:b + 1, :s], sl[b:b + 1], tgt[b:b + 1])
        torch.testing.assert_close(one.logits[0, :int(tl[b])], out.logits[b, :int(tl[b])],
                                   atol=1e-10, rtol=0)


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c["context"] == "attention"])
def test_attention_sums_to_one_and_is_zero_on_padding(cfg):
    m = _model(cfg)
    src, sl, tgt, _ = _batch(1)
    att = m(src, sl, tgt).attention
    assert att.shape == (4, 4, 5)
    torch.testing.assert_close(att.sum(-1), torch.ones(4, 4, dtype=att.dtype), atol=1e-12,
                               rtol=0)
    pad = torch.arange(5)[None, None] >= sl[:, None, None]
    assert torch.all(att.masked_select(pad.expand_as(att)) == 0)
    assert torch.all(att.masked_select(~pad.expand_as(att)) > 0)


@pytest.mark.parametrize("cfg", [CONFIGS[2], CONFIGS[3], CONFIGS[4]])
def test_parallel_path_equals_step_by_step(cfg):
    # two code paths of the same function: float64, agreement to 1e-12 (rounding only)
    m = _model(cfg)
    src, sl, tgt, _ = _batch(2)
    a = m(src, sl, tgt)
    b = m(src, sl, tgt, step_by_step=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-12, rtol=0)
    if a.attention is not None:
        torch.testing.assert_close(a.attention, b.attention, atol=1e-12, rtol=0)


def test_bahdanau_scores_match_the_equation():
    # e_tj = v^T tanh(W s_{t-1} + U h_j) recomputed by hand from the module's weights
    m = Seq2Seq(9, 7, context="attention", attention="bahdanau", embed_size=5, hidden_size=6,
                seed=1).double().eval()
    src, sl, tgt, _ = _batch(3)
    memory = m.encode(src, sl)
    out, mask, h0 = memory[0], memory[1], m.initial_state(memory)[0]
    att = m(src, sl, tgt).attention
    a = m.attn
    s_prev = h0[:, -1]  # the first step's s_{t-1} is the initial state
    e = torch.stack([torch.tanh(s_prev @ a.W.weight.T + out[:, j] @ a.U.weight.T + a.U.bias)
                     @ a.v.weight[0] for j in range(5)], dim=1)
    e = e.masked_fill(~mask, -math.inf)
    torch.testing.assert_close(att[:, 0], torch.softmax(e, dim=1), atol=1e-12, rtol=0)


def test_luong_general_scores_match_the_equation():
    # score(h_t, h_s) = h_t^T W_a h_s with the current decoder state h_t (no input feeding)
    m = Seq2Seq(9, 7, context="attention", attention="general", input_feeding=False,
                embed_size=5, hidden_size=6, seed=1).double().eval()
    src, sl, tgt, _ = _batch(4)
    memory = m.encode(src, sl)
    out_enc, mask = memory[0], memory[1]
    dec, _ = m.rnn(m.embedding(m.decoder_input(tgt)),
                   tuple(s.transpose(0, 1).contiguous() for s in m.initial_state(memory)[:-1]))
    scores = torch.einsum("bth,kh,bsk->bts", dec, m.attn.W_a.weight.T, out_enc)
    scores = scores.masked_fill(~mask[:, None], -math.inf)
    torch.testing.assert_close(m(src, sl, tgt).attention, torch.softmax(scores, -1),
                               atol=1e-12, rtol=0)


def test_encoder_matches_torch_lstm_run_per_sequence():
    # the packed bidirectional encoder against torch.nn.LSTM on each unpadded sequence alone
    m = _model(CONFIGS[0])
    src, sl, _, _ = _batch(5)
    out, _mask, final = m.encoder(src, sl)
    ref = torch.nn.LSTM(6, 4, 2, batch_first=True, bidirectional=True).double()
    ref.load_state_dict(m.encoder.rnn.state_dict())
    for b in range(4):
        s = int(sl[b])
        o, (h, _c) = ref(m.encoder.embedding(src[b:b + 1, :s]))
        torch.testing.assert_close(out[b, :s], o[0], atol=1e-12, rtol=0)
        assert torch.all(out[b, s:] == 0)
        # final state: layers in order, forward then backward direction concatenated
        torch.testing.assert_close(final[0][b], h[:, 0].reshape(2, 8), atol=1e-12, rtol=0)


def test_reverse_within_lengths():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    assert reverse_within_lengths(x, torch.tensor([3, 2])).tolist() == [[3, 2, 1, 0],
                                                                          [5, 4, 0, 0]]
    # reversal of the source = the reversed-source model fed reversed ids
    a = _model(dict(context="initial_state", reverse_source=True))
    b = _model(dict(context="initial_state"))
    b.load_state_dict(a.state_dict())
    src, sl, tgt, _ = _batch(6)
    torch.testing.assert_close(a(src, sl, tgt).logits,
                               b(reverse_within_lengths(src, sl), sl, tgt).logits,
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_sequence_loss_matches_torch_cross_entropy(eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 7, (3, 5), generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.3
    ref = F.cross_entropy(logits[mask], targets[mask], label_smoothing=eps)
    torch.testing.assert_close(sequence_loss(logits, targets, mask, label_smoothing=eps), ref,
                               atol=1e-12, rtol=0)
    ref_sum = F.cross_entropy(logits[mask], targets[mask], label_smoothing=eps, reduction="sum")
    torch.testing.assert_close(sequence_loss(logits, targets, mask, label_smoothing=eps,
                                             reduction="sum"), ref_sum, atol=1e-12, rtol=0)


def test_sequence_loss_smooths_over_finite_classes_only():
    # a pointer row with -inf positions: smoothing spreads over the 3 possible positions, and
    # a masked all-(-inf) row does not make the loss NaN
    logits = torch.tensor([[[0.0, 1.0, 2.0, -math.inf], [-math.inf] * 4]], dtype=torch.float64,
                          requires_grad=True)
    targets = torch.tensor([[2, 0]])
    mask = torch.tensor([[True, False]])
    loss = sequence_loss(logits, targets, mask, label_smoothing=0.2)
    logp = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), 0)
    expected = 0.8 * -logp[2] - 0.2 * logp.mean()
    torch.testing.assert_close(loss.detach(), expected, atol=1e-12, rtol=0)
    loss.backward()
    assert torch.isfinite(logits.grad[0, 0, :3]).all()


def test_scheduled_sampling():
    assert scheduled_sampling_probability(0, "linear", k=1.0, c=0.1) == 1.0
    assert scheduled_sampling_probability(20, "linear", k=1.0, c=0.1, eps=0.05) == 0.05
    assert scheduled_sampling_probability(3, "exponential", k=0.5) == 0.125
    assert scheduled_sampling_probability(0, "inverse_sigmoid", k=10.0) == pytest.approx(10 / 11)
    m = _model(CONFIGS[0])
    src, sl, tgt, _ = _batch(7)
    full = m(src, sl, tgt).logits
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    assert torch.equal(m(src, sl, tgt, teacher_forcing=1.0, generator=g()).logits, full)
    a = m(src, sl, tgt, teacher_forcing=0.0, generator=g()).logits
    b = m(src, sl, tgt, teacher_forcing=0.0, generator=g()).logits
    assert torch.equal(a, b)  # seeded
    torch.testing.assert_close(a[:, 0], full[:, 0])  # the first input is always bos
    assert not torch.allclose(a[:, 1:], full[:, 1:])


def test_average_checkpoints(tmp_path):
    a = _model(CONFIGS[0])
    b = _model(CONFIGS[0], seed=9)
    torch.save(a.state_dict(), tmp_path / "a.pt")
    torch.save({"format": "rnnlab.train.checkpoint", "model": b.state_dict()}, tmp_path / "b.pt")
    avg = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    sa, sb = a.state_dict(), b.state_dict()
    assert avg.keys() == sa.keys()
    for k in sa:
        torch.testing.assert_close(avg[k], (sa[k] + sb[k]) / 2, atol=1e-15, rtol=0)
    c = _model(CONFIGS[0])
    c.load_state_dict(avg)
    other = _model(CONFIGS[3])
    torch.save(other.state_dict(), tmp_path / "c.pt")
    with pytest.raises(ValueError, match="other keys"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "c.pt"])
    with pytest.raises(ValueError, match="at least one"):
        average_checkpoints([])


def test_bad_input():
    m = _model(CONFIGS[0], max_source_length=5, max_target_length=4)
    src, sl, tgt, _tl = _batch()
    with pytest.raises(ValueError, match="empty"):
        m(src[:, :0], sl, tgt)
    with pytest.raises(ValueError, match="empty sequences"):
        m(src, torch.tensor([5, 2, 0, 4]), tgt)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m(src.masked_fill(src == 3, 9), sl, tgt)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m(src, sl, tgt - 1)
    with pytest.raises(TypeError, match="integer token ids"):
        m(src.double(), sl, tgt)
    with pytest.raises(ValueError, match="max_source_length=5"):
        m(_pad(src, 1, 3), torch.tensor([6, 2, 1, 4]), tgt)
    with pytest.raises(ValueError, match="max_target_length=4"):
        m(src, sl, _pad(tgt, 1))
    with pytest.raises(ValueError, match="only 5 steps"):
        m(src, torch.tensor([6, 2, 1, 4]), tgt)
    with pytest.raises(ValueError, match="context"):
        Seq2Seq(5, 5, context="nope")
    with pytest.raises(ValueError, match="pad_id"):
        Seq2Seq(5, 5, pad_id=1, bos_id=1)
    with pytest.raises(ValueError, match="even hidden_size"):
        Seq2Seq(5, 5, hidden_size=7, bidirectional=True)
    p = PointerNetwork(2, 8)
    x = torch.rand(2, 4, 2)
    with pytest.raises(ValueError, match="points past the end"):
        p.loss(x, torch.tensor([4, 2]), torch.tensor([[0, 1, 2, 3], [0, 3, 0, 0]]),
               torch.tensor([4, 2]))
    with pytest.raises(TypeError, match="floating"):
        p(x.long(), torch.tensor([4, 2]), torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    from rnnlab.seq2seq import beam_search, greedy_decode

    m = _model(CONFIGS[0])
    src, sl, tgt, _ = _batch()
    ref = m(src, sl, tgt).logits
    mc = m.cuda()
    out = mc(src.cuda(), sl.cuda(), tgt.cuda()).logits.cpu()
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)  # float64: rounding only
    g = greedy_decode(mc, src.cuda(), sl.cuda(), max_len=5)
    h = beam_search(mc, src.cuda(), sl.cuda(), beam_size=3, max_len=5)
    assert g.tokens.is_cuda and len(h) == 4


def test_trainer_adapter_matches_plain_loop_and_resumes(tmp_path):
    from rnnlab.seq2seq import TrainerAdapter, train_step
    from rnnlab.train import Trainer

    src, sl, tgt, tl = _batch(8)

    def stop_after_two(trainer, event):
        if event == "step" and trainer.position.step == 2:
            raise KeyboardInterrupt  # the trainer checkpoints first (docs/train.md)

    def build(callbacks=()):
        m = Seq2Seq(9, 7, hidden_size=8, embed_size=4, seed=0)
        ad = TrainerAdapter(m, label_smoothing=0.1)
        opt = torch.optim.Adam(ad.parameters(), lr=0.01)
        return m, ad, Trainer(ad, opt, loss=ad.loss, batch_size=4, shuffle=False,
                              progress=False, restore_best=False, callbacks=callbacks,
                              run_dir=tmp_path / "run")

    m, ad, trainer = build([stop_after_two])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(ad.pack(src, sl, tgt, tl), epochs=3)
    ref = Seq2Seq(9, 7, hidden_size=8, embed_size=4, seed=0)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    losses = []
    for _ in range(2):
        losses.append(train_step(ref, ref_opt, (src, sl, tgt, tl), label_smoothing=0.1))
    # the same operations in the same order; 1e-6 is above float32 rounding of two Adam steps
    for a, b in zip(m.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # a fresh trainer resumes from the checkpoint: its third epoch = a third plain step
    m2, ad2, trainer2 = build()
    trainer2.resume().fit(ad2.pack(src, sl, tgt, tl), epochs=3)
    losses.append(train_step(ref, ref_opt, (src, sl, tgt, tl), label_smoothing=0.1))
    assert losses[2] < losses[0]
    for a, b in zip(m2.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_trainer_adapter_packs_a_pointer_network():
    from rnnlab.seq2seq import TrainerAdapter

    p = PointerNetwork(2, 8, seed=0).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 2, generator=g, dtype=torch.float64)
    ln = torch.tensor([5, 3, 4])
    tgt = torch.tensor([[4, 0, 2, 1, 3], [2, 0, 1, 0, 0], [1, 3, 0, 2, 0]])
    tl = torch.tensor([5, 3, 4])
    ad = TrainerAdapter(p)
    packed_x, y, mask = ad.pack(x, ln, tgt, tl)
    assert packed_x.shape == (3, 5, 5) and packed_x.dtype == torch.float64  # D + 3 channels
    out, _ = ad(packed_x)
    # the adapter's loss is the network's own (the same mean per valid target step)
    torch.testing.assert_close(ad.loss(out, y, mask), p.loss(x, ln, tgt, tl), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="floating"):
        ad.pack(x.long(), ln, tgt, tl)
