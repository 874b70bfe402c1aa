"""``esn-forecast``: one-step and free-running Mackey–Glass and one-step NARMA-10 with a sparse
random ESN and the minimum-complexity reservoirs DLR, DLRB, SCR (Rodan & Tino 2011) at several
sizes N.

Models (:class:`~rnnlab.reservoir.EchoStateNetwork`, tanh units, leak 1, no bias, no output
feedback; only a ridge readout ``y = W_out x + c`` on the states is trained):

* ``esn``: sparse random W (density ``--density``, values U[-1, 1]) scaled to spectral radius
  ``rho``; dense input weights U[-v, v] (Jaeger 2001);
* ``dlr``: delay line ``W[i+1, i] = r``; ``dlrb``: plus ``W[i, i+1] = b``; ``scr``: simple
  cycle (rho = r); input weights of one absolute value v with signs from the digits of pi
  (``--input-signs pi``, Rodan & Tino's deterministic construction) or a seeded coin (Rodan, A.
  & Tino, P. (2011), "Minimum complexity echo state network", IEEE TNN 22(1)).

Data (one series per seed; the same series for every model at that seed):

* Mackey–Glass (tau = 17, beta = 0.2, gamma = 0.1, n = 10; RK4 with dt = 0.1, sampled every
  time unit, 500 time units of transient dropped, seeded history; :func:`rnnlab.tasks.
  mackey_glass`), shifted to ``s(t) = x(t) - 1`` (NRMSE is shift invariant, so the numbers are
  those of x). Input ``s(t)``, target ``s(t + 1)``.
* NARMA-10 as in Rodan & Tino 2011 (:func:`rnnlab.tasks.narma`; u ~ U[0, 0.5]): input ``u(t)``,
  target ``y(t + 1)``.

Protocol. One run of the reservoir over ``washout + train + validation + test`` steps (teacher
forced: the true input at every step); the first ``washout`` states are dropped, the readout is
fitted by ridge regression on the training segment. Hyperparameters are chosen per (task,
model, N, seed) on the validation segment from the grid ``--radii`` (rho of the ESN, r of the
deterministic reservoirs) x ``--input-scalings`` (v) x ``--ridges`` (alpha), the ranges of
Rodan & Tino's search (r in (0, 1), v in (0, 1]) thinned to a few values; DLRB's backward
weight b is fixed (``--dlrb-feedback``). Criterion: NARMA-10, one-step validation NMSE;
Mackey–Glass, the free-run validation NRMSE at the horizon (below), the harder and more
discriminating measure (one-step NRMSE is ~1e-4 for all of them). The test segment is used
once, with the chosen values.

Free run (Mackey–Glass): from a start ``t0`` the network gets the true ``s(t0)`` and its state
after ``s(t0 - 1)``, then runs on its own outputs (``u(t) = y(t - 1)``,
:meth:`EchoStateNetwork.generate`) for ``H = --horizon`` steps. Trials start every
``--trial-every`` steps of the segment. ``NRMSE84`` (Jaeger & Haas 2004, Science 304: the error
84 steps after the last true input, over independent trials) is
``sqrt(mean_trials (y_H - s(t0 + H))^2 / var(s))`` with ``var(s)`` the variance of the test
segment; ``freerun_nrmse_horizon`` averages the squared error over all H steps instead.

Reported: per (task, model, N) the mean and standard deviation over seeds of the test scores and
the chosen hyperparameters (columns ``radius``, ``input_scaling``, ``ridge``: one value, or the
values of the seeds joined by "/" when they differ). Plots: a free run of ``--plot-steps`` steps
from the first test start (seed 0, largest N) beside the true series, per model; and the scores
against N per model (mean and standard deviation over seeds).

Grid evaluation shares work: for one W the states of all input scalings v run as one batch (the
drive ``v W_in u`` of the ESN built with v = 1, which is exactly the W_in an ESN built with v has,
since W_in is linear in v and there is no bias), and the ridge statistics are accumulated once
and solved for each alpha.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    aggregate,
    check_choices,
    check_options,
    mean_std,
    option,
    register,
)
from rnnlab.reservoir import EchoStateNetwork, RidgeReadout

# The search and free-run helpers live in rnnlab.reservoir.tuning; the names stay importable
# from here (build_reservoir, grid_states, ridge_fits, ... were defined here before).
from rnnlab.reservoir.tuning import (  # noqa: F401
    Series,
    build_reservoir,
    free_run,
    freerun_scores,
    grid_search,
    grid_states,
    one_step_score,
    ridge_fits,
    trial_starts,
)
from rnnlab.tasks import mackey_glass, narma, nmse, nrmse

MODELS = ("esn", "dlr", "dlrb", "scr")
TASKS = ("mackey-glass", "narma10")
SIGNS = ("pi", "random")
DTYPES = ("float32", "float64")


@dataclass
class EsnForecastConfig:
    sizes: tuple[int, ...] = option((50, 100, 200), "reservoir sizes N", low=2)
    models: tuple[str, ...] = option(MODELS, "esn (sparse random), dlr, dlrb, scr",
                                     choices=MODELS, unique=True)
    tasks: tuple[str, ...] = option(TASKS, "mackey-glass (one-step and free run), narma10",
                                    choices=TASKS)
    seeds: int = option(3, "seeds 0..seeds-1 (data series and random weights)", low=1)
    radii: tuple[float, ...] = option((0.5, 0.8, 0.95),
                                      "grid: spectral radius of esn, weight r of dlr/dlrb/scr",
                                      low=0, low_open=True)
    input_scalings: tuple[float, ...] = option((0.1, 0.3, 1.0), "grid: input scaling v",
                                               low=0, low_open=True)
    ridges: tuple[float, ...] = option((1e-10, 1e-8, 1e-6), "grid: ridge penalty alpha", low=0)
    density: float = option(0.1, "density of the random ESN's W", low=0, low_open=True, high=1)
    dlrb_feedback: float = option(0.05, "DLRB backward weight b", finite=True)
    input_signs: str = option("pi", "signs of the dlr/dlrb/scr input weights: pi or random",
                              choices=SIGNS)
    washout: int = option(200, "initial states dropped", low=0)
    train: int = option(2000, "training steps", low=1)
    validation: int = option(600, "validation steps (model selection)", low=1)
    test: int = option(1000, "test steps", low=1)
    horizon: int = option(84, "free-run horizon H (Jaeger's NRMSE84: 84)", low=1)
    trial_every: int = option(40, "free-run trials start every this many steps of a segment",
                              low=1)
    plot_steps: int = option(300, "length of the free run shown in the plot (test segment)",
                             low=1)
    dtype: str = option("float64", "float32 or float64", choices=DTYPES)
    torch_threads: int = option(1, "torch.set_num_threads during the run", low=1)

    def validate(self) -> None:
        if "mackey-glass" in self.tasks:
            for name in ("validation", "test"):
                if getattr(self, name) <= self.horizon:
                    raise ValueError(f"{name} ({getattr(self, name)}) must be longer than the "
                                     f"free-run horizon ({self.horizon}) for Mackey-Glass")


def check_common(cfg: Any, chosen: tuple[str, ...], valid: tuple[str, ...], label: str,
                 tasks: tuple[str, ...], sizes: tuple[int, ...]) -> None:
    """Deprecated: the options declare their bounds and choices (:func:`option`), checked by
    :func:`rnnlab.experiments.registry.check_options`; this calls it."""
    warnings.warn("esn_forecast.check_common is deprecated: declare bounds and choices with "
                  "option(..., low=, choices=) and call registry.check_options(cfg)",
                  DeprecationWarning, stacklevel=2)
    check_choices(label, chosen, valid)
    check_options(cfg)


# ------------------------------------------------------------------------------------------------
def task_series(task: str, seed: int, washout: int, train: int, validation: int, test: int,
                dtype: torch.dtype) -> Series:
    """The series of ``task`` for ``seed`` (module docstring), split into consecutive segments
    washout | train | validation | test."""
    length = washout + train + validation + test
    if task == "mackey-glass":
        s = mackey_glass(length + 1, seed=seed, dtype=torch.float64) - 1.0
        u, y = s[:-1].view(1, -1, 1), s[1:].view(1, -1, 1)
    elif task == "narma10":
        u, y = narma(length, 10, seed=seed, washout=200, dtype=torch.float64)
    else:
        raise ValueError(f"unknown task {task!r}")
    a, b, c = washout, washout + train, washout + train + validation
    return Series(u.to(dtype), y.to(dtype), slice(a, b), slice(b, c), slice(c, length))


def _values_text(values: list[Any]) -> str:
    return "/".join(f"{v:g}" for v in values) if len(set(values)) > 1 else f"{values[0]:g}"


# ------------------------------------------------------------------------------------------------
def _run_one(cfg: EsnForecastConfig, task: str, model: str, n: int, seed: int, series: Series,
             dtype: torch.dtype) -> tuple[dict[str, Any], dict[str, Any]]:
    """Grid search on validation, then test: (metrics row, free-run trace of the first trial)."""
    tgt = series.targets
    mg = task == "mackey-glass"
    val_starts = trial_starts(series.validation, cfg.horizon, cfg.trial_every)
    val_var = float(tgt[0, series.validation].double().var(unbiased=False))

    def freerun_score(esn: EchoStateNetwork, xs: torch.Tensor,
                      readouts: list[RidgeReadout]) -> list[float]:
        try:
            pred, true = free_run(esn, readouts, xs, series, val_starts, cfg.horizon)
            return freerun_scores(pred, true, val_var)[0].tolist()
        except ValueError:      # a non-finite output in the free run: reject them all
            return [math.inf] * len(readouts)

    def make(radius: float) -> EchoStateNetwork:
        return build_reservoir(model, n, radius, seed=seed, density=cfg.density,
                               dlrb_feedback=cfg.dlrb_feedback, input_signs=cfg.input_signs,
                               dtype=dtype)

    best = grid_search(make, series, cfg.radii, cfg.input_scalings, cfg.ridges,
                       freerun_score if mg else one_step_score(series, nmse))
    ro, xs = best["readout"], best["states"]
    pred = ro(xs[series.test])
    target = tgt[0, series.test]
    row = {"task": task, "model": model, "N": n, "seed": seed, "radius": best["radius"],
           "input_scaling": best["v"], "ridge": best["alpha"], "validation_score": best["score"],
           "one_step_nrmse": nrmse(pred, target), "one_step_nmse": nmse(pred, target),
           "freerun_nrmse84": math.nan, "freerun_nrmse_horizon": math.nan,
           "persistence_nrmse": math.nan}
    trace: dict[str, Any] = {}
    if mg:
        row["persistence_nrmse"] = nrmse(series.inputs[0, series.test], target)
        esn = best["esn"]
        starts = trial_starts(series.test, cfg.horizon, cfg.trial_every)
        test_var = float(target.double().var(unbiased=False))
        p, true = free_run(esn, [ro], xs, series, starts, cfg.horizon)
        at_h, over = freerun_scores(p, true, test_var)
        row["freerun_nrmse84"], row["freerun_nrmse_horizon"] = float(at_h[0]), float(over[0])
        # A longer free run from the first test start, for the plot only.
        t0 = starts[0]
        steps = max(cfg.horizon, min(cfg.plot_steps, series.test.stop - t0))
        longer, _ = free_run(esn, [ro], xs, series, [t0], steps)
        offset = max(0, t0 - cfg.horizon)
        s = torch.cat([series.inputs[0, :1, 0], series.targets[0, :, 0]])   # s(0 .. L)
        trace = {"t0": t0, "offset": offset, "pred": longer[0, 0].tolist(),
                 "true": s[offset:t0 + steps + 1].tolist()}
    return row, trace


@register("esn-forecast",
          "one-step and free-running Mackey-Glass, one-step NARMA-10: ESN, DLR, DLRB, SCR vs N",
          EsnForecastConfig)
def run(cfg: EsnForecastConfig, ctx: RunContext) -> ExperimentResult:
    dtype = getattr(torch, cfg.dtype)
    runs: list[dict[str, Any]] = []
    traces: dict[str, dict[str, Any]] = {}
    total = len(cfg.tasks) * len(cfg.sizes) * len(cfg.models) * cfg.seeds
    started = time.perf_counter()
    with ctx.progress("esn-forecast runs", total) as advance:
        for task in cfg.tasks:
            for seed in ctx.seeds(cfg):
                series = task_series(task, seed, cfg.washout, cfg.train, cfg.validation,
                                     cfg.test, dtype)
                for n in cfg.sizes:
                    for model in cfg.models:
                        t = time.perf_counter()
                        row, trace = _run_one(cfg, task, model, n, seed, series, dtype)
                        row["seconds"] = time.perf_counter() - t
                        runs.append(row)
                        ctx.log_metrics(row)
                        if trace and seed == 0 and n == max(cfg.sizes):
                            traces[model] = trace
                        advance(1)
    wall = time.perf_counter() - started

    def chosen(key: str) -> Callable[[list[dict[str, Any]]], str]:
        return lambda sel: _values_text([r[key] for r in sel])

    # one seed: std 0 (no spread seen), as the table has always shown it
    rows = aggregate(runs, by=("task", "model", "N"), count="seeds",
                     value=("one_step_nrmse", "one_step_nmse", "freerun_nrmse84",
                            "freerun_nrmse_horizon"),
                     std=("one_step_nrmse", "freerun_nrmse84"), single_std=0.0,
                     groups=[(t, m, n) for t in cfg.tasks for m in cfg.models for n in cfg.sizes],
                     columns={k: chosen(k) for k in ("radius", "input_scaling", "ridge")})
    plots = _plots(cfg, ctx, rows, runs, traces)
    figures: dict[str, Any] = {"wall_seconds": wall}
    persistence = [r["persistence_nrmse"] for r in runs if r["task"] == "mackey-glass"]
    if persistence:
        figures["mackey_glass_persistence_nrmse"] = mean_std(persistence)[0]
    n_max = max(cfg.sizes)
    parts = []
    for task in cfg.tasks:
        key = "freerun_nrmse84" if task == "mackey-glass" else "one_step_nmse"
        at = {r["model"]: r[key] for r in rows if r["task"] == task and r["N"] == n_max}
        figures.update({f"{task}_{m}_N{n_max}_{key}": v for m, v in at.items()})
        best = min(at, key=lambda m: at[m] if math.isfinite(at[m]) else math.inf)
        parts.append(f"{task} at N={n_max}, {key}: " + ", ".join(
            f"{m} {v:.3g}" for m, v in at.items()) + f" (best: {best})")
    summary = "; ".join(parts) + f". {len(runs)} runs in {wall:.0f} s."
    return ExperimentResult(title="esn-forecast: ESN, DLR, DLRB, SCR on Mackey-Glass and "
                                  "NARMA-10", rows=rows, summary=summary, plots=plots,
                            figures=figures)


def _plots(cfg: EsnForecastConfig, ctx: RunContext, rows: list[dict[str, Any]],
           runs: list[dict[str, Any]], traces: dict[str, dict[str, Any]]) -> list:
    import matplotlib.pyplot as plt

    plots = []
    if traces:
        models = list(traces)
        cols = min(2, len(models))
        nrows = math.ceil(len(models) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 3.2 * nrows), squeeze=False)
        for ax, model in zip(axes.flat, models, strict=False):
            tr = traces[model]
            true = tr["true"]
            ax.plot(range(tr["offset"], tr["offset"] + len(true)), true, lw=1.4, label="true")
            ts = range(tr["t0"] + 1, tr["t0"] + 1 + len(tr["pred"]))
            ax.plot(ts, tr["pred"], ls="--", lw=1.4, label="free run")
            ax.axvline(tr["t0"], color="grey", lw=0.8)
            ax.axvline(tr["t0"] + cfg.horizon, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{model}, N={max(cfg.sizes)}, seed 0: free run from t0={tr['t0']} "
                         f"(dotted: t0+{cfg.horizon})", fontsize=9)
            ax.set_xlabel("t")
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(models):]:
            ax.axis("off")
        fig.tight_layout()
        plots.append(ctx.save_figure(fig, "freerun_mackey_glass"))

    panels = []
    if "mackey-glass" in cfg.tasks:
        panels += [("mackey-glass", "one_step_nrmse", "Mackey-Glass one-step test NRMSE"),
                   ("mackey-glass", "freerun_nrmse84",
                    f"Mackey-Glass free-run NRMSE at {cfg.horizon} steps")]
    if "narma10" in cfg.tasks:
        panels.append(("narma10", "one_step_nmse", "NARMA-10 one-step test NMSE"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (task, key, title) in zip(axes.flat, panels, strict=False):
        for model in cfg.models:
            ys, errs = [], []
            for n in cfg.sizes:
                vals = [r[key] for r in runs if (r["task"], r["model"], r["N"]) == (task, model, n)]
                m, s = mean_std(vals, single_std=0.0)
                ys.append(m)
                errs.append(s)
            ax.errorbar(cfg.sizes, ys, yerr=errs, marker="o", capsize=3, label=model)
        if key == "one_step_nrmse":
            pers = mean_std([r["persistence_nrmse"] for r in runs if r["task"] == task])[0]
            ax.axhline(pers, color="k", ls=":", lw=1, label="persistence s(t+1)=s(t)")
        ax.set_yscale("log")
        ax.set_xlabel("N (units)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    plots.append(ctx.save_figure(fig, "error_vs_n"))
    return plots
