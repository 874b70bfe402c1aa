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
  4. otherwise, up to ``exact_max_size`` rows, all eigenvalues by ``torch.linalg.eigvals``
     (LAPACK ``geev``, O(n^3): 0.2 s at n = 500, about 1.5 s at n = 1000 on one thread here);
  5. above it, the implicitly restarted Arnoldi method of ARPACK
     (``scipy.sparse.linalg.eigs``, ``k=1``, ``which='LM'``) with a Krylov subspace of ``ncv``
     vectors and a seeded start vector (reproducible). ARPACK only guarantees that the Ritz value
     it returns is an eigenvalue: with the default 20-vector subspace it returned the
     second-largest modulus (8.236 for 8.272) of a 2000 x 2000 random sparse matrix, whose
     largest eigenvalues crowd at the edge of the circular law, so the subspace here has 40
     vectors (correct for that matrix from six start vectors). It is unreliable when many
     eigenvalues share the largest modulus (a simple cycle: no convergence; a delay line with
     feedback: a wrong eigenvalue, 3% low at n = 600), which is why cases 2 and 3 come first.
     If ARPACK does not converge within ``maxiter`` restarts, the dense method is used, with a
     warning.
* ``largest_singular_value``: ``torch.linalg.matrix_norm(ord=2)`` below ``exact_max_size``,
  above it ARPACK Lanczos on ``W^T W`` (``scipy.sparse.linalg.svds``, ``k=1``).

scipy is imported only where it is used (the structural test and the iterative methods).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

MatrixLike = Any  # torch.Tensor (dense or sparse) | numpy.ndarray | scipy.sparse matrix

DEFAULT_EXACT_MAX_SIZE = 1024
DEFAULT_NCV = 40
DEFAULT_MAXITER = 500


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
    if isinstance(exact_max_size, bool) or not isinstance(exact_max_size, int) \
            or exact_max_size < 0:
        raise ValueError(f"exact_max_size must be an int >= 0, got {exact_max_size!r}")
    if isinstance(ncv, bool) or not isinstance(ncv, int) or ncv < 3:
        raise ValueError(f"ncv must be an int >= 3, got {ncv!r}")


# ------------------------------------------------------------------------------------------------
def spectral_radius(
    W: MatrixLike,
    *,
    exact_max_size: int = DEFAULT_EXACT_MAX_SIZE,
    ncv: int = DEFAULT_NCV,
    maxiter: int = DEFAULT_MAXITER,
    seed: int = 0,
) -> float:
    """``rho(W) = max_i |lambda_i(W)|`` of a square real matrix, as a Python float.

    Args:
        W: dense or sparse (torch, numpy or scipy) square matrix.
        exact_max_size: matrices with at most this many rows get all eigenvalues from
            ``torch.linalg.eigvals``; larger ones use ARPACK (see the module docstring).
        ncv: Krylov subspace size for ARPACK (``scipy.sparse.linalg.eigs(ncv=...)``).
        maxiter: ARPACK's restart limit (300 sufficed for a 2000 x 2000 random reservoir).
        seed: seed of ARPACK's start vector (same seed, same result).
    """
    n = _check_matrix(W)
    _check_size_args(exact_max_size, ncv)
    csr = _to_scipy_csr(W)
    csr.eliminate_zeros()
    for special in (_structural_diagonal_radius, _monomial_radius, _tridiagonal_radius):
        exact = special(csr)
        if exact is not None:
            return exact
    if n <= exact_max_size or n < 3:
        return float(torch.linalg.eigvals(_to_dense_torch(W)).abs().max())
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigs

    try:
        vals = eigs(csr, k=1, which="LM", ncv=min(ncv, n), v0=_start_vector(n, seed),
                    maxiter=maxiter, return_eigenvectors=False)
        return float(np.abs(vals).max())
    except (ArpackNoConvergence, ArpackError) as err:
        warnings.warn(f"ARPACK failed ({err}); computing all eigenvalues densely",
                      RuntimeWarning, stacklevel=2)
        return float(torch.linalg.eigvals(_to_dense_torch(W)).abs().max())


def _rescale(W: MatrixLike, factor: float) -> MatrixLike:
    """``factor * W`` in W's own type, layout, dtype and device."""
    return W * factor


def _check_target(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def scale_to_spectral_radius(W: MatrixLike, rho: float, **kwargs: Any) -> MatrixLike:
    """``W * rho / rho(W)``: the same matrix scaled to spectral radius ``rho``.

    The result has W's type (torch dense/sparse, numpy, scipy), dtype and device. Raises
    ``ValueError`` if ``rho <= 0`` or if all eigenvalues of W are zero (a nilpotent W such as a
    delay line, whose spectral radius no scaling can change). ``kwargs`` go to
    :func:`spectral_radius`.
    """
    rho = _check_target("rho", rho)
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


def _check_leak(leak: float) -> float:
    if isinstance(leak, bool) or not isinstance(leak, (int, float)):
        raise TypeError(f"leak must be a number, got {type(leak).__name__}")
    leak = float(leak)
    if not (0.0 < leak <= 1.0):
        raise ValueError(f"leak must be in (0, 1], got {leak}")
    return leak


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
    leak = _check_leak(leak)
    return spectral_radius(_leaky_jacobian(W, leak), **kwargs)


def scale_to_effective_spectral_radius(W: MatrixLike, rho: float, leak: float) -> MatrixLike:
    """``s W`` with ``rho((1 - a) I + a s W) = rho``, for the leaky update.

    ``f(s) = max_i |1 - a + a s lambda_i(W)|`` is convex in ``s`` (a maximum of convex
    functions), equals ``1 - a`` at ``s = 0`` and grows without bound, so for ``rho > 1 - a``
    there is exactly one ``s > 0`` with ``f(s) = rho``; it is found by bisection on the
    eigenvalues of W (all of them, computed once, densely: O(n^3)). Raises ``ValueError`` if
    ``rho <= 1 - a`` (not reachable by scaling up from zero) or if W is nilpotent.
    """
    rho = _check_target("rho", rho)
    _check_matrix(W)
    leak = _check_leak(leak)
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
    if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 0:
        raise ValueError(f"k_max must be an int >= 0, got {k_max!r}")
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
