"""Generic forward-mode RTRL (any cell, via torch.func) against the hand-written Elman RTRL.

Target (issue 4): the generic RTRL step for an LSTM of 64 units within 3x of the hand-written
Elman RTRL step at equal recurrent parameter count. Also prints UORO and SnAp-1 on the same LSTM
(their per-step cost is what they trade exactness for). Ratios are measured in the same run.

    python benchmarks/bench_generic_rtrl.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from rnnlab import ElmanRNN, LSTMCell, RecurrentNetwork
from rnnlab.learning import RTRL, UORO, ForwardModeRTRL, SnAp1


def per_step(rule, x, y, steps: int, rounds: int) -> float:
    """Median seconds per step over ``rounds`` rounds of ``steps`` steps (after a warm-up)."""
    rule.reset(x.shape[0])
    for t in range(3):
        rule.step(x[:, t], y[:, t])
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for t in range(steps):
            rule.step(x[:, t], y[:, t])
        times.append((time.perf_counter() - start) / steps)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=64, help="LSTM units")
    parser.add_argument("--input", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads = {torch.get_num_threads()}, batch {args.batch}")

    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        torch.manual_seed(0)
        lstm = RecurrentNetwork(LSTMCell(args.input, args.hidden, dtype=dtype), 1, dtype=dtype)
        generic = ForwardModeRTRL(lstm)
        p_lstm = generic.n_parameters
        # the Elman N with the closest recurrent parameter count N (N + D + 1)
        n_elman = min(range(2, 1024), key=lambda n: abs(n * (n + args.input + 1) - p_lstm))
        elman = ElmanRNN(args.input, n_elman, 1, dtype=dtype)
        p_elman = n_elman * (n_elman + args.input + 1)
        x = torch.randn(args.batch, args.steps + 3, args.input, dtype=dtype)
        y = torch.randn(args.batch, args.steps + 3, 1, dtype=dtype) * 0.5
        t_elman = per_step(RTRL(elman), x, y, args.steps, args.rounds)
        t_generic = per_step(generic, x, y, args.steps, args.rounds)
        t_snap = per_step(SnAp1(lstm), x, y, args.steps, args.rounds)
        t_uoro = per_step(UORO(lstm), x, y, args.steps, args.rounds)
        ratio = t_generic / t_elman
        print(f"\n{dtype_name}: LSTM N={args.hidden} (P={p_lstm}, state 2N) vs Elman N={n_elman} "
              f"(P={p_elman})")
        print(f"  {'rule':<34}{'ms/step':>10}{'vs Elman RTRL':>16}")
        for name, t in (("Elman RTRL (hand-written)", t_elman),
                        ("LSTM ForwardModeRTRL (exact)", t_generic),
                        ("LSTM SnAp-1", t_snap), ("LSTM UORO", t_uoro)):
            print(f"  {name:<34}{t * 1e3:>10.3f}{t / t_elman:>15.2f}x")
        verdict = "HOLDS" if ratio <= 3.0 else "FAILS"
        print(f"  target: generic LSTM RTRL within 3x of Elman RTRL: {ratio:.2f}x -> {verdict}")


if __name__ == "__main__":
    main()
