"""Side by side with ReservoirPy: the same echo state network on Mackey-Glass (issue 5, item 5).

Run: ``.venv/bin/python benchmarks/bench_reservoirpy.py --threads 1`` (about 3-4 minutes on a
loaded 2-core machine; the Mackey-Glass series are generated once and cached in the temporary
directory). Options: ``--rpy-sequences 32`` runs ReservoirPy on all 32 sequences of the batch
case instead of extrapolating from fewer; ``--memory10`` adds the 10-sequence memory comparison;
``--kernels`` prints the per-step table behind ``kernel="auto"`` (numba against the torch loop;
with ``--device cuda``: CUDA graphs against the eager torch loop, dense and CSR). ``--device
cuda`` runs rnnlab on the GPU (ReservoirPy stays on the CPU): ``benchmarks/gpu_check.sh`` runs
it with the CUDA tests on a GPU machine. ``--rpy-threads 1,4,16`` times ReservoirPy's fit at each
BLAS thread count and takes its best as the baseline; ``--rpy-workers 1,4`` does the same for its
``workers=`` over the sequences of the batch case (here, on 2 cores, workers=2 was 10x slower
than 1).

Protocol (the issue's): one ESN, 1000 units, spectral radius 0.9, leak 0.3, density 0.1 of W,
dense uniform W_in (scaling 1) and bias (scaling 0.2), built by rnnlab and copied into
``reservoirpy.nodes.Reservoir(W=scipy CSR W, Win=W_in, bias=bias, lr=0.3)`` >> ``Ridge(ridge=1e-6)``
(ReservoirPy's update ``x[t+1] = (1 - lr) x[t] + lr tanh(W x[t] + Win u[t+1] + bias)`` is ours;
the states are checked to agree before timing). Mackey-Glass (tau = 17,
:func:`rnnlab.tasks.mackey_glass`, squashed by ``tanh(x - 1)``), one-step-ahead prediction:
15000 training steps after 100 of warm-up, then ``--test`` steps. Timed (wall clock, and the
process CPU time beside it, which a loaded machine disturbs less):

* fit = state collection + ridge fit: ReservoirPy ``model.fit(X, Y, warmup=100)`` (all states
  held, then ``X^T X`` by numpy); rnnlab :func:`~rnnlab.reservoir.streaming.fit_streaming` (the
  fused numba kernel, states streamed in chunks into the normal equations, syrk Gram);
* predict = the test run continuing from the final training state (``model.run`` /
  :func:`~rnnlab.reservoir.streaming.predict_streaming`);
* peak memory of the fit: ReservoirPy with ``tracemalloc`` (numpy's allocations); rnnlab with
  :func:`rnnlab.analysis.cost.peak_memory_bytes` (torch's allocator, through the profiler) and
  ``tracemalloc`` at the same time (numpy's: the chunk's Gram); rnnlab's figure is the sum of
  the two peaks (an upper bound). Neither sees numba's small kernel buffers (2 x N x batch).
  Memory runs are separate from the timed runs (the tools slow the code).

Batch case: 32 Mackey-Glass sequences (seeds ``seed + 1 ..``), fitted by one readout. rnnlab
runs them as one batch (float64, and float32 states with the float64 normal equations);
ReservoirPy through its multi-series API ``model.fit([X_1, ..], [Y_1, ..], warmup=100)``, which
runs the sequences one after the other (``workers=1``); its time on the 32 is extrapolated
linearly from ``--rpy-sequences`` of them unless that is 32 (its per-sequence time is printed
beside its single-sequence fit, which shows the linearity). Test: every sequence's continuation
from a zero state, the first 100 steps discarded, NRMSE over all test values.

Threads: torch, numba and the BLAS behind numpy (threadpoolctl) are all set to ``--threads``
and printed; with 1 (the default) every contender is single threaded.
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--train", type=int, default=15000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32, help="sequences of the batch case (0: skip)")
    ap.add_argument("--rpy-sequences", type=int, default=2,
                    help="sequences of the batch case ReservoirPy runs (the time is scaled)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of the single case")
    ap.add_argument("--memory10", action="store_true", help="the 10-sequence memory comparison")
    ap.add_argument("--kernels", action="store_true", help="only the kernel table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rpy-threads", type=str, default=None,
                    help="BLAS threads for ReservoirPy (default: --threads; its best on 2 cores "
                         "is 1), or a comma list: its single-sequence fit is timed at each and "
                         "its best count is the baseline of every ratio")
    ap.add_argument("--rpy-workers", type=str, default="1",
                    help="ReservoirPy's workers= in the batch case (joblib threads over the "
                         "sequences), or a comma list: each is timed, the best is the baseline")
    ap.add_argument("--device", default="cpu",
                    help="where rnnlab runs (cpu, cuda); ReservoirPy always runs on the CPU")
    ap.add_argument("--overlap", choices=("auto", "on", "off"), default="auto",
                    help="with --threads > 1: fit_streaming's overlap (on: states on one core, "
                         "the Gram of the previous chunk on another; off: split rows and split "
                         "Gram; auto: its default, on for batches of 8 or more)")
    return ap.parse_args(argv)


ARGS = _parse(None if __name__ == "__main__" else [])
# Before numpy loads its BLAS: one knob for every thread pool.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))

import copy  # noqa: E402
import gc  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rnnlab.analysis.cost import peak_memory_bytes  # noqa: E402
from rnnlab.reservoir import _numba, streaming  # noqa: E402
from rnnlab.reservoir.esn import EchoStateNetwork  # noqa: E402
from rnnlab.reservoir.readout import RidgeReadout  # noqa: E402
from rnnlab.tasks import mackey_glass, mackey_glass_squash, nrmse  # noqa: E402

F64 = torch.float64
RIDGE = 1e-6


# ------------------------------------------------------------------------------------------------
def set_threads(n: int) -> str:
    torch.set_num_threads(n)
    lines = [f"torch threads {torch.get_num_threads()}"]
    if _numba.numba_available():
        import numba

        numba.set_num_threads(n)
        if n > 1:
            _numba.set_kernel_threads(n)
        mode = ("serial" if _numba.kernel_threads() == 1 else {
            "on": "overlap: states on one core, Gram on another",
            "off": "rows and Gram split across the threads",
            "auto": "split for one sequence, overlapped for batches of "
                    f"{streaming.OVERLAP_MIN_BATCH} or more"}[ARGS.overlap])
        lines.append(f"rnnlab kernel threads {_numba.kernel_threads()} (fit: {mode}; numpy "
                     f"BLAS on 1 thread inside rnnlab's fit when above 1)")
    else:
        lines.append("numba not installed: torch loop")
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(n)
        pools = {f"{p['internal_api']}": p["num_threads"] for p in threadpool_info()}
        lines.append("native pools " + ", ".join(f"{k} {v}" for k, v in pools.items()))
    except ImportError:
        lines.append(f"BLAS threads via environment ({os.environ['OPENBLAS_NUM_THREADS']})")
    return "; ".join(lines)


def rpy_thread_counts() -> list[int]:
    if ARGS.rpy_threads is None:
        return [ARGS.threads]
    return [int(n) for n in ARGS.rpy_threads.split(",")]


RPY = {"threads": rpy_thread_counts()[0]}
DEVICE = torch.device(ARGS.device)


def rpy_threads() -> int:
    return RPY["threads"]


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def as_rpy(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with numpy's BLAS on ``--rpy-threads`` threads (ReservoirPy's only pool)."""
    def run() -> object:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return fn()
        with threadpool_limits(rpy_threads()):
            return fn()
    return run


def series(seed: int, length: int) -> np.ndarray:
    """Squashed Mackey-Glass, cached (generation is a Python loop: ~0.6 s per 20k samples)."""
    path = os.path.join(tempfile.gettempdir(), f"rnnlab_bench_mg_s{seed}_n{length}.npy")
    if os.path.exists(path):
        return np.load(path)
    s = mackey_glass_squash(mackey_glass(length, seed=seed, dtype=F64)).numpy()
    np.save(path, s)
    return s


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    gc.collect()
    sync()
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    sync()  # GPU work is asynchronous: the time is the time to the finished result
    return time.perf_counter() - w0, time.process_time() - c0, result


def numpy_peak(fn: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def rnnlab_peak(fn: Callable[[], object]) -> tuple[int, int]:
    """(torch peak, numpy peak) of one run."""
    gc.collect()
    tracemalloc.start()
    try:
        torch_peak = peak_memory_bytes(fn, device=DEVICE)
        return torch_peak, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


# ------------------------------------------------------------------------------------------------
def build_esn(units: int, seed: int) -> EchoStateNetwork:
    return EchoStateNetwork(input_size=1, units=units, spectral_radius=0.9, density=0.1, leak=0.3,
                            input_scaling=1.0, bias_scaling=0.2, seed=seed, dtype=F64)


def rpy_model(esn: EchoStateNetwork):
    import scipy.sparse as sp
    from reservoirpy.nodes import Reservoir, Ridge

    res = Reservoir(W=sp.csr_matrix(esn.W.numpy()), Win=esn.W_in.numpy().copy(),
                    bias=esn.bias.numpy().copy(), lr=float(esn.leak[0]))
    return res, res >> Ridge(ridge=RIDGE)


def our_fit(esn: EchoStateNetwork, u: torch.Tensor, y: torch.Tensor, warmup: int
            ) -> tuple[RidgeReadout, torch.Tensor]:
    readout = RidgeReadout(esn.units, 1, RIDGE, dtype=F64, device=esn.W.device)
    overlap = {"auto": None, "on": True, "off": False}[ARGS.overlap]
    final = streaming.fit_streaming(esn, readout, u, y, washout=warmup, overlap=overlap)
    return readout, final


def row(name: str, ours: float, theirs: float, unit: str = "s", fmt: str = "{:.3f}") -> str:
    return (f"{name:<28} {fmt.format(theirs):>12} {fmt.format(ours):>12} {unit:<4} "
            f"{theirs / ours:>8.2f}x")


# ------------------------------------------------------------------------------------------------
def our_states(esn: EchoStateNetwork, u: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """State collection alone, chunked like the fit; returns the final state."""
    x = None
    # the same thread pools as inside fit_streaming (one thread each while the kernel threads
    # share the cores)
    with torch.no_grad(), _numba.single_threaded_pools(_numba.kernel_threads() > 1):
        for start in range(0, u.shape[1], chunk):
            x = esn.states(u[:, start:start + chunk], x)[:, -1].clone()
    return x


def single_case(args: argparse.Namespace, esn: EchoStateNetwork) -> dict[str, float]:
    w, n_train, n_test = args.warmup, args.train, args.test
    s = series(args.seed, w + n_train + n_test + 1)
    steps = w + n_train
    u = torch.from_numpy(s[:steps]).view(1, -1, 1)
    y = torch.from_numpy(s[1:steps + 1]).view(1, -1, 1)
    u_test = torch.from_numpy(s[steps:steps + n_test]).view(1, -1, 1)
    y_test = torch.from_numpy(s[steps + 1:steps + n_test + 1]).view(1, -1, 1)
    x_np, y_np, xt_np = u[0].numpy(), y[0].numpy(), u_test[0].numpy()
    res, model = rpy_model(esn)
    esn = copy.deepcopy(esn).to(DEVICE)
    u, y, u_test = u.to(DEVICE), y.to(DEVICE), u_test.to(DEVICE)
    esn32 = copy.deepcopy(esn).float()  # the same weights, rounded to float32
    u32, y32, ut32 = u.float(), y.float(), u_test.float()

    # same weights, same update: the states must agree before anything is timed
    check = min(1000, steps)
    with torch.no_grad():
        ours_states = esn(u[:, :check])[0][0].cpu().numpy()
    theirs_states = res.run(x_np[:check])
    state_gap = float(np.abs(ours_states - theirs_states).max())
    # warm the kernels (numba loads its cached machine code on first use; CUDA records a graph)
    our_fit(esn, u[:, :200], y[:, :200], 10)
    our_fit(esn32, u32[:, :200], y32[:, :200], 10)
    counts = rpy_thread_counts()
    if len(counts) > 1:
        tried = {}
        for n in counts:
            RPY["threads"] = n
            res.reset()
            tried[n] = timed(as_rpy(lambda: model.fit(x_np, y_np, warmup=w)))[0]
        RPY["threads"] = min(tried, key=tried.get)
        print("ReservoirPy fit by BLAS threads: " + ", ".join(
            f"{n}: {t:.2f} s" for n, t in tried.items()) + f" -> {RPY['threads']} used below")

    runs: dict[str, list] = {"rpy": [], "f64": [], "f32": []}
    for _ in range(args.repeats):
        res.reset()
        fw, fc, _ = timed(as_rpy(lambda: model.fit(x_np, y_np, warmup=w)))
        pw, pc, p_rpy = timed(as_rpy(lambda: model.run(xt_np)))
        runs["rpy"].append((fw, fc, pw, pc))
        for key, m, a, b, t in (("f64", esn, u, y, u_test), ("f32", esn32, u32, y32, ut32)):
            fw, fc, (readout, final) = timed(lambda m=m, a=a, b=b: our_fit(m, a, b, w))
            pw, pc, (pred, _) = timed(lambda m=m, r=readout, x=final, t=t:
                                      streaming.predict_streaming(m, r, t, state0=x))
            runs[key].append((fw, fc, pw, pc))
            if key == "f64":
                p_ours = pred
            else:
                p_ours32 = pred
    res.reset()
    st_rpy = timed(as_rpy(lambda: res.run(x_np)))[:2]
    st_ours = timed(lambda: our_states(esn, u))[:2]
    st_ours32 = timed(lambda: our_states(esn32, u32))[:2]
    y_test = y_test.cpu()
    nrmse_rpy = nrmse(torch.from_numpy(np.asarray(p_rpy)), y_test[0])
    nrmse_ours = nrmse(p_ours[0].cpu(), y_test[0])
    nrmse_ours32 = nrmse(p_ours32[0].double().cpu(), y_test[0])
    pred_gap = float(np.abs(np.asarray(p_rpy) - p_ours[0].cpu().numpy()).max())

    res.reset()
    mem_rpy = numpy_peak(lambda: model.fit(x_np, y_np, warmup=w))
    mem_t, mem_np = rnnlab_peak(lambda: our_fit(esn, u, y, w))

    print(f"\n== one sequence: {n_train} training steps after {w}, test {n_test} ==")
    print(f"states, rnnlab vs ReservoirPy, first {check} steps: max |diff| = {state_gap:.1e}; "
          f"test predictions: max |diff| = {pred_gap:.1e}")
    print(f"{'':<30} {'ReservoirPy':>11} {'rnnlab f64':>11} {'ratio':>7} {'rnnlab f32':>11} "
          f"{'ratio':>7}")

    def line(label: str, theirs: float, ours: float, ours32: float, fmt: str = "{:.3f}"
             ) -> None:
        print(f"{label:<30} {fmt.format(theirs):>11} {fmt.format(ours):>11} "
              f"{theirs / ours:>6.2f}x {fmt.format(ours32):>11} {theirs / ours32:>6.2f}x")

    for r in range(args.repeats):
        rp, o64, o32 = runs["rpy"][r], runs["f64"][r], runs["f32"][r]
        line(f"fit, wall s (run {r + 1})", rp[0], o64[0], o32[0])
        line(f"fit, CPU s (run {r + 1})", rp[1], o64[1], o32[1])
        line(f"fit per step, wall us (run {r + 1})", rp[0] / steps * 1e6,
             o64[0] / steps * 1e6, o32[0] / steps * 1e6, "{:.1f}")
        line(f"predict, wall s (run {r + 1})", rp[2], o64[2], o32[2])
    line("states only, wall s", st_rpy[0], st_ours[0], st_ours32[0])
    line("states only, CPU s", st_rpy[1], st_ours[1], st_ours32[1])
    print(f"{'fit peak memory, MiB (f64)':<30} {mem_rpy / 2**20:>11.1f} "
          f"{(mem_t + mem_np) / 2**20:>11.1f} {mem_rpy / (mem_t + mem_np):>6.2f}x")
    print(f"  (rnnlab: torch {mib(mem_t)} on {DEVICE.type} + numpy {mib(mem_np)} by "
          f"tracemalloc; ReservoirPy: numpy by tracemalloc)")
    print(f"{'test NRMSE':<30} {nrmse_rpy:>11.3e} {nrmse_ours:>11.3e} {'':>7} "
          f"{nrmse_ours32:>11.3e}")
    best_rpy = min(r[0] for r in runs["rpy"])
    best_ours = min(r[0] for r in runs["f64"])
    ok = best_rpy / best_ours >= 3 and nrmse_ours <= 1.05 * nrmse_rpy
    print(f"target: float64 fit >= 3x faster at equal NRMSE (rnnlab on {DEVICE.type}): best "
          f"run {best_rpy / best_ours:.2f}x -> {'holds' if ok else 'MISSED'}")
    return {"rpy_fit_per_seq": best_rpy}


def batch_case(args: argparse.Namespace, esn: EchoStateNetwork, rpy_single_fit: float) -> None:
    b, w, n_train, n_test = args.batch, args.warmup, args.train, args.test
    steps = w + n_train
    t0 = time.perf_counter()
    data = np.stack([series(args.seed + 1 + i, steps + w + n_test + 1) for i in range(b)])
    gen = time.perf_counter() - t0
    u = torch.from_numpy(data[:, :steps, None].copy())
    y = torch.from_numpy(data[:, 1:steps + 1, None].copy())
    # test: each sequence's continuation from a zero state, the first w steps discarded
    u_test = torch.from_numpy(data[:, steps:steps + w + n_test, None].copy())
    y_test = torch.from_numpy(data[:, steps + 1:steps + w + n_test + 1, None].copy())
    esn_cpu = esn
    esn = copy.deepcopy(esn).to(DEVICE)
    esn32 = copy.deepcopy(esn).float()  # the same weights, rounded to float32

    print(f"\n== {b} sequences, one readout ({gen:.0f} s to load/generate the series) ==")
    results = {}
    for name, model in (("float64", esn), ("float32 states", esn32)):
        dt = model.W.dtype
        ub, yb, ut = (t.to(device=DEVICE, dtype=dt) for t in (u, y, u_test))
        our_fit(model, ub[:, :300], yb[:, :300], 10)  # warm the batched kernel (or CUDA graph)
        fw, fc, (readout, _) = timed(lambda m=model, a=ub, c=yb: our_fit(m, a, c, w))
        pw, pc, (pred, _) = timed(
            lambda m=model, r=readout, a=ut: streaming.predict_streaming(m, r, a))
        err = nrmse(pred[:, w:].double().cpu(), y_test[:, w:])
        results[name] = (fw, fc, pw, pc, err)

    k = max(1, min(args.rpy_sequences, b))
    res, model = rpy_model(esn_cpu)
    xs = [u[i].numpy() for i in range(k)]
    ys = [y[i].numpy() for i in range(k)]
    xts = [u_test[i].numpy() for i in range(k)]
    fits = {}
    for i, n in enumerate(int(v) for v in args.rpy_workers.split(",")):
        if i:
            res.reset()  # (a reservoir that has not run yet has no state to reset)
        fits[n] = timed(as_rpy(lambda n=n: model.fit(xs, ys, warmup=w, workers=n)))
    workers = min(fits, key=lambda n: fits[n][0])
    rfw, rfc, _ = fits[workers]
    if len(fits) > 1:
        print("ReservoirPy fit by workers: " + ", ".join(
            f"{n}: {f[0]:.2f} s" for n, f in fits.items()) + f" -> {workers} used below")
    res.reset()
    rpw, rpc, preds = timed(as_rpy(lambda: model.run(xts, workers=workers)))
    preds = np.stack([np.asarray(p) for p in preds])
    rerr = nrmse(torch.from_numpy(preds[:, w:]), y_test[:k, w:])
    scale = b / k
    print(f"ReservoirPy ran {k} of the {b} sequences: {rfw / k:.2f} s per sequence (its "
          f"single-sequence fit: {rpy_single_fit:.2f} s); times x {scale:g}"
          + (" (extrapolated)" if k < b else ""))
    print(f"{'':<32} {'ReservoirPy':>12} {'rnnlab f64':>12} {'ratio':>8} {'rnnlab f32':>12} "
          f"{'ratio':>8}")
    f64, f32 = results["float64"], results["float32 states"]
    for label, i, rpy in (("fit, wall (s)", 0, rfw * scale), ("fit, CPU (s)", 1, rfc * scale),
                          ("predict, wall (s)", 2, rpw * scale),
                          ("predict, CPU (s)", 3, rpc * scale)):
        print(f"{label:<32} {rpy:>12.2f} {f64[i]:>12.2f} {rpy / f64[i]:>7.1f}x "
              f"{f32[i]:>12.2f} {rpy / f32[i]:>7.1f}x")
    print(f"{'fit per sequence-step, wall (us)':<32} {rfw / k / steps * 1e6:>12.1f} "
          f"{f64[0] / b / steps * 1e6:>12.1f} {'':>8} {f32[0] / b / steps * 1e6:>12.1f}")
    print(f"{'test NRMSE':<32} {rerr:>12.3e} {f64[4]:>12.3e} {'':>8} {f32[4]:>12.3e}"
          + (f"   (ReservoirPy's readout fitted on {k} sequences)" if k < b else ""))
    ud, yd = u.to(DEVICE), y.to(DEVICE)
    mem_t, mem_np = rnnlab_peak(lambda: our_fit(esn, ud, yd, w))
    print(f"rnnlab fit peak memory ({DEVICE.type}), float64, {b} sequences: "
          f"{mib(mem_t + mem_np)} (torch "
          f"{mib(mem_t)} + numpy {mib(mem_np)}); ReservoirPy holds every state: "
          f"{b} x {steps} x {args.units} x 8 B = {mib(b * steps * args.units * 8)} at least")
    r64, r32 = rfw * scale / f64[0], rfw * scale / f32[0]
    print(f"target: {b} sequences >= 10x faster (rnnlab on {DEVICE.type}): float64 "
          f"{r64:.1f}x, float32 states {r32:.1f}x -> "
          f"{'holds' if max(r64, r32) >= 10 else 'MISSED'}")


def memory10(args: argparse.Namespace, esn: EchoStateNetwork) -> None:
    w, steps = args.warmup, args.warmup + args.train
    data = np.stack([series(args.seed + 1 + i, steps + w + args.test + 1) for i in range(10)])
    u = torch.from_numpy(data[:, :steps, None].copy())
    y = torch.from_numpy(data[:, 1:steps + 1, None].copy())
    _, model = rpy_model(esn)
    xs, ys = [u[i].numpy() for i in range(10)], [y[i].numpy() for i in range(10)]
    rpy = numpy_peak(lambda: model.fit(xs, ys, warmup=w))
    esn, u, y = copy.deepcopy(esn).to(DEVICE), u.to(DEVICE), y.to(DEVICE)
    mem_t, mem_np = rnnlab_peak(lambda: our_fit(esn, u, y, w))
    print("\n== 10 sequences, fit peak memory ==")
    print(f"ReservoirPy (tracemalloc): {mib(rpy)}; rnnlab: {mib(mem_t + mem_np)} (torch "
          f"{mib(mem_t)} + numpy {mib(mem_np)}); ratio {rpy / (mem_t + mem_np):.0f}x")


def kernel_table() -> None:
    """Per-step time of the numba kernel and of the torch loop (dense or CSR, its own rule)."""
    print("\n== per step (us, best of 3, CPU time): numba kernel / torch loop ==")
    print(f"{'N':>5} {'density':>8} {'f64 b1':>16} {'f64 b32':>16} {'f32 b1':>16} "
          f"{'f32 b32':>16}")
    gen = torch.Generator().manual_seed(0)
    for n, dens in ((100, 1.0), (300, 0.1), (300, 1.0), (1000, 0.02), (1000, 0.1),
                    (1000, 0.5), (1000, 1.0), (2000, 0.05), (2000, 0.5)):
        mask = torch.rand(n, n, generator=gen, dtype=F64) < dens
        w_user = torch.where(mask, torch.rand(n, n, generator=gen, dtype=F64) - 0.5, 0.0)
        w_user *= 0.9 * 2 / (n * dens) ** 0.5  # spectral radius about 0.9 (circular law)
        cells = []
        for dt in (F64, torch.float32):
            for b in (1, 32):
                steps = 300 if b == 1 else 40
                per = []
                for kern in ("numba", "torch"):
                    esn = EchoStateNetwork(input_size=1, units=n, topology=w_user, leak=0.3,
                                           kernel=kern, dtype=dt)
                    drive = esn.input_drive(torch.randn(b, steps, 1, dtype=dt))
                    x0 = esn.initial_state(b)
                    esn.recur(drive[:, :5], x0)
                    best = min(timed(lambda e=esn, d=drive, x=x0: e.recur(d, x))[1]
                               for _ in range(3))
                    per.append(best / steps * 1e6)
                cells.append(f"{per[0]:.0f} / {per[1]:.0f}")
        print(f"{n:>5} {dens:>8} " + " ".join(f"{c:>16}" for c in cells))


def gpu_kernel_table() -> None:
    """Per-step time on CUDA: the loop replayed as CUDA graphs, the eager torch loop (dense W)
    and the eager loop with torch's CSR matmul (``sparse=True``)."""
    print(f"\n== per step on {torch.cuda.get_device_name(DEVICE)} (us, best of 3 runs of 1024 "
          f"steps): CUDA graph / eager dense / eager CSR ==")
    print(f"{'N':>5} {'density':>8} {'f64 b1':>20} {'f64 b32':>20} {'f32 b1':>20} "
          f"{'f32 b32':>20}")
    steps = 1024
    for n, dens in ((500, 0.1), (1000, 0.1), (2000, 0.05), (4000, 0.02)):
        base = EchoStateNetwork(input_size=1, units=n, spectral_radius=None, density=dens,
                                leak=0.3, dtype=F64)
        cells = []
        for dt in (F64, torch.float32):
            for b in (1, 32):
                per = []
                for kern, sparse in (("cuda_graph", None), ("torch", False), ("torch", True)):
                    esn = copy.deepcopy(base).to(device=DEVICE, dtype=dt)
                    esn.kernel, esn.sparse = kern, sparse
                    with torch.no_grad():
                        drive = esn.input_drive(torch.randn(b, steps, 1, dtype=dt,
                                                            device=DEVICE))
                        x0 = esn.initial_state(b)
                        esn.recur(drive, x0)  # records the graph, warms cuBLAS/cuSPARSE
                        best = min(timed(lambda e=esn, d=drive, x=x0: e.recur(d, x))[0]
                                   for _ in range(3))
                    per.append(best / steps * 1e6)
                cells.append(" / ".join(f"{v:.1f}" for v in per))
        print(f"{n:>5} {dens:>8} " + " ".join(f"{c:>20}" for c in cells))


def main() -> int:
    args = ARGS
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, numpy {np.__version__}")
    print(set_threads(args.threads))
    print(f"ReservoirPy: numpy BLAS on {ARGS.rpy_threads or ARGS.threads} thread(s) "
          f"(--rpy-threads)")
    if DEVICE.type == "cuda":
        print(f"rnnlab on {torch.cuda.get_device_name(DEVICE)} (CUDA graphs: "
              f"{build_esn(50, 0).to(DEVICE).uses_cuda_graph(1, 10**4)}); ReservoirPy on the "
              f"CPU")
    if args.kernels:
        if DEVICE.type == "cuda":
            gpu_kernel_table()
        else:
            kernel_table()
        return 0
    try:
        import reservoirpy
    except ImportError:
        print("reservoirpy is not installed (pip install reservoirpy==0.4.2)")
        return 1
    print(f"reservoirpy {reservoirpy.__version__}; rnnlab kernel: "
          f"{'numba' if _numba.numba_available() else 'torch'}")
    esn = build_esn(args.units, args.seed)
    print(f"ESN: {args.units} units, density 0.1 ({_numba.csr_arrays(esn.W).nnz} weights), "
          f"rho 0.9, leak 0.3, ridge {RIDGE}; numba kernel in use: "
          f"{DEVICE.type == 'cpu' and esn.uses_numba(1)} (batch {args.batch}: "
          f"{DEVICE.type == 'cpu' and esn.uses_numba(max(1, args.batch))})")
    single = single_case(args, esn)
    if args.batch > 0:
        batch_case(args, esn, single["rpy_fit_per_seq"])
    if args.memory10:
        memory10(args, esn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
