"""Spectral tools against numpy (eigvals, norm, matrix_power) and closed forms.

Tolerances (no float is compared bit for bit across two computations):

* two backward-stable dense eigenvalue solvers (torch's and numpy's LAPACK ``geev``, possibly
  different builds) each return the eigenvalues of ``W + E`` with ``||E||_F <= p(n) u ||W||_F``;
  taking ``p(n) = n`` (Golub & Van Loan, Matrix Computations, 4th ed., 7.5.6), a simple eigenvalue
  moves by at most ``kappa ||E||`` to first order (Wilkinson), so the two spectral radii differ
  by at most ``2 kappa n u ||W||_F`` (:func:`_dense_tol`); ``kappa = ||x|| ||y|| / |y^H x|``
  of the eigenvalue of largest modulus is measured by inverse iteration (:func:`_top_eigen`);
* the Arnoldi method stops when the Ritz pair's residual is at most ``tol |theta|``, which
  makes ``theta`` an exact eigenvalue of ``W - r x^H`` with ``||r x^H|| <= tol |theta|``, so it is
  within ``kappa tol`` (relative) of the eigenvalue, plus the dense bound for the reference
  (:func:`_arnoldi_tol`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg as sl
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from rnnlab.analysis import spectral as spectral_module
from rnnlab.analysis.spectral import (
    ARNOLDI_TOL,
    arnoldi_budget,
    clear_spectral_radius_cache,
    effective_spectral_radius,
    largest_singular_value,
    power_norms,
    scale_to_effective_spectral_radius,
    scale_to_spectral_radius,
    spectral_radius,
)
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.topology import sparse_random
from tests.reference import gamma

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

U64 = np.finfo(np.float64).eps / 2  # unit round-off of float64


@pytest.fixture(autouse=True)
def _empty_cache():
    # Every test computes its radii afresh (a cached value would hide the path under test).
    clear_spectral_radius_cache()
    yield
    clear_spectral_radius_cache()


def _random_sparse(n: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1, 1, (n, n))
    w[rng.random((n, n)) >= density] = 0.0
    return w


def _np_rho(w: np.ndarray) -> float:
    return float(np.abs(np.linalg.eigvals(w)).max())


def _top_eigen(w: np.ndarray) -> tuple[float, float]:
    """(rho, kappa) of the eigenvalue of largest modulus, from numpy's eigvals and three steps of
    inverse iteration for its right and left eigenvectors (one LU of W - lambda I)."""
    w = np.asarray(w, dtype=np.float64)
    ev = np.linalg.eigvals(w)
    lam = ev[np.argmax(np.abs(ev))]
    lu = sl.lu_factor(w - lam * np.eye(w.shape[0]))
    x = np.random.default_rng(0).standard_normal(w.shape[0]) + 0j
    y = x.copy()
    for _ in range(3):
        x = sl.lu_solve(lu, x)
        x /= np.linalg.norm(x)
        y = sl.lu_solve(lu, y, trans=2)
        y /= np.linalg.norm(y)
    return float(abs(lam)), float(1.0 / abs(np.vdot(y, x)))


def _dense_tol(w: np.ndarray, rho: float, kappa: float, extra: float = 0.0) -> float:
    """Relative gap allowed between two dense spectral radii of W (see the module docstring);
    ``extra``: an absolute perturbation of W already present (e.g. from forming it)."""
    n = w.shape[0]
    return kappa * (2 * n * U64 * float(np.linalg.norm(w)) + extra) / rho


def _arnoldi_tol(w: np.ndarray, rho: float, kappa: float, extra: float = 0.0) -> float:
    return kappa * ARNOLDI_TOL + _dense_tol(w, rho, kappa, extra)


# ------------------------------------------------------------------------------------------------
# The dense method and the input types
@pytest.mark.parametrize("kind", ["torch", "torch_csr", "torch_coo", "numpy", "scipy"])
def test_spectral_radius_dense_path_all_input_types(kind):
    w = _random_sparse(60, 0.2, 0)
    inputs = {
        "torch": torch.from_numpy(w),
        "torch_csr": torch.from_numpy(w).to_sparse_csr(),
        "torch_coo": torch.from_numpy(w).to_sparse(),
        "numpy": w,
        "scipy": sp.csr_matrix(w),
    }
    rho, kappa = _top_eigen(w)
    assert spectral_radius(inputs[kind], method="dense") == pytest.approx(
        rho, rel=_dense_tol(w, rho, kappa))
    # at 60 rows the cost model picks the dense method
    assert arnoldi_budget(60, int((w != 0).sum())) == 0
    assert spectral_radius(inputs[kind]) == pytest.approx(rho, rel=_dense_tol(w, rho, kappa))


def test_spectral_radius_float32_input_is_computed_in_float64():
    w = _random_sparse(40, 0.3, 1).astype(np.float32)
    w64 = w.astype(np.float64)  # exact: the same matrix
    rho, kappa = _top_eigen(w64)
    assert spectral_radius(torch.from_numpy(w)) == pytest.approx(
        rho, rel=_dense_tol(w64, rho, kappa))


# ------------------------------------------------------------------------------------------------
# The Arnoldi method against numpy's eigvals
def test_spectral_radius_arnoldi_all_input_types_and_seeded():
    w = _random_sparse(400, 0.05, 2)
    rho, kappa = _top_eigen(w)
    tol = _arnoldi_tol(w, rho, kappa)
    for mat in (sp.csr_matrix(w), torch.from_numpy(w).to_sparse_csr(), torch.from_numpy(w)):
        assert spectral_radius(mat, method="arnoldi") == pytest.approx(rho, rel=tol)
    # Reproducible: the start vector is seeded. Same code path, same process and thread count,
    # recomputed (cache emptied): the same floats, so equality is the right test here.
    a = spectral_radius(sp.csr_matrix(w), method="arnoldi", seed=3)
    clear_spectral_radius_cache()
    b = spectral_radius(sp.csr_matrix(w), method="arnoldi", seed=3)
    assert a == b


@pytest.fixture(scope="module")
def reservoir_1025():
    """EchoStateNetwork's W at 1025 units, density 0.1, seed 0 (one above the old size rule's
    1024), with numpy's rho and kappa: computed once for the tests that need it (~1 s)."""
    w = sparse_random(1025, 0.1, seed=0, dtype=torch.float64)
    rho, kappa = _top_eigen(w.numpy())
    return w, rho, kappa


@pytest.mark.parametrize(("n", "density", "seed", "dist"), [
    (800, 0.02, 1, "uniform"), (600, 0.05, 2, "uniform"), (500, 0.1, 3, "normal")])
def test_default_matches_eigvals_on_random_reservoirs(n, density, seed, dist):
    w = sparse_random(n, density, dist, seed=seed, dtype=torch.float64)
    wn = w.numpy()
    rho, kappa = _top_eigen(wn)
    tol = _arnoldi_tol(wn, rho, kappa)
    assert arnoldi_budget(n, int((wn != 0).sum())) > 0  # the default runs Arnoldi here
    assert spectral_radius(w) == pytest.approx(rho, rel=tol)
    assert spectral_radius(sp.csr_matrix(wn), method="arnoldi", seed=5) == pytest.approx(
        rho, rel=tol)


def test_default_at_1025_units_matches_eigvals(reservoir_1025):
    w, rho, kappa = reservoir_1025
    tol = _arnoldi_tol(w.numpy(), rho, kappa)
    assert tol < 1e-8  # kappa ~ 5 here: the 1e-6 that scaling needs, with room to spare
    assert spectral_radius(w) == pytest.approx(rho, rel=tol)


class _CountingEigs:
    """Wraps scipy's ``eigs`` to count the products ``W v`` it asks for."""

    def __init__(self) -> None:
        self.products = 0
        self.calls = 0
        self._eigs = spla.eigs

    def __call__(self, A, *args, **kwargs):
        self.calls += 1
        op = spla.aslinearoperator(A)

        def mv(x):
            self.products += 1
            return op.matvec(x)

        return self._eigs(spla.LinearOperator(op.shape, matvec=mv, dtype=op.dtype),
                          *args, **kwargs)


def test_default_at_1025_units_costs_a_typical_arnoldi_run(reservoir_1025, monkeypatch):
    # Issue 10, item 9: above 1024 rows the old default ran ARPACK for one eigenvalue (k = 1,
    # 40 vectors, tol 0), which crawled through 8572 products W v for this reservoir (its
    # largest eigenvalues are a complex pair crowded by neighbours). The new default must stay
    # within the cost model's allowance for a typical run: 2 M(n) products, M(n) = 2.45 n^0.83
    # (measured medians; 857 products here).
    w, rho, kappa = reservoir_1025
    counter = _CountingEigs()
    monkeypatch.setattr(spla, "eigs", counter)
    got = spectral_radius(w)
    allowance = spectral_module._LONGEST_RUN * spectral_module._TYPICAL_MV_COEF * 1025 ** \
        spectral_module._TYPICAL_MV_EXP
    assert counter.calls == 1 and 0 < counter.products <= allowance
    assert got == pytest.approx(rho, rel=_arnoldi_tol(w.numpy(), rho, kappa))


def test_esn_construction_scales_to_the_target_as_before(reservoir_1025):
    # The old default scaled W by 0.9 / rho with rho from all eigenvalues; the new one must
    # give the same W to the Arnoldi tolerance (and so rho(W) = 0.9 within 1e-6 and better).
    w, rho, kappa = reservoir_1025
    esn = EchoStateNetwork(input_size=1, units=1025, spectral_radius=0.9, density=0.1, seed=0,
                           dtype=torch.float64)
    mask = w != 0
    assert torch.equal(esn.W != 0, mask)  # same draw, same pattern
    tol = _arnoldi_tol(w.numpy(), rho, kappa)
    # esn.W = fl(W * s), s = fl(0.9 / rho_new): the ratio esn.W / W is 0.9 / rho_new within
    # three roundings (s, the product, the division), and rho_new is rho within tol.
    ratio = (esn.W[mask] / w[mask]).numpy()
    np.testing.assert_allclose(ratio, 0.9 / rho, rtol=tol + 3 * U64)
    assert tol + 3 * U64 < 1e-6


def test_auto_falls_back_to_dense_when_arnoldi_runs_out_of_budget(monkeypatch):
    # One restart cannot converge on a 400-unit reservoir: the dense method finishes the job,
    # silently (the result is exact either way).
    w = _random_sparse(400, 0.1, 4)
    assert arnoldi_budget(400, int((w != 0).sum())) > 0
    counter = _CountingEigs()
    monkeypatch.setattr(spla, "eigs", counter)
    rho, kappa = _top_eigen(w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = spectral_radius(w, maxiter=1)
    assert counter.calls == 1
    assert got == pytest.approx(rho, rel=_dense_tol(w, rho, kappa))


# ------------------------------------------------------------------------------------------------
# Matrices with a closed-form radius, whose structure the exact cases cannot see
def _rotation(n: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _formed_gap(q: np.ndarray, b: np.ndarray) -> float:
    """||fl(Q B Q^T) - Q B Q^T||_F: two products, each within 2 gamma_n |.||.| elementwise
    (tests/reference.py: gamma); a bound on the perturbation that forming W adds."""
    g = 2 * gamma(q.shape[0])
    aq, ab = np.abs(q), np.abs(b)
    return float(np.linalg.norm(g * (aq @ ab) @ aq.T + g * aq @ (ab @ aq.T)))


@pytest.mark.parametrize("method", ["dense", "arnoldi", "auto"])
def test_normal_matrix_with_known_radius(method):
    # W = Q B Q^T, B block diagonal: one 2 x 2 block 1.3 * rotation (a complex pair of modulus
    # 1.3, the radius) and the rest of modulus <= 1. W is normal: kappa = 1 for every eigenvalue.
    n, rng = 300, np.random.default_rng(5)
    blocks = [1.3 * np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])]
    for _ in range(n // 2 - 1):
        r, a = rng.uniform(0, 1.0), rng.uniform(0, np.pi)
        blocks.append(r * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]))
    b = sl.block_diag(*blocks)
    q = _rotation(n, 6)
    w = q @ b @ q.T
    tol = (_arnoldi_tol if method != "dense" else _dense_tol)(w, 1.3, 1.0, _formed_gap(q, b))
    assert spectral_radius(w, method=method) == pytest.approx(1.3, rel=tol)


@pytest.mark.parametrize("method", ["dense", "arnoldi"])
def test_similar_to_triangular_with_known_radius(method):
    # W = Q T Q^T, T upper triangular with diagonal d: the eigenvalues are d, rho = 1.1
    # (a negative real one). Non-normal: kappa measured (about 2).
    n, rng = 300, np.random.default_rng(7)
    d = rng.uniform(-0.8, 0.8, n)
    d[7] = -1.1
    t = np.diag(d) + np.triu(rng.standard_normal((n, n)) / np.sqrt(n), 1)
    q = _rotation(n, 8)
    w = q @ t @ q.T
    _, kappa = _top_eigen(w)
    tol = (_arnoldi_tol if method == "arnoldi" else _dense_tol)(w, 1.1, kappa, _formed_gap(q, t))
    assert spectral_radius(w, method=method) == pytest.approx(1.1, rel=tol)


def test_hidden_cycle_forced_arnoldi_warns_and_falls_back_to_dense():
    # A simple cycle (rho = r, all n eigenvalues of modulus r) turned by 2 x 2 rotations
    # B C B^T: sparse, strongly connected, neither monomial nor tridiagonal, so only the
    # general methods see it. Arnoldi cannot single out one of n equal moduli.
    n, r = 200, 0.7
    c = sp.diags([np.full(n - 1, r), [r]], [-1, n - 1], format="csr")
    angles = np.random.default_rng(9).uniform(0, np.pi, n // 2)
    b = sp.block_diag([np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
                       for a in angles], format="csr")
    w = (b @ c @ b.T).tocsr()
    dense = w.toarray()
    tol = _dense_tol(dense, r, 1.0, 8 * gamma(2) * r)  # normal: kappa = 1; 2-term products
    with pytest.warns(RuntimeWarning, match="ARPACK failed"):
        got = spectral_radius(w, method="arnoldi", maxiter=5)
    assert got == pytest.approx(r, rel=tol)
    assert spectral_radius(w) == pytest.approx(r, rel=tol)


@pytest.mark.slow
def test_spectral_radius_2000_sparse_matches_numpy():
    w = _random_sparse(2000, 0.1, 0)
    rho, kappa = _top_eigen(w)
    got = spectral_radius(sp.csr_matrix(w))  # the cost model picks Arnoldi
    assert got == pytest.approx(rho, rel=_arnoldi_tol(w, rho, kappa))
    # svds with tol 0 (machine precision); singular values are perfectly conditioned
    assert largest_singular_value(sp.csr_matrix(w)) == pytest.approx(np.linalg.norm(w, 2),
                                                                     rel=1e-9)


# ------------------------------------------------------------------------------------------------
# The exact structural cases
def test_delay_line_is_exactly_nilpotent_and_cannot_be_scaled():
    n = 500
    w = np.zeros((n, n))
    w[np.arange(1, n), np.arange(n - 1)] = 0.7
    # Every method sees the acyclic structure first: exactly zero (no arithmetic).
    assert spectral_radius(w) == 0.0
    assert spectral_radius(sp.csr_matrix(w), method="arnoldi") == 0.0
    with pytest.raises(ValueError, match="all eigenvalues are zero"):
        scale_to_spectral_radius(torch.from_numpy(w), 0.9)
    # Triangular with a non-zero diagonal: the eigenvalues are the diagonal, returned as stored.
    t = np.triu(_random_sparse(50, 0.5, 4))
    assert spectral_radius(t) == np.abs(np.diag(t)).max()


def test_monomial_matrices_are_exact_and_match_numpy():
    # one non-zero per row and column: a weighted permutation with several cycles
    rng = np.random.default_rng(11)
    n = 300
    perm = rng.permutation(n)
    w = np.zeros((n, n))
    w[np.arange(n), perm] = rng.uniform(-2, 2, n)
    got = spectral_radius(sp.csr_matrix(w), method="arnoldi")
    # exp(mean of L logs): about (L + 2) u relative; numpy's geev on the normal-up-to-diagonal-
    # scaling matrix: the dense bound with kappa measured.
    rho, kappa = _top_eigen(w)
    assert got == pytest.approx(rho, rel=_dense_tol(w, rho, kappa) + (n + 2) * U64)
    # a simple cycle: rho = r exactly, where ARPACK does not converge (all moduli equal)
    cyc = np.zeros((3000, 3000))
    cyc[np.arange(1, 3000), np.arange(2999)] = 0.7
    cyc[0, 2999] = 0.7
    got = spectral_radius(sp.csr_matrix(cyc), method="arnoldi")
    assert got == pytest.approx(0.7, rel=3002 * U64)  # 3000 logs summed, exp, log


@pytest.mark.parametrize("signs", ["same", "mixed"])
def test_tridiagonal_matrices_match_numpy_and_closed_form(signs):
    rng = np.random.default_rng(12)
    n = 200
    low = rng.uniform(0.1, 1, n - 1)
    up = rng.uniform(0.1, 1, n - 1) * (1 if signs == "same" else rng.choice([-1, 1], n - 1))
    w = np.diag(rng.uniform(-0.5, 0.5, n)) + np.diag(low, -1) + np.diag(up, 1)
    rho, kappa = _top_eigen(w)
    # "same": LAPACK stemr on the symmetrised matrix; "mixed": no exact case, the dense method
    got = spectral_radius(sp.csr_matrix(w), method="arnoldi" if signs == "same" else "dense")
    assert got == pytest.approx(rho, rel=_dense_tol(w, rho, kappa))
    # delay line with feedback, 3000 units: rho = 2 sqrt(r b) cos(pi / (n + 1)); stemr's
    # eigenvalues of a symmetric tridiagonal T are within O(n u ||T||), ||T|| ~ rho here
    m, r, b = 3000, 0.5, 0.1
    dlrb = sp.diags([np.full(m - 1, r), np.full(m - 1, b)], [-1, 1], format="csr")
    assert spectral_radius(dlrb) == pytest.approx(2 * np.sqrt(r * b) * np.cos(np.pi / (m + 1)),
                                                  rel=2 * m * U64)


def test_input_matrix_is_not_modified():
    w = sp.csr_matrix(np.array([[0.0, 1.0], [2.0, 0.0]]))
    w.data[0] = 0.0  # an explicit zero that the structural test eliminates on its copy
    nnz = w.nnz
    spectral_radius(w)
    assert w.nnz == nnz


# ------------------------------------------------------------------------------------------------
# The cache
def test_cache_returns_the_computed_value_and_sees_changes(monkeypatch):
    w = sparse_random(400, 0.1, seed=1, dtype=torch.float64)
    counter = _CountingEigs()
    monkeypatch.setattr(spla, "eigs", counter)
    first = spectral_radius(w)
    assert counter.calls == 1
    assert spectral_radius(w.clone()) == first  # same matrix: served from the cache
    assert spectral_radius(w.to_sparse_csr()) == first  # same CSR arrays, other input type
    assert counter.calls == 1
    w[0, 0] += 0.5  # changed in place: a new digest, computed afresh
    spectral_radius(w)
    assert counter.calls == 2
    spectral_radius(w, tol=1e-8)  # other parameters: computed afresh
    assert counter.calls == 3
    clear_spectral_radius_cache()
    spectral_radius(w)
    assert counter.calls == 4


def test_bad_method_arguments_are_rejected():
    w = torch.eye(3)
    with pytest.raises(ValueError, match="method"):
        spectral_radius(w, method="power")
    for tol in (-1e-3, 1.0, float("nan")):
        with pytest.raises(ValueError, match="tol"):
            spectral_radius(w, tol=tol)
    with pytest.raises(ValueError, match="ncv"):
        spectral_radius(w, ncv=7)
    with pytest.raises(ValueError, match="maxiter"):
        spectral_radius(w, maxiter=0)


# ------------------------------------------------------------------------------------------------
# Scaling
@pytest.mark.parametrize("kind", ["torch", "torch_csr", "numpy", "scipy"])
def test_scale_to_spectral_radius_keeps_type_and_hits_target(kind):
    w = _random_sparse(80, 0.1, 5)
    mats = {"torch": torch.from_numpy(w).float(), "torch_csr": torch.from_numpy(w).to_sparse_csr(),
            "numpy": w, "scipy": sp.csr_matrix(w)}
    out = scale_to_spectral_radius(mats[kind], 0.95)
    assert type(out) is type(mats[kind]) or sp.issparse(out)
    if isinstance(out, torch.Tensor):
        assert out.layout == mats[kind].layout and out.dtype == mats[kind].dtype
        dense = out.to_dense() if out.layout != torch.strided else out
        dense = dense.double().numpy()
    else:
        dense = out.toarray() if sp.issparse(out) else out
    # Storage rounds each entry by at most u (of the input's dtype: float32 for "torch"), a
    # perturbation of norm <= u ||W||_F; rho was computed on the float32 values themselves, so
    # only the final rounding of W * s moves the radius: kappa u ||W||_F / rho (first order).
    u = float(np.finfo(np.float32).eps / 2) if kind == "torch" else U64
    base = w.astype(np.float32).astype(np.float64) if kind == "torch" else w
    _, kappa = _top_eigen(base)
    tol = _dense_tol(dense, 0.95, kappa, u * float(np.linalg.norm(dense)))
    assert _np_rho(dense) == pytest.approx(0.95, rel=tol)
    # a pure rescaling of the original: each ratio is s within two roundings
    ratio = dense[w != 0] / base[w != 0]
    np.testing.assert_allclose(ratio, ratio[0], rtol=4 * u)


@pytest.mark.parametrize("rho", [0.0, -1.0, float("nan"), float("inf")])
def test_scale_rejects_bad_target(rho):
    with pytest.raises(ValueError, match="rho"):
        scale_to_spectral_radius(torch.eye(3), rho)


def test_zero_matrix_cannot_be_scaled():
    with pytest.raises(ValueError, match="all eigenvalues are zero"):
        scale_to_spectral_radius(torch.zeros(4, 4), 0.5)


@pytest.mark.parametrize("leak", [1.0, 0.3, 0.05])
def test_effective_spectral_radius_matches_numpy(leak):
    w = _random_sparse(70, 0.2, 6)
    jac = (1 - leak) * np.eye(70) + leak * w
    ref, kappa = _top_eigen(jac)
    assert effective_spectral_radius(torch.from_numpy(w), leak) == pytest.approx(
        ref, rel=_dense_tol(jac, ref, kappa, U64 * float(np.linalg.norm(jac))))
    assert effective_spectral_radius(sp.csr_matrix(w), leak, method="arnoldi") == \
        pytest.approx(ref, rel=_arnoldi_tol(jac, ref, kappa, U64 * float(np.linalg.norm(jac))))
    if leak == 1.0:
        # 0 * I + 1 * w is w exactly, so the leaky Jacobian's radius is w's own. Not bit equal:
        # LAPACK's kernels may take another path for another copy of the same floats (memory
        # alignment), so the two eigvals calls agree to rounding (seen: 2 ulp apart).
        assert ref == pytest.approx(_np_rho(w), rel=_dense_tol(w, ref, kappa))


def test_scale_to_effective_spectral_radius():
    w = _random_sparse(60, 0.2, 7)
    out = scale_to_effective_spectral_radius(torch.from_numpy(w), 0.97, leak=0.4)
    jac = 0.6 * np.eye(60) + 0.4 * out.numpy()
    got, kappa = _top_eigen(jac)
    # bisection to 1e-15 relative on torch's eigenvalues; numpy recomputes them on the scaled
    # matrix (one more rounding of each entry): the dense bound plus the bisection's width
    assert got == pytest.approx(0.97, rel=_dense_tol(jac, 0.97, kappa, 2 * U64 * float(
        np.linalg.norm(jac))) + 1e-15)
    with pytest.raises(ValueError, match="1 - leak"):
        scale_to_effective_spectral_radius(torch.from_numpy(w), 0.5, leak=0.4)
    with pytest.raises(ValueError, match="leak"):
        effective_spectral_radius(torch.from_numpy(w), 0.0)


# ------------------------------------------------------------------------------------------------
# Singular values and powers
def test_largest_singular_value_matches_numpy():
    w = _random_sparse(90, 0.2, 8)
    ref = float(np.linalg.norm(w, 2))
    # singular values are perfectly conditioned: two backward-stable SVDs agree within
    # 2 p(n) u ||W||_F (p(n) = n) in absolute terms
    tol = 2 * 90 * U64 * float(np.linalg.norm(w)) / ref
    assert largest_singular_value(torch.from_numpy(w)) == pytest.approx(ref, rel=tol)
    assert largest_singular_value(sp.csr_matrix(w), exact_max_size=10) == pytest.approx(
        ref, rel=1e-9)  # svds (tol 0) stops on its own residual estimate; 1e-9 is its margin
    # sigma_max >= rho for every matrix (here about twice: far from the boundary)
    assert largest_singular_value(w) >= spectral_radius(w)


@pytest.mark.parametrize("ord_", [2, "fro"])
def test_power_norms_match_numpy_matrix_power(ord_):
    w = _random_sparse(30, 0.3, 9) * 0.5
    got = power_norms(torch.from_numpy(w).to_sparse_csr(), 6, ord=ord_)
    ref = np.array([np.linalg.norm(np.linalg.matrix_power(w, k), ord_) for k in range(7)])
    assert got.dtype == torch.float64 and got.shape == (7,)
    # torch and numpy form W^k with products summed in different orders: |error of W^k| <=
    # 2 k gamma_n |W|^k elementwise (first order, tests/reference.py: gamma), so the norms
    # differ by at most that in norm (plus the norm's own 2 p(n) u relative error, p(n) = n)
    bound = np.array([2 * k * gamma(30) * np.linalg.norm(np.linalg.matrix_power(np.abs(w), k))
                      for k in range(7)])
    np.testing.assert_array_less(np.abs(got.numpy() - ref), bound + 2 * 30 * U64 * ref + 1e-300)
    assert got[0] == pytest.approx(1.0 if ord_ == 2 else np.sqrt(30), rel=2 * 30 * U64)


def test_power_norms_bad_args():
    with pytest.raises(ValueError, match="k_max"):
        power_norms(torch.eye(3), -1)
    with pytest.raises(ValueError, match="ord"):
        power_norms(torch.eye(3), 2, ord=1)


@pytest.mark.parametrize("fn", [spectral_radius, largest_singular_value,
                                lambda w: power_norms(w, 2),
                                lambda w: effective_spectral_radius(w, 0.5)])
def test_bad_matrices_are_rejected(fn):
    with pytest.raises(ValueError, match="square"):
        fn(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="2-D"):
        fn(torch.zeros(3))
    bad = torch.eye(3)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        fn(bad)
    with pytest.raises(TypeError):
        fn([[1.0, 0.0], [0.0, 1.0]])
