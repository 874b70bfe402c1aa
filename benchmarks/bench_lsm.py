"""Whole-column throughput in stimuli per second: rnnlab's liquid, NEST and brian2 (issue 13).

Run in the reference environment (docs/lsm_reference.md), e.g.
``/tmp/refvenv/bin/python benchmarks/bench_lsm.py`` (NEST and rnnlab, a few minutes on one
loaded core) or with ``--brian`` (adds brian2; its first Cython run compiles for minutes).

Protocol: one column, rnnlab's ``build_column(seed=0)`` (Maass et al. 2002, 15x3x3, 135 neurons),
exported edge by edge into NEST (``iaf_psc_exp_multisynapse`` + ``tsodyks2_synapse``) and brian2
(exact integration, event-driven synapses; benchmarks/lsm_reference/), so every simulator runs the
same network; ``compare.py`` checks that their rasters agree spike for spike. A stimulus is
``--duration`` ms (default 1 s) of one 20 Hz Poisson input train at dt = 0.1 ms (NEST and brian2
start every copy from the exported initial potentials, rnnlab draws them per trial: the cost is
the same). Timed per simulator (network construction included, as a user pays it):

* NEST, one stimulus per simulation (``ResetKernel``, build, ``Simulate``), and NEST's way for
  many trials: ``--copies`` independent copies of the column in one network, one ``Simulate``;
* brian2 (``--brian``): runtime mode with the Cython target (compiled code, cached after the
  first run; one warm-up run is not timed), one stimulus per network and ``--copies`` copies;
  then ``cpp_standalone`` with ``--copies`` copies: built, compiled and run once (not timed),
  then the compiled binary is run again and timed (its CPU time from ``RUSAGE_CHILDREN``);
* rnnlab ``LiquidColumn`` in float32 at batch 1 and each ``--batches`` size, with each of
  ``--backends`` (``numba``: the fused CPU kernel; ``torch``: the tensor loop that also runs on
  CUDA).

Threads: torch.set_num_threads, NEST local_num_threads and the BLAS/OpenMP pools are all set to
``--threads`` (1) and printed. Both wall-clock and process CPU time are timed: the CPU time is the
figure a loaded shared machine disturbs least, and the ratios are taken on it (and on wall time
beside it), rnnlab over NEST's best mode, in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duration", type=float, default=1000.0, help="ms per stimulus")
    ap.add_argument("--dt", type=float, default=0.1)
    ap.add_argument("--batches", default="64,256", help="rnnlab batch sizes besides 1")
    ap.add_argument("--copies", type=int, default=64, help="NEST/brian2 columns per network")
    ap.add_argument("--sequential", type=int, default=4,
                    help="stimuli for the one-per-simulation modes and rnnlab batch 1")
    ap.add_argument("--brian", action="store_true")
    ap.add_argument("--device", default="cpu", help="rnnlab's device (cuda on a GPU machine)")
    ap.add_argument("--backends", default="numba,torch",
                    help="rnnlab LiquidColumn backends to time (numba: the fused CPU kernel)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, HERE)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from lsm_reference import nest_sim as N
    from lsm_reference import rnnlab_side as L
    from lsm_reference import spec as S

    batches = [1] + [int(b) for b in args.batches.split(",") if b]
    col, spec = L.maass_column(seed=args.seed, dt=args.dt)
    rng = np.random.default_rng(args.seed + 1)
    n_stim = max([*batches, args.copies, args.sequential])
    inputs = []
    for _ in range(n_stim):
        p = S.poisson_train(20.0, args.duration, args.dt, rng)
        inputs.append(p[p >= 2 * args.dt])

    print(f"column: {spec.n} neurons, {spec.pre.size} synapses; stimulus {args.duration:g} ms, "
          f"dt {args.dt} ms, 20 Hz Poisson input")
    print(f"threads: torch {torch.get_num_threads()}, NEST local_num_threads {args.threads}, "
          f"OMP/MKL/OpenBLAS {os.environ['OMP_NUM_THREADS']}; cores {os.cpu_count()}")
    print(f"versions: NEST {N.VERSION}, torch {torch.__version__}")
    rows: list[tuple[str, int, float, float, float]] = []

    def timed(name: str, n: int, fn) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        _, spikes = fn()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        rows.append((name, n, n / cpu, n / wall, spikes / n))
        print(f"  {name:34s} {n:4d} stimuli  {n / cpu:8.3f}/s cpu  {n / wall:8.3f}/s wall  "
              f"{spikes / n:7.1f} spikes/stimulus", flush=True)

    def nest_run(copies: int, n: int):
        def fn():
            N._reset(args.dt, args.threads)
            return N.column_throughput(spec, inputs[:n], args.duration, copies=copies,
                                       dt=args.dt, n_threads=args.threads)
        return fn

    timed("NEST, one stimulus per simulation", args.sequential, nest_run(1, args.sequential))
    timed(f"NEST, {args.copies} columns per network", args.copies,
          nest_run(args.copies, args.copies))
    if args.brian:
        from lsm_reference import brian_sim as B

        B.set_target("cython")
        print(f"  (brian2 {B.VERSION}, Cython target; warm-up run to fill the compile cache)",
              flush=True)
        B.column_throughput(spec, inputs[:1], 10 * args.dt, copies=1, dt=args.dt)
        timed("brian2, one stimulus per network", args.sequential,
              lambda: B.column_throughput(spec, inputs[: args.sequential], args.duration,
                                          copies=1, dt=args.dt))
        timed(f"brian2, {args.copies} columns per network", args.copies,
              lambda: B.column_throughput(spec, inputs[: args.copies], args.duration,
                                          copies=args.copies, dt=args.dt))
        w0 = time.perf_counter()
        cpu, wall, spikes = B.standalone_throughput(spec, inputs[: args.copies], args.duration,
                                                    dt=args.dt)
        n = args.copies
        rows.append((f"brian2 standalone, {n} columns", n, n / cpu, n / wall, spikes / n))
        print(f"  {rows[-1][0]:34s} {n:4d} stimuli  {n / cpu:8.3f}/s cpu  {n / wall:8.3f}/s wall  "
              f"{spikes / n:7.1f} spikes/stimulus (binary rerun; code generation + compile + "
              f"first run {time.perf_counter() - w0 - wall:.0f} s wall, not counted)", flush=True)
    for backend in args.backends.split(","):
        for b in batches:
            n = args.sequential if b == 1 else b
            timed(f"rnnlab {backend} {args.device} f32, batch {b}", n,
                  lambda b=b, n=n, be=backend: L.column_throughput(
                      col, inputs[:n], args.duration, batch=b, dt=args.dt, device=args.device,
                      backend=be))
    nest_best_cpu = max(r[2] for r in rows if r[0].startswith("NEST"))
    nest_best_wall = max(r[3] for r in rows if r[0].startswith("NEST"))
    print("\nstimuli per second (higher is better); ratio = this mode / NEST's best mode, same run")
    print(f"  {'mode':34s} {'cpu/s':>9s} {'wall/s':>9s} {'ratio cpu':>10s} {'ratio wall':>10s}")
    for name, _, cpu, wall, _ in rows:
        print(f"  {name:34s} {cpu:9.3f} {wall:9.3f} {cpu / nest_best_cpu:10.2f} "
              f"{wall / nest_best_wall:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
