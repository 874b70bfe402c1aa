"""``gradient-decay``: ||dh(t)/dh(t - tau)|| against tau for tanh RNNs with rho(W) from 0.5 to 1.5,
beside ||W^tau||: vanishing below rho = 1, growth above (Bengio et al. 1994; Pascanu et al. 2013).

The Jacobian of tau steps is prod diag(1 - h^2) W (see :mod:`rnnlab.analysis.gradients`); since
|1 - h^2| <= 1 its norm is at most ||W^tau|| in the linear regime and smaller once units
saturate, which is why rho(W) > 1 is necessary but not sufficient for explosion (Pascanu et
al. 2013, sec. 2.1). The input scale sets how far from the linear regime the network runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rnnlab.analysis.gradients import state_jacobian_norms
from rnnlab.analysis.spectral import power_norms, scale_to_spectral_radius
from rnnlab.experiments.registry import ExperimentResult, RunContext, option, register
from rnnlab.models import ElmanRNN


@dataclass
class GradientDecayConfig:
    spectral_radii: tuple[float, ...] = option((0.5, 0.9, 1.0, 1.1, 1.5), "rho(W) values",
                                               low=0, low_open=True)
    hidden_size: int = option(64, "N", low=1)
    max_lag: int = option(100, "largest tau", low=1)
    batch: int = option(16, "sequences (the norms are averaged in log space over them)", low=1)
    input_scale: float = option(0.05, "std of the i.i.d. Gaussian input (small: near-linear)",
                                low=0)
    norm: str = option("2", "matrix norm: 2 (spectral) or fro", choices=("2", "fro"))
    seed: int = option(0, "seed")


@register("gradient-decay",
          "||dh(t)/dh(t-tau)|| vs tau for rho(W) in 0.5..1.5 beside ||W^tau||",
          GradientDecayConfig)
def run(cfg: GradientDecayConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt

    ord_ = 2 if cfg.norm == "2" else "fro"
    lags = list(range(0, cfg.max_lag + 1))
    shown = [t for t in (1, 10, 25, 50, 100, 200) if t <= cfg.max_lag]
    rows, curves = [], {}
    with ctx.progress("rho(W)", len(cfg.spectral_radii)) as advance:
        for rho in cfg.spectral_radii:
            torch.manual_seed(cfg.seed)
            model = ElmanRNN(1, cfg.hidden_size, 1, dtype=torch.float64)
            with torch.no_grad():
                model.W.copy_(scale_to_spectral_radius(torch.randn_like(model.W), rho))
                model.b.zero_()
            x = cfg.input_scale * torch.randn(cfg.batch, cfg.max_lag, 1, dtype=torch.float64)
            norms = state_jacobian_norms(model, x, lags, ord=ord_)   # (batch, lags)
            log_mean = norms.clamp_min(1e-300).log().mean(0)          # geometric mean
            jac = log_mean.exp()
            wpow = power_norms(model.W.detach(), cfg.max_lag, ord=ord_)
            # per-step factor: the slope of log ||J|| over the second half of the lags
            half = len(lags) // 2
            tail = torch.tensor(lags[half:], dtype=torch.float64)
            slope = float(torch.linalg.lstsq(
                torch.stack([tail, torch.ones_like(tail)], 1), log_mean[half:].unsqueeze(1)
            ).solution[0, 0])
            curves[rho] = (jac, wpow)
            row = {"rho": rho, "per_step_factor": math.exp(slope)}
            for tau in shown:
                row[f"J(tau={tau})"] = float(jac[tau])
                row[f"W^{tau}"] = float(wpow[tau])
            rows.append(row)
            for tau in lags:
                ctx.log_metrics({"rho": rho, "tau": tau, "jacobian_norm": float(jac[tau]),
                                 "power_norm": float(wpow[tau])})
            advance(1)

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for rho, (jac, wpow) in curves.items():
        line, = ax.semilogy(lags, jac.numpy(), label=f"rho={rho}: ||dh(t)/dh(t-tau)||")
        ax.semilogy(lags, wpow.numpy(), ls=":", color=line.get_color(),
                    label=f"rho={rho}: ||W^tau||")
    ax.set_xlabel("tau (steps back)")
    ax.set_ylabel(f"norm ({cfg.norm})")
    ax.set_title(f"tanh RNN, N={cfg.hidden_size}, input std {cfg.input_scale}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    plot = ctx.save_figure(fig, "gradient_decay")
    factors = ", ".join(f"rho={r['rho']}: {r['per_step_factor']:.3f}" for r in rows)
    return ExperimentResult(
        title="gradient-decay: Jacobian norms over time lags",
        rows=rows, plots=[plot],
        summary=f"Per-step factor of ||dh(t)/dh(t-tau)|| (second half of the lags): {factors}.",
        figures={f"factor_rho_{r['rho']}": r["per_step_factor"] for r in rows},
    )
