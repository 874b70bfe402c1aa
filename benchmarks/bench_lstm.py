"""How fast are rnnlab's own recurrent cells? Time against ``torch.nn.LSTM``/``torch.nn.GRU``.

Run: ``.venv/bin/python benchmarks/bench_lstm.py`` (defaults: batch 16, 50 steps, input 32,
hidden sizes 32, 128 and 512, one layer, float32, CPU, one thread; ``--threads K`` to change
it, the count used is printed; ``--device cuda`` runs every contender on the GPU, where the
baselines are cuDNN's). ``--variants`` picks rows, ``--sizes`` the hidden sizes, ``--modes``
``fwd`` (forward under ``torch.no_grad``) and/or ``fwdbwd`` (forward + ``backward`` into every
parameter).

Each row is a drop-in layer, ``rnnlab.nn.LSTM(..., variant=V)`` or ``rnnlab.nn.GRU(...,
form=F)``, whose input, shapes and loss (``(outputs * w).sum()``) equal those of its baseline
``torch.nn.LSTM``/``torch.nn.GRU`` of the same sizes. For one hidden size and mode, every
contender (the baseline included) is timed in alternating rounds, in a shuffled order each round
(drifting machine load affects all alike), and the median per call is reported with its ratio
to the baseline measured in the same rounds. On the CPU the clock is the process's CPU time
(``time.process_time``; with one thread, the work done), not the wall clock: on a shared,
oversubscribed machine the wall time of a call longer than a scheduler time slice is inflated
by the load, which would penalise the slower contender more than the faster one
(``--clock wall`` to use the wall clock anyway; on a GPU the wall clock is always used):

* ``vanilla`` ... ``FGR``: the LSTM of Greff et al. (2017) with peepholes, and its variants
  (``NP`` without peepholes is exactly ``nn.LSTM`` and runs torch's kernel: it measures the
  layer's own overhead);
* ``GRU cho``: Cho et al.'s (2014) GRU (reset before the recurrent matrix); ``GRU torch``:
  ``nn.GRU``'s own form (torch's kernel).

On the CPU the peephole LSTM and all its variants (FGR included) run the fused C++ loops
(:mod:`rnnlab.cells._fused`, built on first use, outside the timed rounds); ``RNNLAB_FUSED=0``
in the environment times the Python loops instead (the line "fused C++ loops" says which ran;
FGR's Python path is the step loop under autograd). The FGR rows also print the ratio of its
multiply-adds per step to ``nn.LSTM``'s, ``(4HD + 13H^2) / (4HD + 4H^2)`` (the 3H x 3H
gate-to-gate product on top of the LSTM's), a floor no implementation of FGR can beat by much.
``--check-finite off`` switches rnnlab's NaN/inf scan of the layers' inputs off
(``rnnlab.set_check_finite(False)``); the default keeps rnnlab's default, which scans CPU
inputs, a cost ``torch.nn`` does not pay.

Target (issue 12, part 5): every row within 1.5x of its baseline on the CPU at every size, in
both modes. Rows that miss it are marked; the exit code is 1 when any row misses.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

import rnnlab
import rnnlab.nn as rnn
from rnnlab.cells._fused import fused_ops

TARGET = 1.5


def fgr_flop_ratio(d: int, h: int) -> float:
    """FGR's multiply-adds per step over the LSTM's: (4HD + 13H^2) / (4HD + 4H^2)."""
    return (4 * h * d + 13 * h * h) / (4 * h * d + 4 * h * h)
LSTM_ROWS = ("vanilla", "NP", "NIG", "NFG", "NOG", "NIAF", "NOAF", "CIFG", "FGR")
GRU_ROWS = ("GRU cho", "GRU torch")


def _runner(module: nn.Module, x: torch.Tensor, w: torch.Tensor,
            backward: bool) -> Callable[[], None]:
    params = list(module.parameters())

    def run() -> None:
        if backward:
            for p in params:
                p.grad = None
            out = module(x)[0]
            (out * w).sum().backward()
        else:
            with torch.no_grad():
                module(x)
        if x.is_cuda:  # the time to the finished results, not to the queued kernels
            torch.cuda.synchronize(x.device)

    return run


def _build(row: str, d: int, h: int, layers: int, dtype: torch.dtype,
           dev: torch.device) -> tuple[str, nn.Module]:
    """``(baseline name, module)`` for one row of the table."""
    common = {"num_layers": layers, "batch_first": True, "dtype": dtype}
    if row.startswith("GRU"):
        module: nn.Module = rnn.GRU(d, h, form=row.split()[1], **common)
        base = "nn.GRU"
    else:
        # Greff et al.'s variants all have peepholes but NP (rnnlab.nn.LSTM's default is
        # torch's: none)
        module = rnn.LSTM(d, h, variant=row, peepholes=row != "NP", **common)
        base = "nn.LSTM"
    module = module.to(dev)
    return base, module


def _time_group(contenders: dict[str, Callable[[], None]], rounds: int, warmup: int,
                seed: int, clock: Callable[[], float]) -> dict[str, float]:
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders)
    shuffler = random.Random(seed)
    for _ in range(rounds):
        shuffler.shuffle(order)  # no contender always runs first (or right after another)
        for name in order:
            start = clock()
            contenders[name]()
            times[name].append(clock() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--input", type=int, default=32)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=[*LSTM_ROWS, *GRU_ROWS],
                    help="LSTM variants and 'GRU cho'/'GRU torch' (quote the GRU rows)")
    ap.add_argument("--modes", nargs="+", choices=["fwd", "fwdbwd"], default=["fwd", "fwdbwd"])
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (every contender runs there)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="CPU time of the process (default, CPU only) or wall time")
    ap.add_argument("--check-finite", choices=["default", "off"], default="default",
                    help="off: rnnlab.set_check_finite(False) (no NaN/inf scan of inputs)")
    args = ap.parse_args(argv)
    if args.check_finite == "off":
        rnnlab.set_check_finite(False)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    dev = torch.device(args.device)
    use_cpu_clock = args.clock == "cpu" and dev.type == "cpu"
    clock = time.process_time if use_cpu_clock else time.perf_counter
    d = args.input
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}, device "
        f"{torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}"
    )
    print(f"batch {args.batch}, steps {args.steps}, input {d}, layers {args.layers}, "
          f"{args.dtype}, median of {args.rounds} alternating rounds per (size, mode), "
          f"{'process CPU' if use_cpu_clock else 'wall'} time")
    native = dev.type == "cpu" and fused_ops() is not None  # builds it now if need be
    print(f"fused C++ loops (rnnlab.cells._fused): {'on' if native else 'off'}; "
          f"NaN/inf scan of inputs: {args.check_finite}")
    print(f"{'variant':<10} {'H':>4} {'mode':>6} {'ms':>9} {'baseline ms':>12} {'ratio':>6}")
    failed = False
    for h in args.sizes:
        x = torch.randn(args.batch, args.steps, d, dtype=dtype, device=dev)
        w = torch.randn(args.batch, args.steps, h, dtype=dtype, device=dev)
        baselines = {
            "nn.LSTM": nn.LSTM(d, h, args.layers, batch_first=True, dtype=dtype).to(dev),
            "nn.GRU": nn.GRU(d, h, args.layers, batch_first=True, dtype=dtype).to(dev),
        }
        rows = {row: _build(row, d, h, args.layers, dtype, dev)
                for row in args.variants}
        for mode in args.modes:
            backward = mode == "fwdbwd"
            contenders = {name: _runner(m, x, w, backward) for name, m in baselines.items()}
            contenders.update({row: _runner(m, x, w, backward) for row, (_, m) in rows.items()})
            med = _time_group(contenders, args.rounds, args.warmup, args.seed, clock)
            for row, (base, _) in rows.items():
                ratio = med[row] / med[base]
                missed = ratio > TARGET
                failed |= missed
                bound = (f"  (multiply-adds {fgr_flop_ratio(d, h):.2f}x)" if row == "FGR"
                         else "")
                print(f"{row:<10} {h:>4} {mode:>6} {med[row] * 1e3:>9.2f} "
                      f"{med[base] * 1e3:>12.2f} {ratio:>6.2f}{'  MISSED' if missed else ''}"
                      f"{bound}")
            sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
