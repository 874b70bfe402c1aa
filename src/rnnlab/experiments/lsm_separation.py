"""``lsm-separation``: the separation property of the liquid (Maass, Natschläger & Markram
2002, Fig. 2), beside the same measurement for an echo state network.

Inputs: pairs (u, v) of Poisson spike trains (one channel, ``rate`` Hz, ``duration`` ms) whose
input distance lies within ``tolerance`` of each target in ``distances``; the distance 0 means
the same train twice (the two runs then differ only by their initial state). The input distance
(the brian2 reproduction of Fig. 2 defines it so, to match the paper's numbers)::

    d(u, v) = (1/T) integral (u * g - v * g)^2 dt,   g(t) = exp(-(t / tau_in)^2), tau_in = 5 ms

computed in closed form from the spike times (the integral over the whole line:
integral g(t - a) g(t - b) dt = tau_in sqrt(pi/2) exp(-(a - b)^2 / (2 tau_in^2))). Candidate
pairs are drawn in blocks and kept when they fall in a target's window (rejection, as brian2).

Liquid: the paper's column (:func:`rnnlab.reservoir.lsm.build_column`, one column per seed),
each run with its own random initial potentials; the state of a run is its liquid state
(spikes filtered by exp(-t/30 ms)) sampled every ``sample_every`` ms. The state distance at
time t is the mean over neurons of (x_u(t) - x_v(t))^2 (no square root, as brian2's script, to
compare with the paper's figure), averaged over the pairs.

ESN: an :class:`~rnnlab.reservoir.EchoStateNetwork` of as many units as the column, one step
per millisecond, driven by the rate-coded input u * g (the same filtered train as in the input
distance), from random initial states uniform on [-0.5, 0.5]; the same state distance.

Table: per model and target distance, the measured input distance and the state distance
at the ``report_times`` (mean and std over seeds). Plot: state distance against time, one
line per input distance, liquid and ESN side by side.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    SeededOptions,
    aggregate,
    option,
    register,
)
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.lsm import LiquidColumn, build_column, liquid_states, steps_for

TAU_IN = 5.0   # ms, the Gaussian kernel of the input distance (Maass et al. 2002; brian2)


@dataclass
class LSMSeparationConfig(SeededOptions):
    seeds: int = option(2, "seeds: columns, ESNs and input pairs", low=1)
    distances: tuple[float, ...] = option((0.4, 0.2, 0.1, 0.0), "target input distances "
                                          "d(u, v) (0: the same train twice)", low=0)
    tolerance: float = option(0.01, "a pair counts for a target when |d - target| < this",
                              low=0, low_open=True)
    pairs: int = option(20, "input pairs per distance and seed", low=1)
    rate: float = option(20.0, "Poisson rate of the input trains (Hz)", low=0, low_open=True)
    duration: float = option(500.0, "length of a run (ms)", low=1)
    dt: float = option(0.1, "liquid time step (ms)", low=0, low_open=True)
    tau: float = option(30.0, "liquid-state filter time constant (ms)", low=0, low_open=True)
    sample_every: float = option(5.0, "state sampling interval (ms)", low=0, low_open=True)
    report_times: tuple[float, ...] = option((50.0, 100.0, 200.0, 400.0),
                                             "times (ms) of the table's state distances", low=0)
    esn_spectral_radius: float = option(0.9, "ESN spectral radius", low=0, low_open=True)
    esn_leak: float = option(0.1, "ESN leak rate per 1 ms step", low=0, high=1, low_open=True)
    esn_input_scaling: float = option(1.0, "ESN input scaling", low=0, low_open=True)
    max_candidates: int = option(400_000, "candidate pairs drawn at most per seed before "
                                          "giving up on a target", low=1)

    def validate(self) -> None:
        if not self.distances:
            raise ValueError("distances must name at least one target")
        if any(t > self.duration for t in self.report_times):
            raise ValueError("report_times must lie within the duration")


def _poisson_times(n: int, rate: float, duration: float, dt: float,
                   gen: torch.Generator) -> list[torch.Tensor]:
    """``n`` Poisson trains on the dt grid (times k dt, k < T), float64 ms."""
    counts = torch.poisson(torch.full((n,), rate * duration * 1e-3, dtype=torch.float64),
                           generator=gen).long()
    steps = steps_for(duration, dt)
    k = torch.randint(0, steps, (int(counts.sum()),), generator=gen)
    return [t.sort().values.double() * dt for t in torch.split(k, counts.tolist())]


def _padded(trains: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    m = max(1, max(t.numel() for t in trains))
    out = torch.zeros((len(trains), m), dtype=torch.float64)
    mask = torch.zeros((len(trains), m), dtype=torch.bool)
    for i, t in enumerate(trains):
        out[i, :t.numel()] = t
        mask[i, :t.numel()] = True
    return out, mask


def _overlap(a: torch.Tensor, am: torch.Tensor, b: torch.Tensor, bm: torch.Tensor
             ) -> torch.Tensor:
    """sum_ij integral g(t - a_i) g(t - b_j) dt per row."""
    lag = a[:, :, None] - b[:, None, :]
    g = TAU_IN * math.sqrt(math.pi / 2) * torch.exp(-lag**2 / (2 * TAU_IN**2))
    return (g * (am[:, :, None] & bm[:, None, :])).sum((1, 2))


def input_distance(u: list[torch.Tensor], v: list[torch.Tensor], duration: float) -> torch.Tensor:
    """d(u, v) of each pair (module docstring), float64."""
    a, am = _padded(u)
    b, bm = _padded(v)
    return (_overlap(a, am, a, am) + _overlap(b, bm, b, bm) - 2 * _overlap(a, am, b, bm)) \
        / duration


def draw_pairs(cfg: LSMSeparationConfig, gen: torch.Generator
               ) -> dict[float, list[tuple[torch.Tensor, torch.Tensor, float]]]:
    """``pairs`` input pairs per target distance: ``(u, v, d(u, v))``."""
    found: dict[float, list[tuple[torch.Tensor, torch.Tensor, float]]] = {}
    for target in cfg.distances:
        if target == 0:
            found[target] = [(t, t, 0.0) for t in
                             _poisson_times(cfg.pairs, cfg.rate, cfg.duration, cfg.dt, gen)]
        else:
            found[target] = []
    drawn, block = 0, 4000
    while any(len(p) < cfg.pairs for p in found.values()):
        if drawn >= cfg.max_candidates:
            short = {t: len(p) for t, p in found.items() if len(p) < cfg.pairs}
            raise RuntimeError(f"found too few input pairs after {drawn} candidates: {short} "
                               f"(widen --tolerance or change --distances)")
        u = _poisson_times(block, cfg.rate, cfg.duration, cfg.dt, gen)
        v = _poisson_times(block, cfg.rate, cfg.duration, cfg.dt, gen)
        d = input_distance(u, v, cfg.duration)
        drawn += block
        for target, got in found.items():
            if target == 0:
                continue
            for i in torch.nonzero((d - target).abs() < cfg.tolerance).flatten().tolist():
                if len(got) < cfg.pairs:
                    got.append((u[i], v[i], float(d[i])))
    return found


def _raster(trains: list[torch.Tensor], steps: int, dt: float) -> torch.Tensor:
    x = torch.zeros((len(trains), steps, 1))
    for i, t in enumerate(trains):
        idx = torch.round(t / dt).long()
        x[i, :, 0].index_add_(0, idx, torch.ones(idx.numel()))
    return x


def _rate_code(trains: list[torch.Tensor], duration: float) -> torch.Tensor:
    """(u * g)(t) at t = 1, 2, ..., duration ms: ``(trials, T_ms, 1)``."""
    a, am = _padded(trains)
    t = torch.arange(1, int(duration) + 1, dtype=torch.float64)
    g = torch.exp(-((t[None, :, None] - a[:, None, :]) / TAU_IN) ** 2) * am[:, None, :]
    return g.sum(-1, keepdim=True).float()


def separation_curves(cfg: LSMSeparationConfig, seed: int) -> dict[str, Any]:
    """One seed: the liquid's and the ESN's mean state distance over time per target."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(1_000_003 + seed)
    pairs = draw_pairs(cfg, gen)
    targets = list(pairs)
    trains_u = [p[0] for t in targets for p in pairs[t]]
    trains_v = [p[1] for t in targets for p in pairs[t]]
    n_pairs = len(trains_u)
    steps = steps_for(cfg.duration, cfg.dt)
    times = torch.arange(1, int(cfg.duration / cfg.sample_every) + 1) * cfg.sample_every
    times = times[times <= steps * cfg.dt + 1e-9].double()

    column = build_column(seed=seed)
    liquid = LiquidColumn(column, dt=cfg.dt)
    x = _raster(trains_u + trains_v, steps, cfg.dt)
    out = liquid(x, seed=2_000_003 + seed)
    states = liquid_states(out.spikes, cfg.dt, times, tau=cfg.tau).double()
    liquid_dist = ((states[:n_pairs] - states[n_pairs:]) ** 2).mean(-1)      # (pairs, S)

    esn = EchoStateNetwork(input_size=1, units=column.n_neurons,
                           spectral_radius=cfg.esn_spectral_radius, leak=cfg.esn_leak,
                           input_scaling=cfg.esn_input_scaling, seed=seed)
    r = _rate_code(trains_u + trains_v, cfg.duration)
    x0 = torch.rand((2 * n_pairs, column.n_neurons), generator=gen) - 0.5
    with torch.no_grad():
        h = esn.states(r, x0)                                                # (2P, T_ms, N)
    idx = torch.round(times).long() - 1
    hs = h[:, idx].double()
    esn_dist = ((hs[:n_pairs] - hs[n_pairs:]) ** 2).mean(-1)
    d_in = torch.tensor([p[2] for t in targets for p in pairs[t]], dtype=torch.float64)
    result: dict[str, Any] = {"seed": seed, "times": times, "targets": targets, "curves": {},
                              "d_input": {}, "rate_hz": float(out.spikes.double().mean())
                              / cfg.dt * 1e3, "seconds": 0.0}
    for j, target in enumerate(targets):
        sl = slice(j * cfg.pairs, (j + 1) * cfg.pairs)
        result["curves"][("liquid", target)] = liquid_dist[sl].mean(0)
        result["curves"][("ESN", target)] = esn_dist[sl].mean(0)
        result["d_input"][target] = float(d_in[sl].mean())
    result["seconds"] = time.perf_counter() - start
    return result


def _rows(cfg: LSMSeparationConfig, res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    times = res["times"]
    for (model, target), curve in res["curves"].items():
        row = {"model": model, "d_target": target, "seed": res["seed"],
               "d_input": res["d_input"][target]}
        for t in cfg.report_times:
            k = int(torch.argmin((times - t).abs()))
            row[f"dist_{t:g}ms"] = float(curve[k])
        row["liquid_rate_hz"] = res["rate_hz"]
        row["seconds"] = res["seconds"]
        rows.append(row)
    return rows


@register("lsm-separation",
          "separation property: liquid-state distance over time vs input distance, and an ESN",
          LSMSeparationConfig)
def run(cfg: LSMSeparationConfig, ctx: RunContext) -> ExperimentResult:
    start = time.perf_counter()
    results = []
    with ctx.progress("seeds", len(ctx.seeds(cfg))) as advance:
        for seed in ctx.seeds(cfg):
            res = separation_curves(cfg, seed)
            for row in _rows(cfg, res):
                ctx.log_metrics(row)
            results.append(res)
            advance(1)
    metric_rows = [row for res in results for row in _rows(cfg, res)]
    cols = ["d_input"] + [f"dist_{t:g}ms" for t in cfg.report_times]
    table = aggregate(metric_rows, by=("model", "d_target"), value=cols, count="seeds")
    plot = _plot(cfg, results, ctx)
    wall = time.perf_counter() - start
    late = f"dist_{cfg.report_times[-1]:g}ms"
    parts = []
    for model in ("liquid", "ESN"):
        vals = [f"{r['d_target']:g}: {r[late]:.3g}" for r in table if r["model"] == model]
        parts.append(f"{model} " + ", ".join(vals))
    summary = (f"State distance at {cfg.report_times[-1]:g} ms per input distance — "
               + "; ".join(parts) + f". {len(results)} seed(s) in {wall:.0f} s.")
    return ExperimentResult(title="lsm-separation: state distance vs input distance",
                            rows=table, summary=summary, plots=[plot],
                            figures={"wall_seconds": wall})


def _plot(cfg: LSMSeparationConfig, results: list[dict[str, Any]], ctx: RunContext):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    styles = ["--", "-.", ":", "-", (0, (3, 1, 1, 1)), (0, (5, 5))]
    times = results[0]["times"].numpy()
    for ax, model in zip(axes, ("liquid", "ESN"), strict=True):
        for i, target in enumerate(results[0]["targets"]):
            curve = torch.stack([r["curves"][(model, target)] for r in results]).mean(0)
            ax.plot(times, curve.numpy(), color="k", ls=styles[i % len(styles)],
                    label=f"d(u,v) = {target:g}")
        ax.set_xlabel("time (ms)")
        ax.set_ylabel("state distance")
        ax.set_title(f"{model}" + (" (Maass et al. 2002 column)" if model == "liquid" else
                                   f" ({cfg.esn_leak:g} leak, rho {cfg.esn_spectral_radius:g})"),
                     fontsize=9)
        ax.legend(fontsize=8, frameon=False)
        ax.grid(True, alpha=0.3)
    return ctx.save_figure(fig, "lsm_separation")
