"""``deep-esn-entropy``: layer-wise average state entropy of deep ESNs beside a shallow ESN of
the same total size.

Average state entropy (Ozturk, Xu & Principe 2007, Neural Computation 19(1); per layer in
Gallicchio, Micheli & Pedrelli 2017, "Deep reservoir computing: a critical experimental
analysis", Neurocomputing 268): at each step the M activations of a layer are M samples of one
distribution, whose Renyi quadratic entropy is estimated with a Gaussian Parzen window::

    H2(t) = -log( (1/M^2) sum_{i,j} G_{sigma sqrt 2}(x_i(t) - x_j(t)) ),    ASE = mean_t H2(t)

(:func:`rnnlab.analysis.layer_state_entropy`; ``sigma`` by Silverman's rule at each step unless
``--kernel-size`` fixes it; see ``docs/memory_entropy.md``). With Silverman's width, scaling a
layer's states by c shifts its H2 by exactly ``log c``: the measure follows the spread of the
units' activations at a step, which is why the table also gives each layer's spread (the mean
over steps of the standard deviation across units).

Models, L layers of N / L units each, every layer's W scaled to the same spectral radius:
``deepESN`` (layer l driven by layer l-1), ``deepESN-IA`` (also by the input), ``groupedESN``
(independent reservoirs all driven by the input); the shallow ``ESN`` has N units. Its entropy is
given on all N units (``layer = "all"``) and, to compare like with like (the estimator depends on
M), as the mean over its units split into L fixed groups of N / L (``layer = "groups"``). With
``--ip`` the models are also measured after intrinsic plasticity (Schrauwen et al. 2008,
Gaussian target; layer by layer for a deep ESN), on the same input.

The input is i.i.d. ``U[-1, 1]`` (``--input uniform``) or the Mackey–Glass series (tau = 17,
squashed by ``tanh(x - 1)``); the first ``washout`` steps are dropped.

Settings (the defaults) are those of the published DeepESN code of Gallicchio et al.
(github.com/gallicch/DeepESN, ``DeepESN2018a/DeepESN.m`` with its example's input scaling 0.1
in ``'byrange'`` mode): input, inter-layer and bias weights uniform on ``[-0.1, 0.1]`` (that
code scales the inter-layer matrices and their bias column by the input scaling), dense
recurrent matrices; the shallow ESN gets the same. With a bias, the spread of a layer's units
at one step includes each unit's fixed operating point, which the Parzen estimate counts as
much as the input-driven variation; ``--bias-scaling 0`` measures without it (both tables in
``docs/memory_entropy.md``).

Gallicchio, Micheli & Pedrelli (2017) report the entropy increasing with depth for deepESN (with
IP pre-training). Since layer 1 is drawn first from the seed in every variant, layer 1 is the
same network (and gives the same entropy) in deepESN, deepESN-IA and groupedESN.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab.analysis.entropy import layer_state_entropy, state_entropy
from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    SeededOptions,
    aggregate,
    format_mean_std,
    mean_of,
    option,
    register,
    std_of,
)
from rnnlab.reservoir.deep import VARIANTS, DeepEchoStateNetwork
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.plasticity import IntrinsicPlasticity
from rnnlab.tasks.series import mackey_glass, mackey_glass_squash

INPUTS = ("uniform", "mackey-glass")
MODELS = ("ESN", *VARIANTS)


@dataclass
class DeepESNEntropyConfig(SeededOptions):
    variants: tuple[str, ...] = option(VARIANTS, f"deep variants: {', '.join(VARIANTS)}",
                                       choices=VARIANTS, item="variant")
    units: int = option(500, "N: total units (the shallow ESN's size)", low=1)
    layers: int = option(10, "L (must divide units)", low=1)
    spectral_radius: float = option(0.9, "rho(W) of every layer and of the shallow ESN",
                                    low=0, low_open=True)
    leak: float = option(1.0, "leak rate", low=0, high=1, low_open=True)
    input_scaling: float = option(0.1, "weights from u(t) uniform on [-s, s]",
                                  low=0, low_open=True)
    inter_scaling: float = option(0.1, "weights from layer l-1 uniform on [-s, s] (the DeepESN "
                                       "code: the input scaling)", low=0, low_open=True)
    bias_scaling: float = option(0.1, "bias uniform on [-s, s] (the DeepESN code: the input "
                                      "scaling)", low=0)
    density: float = option(1.0, "density of the shallow W (1: dense, as the DeepESN code)",
                            low=0, high=1, low_open=True)
    layer_density: float = option(1.0, "density of each deep layer's W",
                                  low=0, high=1, low_open=True)
    input: str = option("uniform", "driving input: uniform (i.i.d. U[-1, 1]) or mackey-glass",
                        choices=INPUTS)
    washout: int = option(200, "steps dropped before measuring", low=0)
    steps: int = option(500, "steps measured", low=1)
    kernel_size: float | None = option(None, "Parzen width sigma (None: Silverman's rule)",
                                       low=0, low_open=True)
    ip: bool = option(True, "also measure after intrinsic plasticity (Schrauwen)")
    ip_lr: float = option(5e-4, "IP learning rate")
    ip_sigma: float = option(0.2, "IP Gaussian target std (mean 0)")
    ip_epochs: int = option(1, "IP passes over the input", low=1)

    def validate(self) -> None:
        if self.units % self.layers:
            raise ValueError(f"layers ({self.layers}) must divide units ({self.units}): the deep "
                             f"ESNs have the same total number of units as the shallow one")
        if self.units // self.layers < 2:
            raise ValueError("every layer needs at least 2 units (entropy across units)")
        if self.ip:
            IntrinsicPlasticity("schrauwen", lr=self.ip_lr, sigma=self.ip_sigma,
                                epochs=self.ip_epochs)


def driving_input(cfg: DeepESNEntropyConfig, seed: int) -> torch.Tensor:
    """``(1, washout + steps, 1)`` float64 input."""
    length = cfg.washout + cfg.steps
    if cfg.input == "uniform":
        gen = torch.Generator().manual_seed(3_000_017 + seed)
        return 2.0 * torch.rand(1, length, 1, generator=gen, dtype=torch.float64) - 1.0
    return mackey_glass_squash(mackey_glass(length, seed=seed, dtype=torch.float64)).view(1, -1, 1)


def build(cfg: DeepESNEntropyConfig, model: str, seed: int) -> torch.nn.Module:
    common = {"spectral_radius": cfg.spectral_radius, "leak": cfg.leak, "seed": seed,
              "dtype": torch.float64, "input_scaling": cfg.input_scaling,
              "bias_scaling": cfg.bias_scaling}
    if model == "ESN":
        return EchoStateNetwork(input_size=1, units=cfg.units, density=cfg.density, **common)
    return DeepEchoStateNetwork(1, cfg.units // cfg.layers, cfg.layers, variant=model,
                                inter_scaling=cfg.inter_scaling, density=cfg.layer_density,
                                **common)


@torch.no_grad()
def layer_entropies(cfg: DeepESNEntropyConfig, model: torch.nn.Module, u: torch.Tensor
                    ) -> dict[str, tuple[float, float]]:
    """``{layer label: (ASE, spread)}`` after the washout; labels ``"1".."L"`` for a deep ESN,
    ``"all"`` and ``"groups"`` for the shallow one (module docstring)."""
    size = cfg.units // cfg.layers
    if isinstance(model, DeepEchoStateNetwork):
        layers = [x[:, cfg.washout:] for x in model.layer_states(u)]
        h = layer_state_entropy(layers, kernel_size=cfg.kernel_size)[0]
        return {str(i + 1): (float(h[i]), float(x.std(-1).mean())) for i, x in enumerate(layers)}
    x = model.states(u)[:, cfg.washout:]
    groups = layer_state_entropy(x, [size] * cfg.layers, kernel_size=cfg.kernel_size)[0]
    spread_groups = float(torch.stack([g.std(-1).mean() for g in x.split(size, -1)]).mean())
    return {"all": (float(state_entropy(x, cfg.kernel_size)[0]), float(x.std(-1).mean())),
            "groups": (float(groups.mean()), spread_groups)}


@register("deep-esn-entropy",
          "layer-wise average state entropy: deepESN, deepESN-IA, groupedESN vs shallow ESN",
          DeepESNEntropyConfig)
def run(cfg: DeepESNEntropyConfig, ctx: RunContext) -> ExperimentResult:
    models = ("ESN", *cfg.variants)
    ip_modes = (False, True) if cfg.ip else (False,)
    seeds = ctx.seeds(cfg)
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    with ctx.progress("seeds x models", len(seeds) * len(models)) as advance:
        for seed in seeds:
            u = driving_input(cfg, seed)
            for name in models:
                t0 = time.perf_counter()
                model = build(cfg, name, seed)
                for ip in ip_modes:
                    if ip:
                        IntrinsicPlasticity("schrauwen", lr=cfg.ip_lr, mu=0.0,
                                            sigma=cfg.ip_sigma, epochs=cfg.ip_epochs
                                            ).fit(model, u, cfg.washout)
                    for layer, (h, spread) in layer_entropies(cfg, model, u).items():
                        records.append({"model": name, "ip": ip, "seed": seed, "layer": layer,
                                        "entropy": h, "spread": spread,
                                        "seconds": time.perf_counter() - t0})
                        ctx.log_metrics(records[-1])
                advance(1)
    wall = time.perf_counter() - start

    def units(sel: list[dict[str, Any]]) -> int:
        return cfg.units if sel[0]["layer"] == "all" else cfg.units // cfg.layers

    rows = aggregate(records, by=("model", "ip", "layer"),
                     columns={"units": units, "entropy_mean": mean_of("entropy"),
                              "entropy_std": std_of("entropy"), "spread": mean_of("spread"),
                              "seeds": len})
    plot = _plot(cfg, rows, models, ip_modes, ctx)

    figures: dict[str, Any] = {"wall_seconds": wall}
    parts = []
    for ip in ip_modes:
        for name in cfg.variants:
            hs = [r["entropy_mean"] for r in rows if r["model"] == name and r["ip"] == ip]
            slope = _slope(hs)
            figures[f"slope_{name}{'_ip' if ip else ''}"] = slope
            parts.append(f"{name}{' +IP' if ip else ''}: layer 1 {hs[0]:.3f} -> layer "
                         f"{len(hs)} {hs[-1]:.3f} (slope {slope:+.4f}/layer)")
        g = next(r for r in rows if r["model"] == "ESN" and r["ip"] == ip
                 and r["layer"] == "groups")
        parts.append(f"ESN{' +IP' if ip else ''} (groups of {cfg.units // cfg.layers}) "
                     f"{format_mean_std(g['entropy_mean'], g['entropy_std'], 3)}")
    summary = ("Average state entropy per layer (nats), mean over seeds: " + "; ".join(parts)
               + f". {len(seeds)} seed(s), {wall:.0f} s.")
    return ExperimentResult(title="deep-esn-entropy: layer-wise average state entropy",
                            rows=rows, summary=summary, plots=[plot], figures=figures)


def _slope(values: list[float]) -> float:
    """Least-squares slope of values against 1..L (0 for one layer)."""
    n = len(values)
    if n < 2:
        return 0.0
    xm = (n + 1) / 2
    ym = sum(values) / n
    return (sum((i + 1 - xm) * (v - ym) for i, v in enumerate(values))
            / sum((i + 1 - xm) ** 2 for i in range(n)))


def _plot(cfg: DeepESNEntropyConfig, rows: list[dict[str, Any]], models: tuple[str, ...],
          ip_modes: tuple[bool, ...], ctx: RunContext):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ip_modes), figsize=(7.5 * len(ip_modes), 5), squeeze=False)
    layers = list(range(1, cfg.layers + 1))
    for ax, ip in zip(axes[0], ip_modes, strict=True):
        for i, name in enumerate(models):
            pts = [r for r in rows if r["model"] == name and r["ip"] == ip]
            if name == "ESN":
                for r, ls in zip(sorted(pts, key=lambda r: r["layer"]), ("--", ":"),
                                 strict=True):
                    label = (f"shallow ESN, all {cfg.units} units" if r["layer"] == "all"
                             else f"shallow ESN, groups of {cfg.units // cfg.layers}")
                    ax.axhline(r["entropy_mean"], color="k", ls=ls, lw=1, label=label)
                continue
            ys = [r["entropy_mean"] for r in pts]
            es = [0.0 if not math.isfinite(r["entropy_std"]) else r["entropy_std"] for r in pts]
            ax.errorbar(layers, ys, yerr=es, marker="o", ms=4, capsize=2, color=f"C{i}",
                        label=name)
        ax.set_xlabel("layer")
        ax.set_ylabel("average state entropy H2 (nats)")
        ax.set_title(f"{'after IP' if ip else 'no IP'}: {cfg.layers} x "
                     f"{cfg.units // cfg.layers} units, rho {cfg.spectral_radius}, leak "
                     f"{cfg.leak}, {cfg.input} input", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return ctx.save_figure(fig, "deep_esn_entropy")
