"""Greedy decoding and beam search, batched over sentences and beams (``B * K`` rows).

Both work on any model of the decoding protocol (``Seq2Seq``, ``PointerNetwork``):
``encode(src, lengths) -> memory``, ``initial_state(memory) -> state`` (tuples of batch-first
tensors), ``start_tokens(memory)``, ``step(prev, state, memory) -> (log_probs (N, V), state,
attention (N, S) or None)``, ``num_outputs(memory)``, ``decode_lengths(memory, max_len)`` (the
longest output per sentence, a CPU tensor) and ``eos_id`` (None: outputs end at their length).

Beam search (e.g. Sutskever et al. 2014, Sec. 3.1; the scoring of Wu et al. 2016, "Google's
neural machine translation system", Sec. 7): at each step the ``K`` alive hypotheses of a sentence
are extended by every token, the ``2K`` best extensions by total log-probability are ranked; an
extension ending in ``eos`` (or reaching the length limit) among the first ``K`` ranks is
finished, and the best ``K`` others stay alive. A finished hypothesis ``Y`` is scored
``log P(Y | X) / lp(Y)`` with ``lp = 1`` (``"none"``), ``|Y|`` (``"average"``) or
``(5 + |Y|)^alpha / (5 + 1)^alpha`` (``"gnmt"``, Wu et al. eq. 14), ``|Y|`` counting the ``eos``.
End rule: a sentence is done when it has ``n_best`` finished hypotheses and no alive one can still
beat the ``n_best``-th: log-probabilities only fall as a hypothesis grows and ``lp`` grows with
length, so an alive hypothesis with total ``s <= 0`` can reach at most ``s / lp(max_len)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from rnnlab._validation import check_choice, check_int, check_number
from rnnlab.seq2seq._common import reorder

PENALTIES = ("none", "average", "gnmt")


class Decoded(NamedTuple):
    """Greedy output: ``tokens`` ``(B, L)`` without ``eos``, padded with the model's ``pad_id``
    (0 for a pointer network); ``lengths`` ``(B,)`` without ``eos``; ``log_prob`` ``(B,)`` (the
    ``eos`` included); ``ended`` ``(B,)`` whether ``eos`` was produced; ``attention``
    ``(B, L, S)`` or None."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    log_prob: torch.Tensor
    ended: torch.Tensor
    attention: torch.Tensor | None


class Hypothesis(NamedTuple):
    """One beam-search result: ``tokens`` ``(L,)`` without ``eos``; ``log_prob`` the total
    log-probability (``eos`` included); ``score`` after the length penalty; ``ended`` whether it
    ended with ``eos``; ``attention`` ``(L', S)`` (``L' = L + 1`` with the ``eos`` step) or None."""

    tokens: torch.Tensor
    log_prob: float
    score: float
    ended: bool
    attention: torch.Tensor | None


def length_penalty(length: int | torch.Tensor, kind: str, alpha: float) -> float | torch.Tensor:
    """``lp(|Y|)``: 1, ``|Y|`` or ``((5 + |Y|) / 6)^alpha`` (Wu et al. 2016, eq. 14)."""
    if kind == "none":
        return 1.0
    if kind == "average":
        return length
    return ((5.0 + length) / 6.0) ** alpha


def _pad_id(model: torch.nn.Module) -> int:
    return getattr(model, "pad_id", 0)


@torch.no_grad()
def greedy_decode(model: torch.nn.Module, src: torch.Tensor, src_lengths: torch.Tensor, *,
                  max_len: int | None = None) -> Decoded:
    """The most probable next token at every step until ``eos`` or the length limit."""
    memory = model.encode(src, src_lengths)
    limits = model.decode_lengths(memory, max_len)
    state = model.initial_state(memory)
    prev = model.start_tokens(memory)
    B, device, eos = prev.shape[0], prev.device, model.eos_id
    limits_d = limits.to(device)
    alive = torch.ones(B, dtype=torch.bool, device=device)
    ended = torch.zeros(B, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    log_prob = torch.zeros(B, dtype=memory[0].dtype, device=device)
    tokens, attns = [], []
    for t in range(int(limits.max())):
        logp, state, attn = model.step(prev, state, memory)
        best_lp, best = logp.max(dim=-1)
        log_prob = log_prob + torch.where(alive, best_lp, torch.zeros_like(best_lp))
        is_eos = (best == eos) if eos is not None else torch.zeros_like(alive)
        emit = alive & ~is_eos
        tokens.append(torch.where(emit, best, torch.full_like(best, _pad_id(model))))
        if attn is not None:
            attns.append(torch.where(alive[:, None], attn, torch.zeros_like(attn)))
        lengths = lengths + emit.long()
        ended = ended | (alive & is_eos)
        alive = emit & (t + 1 < limits_d)
        prev = best
        if not bool(alive.any()):
            break
    L = int(lengths.max())
    out = torch.stack(tokens, dim=1)[:, :L]
    att = torch.stack(attns, dim=1)[:, :L] if attns else None
    return Decoded(out, lengths, log_prob, ended, att)


@torch.no_grad()
def beam_search(model: torch.nn.Module, src: torch.Tensor, src_lengths: torch.Tensor, *,
                beam_size: int = 5, max_len: int | None = None, length_penalty: str = "none",
                alpha: float = 0.6, n_best: int = 1) -> list[list[Hypothesis]]:
    """Beam search of width ``beam_size`` for every sentence at once; ``n_best`` hypotheses per
    sentence, best first (see the module docstring for the scoring and the end rule)."""
    K = check_int("beam_size", beam_size, low=1)
    n_best = check_int("n_best", n_best, low=1, high=K)
    kind = check_choice("length_penalty", length_penalty, PENALTIES)
    alpha = check_number("alpha", alpha, low=0.0)
    memory = model.encode(src, src_lengths)
    V = model.num_outputs(memory)
    if K > V:
        raise ValueError(f"beam_size={K} is wider than the output vocabulary ({V} entries)")
    limits = model.decode_lengths(memory, max_len)
    B = memory[0].shape[0]
    device = memory[0].device
    eos = model.eos_id
    rows = torch.arange(B, device=device).repeat_interleave(K)
    memory = reorder(memory, rows)
    state = model.initial_state(memory)
    prev = model.start_tokens(memory)
    scores = torch.full((B, K), -math.inf, dtype=torch.float64, device=device)
    scores[:, 0] = 0.0
    tokens = torch.zeros(B, K, 0, dtype=torch.long, device=device)
    attn_hist: torch.Tensor | None = None
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    # the n_best best finished scores per sentence (CPU), for the end rule
    kept = torch.full((B, n_best), -math.inf, dtype=torch.float64)
    done = torch.zeros(B, dtype=torch.bool)
    limits_d = limits.to(device)
    lp_max = torch.tensor([float(length_penalty_value(int(n), kind, alpha))
                           for n in limits.tolist()], dtype=torch.float64)
    base = torch.arange(B, device=device)[:, None] * K
    for t in range(int(limits.max())):
        logp, state, attn = model.step(prev, state, memory)
        if attn is not None:
            a = attn.view(B, K, 1, -1)
            attn_hist = a if attn_hist is None else torch.cat([attn_hist, a], dim=2)
        cand = (scores.view(-1, 1) + logp.double()).view(B, K * V)
        cand = cand.masked_fill(done.to(device)[:, None], -math.inf)
        n = min(2 * K, K * V)
        top, idx = cand.topk(n, dim=1)
        beam, tok = idx // V, idx % V
        at_end = (t + 1 >= limits_d)[:, None].expand(B, n)
        is_eos = (tok == eos) if eos is not None else torch.zeros_like(at_end)
        finite = torch.isfinite(top)
        stop = is_eos | at_end
        rank = torch.arange(n, device=device)[None, :]
        final = stop & finite & (rank < K)
        lp = float(length_penalty_value(t + 1, kind, alpha))
        picked = final.nonzero()
        if picked.numel():
            bs, rs = picked[:, 0], picked[:, 1]
            ks = beam[bs, rs]
            eos_f = is_eos[bs, rs].tolist()
            totals = top[bs, rs].tolist()
            toks_all = torch.cat([tokens[bs, ks], tok[bs, rs, None]], dim=1).cpu()
            atts = None if attn_hist is None else attn_hist[bs, ks].cpu()
            for i, b in enumerate(bs.tolist()):
                toks = toks_all[i, :t] if eos_f[i] else toks_all[i]
                finished[b].append(Hypothesis(toks, totals[i], totals[i] / lp, eos_f[i],
                                              None if atts is None else atts[i]))
            # the n_best best finished scores of every sentence, in one operation
            new_fin = torch.where(final, top / lp, torch.full_like(top, -math.inf))[:, :K]
            kept = torch.cat([kept, new_fin.cpu()], dim=1).topk(n_best, dim=1).values
        # the K best extensions that do not stop stay alive
        key = torch.where(stop | ~finite, rank + n, rank)
        keep = key.argsort(dim=1)[:, :K]
        new_scores = top.gather(1, keep)
        new_scores = torch.where(stop.gather(1, keep), torch.full_like(new_scores, -math.inf),
                                 new_scores)
        new_beam, new_tok = beam.gather(1, keep), tok.gather(1, keep)
        flat = (base + new_beam).view(-1)
        state = reorder(state, flat)
        tokens = torch.cat([tokens.view(B * K, -1).index_select(0, flat).view(B, K, -1),
                            new_tok[..., None]], dim=2)
        if attn_hist is not None:
            attn_hist = attn_hist.view(B * K, *attn_hist.shape[2:]).index_select(0, flat).view(
                B, K, *attn_hist.shape[2:])
        scores = new_scores
        prev = new_tok.reshape(-1)
        # end rule: no alive hypothesis can beat the n_best-th finished one any more
        best_alive = scores.max(dim=1).values.cpu()
        done |= ((t + 1 >= limits) | ~torch.isfinite(best_alive)
                 | (best_alive / lp_max <= kept[:, -1]))
        if bool(done.all()):
            break
    return [sorted(f, key=lambda h: h.score, reverse=True)[:n_best] for f in finished]


length_penalty_value = length_penalty


def hypotheses_to_tensor(hyps: list[list[Hypothesis]], pad_id: int = 0) -> torch.Tensor:
    """The best hypothesis of every sentence as a ``(B, L)`` tensor padded with ``pad_id``."""
    best = [h[0].tokens for h in hyps]
    L = max(1, max(len(x) for x in best))
    out = torch.full((len(best), L), pad_id, dtype=torch.long)
    for i, x in enumerate(best):
        out[i, :len(x)] = x
    return out
