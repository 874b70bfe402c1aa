"""Spectral radius of a random reservoir: cost and accuracy of each method (issue 10, item 9).

Run: ``.venv/bin/python benchmarks/bench_spectral_radius.py`` (a few minutes on a loaded 2-core
machine; ``--sizes 100,500,1000,1025,2000,4000`` adds the 4000-unit rows, about 3 more minutes
each density). Every contender runs on one thread: ``torch.set_num_threads(1)`` and the BLAS
behind numpy/scipy limited to one thread (threadpoolctl); both are printed.

For each size n and density d, W = :func:`rnnlab.reservoir.topology.sparse_random` (uniform on
[-1, 1], seed 0..seeds-1, float64, dense torch tensor, as ``EchoStateNetwork`` builds it). The
reference is numpy's ``eigvals`` (all eigenvalues, LAPACK geev). Timed (best of ``--repeats``,
the cache emptied before each call):

* ``dense``: ``spectral_radius(W, method="dense")`` (``torch.linalg.eigvals``);
* ``arnoldi``: ``spectral_radius(W, method="arnoldi")`` (ARPACK, 6 eigenvalues of largest
  modulus, 64 vectors, tol 1e-10);
* ``auto``: the default (the cost model picks one of the two; its pick is printed);
* ``old``: the rule before this change, reproduced here: all eigenvalues up to 1024 rows,
  ARPACK with k = 1, 40 vectors, tol 0 above;
* ``rpy``: ReservoirPy's ``observables.spectral_radius`` on the same matrix as scipy CSR (ARPACK,
  k = 1, its default 20 vectors and tol 0, start vector of ones), if reservoirpy is installed.

Each prints its best time and its relative error against the reference (the largest over the
seeds), and the Arnoldi row the number of products ``W v`` (median / largest over the seeds).
Then the build of a whole ``EchoStateNetwork(input_size=1, units=n, density=d)``: new default,
old rule (the module's ``spectral_radius`` swapped for the old one in the same process), a second
build of the same reservoir (served by the cache), and ReservoirPy's ``mat_gen.uniform(n, n,
connectivity=d, sr=0.9)`` (its W's true radius against 0.9 is printed: the error of its scaling).

``--survey N`` draws N random matrices (n from 300, 600, 1025; sparse uniform or normal
reservoirs of density 0.1 to 0.01, their leaky Jacobians ``0.7 I + 0.3 W / rho``, or dense
Gaussian matrices) and counts, for the new Arnoldi method, the old k = 1 ARPACK run and
ReservoirPy's, the results more than 1e-8 (relative) away from numpy's eigvals and the runs that
did not converge.

``--calibrate`` fits the cost model's constants (``_COST_*`` in
:mod:`rnnlab.analysis.spectral`): dense time ``c_3 n^3 + c_2 n^2`` (least squares on the
relative error, n = 200..2000), the time
of one Arnoldi product ``c_nnz nnz + c_v n ncv + c_0`` (from runs at several n and densities),
and the median product count ``M(n) = m n^p`` (log-log fit over the seeds).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import scipy.sparse as sp
import torch


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,500,1000,1025,2000")
    ap.add_argument("--densities", default="0.1,0.02")
    ap.add_argument("--seeds", type=int, default=3, help="matrices per (n, d) for the errors")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls (best is reported)")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--survey", type=int, default=0, metavar="N")
    ap.add_argument("--no-esn", action="store_true", help="skip the ESN build table")
    return ap.parse_args(argv)


def _set_threads() -> str:
    torch.set_num_threads(1)
    blas = "threadpoolctl not installed: BLAS threads unknown"
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(1)
        blas = ", ".join(f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info())
    except ImportError:  # pragma: no cover
        pass
    return f"torch threads {torch.get_num_threads()}; BLAS/OpenMP pools: {blas}"


def _best(fn, repeats: int) -> tuple[float, object]:
    from rnnlab.analysis.spectral import clear_spectral_radius_cache

    best, out = math.inf, None
    for _ in range(repeats):
        clear_spectral_radius_cache()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _old_spectral_radius(W, **_: object) -> float:
    """The rule this change replaced: dense up to 1024 rows, ARPACK k=1, ncv=40, tol=0 above
    (with the same structural exact cases first)."""
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigs

    from rnnlab.analysis import spectral as S

    n = S._check_matrix(W)
    csr = S._to_scipy_csr(W)
    csr.eliminate_zeros()
    for special in (S._structural_diagonal_radius, S._monomial_radius, S._tridiagonal_radius):
        exact = special(csr)
        if exact is not None:
            return exact
    if n <= 1024:
        return S._dense_radius(W)
    try:
        vals = eigs(csr, k=1, which="LM", ncv=min(40, n), v0=S._start_vector(n, 0), maxiter=500,
                    return_eigenvectors=False)
        return float(np.abs(vals).max())
    except (ArpackNoConvergence, ArpackError):
        return S._dense_radius(W)


def _survey_matrix(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    from rnnlab.reservoir.topology import sparse_random

    n = int(rng.choice([300, 600, 1025]))
    kind = str(rng.choice(["uniform", "normal", "leaky", "dense"], p=[0.5, 0.2, 0.2, 0.1]))
    d = float(rng.choice([0.1, 0.05, 0.02, 0.01]))
    seed = int(rng.integers(1 << 30))
    if kind == "dense":
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(n, n, generator=gen, dtype=torch.float64).numpy(), f"{n} dense"
    w = sparse_random(n, d, "normal" if kind == "normal" else "uniform", seed=seed,
                      dtype=torch.float64).numpy()
    if kind == "leaky":
        w = 0.7 * np.eye(n) + 0.3 * w / np.abs(np.linalg.eigvals(w)).max()
    return w, f"{n} {kind} {d}"


def survey(count: int) -> None:
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigs

    from rnnlab.analysis import spectral as S

    rpy_rho = _rpy_radius()

    def old_k1(csr):
        n = csr.shape[0]
        return float(np.abs(eigs(csr, k=1, which="LM", ncv=40, v0=S._start_vector(n, 0),
                                 maxiter=500, return_eigenvectors=False)).max())

    methods = {"new arnoldi (k=6, ncv=64, tol=1e-10)": lambda csr: S._arnoldi_radius(
        csr, S.ARNOLDI_TOL, S.ARNOLDI_NCV, S.ARNOLDI_MAXITER, 0),
        "old ARPACK (k=1, ncv=40, tol=0)": old_k1}
    if rpy_rho is not None:
        methods["reservoirpy (k=1, ncv=20, tol=0, v0=ones)"] = lambda csr: float(rpy_rho(csr))
    wrong = {m: 0 for m in methods}
    stalled = {m: 0 for m in methods}
    worst_wrong = {m: 0.0 for m in methods}
    worst_right = {m: 0.0 for m in methods}
    rng = np.random.default_rng(1)
    for i in range(count):
        w, label = _survey_matrix(rng)
        ref = float(np.abs(np.linalg.eigvals(w)).max())
        csr = sp.csr_matrix(w)
        for m, fn in methods.items():
            try:
                err = abs(fn(csr) - ref) / ref
            except (ArpackNoConvergence, ArpackError):
                stalled[m] += 1
                continue
            if err > 1e-8:
                wrong[m] += 1
                worst_wrong[m] = max(worst_wrong[m], err)
                print(f"  matrix {i} ({label}): {m} off by {err:.1e}")
            else:
                worst_right[m] = max(worst_right[m], err)
    print(f"\n## survey of {count} matrices: results > 1e-8 from numpy's eigvals")
    for m in methods:
        print(f"{m:42s} wrong {wrong[m]:4d} (largest {worst_wrong[m]:.1e}), not converged "
              f"{stalled[m]:3d}, largest error of the others {worst_right[m]:.1e}")


def _count_products(csr, ncv: int, tol: float, seed: int = 0) -> tuple[float, int]:
    """The Arnoldi method of spectral_radius, on a counting operator: (rho, products)."""
    from scipy.sparse.linalg import LinearOperator, eigs

    from rnnlab.analysis import spectral as S

    n = csr.shape[0]
    count = [0]

    def mv(x: np.ndarray) -> np.ndarray:
        count[0] += 1
        return csr @ x

    op = LinearOperator((n, n), matvec=mv, dtype=np.float64)
    vals = eigs(op, k=S.ARNOLDI_NEV, which="LM", ncv=min(ncv, n), tol=tol,
                v0=S._start_vector(n, seed), maxiter=S.ARNOLDI_MAXITER,
                return_eigenvectors=False)
    return float(np.abs(vals).max()), count[0]


def _rpy_radius():
    try:
        from reservoirpy.observables import spectral_radius as rpy_rho
    except ImportError:
        return None
    return rpy_rho


def method_table(sizes: list[int], densities: list[float], seeds: int, repeats: int) -> None:
    from rnnlab.analysis import spectral as S
    from rnnlab.reservoir.topology import sparse_random

    rpy_rho = _rpy_radius()
    print("\n## spectral_radius: best time (s) and largest relative error over the seeds, "
          "against numpy eigvals")
    print(f"{'n':>5} {'dens':>5} {'nnz':>8} {'ref s':>7} | {'dense s':>8} {'err':>7} | "
          f"{'arnoldi s':>9} {'err':>7} {'W v med/max':>11} | {'auto':>7} {'s':>7} {'err':>7} | "
          f"{'old s':>7} {'err':>7} | {'rpy s':>7} {'err':>7} | auto/old")
    for n in sizes:
        for d in densities:
            errs: dict[str, list[float]] = {k: [] for k in ("dense", "arnoldi", "auto", "old",
                                                            "rpy")}
            times: dict[str, float] = {}
            products: list[int] = []
            ref_t = math.inf
            pick = ""
            nnz = 0
            for seed in range(seeds):
                w = sparse_random(n, d, seed=seed, dtype=torch.float64)
                wn = w.numpy()
                csr = sp.csr_matrix(wn)
                nnz = csr.nnz
                t0 = time.perf_counter()
                ref = float(np.abs(np.linalg.eigvals(wn)).max())
                ref_t = min(ref_t, time.perf_counter() - t0)
                reps = repeats if seed == 0 else 1
                calls = {
                    "dense": lambda w=w: S.spectral_radius(w, method="dense"),
                    "arnoldi": lambda w=w: S.spectral_radius(w, method="arnoldi"),
                    "auto": lambda w=w: S.spectral_radius(w),
                    "old": lambda w=w: _old_spectral_radius(w),
                }
                if rpy_rho is not None:
                    calls["rpy"] = lambda csr=csr: float(rpy_rho(csr))
                for name, fn in calls.items():
                    t, val = _best(fn, reps)
                    if seed == 0:
                        times[name] = t
                    errs[name].append(abs(val - ref) / ref)
                pick = "arnoldi" if S.arnoldi_budget(n, nnz) > 0 else "dense"
                if n >= S.ARNOLDI_NEV + 3:
                    products.append(_count_products(csr, S.ARNOLDI_NCV, S.ARNOLDI_TOL)[1])

            def cell(name: str, times: dict = times, errs: dict = errs) -> str:
                if name not in times:
                    return f"{'-':>7} {'-':>7}"
                return f"{times[name]:7.3f} {max(errs[name]):7.0e}"

            mv = f"{int(statistics.median(products))}/{max(products)}" if products else "-"
            print(f"{n:5d} {d:5.2f} {nnz:8d} {ref_t:7.3f} | {times['dense']:8.3f} "
                  f"{max(errs['dense']):7.0e} | {times['arnoldi']:9.3f} {max(errs['arnoldi']):7.0e}"
                  f" {mv:>11} | {pick:>7} {cell('auto')} | {cell('old')} | {cell('rpy')} | "
                  f"{times['auto'] / times['old']:.2f}")


def esn_table(sizes: list[int], densities: list[float], repeats: int) -> None:
    from rnnlab.analysis import spectral as S
    from rnnlab.reservoir.esn import EchoStateNetwork

    try:
        from reservoirpy import mat_gen
    except ImportError:
        mat_gen = None
    print("\n## EchoStateNetwork(input_size=1, units=n, density=d, dtype=float64) build: "
          "best time (s)")
    print(f"{'n':>5} {'dens':>5} | {'new':>7} {'old':>7} {'cached':>7} {'rpy W':>7} | "
          f"{'new/old':>7} {'new/rpy':>7} | {'rho err new':>11} {'rho err rpy':>11}")
    for n in sizes:
        for d in densities:
            def build(d=d, n=n):
                return EchoStateNetwork(input_size=1, units=n, density=d, seed=0,
                                        dtype=torch.float64)

            t_new, esn = _best(build, repeats)
            original = S.spectral_radius
            S.spectral_radius = _old_spectral_radius
            try:
                t_old, _ = _best(build, repeats)
            finally:
                S.spectral_radius = original
            build()  # fill the cache
            t_cached = min(_timed(build) for _ in range(repeats))
            rho_new = float(np.abs(np.linalg.eigvals(esn.W.numpy())).max())
            err_new = abs(rho_new - 0.9) / 0.9
            t_rpy, err_rpy = math.nan, math.nan
            if mat_gen is not None:
                t_rpy, w_rpy = _best(lambda n=n, d=d: mat_gen.uniform(
                    n, n, connectivity=d, sr=0.9, seed=0), repeats)
                rho_rpy = float(np.abs(np.linalg.eigvals(w_rpy.toarray())).max())
                err_rpy = abs(rho_rpy - 0.9) / 0.9
            print(f"{n:5d} {d:5.2f} | {t_new:7.3f} {t_old:7.3f} {t_cached:7.3f} {t_rpy:7.3f} | "
                  f"{t_new / t_old:7.2f} {t_new / t_rpy:7.2f} | {err_new:11.1e} {err_rpy:11.1e}")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def calibrate(repeats: int) -> None:
    from rnnlab.analysis import spectral as S
    from rnnlab.reservoir.topology import sparse_random

    print("\n## cost model calibration (one thread)")
    ns = [200, 300, 500, 800, 1200, 1600, 2000]
    td = []
    for n in ns:
        w = sparse_random(n, 0.1, seed=0, dtype=torch.float64)
        t, _ = _best(lambda w=w: S._dense_radius(w), repeats)
        td.append(t)
        print(f"dense n={n}: {t:.4f} s, {t / n ** 3:.2e} s/n^3")
    # t = c3 n^3 + c2 n^2, least squares on the relative error (rows divided by t)
    nf, tf = np.array(ns, float), np.array(td)
    (c3, c2), *_ = np.linalg.lstsq(np.stack([nf ** 3, nf ** 2], 1) / tf[:, None],
                                   np.ones_like(tf), rcond=None)
    print(f"dense: t = {c3:.2e} n^3 + {c2:.2e} n^2 (relative least squares); "
          f"largest misfit {np.abs((c3 * nf ** 3 + c2 * nf ** 2) / tf - 1).max():.0%}")
    rows, per_mv = [], []
    counts: dict[int, list[int]] = {}
    for n in (200, 400, 800, 1600):
        for d in (0.2, 0.05, 0.01):
            w = sparse_random(n, d, seed=0, dtype=torch.float64)
            csr = S._to_scipy_csr(w)
            ncv = min(S.ARNOLDI_NCV, n)
            t, _ = _best(lambda csr=csr: S._arnoldi_radius(csr, S.ARNOLDI_TOL, S.ARNOLDI_NCV,
                                                          S.ARNOLDI_MAXITER, 0), repeats)
            m = _count_products(csr, S.ARNOLDI_NCV, S.ARNOLDI_TOL)[1]
            rows.append([csr.nnz, n * ncv, 1.0])
            per_mv.append(t / m)
            print(f"arnoldi n={n} d={d}: {t:.4f} s, {m} products, {t / m * 1e6:.1f} us each")
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(per_mv), rcond=None)
    print(f"per product: c_nnz = {coef[0]:.2e} s, c_v = {coef[1]:.2e} s (per n*ncv), "
          f"c_0 = {coef[2]:.2e} s")
    for n in (200, 400, 800, 1600):
        for seed in range(5):
            for d in (0.1, 0.02):
                csr = S._to_scipy_csr(sparse_random(n, d, seed=seed, dtype=torch.float64))
                counts.setdefault(n, []).append(
                    _count_products(csr, S.ARNOLDI_NCV, S.ARNOLDI_TOL)[1])
    xs = np.log(np.array(sorted(counts), float))
    med = np.array([statistics.median(counts[n]) for n in sorted(counts)], float)
    p, logm = np.polyfit(xs, np.log(med), 1)
    ratio = max(max(counts[n]) / statistics.median(counts[n]) for n in counts)
    medians = dict(zip(sorted(counts), med.astype(int).tolist(), strict=True))
    print(f"products: medians {medians}; "
          f"M(n) = {math.exp(logm):.2f} n^{p:.2f}; longest/median = {ratio:.2f}")


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    print(_set_threads())
    sizes = [int(s) for s in args.sizes.split(",")]
    densities = [float(s) for s in args.densities.split(",")]
    if args.calibrate:
        calibrate(args.repeats)
        return
    if args.survey:
        survey(args.survey)
        return
    method_table(sizes, densities, args.seeds, args.repeats)
    if not args.no_esn:
        esn_table(sizes, densities, args.repeats)


if __name__ == "__main__":
    main()
