"""``deep-rnn``: shallow and deep recurrent networks on JSB Chorales, in the shape of Pascanu et al.

Pascanu, Gulcehre, Cho & Bengio, "How to construct deep recurrent neural networks" (ICLR 2014)
compared on polyphonic music (negative log-likelihood per frame on the test set, their Table 2):

* ``RNN``: the tanh RNN, ``h(t) = tanh(W h(t-1) + U x(t) + b)`` (:class:`ElmanCell`);
* ``sRNN``: two stacked tanh RNNs, ``h_l(t) = tanh(W_l h_l(t-1) + U_l h_{l-1}(t) + b_l)``
  (:class:`StackedCell`; Schmidhuber 1992, El Hihi & Bengio 1996);
* ``DT(S)-RNN``: a deep transition, a 2-layer MLP from (h(t-1), x(t)) to h(t), with the shortcut
  ``W_s h(t-1)`` past its hidden layer (their eq. 6 and Fig. 2 (b*); :class:`DeepTransitionCell`
  with ``shortcut=True``);
* ``DOT(S)-RNN``: the same DT(S) transition with a deep output, one tanh hidden layer between
  h(t) and the output, ``o(t) = V_2 tanh(V_1 h(t) + c_1) + c_2`` (their Section 3.2.3;
  ``RecurrentNetwork(..., readout_layers=2)``);

and, beside them, the gated ``LSTM`` (here ``LSTMCell(variant="NP")``, i.e. ``torch.nn.LSTM``:
no peepholes) and ``GRU`` (Cho et al. 2014's form, ``GRUCell(form="cho")``). Every network ends
in 88 logits into :func:`rnnlab.tasks.music.frame_nll` and is trained by
:mod:`rnnlab.experiments._music_training` (Adam, clipping, early stopping on valid NLL).

Sizes: ``--hidden-size`` is the LSTM's width; with ``--match-params`` (default) every other
network gets the width whose parameter count is closest to that LSTM's (Pascanu et al. also
compared networks of similar size), otherwise all use ``--hidden-size``.

Published numbers: none are printed. Only figures checked against the paper may be (issue
17); the JSB Chorales test NLLs of Pascanu et al. 2014 (their Table 2) and of Chung et al. 2014
that earlier versions printed from memory could not be found in the stored copies of the papers
searched (the reference search's pages corpus holds only the opening of arXiv 1312.6026), so they
were removed. :data:`PUBLISHED` is where verified figures go, each with its table.

Cost (one torch thread, measured on a shared 2-core machine): the default (LSTM width 64, about
45k parameters each, at most 12 epochs, seeds 0,1,2: 18 networks) took 10.6 min wall, 6 CPU-min;
``--quick`` (width 32, 3 epochs, 2 seeds) 2.0 min wall, 1 CPU-min. Closer to the papers' scale
(hours, not run here): ``rnnlab run deep-rnn --hidden-size 128 --epochs 100 --patience 10
--lr 0.003 --seeds 0,1,2,3,4``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnnlab.cells import DeepTransitionCell, ElmanCell, GRUCell, LSTMCell
from rnnlab.experiments._music_training import (
    COIN_FLIP_NLL,
    MusicConfig,
    count_parameters,
    plot_mean_valid_curves,
    train_music_model,
)
from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    mean_std,
    option,
    register,
)
from rnnlab.models.recurrent import RecurrentNetwork
from rnnlab.tasks.music import NUM_KEYS

MODELS = ("RNN", "sRNN", "DT(S)-RNN", "DOT(S)-RNN", "LSTM", "GRU")
_ALIASES = {name.lower(): name for name in MODELS}
_ALIASES.update({"srnn2": "sRNN", "dts": "DT(S)-RNN", "dts-rnn": "DT(S)-RNN",
                 "dots": "DOT(S)-RNN", "dots-rnn": "DOT(S)-RNN", "tanh": "RNN"})

# (source with its table, {model: test NLL}): verified published figures only (see the module
# docstring: none could be verified, so none are printed).
PUBLISHED: list[tuple[str, dict[str, float]]] = []


def canonical_model(name: str) -> str:
    """``"dts"``, ``"DT(S)-RNN"``, ``"dt(s)-rnn"`` -> ``"DT(S)-RNN"``; ``ValueError`` if unknown."""
    key = name.strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return _ALIASES[key]


def build_network(
    name: str, width: int, *, seed: int, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> RecurrentNetwork:
    """The network ``name`` (one of :data:`MODELS`) with ``width`` units per recurrent layer and
    88 logit outputs, initialized from a generator seeded with ``seed``."""
    name = canonical_model(name)
    gen = torch.Generator().manual_seed(seed)
    kw = {"generator": gen, "dtype": dtype}
    d = NUM_KEYS
    readout_layers = 1
    if name == "RNN":
        cell: object = ElmanCell(d, width, **kw)
    elif name == "sRNN":
        cell = [ElmanCell(d, width, **kw), ElmanCell(width, width, **kw)]
    elif name in ("DT(S)-RNN", "DOT(S)-RNN"):
        cell = DeepTransitionCell(d, width, layers=2, shortcut=True, **kw)
        readout_layers = 2 if name == "DOT(S)-RNN" else 1
    elif name == "LSTM":
        cell = LSTMCell(d, width, variant="NP", **kw)
    else:
        cell = GRUCell(d, width, form="cho", **kw)
    net = RecurrentNetwork(cell, d, readout="identity", readout_layers=readout_layers,
                           generator=gen, dtype=dtype)
    return net.to(device) if device is not None else net


def matched_width(name: str, target: int, *, limit: int = 4096) -> int:
    """The width whose network has the parameter count closest to ``target`` (ties: smaller).

    Parameter counts grow strictly with the width, so a bisection finds the crossing."""
    def count(w: int) -> int:
        return count_parameters(build_network(name, w, seed=0))

    lo, hi = 1, 1
    while count(hi) < target and hi < limit:
        lo, hi = hi, min(2 * hi, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count(mid) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda w: (abs(count(w) - target), w))


@dataclass
class DeepRnnConfig(MusicConfig):
    models: tuple[str, ...] = option(MODELS, "networks to train: " + ",".join(MODELS))
    match_params: bool = option(True, "give every network about the parameter count of the "
                                "LSTM with --hidden-size units (else all use --hidden-size)")

    def validate(self) -> None:
        super().validate()
        if len(self.models) == 0:
            raise ValueError("models must list at least one network")
        names = [canonical_model(m) for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models are listed twice: {self.models}")


@register("deep-rnn",
          "RNN, sRNN, DT(S)-RNN, DOT(S)-RNN, LSTM, GRU on JSB Chorales: test NLL as in Pascanu "
          "et al. 2014's table", DeepRnnConfig)
def run(cfg: DeepRnnConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt

    s = cfg.settings()
    names = [canonical_model(m) for m in cfg.models]
    if cfg.match_params:
        target = count_parameters(build_network("LSTM", s.hidden_size, seed=0))
        widths = {n: (s.hidden_size if n == "LSTM" else matched_width(n, target)) for n in names}
    else:
        widths = {n: s.hidden_size for n in names}
    data, source, baseline = cfg.load_data(s)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    with ctx.progress("deep-rnn", len(names) * len(s.seeds) * s.epochs) as advance:
        for seed in s.seeds:
            for name in names:
                model = build_network(name, widths[name], seed=seed, dtype=s.dtype,
                                      device=s.device)
                res = train_music_model(model, data, s.train, seed=seed, device=s.device,
                                        advance=advance, marginal_bias=cfg.marginal_bias)
                row = {"model": name, "seed": seed, "width": widths[name],
                       "parameters": count_parameters(model), **res.metrics()}
                ctx.log_metrics(row)
                runs[name].append({**row, "curve": res.valid_curve})

    # -- the table in the shape of Pascanu et al.'s: one column per network ----------------------
    stats = {n: mean_std([r["test_nll"] for r in runs[n]]) for n in names}
    label = "JSB Chorales" if source.startswith("JSB") else "built-in Bach chorales"
    rows: list[dict] = [
        {"row": f"{label} test NLL: ours (mean of {len(s.seeds)} seeds)",
         **{n: stats[n][0] for n in names}},
        {"row": "ours: std of test NLL over seeds", **{n: stats[n][1] for n in names}},
        {"row": "ours: valid NLL (mean)",
         **{n: mean_std([r["valid_nll"] for r in runs[n]])[0] for n in names}},
        {"row": "ours: parameters", **{n: runs[n][0]["parameters"] for n in names}},
        {"row": "ours: units per recurrent layer", **{n: widths[n] for n in names}},
    ]
    for source_name, values in PUBLISHED:
        rows.append({"row": source_name, **{n: values.get(n) for n in names}})

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    xs = list(range(len(names)))
    ax1.bar(xs, [stats[n][0] for n in names],
            yerr=[0.0 if stats[n][1] != stats[n][1] else stats[n][1] for n in names],
            color="tab:blue", alpha=0.7, capsize=4, label="ours (mean ± std over seeds)")
    for i, n in enumerate(names):
        ax1.scatter([i] * len(runs[n]), [r["test_nll"] for r in runs[n]], color="k", s=12,
                    zorder=3)
    markers = ("D", "s", "^", "v")
    for (source_name, values), marker in zip(PUBLISHED, markers[:len(PUBLISHED)], strict=True):
        pts = [(i, values[n]) for i, n in enumerate(names) if n in values]
        if pts:
            ax1.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=50,
                        color="tab:orange", edgecolor="k", zorder=4,
                        label=source_name.replace("published: ", "published, "))
    ax1.axhline(baseline, ls=":", color="gray", label=f"key frequencies {baseline:.2f}")
    finite = [v for n in names for v in (stats[n][0],) if v == v]
    low = min([*finite, *[v for _, d in PUBLISHED for v in d.values()]], default=7.0)
    ax1.set_ylim(low - 0.7, max([baseline, *finite], default=12.0) + 0.5)
    ax1.set_xticks(xs, [f"{n}\n{runs[n][0]['parameters'] / 1000:.1f}k" for n in names])
    ax1.set_ylabel("test NLL (nats per frame)")
    ax1.legend(fontsize=8)
    plot_mean_valid_curves(ax2, {n: runs[n] for n in names}, baseline)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(f"Deep RNNs on {label}: up to {s.epochs} epochs, seeds {list(s.seeds)}"
                 + (", parameter counts matched to the LSTM" if cfg.match_params else ""))
    fig.tight_layout()
    plot = ctx.save_figure(fig, "deep_rnn")

    ours = ", ".join(f"{n} {stats[n][0]:.3f}" for n in sorted(names, key=lambda n: stats[n][0]))
    published = "; ".join(
        f"{src.replace('published: ', '')}: "
        + ", ".join(f"{k} {v:.3f}" for k, v in values.items())
        for src, values in PUBLISHED
    ) or "none printed (no figure could be verified against the papers)"
    summary = (
        f"Data: {source}. Test NLL (nats/frame, mean over seeds), best first: {ours}. "
        f"Key-frequency baseline {baseline:.3f}, coin flip {COIN_FLIP_NLL:.2f}. "
        f"Published on JSB: {published}. Our budget: LSTM width {s.hidden_size}, "
        f"at most {s.epochs} epochs, {len(s.seeds)} seeds."
    )
    return ExperimentResult(
        title=f"deep-rnn: deep RNNs on {label} (LSTM width {s.hidden_size}, "
              f"seeds {list(s.seeds)})",
        rows=rows, summary=summary, plots=[plot],
        figures={"data": source, "marginal_nll_test": baseline, "coin_flip_nll": COIN_FLIP_NLL,
                 "epochs": s.epochs, "seeds": list(s.seeds), "widths": widths,
                 "parameters": {n: runs[n][0]["parameters"] for n in names},
                 **{f"mean_test_nll_{n}": stats[n][0] for n in names}},
    )
