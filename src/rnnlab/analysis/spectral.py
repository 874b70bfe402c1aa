"""Spectral properties of recurrent weight matrices: what the echo state property depends on.

For the leaky-integrator reservoir ``x(t) = (1 - a) x(t-1) + a tanh(W x(t-1) + ...)`` the
linearisation around the origin has the Jacobian ``(1 - a) I + a W``; its spectral radius (the
*effective* spectral radius, Jaeger, Lukosevicius, Popovici & Siewert 2007) must be below one for
the zero state to be stable. ``rho(W) < 1`` is the usual rule of thumb (Jaeger 2001); the largest
singular value ``||W||_2 < 1`` is a sufficient condition for the echo state property (Jaeger 2001,
Proposition 3, for tanh units), and ``||W^k||`` shows the transient growth that a non-normal W can
have even when ``rho(W) < 1``.

Every function takes a dense ``torch.Tensor``, a torch sparse tensor (COO or CSR), a
``numpy.ndarray`` or a ``scipy.sparse`` matrix, and computes in float64.

Methods (documented because they decide the accuracy and the cost):

* ``spectral_radius``, in this order:

  1. structure: if the directed graph of the non-zero pattern has no cycle through more than one
     node (every strongly connected component is a single node), W is permutation-similar to a
     triangular matrix and its eigenvalues are its diagonal entries: exact (0 for a delay line,
     which an eigenvalue routine returns as round-off of order ``eps^(1/n)``);
  2. a monomial matrix (one non-zero per row and per column, e.g. a simple cycle reservoir):
     each cycle of length L of its permutation, with weight product p, contributes the L-th
     roots of p, so ``rho = max |p|^(1/L)``: exact;
  3. a tridiagonal matrix with ``W[i+1, i] W[i, i+1] >= 0`` (e.g. the delay line with
     feedback) is similar to the symmetric tridiagonal matrix with off-diagonal
     ``sqrt(W[i+1, i] W[i, i+1])``, whose eigenvalues LAPACK's ``stemr`` computes
     (``scipy.linalg.eigvalsh_tridiagonal``);
  4. otherwise a choice between two methods, made by a cost model (below), not by a size:

     * ``"dense"``: all eigenvalues by ``torch.linalg.eigvals`` (LAPACK ``geev`` without
       eigenvectors: Hessenberg reduction and the implicit double-shift QR algorithm, about
       ``10 n^3`` flops, Golub & Van Loan, *Matrix Computations*, 4th ed., sec. 7.5.6), exact to
       round-off;
     * ``"arnoldi"``: the implicitly restarted Arnoldi method of ARPACK (Lehoucq, Sorensen &
       Yang 1998; ``scipy.sparse.linalg.eigs``) for the ``k = 6`` eigenvalues of largest
       modulus, with a Krylov subspace of ``ncv = 64`` vectors, a seeded start vector
       (reproducible) and the stopping test ``||W x - theta x|| <= tol |theta|`` on each Ritz
       pair, ``tol = 1e-10``. By the first-order perturbation bound the error of a simple
       eigenvalue is then at most about ``kappa(lambda) tol |lambda|``, where
       ``kappa = ||x|| ||y|| / |y^H x|`` is its condition number (x, y its right and left
       eigenvectors; Wilkinson 1965). The cost is ``M`` products ``W v`` (``2 nnz`` flops each)
       plus the orthogonalisation of the basis (``O(n ncv)`` per product).

     Why ``k = 6`` and not one eigenvalue: the eigenvalues of a random reservoir crowd the edge
     of its spectrum (circular law), so the wanted eigenvalue has close neighbours; with
     ``k = 1`` (and with ARPACK's default 20 vectors) the restarts can filter it out and the
     method converges to the second- or third-largest modulus (errors of 1e-4 to 1e-2 were
     measured), and a complex conjugate pair of largest modulus (the usual case) can stall it
     for tens of thousands of products. Keeping six wanted Ritz values in 64 vectors gave the
     dense result in every one of the matrices measured (the count and the errors are in
     ``docs/reservoir.md``; ``benchmarks/bench_spectral_radius.py`` re-measures them).

     The cost model: the dense time is predicted as ``c_3 n^3 + c_2 n^2``, one Arnoldi product as
     ``c_nnz nnz + c_v n ncv + c_0``, and a typical Arnoldi run needs ``M(n) = m n^p``
     products (constants fitted to measurements on one thread, ``_COST_*`` below). Arnoldi is
     used when the dense time buys at least ``2 M(n)`` products (the longest runs measured
     took twice the median), and it may run for at most as many products as the dense time
     buys: if it has not converged by then, the dense method finishes the job. So the choice
     affects the time, never more than the stated tolerance of the result, and the worst case
     costs about twice the dense method. ``method="dense"`` or ``"arnoldi"`` forces one.
     Arnoldi is unreliable when many eigenvalues share the largest modulus (a simple cycle:
     no convergence; a delay line with feedback: a wrong eigenvalue), which is why the exact
     structural cases 1-3 come first.

  Computed results (cases 4) are cached by a digest of the matrix (its CSR arrays) and the
  method's parameters, so a grid search that rebuilds the same reservoir many times pays once
  (:func:`clear_spectral_radius_cache` empties it).
* ``largest_singular_value``: ``torch.linalg.matrix_norm(ord=2)`` below ``exact_max_size``,
  above it ARPACK Lanczos on ``W^T W`` (``scipy.sparse.linalg.svds``, ``k=1``).

scipy is imported only where it is used (the structural test and the iterative methods).

(Over 500 lines: the spectral radius's exact structured cases, its dense and Arnoldi paths, the
cost model that picks between them and the cache are one computation; the scaling and norms beside
it use all of them.)
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from rnnlab._validation import check_choice, check_int, check_number

MatrixLike = Any  # torch.Tensor (dense or sparse) | numpy.ndarray | scipy.sparse matrix

DEFAULT_EXACT_MAX_SIZE = 1024  # largest_singular_value: dense up to this many rows
DEFAULT_NCV = 40  # largest_singular_value's Lanczos subspace
DEFAULT_MAXITER = 500
METHODS = ("auto", "dense", "arnoldi")

# spectral_radius's Arnoldi method (see the module docstring for why these values).
ARNOLDI_TOL = 1e-10
ARNOLDI_NEV = 6
ARNOLDI_NCV = 64
ARNOLDI_MAXITER = 500  # restarts, when method="arnoldi" is forced

# The cost model that picks "dense" or "arnoldi" (seconds, one thread), fitted by
# benchmarks/bench_spectral_radius.py --calibrate and rounded (its output and the machine are in
# docs/reservoir.md). Only the ratios matter, and a wrong ratio costs time, never accuracy.
_COST_DENSE_N3 = 1.7e-10  # torch.linalg.eigvals: c3 n^3 + c2 n^2
_COST_DENSE_N2 = 2.9e-7
_COST_MV_NNZ = 7e-10  # one Arnoldi product: per stored non-zero ...
_COST_MV_BASIS = 5e-10  # ... per n * ncv (orthogonalisation, restarts) ...
_COST_MV_FIXED = 4e-5  # ... and per product (ARPACK's reverse-communication loop in Python)
_TYPICAL_MV_COEF = 2.45  # median products of a converged run: M(n) = coef * n^exp
_TYPICAL_MV_EXP = 0.83
_LONGEST_RUN = 2.0  # longest / median products measured


# ------------------------------------------------------------------------------------------------
# Conversions
def _is_scipy_sparse(w: object) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency of the reservoir tools
        return False
    return sp.issparse(w)


def _check_square(w: MatrixLike, name: str = "W") -> tuple[int, int]:
    if isinstance(w, torch.Tensor) or isinstance(w, np.ndarray) or _is_scipy_sparse(w):
        shape = tuple(w.shape)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor, numpy.ndarray or scipy.sparse matrix, "
            f"got {type(w).__name__}"
        )
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {shape}")
    if shape[0] != shape[1]:
        raise ValueError(f"{name} must be square, got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {shape})")
    return shape  # type: ignore[return-value]


def _values(w: MatrixLike) -> np.ndarray | torch.Tensor:
    """The stored values (for the finiteness check) without densifying."""
    if isinstance(w, torch.Tensor):
        if w.layout == torch.sparse_csr:
            return w.values()
        if w.layout == torch.sparse_coo:
            return w.coalesce().values()
        return w
    if isinstance(w, np.ndarray):
        return w
    return w.tocoo().data


def _check_matrix(w: MatrixLike, name: str = "W") -> int:
    n = _check_square(w, name)[0]
    vals = _values(w)
    if isinstance(vals, torch.Tensor):
        if vals.is_complex() or not (vals.is_floating_point() or vals.dtype in (
                torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)):
            raise TypeError(f"{name} must be real, got dtype {vals.dtype}")
        finite = bool(torch.isfinite(vals.double()).all()) if vals.numel() else True
    else:
        if np.iscomplexobj(vals):
            raise TypeError(f"{name} must be real, got dtype {vals.dtype}")
        finite = bool(np.isfinite(np.asarray(vals, dtype=np.float64)).all())
    if not finite:
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return n


def _to_dense_torch(w: MatrixLike) -> torch.Tensor:
    """float64 dense torch tensor on the CPU."""
    if isinstance(w, torch.Tensor):
        if w.layout != torch.strided:
            w = w.to_dense()
        return w.detach().to(device="cpu", dtype=torch.float64)
    if isinstance(w, np.ndarray):
        return torch.from_numpy(np.asarray(w, dtype=np.float64))
    return torch.from_numpy(w.toarray().astype(np.float64))


def _to_scipy_csr(w: MatrixLike):
    """A new float64 scipy CSR matrix (no dense intermediate for sparse inputs), sharing no
    memory with ``w`` (callers may modify it)."""
    return _to_scipy_csr_view(w).copy()


def _to_scipy_csr_view(w: MatrixLike):
    import scipy.sparse as sp

    if _is_scipy_sparse(w):
        return sp.csr_matrix(w, dtype=np.float64)
    if isinstance(w, np.ndarray):
        return sp.csr_matrix(np.asarray(w, dtype=np.float64))
    w = w.detach().cpu()
    if w.layout == torch.sparse_csr:
        return sp.csr_matrix(
            (w.values().double().numpy(), w.col_indices().numpy(), w.crow_indices().numpy()),
            shape=tuple(w.shape),
        )
    if w.layout == torch.sparse_coo:
        w = w.coalesce()
        idx = w.indices().numpy()
        return sp.csr_matrix((w.values().double().numpy(), (idx[0], idx[1])), shape=tuple(w.shape))
    return sp.csr_matrix(w.double().numpy())


def _start_vector(n: int, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen, dtype=torch.float64).numpy()


def _structural_diagonal_radius(csr) -> float | None:
    """max |W_ii| if the graph of W has no cycle through two or more nodes, else ``None``.

    Such a W is permutation-similar to a triangular matrix (order the nodes topologically), so
    its eigenvalues are exactly its diagonal entries.
    """
    from scipy.sparse.csgraph import connected_components

    n = csr.shape[0]
    n_comp, _ = connected_components(csr, directed=True, connection="strong")
    if n_comp < n:
        return None
    diag = csr.diagonal()
    return float(np.abs(diag).max()) if diag.size else 0.0


def _monomial_radius(csr) -> float | None:
    """Exact rho of a matrix with one non-zero per row and per column, else ``None``."""
    n = csr.shape[0]
    if csr.nnz != n:
        return None
    rows = np.diff(csr.indptr)
    if not (rows == 1).all():
        return None
    cols = csr.indices  # the column of row i's only entry
    if np.unique(cols).size != n:
        return None
    vals = np.abs(csr.data)
    # Row i's entry W[i, cols[i]] maps node cols[i] -> i; follow the permutation's cycles and
    # take the geometric mean of the weights on each (in logs, to avoid overflow).
    seen = np.zeros(n, dtype=bool)
    best = 0.0
    for start in range(n):
        if seen[start]:
            continue
        i, log_sum, length = start, 0.0, 0
        while not seen[i]:
            seen[i] = True
            log_sum += np.log(vals[i])
            length += 1
            i = cols[i]
        best = max(best, float(np.exp(log_sum / length)))
    return best


def _tridiagonal_radius(csr) -> float | None:
    """Exact (LAPACK) rho of a tridiagonal W with W[i+1, i] W[i, i+1] >= 0, else ``None``."""
    n = csr.shape[0]
    if n < 3:
        return None
    coo = csr.tocoo()
    if coo.nnz and np.abs(coo.row - coo.col).max() > 1:
        return None
    from scipy.linalg import eigvalsh_tridiagonal

    diag = csr.diagonal()
    low = csr.diagonal(-1)
    up = csr.diagonal(1)
    prod = low * up
    if (prod < 0).any():
        return None
    evals = eigvalsh_tridiagonal(diag, np.sqrt(prod))
    return float(np.abs(evals).max())


def _check_size_args(exact_max_size: int, ncv: int) -> None:
    check_int("exact_max_size", exact_max_size, low=0)
    check_int("ncv", ncv, low=3)


def _check_radius_args(method: str, tol: float, ncv: int, maxiter: int | None) -> None:
    check_choice("method", method, METHODS)
    check_number("tol", tol, low=0.0, high=1.0, high_open=True)
    # ARNOLDI_NEV wanted Ritz values plus two
    check_int("ncv", ncv, low=ARNOLDI_NEV + 2)
    if maxiter is not None:
        check_int("maxiter", maxiter, low=1)


def arnoldi_budget(n: int, nnz: int, ncv: int = ARNOLDI_NCV) -> int:
    """Products ``W v`` that cost as much as the dense method, by the measured cost model, or 0
    where the dense method is predicted to be the cheaper one (see the module docstring).

    ``t_dense = c_3 n^3 + c_2 n^2``; one product ``t_mv = c_nnz nnz + c_v n ncv + c_0``; the budget
    ``B = t_dense / t_mv`` is used when ``B >= 2 M(n)`` (``M(n) = m n^p``, the median number
    of products of a converged run), else 0.
    """
    ncv = min(ncv, n)
    t_dense = _COST_DENSE_N3 * float(n) ** 3 + _COST_DENSE_N2 * float(n) ** 2
    t_mv = _COST_MV_NNZ * nnz + _COST_MV_BASIS * n * ncv + _COST_MV_FIXED
    budget = t_dense / t_mv
    typical = _TYPICAL_MV_COEF * float(n) ** _TYPICAL_MV_EXP
    if n < ARNOLDI_NEV + 3 or budget < _LONGEST_RUN * typical:
        return 0
    return int(budget)


def _dense_radius(W: MatrixLike) -> float:
    return float(torch.linalg.eigvals(_to_dense_torch(W)).abs().max())


def _arnoldi_radius(csr, tol: float, ncv: int, maxiter: int, seed: int) -> float:
    """rho from ARPACK's ``ARNOLDI_NEV`` eigenvalues of largest modulus; raises ARPACK's
    errors (``ArpackNoConvergence``) for the caller to handle."""
    from scipy.sparse.linalg import eigs

    n = csr.shape[0]
    vals = eigs(csr, k=ARNOLDI_NEV, which="LM", ncv=min(ncv, n), tol=tol,
                v0=_start_vector(n, seed), maxiter=maxiter, return_eigenvectors=False)
    return float(np.abs(vals).max())


# Computed radii by a digest of (matrix, method, parameters); a few dozen floats.
_CACHE_SIZE = 64
_cache: OrderedDict[bytes, float] = OrderedDict()
_cache_lock = threading.Lock()


def _digest(csr, params: tuple) -> bytes:
    """blake2b of the canonical CSR arrays (sorted, no duplicates, int64 indices: the same
    matrix gives the same digest whatever its input type) and the parameters."""
    if not csr.has_canonical_format:
        csr.sum_duplicates()
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((csr.shape, params)).encode())
    for arr in (csr.indptr.astype(np.int64, copy=False), csr.indices.astype(np.int64, copy=False),
                csr.data.astype(np.float64, copy=False)):
        h.update(np.ascontiguousarray(arr).view(np.uint8))
    return h.digest()


def clear_spectral_radius_cache() -> None:
    """Forget the radii :func:`spectral_radius` has cached (e.g. before timing it)."""
    with _cache_lock:
        _cache.clear()


# ------------------------------------------------------------------------------------------------
def spectral_radius(
    W: MatrixLike,
    *,
    method: str = "auto",
    tol: float = ARNOLDI_TOL,
    ncv: int = ARNOLDI_NCV,
    maxiter: int | None = None,
    seed: int = 0,
) -> float:
    """``rho(W) = max_i |lambda_i(W)|`` of a square real matrix, as a Python float.

    Args:
        W: dense or sparse (torch, numpy or scipy) square matrix.
        method: ``"auto"`` (exact structural cases, then dense or Arnoldi by the measured cost
            model), ``"dense"`` (all eigenvalues) or ``"arnoldi"`` (ARPACK); see the module
            docstring. The structural cases are tried first whatever the method; matrices of
            fewer than ``ARNOLDI_NEV + 3`` (9) rows always use the dense method.
        tol: Arnoldi's relative residual tolerance (``0``: machine precision); the result's
            relative error is at most about ``kappa(lambda_max) tol``.
        ncv: Krylov subspace size for Arnoldi (``scipy.sparse.linalg.eigs(ncv=...)``).
        maxiter: Arnoldi's restart limit; ``None``: the cost model's budget (``"auto"``) or
            ``ARNOLDI_MAXITER`` (``"arnoldi"``). If Arnoldi does not converge, the dense method
            gives the result (with a ``RuntimeWarning`` only when Arnoldi was forced).
        seed: seed of Arnoldi's start vector (same seed, same result).
    """
    n = _check_matrix(W)
    _check_radius_args(method, tol, ncv, maxiter)
    csr = _to_scipy_csr(W)
    csr.eliminate_zeros()
    for special in (_structural_diagonal_radius, _monomial_radius, _tridiagonal_radius):
        exact = special(csr)
        if exact is not None:
            return exact
    use_arnoldi, restarts = False, 0
    if n >= ARNOLDI_NEV + 3 and method != "dense":
        ncv_eff = min(ncv, n)
        if method == "arnoldi":
            use_arnoldi = True
            restarts = ARNOLDI_MAXITER if maxiter is None else maxiter
        else:
            budget = arnoldi_budget(n, csr.nnz, ncv)
            use_arnoldi = budget > 0
            # ARPACK's first iteration builds ncv vectors, each restart ncv - k more.
            restarts = maxiter if maxiter is not None else \
                max(1, math.ceil((budget - ncv_eff) / (ncv_eff - ARNOLDI_NEV)))
    key = _digest(csr, ("arnoldi", tol, ncv, restarts, seed) if use_arnoldi else ("dense",))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    if use_arnoldi:
        from scipy.sparse.linalg import ArpackError, ArpackNoConvergence

        try:
            rho = _arnoldi_radius(csr, tol, ncv, restarts, seed)
        except (ArpackNoConvergence, ArpackError) as err:
            if method == "arnoldi":
                warnings.warn(f"ARPACK failed ({err}); computing all eigenvalues densely",
                              RuntimeWarning, stacklevel=2)
            rho = _dense_radius(W)
    else:
        rho = _dense_radius(W)
    with _cache_lock:
        _cache[key] = rho
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return rho


def _rescale(W: MatrixLike, factor: float) -> MatrixLike:
    """``factor * W`` in W's own type, layout, dtype and device."""
    return W * factor


def scale_to_spectral_radius(W: MatrixLike, rho: float, **kwargs: Any) -> MatrixLike:
    """``W * rho / rho(W)``: the same matrix scaled to spectral radius ``rho``.

    The result has W's type (torch dense/sparse, numpy, scipy), dtype and device. Raises
    ``ValueError`` if ``rho <= 0`` or if all eigenvalues of W are zero (a nilpotent W such as a
    delay line, whose spectral radius no scaling can change). ``kwargs`` go to
    :func:`spectral_radius`.
    """
    rho = check_number("rho", rho, low=0.0, low_open=True)
    _check_matrix(W)
    current = spectral_radius(W, **kwargs)
    scale = _max_abs(W)
    # Below this, a computed eigenvalue cannot be told apart from the round-off of a nilpotent
    # matrix's eigenvalues (documented; the structural test returns an exact 0 for delay lines).
    if current == 0.0 or current <= 1e-12 * scale:
        raise ValueError(
            f"all eigenvalues are zero: cannot scale W to spectral radius {rho} "
            f"(spectral radius {current:.3g}; a delay line is nilpotent: set its weight directly)"
        )
    return _rescale(W, rho / current)


def _max_abs(W: MatrixLike) -> float:
    vals = _values(W)
    if isinstance(vals, torch.Tensor):
        return float(vals.detach().double().abs().max()) if vals.numel() else 0.0
    vals = np.asarray(vals, dtype=np.float64)
    return float(np.abs(vals).max()) if vals.size else 0.0


def _leaky_jacobian(W: MatrixLike, leak: float) -> MatrixLike:
    """``(1 - a) I + a W`` as a scipy CSR (sparse inputs) or a dense float64 torch tensor."""
    n = W.shape[0]
    if _is_scipy_sparse(W) or (isinstance(W, torch.Tensor) and W.layout != torch.strided):
        import scipy.sparse as sp

        return (leak * _to_scipy_csr(W) + (1.0 - leak) * sp.identity(n, format="csr")).tocsr()
    return leak * _to_dense_torch(W) + (1.0 - leak) * torch.eye(n, dtype=torch.float64)


def effective_spectral_radius(W: MatrixLike, leak: float, **kwargs: Any) -> float:
    """``rho((1 - a) I + a W)``: spectral radius of the leaky update's linear part.

    Jaeger, Lukosevicius, Popovici & Siewert (2007), "Optimization and applications of echo
    state networks with leaky-integrator neurons", Neural Networks 20(3): the Jacobian of
    ``x(t) = (1 - a) x(t-1) + a tanh(W x(t-1) + ...)`` at the origin. Its eigenvalues are
    ``1 - a + a lambda_i(W)``; ``leak = 1`` gives ``rho(W)``. ``kwargs`` go to
    :func:`spectral_radius`.
    """
    _check_matrix(W)
    leak = check_number("leak", leak, low=0.0, high=1.0, low_open=True)
    return spectral_radius(_leaky_jacobian(W, leak), **kwargs)


def scale_to_effective_spectral_radius(W: MatrixLike, rho: float, leak: float) -> MatrixLike:
    """``s W`` with ``rho((1 - a) I + a s W) = rho``, for the leaky update.

    ``f(s) = max_i |1 - a + a s lambda_i(W)|`` is convex in ``s`` (a maximum of convex
    functions), equals ``1 - a`` at ``s = 0`` and grows without bound, so for ``rho > 1 - a``
    there is exactly one ``s > 0`` with ``f(s) = rho``; it is found by bisection on the
    eigenvalues of W (all of them, computed once, densely: O(n^3)). Raises ``ValueError`` if
    ``rho <= 1 - a`` (not reachable by scaling up from zero) or if W is nilpotent.
    """
    rho = check_number("rho", rho, low=0.0, low_open=True)
    _check_matrix(W)
    leak = check_number("leak", leak, low=0.0, high=1.0, low_open=True)
    if rho <= 1.0 - leak:
        raise ValueError(
            f"effective spectral radius {rho} is not above 1 - leak = {1.0 - leak}: "
            f"(1 - a) I + a s W cannot reach it by scaling W"
        )
    lam = torch.linalg.eigvals(_to_dense_torch(W))
    scale = _max_abs(W)
    if float(lam.abs().max()) <= 1e-12 * scale:
        raise ValueError("all eigenvalues are zero: cannot scale W to an effective spectral "
                         f"radius {rho} (a delay line is nilpotent: set its weight directly)")

    def f(s: float) -> float:
        return float(((1.0 - leak) + leak * s * lam).abs().max())

    lo, hi = 0.0, 1.0
    while f(hi) < rho:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) < rho:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return _rescale(W, 0.5 * (lo + hi))


def largest_singular_value(
    W: MatrixLike,
    *,
    exact_max_size: int = DEFAULT_EXACT_MAX_SIZE,
    ncv: int = DEFAULT_NCV,
    maxiter: int = DEFAULT_MAXITER,
    seed: int = 0,
) -> float:
    """``||W||_2 = sigma_max(W)``. ``sigma_max < 1`` is sufficient for the echo state property
    of tanh reservoirs (Jaeger 2001, GMD Report 148, Proposition 3)."""
    n = _check_matrix(W)
    _check_size_args(exact_max_size, ncv)
    if n <= exact_max_size or n < 3:
        return float(torch.linalg.matrix_norm(_to_dense_torch(W), ord=2))
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, svds

    csr = _to_scipy_csr(W)
    if csr.nnz == 0:
        return 0.0
    try:
        s = svds(csr, k=1, which="LM", ncv=min(ncv, n), v0=_start_vector(n, seed),
                 maxiter=maxiter, return_singular_vectors=False, solver="arpack")
        return float(np.max(s))
    except (ArpackNoConvergence, ArpackError) as err:
        warnings.warn(f"ARPACK failed ({err}); computing the 2-norm densely",
                      RuntimeWarning, stacklevel=2)
        return float(torch.linalg.matrix_norm(_to_dense_torch(W), ord=2))


def power_norms(W: MatrixLike, k_max: int, ord: int | str = 2) -> torch.Tensor:
    """``||W^k||`` for ``k = 0, ..., k_max`` as a float64 tensor of length ``k_max + 1``.

    ``ord`` is ``2`` (spectral norm) or ``"fro"`` (Frobenius). Computed densely in float64 by
    repeated multiplication (sparse inputs are densified). By Gelfand's formula
    ``||W^k||^(1/k) -> rho(W)``; a non-normal W can have ``||W^k|| > 1`` for small k even when
    ``rho(W) < 1`` (transient amplification).
    """
    _check_matrix(W)
    check_int("k_max", k_max, low=0)
    if ord not in (2, "fro"):
        raise ValueError(f"ord must be 2 or 'fro', got {ord!r}")
    w = _to_dense_torch(W)
    p = torch.eye(w.shape[0], dtype=torch.float64)
    out = torch.empty(k_max + 1, dtype=torch.float64)
    for k in range(k_max + 1):
        out[k] = torch.linalg.matrix_norm(p, ord=ord)
        if k < k_max:
            p = p @ w
    return out
