"""What the NaN/inf scan costs a layer's forward pass (issue 12, part 2): the same call with
``rnnlab.check_finite(True)`` and ``(False)``, interleaved, in one run; on CUDA too when there is
one (there the scan is a host sync).

    python benchmarks/bench_check_finite.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

import rnnlab
from rnnlab import GRUCell, LSTMCell, RecurrentLayer


def timed(fn, rounds: int, calls: int, sync) -> float:
    """Median seconds per call over ``rounds`` rounds of ``calls`` calls."""
    times = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        times.append((time.perf_counter() - start) / calls)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"batch {args.batch}, {args.steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'device':6} {'model':28} {'H':>4} {'scan on':>10} {'scan off':>10} {'on/off':>7}")
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for hidden in (32, 256):
            for label, cell in (
                ("LSTM vanilla (handwritten)", LSTMCell(16, hidden)),
                ("LSTM NP (fused kernel)", LSTMCell(16, hidden, variant="NP")),
                ("GRU cho (loop)", GRUCell(16, hidden)),
            ):
                layer = RecurrentLayer(cell).to(device)
                x = torch.randn(args.batch, args.steps, 16, device=device)
                result = {}
                with torch.no_grad():
                    for _ in range(2):  # interleaved, the second pass is the one kept
                        for on in (True, False):
                            with rnnlab.check_finite(on):
                                result[on] = timed(lambda m=layer, v=x: m(v), args.rounds,
                                                   args.calls, sync)
                print(f"{device:6} {label:28} {hidden:4d} {result[True] * 1e6:8.1f}us "
                      f"{result[False] * 1e6:8.1f}us {result[True] / result[False]:7.3f}")


if __name__ == "__main__":
    main()
