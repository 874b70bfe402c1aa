"""``lstm-variants``: the vanilla LSTM and Greff et al.'s eight variants on JSB Chorales.

Greff, Srivastava, Koutník, Steunebrink & Schmidhuber, "LSTM: A Search Space Odyssey" (IEEE
TNNLS 2017) trained the vanilla LSTM (input, forget and output gates, peepholes, tanh input and
output activations) and eight variants, each removing or adding one part (NIG, NFG, NOG, NIAF,
NOAF, NP, CIFG, FGR; see :mod:`rnnlab.cells.lstm`), on TIMIT, IAM Online and JSB Chorales, and
marked a variant as different from the vanilla LSTM when Welch's t-test gave p < 0.05.

Here every variant is the same network, ``RecurrentNetwork(LSTMCell(88, H, variant=v), 88)``
with 88 sigmoid outputs (logits into :func:`rnnlab.tasks.music.frame_nll`), trained with the
loop of :mod:`rnnlab.experiments._music_training` (Adam, gradient clipping, early stopping on
the validation NLL) once per seed; the seed sets the weights and the batch order. Per variant the
table gives the mean and standard deviation of the test NLL over the seeds, the difference to the
vanilla LSTM, Welch's t statistic and two-sided p-value against the vanilla LSTM's per-seed test
NLLs (``scipy.stats.ttest_ind(..., equal_var=False)``) and the verdict: "hurts" (p < alpha,
worse), "helps" (p < alpha, better) or "no significant difference". Rows are ranked by mean test
NLL, best first.

What Greff et al. report, as far as it could be checked against the paper (issue 17; the
per-data-set verdicts of their Section V-A and Fig. 3 could not be found in the stored copies
searched, so none is printed): their abstract (arXiv 1503.04069; ar5iv.labs.arxiv.org/html/
1503.04069) says that "none of the variants can improve upon the standard LSTM architecture
significantly" and that "the forget gate and the output activation function" are "its most
critical components", over 5400 runs (about 15 CPU-years); their conclusion (quoted at
bookmarks2022.blogspot.com/2015/03/150304069-lstm-search-space-odyssey.html) that "coupling the
input and forget gates or removing peephole connections simplify LSTM without significantly
hurting performance". These statements pool the three data sets (TIMIT, IAM Online, JSB
Chorales): :data:`GREFF_2017` holds them per variant. A third-party reading note of the paper
(code index; docs/lstm_variants.md) adds, per data set, that removing the input gate (NIG), the
output gate (NOG) or the input activation (NIAF) significantly hurt speech and handwriting
recognition but had no significant effect on music modeling (JSB Chorales): consistent with the
pooled "not better" used here. Their 5400 runs over 3 data sets and 9
architectures are 200 random-search trials per variant and data set; ours compares a few seeds
at one fixed setting, so "no significant difference" here often only means too few seeds:
the summary states the smallest effect the seeds detect with 80% power
(:func:`detectable_effect`).

``preset=paper`` runs Greff et al.'s protocol instead (:func:`paper_trial`, settings in
:data:`PAPER` with their sources in ``docs/lstm_variants.md``): per variant an independent
random search of ``trials`` networks (hidden size log-uniform in [20, 200], learning rate
log-uniform in [1e-6, 1e-2], momentum ``1 - m``, ``m`` log-uniform in [0.01, 1], Gaussian input
noise of standard deviation uniform in [0, 1]), SGD with Nesterov momentum (``v <- m v + g``,
``theta <- theta - lr (g + m v)``, torch's form; a third-party reading note of the paper says
they trained "with SGD with Nesterov style momentum"; ``nesterov=False`` gives heavy-ball
momentum), one sequence per update, early stopping on the validation NLL; each trial is a job
of the run (``--resume`` skips the finished ones) that checkpoints every epoch through
:class:`rnnlab.train.Trainer` in its job folder (a stopped trial continues bit for bit).
Variants are compared on the test NLL of their best ``top_fraction`` of trials (chosen by
validation NLL) by Welch's t-test against vanilla.

Cost (one torch thread, measured on a shared 2-core machine): the default (H=64, at most 12
epochs, seeds 0,1,2: 27 networks) took 13.3 min wall, 7.5 CPU-min; ``--quick`` (H=32, 3 epochs,
2 seeds) 2.9 min wall, 1.5 CPU-min. Closer to the paper's scale, for hours on one core (not run
here): ``rnnlab run lstm-variants --hidden-size 128 --epochs 100 --patience 10 --lr 0.003
--seeds 0,1,2,3,4,5,6,7,8,9`` (90 networks, about 2.5 s per epoch, FGR about 6 s).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rnnlab._validation import check_int, check_number
from rnnlab.cells import VARIANTS, LSTMCell
from rnnlab.experiments._music_training import (
    COIN_FLIP_NLL,
    MusicConfig,
    ResumableTraining,
    Settings,
    count_parameters,
    load_music_data,
    plot_mean_valid_curves,
    train_music_model,
    train_resumable,
    welch_t_test,
)
from rnnlab.experiments._presets import apply_preset
from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    check_config,
    mean_std,
    option,
    register,
)
from rnnlab.models.recurrent import RecurrentNetwork
from rnnlab.tasks.music import NUM_KEYS

# Greff et al. 2017's verified statements per variant, pooled over their three data sets (see
# the module docstring for where each is stated): NFG, NOAF remove the "most critical
# components" (abstract); CIFG, NP simplify "without significantly hurting" (conclusion); no
# variant improves "significantly" (abstract).
GREFF_2017: dict[str, str] = {
    "NIG": "not better",
    "NFG": "hurts",
    "NOG": "not better",
    "NIAF": "not better",
    "NOAF": "hurts",
    "NP": "does not hurt",
    "CIFG": "does not hurt",
    "FGR": "not better",
}


def welch_power(n: int, effect_size: float, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample t-test with ``n`` runs per group to detect a
    standardized difference ``effect_size`` (Cohen's d, the difference of the means over the
    common standard deviation) at level ``alpha``. With equal group sizes and variances Welch's
    test has the pooled test's ``2n - 2`` degrees of freedom, and the statistic follows a
    noncentral t with noncentrality ``d sqrt(n/2)`` (Cohen 1988, ch. 2)::

        power = 1 - F_nct(t_c; 2n-2, d sqrt(n/2)) + F_nct(-t_c; 2n-2, d sqrt(n/2)),
        t_c = F_t^-1(1 - alpha/2; 2n-2)

    This is the equal-variance test's power; Welch's test, with its smaller Welch-Satterthwaite
    degrees of freedom, is a little less powerful at small ``n`` (simulated, n = 4, d = 2: 0.60
    against 0.66; n = 10, d = 1: 0.557 against 0.562), so seed counts derived from it are lower
    bounds for Welch's test.
    """
    from scipy import stats

    n = check_int("n", n, low=2)
    d = check_number("effect_size", effect_size, low=0.0)
    a = check_number("alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=True)
    df = 2 * n - 2
    nc = d * math.sqrt(n / 2)
    tc = float(stats.t.ppf(1 - a / 2, df))
    return float(1 - stats.nct.cdf(tc, df, nc) + stats.nct.cdf(-tc, df, nc))


def seeds_for_power(effect_size: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """The fewest runs per group for which :func:`welch_power` reaches ``power``."""
    check_number("effect_size", effect_size, low=0.0, low_open=True)
    check_number("power", power, low=0.0, high=1.0, low_open=True, high_open=True)
    n = 2
    while welch_power(n, effect_size, alpha) < power:
        n += 1
    return n


def detectable_effect(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest Cohen's d that ``n`` runs per group detect with probability ``power``
    (bisection on :func:`welch_power`, which rises with d)."""
    check_number("power", power, low=0.0, high=1.0, low_open=True, high_open=True)
    lo, hi = 0.0, 1.0
    while welch_power(n, hi, alpha) < power:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if welch_power(n, mid, alpha) < power else (lo, mid)
    return hi


_CANONICAL = {name.lower(): name for name in VARIANTS}

# preset=paper: Greff et al. 2017's random search (the hyperparameter ranges and the trial
# count are verified through secondary sources; of the training protocol, only the optimizer:
# a third-party reading note of the paper (code index, docs/lstm_variants.md) says "Train with
# SGD with Nesterov style momentum", hence PAPER["nesterov"]; the paper's own text was not
# found; epochs, patience, batch size and top_fraction are our choices; docs/lstm_variants.md
# gives the sources and the searches tried).
# Ranges: "hidden_range" LSTM blocks, log-uniform; "lr_range" log-uniform;
# momentum = 1 - m with m log-uniform in "one_minus_momentum_range"; input-noise standard
# deviation uniform in [0, noise_max]. trials: 5400 runs / (3 data sets x 9 architectures).
GREFF_SEARCH = {
    "hidden_range": (20, 200),
    "lr_range": (1e-6, 1e-2),
    "one_minus_momentum_range": (0.01, 1.0),
    "noise_max": 1.0,
}
PAPER = {
    "trials": 200,
    "top_fraction": 0.1,
    "epochs": 150,
    "patience": 15,
    "batch_size": 1,
    "clip_norm": None,
    "marginal_bias": False,
    "nesterov": True,
}
PRESETS = ("default", "paper")


@dataclass
class LstmVariantsConfig(MusicConfig):
    variants: tuple[str, ...] = option(tuple(VARIANTS), "LSTM variants to train (must include "
                                       "vanilla): " + ",".join(VARIANTS))
    alpha: float = option(0.05, "significance level of Welch's t-test against vanilla",
                          low=0, high=1, low_open=True, high_open=True)
    effect_size: float | None = option(
        None, "with no --seeds: run as many seeds as Welch's test needs to detect this "
        "difference (Cohen's d, in standard deviations of the test NLL) with --power",
        low=0, low_open=True)
    power: float = option(0.8, "power for --effect-size", low=0, high=1, low_open=True,
                          high_open=True)
    preset: str = option("default", "paper: Greff et al.'s random search per variant (see "
                         "PAPER and GREFF_SEARCH; resumable, for a GPU or days of CPU) in "
                         "place of options left at their defaults", choices=PRESETS)
    trials: int | None = option(None, "preset=paper: random-search trials per variant "
                                "(default 200)", low=2)
    top_fraction: float | None = option(None, "preset=paper: share of each variant's trials, "
                                        "best by validation NLL, that Welch's test compares "
                                        "(default 0.1)", low=0, high=1, low_open=True)
    hidden_range: tuple[int, ...] | None = option(None, "preset=paper: smallest,largest "
                                                  "hidden size searched (default 20,200)",
                                                  low=1)
    nesterov: bool | None = option(None, "preset=paper: Nesterov momentum (default true, as "
                                   "Greff et al. per a reading note); false: heavy-ball")

    def settings(self) -> Settings:
        """The preset's settings; with ``effect_size`` and no explicit seeds, seeds
        ``0 .. n-1`` with ``n = seeds_for_power(effect_size, alpha, power)``."""
        s = super().settings()
        if self.effect_size is not None and self.seeds is None:
            n = seeds_for_power(self.effect_size, self.alpha, self.power)
            s = dataclasses.replace(s, seeds=tuple(range(n)))
        return s

    def validate(self) -> None:
        super().validate()
        if len(self.variants) == 0:
            raise ValueError("variants must list at least one variant")
        unknown = [v for v in self.variants if v.lower() not in _CANONICAL]
        if unknown:
            raise ValueError(f"unknown LSTM variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
        names = [_CANONICAL[v.lower()] for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants are listed twice: {self.variants}")
        if "vanilla" not in names:
            raise ValueError("variants must include 'vanilla' (the reference of the t-tests)")
        if self.preset == "paper":
            if self.quick:
                raise ValueError("quick and preset=paper exclude each other: pick one")
            if self.seeds is not None or self.effect_size is not None:
                raise ValueError("preset=paper draws one network per trial: give --trials, "
                                 "not --seeds or --effect-size")
        elif any(v is not None for v in (self.trials, self.top_fraction, self.hidden_range,
                                         self.nesterov)):
            raise ValueError("trials, top_fraction, hidden_range and nesterov apply to "
                             "preset=paper only")
        if self.preset == "paper" and self.nesterov and self.clip_norm is not None:
            # checked on the config with the preset applied (run() validates it again)
            raise ValueError(f"preset=paper with clip_norm {self.clip_norm}: Nesterov momentum "
                             "has no clipped-velocity form (ClippedMomentumSGD); give "
                             "--nesterov false or --clip-norm none")
        if self.hidden_range is not None and (len(self.hidden_range) != 2
                                              or self.hidden_range[0] > self.hidden_range[1]):
            raise ValueError(f"hidden_range must be two sizes, smallest first, got "
                             f"{self.hidden_range}")


def build_lstm_network(
    variant: str, hidden_size: int, *, seed: int, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> RecurrentNetwork:
    """``RecurrentNetwork(LSTMCell(88, H, variant=variant), 88)`` with logit outputs, its
    initialization drawn from a generator seeded with ``seed`` (forget-gate bias 1.0)."""
    gen = torch.Generator().manual_seed(seed)
    cell = LSTMCell(NUM_KEYS, hidden_size, variant=variant, generator=gen, dtype=dtype)
    net = RecurrentNetwork(cell, NUM_KEYS, readout="identity", generator=gen, dtype=dtype)
    return net.to(device) if device is not None else net


def _parameters_in_use(model: torch.nn.Module) -> int:
    """Entries that are not zero after training. LSTMCell keeps the rows and peepholes of the
    gates a variant removes (so weights copy to nn.LSTM) at zero, with zero gradient: they are
    not counted; every used entry is moved off zero by the first Adam steps."""
    return sum(int((p != 0).sum()) for p in model.parameters())


def _verdict(diff: float, p: float, alpha: float) -> str:
    if p != p:  # NaN: fewer than two seeds on a side, or no spread
        return "n/a (needs >= 2 seeds)"
    if p < alpha:
        return "hurts" if diff > 0 else "helps"
    return "no significant difference"


def _agreement(variant: str, verdict: str) -> str:
    """Whether our ``verdict`` agrees with :data:`GREFF_2017`'s statement on ``variant``."""
    greff = GREFF_2017.get(variant, "reference")
    if variant == "vanilla":
        return "-"
    if verdict.startswith("n/a"):
        return "n/a"
    if greff == "hurts":
        return "yes" if verdict == "hurts" else "no"
    if greff == "does not hurt":
        return "yes" if verdict != "hurts" else "no"
    return "yes" if verdict != "helps" else "no"  # "not better"


# ------------------------------------------------------------------------------------------------
# preset=paper: Greff et al.'s random search, one resumable job per trial
class NoisyInput(nn.Module):
    """``net`` with Gaussian noise of standard deviation ``sigma`` added to its inputs in
    training mode (Greff et al.'s input-noise hyperparameter); in eval mode exactly ``net``.

    The noise is drawn from torch's global generator of the input's device, which
    :class:`rnnlab.train.Trainer` saves in its checkpoints, so a resumed run draws the same
    noise. Every other attribute (``readout``, ``cell``, sizes, ...) is the network's."""

    def __init__(self, net: nn.Module, sigma: float) -> None:
        super().__init__()
        self.net = net
        self.sigma = check_number("sigma", sigma, low=0.0)

    def __getattr__(self, name: str) -> Any:
        # the model protocol (cell, output, initial_state, sizes, dtype, ...) is the network's,
        # so that learning rules and the trainer accept the wrapper; the forward pass is ours
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("net"), name)

    def forward(self, x: torch.Tensor, state0: Any = None, lengths: Any = None) -> Any:
        if self.training and self.sigma > 0:
            x = x + self.sigma * torch.randn_like(x)
        return self.net(x, state0, lengths=lengths)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma!r}"


def sample_hyperparameters(variant: str, trial: int,
                           hidden_range: tuple[int, ...] | None = None) -> dict[str, float]:
    """Trial ``trial`` of ``variant``'s random search (:data:`GREFF_SEARCH`), drawn from a
    generator seeded by the pair, so every variant has its own search (as Greff et al.) and a
    trial's values do not depend on which other trials run::

        H = round(exp(U(log H_lo, log H_hi))),   lr = exp(U(log 1e-6, log 1e-2)),
        momentum = 1 - exp(U(log 0.01, log 1)),  sigma = U(0, 1)
    """
    from rnnlab.experiments.long_term import derive_seed

    lo, hi = hidden_range if hidden_range is not None else GREFF_SEARCH["hidden_range"]
    gen = torch.Generator().manual_seed(derive_seed("greff-search", variant, trial))
    u = torch.rand(4, generator=gen, dtype=torch.float64).tolist()

    def log_uniform(a: float, b: float, v: float) -> float:
        return math.exp(math.log(a) + v * (math.log(b) - math.log(a)))

    m_lo, m_hi = GREFF_SEARCH["one_minus_momentum_range"]
    return {
        "hidden_size": max(int(lo), min(int(hi), round(log_uniform(lo, hi, u[0])))),
        "lr": log_uniform(*GREFF_SEARCH["lr_range"], u[1]),
        "momentum": 1.0 - log_uniform(m_lo, m_hi, u[2]),
        "input_noise": GREFF_SEARCH["noise_max"] * u[3],
    }


def paper_trial(cfg: LstmVariantsConfig, variant: str, trial: int, job_dir: str,
                _callbacks: tuple = ()) -> dict[str, Any]:
    """Train trial ``trial`` of ``variant`` (:func:`sample_hyperparameters`) on the run's data
    with SGD + momentum (Nesterov's if ``cfg.nesterov``; a drawn momentum of 0 is plain SGD
    either way), ``cfg.batch_size`` sequences per update, early stopping after
    ``cfg.patience`` epochs without a better validation NLL (at most ``cfg.epochs``), and test
    the best epoch. The trainer checkpoints every epoch in ``job_dir`` and continues from a
    checkpoint there (a finished trial returns at once with the same row)."""
    from rnnlab.experiments.long_term import derive_seed

    hp = sample_hyperparameters(variant, trial, cfg.hidden_range)
    dtype, device = getattr(torch, cfg.dtype), torch.device(cfg.device)
    data, _ = load_music_data(cfg.data, dtype=dtype, train_sequences=cfg.train_sequences,
                              valid_sequences=cfg.valid_sequences)
    seed = derive_seed("greff-trial", variant, trial)
    net = build_lstm_network(variant, int(hp["hidden_size"]), seed=seed, dtype=dtype,
                             device=device)
    model = NoisyInput(net, hp["input_noise"])
    train_cfg = ResumableTraining(epochs=cfg.epochs, batch_size=cfg.batch_size,
                                  optimizer="sgd", lr=hp["lr"], momentum=hp["momentum"],
                                  clip_norm=cfg.clip_norm, patience=cfg.patience,
                                  nesterov=bool(cfg.nesterov) and hp["momentum"] > 0)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # the input noise's stream (a resume restores it)
        res = train_resumable(model, data, train_cfg, seed=seed, run_dir=job_dir,
                              device=device, marginal_bias=cfg.marginal_bias,
                              callbacks=_callbacks)
    return {"variant": variant, "trial": trial, **hp,
            "parameters_in_use": _parameters_in_use(net), **res.metrics()}


def _top_trials(rows: list[dict[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """The best ``ceil(fraction * n)`` (at least 2) of ``rows`` by validation NLL; trials
    without a finite validation NLL (diverged) come last."""
    k = max(2, math.ceil(fraction * len(rows)))
    ranked = sorted(rows, key=lambda r: (not math.isfinite(r["valid_nll"]), r["valid_nll"]))
    return ranked[:k]


FANOVA_INPUTS = ("lr", "momentum", "hidden_size", "input_noise")
# fewest finite trials of a variant for its fANOVA (a forest on fewer points says little)
FANOVA_MIN_TRIALS = 10


def fanova_importance(trials: list[dict[str, Any]], hidden_range: tuple[int, ...]
                      ) -> dict[str, float]:
    """fANOVA main-effect fractions of the test NLL (Hutter et al. 2014, as Greff et al.) for
    each searched hyperparameter, on the scale it was drawn on (log10 learning rate, log10 of
    1 - momentum, log10 hidden size, noise); NaN with fewer than :data:`FANOVA_MIN_TRIALS`
    finite trials or without scikit-learn (the ``sklearn`` extra)."""
    import numpy as np

    ok = [r for r in trials if math.isfinite(r["test_nll"])]
    nan = dict.fromkeys(FANOVA_INPUTS, math.nan)
    if len(ok) < FANOVA_MIN_TRIALS:
        return nan
    try:
        from rnnlab.experiments._fanova import forest_main_effects
        x = np.array([[math.log10(r["lr"]), math.log10(1 - r["momentum"]),
                       math.log10(r["hidden_size"]), r["input_noise"]] for r in ok])
        lr_lo, lr_hi = GREFF_SEARCH["lr_range"]
        m_lo, m_hi = GREFF_SEARCH["one_minus_momentum_range"]
        lo = [math.log10(lr_lo), math.log10(m_lo), math.log10(hidden_range[0]), 0.0]
        hi = [math.log10(lr_hi), math.log10(m_hi),
              math.log10(max(hidden_range[1], hidden_range[0] + 1)), GREFF_SEARCH["noise_max"]]
        got = forest_main_effects(x, np.array([r["test_nll"] for r in ok]), lo, hi)
    except ImportError:
        return nan
    return dict(zip(FANOVA_INPUTS, (float(v) for v in got), strict=True))


def _run_paper(cfg: LstmVariantsConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt

    variants = [_CANONICAL[v.lower()] for v in cfg.variants]
    _, source = load_music_data(cfg.data, dtype=getattr(torch, cfg.dtype),
                                   train_sequences=cfg.train_sequences,
                                   valid_sequences=cfg.valid_sequences)
    # trial-major: a stopped run has covered every variant about equally
    jobs = [(cfg, v, t, str(ctx.job_dir(f"{v}-trial{t:03d}")))
            for t in range(cfg.trials) for v in variants]
    records = ctx.run_jobs("lstm-variants trials", paper_trial, jobs,
                           threads=cfg.threads)
    per = {v: [r for r in records if r["variant"] == v] for v in variants}
    top = {v: _top_trials(per[v], cfg.top_fraction) for v in variants}
    ref_top = [r["test_nll"] for r in top["vanilla"]]
    ref_all = [r["test_nll"] for r in per["vanilla"]]
    rows = []
    for v in variants:
        tests = [r["test_nll"] for r in top[v]]
        mean, std = mean_std(tests)
        best = top[v][0]
        if v == "vanilla":
            t, p, verdict, p_all = None, None, "reference", None
        else:
            t, p = welch_t_test(tests, ref_top)
            verdict = _verdict(mean - mean_std(ref_top)[0], p, cfg.alpha)
            p_all = welch_t_test([r["test_nll"] for r in per[v]], ref_all)[1]
        rows.append({
            "rank": 0, "variant": v, "trials": len(per[v]), "top_trials": len(tests),
            "mean_test_nll_top": mean, "std_test_nll_top": std, "welch_t_top": t,
            "p_value_top": p, "verdict": verdict, "p_value_all_trials": p_all,
            "best_trial": best["trial"], "best_valid_nll": best["valid_nll"],
            "best_test_nll": best["test_nll"], "best_hidden_size": best["hidden_size"],
            "best_lr": best["lr"], "greff_2017": GREFF_2017.get(v, "reference"),
            "agrees_with_greff": _agreement(v, verdict),
            **{f"fanova_{k}": x for k, x in fanova_importance(per[v], cfg.hidden_range).items()},
        })
    rows.sort(key=lambda r: (not math.isfinite(r["mean_test_nll_top"]), r["mean_test_nll_top"]))
    for i, r in enumerate(rows, start=1):
        r["rank"] = i

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    names = [r["variant"] for r in rows]
    ax1.boxplot([[x["test_nll"] for x in top[n]] for n in names], tick_labels=names,
                showmeans=True)
    ax1.set_ylabel(f"test NLL of the best {cfg.top_fraction:.0%} of trials (by validation)")
    ax1.set_title(f"Welch's t-test against vanilla at p < {cfg.alpha}", fontsize=9)
    for n in names:
        pts = [(r["lr"], r["test_nll"]) for r in per[n] if math.isfinite(r["test_nll"])]
        if pts:
            ax2.scatter(*zip(*pts, strict=True), s=10, label=n, alpha=0.7)
    ax2.set_xscale("log")
    ax2.set_xlabel("learning rate (log-uniform search)")
    ax2.set_ylabel("test NLL (nats per frame)")
    ax2.legend(fontsize=7, ncol=2)
    fig.suptitle(f"LSTM variants, Greff et al.'s random search on {source.split(' (')[0]}: "
                 f"{cfg.trials} trials per variant")
    fig.tight_layout()
    plot = ctx.save_figure(fig, "lstm_variants_paper")
    hurt = [r["variant"] for r in rows if r["verdict"] == "hurts"]
    helped = [r["variant"] for r in rows if r["verdict"] == "helps"]
    summary = (f"Data: {source}. {cfg.trials} random-search trials per variant; compared: the "
               f"best {cfg.top_fraction:.0%} by validation NLL. Significantly worse than "
               f"vanilla (Welch p<{cfg.alpha}): {', '.join(hurt) or 'none'}; better: "
               f"{', '.join(helped) or 'none'}. fanova_* columns: the share of the test NLL's "
               "variance over the search that each hyperparameter's main effect explains "
               f"(Hutter et al. 2014; needs >= {FANOVA_MIN_TRIALS} finite trials).")
    return ExperimentResult(
        title=f"lstm-variants (preset=paper): {cfg.trials} trials per variant",
        rows=rows, summary=summary, plots=[plot],
        figures={"data": source, "trials": cfg.trials, "top_fraction": cfg.top_fraction,
                 "effective_config": dataclasses.asdict(cfg)})


@register("lstm-variants",
          "Vanilla LSTM and Greff et al.'s 8 variants on JSB Chorales: test NLL, Welch's t-test",
          LstmVariantsConfig)
def run(cfg: LstmVariantsConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt

    if cfg.preset == "paper":
        paper = apply_preset(cfg, {**PAPER, "hidden_range": GREFF_SEARCH["hidden_range"]})
        check_config(paper)
        return _run_paper(paper, ctx)
    s = cfg.settings()
    variants = [_CANONICAL[v.lower()] for v in cfg.variants]
    data, source, baseline = cfg.load_data(s)
    per_variant: dict[str, list[dict]] = {v: [] for v in variants}
    with ctx.progress("lstm-variants", len(variants) * len(s.seeds) * s.epochs) as advance:
        for seed in s.seeds:  # seed-major: a partial run already covers every variant
            for variant in variants:
                model = build_lstm_network(variant, s.hidden_size, seed=seed, dtype=s.dtype,
                                           device=s.device)
                res = train_music_model(model, data, s.train, seed=seed, device=s.device,
                                        advance=advance, marginal_bias=cfg.marginal_bias)
                row = {"variant": variant, "seed": seed, "hidden_size": s.hidden_size,
                       "parameters": count_parameters(model),
                       "parameters_in_use": _parameters_in_use(model), **res.metrics()}
                ctx.log_metrics(row)
                per_variant[variant].append({**row, "curve": res.valid_curve})

    vanilla = [r["test_nll"] for r in per_variant["vanilla"]]
    vanilla_mean, _ = mean_std(vanilla)
    rows: list[dict] = []
    for variant in variants:
        tests = [r["test_nll"] for r in per_variant[variant]]
        mean, std = mean_std(tests)
        if variant == "vanilla":
            t, p, diff, verdict = None, None, 0.0, "reference"
        else:
            t, p = welch_t_test(tests, vanilla)
            diff = mean - vanilla_mean
            verdict = _verdict(diff, p, cfg.alpha)
        greff = GREFF_2017.get(variant, "reference")
        agrees = _agreement(variant, verdict)
        rows.append({
            "rank": 0, "variant": variant, "mean_test_nll": mean, "std_test_nll": std,
            "seeds": len(tests), "diff_vs_vanilla": diff, "welch_t": t, "p_value": p,
            "verdict": verdict, "greff_2017": greff, "agrees_with_greff": agrees,
            "mean_valid_nll": mean_std([r["valid_nll"] for r in per_variant[variant]])[0],
            "parameters_in_use": per_variant[variant][0]["parameters_in_use"],
        })
    rows.sort(key=lambda r: (r["mean_test_nll"] != r["mean_test_nll"], r["mean_test_nll"]))
    for i, r in enumerate(rows, start=1):
        r["rank"] = i

    # -- the figure: per-seed test NLL per variant (ranked), and the validation curves --------
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    colors = {"hurts": "tab:red", "helps": "tab:green", "reference": "black"}
    names = [r["variant"] for r in rows]
    samples = [[x["test_nll"] for x in per_variant[n]] for n in names]
    ax1.boxplot(samples, tick_labels=names, showmeans=True, widths=0.5,
                medianprops={"color": "gray"},
                meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "k"})
    for i, (r, values) in enumerate(zip(rows, samples, strict=True), start=1):
        color = colors.get(r["verdict"], "tab:blue")
        ax1.scatter([i] * len(values), values, color=color, s=18, zorder=3, alpha=0.8)
    if vanilla_mean == vanilla_mean:
        ax1.axhline(vanilla_mean, ls="--", color="black", lw=0.8, label="vanilla mean")
    ax1.set_ylabel("test NLL (nats per frame)")
    ax1.set_title(f"ranked by mean test NLL (white diamond: mean); dots per seed, red: worse "
                  f"than vanilla (Welch p<{cfg.alpha}), green: better", fontsize=9)
    ax1.legend(fontsize=8)
    plot_mean_valid_curves(ax2, {n: per_variant[n] for n in names}, baseline,
                           baseline_label="key frequencies",
                           linewidths={n: 2.2 if n == "vanilla" else 1.0 for n in names})
    ax2.legend(fontsize=7, ncol=2)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"LSTM variants on {source.split(' (')[0]}: H={s.hidden_size}, "
                 f"{len(s.seeds)} seed(s), up to {s.epochs} epochs")
    fig.tight_layout()
    plot = ctx.save_figure(fig, "lstm_variants")

    n_min = min(r["seeds"] for r in rows)
    d_min = detectable_effect(n_min, cfg.alpha) if n_min >= 2 else math.nan
    ranked = ", ".join(f"{r['variant']} {r['mean_test_nll']:.3f}" for r in rows)
    hurt = [r["variant"] for r in rows if r["verdict"] == "hurts"]
    helped = [r["variant"] for r in rows if r["verdict"] == "helps"]
    compared = [r for r in rows if r["agrees_with_greff"] in ("yes", "no")]
    disagree = [r["variant"] for r in compared if r["agrees_with_greff"] == "no"]
    summary = (
        f"Data: {source}. Test NLL (nats/frame, mean over seeds {list(s.seeds)}), best first: "
        f"{ranked}. Key-frequency baseline {baseline:.3f}, coin flip {COIN_FLIP_NLL:.2f}. "
        f"Significantly worse than vanilla (Welch p<{cfg.alpha}): {', '.join(hurt) or 'none'}; "
        f"better: {', '.join(helped) or 'none'}. Greff et al. 2017 (abstract and conclusion, "
        "pooled over their three data sets): NFG and NOAF hurt, CIFG and NP do not, no "
        "variant is significantly better. "
        + (f"With {n_min} seeds per variant, Welch's test at alpha={cfg.alpha} detects a "
           f"difference of {d_min:.2f} standard deviations (Cohen's d) with 80% power; "
           f"d = 1 needs {seeds_for_power(1.0, cfg.alpha)} seeds, d = 0.5 "
           f"{seeds_for_power(0.5, cfg.alpha)}. " if n_min >= 2 else "")
        + (f"Our verdict agrees for {len(compared) - len(disagree)} of {len(compared)} variants"
           + (f"; differs for {', '.join(disagree)}" if disagree else "")
           + f" (H={s.hidden_size}, at most {s.epochs} epochs, {len(s.seeds)} seeds at one "
             "hyperparameter setting vs their 200 random-search trials per variant: a missing "
             "'hurts' may only mean too few seeds)."
           if compared else "No t-test possible with fewer than 2 seeds.")
    )
    return ExperimentResult(
        title=f"lstm-variants: LSTM variants on JSB Chorales (H={s.hidden_size}, "
              f"seeds {list(s.seeds)})",
        rows=rows, summary=summary, plots=[plot],
        figures={"data": source, "marginal_nll_test": baseline, "coin_flip_nll": COIN_FLIP_NLL,
                 "detectable_effect_80": d_min, "hidden_size": s.hidden_size,
                 "epochs": s.epochs, "seeds": list(s.seeds),
                 "train_sequences": len(data["train"]), "valid_sequences": len(data["valid"]),
                 "test_sequences": len(data["test"]),
                 **{f"mean_test_nll_{r['variant']}": r["mean_test_nll"] for r in rows}},
    )
