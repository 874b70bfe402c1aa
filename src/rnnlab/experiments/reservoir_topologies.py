"""``reservoir-topologies``: do small-world, scale-free or spatial reservoirs beat a sparse random
one, and are the minimum-complexity DLR, DLRB, SCR competitive?

The course's claim (Lukosevicius & Jaeger 2009, Computer Science Review 3(3), sec. 5.1:
"no significant improvement" from small-world, scale-free and biologically inspired, spatially
organised reservoirs, after Liebald 2004; Rodan & Tino 2011, IEEE TNN 22(1): the deterministic
DLR, DLRB and SCR do about as well as random reservoirs) is tested here with per-seed scores and
a two-sided significance test of each topology against the random ESN.

Reservoirs (N units, the same for all; :mod:`rnnlab.reservoir.graphs` for the graphs):

* ``random``: sparse random W, density ``mean_degree / N`` (values U[-1, 1]);
* ``small_world``: Watts–Strogatz, ``k = mean_degree``, rewiring ``--rewire``;
* ``scale_free``: Barabasi–Albert, ``m = mean_degree / 2``;
* ``spatial``: Waxman graph in the unit square (connection probability
  ``beta exp(-d / (alpha L))``, ``alpha = --waxman-alpha``), expected mean degree
  ``mean_degree``;
* ``spatial_growth``: spatially grown network (Kaiser & Hilgetag 2004, Phys. Rev. E 69,
  036103): nodes added one by one at uniform positions in the unit square, each joining every
  existing node with probability ``beta exp(-alpha d)`` (``alpha = --growth-alpha``) and
  discarded if it joins none; beta bisected per seed for the mean degree ``mean_degree``
  (exactly, for the defaults' seeds; otherwise within a few edges)
  (:func:`rnnlab.reservoir.graphs.spatial_growth_reservoir`). The defaults
  (N = 100, degree 10, ``--growth-alpha 5``) give the same mean link length as the Waxman graph
  at ``--waxman-alpha 0.15`` (0.28; random pairs 0.52), so the two spatial models differ in how
  the graph is made (grown and connected vs static), not in how local it is;
* ``dlr``, ``dlrb``, ``scr`` (Rodan & Tino 2011) with weight ``r = --spectral-radius``
  (rho(SCR) = r; DLR is nilpotent; DLRB's backward weight is ``--dlrb-feedback``).

The graphs' undirected edges carry independent U[-1, 1] weights in both directions
(``--graph-mode independent``: the same number of non-zeros per row as the random reservoir,
``mean_degree``, and a non-symmetric W like it; ``symmetric`` and ``random_direction`` are the
alternatives). The random and graph reservoirs are scaled to the same spectral radius
``--spectral-radius`` (:func:`rnnlab.analysis.spectral.scale_to_spectral_radius`) and get dense
input weights U[-v, v]; DLR, DLRB, SCR get input weights of absolute value v with signs from the
digits of pi (or a seeded coin). Units are tanh, leak 1, no bias; only a ridge readout is
trained.

Hyperparameters. With ``--tune true`` (default) every topology gets, for each seed and one-step
task, the spectral radius (r for DLR, DLRB, SCR; graphs and the random W are rescaled), input
scaling v and ridge penalty with the lowest validation NRMSE on the grid ``--radii`` x
``--input-scalings`` x ``--ridges`` (as Rodan & Tino tuned each model; the segment after the
training one, before the test one), so that a topology is not judged at settings that suit
another. With ``--tune false`` all use ``--spectral-radius``, ``--input-scaling``, ``--ridge``.
Memory capacity always uses ``--spectral-radius`` and the small ``--mc-input-scaling`` (the
near-linear regime where MC is usually measured) with ridge ``--mc-ridge``.

Tasks (per seed the same data for every topology):

* ``narma10``: one-step NARMA-10 (Rodan & Tino's form, :func:`rnnlab.tasks.narma`), test NRMSE;
* ``mackey-glass``: one-step Mackey–Glass (tau = 17, sampled every time unit, shifted by -1),
  test NRMSE;
* ``memory-capacity``: Jaeger's (2001) MC = sum_k r^2(u(t - k), o_k(t)), k = 1..2N, with
  :func:`rnnlab.analysis.memory.memory_capacity` (u ~ U[-1, 1] i.i.d., input scaling
  ``--mc-input-scaling``): higher is better.

Statistics: per (task, topology) the mean, standard deviation and median over the seeds, the
relative difference of the mean from the random ESN's, and the two-sided p-value of Welch's
t-test (``scipy.stats.ttest_ind(equal_var=False)``) or of the Mann–Whitney U test
(``scipy.stats.mannwhitneyu``) of its per-seed scores against the random ESN's; a difference is
called significant when p < ``--significance`` (no correction for the several comparisons: with
seven topologies and three tasks, 21 tests, about one false positive is expected at 0.05). The
table also gives the mean number of non-zeros per row of W (``nnz_per_row``) and the setting
chosen most often (``rho|r / v / ridge``, or ``rho / v`` for MC, with how many seeds chose it).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab.experiments.esn_forecast import DTYPES, SIGNS, task_series
from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    mean_std,
    option,
    register,
)
from rnnlab.reservoir.graphs import GRAPH_KINDS, GRAPH_MODES, graph_reservoir
from rnnlab.reservoir.tuning import build_reservoir, grid_search, one_step_score
from rnnlab.tasks import nrmse

TOPOLOGIES = ("random", "small_world", "scale_free", "spatial", "spatial_growth", "dlr", "dlrb",
              "scr")
TASKS = ("narma10", "mackey-glass", "memory-capacity")
TESTS = ("welch", "mannwhitney")


@dataclass
class ReservoirTopologiesConfig:
    units: int = option(100, "N, units of every reservoir", low=2)
    topologies: tuple[str, ...] = option(TOPOLOGIES, "random (the reference), small_world, "
                                         "scale_free, spatial (Waxman), spatial_growth "
                                         "(Kaiser-Hilgetag), dlr, dlrb, scr",
                                         choices=TOPOLOGIES, unique=True)
    tasks: tuple[str, ...] = option(TASKS, "narma10, mackey-glass (one-step), memory-capacity",
                                    choices=TASKS)
    seeds: int = option(10, "seeds 0..seeds-1 (data, weights, graphs); >= 2 for the tests",
                        low=1)
    mean_degree: int = option(10, "non-zeros per row of W (random density = mean_degree / N); "
                              "below units", low=1)
    rewire: float = option(0.1, "Watts-Strogatz rewiring probability", low=0, high=1)
    waxman_alpha: float = option(0.15, "Waxman length scale alpha (smaller: more local)",
                                 low=0, low_open=True)
    growth_alpha: float = option(5.0, "spatial growth decay alpha of beta exp(-alpha d) "
                                 "(larger: more local)", low=0, low_open=True)
    graph_mode: str = option("independent", "graph edges to W: independent, symmetric, "
                             "random_direction", choices=GRAPH_MODES)
    tune: bool = option(True, "choose rho|r, v, ridge per topology, seed and one-step task on "
                        "a validation segment")
    radii: tuple[float, ...] = option((0.5, 0.8, 0.95), "tuning grid: spectral radius (r)",
                                      low=0, low_open=True)
    input_scalings: tuple[float, ...] = option((0.1, 0.3, 1.0), "tuning grid: input scaling v",
                                               low=0, low_open=True)
    ridges: tuple[float, ...] = option((1e-10, 1e-8, 1e-6), "tuning grid: ridge penalty", low=0)
    spectral_radius: float = option(0.9, "rho(W) of random and graph reservoirs, r of "
                                    "dlr/dlrb/scr, without tuning and for memory capacity",
                                    low=0, low_open=True)
    input_scaling: float = option(0.3, "input scaling v without tuning", low=0, low_open=True)
    ridge: float = option(1e-8, "ridge penalty without tuning", low=0)
    dlrb_feedback: float = option(0.05, "DLRB backward weight b", finite=True)
    input_signs: str = option("pi", "signs of the dlr/dlrb/scr input weights: pi or random",
                              choices=SIGNS)
    mc_input_scaling: float = option(0.1, "input scaling v for memory capacity (near-linear)",
                                     low=0, low_open=True)
    mc_ridge: float = option(0.0, "memory-capacity readout ridge, relative to the standardised "
                             "states (0: the pseudo-inverse of Jaeger's protocol)", low=0)
    washout: int = option(200, "initial states dropped", low=0)
    train: int = option(2000, "training steps", low=1)
    validation: int = option(600, "validation steps (tuning; at least 1 with --tune)", low=0)
    test: int = option(1000, "test steps", low=1)
    test_name: str = option("welch", "significance test vs random: welch or mannwhitney",
                            choices=TESTS)
    significance: float = option(0.05, "p-value threshold", low=0, high=1, low_open=True,
                                 high_open=True)
    dtype: str = option("float64", "float32 or float64", choices=DTYPES)
    torch_threads: int = option(1, "torch.set_num_threads during the run", low=1)

    def validate(self) -> None:
        if "random" not in self.topologies:
            raise ValueError("topologies must include 'random' (the reference of the tests)")
        if self.seeds < 2:
            raise ValueError(f"seeds must be >= 2 for a significance test, got {self.seeds}")
        if not self.mean_degree < self.units:
            raise ValueError(f"mean_degree must be in [1, units), got {self.mean_degree}")
        if "scale_free" in self.topologies and self.mean_degree % 2:
            raise ValueError(f"scale_free needs an even mean_degree (m = mean_degree / 2), "
                             f"got {self.mean_degree}")
        if "small_world" in self.topologies and (self.mean_degree % 2 or self.mean_degree < 2):
            raise ValueError(f"small_world needs an even mean_degree >= 2 (k), "
                             f"got {self.mean_degree}")
        if "spatial_growth" in self.topologies and \
                self.mean_degree < 2 * (self.units - 1) / self.units:
            raise ValueError(f"spatial_growth is connected: it needs mean_degree >= "
                             f"2 (units - 1) / units, got {self.mean_degree}")
        if self.tune and self.validation < 1:
            raise ValueError(f"validation must be positive with tune, got {self.validation}")


def significance_test(name: str, scores: list[float], reference: list[float]) -> float:
    """Two-sided p-value of ``scores`` against ``reference``: Welch's t-test or Mann–Whitney U.

    Two samples with no spread at all (e.g. a deterministic reservoir on the same data) give
    NaN from the t-test; they are reported as p = 1 if equal and p = 0 if not.
    """
    from scipy import stats

    if name == "welch":
        if statistics.pvariance(scores) == 0 and statistics.pvariance(reference) == 0:
            return 1.0 if scores[0] == reference[0] else 0.0
        return float(stats.ttest_ind(scores, reference, equal_var=False).pvalue)
    if name == "mannwhitney":
        return float(stats.mannwhitneyu(scores, reference, alternative="two-sided").pvalue)
    raise ValueError(f"test must be one of {TESTS}, got {name!r}")


# ------------------------------------------------------------------------------------------------
def _unit_graph(cfg: ReservoirTopologiesConfig, topology: str, seed: int) -> torch.Tensor | None:
    """W of a graph topology scaled to spectral radius 1 (float64), or None for the others."""
    if topology not in GRAPH_KINDS:
        return None
    return graph_reservoir(topology, cfg.units, cfg.mean_degree, rewire=cfg.rewire,
                           waxman_alpha=cfg.waxman_alpha, growth_alpha=cfg.growth_alpha,
                           mode=cfg.graph_mode,
                           spectral_radius=1.0, seed=seed, dtype=torch.float64)


def _scores(cfg: ReservoirTopologiesConfig, topology: str, seed: int, data: dict[str, Any],
            dtype: torch.dtype) -> dict[str, Any]:
    """Test scores of one topology and seed on every task, and the chosen settings."""
    from rnnlab.analysis.memory import memory_capacity

    w1 = _unit_graph(cfg, topology, seed)
    model = "random" if topology in GRAPH_KINDS else topology

    def make(radius: float, v: float = 1.0) -> Any:
        return build_reservoir(model, cfg.units, radius, seed=seed,
                               density=cfg.mean_degree / cfg.units,
                               dlrb_feedback=cfg.dlrb_feedback, input_signs=cfg.input_signs,
                               input_scaling=v, topology=None if w1 is None else radius * w1,
                               dtype=dtype)

    out: dict[str, Any] = {}
    for task in cfg.tasks:
        if task == "memory-capacity":
            esn = make(cfg.spectral_radius, cfg.mc_input_scaling)
            mc = memory_capacity(esn, n_delays=2 * cfg.units, train_length=cfg.train,
                                 test_length=cfg.test, alpha=cfg.mc_ridge, seed=seed)
            out[task] = mc.mc
            out[f"{task}_setting"] = f"{cfg.spectral_radius:g}/{cfg.mc_input_scaling:g}"
            continue
        series = data[task]
        if cfg.tune:
            best = grid_search(make, series, cfg.radii, cfg.input_scalings, cfg.ridges,
                               one_step_score(series, nrmse))
        else:
            best = grid_search(make, series, (cfg.spectral_radius,), (cfg.input_scaling,),
                               (cfg.ridge,), lambda esn, xs, ros: [0.0] * len(ros))
        pred = best["readout"](best["states"][series.test])
        out[task] = nrmse(pred, series.targets[0, series.test])
        out[f"{task}_setting"] = f"{best['radius']:g}/{best['v']:g}/{best['alpha']:g}"
    out["nnz_per_row"] = float((make(cfg.spectral_radius).W != 0).sum()) / cfg.units
    return out


@register("reservoir-topologies",
          "small-world, scale-free, spatial, DLR, DLRB, SCR reservoirs vs a random ESN, with "
          "significance tests", ReservoirTopologiesConfig)
def run(cfg: ReservoirTopologiesConfig, ctx: RunContext) -> ExperimentResult:
    dtype = getattr(torch, cfg.dtype)
    started = time.perf_counter()
    per_seed: dict[str, dict[str, list[float]]] = {t: {k: [] for k in cfg.tasks}
                                                   for t in cfg.topologies}
    nnz: dict[str, list[float]] = {t: [] for t in cfg.topologies}
    settings: dict[str, list[dict[str, Any]]] = {t: [] for t in cfg.topologies}
    with ctx.progress("reservoir-topologies runs", cfg.seeds * len(cfg.topologies)) as advance:
        for seed in ctx.seeds(cfg):
            val = cfg.validation if cfg.tune else 0
            data = {task: task_series(task, seed, cfg.washout, cfg.train, val, cfg.test, dtype)
                    for task in cfg.tasks if task != "memory-capacity"}
            for topology in cfg.topologies:
                t = time.perf_counter()
                scores = _scores(cfg, topology, seed, data, dtype)
                for task in cfg.tasks:
                    per_seed[topology][task].append(scores[task])
                nnz[topology].append(scores["nnz_per_row"])
                settings[topology].append(scores)
                ctx.log_metrics({"topology": topology, "seed": seed,
                                 **{task: scores.get(task, math.nan) for task in TASKS},
                                 **{f"{task}_setting": scores.get(f"{task}_setting", "")
                                    for task in TASKS},
                                 "nnz_per_row": scores["nnz_per_row"],
                                 "seconds": time.perf_counter() - t})
                advance(1)
    wall = time.perf_counter() - started

    rows = []
    for task in cfg.tasks:
        ref = per_seed["random"][task]
        ref_mean = statistics.fmean(ref)
        higher_better = task == "memory-capacity"
        for topology in cfg.topologies:
            vals = per_seed[topology][task]
            mean, sd = mean_std(vals)
            p = math.nan if topology == "random" else significance_test(cfg.test_name, vals, ref)
            if topology == "random" or not p < cfg.significance:
                verdict = "reference" if topology == "random" else "no significant difference"
            else:
                better = (mean > ref_mean) == higher_better
                verdict = "significantly better" if better else "significantly worse"
            rows.append({
                "task": task, "topology": topology,
                "metric": "MC" if higher_better else "test NRMSE",
                "mean": mean, "std": sd, "median": statistics.median(vals),
                "vs_random_percent": 100.0 * (mean - ref_mean) / ref_mean,
                "p_value": p, "verdict": verdict,
                "nnz_per_row": statistics.fmean(nnz[topology]),
                "setting": _most_common([s[f"{task}_setting"] for s in settings[topology]]),
            })
    plot = _plot(cfg, ctx, per_seed, rows)
    graphs = [t for t in cfg.topologies if t in GRAPH_KINDS]
    parts = []
    for task in cfg.tasks:
        sel = [r for r in rows if r["task"] == task and r["topology"] != "random"]
        sig = [f"{r['topology']} ({r['verdict'].split()[1]}, p={r['p_value']:.2g})"
               for r in sel if r["verdict"].startswith("significantly")]
        parts.append(f"{task}: " + (", ".join(sig) if sig else "no topology differs") +
                     " significantly from random")
    test = "Welch's t-test" if cfg.test_name == "welch" else "Mann-Whitney U"
    summary = (f"{cfg.seeds} seeds, N={cfg.units}, {test}, p < {cfg.significance}: "
               + "; ".join(parts) + f". Graph topologies tested: {', '.join(graphs) or 'none'}."
               f" {cfg.seeds * len(cfg.topologies)} runs in {wall:.0f} s.")
    figures = {f"{r['task']}_{r['topology']}_p": r["p_value"] for r in rows
               if r["topology"] != "random"}
    figures["wall_seconds"] = wall
    return ExperimentResult(title=f"reservoir-topologies (N={cfg.units}, {cfg.seeds} seeds)",
                            rows=rows, summary=summary, plots=[plot], figures=figures)


def _most_common(values: list[str]) -> str:
    """``"0.95/0.3/1e-08 (6/10)"``: the most frequent setting and how often it was chosen."""
    value, count = Counter(values).most_common(1)[0]
    return f"{value} ({count}/{len(values)})"


def _plot(cfg: ReservoirTopologiesConfig, ctx: RunContext,
          per_seed: dict[str, dict[str, list[float]]], rows: list[dict[str, Any]]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cfg.tasks), figsize=(5.2 * len(cfg.tasks), 4.5),
                             squeeze=False)
    for ax, task in zip(axes.flat, cfg.tasks, strict=True):
        data = [per_seed[t][task] for t in cfg.topologies]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(cfg.topologies) + 1), cfg.topologies, rotation=35,
                      fontsize=8)
        ax.axhline(statistics.fmean(per_seed["random"][task]), color="grey", ls=":", lw=1)
        top = max(max(d) for d in data)
        span = (top - min(min(d) for d in data)) or abs(top) or 1.0
        for i, t in enumerate(cfg.topologies, start=1):
            row = next(r for r in rows if r["task"] == task and r["topology"] == t)
            if t != "random":
                # two rows of labels, so that neighbours' p-values do not run into each other
                lift = 0.03 if i % 2 else 0.09
                ax.annotate(f"p={row['p_value']:.2g}", (i, top + lift * span), ha="center",
                            va="bottom", fontsize=7)
        ax.set_ylim(top=top + 0.17 * span)
        label = "memory capacity (higher is better)" if task == "memory-capacity" else \
            "test NRMSE (lower is better)"
        ax.set_ylabel(label)
        ax.set_title(f"{task}, N={cfg.units}, {cfg.seeds} seeds", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return ctx.save_figure(fig, "topologies")
