"""How fast is rnnlab.seq2seq? Against a plain PyTorch attention model written here.

Run: ``.venv/bin/python benchmarks/bench_seq2seq.py`` (defaults: vocabulary 1000, embedding 64,
hidden 128, bidirectional LSTM encoder, Bahdanau attention, sources of 10-20 tokens, training
batch 64, beam width 5 over 64 sentences, outputs up to 25 tokens, float32, CPU, one thread;
``--threads K``, ``--device cuda``).

The plain model below computes the same function as ``rnnlab.seq2seq.Seq2Seq(context=
"attention", attention="bahdanau")`` (its weights are copied over, and the script checks that
both give the same logits) the way a tutorial writes it: ``nn.LSTM`` encoder on a packed batch,
an ``nn.LSTMCell`` decoder run one step at a time, and a beam search over one sentence at a time
(the ``K`` beams of that sentence in one ``K``-row batch). Both beam searches use the same
scoring (total log-probability, hypotheses finished on ``eos`` among the first ``K`` ranks of
the ``2K`` best extensions), so their best outputs are compared too.

Reported: training tokens per second (forward + backward + Adam, target tokens), beam-search
sentences per second, and the ratios ours / plain, medians of ``--repeats`` alternating rounds
(``--clock cpu``: the process's CPU time instead of wall time, for a loaded machine);
``--sweep 16,64,256`` adds the beam-search ratio at those numbers of sentences.
``--thread-counts 1,2`` adds the beam searches timed (wall clock) at each thread count in the
same run, and the ratio of each side at its best count: the per-sentence loop's small per-step
products gain little or nothing from a second thread, the batched search's gain more.
``--mixed-lengths`` runs everything on a model whose outputs end at different steps (the
readout scaled by 16 and 4 added to the ``eos`` logit, a stand-in for a trained model): there a
per-sentence loop stops each sentence at its own end, and the batched search drops finished
sentences from its batch. ``--linear`` adds a table of the affine map ``x W^T + b`` at the
decoder's shapes: torch's ``F.linear`` (MKL's sgemm on the CPU) against
``rnnlab._native.inference_linear`` (oneDNN's matmul), which the decoder uses without gradients.
Target (issue 14, part 7): batched beam search at least 5x faster than the per-sentence loop on
the CPU. The exit code is 1 when it misses.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.seq2seq import Seq2Seq, beam_search, sequence_loss

TARGET = 5.0
PAD, BOS, EOS = 0, 1, 2


class PlainAttentionModel(nn.Module):
    """Bahdanau attention encoder-decoder in plain PyTorch, one decoder step at a time."""

    def __init__(self, ours: Seq2Seq) -> None:
        super().__init__()
        V_src, V, E, H = ours.src_vocab_size, ours.tgt_vocab_size, ours.embed_size, ours.hidden_size
        self.src_emb = nn.Embedding(V_src, E, padding_idx=PAD)
        self.encoder = nn.LSTM(E, H // 2, batch_first=True, bidirectional=True)
        self.tgt_emb = nn.Embedding(V, E, padding_idx=PAD)
        self.cell = nn.LSTMCell(E + H, H)
        self.W = nn.Linear(H, H, bias=False)
        self.U = nn.Linear(H, H)
        self.v = nn.Linear(H, 1, bias=False)
        self.out = nn.Linear(H + E + H, V)
        with torch.no_grad():
            self.src_emb.weight.copy_(ours.encoder.embedding.weight)
            self.encoder.load_state_dict(ours.encoder.rnn.state_dict())
            self.tgt_emb.weight.copy_(ours.embedding.weight)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.cell, name).copy_(getattr(ours.rnn, name + "_l0"))
            for mine, theirs in ((self.W, ours.attn.W), (self.U, ours.attn.U),
                                 (self.v, ours.attn.v), (self.out, ours.readout)):
                mine.load_state_dict(theirs.state_dict())

    def encode(self, src, lengths):
        packed = pack_padded_sequence(self.src_emb(src), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, (h, c) = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        mask = torch.arange(src.shape[1], device=src.device)[None] < lengths[:, None]
        h = torch.cat([h[0], h[1]], dim=-1)
        c = torch.cat([c[0], c[1]], dim=-1)
        return out, self.U(out), mask, (h, c)

    def step(self, y, hc, out, keys, mask):
        e = self.tgt_emb(y)
        scores = self.v(torch.tanh(self.W(hc[0])[:, None] + keys)).squeeze(-1)
        a = torch.softmax(scores.masked_fill(~mask, -math.inf), dim=-1)
        ctx = torch.bmm(a[:, None], out)[:, 0]
        hc = self.cell(torch.cat([e, ctx], dim=-1), hc)
        return self.out(torch.cat([hc[0], e, ctx], dim=-1)), hc

    def forward(self, src, lengths, tgt):
        out, keys, mask, hc = self.encode(src, lengths)
        inp = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], dim=1)
        logits = []
        for t in range(tgt.shape[1]):
            lo, hc = self.step(inp[:, t], hc, out, keys, mask)
            logits.append(lo)
        return torch.stack(logits, dim=1)

    @torch.no_grad()
    def beam_one(self, src, length, K, max_len):
        """Beam search of one sentence: its K beams are a K-row batch."""
        out, keys, mask, (h, c) = self.encode(src[None], length[None])
        out, keys, mask = (x.expand(K, *x.shape[1:]) for x in (out, keys, mask))
        hc = (h.expand(K, -1).contiguous(), c.expand(K, -1).contiguous())
        scores = torch.full((K,), -math.inf, dtype=torch.float64, device=src.device)
        scores[0] = 0.0
        seqs = [[] for _ in range(K)]
        y = torch.full((K,), BOS, dtype=torch.long, device=src.device)
        finished = []
        for t in range(max_len):
            logits, hc = self.step(y, hc, out, keys, mask)
            logits[:, [PAD, BOS]] = -math.inf
            cand = (scores[:, None] + torch.log_softmax(logits, -1).double()).view(-1)
            top, idx = cand.topk(2 * K)
            V = logits.shape[1]
            keep, new_scores = [], []
            for r, (s, i) in enumerate(zip(top.tolist(), idx.tolist(), strict=True)):
                b, tok = divmod(i, V)
                if tok == EOS or t + 1 == max_len:
                    if r < K and math.isfinite(s):
                        finished.append((s, seqs[b] + ([] if tok == EOS else [tok])))
                elif len(keep) < K:
                    keep.append((b, tok))
                    new_scores.append(s)
            if t + 1 == max_len:
                break
            index = torch.tensor([b for b, _ in keep], dtype=torch.long, device=y.device)
            seqs = [seqs[b] + [tok] for b, tok in keep]
            scores = torch.tensor(new_scores, dtype=torch.float64, device=y.device)
            hc = (hc[0][index], hc[1][index])
            y = torch.tensor([tok for _, tok in keep], device=y.device)
            if finished and max(f[0] for f in finished) >= scores.max():
                break
        return max(finished, key=lambda f: f[0])


def _data(g, n, vocab, low, high):
    lengths = torch.randint(low, high + 1, (n,), generator=g)
    src = torch.randint(3, vocab, (n, high), generator=g)
    src[torch.arange(high)[None] >= lengths[:, None]] = PAD
    tgt_len = torch.randint(low, high + 1, (n,), generator=g)
    tgt = torch.randint(3, vocab, (n, high + 1), generator=g)
    tgt[torch.arange(high + 1)[None] >= tgt_len[:, None]] = PAD
    tgt[torch.arange(n), tgt_len] = EOS
    return src, lengths, tgt, tgt_len + 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--max-len", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sweep", default="",
                    help="comma-separated sentence counts: also print the beam-search ratio at "
                         "each (after the main report; e.g. 16,64,256)")
    ap.add_argument("--thread-counts", default="",
                    help="comma-separated thread counts: also time both beam searches (wall "
                         "clock) at each, and print the ratio of each side at its best count")
    ap.add_argument("--mixed-lengths", action="store_true",
                    help="a model whose outputs end at different steps (readout x16, eos +4)")
    ap.add_argument("--linear", action="store_true",
                    help="also time F.linear against inference_linear at the decoder's shapes")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or this process's CPU time (steadier on a shared machine; "
                         "with one thread the two agree when the machine is idle)")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} thread(s), device {dev}, {args.clock} time")

    ours = Seq2Seq(args.vocab, args.vocab, embed_size=args.embed, hidden_size=args.hidden,
                   bidirectional=True, attention="bahdanau", max_target_length=args.max_len,
                   seed=0).to(dev)
    if args.mixed_lengths:
        with torch.no_grad():
            ours.readout.weight.mul_(16.0)
            ours.readout.bias[EOS] += 4.0
    plain = PlainAttentionModel(ours.cpu()).to(dev)
    ours.to(dev)
    g = torch.Generator().manual_seed(0)
    src, sl, tgt, tl = (x.to(dev) for x in _data(g, args.batch, args.vocab, 10, 20))
    with torch.no_grad():
        gap = (ours(src, sl, tgt).logits - plain(src, sl, tgt)).abs().max().item()
    print(f"same function: max |logits difference| = {gap:.2e}")
    mask = torch.arange(tgt.shape[1], device=dev)[None] < tl[:, None]
    tokens = int(tl.sum())

    def train(model, forward):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def run():
            opt.zero_grad()
            sequence_loss(forward(), tgt, mask).backward()
            opt.step()
        return run

    runs = {"ours": train(ours, lambda: ours(src, sl, tgt).logits),
            "plain": train(plain, lambda: plain(src, sl, tgt))}
    bsrc, bsl, _, _ = (x.to(dev) for x in _data(g, args.sentences, args.vocab, 10, 20))
    # the beam searches run on copies taken before any training step changes the weights
    ours_b, plain_b = copy.deepcopy(ours).eval(), copy.deepcopy(plain).eval()
    results = {}

    def beam_ours():
        results["ours"] = beam_search(ours_b, bsrc, bsl, beam_size=args.beam,
                                      max_len=args.max_len)

    def beam_plain():
        results["plain"] = [plain_b.beam_one(bsrc[i], bsl[i], args.beam, args.max_len)
                            for i in range(bsrc.shape[0])]

    def timed(fn):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = clock()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return clock() - t

    for fn in (*runs.values(), beam_ours, beam_plain):  # warm-up
        fn()
    times = {k: [] for k in ("train ours", "train plain", "beam ours", "beam plain")}
    for _ in range(args.repeats):
        ours.train()
        plain.train()
        times["train ours"].append(timed(runs["ours"]))
        times["train plain"].append(timed(runs["plain"]))
        times["beam ours"].append(timed(beam_ours))
        times["beam plain"].append(timed(beam_plain))
    med = {k: statistics.median(v) for k, v in times.items()}
    same = sum(h[0].tokens.tolist() == p[1]
               for h, p in zip(results["ours"], results["plain"], strict=True))
    print(f"beam outputs identical for {same}/{args.sentences} sentences")
    lengths = sorted(len(h[0].tokens) for h in results["ours"])
    print(f"output lengths: min {lengths[0]}, median {lengths[len(lengths) // 2]}, "
          f"max {lengths[-1]} (limit {args.max_len})")
    print(f"{'':28s}{'ours':>12s}{'plain':>12s}{'ours/plain':>12s}")
    tr_o, tr_p = tokens / med["train ours"], tokens / med["train plain"]
    bm_o, bm_p = args.sentences / med["beam ours"], args.sentences / med["beam plain"]
    print(f"{'training tokens/s':28s}{tr_o:12.0f}{tr_p:12.0f}{tr_o / tr_p:12.2f}")
    print(f"{'beam search sentences/s':28s}{bm_o:12.1f}{bm_p:12.1f}{bm_o / bm_p:12.2f}")
    ok = bm_o / bm_p >= TARGET or dev.type != "cpu"
    for count in (int(c) for c in args.sweep.split(",") if c.strip()):
        ssrc, ssl, _, _ = (x.to(dev) for x in _data(torch.Generator().manual_seed(count),
                                                     count, args.vocab, 10, 20))

        def run_o(ssrc=ssrc, ssl=ssl):
            beam_search(ours_b, ssrc, ssl, beam_size=args.beam, max_len=args.max_len)

        def run_p(ssrc=ssrc, ssl=ssl):
            for i in range(ssrc.shape[0]):
                plain_b.beam_one(ssrc[i], ssl[i], args.beam, args.max_len)

        run_o()
        sweep = {"ours": [], "plain": []}
        for _ in range(args.repeats):
            sweep["ours"].append(timed(run_o))
            sweep["plain"].append(timed(run_p))
        so, sp = (count / statistics.median(sweep[k]) for k in ("ours", "plain"))
        print(f"{f'beam sentences/s, {count} sentences':28s}{so:12.1f}{sp:12.1f}{so / sp:12.2f}")
    counts = [int(c) for c in args.thread_counts.split(",") if c.strip()]
    if counts:
        best = {"ours": 0.0, "plain": 0.0}
        for k in counts:
            torch.set_num_threads(k)
            beam_ours()  # warm-up at this thread count
            beam_plain()
            runs_k = {"ours": [], "plain": []}
            for _ in range(args.repeats):
                for name, fn in (("ours", beam_ours), ("plain", beam_plain)):
                    t = time.perf_counter()
                    fn()
                    runs_k[name].append(time.perf_counter() - t)
            so, sp = (args.sentences / statistics.median(runs_k[n]) for n in ("ours", "plain"))
            best["ours"], best["plain"] = max(best["ours"], so), max(best["plain"], sp)
            print(f"{f'beam sentences/s, {k} thr wall':28s}{so:12.1f}{sp:12.1f}"
                  f"{so / sp:12.2f}")
        torch.set_num_threads(args.threads)
        ratio = best["ours"] / best["plain"]
        print(f"{'beam, each at best threads':28s}{best['ours']:12.1f}{best['plain']:12.1f}"
              f"{ratio:12.2f}")
        print(f"each at its best thread count: batched beam >= {TARGET}x the per-sentence loop: "
              f"{'met' if ratio >= TARGET else 'missed'}")
    if args.linear:
        linear_table(args, clock)
    print(f"target: batched beam >= {TARGET}x the per-sentence loop on the CPU "
          f"({torch.get_num_threads()} thread(s) each): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


def linear_table(args: argparse.Namespace, clock) -> None:
    """``F.linear`` against ``inference_linear`` (no gradients) at the readout's and the decoder
    cell's shapes: ``rows = sentences x beam``, medians of 50 calls after 10 warm-up calls."""
    from rnnlab._native import inference_linear

    E, H, V, rows = args.embed, args.hidden, args.vocab, args.sentences * args.beam
    shapes = [("readout", rows, H + E + H, V), ("readout", args.sentences, H + E + H, V),
              ("readout, one beam", args.beam, H + E + H, V),
              ("LSTM input", rows, E + H, 4 * H), ("attention query", rows, H, H)]
    print(f"{'x W^T + b':28s}{'rows':>6s}{'in':>6s}{'out':>6s}{'F.linear ms':>13s}"
          f"{'oneDNN ms':>11s}{'ratio':>8s}")
    g = torch.Generator().manual_seed(1)
    for name, n, k, m in shapes:
        x, w, b = (torch.randn(*shape, generator=g) for shape in ((n, k), (m, k), (m,)))
        times = {}
        with torch.no_grad():
            for label, fn in (("F.linear", torch.nn.functional.linear),
                              ("oneDNN", inference_linear)):
                for _ in range(10):
                    fn(x, w, b)
                runs = []
                for _ in range(50):
                    t = clock()
                    fn(x, w, b)
                    runs.append(clock() - t)
                times[label] = statistics.median(runs) * 1e3
        print(f"{name:28s}{n:6d}{k:6d}{m:6d}{times['F.linear']:13.3f}{times['oneDNN']:11.3f}"
              f"{times['F.linear'] / times['oneDNN']:8.2f}")


if __name__ == "__main__":
    sys.exit(main())
