"""``seq2seq``: exact match and BLEU against source length for the encoder-decoder models of the
course, at matched parameter counts, in the shape of Bahdanau et al. (2015, "Neural machine
translation by jointly learning to align and translate", ICLR; their Fig. 2: BLEU of the
fixed-context RNNenc falls with sentence length, the attention RNNsearch does not).

Models (:class:`rnnlab.seq2seq.Seq2Seq`; ``--models``):

* ``cho``: context = the encoder's last state, fed at every decoder step (Cho et al. 2014), GRU;
  with ``--cho-readout maxout`` the paper's deep output with a maxout layer (their Sec. 4.1);
* ``sutskever``: context = the initial state of a 2-layer LSTM decoder (Sutskever et al. 2014);
* ``sutskever-rev``: the same with every source reversed (their trick);
* ``bahdanau``: additive attention, bidirectional GRU encoder (Bahdanau et al. 2015); with
  ``--bahdanau-readout maxout`` the paper's deep output with a maxout layer (their App. A.2.2);
* ``luong``: "general" multiplicative attention with input feeding (Luong et al. 2015), LSTM.

``--hidden-size`` is the Bahdanau model's width; every other model gets the width whose
parameter count is closest to it (``_seq2seq_common.match_width``).

Tasks (``--tasks``), each generated offline by :mod:`rnnlab.tasks.seq2seq`:

* ``reverse`` (also ``copy``, ``sort``): random digit strings; trained on lengths
  ``[--min-length, --train-length]`` and tested on ``[--min-length, --test-length]``, so the
  buckets beyond ``--train-length`` measure generalisation to longer sources;
* ``dates``: a date written by CLDR patterns (babel) in locales of ``--date-languages``,
  target ISO 8601; tested on held-out locales (never seen in training);
* ``numbers``: German number words to digits (num2words; "einundzwanzig" -> "21": the units
  come before the tens, the alignment is not monotone);
* ``numbers-de-en``: German number words to English number words ("einundzwanzig" ->
  "twenty-one", "dreihundertvierundfünfzig" -> "three hundred and fifty-four"), numbers
  ``0..--number-high``, a fifth of them held out of training (the test set has only those), so
  the models must compose words they saw in other combinations, across a non-monotone
  alignment.

Every model is trained by :class:`rnnlab.train.Trainer` (Adam, norm clipping, checkpoints in
``jobs/<task>-<model>-seed<k>/``, so that ``--resume`` continues a stopped run; optional early
stopping and averaging of the last epochs' weights: ``_seq2seq_common.fit_model``), decoded
greedily, and scored per source-length bucket by exact match, token accuracy, BLEU and chrF
(sacrebleu; signatures in the summary). Attention heat-maps (one test example per task) are
written for the attention models, and every trained model is saved under
``models/<task>-<model>-seed<k>/`` for ``rnnlab translate --model``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab.experiments._seq2seq_common import (
    TrainingOptions,
    build_seq2seq,
    count_parameters,
    decode_pairs,
    encode_pairs,
    fit_model,
    match_width,
    save_translator,
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
    Vocabulary,
    bucketed,
    date_locale_split,
    number_split,
    number_words,
    signatures,
    token_task,
)

MODELS: dict[str, dict[str, Any]] = {
    "cho": {"context": "last_state", "cell": "gru"},
    "sutskever": {"context": "initial_state", "cell": "lstm", "num_layers": 2},
    "sutskever-rev": {"context": "initial_state", "cell": "lstm", "num_layers": 2,
                      "reverse_source": True},
    "bahdanau": {"context": "attention", "attention": "bahdanau", "cell": "gru",
                 "bidirectional": True},
    "luong": {"context": "attention", "attention": "general", "input_feeding": True,
              "cell": "lstm"},
}
TASKS = ("reverse", "copy", "sort", "dates", "numbers", "numbers-de-en")
REFERENCE = "bahdanau"


@dataclass
class Seq2SeqConfig(TrainingOptions):
    tasks: tuple[str, ...] = option(("reverse", "dates", "numbers-de-en"), "tasks to run",
                                    choices=TASKS)
    models: tuple[str, ...] = option(tuple(MODELS), "models to compare", choices=tuple(MODELS))
    hidden_size: int = option(48, "width of the bahdanau model; the others match its parameter "
                                  "count", low=4)
    embed_size: int = option(16, "embedding size", low=1)
    min_length: int = option(2, "shortest source (token tasks)", low=1)
    train_length: int = option(12, "longest training source (token tasks)", low=1)
    test_length: int = option(20, "longest test source (token tasks)", low=1)
    bucket_width: int = option(3, "width of the source-length buckets (tokens)", low=1)
    date_languages: tuple[str, ...] = option(("en", "de", "fr", "es", "it", "nl", "pt"),
                                             "languages of the date locales (CLDR)")
    held_out_locales: int = option(20, "date locales held out of training", low=1)
    number_high: int = option(999, "numbers-de-en: the numbers 0..N, a fifth of them held out "
                                   "of training", low=10)
    bahdanau_readout: str = option("linear", "output layer of the bahdanau model: linear, or "
                                             "maxout (the paper's deep output, their App. "
                                             "A.2.2; the other models are matched to its "
                                             "parameter count)", choices=("linear", "maxout"))
    cho_readout: str = option("linear", "output layer of the cho model: linear, or maxout "
                                        "(Cho et al. 2014's deep output, their Sec. 4.1; "
                                        "matched to the bahdanau model's parameter count "
                                        "like the others)", choices=("linear", "maxout"))

    def validate(self) -> None:
        super().validate()
        if self.test_length < self.train_length:
            raise ValueError("test_length must be >= train_length")
        if self.train_length < self.min_length:
            raise ValueError("train_length must be >= min_length")


def make_task(cfg: Seq2SeqConfig, task: str, seed: int) -> tuple[Pairs, Pairs, str]:
    """Train and test pairs of ``task`` and the tokenizer they were cut with."""
    if task in ("reverse", "copy", "sort"):
        train = token_task(task, cfg.train_size, cfg.min_length, cfg.train_length, seed=seed)
        test = token_task(task, cfg.test_size, cfg.min_length, cfg.test_length,
                          seed=seed + 10_000)
        return train, test, "char"
    if task == "dates":
        train, test = date_locale_split(cfg.train_size, cfg.test_size,
                                        languages=cfg.date_languages,
                                        test_locales=cfg.held_out_locales, seed=seed,
                                        start=dt.date(2000, 1, 1), end=dt.date(2099, 12, 31))
        return train, test, "char"
    if task == "numbers-de-en":
        train, test = number_split(cfg.train_size, cfg.test_size, source="de", target="en",
                                   low=0, high=cfg.number_high, held_out=0.2, seed=seed)
        return train, test, "char"
    train = number_words(cfg.train_size, source="de", low=0, high=9999, seed=seed)
    test = number_words(cfg.test_size, source="de", low=0, high=9999, seed=seed + 10_000)
    return train, test, "char"


def readouts(cfg: Seq2SeqConfig) -> dict[str, str]:
    """The output layer of each model that has a choice (the others' readout is fixed)."""
    return {"bahdanau": cfg.bahdanau_readout, "cho": cfg.cho_readout}


def build(name: str, width: int, src_vocab: Vocabulary, tgt_vocab: Vocabulary,
          embed_size: int, max_len: int, seed: int, readout: dict[str, str] | None = None
          ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Model ``name`` (:data:`MODELS`) with the output layer ``readout[name]`` if given."""
    spec = MODELS[name]
    kind = (readout or {}).get(name, "linear")
    if kind != "linear":
        spec = {**spec, "readout": kind}
    return build_seq2seq(spec, width, src_vocab, tgt_vocab, embed_size, max_len, seed)


def _width_model(name: str, src_vocab: Vocabulary, tgt_vocab: Vocabulary, embed_size: int,
                 readout: dict[str, str], width: int) -> torch.nn.Module:
    return build(name, width, src_vocab, tgt_vocab, embed_size, 64, 0, readout)[0]


def run_one(cfg: Seq2SeqConfig, ctx: RunContext, task: str, name: str, seed: int,
            data: tuple[Pairs, Pairs, str], vocabs: tuple[Vocabulary, Vocabulary],
            width: int) -> tuple[list[dict], Any]:
    train, test, tok = data
    src_vocab, tgt_vocab = vocabs
    max_len = max(max(len(s) for s in train.sources + test.sources),
                  max(len(t) for t in train.targets + test.targets)) + 8
    torch.manual_seed(seed)
    model, kwargs = build(name, width, src_vocab, tgt_vocab, cfg.embed_size, max_len, seed,
                          readouts(cfg))
    job = f"{task}-{name}-seed{seed}"
    epochs = fit_model(ctx, job, model, encode_pairs(train, src_vocab, tgt_vocab), cfg, seed)
    max_tgt = max(len(t) for t in test.targets) + 5
    hyps, attns = decode_pairs(model, test.sources, src_vocab, tgt_vocab, max_len=max_tgt)
    best = [h[0] for h in hyps]
    rows = bucketed(best, test.targets, test.source_lengths(), buckets=cfg.bucket_width)
    params = count_parameters(model)
    for r in rows:
        r.update({"task": task, "model": name, "seed": seed, "params": params,
                  "final_loss": epochs[-1]["train_loss"],
                  "beyond_train": task in ("reverse", "copy", "sort")
                  and r["lo"] > cfg.train_length})
    save_translator(ctx.run_dir / "models" / job, model, kwargs,
                    src_vocab, tgt_vocab, tok, {"task": task, "model": name, "seed": seed})
    example = None
    shown = [i for i in range(len(test)) if best[i] and attns[i] is not None]
    if shown:  # the longest source up to 40 tokens with a non-empty output, a right one first
        k = max(shown, key=lambda i: (len(test.sources[i]) <= 40, best[i] == test.targets[i],
                                      len(test.sources[i])))
        example = (test.sources[k], best[k], attns[k])
    return rows, example


@register("seq2seq", "exact match and BLEU vs source length: Cho, Sutskever (+reversal), "
          "Bahdanau and Luong attention at matched parameter counts", Seq2SeqConfig)
def run(cfg: Seq2SeqConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt

    seeds = ctx.seeds(cfg)
    all_rows: list[dict] = []
    examples: dict[tuple[str, str], Any] = {}
    widths: dict[tuple[str, str], int] = {}
    with ctx.progress("models", len(cfg.tasks) * len(cfg.models) * len(seeds)) as advance:
        for task in cfg.tasks:
            for seed in seeds:
                data = make_task(cfg, task, seed)
                train = data[0]
                # From the training set only: characters that only held-out locales use map
                # to <unk>, as for any user input.
                src_vocab = Vocabulary.build(train.sources)
                tgt_vocab = Vocabulary.build(train.targets)
                ref, _ = build(REFERENCE, cfg.hidden_size, src_vocab, tgt_vocab,
                               cfg.embed_size, 64, seed, readouts(cfg))
                target = count_parameters(ref)
                for name in cfg.models:
                    key = (task, name)
                    if key not in widths:
                        widths[key] = cfg.hidden_size if name == REFERENCE else match_width(
                            functools.partial(_width_model, name, src_vocab, tgt_vocab,
                                              cfg.embed_size, readouts(cfg)), target)
                    rows, ex = run_one(cfg, ctx, task, name, seed, data,
                                       (src_vocab, tgt_vocab), widths[key])
                    for r in rows:
                        r["width"] = widths[key]
                        ctx.log_metrics(r)
                    all_rows += rows
                    if ex is not None and key not in examples:
                        examples[key] = ex
                    advance(1)

    metrics = ("exact_match", "token_accuracy", "bleu", "chrf")
    table = aggregate(all_rows, ("task", "model", "lo", "hi"), metrics, count="seeds",
                      columns={"params": lambda rs: rs[0]["params"],
                               "width": lambda rs: rs[0]["width"],
                               "n": lambda rs: sum(r["n"] for r in rs)})
    plots = [plot_curves(plt, ctx, cfg, table)]
    for (task, name), (src, hyp, attn) in examples.items():
        plots.append(plot_heatmap(plt, ctx, task, name, src, hyp, attn))
    sig = signatures(tokens=True)
    (ctx.run_dir / "sacrebleu_signatures.json").write_text(json.dumps(sig, indent=1) + "\n")
    summary = summarise(cfg, table) + f" sacrebleu: BLEU {sig['bleu']}; chrF {sig['chrf']}."
    return ExperimentResult(title="seq2seq: exact match and BLEU against source length",
                            rows=table, plots=plots, summary=summary,
                            figures={"signatures": sig})


def summarise(cfg: Seq2SeqConfig, table: list[dict]) -> str:
    parts = []
    for task in cfg.tasks:
        for name in cfg.models:
            rs = [r for r in table if r["task"] == task and r["model"] == name]
            if not rs:
                continue
            n = sum(r["n"] for r in rs)
            em = sum(r["exact_match"] * r["n"] for r in rs) / n
            parts.append(f"{task}/{name} ({rs[0]['params']} params): exact match {em:.2f}, "
                         f"longest bucket {rs[-1]['exact_match']:.2f}")
    return "; ".join(parts) + "."


def plot_curves(plt: Any, ctx: RunContext, cfg: Seq2SeqConfig, table: list[dict]) -> Any:
    fig, axes = plt.subplots(2, len(cfg.tasks), figsize=(5.5 * len(cfg.tasks), 8),
                             squeeze=False)
    for j, task in enumerate(cfg.tasks):
        for name in cfg.models:
            rs = [r for r in table if r["task"] == task and r["model"] == name]
            x = [(r["lo"] + r["hi"]) / 2 for r in rs]
            axes[0, j].plot(x, [r["exact_match"] for r in rs], "o-", label=name)
            axes[1, j].plot(x, [r["bleu"] for r in rs], "o-", label=name)
        for i, what in enumerate(("exact match", "BLEU")):
            ax = axes[i, j]
            if task in ("reverse", "copy", "sort"):
                ax.axvline(cfg.train_length + 0.5, color="gray", ls=":", lw=1)
            ax.set_xlabel("source length (tokens)")
            ax.set_ylabel(what)
            ax.set_title(f"{task}: {what}")
            ax.grid(alpha=0.3)
        axes[0, j].legend(fontsize=8)
    return ctx.save_figure(fig, "seq2seq_by_length")


def plot_heatmap(plt: Any, ctx: RunContext, task: str, name: str, src: list[str],
                 hyp: list[str], attn: torch.Tensor) -> Any:
    a = attn.detach().float().cpu().numpy()
    ys = [*hyp, "</s>"][: a.shape[0]]
    fig, ax = plt.subplots(figsize=(0.3 * len(src) + 2, 0.3 * len(ys) + 1.5))
    ax.imshow(a[: len(ys), : len(src)], cmap="Greys", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(src)), [repr(c)[1:-1] or " " for c in src], fontsize=8)
    ax.set_yticks(range(len(ys)), ys, fontsize=8)
    ax.set_ylim(len(ys) - 0.5, -0.5)
    ax.set_xlim(-0.5, len(src) - 0.5)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(f"{task}: {name} attention")
    return ctx.save_figure(fig, f"attention_{task}_{name}")
