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
:mod:`rnnlab.experiments._music_training` (the default run: Adam, clipping, early stopping on
the valid NLL) or, with ``preset=paper``, by :func:`train_resumable` (below).

Sizes: ``--hidden-size`` is the LSTM's width; with ``--match-params`` (default) every other
network gets the width whose parameter count is closest to that LSTM's, so that the comparison
is between networks of equal size; otherwise all use ``--hidden-size``.

Published numbers (issue 17: only figures checked against a stored copy are printed, each with
where it was read; :data:`PUBLISHED`): Pascanu et al. 2014's own JSB Chorales test NLLs (their
Table 2) could not be checked -- the reference search's stored copies of arXiv 1312.6026 (ar5iv,
arxiv-vanity, deepai) hold only the abstract and introduction, and no later paper, note or
repository in the corpus quotes their music table -- so none of them is printed. What is
printed: the JSB Chorales test NLLs of Chung, Gulcehre, Cho & Bengio 2014 ("Empirical
evaluation of gated recurrent neural networks on sequence modeling", arXiv 1412.3555v1, Table
2: tanh RNN 9.10, GRU 8.54, LSTM 8.67, beside our ``RNN``, ``GRU`` and ``LSTM``), as quoted by a
third-party reading note of that paper (code index; it cites Table 2, PDF p. 6) and, for the
GRU, by paperswithcode's listing of the paper's results; the paper's own page is not in the
corpus. Their networks had about 20k parameters each (their Table 1), ours about 45k by
default. ``docs/deep_rnn.md`` lists every search made.

``preset=paper`` (:data:`PAPER`) puts the settings of Pascanu's own deep-transition RNN code
(GroundHog, ``tutorials/DT_RNN_Tut.py``, written for Penn Treebank; the music section of the
paper is not in the stored copies) in place of the options left at their defaults, and trains
through :class:`rnnlab.train.Trainer`, which checkpoints every epoch in the run folder so that
``--resume`` continues a stopped run (bit-identically on the same machine). Each setting's
source is in :data:`PAPER_SOURCES`.

Cost: measured figures are in ``docs/deep_rnn.md`` (not here: they depend on the machine).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab.cells import DeepTransitionCell, ElmanCell, GRUCell, LSTMCell
from rnnlab.experiments._music_training import (
    COIN_FLIP_NLL,
    LR_RULES,
    MusicConfig,
    ResumableTraining,
    Settings,
    TrainResult,
    count_parameters,
    plot_mean_valid_curves,
    train_music_model,
    train_resumable,
)
from rnnlab.experiments._presets import apply_preset
from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    mean_std,
    option,
    register,
)
from rnnlab.init import sparse_singular_
from rnnlab.models.recurrent import RecurrentNetwork
from rnnlab.tasks.music import NUM_KEYS
from rnnlab.train import Trainer
from rnnlab.train.weight_noise import is_bias

MODELS = ("RNN", "sRNN", "DT(S)-RNN", "DOT(S)-RNN", "LSTM", "GRU")
_ALIASES = {name.lower(): name for name in MODELS}
_ALIASES.update({"srnn2": "sRNN", "dts": "DT(S)-RNN", "dts-rnn": "DT(S)-RNN",
                 "dots": "DOT(S)-RNN", "dots-rnn": "DOT(S)-RNN", "tanh": "RNN"})

# (source with where it was read, {model: test NLL in nats per frame}): verified figures only.
# Chung et al. 2014, Table 2, JSB Chorales test: tanh RNN 9.10, GRU 8.54, LSTM 8.67 (their
# tanh-RNN, GRU-RNN and LSTM-RNN of about 20k parameters, Table 1; RMSProp, weight noise 0.075,
# clipping at 1, early stopping on the validation set).
CHUNG_2014 = ("published: Chung et al. 2014, Table 2, JSB test NLL (as quoted by a reading "
              "note of arXiv 1412.3555 and paperswithcode)")
PUBLISHED: list[tuple[str, dict[str, float]]] = [
    (CHUNG_2014, {"RNN": 9.10, "GRU": 8.54, "LSTM": 8.67})]

# Where each published figure was read (the tests of issue 17 check PUBLISHED against it).
_CHUNG_NOTE = ("third-party reading note of arXiv 1412.3555v1 (code index, find_string file id "
               "68752235150), quoting Table 2 (PDF p. 6), row 'JSB Chorales | test'")
PUBLISHED_SOURCES = {
    (CHUNG_2014, "RNN"): (9.10, _CHUNG_NOTE + ": tanh 9.10"),
    (CHUNG_2014, "GRU"): (8.54, _CHUNG_NOTE + ": GRU 8.54; also paperswithcode.com/paper/"
                          "empirical-evaluation-of-gated-recurrent2 (stored copy): 'Music "
                          "Modeling, JSB Chorales, GRU, NLL 8.54'"),
    (CHUNG_2014, "LSTM"): (8.67, _CHUNG_NOTE + ": LSTM 8.67"),
}

PRESETS = ("default", "paper")
_GROUNDHOG = "github.com/pascanur/GroundHog, tutorials/DT_RNN_Tut.py, __main__ state"

# GroundHog's weight noise, not in the preset: ``--weight-noise 0.075`` is its value (measured
# here to stall the tanh networks on JSB; docs/deep_rnn.md).
WEIGHT_NOISE_SOURCE = (_GROUNDHOG + ": state['weight_noise'] = True, "
                       "state['weight_noise_amount'] = 0.075, state['no_noise_bias'] = True; "
                       "groundhog/models/LM_model.py draws it (trng.normal, std="
                       "weight_noise_amount) before each update and removes it to validate")

# What ``preset=paper`` puts in place of the options still at their defaults. Sources in
# PAPER_SOURCES; the paper's own music settings (its Section 5 and Table 1) are not in the
# stored copies, so these are the settings of Pascanu's deep-transition code for Penn Treebank.
PAPER: dict[str, Any] = {
    "models": ("RNN", "DT(S)-RNN", "DOT(S)-RNN", "sRNN"),
    "hidden_size": 200,
    "match_params": False,
    "optimizer": "sgd",
    "lr": 1.0,
    "momentum": 0.995,
    "clip_norm": 1.0,
    "batch_size": 1,
    "patience": None,
    "lr_halving": 2e-4,
    "min_lr": 5e-7,
    "lr_check_updates": 1000,
    "lr_rule": "groundhog",
    "init": "groundhog",
    "epochs": 150,
    "seeds": (0, 1, 2),
}
PAPER_SOURCES: dict[str, str] = {
    "models": "Pascanu et al. 2014, abstract (stored ar5iv copy): deep transition, deep "
              "output and stacked RNNs against the shallow RNN, on polyphonic music",
    "hidden_size": _GROUNDHOG + ": state['nhids'] = '[200, 200]' (the DT(S) transition)",
    "match_params": _GROUNDHOG + ": one width for every layer (not parameter-matched)",
    "optimizer": _GROUNDHOG + ": SGD_momentum when state['moment'] >= 0; "
                 "groundhog/trainer/SGD_momentum.py clips the velocity (ClippedMomentumSGD)",
    "lr": _GROUNDHOG + ": state['lr'] = 1.",
    "momentum": _GROUNDHOG + ": state['moment'] = 0.995",
    "clip_norm": _GROUNDHOG + ": state['cutoff'] = 1. (norm rescaling of the velocity)",
    "batch_size": _GROUNDHOG + ": state['bs'] = 1",
    "patience": _GROUNDHOG + ": stops on the learning rate, not on a patience count",
    "lr_halving": _GROUNDHOG + ": state['divide_lr'] = 2., state['cost_threshold'] = 1.0002",
    "min_lr": _GROUNDHOG + ": state['minlr'] = 5e-7 (the job stops below it)",
    "lr_check_updates": _GROUNDHOG + ": state['validFreq'] = 1000 (groundhog/mainLoop.py "
                        "validates, and may halve the rate, every validFreq updates); here at "
                        "the end of the first epoch past each 1000 updates",
    "lr_rule": "github.com/pascanur/GroundHog, groundhog/mainLoop.py, MainLoop.main: "
               "'if valcost > self.old_cost * self.state['cost_threshold']: self.patience -= "
               "1 ... elif valcost < self.old_cost: ... self.old_cost = valcost'; at "
               "'self.patience < 1': 'self.algo.lr = self.algo.lr / self.state['divide_lr']' "
               "and 'p.set_value(bparams[p.name])' (the best validated weights); "
               "state['patience'] = 1 in " + _GROUNDHOG,
    "init": _GROUNDHOG + ": recurrent layers state['rec_init'] = \"'sample_weights'\", "
            "state['rec_sparse'] = '20', state['rec_scale'] = '1.' (groundhog/utils/utils.py "
            "sample_weights: 'Initialization that fixes the largest singular value.'); input "
            "and output weights 'sample_weights_classic' with state['inp_scale'] = .1, "
            "state['out_scale'] = .1, state['inp_sparse'] = -1 (dense); state['rec_bias'] = "
            "'.0'; how these map onto our matrices: groundhog_init_",
    "epochs": ("ours: a cap (GroundHog caps updates at 1e8 and time at 48 h); under its "
               "rate rule the 5e-7 stop is not reached in reasonable time, and a DOT(S)-RNN run "
               "changed its valid NLL by < 3e-3 from epoch 150 to 280"),
    "seeds": "ours (the paper's seeds are not in the stored copies)",
}


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


INITS = ("default", "groundhog")
TANH_MODELS = ("RNN", "sRNN", "DT(S)-RNN", "DOT(S)-RNN")
_DATA_INPUTS = ("cell.weight_ih", "cell.layers.0.weight_ih")
_OUTPUT_PREFIXES = ("readout.", "output_hidden.")


def groundhog_init_(net: RecurrentNetwork, *, seed: int) -> RecurrentNetwork:
    """Initialize ``net`` (a :func:`build_network` network) as Pascanu's GroundHog code does
    its deep-transition model (``tutorials/DT_RNN_Tut.py``; :data:`PAPER_SOURCES` ``"init"``):

    * the weights from the 88 keys (``cell.weight_ih``, or the first layer's of a stack) and
      every output weight (``readout``, and the DOT(S)-RNN's ``output_hidden``): dense,
      N(0, 0.1^2) (``sample_weights_classic``, ``inp_scale``/``out_scale`` 0.1);
    * every other weight, i.e. those between hidden units inside the recurrence (``weight_hh``,
      the deep transition's hidden layer and shortcut, the stack's upper ``weight_ih``):
      :func:`rnnlab.init.sparse_singular_` with 20 nonzeros per input unit and a largest
      singular value of 1 (``sample_weights``, ``rec_sparse`` 20, ``rec_scale`` 1);
    * hidden biases 0 (``rec_bias``); the readout bias is left to the marginal-frequency
      initialisation of the training (:func:`set_marginal_bias`).

    The mapping onto our matrices is ours: GroundHog's model first embeds the input linearly
    (400 units) and its recurrent layer class differs in detail. Draws come from a generator
    seeded with ``seed``. Gated cells (LSTM, GRU) are refused: the rule would zero their gate
    biases and scale the stacked gate matrices as one."""
    cell = net.cell
    tanh_cells = (ElmanCell, DeepTransitionCell)
    layers = getattr(cell, "layers", None)
    parts = list(layers) if layers is not None else [cell]
    if not all(isinstance(c, tanh_cells) for c in parts):
        kinds = ", ".join(sorted({type(c).__name__ for c in parts}))
        raise ValueError(f"groundhog_init_ initialises tanh networks (ElmanCell, "
                         f"DeepTransitionCell and stacks of them), not {kinds}")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if is_bias(name):
                if not name.startswith("readout."):
                    p.zero_()
            elif name in _DATA_INPUTS or name.startswith(_OUTPUT_PREFIXES):
                draw = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.1
                p.copy_(draw)
            elif p.dim() == 2:
                sparse_singular_(p, 20, 1.0, generator=gen)
            else:
                raise ValueError(f"groundhog_init_ has no rule for the parameter {name!r} "
                                 f"of shape {tuple(p.shape)}")
    return net


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


def _job_name(model: str, seed: int) -> str:
    """A folder name for one (model, seed): ``DT(S)-RNN``, 2 -> ``DTS-RNN-seed2``."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '', model)}-seed{seed}"


# ------------------------------------------------------------------------------------------------
@dataclass
class DeepRnnConfig(MusicConfig):
    models: tuple[str, ...] = option(MODELS, "networks to train: " + ",".join(MODELS))
    match_params: bool = option(True, "give every network about the parameter count of the "
                                "LSTM with --hidden-size units (else all use --hidden-size)")
    preset: str = option("default", "paper: the settings of Pascanu's deep-transition code "
                         "(see PAPER in the module; resumable; on JSB 2.5-8 CPU-minutes per "
                         "network and seed) in place of options left at their defaults",
                         choices=PRESETS)
    optimizer: str = option("adam", "adam or sgd (sgd: preset=paper only)",
                            choices=("adam", "sgd"))
    momentum: float = option(0.0, "SGD momentum (preset=paper only)", low=0, high=1,
                             high_open=True)
    lr_halving: float | None = option(None, "lr-halving margin: plateau rule, halve after a "
                                      "check whose valid NLL is not below the best by this "
                                      "relative margin; groundhog rule, the cost threshold "
                                      "is 1 + this (preset=paper only)", low=0)
    min_lr: float | None = option(None, "stop once the learning rate is below this "
                                  "(preset=paper only)", low=0, low_open=True)
    lr_check_updates: int | None = option(None, "take the lr-halving decision only at the end "
                                          "of the first epoch past every this many updates "
                                          "(none: every epoch; preset=paper only)", low=1)
    lr_rule: str | None = option(None, "the lr-halving rule: plateau (halve unless the valid "
                                 "NLL beats the best by lr-halving) or groundhog (halve when "
                                 "it is worse than the reference by the threshold, and put "
                                 "back the best weights; GroundHog's mainLoop.py); none: "
                                 "plateau (preset=paper only)", choices=LR_RULES)
    weight_noise: float | None = option(None, "std of Gaussian weight noise, a fresh draw per "
                                        "update, biases excepted (none or 0: off; "
                                        "preset=paper only)", low=0)
    init: str | None = option(None, "initialisation: default (the cells' own) or groundhog "
                              "(GroundHog's sparse recurrent weights with largest singular "
                              "value 1, N(0, 0.01) input/output weights; none: default; "
                              "preset=paper only)", choices=INITS)

    def validate(self) -> None:
        super().validate()
        if len(self.models) == 0:
            raise ValueError("models must list at least one network")
        names = [canonical_model(m) for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models are listed twice: {self.models}")
        if self.preset == "default":
            extra = [name for name, value, default in (
                ("optimizer", self.optimizer, "adam"), ("momentum", self.momentum, 0.0),
                ("lr_halving", self.lr_halving, None), ("min_lr", self.min_lr, None),
                ("lr_check_updates", self.lr_check_updates, None),
                ("lr_rule", self.lr_rule, None), ("weight_noise", self.weight_noise or None, None),
                ("init", self.init, None))
                if value != default]
            if extra:
                raise ValueError(f"{', '.join(extra)} apply to preset=paper only (the default "
                                 "run trains with Adam): add preset=paper or drop them")
        if self.quick and self.preset != "default":
            raise ValueError("quick and preset=paper exclude each other: pick one")


def effective_config(cfg: DeepRnnConfig) -> DeepRnnConfig:
    """``cfg`` with :data:`PAPER` in place of the options left at their defaults when
    ``preset=paper`` (explicit options win); ``cfg`` itself otherwise."""
    return apply_preset(cfg, PAPER) if cfg.preset == "paper" else cfg


def nll_curves(runs: dict[str, list[dict]]) -> dict[str, list[float]]:
    """Per network, the validation NLL per epoch averaged over its seeds, up to the last epoch
    that every seed reached (what :func:`plot_mean_valid_curves` draws)."""
    out: dict[str, list[float]] = {}
    for name, name_runs in runs.items():
        curves = [r["curve"] for r in name_runs if r["curve"]]
        if curves:
            length = min(len(c) for c in curves)
            out[name] = [sum(c[e] for c in curves) / len(curves) for e in range(length)]
    return out


def _train_one(cfg: DeepRnnConfig, s: Settings, name: str, width: int, seed: int,
               data: dict[str, list[torch.Tensor]], ctx: RunContext,
               advance: Callable[[int], None]) -> TrainResult:
    model = build_network(name, width, seed=seed, dtype=s.dtype, device=s.device)
    if cfg.init == "groundhog":
        groundhog_init_(model, seed=seed)
    if cfg.preset != "paper":
        return train_music_model(model, data, s.train, seed=seed, device=s.device,
                                 advance=advance, marginal_bias=cfg.marginal_bias)
    plan = ResumableTraining(
        epochs=s.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=s.train.lr,
        momentum=cfg.momentum, clip_norm=cfg.clip_norm, patience=cfg.patience,
        lr_halving=cfg.lr_halving, min_lr=cfg.min_lr, lr_check_updates=cfg.lr_check_updates,
        lr_rule=cfg.lr_rule or "plateau", weight_noise=cfg.weight_noise or None)
    done = [0]

    def tick(trainer: Trainer, event: str) -> None:
        if event == "epoch":
            done[0] += 1
            advance(1)

    res = train_resumable(model, data, plan, seed=seed, run_dir=ctx.job_dir(_job_name(name, seed)),
                          device=s.device, marginal_bias=cfg.marginal_bias, callbacks=[tick])
    advance(max(0, s.epochs - done[0]))
    return res


@register("deep-rnn",
          "RNN, sRNN, DT(S)-RNN, DOT(S)-RNN, LSTM, GRU on JSB Chorales: test NLL as in Pascanu "
          "et al. 2014's table; preset=paper for their code's settings", DeepRnnConfig)
def run(cfg: DeepRnnConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt

    if cfg.preset == "paper" and "init" in ctx.options_new_since_start:
        raise ValueError(
            f"--resume {ctx.resume_dir}: this paper-preset run was started before the "
            "preset initialised with GroundHog's sparse weights (init=groundhog); its "
            "finished networks used the cells' own initialisation, so finishing it now "
            "would mix the two. Start it again in a new folder (or with --init default "
            "there to repeat the old setting)")
    cfg = effective_config(cfg)
    s = cfg.settings()
    names = [canonical_model(m) for m in cfg.models]
    if cfg.init == "groundhog":
        gated = [n for n in names if n not in TANH_MODELS]
        if gated:
            raise ValueError(
                f"init=groundhog (the paper preset's) is GroundHog's initialisation of its tanh "
                f"networks ({', '.join(TANH_MODELS)}); {', '.join(gated)} would lose their "
                "gate biases' start: add --init default, or drop them from --models")
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
                res = _train_one(cfg, s, name, widths[name], seed, data, ctx, advance)
                row = {"model": name, "seed": seed, "width": widths[name],
                       "parameters": count_parameters(build_network(name, widths[name],
                                                                    seed=0)),
                       **res.metrics()}
                ctx.log_metrics(row)
                runs[name].append({**row, "curve": res.valid_curve})

    # -- the table in the shape of Pascanu et al.'s: one column per network ----------------------
    stats = {n: mean_std([r["test_nll"] for r in runs[n]]) for n in names}
    label = "JSB Chorales" if source.startswith("JSB") else "built-in Bach chorales"
    how = (f"SGD lr {s.train.lr:g}, momentum {cfg.momentum:g}" if cfg.optimizer == "sgd"
           else f"Adam lr {s.train.lr:g}")
    if cfg.lr_halving is not None:
        how += f", {cfg.lr_rule or 'plateau'} lr halving"
    if cfg.init == "groundhog":
        how += ", GroundHog init"
    if cfg.weight_noise:
        how += f", weight noise {cfg.weight_noise:g}"
    budget = (f"budget: at most {s.epochs} epochs ({how}, batch {cfg.batch_size}, clip "
              f"{cfg.clip_norm}), {len(s.seeds)} seeds, "
              + (f"parameters matched to an LSTM of width {s.hidden_size}" if cfg.match_params
                 else f"width {s.hidden_size}"))
    rows: list[dict] = [
        {"row": f"{label} test NLL: ours (mean of {len(s.seeds)} seeds)",
         **{n: stats[n][0] for n in names}},
        {"row": "ours: std of test NLL over seeds", **{n: stats[n][1] for n in names}},
        {"row": "ours: valid NLL (mean)",
         **{n: mean_std([r["valid_nll"] for r in runs[n]])[0] for n in names}},
        {"row": "ours: epochs run (mean)",
         **{n: mean_std([r["epochs_run"] for r in runs[n]])[0] for n in names}},
        {"row": "ours: parameters", **{n: runs[n][0]["parameters"] for n in names}},
        {"row": "ours: units per recurrent layer", **{n: widths[n] for n in names}},
    ]
    for source_name, values in PUBLISHED:
        if any(n in values for n in names):
            rows.append({"row": source_name, **{n: values.get(n) for n in names}})
            rows.append({"row": "ours minus published",
                         **{n: (stats[n][0] - values[n] if n in values else None)
                            for n in names}})

    fig, ax1 = plt.subplots(figsize=(7.5, 5))
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
    ax1.set_title(f"Deep RNNs on {label}: test NLL\n{budget}", fontsize=9)
    fig.tight_layout()
    plot = ctx.save_figure(fig, "deep_rnn")

    # -- NLL against epochs, one line per architecture ----------------------------------------
    curves = nll_curves(runs)
    fig2, ax2 = plt.subplots(figsize=(7.5, 5))
    plot_mean_valid_curves(ax2, {n: runs[n] for n in names}, baseline,
                           baseline_label=f"key-frequency baseline (test) {baseline:.2f}")
    ax2.set_ylabel("validation NLL (nats per frame), mean over seeds")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    ax2.set_title(f"Validation NLL per epoch on {label}\n{budget}", fontsize=9)
    fig2.tight_layout()
    curve_plot = ctx.save_figure(fig2, "deep_rnn_nll_epochs")

    ours = ", ".join(f"{n} {stats[n][0]:.3f}" for n in sorted(names, key=lambda n: stats[n][0]))
    compared, above = [], []
    for src, values in PUBLISHED:
        for n, v in values.items():
            if n in names:
                diff = stats[n][0] - v
                compared.append(f"{n} {v:.2f} ({src.replace('published: ', '')}); ours "
                                f"{stats[n][0]:.2f}, {diff:+.2f}")
                if diff > 0:
                    above.append(n)
    published = "; ".join(compared) or "none of the networks run here has a checked figure"
    why = (f"Ours are above the published figure for {', '.join(above)}: our budget (above) "
           f"is the first suspect, then sizes and training settings that differ from the "
           f"paper's (docs/deep_rnn.md). " if above else "")
    summary = (
        f"Data: {source}. Test NLL (nats/frame, mean over seeds), best first: {ours}. "
        f"Key-frequency baseline {baseline:.3f}, coin flip {COIN_FLIP_NLL:.2f}. "
        f"Published, checked: {published}"
        + (" (Chung et al.'s networks had about 20k parameters, their Table 1)" if compared
           else "")
        + f". Our {budget}. {why}Pascanu et al. 2014's own JSB "
        f"figures could not be checked, so none is printed (docs/deep_rnn.md)."
    )
    return ExperimentResult(
        title=f"deep-rnn: deep RNNs on {label} ({budget})",
        rows=rows, summary=summary, plots=[plot, curve_plot],
        figures={"data": source, "marginal_nll_test": baseline, "coin_flip_nll": COIN_FLIP_NLL,
                 "epochs": s.epochs, "seeds": list(s.seeds), "widths": widths,
                 "preset": cfg.preset, "budget": budget,
                 "parameters": {n: runs[n][0]["parameters"] for n in names},
                 "nll_curves": curves,
                 **{f"mean_test_nll_{n}": stats[n][0] for n in names}},
    )
