"""``intrinsic-plasticity``: unit output distributions before and after intrinsic plasticity
(IP), how the eigenvalues of the reservoir's linearisation move, and what it does to a task.

IP (:class:`rnnlab.reservoir.IntrinsicPlasticity`) adapts each unit's gain ``a_i`` and shift
``b_i`` in ``y_i = f(a_i net_i + b_i)`` so that the output distribution approaches a target:

* ``schrauwen``: tanh units, Gaussian target ``N(mu, sigma^2)`` (Schrauwen, Wardermann,
  Verstraeten, Steil & Stroobandt 2008, Neurocomputing 71);
* ``triesch``: logistic units, exponential target of mean ``mu`` (Triesch 2005, ICANN;
  Steil 2007, "Online reservoir adaptation by intrinsic plasticity for backpropagation-
  decorrelation and echo state learning", Neural Networks 20(3)).

Both targets are truncated to the unit's output range ((-1, 1) or (0, 1)) and renormalised, as
in the KL estimate of :meth:`IntrinsicPlasticity.kl_divergence`.

Eigenvalues. The matrix whose eigenvalues are scattered (before and after IP, with the unit
circle) is the Jacobian of the state update at the mean operating point::

    J = (1 - l) I + l diag(a * f'(a net_bar + b)) W,     net_bar = W_in u_bar + bias + W x_bar

with ``u_bar`` the mean input and ``x_bar`` the mean previous state over the evaluation segment
(``net`` is affine in ``u`` and ``x``, so ``net_bar`` is also the mean net input), ``f' = 1 -
tanh^2`` or ``s (1 - s)``, ``l`` the leak (:func:`mean_state_jacobian`). It combines what IP
changes, the gains ``a`` and, through the shifts ``b``, the slope at which each unit operates.
The table also gives ``rho(diag(a) W)``, the gain-scaled matrix without the slope (for tanh units
before IP it is rho(W)); a logistic unit's slope is at most 1/4, so its J is much smaller than
``diag(a) W``.

Protocol per rule and seed: a fresh reservoir (``activation="logistic"`` for Triesch) runs on
a task sequence (NARMA-10 or Mackey–Glass one step ahead): washout, a training segment, a test
segment. *Before*: a ridge readout fitted on the training states, NRMSE on the test segment; the
unit outputs ``y(t)`` on the test segment give the KL divergence to the target (per unit,
averaged), the per-unit mean and std (averaged over units) and the histogram. *After*: IP is
fitted on the training inputs (washout steps without update, ``ip_epochs`` passes), then the
same measurements with a, b frozen.

The histograms pool the outputs of all units over the test segment; the target is a per-unit
distribution, so a pooled histogram can be narrower after IP than before (IP centres every unit
on the target mean while widening each unit's own spread: compare ``unit_std``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab._validation import check_tensor
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
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.plasticity import IntrinsicPlasticity, unit_outputs
from rnnlab.reservoir.readout import RidgeReadout
from rnnlab.tasks.narma import narma
from rnnlab.tasks.prediction import nrmse
from rnnlab.tasks.series import mackey_glass, mackey_glass_squash

RULES = ("schrauwen", "triesch")
TASKS = ("narma10", "mackey-glass")


# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def mean_state_jacobian(esn: EchoStateNetwork, inputs: torch.Tensor, washout: int = 0
                        ) -> torch.Tensor:
    """Jacobian ``d x(t) / d x(t-1)`` of the leaky update at the mean operating point.

    ``J = (1 - l) I + l diag(a * f'(a net_bar + b)) W`` (module docstring), with ``net_bar``
    the net input at the mean input ``u_bar`` and mean previous state ``x_bar`` over the steps
    ``t >= washout`` of ``inputs`` ``(batch, time, D)`` (all sequences pooled), the reservoir
    run from its zero state. Returns a dense float64 ``(N, N)`` CPU tensor. ``f`` is tanh, or
    the logistic function for a model with ``activation == "logistic"``. The model must not
    feed its output back.
    """
    if not isinstance(esn, EchoStateNetwork):
        raise TypeError(f"esn must be an EchoStateNetwork, got {type(esn).__name__}")
    if esn.has_feedback:
        raise ValueError("mean_state_jacobian needs an ESN without output feedback")
    check_tensor("inputs", inputs, ndim=3, last_dim=esn.input_size, dtype=esn.W.dtype,
                 device=esn.W.device, layout="(batch, time, features)")
    if isinstance(washout, bool) or not isinstance(washout, int) or not 0 <= washout:
        raise ValueError(f"washout must be an int >= 0, got {washout!r}")
    if washout >= inputs.shape[1]:
        raise ValueError(f"washout ({washout}) must be smaller than the number of time steps "
                         f"({inputs.shape[1]})")
    states = esn.states(inputs)
    prev = torch.cat([esn.initial_state(inputs.shape[0]).unsqueeze(1), states[:, :-1]], dim=1)
    x_bar = prev[:, washout:].reshape(-1, esn.units).double().mean(0).cpu()
    u_bar = inputs[:, washout:].reshape(-1, esn.input_size).double().mean(0).cpu()
    w = esn.W.detach().double().cpu()
    w_in = esn.W_in.detach().double().cpu()
    a, b = esn.a.double().cpu(), esn.b.double().cpu()
    leak = esn.leak.double().cpu()
    net = w_in @ u_bar + esn.bias.double().cpu() + w @ x_bar
    z = a * net + b
    if getattr(esn, "activation", "tanh") == "logistic":
        s = torch.sigmoid(z)
        slope = s * (1.0 - s)
    else:
        slope = 1.0 - torch.tanh(z).square()
    return torch.diag(1.0 - leak) + (leak * a * slope).unsqueeze(1) * w


def target_moments(rule: IntrinsicPlasticity, bins: int = 4000) -> tuple[float, float]:
    """Mean and std of the rule's target truncated to the output support (fine-bin sums)."""
    fine = IntrinsicPlasticity(rule.rule, lr=rule.lr, mu=rule.mu, sigma=rule.sigma, bins=bins)
    p = fine.target_bin_probabilities()
    e = fine.bin_edges()
    c = 0.5 * (e[1:] + e[:-1])
    mean = float((p * c).sum())
    return mean, math.sqrt(float((p * (c - mean) ** 2).sum()))


def target_density(rule: IntrinsicPlasticity, bins: int = 400
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centres, density)`` of the truncated target on a fine grid, for plotting."""
    fine = IntrinsicPlasticity(rule.rule, lr=rule.lr, mu=rule.mu, sigma=rule.sigma, bins=bins)
    e = fine.bin_edges()
    return 0.5 * (e[1:] + e[:-1]), fine.target_bin_probabilities() / (e[1:] - e[:-1])


# ------------------------------------------------------------------------------------------------
@dataclass
class IntrinsicPlasticityConfig(SeededOptions):
    rules: tuple[str, ...] = option(RULES, "IP rules: schrauwen (tanh, Gaussian), triesch "
                                           "(logistic, exponential)",
                                    choices=RULES, item="IP rule")
    task: str = option("narma10", "downstream task: narma10 or mackey-glass (one step ahead)",
                       choices=TASKS)
    units: int = option(100, "N", low=2)
    spectral_radius: float = option(0.9, "rho(W)", low=0, low_open=True)
    leak: float = option(1.0, "leak rate", low=0, high=1, low_open=True)
    input_scaling: float = option(1.0, "input weights uniform on [-s, s]", low=0, low_open=True)
    bias_scaling: float = option(0.0, "bias uniform on [-s, s]", low=0)
    density: float = option(0.1, "density of W", low=0, high=1, low_open=True)
    washout: int = option(200, "reservoir washout steps (no IP update, no readout)", low=0)
    train_length: int = option(2000, "training steps (IP and readout)", low=2)
    test_length: int = option(1000, "test steps (statistics, histograms, NRMSE)", low=2)
    ip_lr: float = option(1e-3, "IP learning rate")
    ip_epochs: int = option(5, "IP passes over the training inputs", low=1)
    sigma: float = option(0.2, "schrauwen: target std")
    mu_schrauwen: float = option(0.0, "schrauwen: target mean")
    mu_triesch: float = option(0.2, "triesch: target mean (exponential)")
    bins: int = option(50, "histogram bins for the KL estimate and the plot", low=2)
    ridge: float = option(1e-6, "ridge penalty of the readout", low=0)

    def validate(self) -> None:
        # The IntrinsicPlasticity constructor checks lr, sigma and mu against each rule's range.
        for r in self.rules:
            self.rule(r)

    def rule(self, name: str) -> IntrinsicPlasticity:
        mu = self.mu_schrauwen if name == "schrauwen" else self.mu_triesch
        return IntrinsicPlasticity(name, lr=self.ip_lr, mu=mu, sigma=self.sigma,
                                   epochs=self.ip_epochs, bins=self.bins)


def task_data(cfg: IntrinsicPlasticityConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and one-step targets ``(1, washout + train + test, 1)`` (float64)."""
    steps = cfg.washout + cfg.train_length + cfg.test_length
    if cfg.task == "narma10":
        return narma(steps, 10, washout=200, seed=seed, dtype=torch.float64)
    series = mackey_glass_squash(mackey_glass(steps + 1, seed=seed, dtype=torch.float64))
    return series[:-1].view(1, -1, 1), series[1:].view(1, -1, 1)


def _build(cfg: IntrinsicPlasticityConfig, rule: str, seed: int) -> EchoStateNetwork:
    return EchoStateNetwork(input_size=1, units=cfg.units, spectral_radius=cfg.spectral_radius,
                            density=cfg.density, leak=cfg.leak, input_scaling=cfg.input_scaling,
                            bias_scaling=cfg.bias_scaling, seed=seed, dtype=torch.float64,
                            activation="logistic" if rule == "triesch" else "tanh")


@torch.no_grad()
def _evaluate(cfg: IntrinsicPlasticityConfig, esn: EchoStateNetwork, ip: IntrinsicPlasticity,
              u: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    w0, w1 = cfg.washout, cfg.washout + cfg.train_length
    states = esn.states(u)
    readout = RidgeReadout(cfg.units, 1, alpha=cfg.ridge, dtype=torch.float64)
    readout.fit(states[:, w0:w1], y[:, w0:w1])
    err = nrmse(readout(states[:, w1:]), y[:, w1:])
    outputs = unit_outputs(esn, u, w1)[0]                    # test segment, (1, test, N)
    stats = ip.statistics(outputs)
    jac = mean_state_jacobian(esn, u, w1)
    eig_j = torch.linalg.eigvals(jac)
    eig_aw = torch.linalg.eigvals(esn.a.double().unsqueeze(1) * esn.W.double())
    return {"kl": stats["kl"], "unit_mean": stats["mean"], "unit_std": stats["std"],
            "rho_diag_aW": float(eig_aw.abs().max()), "rho_jacobian": float(eig_j.abs().max()),
            "nrmse": err, "outputs": outputs.reshape(-1), "eigenvalues": eig_j}


@register("intrinsic-plasticity",
          "unit output histograms and eigenvalues of the linearisation before/after IP, "
          "NARMA-10/MG NRMSE",
          IntrinsicPlasticityConfig)
def run(cfg: IntrinsicPlasticityConfig, ctx: RunContext) -> ExperimentResult:
    seeds = ctx.seeds(cfg)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    start = time.perf_counter()
    with ctx.progress("rules x seeds", len(cfg.rules) * len(seeds)) as advance:
        for seed in seeds:
            u, y = task_data(cfg, seed)
            for name in cfg.rules:
                t0 = time.perf_counter()
                ip = cfg.rule(name)
                esn = _build(cfg, name, seed)
                before = _evaluate(cfg, esn, ip, u, y)
                history = ip.fit(esn, u[:, :cfg.washout + cfg.train_length], cfg.washout)
                after = _evaluate(cfg, esn, ip, u, y)
                for stage, res in (("before", before), ("after", after)):
                    results.setdefault((name, stage), []).append(res)
                    ctx.log_metrics({
                        "rule": name, "seed": seed, "stage": stage,
                        **{k: res[k] for k in ("kl", "unit_mean", "unit_std", "rho_diag_aW",
                                               "rho_jacobian", "nrmse")},
                        "ip_kl_last_epoch": history["kl"][-1],
                        "gain_mean": float(esn.a.mean()) if stage == "after" else 1.0,
                        "shift_mean": float(esn.b.mean()) if stage == "after" else 0.0,
                        "seconds": time.perf_counter() - t0})
                advance(1)
    wall = time.perf_counter() - start

    def moment(k: int) -> Callable[[list[dict[str, Any]]], float]:
        return lambda sel: target_moments(cfg.rule(sel[0]["rule"]))[k]

    records = [{"rule": name, "stage": stage, **r} for name in cfg.rules
               for stage in ("before", "after") for r in results[(name, stage)]]
    rows = aggregate(records, by=("rule", "stage"), columns={
        "activation": lambda sel: cfg.rule(sel[0]["rule"]).activation,
        "kl": mean_of("kl"), "kl_sd": std_of("kl"),
        "unit_mean": mean_of("unit_mean"), "unit_std": mean_of("unit_std"),
        "target_mean": moment(0), "target_std": moment(1),
        "rho_diag_aW": mean_of("rho_diag_aW"), "rho_jacobian": mean_of("rho_jacobian"),
        "nrmse": mean_of("nrmse"), "nrmse_sd": std_of("nrmse"), "seeds": len})
    rows = [{"rule": r.pop("rule"), "activation": r.pop("activation"), **r} for r in rows]
    plot = _plot(cfg, results, ctx)
    parts, figures = [], {"wall_seconds": wall}
    for name in cfg.rules:
        b, a = (next(r for r in rows if r["rule"] == name and r["stage"] == s)
                for s in ("before", "after"))
        parts.append(
            f"{name}: KL {b['kl']:.3f} -> {a['kl']:.3f}, mean {b['unit_mean']:.3f} -> "
            f"{a['unit_mean']:.3f} (target {a['target_mean']:.3f}), std {b['unit_std']:.3f} -> "
            f"{a['unit_std']:.3f} (target {a['target_std']:.3f}), rho(J) "
            f"{b['rho_jacobian']:.3f} -> {a['rho_jacobian']:.3f}, {cfg.task} NRMSE "
            f"{format_mean_std(b['nrmse'], b['nrmse_sd'], 3)} -> "
            f"{format_mean_std(a['nrmse'], a['nrmse_sd'], 3)}")
        for stage, r in (("before", b), ("after", a)):
            for key in ("kl", "nrmse", "rho_jacobian"):
                figures[f"{name}_{stage}_{key}"] = r[key]
    summary = "; ".join(parts) + f". {len(seeds)} seed(s), {wall:.0f} s."
    return ExperimentResult(title="intrinsic-plasticity: before and after IP", rows=rows,
                            summary=summary, plots=[plot], figures=figures)


def _plot(cfg: IntrinsicPlasticityConfig, results: dict[tuple[str, str], list[dict[str, Any]]],
          ctx: RunContext):
    import matplotlib.pyplot as plt

    n = len(cfg.rules)
    fig, axes = plt.subplots(n, 2, figsize=(11, 4.2 * n), squeeze=False)
    circle = torch.linspace(0, 2 * math.pi, 400)
    for i, name in enumerate(cfg.rules):
        ip = cfg.rule(name)
        lo, hi = (0.0, 1.0) if ip.activation == "logistic" else (-1.0, 1.0)
        edges = torch.linspace(lo, hi, cfg.bins + 1)
        ax = axes[i][0]
        for stage, color in (("before", "C0"), ("after", "C3")):
            out = results[(name, stage)][0]["outputs"].float()
            ax.hist(out.numpy(), bins=edges.numpy(), density=True, alpha=0.45, color=color,
                    label=f"{stage} IP")
        xs, dens = target_density(ip)
        target = (f"N({ip.mu}, {ip.sigma}^2)" if name == "schrauwen" else f"Exp(mean {ip.mu})")
        ax.plot(xs.numpy(), dens.numpy(), "k-", lw=1.5, label=f"target {target} (truncated)")
        ax.set_yscale("log" if name == "triesch" else "linear")
        ax.set_xlabel(f"unit output y ({ip.activation})")
        ax.set_ylabel("density")
        ax.set_title(f"{name}: outputs of all units, test segment (seed {cfg.seed})",
                     fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[i][1]
        ax.plot(torch.cos(circle).numpy(), torch.sin(circle).numpy(), "k-", lw=0.8)
        for stage, color, marker in (("before", "C0", "o"), ("after", "C3", "x")):
            ev = results[(name, stage)][0]["eigenvalues"]
            rho = float(ev.abs().max())
            ax.scatter(ev.real.numpy(), ev.imag.numpy(), s=12, color=color, marker=marker,
                       label=f"{stage} IP (rho = {rho:.3f})")
        ax.set_aspect("equal")
        ax.set_xlabel("Re")
        ax.set_ylabel("Im")
        ax.set_title("eigenvalues of J = (1-l)I + l diag(a f'(a net_bar + b)) W", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(True, alpha=0.3)
    return ctx.save_figure(fig, "intrinsic_plasticity")
