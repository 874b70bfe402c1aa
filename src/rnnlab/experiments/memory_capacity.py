"""``memory-capacity``: short-term memory capacity against spectral radius and leak, for a
shallow ESN, deep ESNs of the same total size (with and without intrinsic plasticity) and the
deterministic reservoirs of Rodan & Tino (2011).

Memory capacity (Jaeger 2001, "Short term memory in echo state networks", GMD Report 152)::

    MC = sum_{k=1}^{K} MC_k,    MC_k = r^2(u(t - k), o_k(t))

with ``o_k`` a linear readout of the state trained to recall ``u(t - k)`` from i.i.d. input
``u ~ U[-1, 1]``; measured by :func:`rnnlab.analysis.memory_capacity` (protocol in
``docs/memory_entropy.md``: washout, separate train and test segments, least-squares readouts).
For i.i.d. input ``MC <= N`` (Jaeger 2001), N the number of state features (all layers of a deep
ESN).

Two panels, in the shape of Gallicchio, Micheli & Pedrelli (2017, "Deep reservoir computing: a
critical experimental analysis", Neurocomputing 268, MC against rho per model) and of Rodan &
Tino (2011, "Minimum complexity echo state network", IEEE TNN 22(1), MC of DLR, DLRB and SCR
beside a random ESN):

* MC against the spectral radius ``rho`` at a fixed leak, one line per model;
* MC against the leak rate at a fixed ``rho`` for a few models.

Models (``--models``): ``ESN`` (random W of density ``--density``, N units), ``deepESN``,
``deepESN-IA``, ``groupedESN`` (:class:`~rnnlab.reservoir.DeepEchoStateNetwork`, ``layers``
layers of ``N / layers`` units, every layer scaled to ``rho``), ``DLR``, ``DLRB``, ``SCR`` (N
units, input weights of one absolute value with the signs of the digits of pi, as Rodan &
Tino). A ``+IP`` suffix pre-trains the reservoir with intrinsic plasticity (Schrauwen et al.
2008, tanh units, Gaussian target) on i.i.d. input of the same distribution before measuring.

What the x axis means per model: the spectral radius every random W (each layer's for a deep
ESN) is scaled to; for SCR the cycle weight ``r``, which *is* its spectral radius; for DLR and
DLRB the forward weight ``r`` (a delay line is nilpotent, rho(W) = 0, so it cannot be scaled to a
spectral radius; DLRB keeps its backward weight ``b`` fixed, so its rho(W) is
``2 sqrt(r b) cos(pi / (N + 1))``). The table gives for every row the measured ``rho_W`` and
the effective spectral radius of the linearisation at the origin,
``rho((1 - a) I + a diag(g) W)`` with the leak ``a`` and the IP gains ``g`` (max over layers: the
deep ESN's Jacobian is block triangular).

For the shallow models without IP the table also gives the linear theory ``linear_mc``
(:func:`rnnlab.analysis.linear_memory_capacity`): the MC of the same W, W_in and leak with the
tanh removed, ``sum_k (A^k b)^T P^+ (A^k b)``, in exact arithmetic with unlimited data (e.g.
``N - 1`` for a delay line of N units, ``rank - MC_0`` in general). It is an upper reference,
not a prediction: it counts every state direction the input reaches, down to relative sizes
of about 1e-16, while a measurement with a tanh, finite data and a fitted readout resolves only
the directions well above the non-linear distortion (about ``input_scaling^2`` relative) and
round-off. The two meet for a well-conditioned reservoir at tiny input scaling (a delay line
with ``r`` near 1: tested).

Settings (the defaults) follow the published DeepESN code of Gallicchio et al.
(github.com/gallicch/DeepESN, ``DeepESN2018a``: ``example_DeepESN_1.m`` measures MC with 10
layers of 10 units, input scaling 0.1 in its ``'byrange'`` mode; ``DeepESN.m``):

* input weights, inter-layer weights and bias weights all uniform on ``[-0.1, 0.1]``: in
  ``'byrange'`` mode that code scales the inter-layer matrices (and their bias column) by the
  input scaling (``--inter-scaling``, ``--bias-scaling``); dense recurrent matrices
  (``--density``, ``--layer-density`` 1). The shallow ESN gets the same settings (the code's
  shallow ESN is its deep one with one layer); DLR, DLRB and SCR keep Rodan & Tino's (no bias).
* the readout is unregularised least squares by the pseudo-inverse (that code's ``pinv`` when
  ``readout_regularization`` is 0; ``--ridge 0``). A non-zero ``--ridge`` is relative to the
  standardised states (:func:`rnnlab.analysis.memory_capacity`), never absolute: the upper
  layers of a deep ESN have states orders of magnitude smaller than the first layer's, and an
  absolute penalty discards them and reverses the deep-versus-shallow comparison (measured in
  ``docs/memory_entropy.md``).

A deep layer of n units reads n states of the layer below, so with inter-layer weights on
``[-1, 1]`` its drive grows with n and the upper layers saturate; ``--inter-scaling 1`` shows
that regime (its MC is in ``docs/memory_entropy.md``).

Cost: a measurement runs ``batch`` sequences of ``washout + train_length + test_length`` steps
(the sequences side by side, so 4 x 950 steps cost about one 950-step run); IP adds
``ip_epochs x ip_steps`` steps with a dozen tensor ops each, per layer.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab._validation import check_number
from rnnlab.analysis.esp import esp_check
from rnnlab.analysis.memory import linear_memory_capacity, memory_capacity
from rnnlab.analysis.spectral import spectral_radius
from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    SeededOptions,
    format_mean_std,
    mean_std,
    option,
    register,
)
from rnnlab.reservoir.deep import DeepEchoStateNetwork
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.plasticity import IntrinsicPlasticity

SHALLOW = ("ESN", "DLR", "DLRB", "SCR")
DEEP = ("deepESN", "deepESN-IA", "groupedESN")
BASES = SHALLOW + DEEP
IP_SUFFIX = "+IP"
DET_INPUTS = ("sign_pi", "sign_random", "uniform")


# ------------------------------------------------------------------------------------------------
# Deprecated helpers (the other reservoir experiments used to import them from here)
def check_numbers(name: str, values: Any, **bounds: Any) -> tuple[float, ...]:
    """Deprecated: declare the bounds on the option, ``option(..., low=, high=)``, and the
    registry checks every item (:func:`rnnlab.experiments.registry.check_options`)."""
    warnings.warn("rnnlab.experiments.memory_capacity.check_numbers is deprecated: declare the "
                  "bounds with option(..., low=..., high=...) and the registry checks them",
                  DeprecationWarning, stacklevel=2)
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must be a non-empty list of numbers, got {values!r}")
    return tuple(check_number(f"{name} entry", v, **bounds) for v in values)


def fmt(mean: float, std: float, digits: int = 2) -> str:
    """Deprecated: :func:`rnnlab.experiments.registry.format_mean_std` (same arguments)."""
    warnings.warn("rnnlab.experiments.memory_capacity.fmt moved: use "
                  "rnnlab.experiments.registry.format_mean_std (same arguments)",
                  DeprecationWarning, stacklevel=2)
    return format_mean_std(mean, std, digits)


# ------------------------------------------------------------------------------------------------
def parse_model(name: str) -> tuple[str, bool]:
    """``"deepESN+IP"`` -> ``("deepESN", True)``; raises ``ValueError`` for an unknown model."""
    if not isinstance(name, str):
        raise TypeError(f"a model name must be a string, got {name!r}")
    ip = name.endswith(IP_SUFFIX)
    base = name[: -len(IP_SUFFIX)] if ip else name
    if base not in BASES:
        raise ValueError(f"unknown model {name!r}: expected one of {BASES}, optionally with the "
                         f"suffix {IP_SUFFIX!r} (e.g. 'deepESN+IP')")
    return base, ip


@dataclass
class MemoryCapacityConfig(SeededOptions):
    models: tuple[str, ...] = option(
        ("ESN", "ESN+IP", "deepESN", "deepESN+IP", "deepESN-IA", "groupedESN", "DLR", "DLRB",
         "SCR"),
        f"models of the MC-vs-rho panel: {', '.join(BASES)}, each optionally with +IP")
    spectral_radii: tuple[float, ...] = option(
        (0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.2),
        "x axis: rho(W) (random W, each deep layer, SCR's r) or the forward weight r (DLR, DLRB)",
        low=0, low_open=True)
    leak: float = option(1.0, "leak rate of the MC-vs-rho panel", low=0, high=1, low_open=True)
    leak_models: tuple[str, ...] = option(
        ("ESN", "deepESN", "groupedESN", "SCR"),
        "models of the MC-vs-leak panel (empty: no such panel)")
    leaks: tuple[float, ...] = option((0.1, 0.3, 0.6, 1.0), "leak rates of that panel",
                                      low=0, high=1, low_open=True)
    leak_rho: float = option(0.9, "rho (or r) of the MC-vs-leak panel", low=0, low_open=True)
    units: int = option(100, "N: total units (a deep ESN has layers x units/layers)", low=1)
    layers: int = option(10, "layers of the deep ESNs (must divide units)", low=1)
    density: float = option(1.0, "density of the shallow random W (1: dense, as the DeepESN "
                                 "code)", low=0, high=1, low_open=True)
    layer_density: float = option(1.0, "density of each deep layer's random W",
                                  low=0, high=1, low_open=True)
    input_scaling: float = option(0.1, "input weights uniform on [-s, s] (DLR/DLRB/SCR: |v| = s)",
                                  low=0, low_open=True)
    inter_scaling: float = option(0.1, "deep ESNs: weights from layer l-1 uniform on [-s, s] "
                                       "(the DeepESN code: the input scaling)",
                                  low=0, low_open=True)
    bias_scaling: float = option(0.1, "ESN and deep ESNs: bias uniform on [-s, s] (the DeepESN "
                                      "code: the input scaling); DLR/DLRB/SCR have none", low=0)
    det_input: str = option("sign_pi", "input weights of DLR/DLRB/SCR: sign_pi, sign_random, "
                                       "uniform", choices=DET_INPUTS)
    dlrb_backward: float = option(0.05, "DLRB's backward weight b", low=0, low_open=True)
    n_delays: int | None = option(None, "largest delay K (None: 2N)", low=1)
    batch: int = option(4, "independent input sequences per measurement (pooled)", low=1)
    washout: int | None = option(None, "washout steps per sequence (None: K), at least K")
    train_length: int = option(500, "training steps per sequence", low=2)
    test_length: int = option(250, "test steps per sequence", low=2)
    ridge: float = option(0.0, "ridge penalty of the delay readouts, relative to the "
                               "standardised states (0: pseudo-inverse)", low=0)
    ip_lr: float = option(1e-3, "IP learning rate", low=0, low_open=True)
    ip_sigma: float = option(0.2, "IP Gaussian target std (mean 0)", low=0, low_open=True)
    ip_epochs: int = option(1, "IP passes over its data", low=1)
    ip_steps: int = option(600, "IP training steps (i.i.d. U[-1, 1], 1 sequence)", low=1)
    ip_washout: int = option(100, "IP washout steps (no update), below ip_steps", low=0)

    def validate(self) -> None:
        if not self.models:
            raise ValueError("models must name at least one model")
        for name in tuple(self.models) + tuple(self.leak_models):
            parse_model(name)
        if self.units % self.layers:
            raise ValueError(f"layers ({self.layers}) must divide units ({self.units}): the deep "
                             f"ESNs have the same total number of units as the shallow one")
        if self.washout is not None and self.washout < self.delays:
            raise ValueError(f"washout ({self.washout}) must be at least the largest delay "
                             f"n_delays ({self.delays}): the target u(t - k) must exist")
        if not self.ip_washout < self.ip_steps:
            raise ValueError(f"ip_washout must be an int in [0, ip_steps), got {self.ip_washout}")

    @property
    def delays(self) -> int:
        return 2 * self.units if self.n_delays is None else self.n_delays


# ------------------------------------------------------------------------------------------------
def build_reservoir(cfg: MemoryCapacityConfig, base: str, x: float, leak: float,
                    seed: int) -> torch.nn.Module:
    """The float64 reservoir ``base`` at x-axis value ``x`` (rho, or r for DLR/DLRB; module
    docstring) and leak ``leak``."""
    common = {"leak": leak, "seed": seed, "dtype": torch.float64}
    if base in DEEP:
        return DeepEchoStateNetwork(
            1, cfg.units // cfg.layers, cfg.layers, variant=base, spectral_radius=x,
            input_scaling=cfg.input_scaling, inter_scaling=cfg.inter_scaling,
            bias_scaling=cfg.bias_scaling, density=cfg.layer_density, **common)
    if base == "ESN":
        return EchoStateNetwork(input_size=1, units=cfg.units, spectral_radius=x,
                                density=cfg.density, input_scaling=cfg.input_scaling,
                                bias_scaling=cfg.bias_scaling, **common)
    det = {"input_scaling": cfg.input_scaling, "input_weights": cfg.det_input}
    if base == "SCR":
        return EchoStateNetwork(input_size=1, units=cfg.units, topology="scr", spectral_radius=x,
                                **det, **common)
    if base == "DLR":
        return EchoStateNetwork(input_size=1, units=cfg.units, topology="dlr", r=x, **det, **common)
    return EchoStateNetwork(input_size=1, units=cfg.units, topology="dlrb", r=x,
                            backward_weight=cfg.dlrb_backward, **det, **common)


def reservoir_layers(model: torch.nn.Module) -> list[EchoStateNetwork]:
    """The shallow reservoirs of a model: itself, or a deep ESN's layers."""
    if isinstance(model, DeepEchoStateNetwork):
        return list(model.layers)
    return [model]


def _linearisation_radii(model: torch.nn.Module) -> tuple[float, float]:
    """``(max rho(W_l), max rho((1 - a) I + a diag(g) W_l))`` over the layers."""
    rho_w = eff = 0.0
    for esn in reservoir_layers(model):
        rho_w = max(rho_w, spectral_radius(esn.W))
        eff = max(eff, esp_check(esn).effective_spectral_radius)
    return rho_w, eff


def measure(cfg: MemoryCapacityConfig, name: str, x: float, leak: float, seed: int
            ) -> dict[str, Any]:
    """One MC measurement: build, optionally IP-train, measure; the metrics row."""
    base, ip = parse_model(name)
    start = time.perf_counter()
    model = build_reservoir(cfg, base, x, leak, seed)
    ip_failed = False
    if ip:
        gen = torch.Generator().manual_seed(2_000_003 + seed)
        u_ip = 2.0 * torch.rand(1, cfg.ip_steps, 1, generator=gen, dtype=torch.float64) - 1.0
        rule = IntrinsicPlasticity("schrauwen", lr=cfg.ip_lr, mu=0.0, sigma=cfg.ip_sigma,
                                   epochs=cfg.ip_epochs)
        try:
            rule.fit(model, u_ip, cfg.ip_washout)
        except ValueError:
            # IP diverged (gain <= 0 or non-finite): a failed point, not a crash of the sweep.
            ip_failed = True
    rho_w, eff = _linearisation_radii(model)
    mc = theory = None
    if not ip_failed:
        k = cfg.delays
        result = memory_capacity(
            model, n_delays=k, train_length=cfg.train_length, test_length=cfg.test_length,
            washout=k if cfg.washout is None else cfg.washout, input_dist="uniform",
            input_scale=1.0, alpha=cfg.ridge, batch=cfg.batch, seed=1_000_003 + seed)
        mc = result.mc
    if base in SHALLOW and not ip:
        try:
            theory = linear_memory_capacity(model.W, model.W_in, cfg.delays, leak=model.leak).mc
        except ValueError:
            theory = None  # rho((1 - a) I + a W) >= 1: no stationary linear state
    return {"model": name, "rho": x, "leak": leak, "seed": seed, "mc": mc,
            "linear_mc": theory, "rho_W": rho_w, "eff_rho": eff, "ip_failed": ip_failed,
            "seconds": time.perf_counter() - start}


def _aggregate(panel: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    mc_m, mc_s = mean_std([r["mc"] for r in runs if r["mc"] is not None])
    eff_m, _ = mean_std([r["eff_rho"] for r in runs])
    rho_w, _ = mean_std([r["rho_W"] for r in runs])
    theories = [r["linear_mc"] for r in runs if r["linear_mc"] is not None]
    return {"panel": panel, "model": runs[0]["model"], "rho": runs[0]["rho"],
            "leak": runs[0]["leak"], "mc_mean": mc_m, "mc_std": mc_s,
            "linear_mc": mean_std(theories)[0] if theories else None,
            "rho_W": rho_w, "eff_rho": eff_m,
            "seeds": len(runs), "ip_failed": sum(bool(r["ip_failed"]) for r in runs)}


@register("memory-capacity",
          "MC vs spectral radius and leak: ESN, deep ESNs (+IP), DLR, DLRB, SCR",
          MemoryCapacityConfig)
def run(cfg: MemoryCapacityConfig, ctx: RunContext) -> ExperimentResult:
    jobs = [("rho", m, x, cfg.leak) for m in cfg.models for x in cfg.spectral_radii]
    jobs += [("leak", m, cfg.leak_rho, a) for m in cfg.leak_models for a in cfg.leaks]
    seeds = ctx.seeds(cfg)
    rows = []
    # A point of the leak panel at the rho panel's leak is the same measurement: reuse it.
    done: dict[tuple[str, float, float, int], dict[str, Any]] = {}
    start = time.perf_counter()
    with ctx.progress("MC points", len(jobs)) as advance:
        for panel, name, x, leak in jobs:
            runs = []
            for seed in seeds:
                key = (name, x, leak, seed)
                if key not in done:
                    done[key] = measure(cfg, name, x, leak, seed)
                    ctx.log_metrics({"panel": panel, **done[key]})
                runs.append(done[key])
            rows.append(_aggregate(panel, runs))
            advance(1)
    wall = time.perf_counter() - start
    plot = _plot(cfg, rows, ctx)

    figures: dict[str, Any] = {"wall_seconds": wall, "units": cfg.units}
    lines = []
    for name in cfg.models:
        pts = [r for r in rows if r["panel"] == "rho" and r["model"] == name
               and math.isfinite(r["mc_mean"])]
        if pts:
            best = max(pts, key=lambda r: r["mc_mean"])
            figures[f"peak_mc_{name}"] = best["mc_mean"]
            figures[f"peak_rho_{name}"] = best["rho"]
            mc = format_mean_std(best["mc_mean"], best["mc_std"], 1)
            lines.append(f"{name} {mc} at {best['rho']}")
    failed = sum(bool(r["ip_failed"]) for r in done.values())
    summary = (f"Peak MC (K = {cfg.delays} delays, N = {cfg.units}, bound MC <= N) per model: "
               + "; ".join(lines) + f". {len(done)} measurements in {wall:.0f} s."
               + (f" IP diverged in {failed} run(s) (MC left out)." if failed else ""))
    return ExperimentResult(title="memory-capacity: MC against rho and leak", rows=rows,
                            summary=summary, plots=[plot], figures=figures)


def _plot(cfg: MemoryCapacityConfig, rows: list[dict[str, Any]], ctx: RunContext):
    import matplotlib.pyplot as plt

    has_leak = any(r["panel"] == "leak" for r in rows)
    fig, axes = plt.subplots(1, 2 if has_leak else 1, figsize=(13 if has_leak else 8, 5.2),
                             squeeze=False, gridspec_kw={"width_ratios": [2, 1]} if has_leak
                             else None)
    colors = {b: f"C{i}" for i, b in enumerate(BASES)}
    styles = {"DLR": ":", "DLRB": ":", "SCR": ":"}
    for panel, ax, key, label in (("rho", axes[0][0], "rho", "rho(W)  (r for DLR, DLRB)"),
                                  ("leak", axes[0][-1], "leak", "leak rate a")):
        if panel == "leak" and not has_leak:
            continue
        names = cfg.models if panel == "rho" else cfg.leak_models
        for name in names:
            pts = [r for r in rows if r["panel"] == panel and r["model"] == name]
            base, ip = parse_model(name)
            xs = [r[key] for r in pts]
            ys = [r["mc_mean"] for r in pts]
            es = [0.0 if not math.isfinite(r["mc_std"]) else r["mc_std"] for r in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o" if not ip else "s", ms=4, capsize=2,
                        color=colors[base], ls="--" if ip else styles.get(base, "-"),
                        label=name)
        ax.axhline(cfg.units, color="k", lw=0.8, ls="-.", label=f"bound MC = N = {cfg.units}")
        ax.set_xlabel(label)
        ax.set_ylabel("memory capacity")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0][0].set_title(f"MC vs rho, leak {cfg.leak}, N = {cfg.units} "
                         f"({cfg.layers} x {cfg.units // cfg.layers} deep), input scaling "
                         f"{cfg.input_scaling}", fontsize=9)
    axes[0][0].legend(fontsize=7, ncol=2)
    if has_leak:
        axes[0][-1].set_title(f"MC vs leak at rho {cfg.leak_rho}", fontsize=9)
        axes[0][-1].legend(fontsize=7)
    return ctx.save_figure(fig, "memory_capacity")
