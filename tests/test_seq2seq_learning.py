"""Small models learn: token reversal with attention (exact match on trained lengths), sorting
with a pointer network; the training step works with a plain loop."""

from __future__ import annotations

import pytest
import torch

from rnnlab.seq2seq import PointerNetwork, Seq2Seq, beam_search, greedy_decode, train_step

EOS = 2


def _reversal(g: torch.Generator, n: int, low: int = 3, high: int = 8):
    """Sources of ids 3..9 (vocabulary 10 with pad 0, bos 1, eos 2), lengths low..high; the
    target is the source reversed, then eos."""
    lengths = torch.randint(low, high + 1, (n,), generator=g)
    src = torch.randint(3, 10, (n, high), generator=g)
    src[torch.arange(high)[None] >= lengths[:, None]] = 0
    tgt = torch.zeros(n, high + 1, dtype=torch.long)
    for i, n_i in enumerate(lengths.tolist()):
        tgt[i, :n_i] = src[i, :n_i].flip(0)
        tgt[i, n_i] = EOS
    return src, lengths, tgt, lengths + 1


def _exact_match(model, src, lengths, tgt) -> float:
    d = greedy_decode(model, src, lengths, max_len=src.shape[1] + 2)
    ok = [bool(d.ended[i]) and int(d.lengths[i]) == int(n)
          and torch.equal(d.tokens[i, :n], tgt[i, :n]) for i, n in enumerate(lengths.tolist())]
    return sum(ok) / len(ok)


def _train_reversal(steps: int, **kw) -> tuple[Seq2Seq, float]:
    torch.manual_seed(0)
    model = Seq2Seq(10, 10, embed_size=16, hidden_size=32, bidirectional=True, seed=0, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        train_step(model, opt, _reversal(g, 32), clip=1.0)
    model.eval()
    src, lengths, tgt, _ = _reversal(torch.Generator().manual_seed(99), 300)
    return model, _exact_match(model, src, lengths, tgt)


def test_attention_model_learns_reversal():
    # Luong dot attention without input feeding (the parallel teacher-forced path): ~0.98 exact
    # match after 300 Adam steps of 32 sequences (observed 0.986 at 400, loss 0.004 at 300);
    # 0.9 leaves room for another BLAS while still failing for a model that did not learn
    # (a model without attention is at ~0.1 after the same budget)
    model, exact = _train_reversal(250, attention="dot", input_feeding=False)
    assert exact >= 0.9
    src, lengths, tgt, _ = _reversal(torch.Generator().manual_seed(5), 8)
    hyps = beam_search(model, src, lengths, beam_size=3, max_len=10)
    hits = sum(h[0].tokens.tolist() == tgt[i, :int(lengths[i])].tolist()
               for i, h in enumerate(hyps))
    assert hits >= 6


@pytest.mark.slow
def test_bahdanau_model_learns_reversal():
    # observed 0.998 exact match after 300 steps (22 s on one shared core)
    _, exact = _train_reversal(300, attention="bahdanau")
    assert exact >= 0.95


def test_pointer_network_learns_to_sort():
    # Vinyals et al. 2015's sorting task on 5 numbers in [0, 1): target = argsort
    torch.manual_seed(0)
    model = PointerNetwork(1, 32, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)

    def batch(n: int):
        x = torch.rand(n, 5, 1, generator=g)
        lengths = torch.full((n,), 5)
        return x, lengths, x[..., 0].argsort(dim=1), lengths

    for _ in range(150):
        train_step(model, opt, batch(64), clip=1.0)
    model.eval()
    x, lengths, order, _ = batch(300)
    d = greedy_decode(model, x, lengths)
    exact = (d.tokens == order).all(dim=1).float().mean().item()
    # chance is 1/120; observed 0.94 after 150 steps (0.89 already after 50)
    assert exact >= 0.7
