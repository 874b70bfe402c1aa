"""How fast is exact RTRL? Fast RTRL vs naive autograd RTRL vs BPTT vs its own matmul.

Run: ``.venv/bin/python benchmarks/bench_rtrl.py`` (defaults: N = 16 32 64 128, batch 1 and 32,
float32 and float64, one thread). For every combination it measures, in the same process and
with the same thread count:

* ``rtrl``:  one :meth:`rnnlab.learning.RTRL.step` with a target (gradient written), per step;
* ``naive``: one step of :class:`naive_rtrl.NaiveRTRL` (autograd Jacobians, dense ``J_h P``);
* ``bptt``:  ``BPTT(model).accumulate(x, y)`` over the same ``(batch, T, 1)`` sequences, / T;
* ``bmm``:   the one batched matmul that dominates RTRL, ``(B, N+1, N) @ (B, N, N(N+D+1))``
  written into a preallocated output, on tensors laid out as RTRL's buffers.

Every time is the median over repeats after a warmup; RTRL and the matmul are measured in
alternating rounds so that drifting machine load affects both alike. The ratio ``rtrl/bmm``
is the overhead of everything RTRL does besides its matmul; the target is <= 2 for N >= 64.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from naive_rtrl import NaiveRTRL
from rnnlab import ElmanRNN
from rnnlab.analysis import time_per_call
from rnnlab.learning import BPTT, RTRL

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
TARGET_RATIO = 2.0
TARGET_MIN_N = 64


@dataclass
class Row:
    n: int
    batch: int
    dtype: str
    threads: int
    rtrl_s: float
    bmm_s: float
    bptt_s: float
    naive_s: float | None  # None: skipped
    naive_steps: int
    naive_note: str

    @property
    def rtrl_over_bmm(self) -> float:
        return self.rtrl_s / self.bmm_s

    @property
    def speedup(self) -> float | None:
        return None if self.naive_s is None else self.naive_s / self.rtrl_s

    @property
    def rtrl_over_bptt(self) -> float:
        return self.rtrl_s / self.bptt_s


def repeats_for(seconds_per_call: float, budget: float, lo: int, hi: int) -> int:
    """How many timed calls fit in ``budget`` seconds, clamped to ``[lo, hi]``."""
    if seconds_per_call <= 0:
        return hi
    return max(lo, min(hi, int(budget / seconds_per_call)))


def cycle_steps(step: Callable[[torch.Tensor, torch.Tensor], object], x: torch.Tensor,
                y: torch.Tensor) -> Callable[[], object]:
    """A no-argument call that feeds the next time step of ``x``/``y`` (cyclically) to ``step``."""
    steps = x.shape[1]
    t = [0]

    def call() -> object:
        i = t[0] % steps
        t[0] += 1
        return step(x[:, i], y[:, i])

    return call


def interleaved_medians(fns: list[Callable[[], object]], repeats: list[int], rounds: int,
                        warmup: int, timer: Callable[[], float]) -> list[float]:
    """Median seconds per call of each fn, measured in ``rounds`` alternating rounds."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    per_round: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            per_round[i].append(time_per_call(fn, repeats=repeats[i], warmup=0, timer=timer))
    return [float(statistics.median(ts)) for ts in per_round]


def make_bmm(batch: int, n: int, n_infl: int, dtype: torch.dtype) -> Callable[[], object]:
    """RTRL's dominant product on fresh tensors with RTRL's layout: ``rows @ old -> new``."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(batch, n + 1, n, dtype=dtype, generator=gen) / n**0.5
    buf = torch.randn(batch, n + 1, n_infl, dtype=dtype, generator=gen)
    old = buf[:, :n]  # the previous influence matrix: the first N rows of a (N+1)-row buffer
    new = torch.empty(batch, n + 1, n_infl, dtype=dtype)

    def call() -> object:
        return torch.bmm(rows, old, out=new)

    return call


def bench_one(n: int, batch: int, dtype_name: str, args: argparse.Namespace,
              naive_estimate: float | None) -> Row:
    dtype = DTYPES[dtype_name]
    timer = CLOCKS[args.clock]
    torch.manual_seed(0)
    model = ElmanRNN(1, n, 1, dtype=dtype)
    x = torch.randn(batch, args.seq_len, 1, dtype=dtype)
    y = torch.randn(batch, args.seq_len, 1, dtype=dtype)

    # Fast RTRL and its matmul, alternating.
    rule = RTRL(model, check_finite=not args.no_check_finite)
    rule.reset(batch)
    fast = cycle_steps(rule.step, x, y)
    bmm = make_bmm(batch, n, rule.n_influence, dtype)
    with torch.no_grad():
        t0 = time.perf_counter()
        fast()
        bmm()
        first = time.perf_counter() - t0  # one call of each: the cost of one round's repeat
        reps = repeats_for(first, args.budget / args.rounds, 2, args.max_repeats)
        rtrl_s, bmm_s = interleaved_medians([fast, bmm], [reps, reps], args.rounds, args.warmup,
                                             timer)

    # BPTT over the whole sequence, per step.
    bptt_rule = BPTT(model)

    def bptt() -> object:
        return bptt_rule.accumulate(x, y)

    t0 = time.perf_counter()
    bptt()
    first = time.perf_counter() - t0
    reps = repeats_for(first, args.budget / 2, 2, args.max_repeats)
    bptt_s = time_per_call(bptt, repeats=reps, warmup=args.warmup, timer=timer) / args.seq_len

    # Naive RTRL: fewer steps where it is slow; skipped where the estimate is too long.
    naive_s: float | None = None
    naive_steps = 0
    if args.no_naive:
        note = "off"
    elif naive_estimate is not None and naive_estimate > args.naive_limit:
        note = f"skipped: est. {naive_estimate:.1f} s/step > {args.naive_limit:g}"
    else:
        naive_rule = NaiveRTRL(model)
        naive_rule.reset(batch)
        naive = cycle_steps(naive_rule.step, x, y)
        with torch.no_grad():
            t0 = time.perf_counter()
            naive()  # warmup, and the estimate of how many steps fit
            first = time.perf_counter() - t0
            naive_steps = repeats_for(first, args.budget / 2, 2, args.max_repeats)
            naive_s = time_per_call(naive, repeats=naive_steps, warmup=0, timer=timer)
        note = f"{naive_steps}"
        del naive_rule
    return Row(n, batch, dtype_name, torch.get_num_threads(), rtrl_s, bmm_s, bptt_s, naive_s,
               naive_steps, note)


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.0f} us"


def fmt_rate(s: float | None) -> str:
    return "-" if s is None else f"{1.0 / s:,.1f}"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


COLUMNS = ["N", "batch", "dtype", "rtrl step", "rtrl/s", "bmm", "rtrl/bmm", "naive step",
           "naive/s", "speedup", "bptt step", "bptt/s", "rtrl/bptt", "naive"]
LEGEND = (
    "rtrl step: fast RTRL.step (with a target); bmm: its (B,N+1,N)@(B,N,N(N+D+1)) alone; "
    "naive step: autograd-Jacobian RTRL;\nspeedup = naive/rtrl; bptt step: "
    "BPTT.accumulate over T steps / T; x/s: steps per second; naive: timed naive steps."
)


def table_cells(row: Row) -> list[str]:
    return [
        str(row.n), str(row.batch), row.dtype, fmt_time(row.rtrl_s), fmt_rate(row.rtrl_s),
        fmt_time(row.bmm_s), fmt_ratio(row.rtrl_over_bmm), fmt_time(row.naive_s),
        fmt_rate(row.naive_s), fmt_ratio(row.speedup), fmt_time(row.bptt_s),
        fmt_rate(row.bptt_s), fmt_ratio(row.rtrl_over_bptt), row.naive_note,
    ]


def print_table(rows: list[Row], plain: bool, clock: str) -> None:
    title = f"RTRL step timings ({torch.get_num_threads()} thread(s), {clock} clock), medians"
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:  # pragma: no cover
            plain = True
    if plain:
        cells = [COLUMNS, *(table_cells(r) for r in rows)]
        widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
        print(title)
        for k, line in enumerate(cells):
            print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
            if k == 0:
                print("  ".join("-" * w for w in widths))
        print(LEGEND)
        return
    table = Table(title=title)
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("dtype", "naive") else "right")
    for r in rows:
        table.add_row(*table_cells(r))
    console = Console(width=200)
    console.print(table)
    console.print(LEGEND)


def write_csv(path: Path, rows: list[Row]) -> None:
    with path.open("w", newline="") as f:
        fields = [*asdict(rows[0]).keys(), "rtrl_over_bmm", "speedup", "rtrl_over_bptt"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({**asdict(r), "rtrl_over_bmm": r.rtrl_over_bmm,
                             "speedup": r.speedup, "rtrl_over_bptt": r.rtrl_over_bptt})


def check_naive_matches_fast() -> float:
    """Max abs gradient difference of naive and fast RTRL on a small float64 problem."""
    torch.manual_seed(0)
    model = ElmanRNN(1, 6, 1, dtype=torch.float64)
    x = torch.randn(3, 8, 1, dtype=torch.float64)
    y = torch.randn(3, 8, 1, dtype=torch.float64)
    grads = []
    for rule in (RTRL(model), NaiveRTRL(model)):
        model.zero_grad(set_to_none=True)
        rule.reset(3)
        with torch.no_grad():
            for t in range(x.shape[1]):
                rule.step(x[:, t], y[:, t])
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return float((grads[0] - grads[1]).abs().max())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128], help="hidden N")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32", "float64"])
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: stable timings on a shared machine)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: time.perf_counter; cpu: time.process_time, which leaves out "
                        "waits for a core on a shared machine (meaningful with --threads 1)")
    p.add_argument("--seq-len", type=int, default=64, help="T of the BPTT sequences")
    p.add_argument("--budget", type=float, default=3.0,
                   help="seconds of timed calls per measurement (sets the number of repeats)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of rtrl and bmm")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-repeats", type=int, default=200)
    p.add_argument("--naive-limit", type=float, default=10.0,
                   help="skip the naive rule where its estimated step time exceeds this (s)")
    p.add_argument("--no-naive", action="store_true")
    p.add_argument("--no-check-finite", action="store_true",
                   help="RTRL(check_finite=False): no NaN/inf check of each step's data")
    p.add_argument("--plain", action="store_true", help="plain-text table instead of rich")
    p.add_argument("--csv", type=Path, default=None, help="also write the rows to this CSV")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__} on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; torch.set_num_threads({args.threads}) -> "
          f"{torch.get_num_threads()} thread(s); MKL {torch.backends.mkl.is_available()}, "
          f"oneDNN {torch.backends.mkldnn.is_available()}; load average {load}")
    print(f"D = 1, O = 1, T = {args.seq_len} for BPTT; "
          f"RTRL check_finite = {not args.no_check_finite}; clock: {args.clock} "
          f"({CLOCKS[args.clock].__name__})")
    if not args.no_naive:
        print(f"naive RTRL vs fast RTRL, max |grad difference| = {check_naive_matches_fast():.2e}")

    rows: list[Row] = []
    # The last measured naive step time per (batch, dtype), to predict the next N's by N^4.
    naive_seen: dict[tuple[int, str], tuple[int, float]] = {}
    start = time.perf_counter()
    for dtype_name in args.dtypes:
        for batch in args.batches:
            for n in sorted(args.sizes):
                prev = naive_seen.get((batch, dtype_name))
                estimate = None if prev is None else prev[1] * (n / prev[0]) ** 4
                row = bench_one(n, batch, dtype_name, args, estimate)
                if row.naive_s is not None:
                    naive_seen[(batch, dtype_name)] = (n, row.naive_s)
                rows.append(row)
                print(f"  N={n:4d} batch={batch:3d} {dtype_name}: rtrl {fmt_time(row.rtrl_s)}, "
                      f"bmm {fmt_time(row.bmm_s)}, naive {fmt_time(row.naive_s)} "
                      f"({row.naive_note}), bptt {fmt_time(row.bptt_s)}/step", flush=True)
    elapsed = time.perf_counter() - start

    print()
    print_table(rows, args.plain, args.clock)
    skipped = [r for r in rows if r.naive_s is None and not args.no_naive]
    for r in skipped:
        print(f"naive RTRL skipped for N={r.n}, batch={r.batch}, {r.dtype}: {r.naive_note}")

    big = [r for r in rows if r.n >= TARGET_MIN_N]
    if big:
        worst = max(big, key=lambda r: r.rtrl_over_bmm)
        holds = worst.rtrl_over_bmm <= TARGET_RATIO
        print(f"target: RTRL step <= {TARGET_RATIO:g} x its bmm for N >= {TARGET_MIN_N}: "
              f"{'HOLDS' if holds else 'FAILS'} (worst {worst.rtrl_over_bmm:.2f} at N={worst.n}, "
              f"batch={worst.batch}, {worst.dtype})")
        for r in big:
            if r.rtrl_over_bmm > TARGET_RATIO:
                print(f"  over target: N={r.n}, batch={r.batch}, {r.dtype}: "
                      f"{r.rtrl_over_bmm:.2f}")
    else:
        print(f"target: no size >= {TARGET_MIN_N} measured")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"total {elapsed:.0f} s; load average at the end {load}")
    if args.csv is not None:
        write_csv(args.csv, rows)
        print(f"rows written to {args.csv}")


if __name__ == "__main__":
    main()
