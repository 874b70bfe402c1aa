"""``rtrl-vs-bptt``: the same gradient, at very different costs.

(a) The largest difference between the gradients of exact RTRL and of BPTT on one sequence, in
float64 (they are equal up to rounding). (b) Measured time and peak memory of both rules as the
hidden size N and the length T grow, with the fitted growth exponents printed beside the
course's table: BPTT O(N T) space and O(N^2 T) time; RTRL O(N^3) space and O(N^4) time
(per sequence: O(N^4 T)).

What is measured: time per sequence is the median wall time of one whole sequence (RTRL: T
calls to ``rule.step``; BPTT: the forward pass and ``backward()``). Memory is the peak of the
bytes torch allocates above the starting level (CPU: profiler allocation events): for RTRL,
the influence tensors and the step temporaries; for BPTT, the forward pass that keeps the graph,
i.e. the states and activations stored for the backward pass (the parameter-sized ``.grad``
buffers are allocated beforehand and not counted, as the course's O(N T) does not count them).
Per-step overheads (Python, op dispatch: tens of microseconds) dominate small problems, so the
exponents approach the course's only at the larger sizes; the sweeps for each rule use sizes
where its own work dominates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rnnlab.analysis.cost import fit_power_law, peak_memory_bytes, time_per_call
from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    option,
    register,
    thread_count,
)
from rnnlab.learning import BPTT, RTRL
from rnnlab.models import ElmanRNN

COURSE = {  # (rule, quantity) -> (exponent in N, exponent in T), per sequence
    ("BPTT", "time"): (2, 1),
    ("BPTT", "memory"): (1, 1),
    ("RTRL", "time"): (4, 1),
    ("RTRL", "memory"): (3, 0),
}


@dataclass
class RtrlVsBpttConfig:
    rtrl_hidden_sizes: tuple[int, ...] = option((16, 32, 64, 128, 256),
                                                "N sweep for RTRL (two distinct at least)", low=1)
    bptt_hidden_sizes: tuple[int, ...] = option((64, 128, 256, 512, 1024),
                                                "N sweep for BPTT (two distinct at least)", low=1)
    lengths: tuple[int, ...] = option((25, 50, 100, 200, 400),
                                      "T sweep (both rules; two distinct at least)", low=1)
    fixed_length: int = option(30, "T during the N sweeps", low=1)
    fixed_hidden: int = option(32, "N during the T sweeps", low=1)
    batch: int = option(1, "sequences per batch", low=1)
    repeats: int = option(3, "timed repeats (median)", low=1)
    threads: int = option(1, "torch threads during the measurement (the CLI's --threads)",
                          low=1)
    grad_hidden: int = option(8, "N of the gradient comparison", low=1)
    grad_length: int = option(60, "T of the gradient comparison", low=1)
    seed: int = option(0, "seed")

    def validate(self) -> None:
        for name in ("rtrl_hidden_sizes", "bptt_hidden_sizes", "lengths"):
            if len(set(getattr(self, name))) < 2:
                raise ValueError(f"{name} needs at least two distinct positive sizes: "
                                 f"{getattr(self, name)}")


def gradient_difference(hidden: int, length: int, batch: int, seed: int) -> dict[str, float]:
    """Max abs and max relative (per parameter, in norm) RTRL - BPTT gradient difference."""
    torch.manual_seed(seed)
    model = ElmanRNN(2, hidden, 1, dtype=torch.float64)
    x = torch.randn(batch, length, 2, dtype=torch.float64)
    y = torch.rand(batch, length, 1, dtype=torch.float64) * 1.6 - 0.8
    rule = RTRL(model)
    rule.reset(batch)
    for t in range(length):
        rule.step(x[:, t], y[:, t])
    rtrl = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    BPTT(model).accumulate(x, y)
    abs_diff = max(float((rtrl[n] - p.grad).abs().max()) for n, p in model.named_parameters())
    rel_diff = max(float((rtrl[n] - p.grad).norm() / p.grad.norm())
                   for n, p in model.named_parameters())
    return {"max_abs": abs_diff, "max_rel": rel_diff}


def _measure(rule_name: str, hidden: int, length: int, cfg: RtrlVsBpttConfig) -> dict:
    model = ElmanRNN(1, hidden, 1)
    x = torch.randn(cfg.batch, length, 1)
    y = torch.rand(cfg.batch, length, 1) * 1.6 - 0.8
    for p in model.parameters():  # allocate .grad once: parameter-sized, not counted
        p.grad = torch.zeros_like(p)
    if rule_name == "RTRL":
        def run_sequence():
            rule = RTRL(model, check_finite=False)
            rule.reset(cfg.batch)
            for t in range(length):
                rule.step(x[:, t], y[:, t])
            return None
        memory_fn = run_sequence
    else:
        bptt = BPTT(model)

        def run_sequence():
            bptt.accumulate(x, y)

        def memory_fn():
            out, _ = model(x)
            return (out - y).pow(2).sum()  # the graph (stored states) is alive at return
    seconds = time_per_call(run_sequence, repeats=cfg.repeats, warmup=1)
    peak = peak_memory_bytes(memory_fn)
    return {"seconds_per_sequence": seconds, "seconds_per_step": seconds / length,
            "peak_bytes": peak}


@register("rtrl-vs-bptt",
          "RTRL and BPTT: the same gradients; measured time and memory growth vs the course",
          RtrlVsBpttConfig)
def run(cfg: RtrlVsBpttConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    # The run executes under cfg.threads already (the registry's thread_count; the CLI's
    # --threads is this option); set it here too so a direct call measures on it as well.
    with thread_count(cfg.threads):
        threads_measured = torch.get_num_threads()
        diff = gradient_difference(cfg.grad_hidden, cfg.grad_length, 4, cfg.seed)
        torch.manual_seed(cfg.seed)
        sweeps = [
            ("RTRL", "N", [(n, cfg.fixed_length) for n in cfg.rtrl_hidden_sizes]),
            ("BPTT", "N", [(n, cfg.fixed_length) for n in cfg.bptt_hidden_sizes]),
            ("RTRL", "T", [(cfg.fixed_hidden, t) for t in cfg.lengths]),
            ("BPTT", "T", [(cfg.fixed_hidden, t) for t in cfg.lengths]),
        ]
        data: dict[tuple[str, str], list[dict]] = {}
        total = sum(len(points) for *_, points in sweeps)
        with ctx.progress("measuring", total) as advance:
            for rule_name, variable, points in sweeps:
                for hidden, length in points:
                    m = _measure(rule_name, hidden, length, cfg)
                    row = {"rule": rule_name, "sweep": variable, "N": hidden, "T": length, **m}
                    ctx.log_metrics(row)
                    data.setdefault((rule_name, variable), []).append(row)
                    advance(1)

    rows: list[dict] = [{
        "rule": "RTRL-BPTT", "quantity": "gradient", "variable": "-",
        "measured": diff["max_rel"], "course": 0.0,
        "fit_on": f"max rel. diff, float64, N={cfg.grad_hidden} T={cfg.grad_length}",
    }]
    exponents: dict[str, float] = {}
    for rule_name in ("BPTT", "RTRL"):
        for quantity, key in (("time", "seconds_per_sequence"), ("memory", "peak_bytes")):
            for index, variable in enumerate(("N", "T")):
                points = data[(rule_name, variable)]
                xs = [p[variable] for p in points]
                ys = [p[key] if quantity == "time" else max(p[key], 1) for p in points]
                course = COURSE[(rule_name, quantity)][index]
                # The asymptotic end (the last 3 sizes), where the rule's own work dominates
                # the fixed per-call overheads.
                slope, _ = fit_power_law(xs[-3:], ys[-3:])
                exponents[f"{rule_name}_{quantity}_{variable}"] = slope
                rows.append({
                    "rule": rule_name, "quantity": quantity, "variable": variable,
                    "measured": round(slope, 2), "course": course,
                    "fit_on": f"{variable}={','.join(map(str, xs[-3:]))}",
                })

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    for col, variable in enumerate(("N", "T")):
        for row_i, (quantity, key, unit) in enumerate(
            (("time", "seconds_per_sequence", "s"), ("memory", "peak_bytes", "bytes"))
        ):
            ax = axes[row_i][col]
            for rule_name, marker in (("RTRL", "o"), ("BPTT", "s")):
                points = data[(rule_name, variable)]
                xs = [p[variable] for p in points]
                ys = [p[key] if quantity == "time" else max(p[key], 1) for p in points]
                ax.loglog(xs, ys, marker=marker, label=f"{rule_name} (measured)")
                course = COURSE[(rule_name, quantity)][col]
                ref = [ys[-1] * (x / xs[-1]) ** course for x in xs]
                ax.loglog(xs, ref, ls=":", color=ax.lines[-1].get_color(),
                          label=f"{rule_name}: slope {course} (course)")
            ticks = sorted({p[variable] for r in ("RTRL", "BPTT") for p in data[(r, variable)]})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(variable)
            ax.set_ylabel(f"{quantity} per sequence ({unit})")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"RTRL vs BPTT on {cfg.threads} thread(s), batch {cfg.batch}; "
                 f"N sweeps at T={cfg.fixed_length}, T sweeps at N={cfg.fixed_hidden}")
    fig.tight_layout()
    plot = ctx.save_figure(fig, "scaling")

    summary = (
        f"Largest RTRL-BPTT gradient difference (float64): {diff['max_abs']:.2e} absolute, "
        f"{diff['max_rel']:.2e} relative. Fitted exponents (per sequence): RTRL time "
        f"N^{exponents['RTRL_time_N']:.2f} T^{exponents['RTRL_time_T']:.2f}, memory "
        f"N^{exponents['RTRL_memory_N']:.2f} T^{exponents['RTRL_memory_T']:.2f}; BPTT time "
        f"N^{exponents['BPTT_time_N']:.2f} T^{exponents['BPTT_time_T']:.2f}, memory "
        f"N^{exponents['BPTT_memory_N']:.2f} T^{exponents['BPTT_memory_T']:.2f}."
    )
    if not all(math.isfinite(v) for v in exponents.values()):  # pragma: no cover
        raise FloatingPointError("a fitted exponent is not finite")
    return ExperimentResult(
        title="rtrl-vs-bptt: gradient agreement and measured growth exponents",
        rows=rows, summary=summary, plots=[plot],
        figures={"threads": threads_measured,
                 "gradient_max_abs": diff["max_abs"], "gradient_max_rel": diff["max_rel"],
                 **{f"exponent_{k}": v for k, v in exponents.items()}},
    )
