"""Spectral tools against numpy (eigvals, norm, matrix_power) and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from rnnlab.analysis.spectral import (
    effective_spectral_radius,
    largest_singular_value,
    power_norms,
    scale_to_effective_spectral_radius,
    scale_to_spectral_radius,
    spectral_radius,
)

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


def _random_sparse(n: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1, 1, (n, n))
    w[rng.random((n, n)) >= density] = 0.0
    return w


def _np_rho(w: np.ndarray) -> float:
    return float(np.abs(np.linalg.eigvals(w)).max())


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
    assert spectral_radius(inputs[kind]) == pytest.approx(_np_rho(w), rel=1e-12)


def test_spectral_radius_float32_input_is_computed_in_float64():
    w = _random_sparse(40, 0.3, 1).astype(np.float32)
    ref = _np_rho(w.astype(np.float64))
    assert spectral_radius(torch.from_numpy(w)) == pytest.approx(ref, rel=1e-12)


def test_spectral_radius_iterative_path_matches_numpy():
    # exact_max_size below n forces ARPACK; numpy's dense eigvals is the reference.
    w = _random_sparse(400, 0.05, 2)
    ref = _np_rho(w)
    for mat in (sp.csr_matrix(w), torch.from_numpy(w).to_sparse_csr(), torch.from_numpy(w)):
        assert spectral_radius(mat, exact_max_size=100) == pytest.approx(ref, rel=1e-9)
    # reproducible: the start vector is seeded
    a = spectral_radius(sp.csr_matrix(w), exact_max_size=100, seed=3)
    b = spectral_radius(sp.csr_matrix(w), exact_max_size=100, seed=3)
    assert a == b


@pytest.mark.slow
def test_spectral_radius_iterative_2000_sparse_matches_numpy():
    w = _random_sparse(2000, 0.1, 0)
    got = spectral_radius(sp.csr_matrix(w))  # 2000 > default exact_max_size: ARPACK
    assert got == pytest.approx(_np_rho(w), rel=1e-9)
    assert largest_singular_value(sp.csr_matrix(w)) == pytest.approx(np.linalg.norm(w, 2),
                                                                     rel=1e-9)


def test_delay_line_is_exactly_nilpotent_and_cannot_be_scaled():
    n = 500
    w = np.zeros((n, n))
    w[np.arange(1, n), np.arange(n - 1)] = 0.7
    # Dense and iterative paths both see the acyclic structure: exactly zero.
    assert spectral_radius(w) == 0.0
    assert spectral_radius(sp.csr_matrix(w), exact_max_size=10) == 0.0
    with pytest.raises(ValueError, match="all eigenvalues are zero"):
        scale_to_spectral_radius(torch.from_numpy(w), 0.9)
    # Triangular with a non-zero diagonal: the eigenvalues are the diagonal.
    t = np.triu(_random_sparse(50, 0.5, 4))
    assert spectral_radius(t) == pytest.approx(np.abs(np.diag(t)).max(), rel=0, abs=0)


def test_monomial_matrices_are_exact_and_match_numpy():
    # one non-zero per row and column: a weighted permutation with several cycles
    rng = np.random.default_rng(11)
    n = 300
    perm = rng.permutation(n)
    w = np.zeros((n, n))
    w[np.arange(n), perm] = rng.uniform(-2, 2, n)
    got = spectral_radius(sp.csr_matrix(w), exact_max_size=0)
    assert got == pytest.approx(_np_rho(w), rel=1e-10)
    # a simple cycle: rho = r exactly, where ARPACK does not converge (all moduli equal)
    cyc = np.zeros((3000, 3000))
    cyc[np.arange(1, 3000), np.arange(2999)] = 0.7
    cyc[0, 2999] = 0.7
    assert spectral_radius(sp.csr_matrix(cyc), exact_max_size=0) == pytest.approx(0.7, rel=1e-13)


@pytest.mark.parametrize("signs", ["same", "mixed"])
def test_tridiagonal_matrices_match_numpy_and_closed_form(signs):
    rng = np.random.default_rng(12)
    n = 200
    low = rng.uniform(0.1, 1, n - 1)
    up = rng.uniform(0.1, 1, n - 1) * (1 if signs == "same" else rng.choice([-1, 1], n - 1))
    w = np.diag(rng.uniform(-0.5, 0.5, n)) + np.diag(low, -1) + np.diag(up, 1)
    assert spectral_radius(sp.csr_matrix(w), exact_max_size=0 if signs == "same" else 1000) == \
        pytest.approx(_np_rho(w), rel=1e-10)
    # delay line with feedback, 3000 units: rho = 2 sqrt(r b) cos(pi / (n + 1))
    m, r, b = 3000, 0.5, 0.1
    dlrb = sp.diags([np.full(m - 1, r), np.full(m - 1, b)], [-1, 1], format="csr")
    assert spectral_radius(dlrb) == pytest.approx(2 * np.sqrt(r * b) * np.cos(np.pi / (m + 1)),
                                                  rel=1e-12)


def test_input_matrix_is_not_modified():
    w = sp.csr_matrix(np.array([[0.0, 1.0], [2.0, 0.0]]))
    w.data[0] = 0.0  # an explicit zero that the structural test eliminates on its copy
    nnz = w.nnz
    spectral_radius(w)
    assert w.nnz == nnz


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
    tol = 1e-6 if kind == "torch" else 1e-12  # float32 storage
    assert _np_rho(dense) == pytest.approx(0.95, rel=tol)
    # a pure rescaling of the original
    ratio = dense[w != 0] / w[w != 0]
    np.testing.assert_allclose(ratio, ratio[0], rtol=tol)


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
    ref = _np_rho((1 - leak) * np.eye(70) + leak * w)
    assert effective_spectral_radius(torch.from_numpy(w), leak) == pytest.approx(ref, rel=1e-12)
    assert effective_spectral_radius(sp.csr_matrix(w), leak, exact_max_size=20) == \
        pytest.approx(ref, rel=1e-9)
    if leak == 1.0:
        assert ref == pytest.approx(_np_rho(w), rel=1e-12)


def test_scale_to_effective_spectral_radius():
    w = _random_sparse(60, 0.2, 7)
    out = scale_to_effective_spectral_radius(torch.from_numpy(w), 0.97, leak=0.4)
    got = _np_rho(0.6 * np.eye(60) + 0.4 * out.numpy())
    assert got == pytest.approx(0.97, rel=1e-10)
    with pytest.raises(ValueError, match="1 - leak"):
        scale_to_effective_spectral_radius(torch.from_numpy(w), 0.5, leak=0.4)
    with pytest.raises(ValueError, match="leak"):
        effective_spectral_radius(torch.from_numpy(w), 0.0)


def test_largest_singular_value_matches_numpy():
    w = _random_sparse(90, 0.2, 8)
    ref = float(np.linalg.norm(w, 2))
    assert largest_singular_value(torch.from_numpy(w)) == pytest.approx(ref, rel=1e-12)
    assert largest_singular_value(sp.csr_matrix(w), exact_max_size=10) == pytest.approx(
        ref, rel=1e-9)
    # sigma_max >= rho for every matrix
    assert largest_singular_value(w) >= spectral_radius(w)


@pytest.mark.parametrize("ord_", [2, "fro"])
def test_power_norms_match_numpy_matrix_power(ord_):
    w = _random_sparse(30, 0.3, 9) * 0.5
    got = power_norms(torch.from_numpy(w).to_sparse_csr(), 6, ord=ord_)
    ref = [np.linalg.norm(np.linalg.matrix_power(w, k), ord_) for k in range(7)]
    assert got.dtype == torch.float64 and got.shape == (7,)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    assert got[0] == pytest.approx(1.0 if ord_ == 2 else np.sqrt(30))


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
