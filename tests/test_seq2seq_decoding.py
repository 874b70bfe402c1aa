"""Greedy decoding and batched beam search: width 1 is greedy, beam beats greedy on a model
built for it, exact against brute force on tiny vocabularies, batched equals per-sentence."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnnlab.seq2seq import PointerNetwork, Seq2Seq, beam_search, greedy_decode, length_penalty
from rnnlab.seq2seq.decoding import hypotheses_to_tensor

PAD, BOS, EOS = 0, 1, 2


def _random_model(seed: int, tgt_vocab: int = 5, **kw) -> Seq2Seq:
    opts = dict(context="attention", attention="bahdanau", embed_size=4, hidden_size=6, seed=seed)
    opts.update(kw)
    m = Seq2Seq(7, tgt_vocab, **opts).double().eval()
    with torch.no_grad():  # sharper distributions than the default init, so that paths differ
        m.readout.weight.mul_(6.0)
    return m


def _source(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sl = torch.tensor([4, 2, 3, 1])
    src = torch.randint(3, 7, (4, 4), generator=g)
    src[torch.arange(4)[None] >= sl[:, None]] = PAD
    return src, sl


def _log_prob(model: Seq2Seq, src: torch.Tensor, sl: torch.Tensor, seq: list[int],
              ended: bool) -> float:
    """log P(seq [+ eos] | src) from the teacher-forced forward pass (another code path than the
    decoder's step), with pad and bos excluded from the softmax as the decoders exclude them."""
    tgt = torch.tensor([seq + ([EOS] if ended else [])])
    with torch.no_grad():
        logits = model(src, sl, tgt).logits[0].clone()
    logits[:, [PAD, BOS]] = -math.inf
    logp = torch.log_softmax(logits, -1)
    return float(logp.gather(1, tgt[0, :, None]).sum())


def _brute_force(model, src, sl, max_len, kind="none", alpha=0.6):
    """The best (score, tokens, ended) over every output of length <= max_len: sequences ending
    in eos, and the sequences of max_len tokens without eos (cut at the limit)."""
    usable = [t for t in range(model.tgt_vocab_size) if t not in (PAD, BOS, EOS)]
    best = (-math.inf, None, None)
    for n in range(0, max_len + 1):
        for seq in itertools.product(usable, repeat=n):
            for ended in ((True, False) if n == max_len else (True,)):
                size = n + ended
                if size == 0 or size > max_len:
                    continue
                lp = _log_prob(model, src, sl, list(seq), ended)
                score = lp / float(length_penalty(size, kind, alpha))
                if score > best[0]:
                    best = (score, list(seq), ended)
    return best


def test_length_penalty_formula():
    # Wu et al. 2016, eq. 14: lp(Y) = (5 + |Y|)^alpha / (5 + 1)^alpha
    assert length_penalty(7, "gnmt", 0.6) == pytest.approx((12 ** 0.6) / (6 ** 0.6))
    assert length_penalty(7, "average", 0.6) == 7
    assert length_penalty(7, "none", 0.6) == 1.0
    assert length_penalty(1, "gnmt", 0.9) == pytest.approx(1.0)


@pytest.mark.parametrize("context", ["attention", "last_state", "initial_state"])
def test_beam_width_one_equals_greedy(context):
    m = _random_model(1, tgt_vocab=8, context=context)
    src, sl = _source(1)
    greedy = greedy_decode(m, src, sl, max_len=6)
    hyps = beam_search(m, src, sl, beam_size=1, max_len=6)
    for b in range(4):
        L = int(greedy.lengths[b])
        assert hyps[b][0].tokens.tolist() == greedy.tokens[b, :L].tolist()
        assert hyps[b][0].ended == bool(greedy.ended[b])
        # the two decoders sum the same step log-probabilities (beam in float64)
        assert hyps[b][0].log_prob == pytest.approx(float(greedy.log_prob[b]), abs=1e-12)
    if context == "attention":
        assert greedy.attention.shape[:2] == greedy.tokens.shape
    else:
        assert greedy.attention is None


def _hand_set_model() -> Seq2Seq:
    """Cho's context model whose output depends only on the previous token: every weight 0
    except an identity embedding and the readout's block on E y_{t-1}, so P(y_t | y_{t-1}) is a
    hand-written bigram table. Greedy takes 'a' (0.6) then at best 0.34; the best output is
    'b' eos (0.4 * 0.9 = 0.36)."""
    m = Seq2Seq(5, 5, context="last_state", embed_size=5, hidden_size=3, seed=0).double().eval()
    a, b = 3, 4
    table = torch.full((5, 5), 1e-9, dtype=torch.float64)  # table[prev, next]
    table[BOS, a], table[BOS, b] = 0.6, 0.4
    table[a, EOS], table[a, a], table[a, b] = 0.34, 0.33, 0.33
    table[b, EOS], table[b, a], table[b, b] = 0.9, 0.05, 0.05
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.embedding.weight.copy_(torch.eye(5, dtype=torch.float64))
        m.readout.weight[:, 3:8] = table.log().T  # readout input is [s (3); E y (5); c (3)]
    return m


def test_beam_beats_greedy_on_a_model_built_for_it():
    m = _hand_set_model()
    src, sl = torch.tensor([[3, 4]]), torch.tensor([2])
    greedy = greedy_decode(m, src, sl, max_len=3)
    assert greedy.tokens[0].tolist() == [3] and bool(greedy.ended[0])
    assert float(greedy.log_prob[0]) == pytest.approx(math.log(0.6 * 0.34), abs=1e-6)
    hyp = beam_search(m, src, sl, beam_size=2, max_len=3)[0][0]
    assert hyp.tokens.tolist() == [4] and hyp.ended
    assert hyp.log_prob == pytest.approx(math.log(0.4 * 0.9), abs=1e-6)
    assert hyp.log_prob > float(greedy.log_prob[0])
    score, seq, ended = _brute_force(m, src, sl, 3)
    assert (seq, ended) == ([4], True) and score == pytest.approx(hyp.log_prob, abs=1e-12)


@pytest.mark.parametrize("kind", ["none", "gnmt", "average"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_is_exact_against_brute_force(seed, kind):
    # 3 usable tokens (eos, 3, 4), outputs up to 3 tokens, width 5: every prefix stays alive,
    # so the search is exhaustive and must return the brute-force best (float64: 1e-9)
    m = _random_model(seed)
    src, sl = _source(seed)
    hyps = beam_search(m, src, sl, beam_size=5, max_len=3, length_penalty=kind, alpha=0.8)
    greedy = greedy_decode(m, src, sl, max_len=3)
    for b in range(4):
        s = int(sl[b])
        score, seq, ended = _brute_force(m, src[b:b + 1, :s], sl[b:b + 1], 3, kind, 0.8)
        h = hyps[b][0]
        assert h.score == pytest.approx(score, abs=1e-9)
        assert (h.tokens.tolist(), h.ended) == (seq, ended)
        if kind == "none":
            assert h.log_prob >= float(greedy.log_prob[b]) - 1e-9


@pytest.mark.parametrize("context", ["attention", "last_state"])
def test_batched_beam_equals_per_sentence_beam(context):
    m = _random_model(4, tgt_vocab=9, context=context, attention="dot", input_feeding=True)
    src, sl = _source(4)
    hyps = beam_search(m, src, sl, beam_size=3, max_len=7, n_best=3, length_penalty="gnmt")
    for b in range(4):
        s = int(sl[b])
        alone = beam_search(m, src[b:b + 1, :s], sl[b:b + 1], beam_size=3, max_len=7, n_best=3,
                            length_penalty="gnmt")[0]
        assert [h.tokens.tolist() for h in hyps[b]] == [h.tokens.tolist() for h in alone]
        for h, a in zip(hyps[b], alone, strict=True):
            assert h.score == pytest.approx(a.score, abs=1e-10)
            if context == "attention":
                torch.testing.assert_close(h.attention[:, :s], a.attention, atol=1e-10, rtol=0)
                assert torch.all(h.attention[:, s:] == 0)
            else:
                assert h.attention is None
    # n-best: sorted, distinct, and each score is its log-probability over the penalty
    for b in range(4):
        scores = [h.score for h in hyps[b]]
        assert scores == sorted(scores, reverse=True)
        for h in hyps[b]:
            size = len(h.tokens) + h.ended
            assert h.score == pytest.approx(h.log_prob / length_penalty(size, "gnmt", 0.6))
            s = int(sl[b])
            ref = _log_prob(m, src[b:b + 1, :s], sl[b:b + 1], h.tokens.tolist(), h.ended)
            assert h.log_prob == pytest.approx(ref, abs=1e-9)
    best = hypotheses_to_tensor(hyps, PAD)
    assert best.shape[0] == 4


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize(("attention", "seed"), [("bahdanau", 3), ("bahdanau", 4),
                                                  ("dot", 4), ("dot", 5)])
def test_finished_sentences_leave_the_batch(attention, seed, native, monkeypatch):
    """A sentence that is done (its n-best finished, no alive hypothesis can beat them) stops
    costing rows: later steps run on the others only (shared and repeated memories), and every
    sentence's hypotheses are those of a search of that sentence alone."""
    monkeypatch.setenv("RNNLAB_FUSED", native)  # the C++ bookkeeping and the torch one
    m = _random_model(seed, tgt_vocab=9, attention=attention)
    src, sl = _source(seed)
    rows, step = [], m.step

    def spy(prev, state, memory, **kw):
        rows.append(prev.shape[0])
        return step(prev, state, memory, **kw)

    monkeypatch.setattr(m, "step", spy)
    opts = dict(beam_size=3, max_len=10, n_best=2, length_penalty="gnmt")
    hyps = beam_search(m, src, sl, **opts)
    # these seeds have sentences that end early: the batch shrinks below 4 x 3 rows
    assert rows[1] == 12 and min(rows[1:]) < 12, rows
    for b in range(4):
        s = int(sl[b])
        alone = beam_search(m, src[b:b + 1, :s], sl[b:b + 1], **opts)[0]
        assert [h.tokens.tolist() for h in hyps[b]] == [h.tokens.tolist() for h in alone]
        for h, a in zip(hyps[b], alone, strict=True):
            # float64, each row's sums in the same order: equal up to a few roundings
            assert h.score == pytest.approx(a.score, abs=1e-10)
            assert h.log_prob == pytest.approx(a.log_prob, abs=1e-10)
            torch.testing.assert_close(h.attention[:, :s], a.attention, atol=1e-10, rtol=0)


@pytest.mark.parametrize("n_best", [1, 2])
def test_pointer_sentences_leave_the_batch_from_the_first_step(n_best, monkeypatch):
    """A pointer network has no eos: a 1-element input is done after its first step, so the
    batch shrinks right after the step with one row per sentence; each result equals the
    search of that input alone."""
    p = PointerNetwork(2, 8, seed=1).double().eval()
    x = torch.rand(4, 4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ln = torch.tensor([1, 4, 2, 1])
    rows, step = [], p.step

    def spy(prev, state, memory, **kw):
        rows.append(prev.shape[0])
        return step(prev, state, memory, **kw)

    monkeypatch.setattr(p, "step", spy)
    hyps = beam_search(p, x, ln, beam_size=2, n_best=n_best)
    assert rows[:2] == [4, 4]  # after step 1 the two 1-element inputs are gone: 2 x 2 rows
    for b in range(4):
        n = int(ln[b])
        # one element: one hypothesis, and a beam of 1 (2 would be wider than its 1 output)
        k = min(2, n)
        alone = beam_search(p, x[b:b + 1, :n], ln[b:b + 1], beam_size=k,
                            n_best=min(n_best, k))[0]
        assert [h.tokens.tolist() for h in hyps[b]] == [h.tokens.tolist() for h in alone]
        for h, a in zip(hyps[b], alone, strict=True):
            assert h.score == pytest.approx(a.score, abs=1e-10)
            torch.testing.assert_close(h.attention[:, :n], a.attention, atol=1e-10, rtol=0)


def test_pointer_decoding_is_a_permutation_and_beam_exact():
    p = PointerNetwork(2, 8, seed=0).double().eval()
    with torch.no_grad():
        p.v.weight.mul_(5.0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, 2, generator=g, dtype=torch.float64)
    ln = torch.tensor([4, 2, 3])
    greedy = greedy_decode(p, x, ln)
    hyps = beam_search(p, x, ln, beam_size=4, n_best=2)
    for b in range(3):
        n = int(ln[b])
        assert sorted(greedy.tokens[b, :n].tolist()) == list(range(n))
        assert sorted(hyps[b][0].tokens.tolist()) == list(range(n))
        # brute force over all permutations with the teacher-forced forward pass
        best = -math.inf
        for perm in itertools.permutations(range(n)):
            t = torch.tensor([perm])
            with torch.no_grad():
                logp = torch.log_softmax(p(x[b:b + 1, :n], ln[b:b + 1], t).logits[0], -1)
            best = max(best, float(logp.gather(1, t[0, :, None]).sum()))
        assert hyps[b][0].log_prob == pytest.approx(best, abs=1e-9)
        assert hyps[b][0].log_prob >= float(greedy.log_prob[b]) - 1e-9
    # without masking of chosen positions, an explicit max_len
    q = PointerNetwork(2, 8, seed=0, mask_chosen=False).double().eval()
    out = greedy_decode(q, x, ln, max_len=5)
    assert out.tokens.shape == (3, 5)
    assert int(out.tokens[1].max()) < 2  # never points at padding


def test_decoding_bad_input():
    m = _random_model(0)
    src, sl = _source()
    with pytest.raises(ValueError, match="wider than the output vocabulary"):
        beam_search(m, src, sl, beam_size=6)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(m, src, sl, beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(m, src, sl, length_penalty="wu")
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(m, src, sl, max_len=10_000)
    with pytest.raises(ValueError, match="empty"):
        greedy_decode(m, src[:0], sl[:0])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        beam_search(m, src + 7, sl)
    p = PointerNetwork(2, 8)
    with pytest.raises(ValueError, match="wider"):
        beam_search(p, torch.rand(1, 3, 2), torch.tensor([3]), beam_size=4)


def test_beam_search_host_transfers_do_not_grow_with_steps(monkeypatch):
    # the bookkeeping stays on the device: values move to the host a fixed number of times per
    # call, and only the end check (one int: how many sentences are done) runs per step
    m = _random_model(0, tgt_vocab=12)
    src, sl = _source(0)
    counts: dict[str, int] = {}
    for name in ("item", "tolist", "__int__", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _name=name, _original=original, **k):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def run(max_len):
        counts.clear()
        with torch.no_grad():  # a search that ends only at max_len: no eos is ever produced
            m.readout.bias[EOS] = -1e9
            hyps = beam_search(m, src, sl, beam_size=3, max_len=max_len, n_best=2)
        assert all(len(h[0].tokens) == max_len for h in hyps)
        return dict(counts)

    short, long = run(3), run(12)
    assert short.get("__int__", 0) + 9 == long.get("__int__", 0)  # one per step
    for name in ("item", "tolist", "__bool__", "__float__"):
        assert short.get(name, 0) == long.get(name, 0), (name, short, long)


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bahdanau_beams_share_the_source_memory(native, dtype, monkeypatch):
    """Beam search keeps one copy of a Bahdanau model's memory per sentence (row n of K rows
    per sentence reads sentence n // K): the same hypotheses as with the memory repeated K
    times, with the C++ kernels and with the torch path."""
    monkeypatch.setenv("RNNLAB_FUSED", native)
    m = _random_model(6, tgt_vocab=9).to(dtype)
    src, sl = _source(6)
    assert m.beams_share_memory()
    rows_read, step = [], m.step

    def spy(prev, state, memory, **kw):
        rows_read.append(memory[0].shape[0])
        return step(prev, state, memory, **kw)

    monkeypatch.setattr(m, "step", spy)
    shared = beam_search(m, src, sl, beam_size=3, max_len=7, n_best=2, length_penalty="gnmt")
    assert set(rows_read) == {src.shape[0]}  # one memory row per sentence at every step
    rows_read.clear()
    monkeypatch.setattr(m, "beams_share_memory", lambda: False)  # every part repeated K times
    repeated = beam_search(m, src, sl, beam_size=3, max_len=7, n_best=2, length_penalty="gnmt")
    assert max(rows_read) == 3 * src.shape[0]
    # the same sums in the same order per row: equal up to a few roundings of the scores
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b in zip(shared, repeated, strict=True):
        assert [h.tokens.tolist() for h in a] == [h.tokens.tolist() for h in b]
        for x, y in zip(a, b, strict=True):
            assert x.score == pytest.approx(y.score, abs=tol)
            torch.testing.assert_close(x.attention, y.attention, atol=tol, rtol=0)
    # a Luong model's step reads one memory row per decoder row: beam search repeats it
    assert not _random_model(6, tgt_vocab=9, attention="dot").beams_share_memory()
