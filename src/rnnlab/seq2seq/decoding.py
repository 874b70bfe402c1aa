"""Greedy decoding and beam search, batched over sentences and beams (``B * K`` rows).

Both work on any model of the decoding protocol (``Seq2Seq``, ``PointerNetwork``):
``encode(src, lengths) -> memory``, ``initial_state(memory) -> state`` (tuples of batch-first
tensors), ``start_tokens(memory)``, ``step(prev, state, memory) -> (log_probs (N, V), state,
attention (N, S) or None)``, ``num_outputs(memory)``, ``decode_lengths(memory, max_len)`` (the
longest output per sentence, a CPU tensor) and ``eos_id`` (None: outputs end at their
length). Optional: ``beams_share_memory()`` (whether the ``K`` rows of a sentence may read one
copy of its memory).
A model whose ``step`` takes ``normalize=False`` (``Seq2Seq``) returns logits then; beam search
on the CPU then normalises inside its C++ kernel (a log-sum-exp per row, log-probabilities
formed only for the candidates that may be kept).

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

import inspect
import math
from typing import NamedTuple

import torch

from rnnlab._validation import check_choice, check_int, check_number
from rnnlab.seq2seq._common import reorder
from rnnlab.seq2seq._kernels import inference_ops

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
    sentence, best first (see the module docstring for the scoring and the end rule).

    The bookkeeping stays on the model's device and costs a fixed number of tensor operations
    per step whatever the batch: alive hypotheses are kept as back-pointers (parent beam and
    token per step, no history copied per step), finished ones as per-step score slices whose
    ``n_best`` best are picked once at the end (a stable sort: ties go to the earlier one), and
    only those are traced back and moved to the host. The first step runs on one row per
    sentence (all ``K`` beams of a sentence start identical); a sentence that is done leaves
    the batch (its state, memory and bookkeeping rows), so later steps run on the others."""
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
    state = model.initial_state(memory)
    prev = model.start_tokens(memory)
    f64 = torch.float64
    scores = torch.zeros(B, 1, dtype=f64, device=device)  # one root per sentence
    limits_d = limits.to(device)
    lp_max = torch.tensor([float(length_penalty_value(int(n), kind, alpha))
                           for n in limits.tolist()], dtype=f64, device=device)
    kept = torch.full((B, n_best), -math.inf, dtype=f64, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    parents: list[torch.Tensor] = []  # (B, K) per step: the beam each alive one extends
    toks: list[torch.Tensor] = []  # (B, K) per step: its last token
    attns: list[torch.Tensor] = []  # (B, K_t, S) per step, K_t beams in the step's rows
    fin: list[tuple[torch.Tensor, ...]] = []  # per step: score, log_prob, parent, last token
    # the C++ bookkeeping normalises the logits itself where the model can return them
    logits = inference_ops(memory[0], scores) is not None and _returns_logits(model)
    share = getattr(model, "beams_share_memory", None)
    shared = share is not None and bool(share())
    live: torch.Tensor | None = None  # the sentences still searched (None: all B)
    for t in range(int(limits.max())):
        if logits:
            logp, state, attn = model.step(prev, state, memory, normalize=False)
        else:
            logp, state, attn = model.step(prev, state, memory)
        P, Kt = scores.shape  # P sentences still searched, Kt rows each
        lp = float(length_penalty_value(t + 1, kind, alpha))
        (*finished, kept, scores, new_beam, new_tok, flat, done, _) = beam_step(
            logp, scores, K, limits_d, t, eos, lp, kept, lp_max, done, logits=logits)
        prev = new_tok  # (P, K)
        step_attn = None if attn is None else attn.view(P, Kt, -1)
        if live is not None:  # the step's records in rows of all B sentences
            finished = [_scatter_rows(x, live, B, -math.inf if i == 0 else 0)
                        for i, x in enumerate(finished)]
            new_beam, new_tok = (_scatter_rows(x, live, B, 0) for x in (new_beam, new_tok))
            step_attn = None if attn is None else _scatter_rows(step_attn, live, B, 0)
        fin.append(tuple(finished))
        parents.append(new_beam)
        toks.append(new_tok)
        if step_attn is not None:
            attns.append(step_attn)
        n_done = int(done.sum())
        if n_done == P:
            break
        if t == 0 and not shared:  # every later step has K rows per sentence
            memory = reorder(memory, torch.arange(P, device=device).repeat_interleave(K))
        if n_done:
            # a done sentence adds nothing more: its rows leave every later step (a row's
            # step reads only its own state and memory rows)
            keep = (~done).nonzero()[:, 0]
            flat = flat.view(P, K).index_select(0, keep).view(-1)
            memory = reorder(memory, keep if shared else (
                keep[:, None] * K + torch.arange(K, device=device)).view(-1))
            prev, scores, kept, lp_max, limits_d, done = (
                x.index_select(0, keep) for x in (prev, scores, kept, lp_max, limits_d, done))
            live = keep if live is None else live.index_select(0, keep)
        state = reorder(state, flat)
        prev = prev.reshape(-1)
    return _trace_back(fin, parents, toks, attns, n_best, eos)


def _returns_logits(model: torch.nn.Module) -> bool:
    """Whether ``model.step`` takes ``normalize=False`` (then it returns logits)."""
    try:
        return "normalize" in inspect.signature(model.step).parameters
    except (TypeError, ValueError):
        return False


def beam_step(logp: torch.Tensor, scores: torch.Tensor, K: int, limits: torch.Tensor, t: int,
              eos: int | None, lp: float, kept: torch.Tensor, lp_max: torch.Tensor,
              done: torch.Tensor, *, logits: bool = False) -> tuple[torch.Tensor, ...]:
    """One step of :func:`beam_search`'s bookkeeping for every sentence, from the step's
    log-probabilities ``logp`` ``(B * Kt, V)`` and the alive totals ``scores`` ``(B, Kt)``
    (float64) at step ``t`` (0-based) with ``lp = lp(t + 1)``: returns the step's finished
    hypotheses ``(score, log_prob, parent, last token)`` ``(B, K)`` each (score ``-inf`` where
    none), the ``n_best`` best finished scores so far ``kept``, the new alive ``scores``
    ``(B, K)``, their parent beams and last tokens ``(B, K)``, the rows of their parents ``(B *
    K,)`` (``b * Kt + parent``), ``done`` ``(B,)`` and whether all are done (a 0-d bool tensor).

    On the CPU one C++ kernel (``rnnlab_seq2seq.beam_step``) does it all; elsewhere (or with
    ``RNNLAB_FUSED=0``) :func:`_beam_step_torch`, the same computation in torch ops (the same
    float64 operations, so the same values; see :func:`top_candidates` for exact ties).
    ``logits=True``: ``logp`` holds logits; the kernel forms ``x - logsumexp(row)`` (as
    ``log_softmax``, equal up to its rounding) for the candidates that may enter only, without
    writing the ``(B * Kt, V)`` log-probabilities."""
    ops = inference_ops(logp, scores, kept, lp_max)
    if ops is not None:
        return tuple(ops.beam_step(logp, scores, K, limits, t, -1 if eos is None else eos, lp,
                                   kept, lp_max, done, logits))
    if logits:
        logp = torch.log_softmax(logp, dim=-1)
    return _beam_step_torch(logp, scores, K, limits, t, eos, lp, kept, lp_max, done)


def _beam_step_torch(logp: torch.Tensor, scores: torch.Tensor, K: int, limits: torch.Tensor,
                     t: int, eos: int | None, lp: float, kept: torch.Tensor,
                     lp_max: torch.Tensor, done: torch.Tensor) -> tuple[torch.Tensor, ...]:
    B, Kt = scores.shape
    V = logp.shape[1]
    n = min(2 * K, Kt * V)
    top, idx = top_candidates(logp, scores, n)
    beam, tok = idx // V, idx % V
    rank = torch.arange(n, device=top.device)[None, :]
    finite = torch.isfinite(top)
    stop = (t + 1 >= limits)[:, None].expand(B, n)
    if eos is not None:
        stop = stop | (tok == eos)
    final = (stop & finite & (rank < K))[:, :K]
    fin_score = torch.where(final, top[:, :K] / lp, -math.inf)
    kept = torch.cat([kept, fin_score], dim=1).topk(kept.shape[1], dim=1).values
    # the K best extensions that do not stop stay alive
    key = torch.where(stop | ~finite, rank + n, rank)
    keep = key.argsort(dim=1)[:, :K]
    scores = top.gather(1, keep).masked_fill(stop.gather(1, keep), -math.inf)
    new_beam, new_tok = beam.gather(1, keep), tok.gather(1, keep)
    flat = (torch.arange(B, device=top.device)[:, None] * Kt + new_beam).view(-1)
    # end rule: no alive hypothesis can beat the n_best-th finished one any more
    best_alive = scores.max(dim=1).values
    done = done | (t + 1 >= limits) | ~torch.isfinite(best_alive) | (
        best_alive / lp_max <= kept[:, -1])
    scores = scores.masked_fill(done[:, None], -math.inf)  # a done sentence adds nothing
    return (fin_score, top[:, :K], beam[:, :K], tok[:, :K], kept, scores, new_beam, new_tok,
            flat, done, done.all())


def top_candidates(logp: torch.Tensor, scores: torch.Tensor, n: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` best extensions of every sentence: ``scores`` ``(B, Kt)`` float64 running
    totals, ``logp`` ``(B * Kt, V)`` the step's log-probabilities; returns the float64 totals
    ``scores[b, k] + logp[b * Kt + k, t]`` ``(B, n)``, best first, and their indices ``k * V + t``.

    The torch expression materialises the ``(B, Kt * V)`` totals (float32 log-probabilities
    promoted in the addition itself) for ``topk``; on the CPU the C++ kernel
    ``rnnlab_seq2seq.beam_topk`` screens each row against the current ``n``-th best and forms
    only the totals that may enter (the same float64 sums, so the same values). Exactly equal
    totals: the kernel puts the smaller index first, ``torch.topk`` leaves their order
    unspecified. NaN totals (a model that outputs NaN) rank last on both paths: here they are
    read as ``-inf`` (``topk`` alone would rank them first)."""
    B, Kt = scores.shape
    ops = inference_ops(logp, scores)
    if ops is not None:
        return ops.beam_topk(logp, scores, n)
    V = logp.shape[1]
    cand = (scores[:, :, None] + logp.view(B, Kt, V)).view(B, Kt * V)
    return cand.masked_fill_(cand.isnan(), -math.inf).topk(n, dim=1)


def _scatter_rows(x: torch.Tensor, rows: torch.Tensor, n: int, fill: float) -> torch.Tensor:
    """``x`` placed at ``rows`` of an ``n``-row tensor filled with ``fill`` elsewhere."""
    return x.new_full((n, *x.shape[1:]), fill).index_copy_(0, rows, x)


def _trace_back(fin: list[tuple[torch.Tensor, ...]], parents: list[torch.Tensor],
                toks: list[torch.Tensor], attns: list[torch.Tensor], n_best: int,
                eos: int | None) -> list[list[Hypothesis]]:
    """The ``n_best`` best finished hypotheses of every sentence (by score; among equal scores
    the one finished first, as a stable sort of the finishing order), their tokens and attention
    rows followed back through the per-step parents, as host objects."""
    score, logp, parent, last = (torch.cat(x, dim=1) for x in zip(*fin, strict=True))
    B, width = score.shape
    K = width // len(fin)
    order = score.sort(dim=1, descending=True, stable=True).indices[:, :n_best]
    step = order // K  # a hypothesis finished at step t has t tokens before its last one
    p = parent.gather(1, order)  # its parent: a beam alive after step t - 1 (a row of step t)
    T = int(step.max()) + 1
    prefix = torch.zeros(B, n_best, T, dtype=torch.long, device=score.device)
    rows: list[torch.Tensor] = []
    for s in range(T - 1, -1, -1):
        # where s < t, ``p`` is a beam alive after step s: take its token and go to its parent
        later = s < step
        prefix[:, :, s] = torch.where(later, toks[s].gather(1, p), 0)
        p = torch.where(later, parents[s].gather(1, p), p)
        if attns:  # now ``p`` is the hypothesis' row in step s (where s <= t)
            a = attns[s]
            rows.append(a.gather(1, p.clamp(max=a.shape[1] - 1)[..., None].expand(
                -1, -1, a.shape[2])))
    att = torch.stack(rows[::-1], dim=2).cpu() if attns else None  # (B, n_best, T, S)
    prefix = prefix.cpu()
    sc, lg, la, st = (x.gather(1, order).tolist() if x is not step else x.tolist()
                      for x in (score, logp, last, step))
    out: list[list[Hypothesis]] = []
    for b in range(B):
        hyps = []
        for i in range(n_best):
            if not math.isfinite(sc[b][i]):
                break  # fewer than n_best finished (outputs ruled out by the model)
            t, ended = st[b][i], eos is not None and la[b][i] == eos
            tokens = prefix[b, i, :t].clone() if ended else torch.cat(
                [prefix[b, i, :t], torch.tensor([la[b][i]])])
            hyps.append(Hypothesis(tokens, lg[b][i], sc[b][i], ended,
                                   None if att is None else att[b, i, :t + 1].clone()))
        out.append(hyps)
    return out


length_penalty_value = length_penalty


def hypotheses_to_tensor(hyps: list[list[Hypothesis]], pad_id: int = 0) -> torch.Tensor:
    """The best hypothesis of every sentence as a ``(B, L)`` tensor padded with ``pad_id``."""
    best = [h[0].tokens for h in hyps]
    L = max(1, max(len(x) for x in best))
    out = torch.full((len(best), L), pad_id, dtype=torch.long)
    for i, x in enumerate(best):
        out[i, :len(x)] = x
    return out
