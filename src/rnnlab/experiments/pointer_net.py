"""``pointer-net``: accuracy by input length on sorting numbers and planar convex hulls, a
pointer network against a sequence-to-sequence model with a fixed output vocabulary, in the
shape of Vinyals, Fortunato & Jaitly (2015, "Pointer networks", NeurIPS; their Table 1 and
Sec. 4: a pointer network trained on n points still answers for other n, a seq2seq model whose
outputs are a fixed dictionary of positions cannot name a position it has no word for).

* ``pointer``: :class:`rnnlab.seq2seq.PointerNetwork` on the real-valued inputs, with an "end"
  element in front (:func:`rnnlab.tasks.seq2seq.add_end_position`) so that the output says when
  it stops (a hull's size is not known in advance); ``mask_chosen`` keeps every position to one
  use.
* ``seq2seq``: :class:`rnnlab.seq2seq.Seq2Seq` with Bahdanau attention whose output words are
  the positions seen in training (``0 .. max_train - 1``). It reads tokens, so its inputs are
  quantised: a number to one of ``--bins`` bins, a point to two tokens (its x and y bins).

Training lengths ``[--min-length, --train-length]``, test lengths up to ``--test-length``.
Accuracy is the fraction of outputs equal to the target sequence (positions in the target's
order: sorted, or the hull from its lowest index counter-clockwise); ``token_accuracy`` the
fraction of target positions right. Both models get about the same number of parameters
(``--hidden-size`` is the pointer network's; the seq2seq width is matched). Both are trained by
:class:`rnnlab.train.Trainer` (``_seq2seq_common.fit_model``: checkpoints in ``jobs/``, so
``--resume`` continues a stopped run; early stopping and averaging of the last epochs' weights
as options).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab._random import make_generator
from rnnlab.experiments._seq2seq_common import (
    TrainingOptions,
    build_seq2seq,
    count_parameters,
    decode_pairs,
    encode_pairs,
    fit_model,
    match_width,
)
from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    aggregate,
    option,
    register,
)
from rnnlab.tasks.seq2seq import (
    Pairs,
    PointerData,
    Vocabulary,
    add_end_position,
    bucketed,
    pointer_task,
)

TASKS = ("sort", "hull")
MODELS = ("pointer", "seq2seq")
BASELINE = {"context": "attention", "attention": "bahdanau", "cell": "lstm"}


@dataclass
class PointerNetConfig(TrainingOptions):
    tasks: tuple[str, ...] = option(TASKS, "tasks", choices=TASKS)
    models: tuple[str, ...] = option(MODELS, "models", choices=MODELS)
    hidden_size: int = option(48, "pointer network width; the seq2seq width is matched", low=4)
    min_length: int = option(5, "fewest numbers / points", low=3)
    train_length: int = option(10, "most numbers / points in training", low=3)
    test_length: int = option(15, "most numbers / points in the test", low=3)
    bins: int = option(100, "quantisation bins of the seq2seq model's inputs (per axis)",
                       low=2)

    def validate(self) -> None:
        super().validate()
        if not self.min_length <= self.train_length <= self.test_length:
            raise ValueError("need min_length <= train_length <= test_length")


def quantise(data: PointerData, bins: int) -> Pairs:
    """Token pairs for the fixed-vocabulary model: each number (or each coordinate) becomes its
    bin ``"x17"``/``"y3"``; the targets become the position words ``"0"``, ``"1"``, ..."""
    srcs, tgts = [], []
    q = (data.inputs * bins).floor().clamp(0, bins - 1).long()
    d = data.inputs.shape[2]
    names = ("v",) if d == 1 else ("x", "y")
    for b, tgt in enumerate(data.target_lists()):
        n = int(data.lengths[b])
        srcs.append([f"{names[k]}{int(q[b, i, k])}" for i in range(n) for k in range(d)])
        tgts.append([str(i) for i in tgt])
    return Pairs(srcs, tgts)


def _seq2seq(src_vocab: Vocabulary, tgt_vocab: Vocabulary, width: int, max_len: int,
             seed: int = 0) -> tuple[torch.nn.Module, dict[str, Any]]:
    return build_seq2seq(BASELINE, width, src_vocab, tgt_vocab, 16, max_len, seed)


def _seq2seq_width(src_vocab: Vocabulary, tgt_vocab: Vocabulary, width: int) -> torch.nn.Module:
    return _seq2seq(src_vocab, tgt_vocab, width, 64)[0]


def _pointer(input_size: int, width: int, seed: int = 0) -> torch.nn.Module:
    from rnnlab.seq2seq import PointerNetwork

    return PointerNetwork(input_size, width, cell="lstm", mask_chosen=True, seed=seed)


def pointer_tensors(data: PointerData
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs, lengths, targets, target_lengths)``; the padding past ``target_lengths``
    (``-1``) becomes position 0, masked out of the loss."""
    return data.inputs, data.lengths, data.targets.clamp(min=0), data.target_lengths


@torch.no_grad()
def decode_pointer(model: torch.nn.Module, data: PointerData, batch_size: int = 256
                   ) -> list[list[int]]:
    """Greedy outputs cut at the first pointer to the end element, shifted back to the original
    positions."""
    from rnnlab.seq2seq import greedy_decode

    out: list[list[int]] = []
    for k in range(0, len(data), batch_size):
        d = greedy_decode(model, data.inputs[k:k + batch_size], data.lengths[k:k + batch_size])
        for i in range(d.tokens.shape[0]):
            seq = d.tokens[i, : int(d.lengths[i])].tolist()
            seq = seq[: seq.index(0)] if 0 in seq else seq
            out.append([j - 1 for j in seq])
    return out


def run_task(cfg: PointerNetConfig, ctx: RunContext, task: str, seed: int) -> list[dict]:
    g = make_generator(seed)
    train = pointer_task(task, cfg.train_size, cfg.min_length, cfg.train_length, generator=g)
    test = pointer_task(task, cfg.test_size, cfg.min_length, cfg.test_length, generator=g)
    refs = [[str(i) for i in t] for t in test.target_lists()]
    lengths = test.lengths.tolist()
    rows = []
    d = train.inputs.shape[2]
    ref_params = count_parameters(_pointer(d + 1, cfg.hidden_size))
    for name in cfg.models:
        torch.manual_seed(seed)
        if name == "pointer":
            model = _pointer(d + 1, cfg.hidden_size, seed)
            fit_model(ctx, f"{task}-pointer-seed{seed}", model,
                      pointer_tensors(add_end_position(train)), cfg, seed)
            hyps = [[str(i) for i in h] for h in decode_pointer(model, add_end_position(test))]
            width = cfg.hidden_size
        else:
            tr, te = quantise(train, cfg.bins), quantise(test, cfg.bins)
            sv, tv = Vocabulary.build(tr.sources), Vocabulary.build(tr.targets)
            width = match_width(functools.partial(_seq2seq_width, sv, tv), ref_params)
            max_len = d * cfg.test_length + 8
            model, _ = _seq2seq(sv, tv, width, max_len, seed)
            fit_model(ctx, f"{task}-seq2seq-seed{seed}", model, encode_pairs(tr, sv, tv), cfg,
                      seed)
            out, _ = decode_pairs(model, te.sources, sv, tv, max_len=cfg.test_length + 2)
            hyps = [h[0] for h in out]
        for r in bucketed(hyps, refs, lengths, buckets=[(n, n) for n in sorted(set(lengths))],
                          metrics=("exact_match", "token_accuracy")):
            rows.append({"task": task, "model": name, "seed": seed, "length": r["lo"],
                         "n": r["n"], "accuracy": r["exact_match"],
                         "token_accuracy": r["token_accuracy"],
                         "params": count_parameters(model), "width": width,
                         "trained_length": r["lo"] <= cfg.train_length})
    return rows


@register("pointer-net", "pointer network vs fixed-vocabulary seq2seq: accuracy by length on "
          "sorting and convex hull (Vinyals et al. 2015)", PointerNetConfig)
def run(cfg: PointerNetConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt

    jobs = [(cfg, ctx, task, seed) for task in cfg.tasks for seed in ctx.seeds(cfg)]
    rows: list[dict] = []
    with ctx.progress("tasks x seeds", len(jobs)) as advance:
        for job in jobs:
            for r in run_task(*job):
                ctx.log_metrics(r)
                rows.append(r)
            advance(1)
    table = aggregate(rows, ("task", "model", "length"), ("accuracy", "token_accuracy"),
                      count="seeds", columns={"params": lambda rs: rs[0]["params"],
                                              "n": lambda rs: sum(r["n"] for r in rs)})
    fig, axes = plt.subplots(1, len(cfg.tasks), figsize=(5.5 * len(cfg.tasks), 4),
                             squeeze=False)
    for j, task in enumerate(cfg.tasks):
        ax = axes[0, j]
        for name in cfg.models:
            rs = [r for r in table if r["task"] == task and r["model"] == name]
            ax.plot([r["length"] for r in rs], [r["accuracy"] for r in rs], "o-",
                    label=f"{name} ({rs[0]['params'] if rs else 0} params)")
        ax.axvline(cfg.train_length + 0.5, color="gray", ls=":", lw=1)
        ax.set_xlabel("n (numbers / points)")
        ax.set_ylabel("accuracy (whole output right)")
        ax.set_title(task)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    plot = ctx.save_figure(fig, "pointer_net_by_length")
    parts = []
    for task in cfg.tasks:
        for name in cfg.models:
            rs = [r for r in table if r["task"] == task and r["model"] == name]
            seen = [r["accuracy"] for r in rs if r["length"] <= cfg.train_length]
            beyond = [r["accuracy"] for r in rs if r["length"] > cfg.train_length]
            parts.append(f"{task}/{name}: accuracy {_mean(seen):.2f} at trained lengths, "
                         f"{_mean(beyond):.2f} beyond")
    return ExperimentResult(title="pointer-net: accuracy by input length", rows=table,
                            plots=[plot], summary="; ".join(parts) + ".")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")
