"""``lsm-classify``: jittered spike-template classification with a liquid state machine, after
the spike-pattern tasks of Maass, Natschläger & Markram (2002), "Real-time computing without
stable states", *Neural Computation* 14:2531–2560.

Task. Per seed, ``classes`` templates are drawn, each ``channels`` homogeneous Poisson spike
trains of ``rate`` Hz and ``duration`` ms (spike times continuous, uniform given the count). A
stimulus of class c is template c with every spike moved independently by Gaussian noise::

    s' = s + jitter * z,   z ~ N(0, 1)

(spikes moved outside [0, duration) are dropped; the rest are binned on the liquid's ``dt``
grid, bin floor(s'/dt)). ``jitter`` is swept (``--jitters``); at each jitter a readout is
trained on ``train_per_class`` stimuli per class and tested on ``test_per_class`` held-out
stimuli per class of the same jitter (new jitter draws of the same templates).

Liquid: the paper's column (:func:`rnnlab.reservoir.lsm.build_column`, 15 x 3 x 3, one column
per seed, ``channels`` inputs), each trial from its own random initial potentials. Its features
are the liquid states (spike trains filtered by exp(-t/tau), tau = 30 ms) at the
``sample_times``, concatenated: S x N numbers per stimulus.

Baseline ("input"): the same readout on the input spike trains themselves, filtered by the same
kernel and sampled at the same times (S x channels numbers): what a readout gets without the
liquid. Chance level: 1 / classes (balanced test sets).

Readout: :class:`~rnnlab.reservoir.readout.RidgeClassifierReadout` (ridge regression onto
one-hot codes, argmax), its ridge ``alpha`` chosen per model, seed and jitter from ``alphas`` on
a held-out quarter of the training set, then refitted on the whole training set.

Table: accuracy (mean, std and 95 % Student-t CI over seeds) per jitter and model, chance, and
the paired difference liquid - input per seed (model ``liquid-input``). Plots: accuracy
against jitter; a raster of one response (input spikes above, liquid spikes below, E and I
coloured).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_int, check_number, check_tensor
from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    SeededOptions,
    aggregate,
    option,
    register,
)
from rnnlab.reservoir.lsm import (
    ColumnParameters,
    LiquidColumn,
    build_column,
    liquid_states,
    spike_times_to_raster,
)
from rnnlab.reservoir.readout import RidgeClassifierReadout

MODELS = ("liquid", "input")
DIFF = "liquid-input"     # table rows of the paired difference liquid - input per seed


@dataclass
class LSMClassifyConfig(SeededOptions):
    seeds: int = option(5, "seeds: columns and templates", low=1)
    classes: int = option(8, "number of templates (classes)", low=2)
    channels: int = option(4, "input spike trains per stimulus", low=1)
    rate: float = option(20.0, "Poisson rate of the templates (Hz)", low=0, low_open=True)
    duration: float = option(200.0, "stimulus length (ms)", low=1)
    jitters: tuple[float, ...] = option((0.0, 4.0, 8.0, 16.0, 32.0),
                                        "SDs of the Gaussian spike jitter (ms)", low=0)
    train_per_class: int = option(30, "training stimuli per class and jitter", low=4)
    test_per_class: int = option(20, "test stimuli per class and jitter", low=1)
    sample_times: tuple[float, ...] = option((200.0,), "times (ms) at which the states are "
                                             "read (features concatenated)", low=0)
    tau: float = option(30.0, "liquid-state filter time constant (ms)", low=0, low_open=True)
    dt: float = option(0.1, "liquid time step (ms)", low=0, low_open=True)
    input_probability: float = option(1.0, "probability that an input channel reaches a "
                                      "neuron", low=0, high=1, low_open=True)
    alphas: tuple[float, ...] = option((1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3),
                                       "ridge penalties tried on a validation split", low=0)
    raster_jitter: float = option(4.0, "jitter (ms) of the stimulus in the raster plot", low=0)
    workers: int = option(2, "jobs in parallel (processes); results do not depend on it",
                          low=1)
    torch_threads: int = option(1, "torch.set_num_threads in each job", low=1)

    def validate(self) -> None:
        if not self.jitters:
            raise ValueError("jitters must name at least one jitter")
        if len(set(self.jitters)) != len(self.jitters):
            raise ValueError(f"jitters must be distinct, got {self.jitters}")
        if not self.sample_times:
            raise ValueError("sample_times must name at least one time")
        if any(t > self.duration for t in self.sample_times):
            raise ValueError(f"sample_times must lie within the duration ({self.duration} ms), "
                             f"got {self.sample_times}")
        if not self.alphas:
            raise ValueError("alphas must name at least one ridge penalty")


# ------------------------------------------------------------------------------------------------
# Stimuli


def draw_templates(classes: int, channels: int, rate: float, duration: float,
                   generator: torch.Generator) -> list[list[torch.Tensor]]:
    """``templates[class][channel]``: sorted float64 spike times (ms) of a homogeneous Poisson
    train of ``rate`` Hz on [0, duration): count ~ Poisson(rate·duration), times uniform."""
    classes = check_int("classes", classes, low=1)
    channels = check_int("channels", channels, low=1)
    rate = check_number("rate", rate, low=0.0)
    duration = check_number("duration", duration, low=0.0, low_open=True)
    lam = torch.full((classes * channels,), rate * duration * 1e-3, dtype=torch.float64)
    counts = torch.poisson(lam, generator=generator).long().tolist()
    trains = [torch.rand(n, dtype=torch.float64, generator=generator).sort().values * duration
              for n in counts]
    return [trains[c * channels:(c + 1) * channels] for c in range(classes)]


def jitter_spike_times(times: torch.Tensor, jitter: float, generator: torch.Generator
                       ) -> torch.Tensor:
    """``times + jitter * z`` with z ~ N(0, 1) independent per spike (float64, same order, not
    clipped or sorted): the displacement has mean 0 and SD ``jitter``."""
    jitter = check_number("jitter", jitter, low=0.0)
    times = torch.as_tensor(times, dtype=torch.float64)
    if not bool(torch.isfinite(times).all()):
        raise ValueError("spike times contain NaN or inf")
    z = torch.randn(times.shape, dtype=torch.float64, generator=generator)
    return times + jitter * z


def make_stimuli(templates: list[list[torch.Tensor]], labels: torch.Tensor, jitter: float,
                 duration: float, dt: float, generator: torch.Generator) -> torch.Tensor:
    """Jittered copies of ``templates[labels[i]]`` as spike counts ``(B, T, channels)`` on the
    ``dt`` grid; spikes jittered outside [0, duration) are dropped."""
    times = []
    for c in labels.tolist():
        trial = []
        for train in templates[c]:
            s = jitter_spike_times(train, jitter, generator)
            trial.append(s[(s >= 0) & (s < duration)].sort().values)
        times.append(trial)
    return spike_times_to_raster(times, duration, dt)


def input_features(raster: torch.Tensor, dt: float, times: tuple[float, ...],
                   tau: float) -> torch.Tensor:
    """The baseline's features: each input channel filtered by exp(-t/tau) at the sample times
    (bin k of an input raster is time k·dt), ``(B, S·channels)`` float64."""
    check_tensor("raster", raster, ndim=3, layout="(batch, time, channels)")
    x = liquid_states(raster.double(), dt, times, tau=tau, offset=0.0)
    return x.reshape(x.shape[0], -1)


# ------------------------------------------------------------------------------------------------
# Readout


def _fit_readout(x: torch.Tensor, y: torch.Tensor, classes: int, alpha: float
                 ) -> RidgeClassifierReadout:
    clf = RidgeClassifierReadout(x.shape[1], classes, alpha=alpha, pooling="last",
                                 dtype=torch.float64)
    return clf.fit(x[:, None, :], y)


def _accuracy(clf: RidgeClassifierReadout, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((clf.predict(x[:, None, :]) == y).double().mean())


def train_and_test(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                   y_test: torch.Tensor, classes: int, alphas: tuple[float, ...],
                   generator: torch.Generator) -> tuple[float, float]:
    """Test accuracy of a ridge classifier whose ``alpha`` is picked from ``alphas`` on a
    random quarter of the training set (ties: the larger alpha), refitted on all of it;
    returns ``(accuracy, alpha)``."""
    n = x_train.shape[0]
    perm = torch.randperm(n, generator=generator)
    n_val = max(1, n // 4)
    val, fit = perm[:n_val], perm[n_val:]
    best, best_alpha = -1.0, alphas[0]
    for alpha in sorted(alphas):
        acc = _accuracy(_fit_readout(x_train[fit], y_train[fit], classes, alpha),
                        x_train[val], y_train[val])
        if acc >= best:
            best, best_alpha = acc, alpha
    clf = _fit_readout(x_train, y_train, classes, best_alpha)
    return _accuracy(clf, x_test, y_test), best_alpha


# ------------------------------------------------------------------------------------------------
# One job: one seed (column and templates) at one jitter


def _column_params(cfg: LSMClassifyConfig) -> ColumnParameters:
    return ColumnParameters(input_probability=cfg.input_probability)


def _templates(cfg: LSMClassifyConfig, seed: int) -> list[list[torch.Tensor]]:
    gen = make_generator(1_000_003 + seed)
    return draw_templates(cfg.classes, cfg.channels, cfg.rate, cfg.duration, gen)


def run_one(cfg: LSMClassifyConfig, seed: int, jitter_index: int) -> dict[str, Any]:
    """Accuracy of the liquid and of the input baseline for one seed and jitter."""
    start = time.perf_counter()
    jitter = cfg.jitters[jitter_index]
    templates = _templates(cfg, seed)
    gen = make_generator(2_000_003 + 7919 * seed + 101 * jitter_index)
    n_train = cfg.classes * cfg.train_per_class
    y_train = torch.arange(cfg.classes).repeat_interleave(cfg.train_per_class)
    y_test = torch.arange(cfg.classes).repeat_interleave(cfg.test_per_class)
    labels = torch.cat([y_train, y_test])
    x = make_stimuli(templates, labels, jitter, cfg.duration, cfg.dt, gen)

    column = build_column(_column_params(cfg), n_inputs=cfg.channels, seed=seed)
    liquid = LiquidColumn(column, dt=cfg.dt)
    out = liquid(x, seed=3_000_017 + 7919 * seed + 101 * jitter_index)   # all trials at once
    feats = {
        "liquid": liquid_states(out.spikes, cfg.dt, cfg.sample_times, tau=cfg.tau)
        .double().reshape(x.shape[0], -1),
        "input": input_features(x, cfg.dt, cfg.sample_times, cfg.tau),
    }
    row: dict[str, Any] = {"seed": seed, "jitter": jitter}
    for model in MODELS:
        f = feats[model]
        acc, alpha = train_and_test(f[:n_train], y_train, f[n_train:], y_test, cfg.classes,
                                    cfg.alphas, make_generator(4_000_037 + seed))
        row[f"acc_{model}"] = acc
        row[f"alpha_{model}"] = alpha
    row["chance"] = 1.0 / cfg.classes
    row["liquid_rate_hz"] = float(out.spikes.double().mean()) / cfg.dt * 1e3
    row["input_spikes"] = float(x.sum((1, 2)).mean())
    row["seconds"] = time.perf_counter() - start
    return row


# ------------------------------------------------------------------------------------------------
# The experiment


def _t975(n: int) -> float:
    """Two-sided 95 % Student-t quantile with n - 1 degrees of freedom (nan for n < 2)."""
    if n < 2:
        return math.nan
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.975, n - 1))


@register("lsm-classify",
          "jittered spike-template classification: liquid vs filtered-input readout",
          LSMClassifyConfig)
def run(cfg: LSMClassifyConfig, ctx: RunContext) -> ExperimentResult:
    start = time.perf_counter()
    seeds = ctx.seeds(cfg)
    jobs = [(cfg, seed, j) for seed in seeds for j in range(len(cfg.jitters))]
    records = ctx.run_jobs("lsm-classify runs", run_one, jobs, workers=cfg.workers,
                           threads=cfg.torch_threads)
    long_rows = [{"jitter": r["jitter"], "model": model, "seed": r["seed"],
                  "accuracy": r[f"acc_{model}"], "chance": r["chance"]}
                 for r in records for model in MODELS]
    # the paired difference per seed (same column, templates and stimuli): its CI says whether
    # the liquid's gain over the baseline is more than seed-to-seed noise
    long_rows += [{"jitter": r["jitter"], "model": DIFF, "seed": r["seed"],
                   "accuracy": r["acc_liquid"] - r["acc_input"], "chance": 0.0}
                  for r in records]
    groups = [(j, m) for j in cfg.jitters for m in (*MODELS, DIFF)]
    table = aggregate(long_rows, by=("jitter", "model"), value=("accuracy", "chance"),
                      std=("accuracy",), count="seeds", groups=groups)
    for row in table:
        row["accuracy_ci95"] = _t975(row["seeds"]) * row["accuracy_std"] / math.sqrt(row["seeds"])
    plots = [_plot_accuracy(cfg, table, ctx), _plot_raster(cfg, seeds[0], ctx)]
    wall = time.perf_counter() - start
    by = {(r["jitter"], r["model"]): r for r in table}
    parts = [f"{j:g} ms: liquid {by[(j, 'liquid')]['accuracy']:.3f}, "
             f"input {by[(j, 'input')]['accuracy']:.3f} (difference "
             f"{by[(j, DIFF)]['accuracy']:+.3f} ± {by[(j, DIFF)]['accuracy_ci95']:.3f})"
             for j in cfg.jitters]
    summary = (f"Test accuracy (mean over {len(seeds)} seed(s), chance {1 / cfg.classes:.3f}) "
               "per jitter, paired difference ± 95 % CI — " + "; ".join(parts)
               + ". Mean liquid rate "
               f"{sum(r['liquid_rate_hz'] for r in records) / len(records):.1f} Hz; "
               f"{wall:.0f} s.")
    return ExperimentResult(title="lsm-classify: jittered spike templates, liquid vs input",
                            rows=table, summary=summary, plots=plots,
                            figures={"wall_seconds": wall})


def _plot_accuracy(cfg: LSMClassifyConfig, table: list[dict[str, Any]], ctx: RunContext):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    styles = {"liquid": ("k", "o", "-", "liquid (LSM)"),
              "input": ("tab:blue", "s", "--", "filtered input (no liquid)")}
    for model in MODELS:
        rows = [r for r in table if r["model"] == model]
        j = [r["jitter"] for r in rows]
        m = [r["accuracy"] for r in rows]
        s = [0.0 if math.isnan(r["accuracy_std"]) else r["accuracy_std"] for r in rows]
        color, marker, ls, label = styles[model]
        ax.errorbar(j, m, yerr=s, color=color, marker=marker, ls=ls, capsize=3, label=label)
    ax.axhline(1.0 / cfg.classes, color="0.5", ls=":", label="chance")
    ax.set_xlabel("jitter SD (ms)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(f"{cfg.classes} templates, {cfg.channels} channels x {cfg.duration:g} ms "
                 f"(mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(True, alpha=0.3)
    return ctx.save_figure(fig, "lsm_classify_accuracy")


def _plot_raster(cfg: LSMClassifyConfig, seed: int, ctx: RunContext):
    """One response: a jittered stimulus of class 0 and the column's spikes."""
    import matplotlib.pyplot as plt

    templates = _templates(cfg, seed)
    gen = make_generator(5_000_011 + seed)
    x = make_stimuli(templates, torch.zeros(1, dtype=torch.long), cfg.raster_jitter,
                     cfg.duration, cfg.dt, gen)
    column = build_column(_column_params(cfg), n_inputs=cfg.channels, seed=seed)
    out = LiquidColumn(column, dt=cfg.dt)(x, seed=6_000_011 + seed)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [1, 4]})
    k, c = torch.nonzero(x[0], as_tuple=True)
    top.scatter((k.double() * cfg.dt).numpy(), c.numpy(), marker="|", s=60, color="k")
    top.set_yticks(range(cfg.channels))
    top.set_ylabel("input")
    top.set_title(f"one response: class 0, jitter {cfg.raster_jitter:g} ms, seed {seed}",
                  fontsize=9)
    k, n = torch.nonzero(out.spikes[0], as_tuple=True)
    t = (k.double() + 1) * cfg.dt                        # liquid raster bin k: time (k+1) dt
    inh = column.inhibitory[n].cpu()
    bottom.scatter(t[~inh].numpy(), n[~inh].numpy(), marker="|", s=8, color="tab:red",
                   label="excitatory")
    bottom.scatter(t[inh].numpy(), n[inh].numpy(), marker="|", s=8, color="tab:blue",
                   label="inhibitory")
    for s in cfg.sample_times:
        bottom.axvline(s, color="0.6", ls=":", lw=0.8)
    bottom.set_xlim(0, cfg.duration)
    bottom.set_ylim(-1, column.n_neurons)
    bottom.set_xlabel("time (ms)")
    bottom.set_ylabel("liquid neuron")
    bottom.legend(fontsize=8, loc="upper right", markerscale=2)
    return ctx.save_figure(fig, "lsm_classify_raster")
