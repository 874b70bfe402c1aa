"""How fast is rnnlab's LSTM layer? Forward + backward time against ``torch.nn.LSTM``.

Run: ``.venv/bin/python benchmarks/bench_lstm.py`` (defaults: batch 32, 100 steps, input 128,
hidden 128, float32, CPU, one thread; ``--threads K`` to change it, the count used is printed;
``--device cuda`` runs every contender on the GPU, where the fused kernel is cuDNN's).

Every contender computes ``loss = (outputs * w).sum()`` over a ``(batch, time, input)`` batch
and ``loss.backward()`` into all its parameters; the time of one such call is measured for every
contender in alternating rounds, in a shuffled order each round (so drifting machine load
affects all alike), and the median over the rounds is reported with its ratio to ``nn.LSTM``
measured in the same run:

* ``nn.LSTM``: torch's layer (the baseline);
* ``NP auto``: ``RecurrentLayer(LSTMCell(variant="NP"))``, which is torch's fused kernel (its
  equality with ``nn.LSTM`` is a test);
* ``NP handwritten``: the same math through rnnlab's hand-written sequence gradient
  (what the layer uses when every step's cell state is asked for);
* ``peephole auto``: the vanilla LSTM with peepholes (Greff et al. 2017), hand-written sequence
  gradient;
* ``peephole loop``: the same cell's pure step in a Python loop under autograd (input projection
  hoisted out of the loop, ``unbind`` over time), for comparison.

Targets (issue 4): NP auto <= 1.5 x nn.LSTM, peephole auto <= 2 x nn.LSTM.
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

from rnnlab.cells import LSTMCell
from rnnlab.models.recurrent import RecurrentLayer

TARGETS = {"NP auto": 1.5, "peephole auto": 2.0}


def _step_fn(module: nn.Module, x: torch.Tensor, w: torch.Tensor) -> Callable[[], None]:
    params = list(module.parameters())

    def run() -> None:
        for p in params:
            p.grad = None
        out = module(x)[0]
        (out * w).sum().backward()
        if x.is_cuda:  # the time to the finished gradients, not to the queued kernels
            torch.cuda.synchronize(x.device)

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--input", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (every contender runs there)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    d, h = args.input, args.hidden
    dev = torch.device(args.device)
    x = torch.randn(args.batch, args.steps, d, dtype=dtype).to(dev)
    w = torch.randn(args.batch, args.steps, h, dtype=dtype).to(dev)

    baseline = nn.LSTM(d, h, batch_first=True, dtype=dtype).to(dev)
    np_cell = LSTMCell(d, h, variant="NP", dtype=dtype).to(dev)
    np_cell.load_state_dict({k.removesuffix("_l0"): v for k, v in baseline.state_dict().items()})
    peep_cell = LSTMCell(d, h, dtype=dtype).to(dev)
    contenders: dict[str, Callable[[], None]] = {
        "nn.LSTM": _step_fn(baseline, x, w),
        "NP auto": _step_fn(RecurrentLayer(np_cell), x, w),
        "NP handwritten": _step_fn(RecurrentLayer(np_cell, impl="handwritten"), x, w),
        "peephole auto": _step_fn(RecurrentLayer(peep_cell), x, w),
        "peephole loop": _step_fn(RecurrentLayer(peep_cell, impl="loop"), x, w),
    }

    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}, device "
        f"{torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}"
    )
    print(
        f"batch {args.batch}, steps {args.steps}, input {d}, hidden {h}, {args.dtype}, "
        f"forward + backward, median of {args.rounds} alternating rounds"
    )
    for fn in contenders.values():
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    order = list(contenders)
    shuffler = random.Random(args.seed)
    for _ in range(args.rounds):
        shuffler.shuffle(order)  # no contender always runs first (or right after another)
        for name in order:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["nn.LSTM"])
    failed = False
    print(f"{'contender':<16} {'median ms':>10} {'x nn.LSTM':>10}  target")
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = med / base
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            ok = ratio <= target
            failed |= not ok
            verdict = f"<= {target}  {'ok' if ok else 'MISSED'}"
        print(f"{name:<16} {med * 1e3:>10.2f} {ratio:>10.2f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
