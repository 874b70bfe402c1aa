"""Reservoir topologies: exact structure, closed-form spectra, counts, pi's digits, seeds."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch

from rnnlab.analysis.spectral import scale_to_spectral_radius, spectral_radius
from rnnlab.reservoir.topology import (
    delay_line,
    delay_line_feedback,
    dense_uniform_input,
    pi_digits,
    sign_pattern_input,
    simple_cycle,
    sparse_random,
)


def _mpmath_pi_digits(count: int, offset: int = 0) -> list[int]:
    with mpmath.workdps(count + offset + 30):
        text = mpmath.nstr(mpmath.pi, count + offset + 20, strip_zeros=False)
    return [int(c) for c in text.replace(".", "")[offset:offset + count]]


# ------------------------------------------------------------------------------------------------
def test_delay_line_structure():
    w = delay_line(5, 0.3, dtype=torch.float64)
    expected = np.zeros((5, 5))
    for i in range(4):
        expected[i + 1, i] = 0.3
    np.testing.assert_array_equal(w.numpy(), expected)
    assert spectral_radius(w) == 0.0
    with pytest.raises(ValueError, match="all eigenvalues are zero"):
        scale_to_spectral_radius(w, 0.9)


def test_delay_line_feedback_structure_and_spectrum():
    n, r, b = 7, 0.6, 0.15
    w = delay_line_feedback(n, r, b, dtype=torch.float64)
    expected = np.zeros((n, n))
    for i in range(n - 1):
        expected[i + 1, i] = r
        expected[i, i + 1] = b
    np.testing.assert_array_equal(w.numpy(), expected)
    # Tridiagonal Toeplitz: eigenvalues 2 sqrt(r b) cos(k pi / (n + 1)), k = 1..n.
    closed = np.sort(2 * np.sqrt(r * b) * np.cos(np.arange(1, n + 1) * np.pi / (n + 1)))
    got = np.sort(np.linalg.eigvals(w.numpy()).real)
    # geev is backward stable (error <= kappa n u ||W||_F); W = D S D^-1 with S symmetric and
    # D = diag((r/b)^(i/2)), so kappa <= cond(D) = 4^3: bound 64 * 7 * 1.1e-16 * 0.8 = 4e-14.
    np.testing.assert_allclose(got, closed, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 6, 25])
def test_simple_cycle_structure_and_roots_of_unity(n):
    r = 0.8
    w = simple_cycle(n, r, dtype=torch.float64)
    expected = np.zeros((n, n))
    for i in range(n - 1):
        expected[i + 1, i] = r
    expected[0, n - 1] = r
    np.testing.assert_array_equal(w.numpy(), expected)
    eig = np.linalg.eigvals(w.numpy())
    roots = r * np.exp(2j * np.pi * np.arange(n) / n)
    # match every eigenvalue to its closest closed-form root, one to one
    dist = np.abs(eig[:, None] - roots[None, :])
    assert sorted(dist.argmin(1).tolist()) == list(range(n))
    # W is normal (kappa = 1): geev's error <= n u ||W||_F = 25 * 1.1e-16 * 4 = 1.1e-14; the
    # roots are 2(pi/n) r apart, so the matching above is far from ambiguous.
    assert dist.min(1).max() < 1e-10
    # the exact monomial case: exp(log(r) n / n), a few roundings
    assert spectral_radius(w) == pytest.approx(r, rel=1e-12)


def test_deterministic_topologies_csr_layout_and_dtype():
    for w in (delay_line(6, 0.5, layout="csr"), delay_line_feedback(6, 0.5, 0.1, layout="csr"),
              simple_cycle(6, 0.5, layout="csr", dtype=torch.float64)):
        assert w.layout == torch.sparse_csr
    assert simple_cycle(6, 0.5, layout="csr", dtype=torch.float64).dtype == torch.float64
    np.testing.assert_array_equal(simple_cycle(6, 0.5, layout="csr").to_dense().numpy(),
                                  simple_cycle(6, 0.5).numpy())


@pytest.mark.parametrize("bad", [0.0, float("nan"), float("inf")])
def test_deterministic_topologies_reject_bad_weights(bad):
    with pytest.raises(ValueError, match="r"):
        delay_line(4, bad)
    with pytest.raises(ValueError, match="r"):
        simple_cycle(4, bad)
    with pytest.raises((ValueError, TypeError)):
        delay_line(0, 0.5)
    with pytest.raises(ValueError, match="layout"):
        simple_cycle(4, 0.5, layout="coo")


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "density"), [(10, 0.15), (50, 0.1), (200, 0.01), (30, 1.0),
                                            (2100, 0.001)])
def test_sparse_random_exact_count_and_range(n, density):
    w = sparse_random(n, density, seed=1, dtype=torch.float64)
    assert int((w != 0).sum()) == round(density * n * n)
    assert float(w.abs().max()) <= 1.0


def test_sparse_random_uniform_is_symmetric_around_zero_and_normal_has_unit_variance():
    u = sparse_random(300, 0.5, "uniform", seed=2, dtype=torch.float64)
    vals = u[u != 0]
    # Uniform[-1, 1]: mean 0, variance 1/3 (45000 samples: standard errors 0.0027, 0.0013).
    assert abs(float(vals.mean())) < 0.015
    assert float(vals.var()) == pytest.approx(1 / 3, abs=0.01)
    g = sparse_random(300, 0.5, "normal", seed=2, dtype=torch.float64)
    gv = g[g != 0]
    assert abs(float(gv.mean())) < 0.02 and float(gv.var()) == pytest.approx(1.0, abs=0.03)


def test_sparse_random_positions_are_uniform():
    # Over many draws each entry is non-zero with probability = density.
    hits = sum((sparse_random(8, 0.25, seed=s) != 0).double() for s in range(400))
    freq = hits / 400
    assert float((freq - 0.25).abs().max()) < 0.12  # 400 trials: sd 0.022, max over 64 cells


def test_sparse_random_seeds_and_layouts():
    a = sparse_random(40, 0.1, seed=3, dtype=torch.float64)
    b = sparse_random(40, 0.1, seed=3, dtype=torch.float64)
    c = sparse_random(40, 0.1, seed=4, dtype=torch.float64)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(sparse_random(40, 0.1, generator=g, dtype=torch.float64), a)
    # same draw in float32, up to rounding
    assert torch.equal(sparse_random(40, 0.1, seed=3, dtype=torch.float32), a.float())
    csr = sparse_random(40, 0.1, seed=3, dtype=torch.float64, layout="csr")
    assert csr.layout == torch.sparse_csr and torch.equal(csr.to_dense(), a)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan")])
def test_sparse_random_rejects_bad_density(density):
    with pytest.raises(ValueError, match="density"):
        sparse_random(10, density)


def test_sparse_random_rejects_other_bad_args():
    with pytest.raises(ValueError, match="no non-zero"):
        sparse_random(3, 0.01)
    with pytest.raises(ValueError, match="distribution"):
        sparse_random(10, 0.1, "cauchy")


# ------------------------------------------------------------------------------------------------
def test_dense_uniform_input_range_scaling_and_seed():
    w = dense_uniform_input(500, 3, [0.1, 1.0, 2.0], seed=5, dtype=torch.float64)
    assert w.shape == (500, 3)
    for j, s in enumerate([0.1, 1.0, 2.0]):
        col = w[:, j]
        assert float(col.abs().max()) <= s and float(col.abs().max()) > 0.9 * s
    assert torch.equal(w, dense_uniform_input(500, 3, [0.1, 1.0, 2.0], seed=5,
                                              dtype=torch.float64))
    with pytest.raises(ValueError, match="scaling"):
        dense_uniform_input(5, 2, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="scaling"):
        dense_uniform_input(5, 2, -1.0)


def test_pi_digits_match_mpmath():
    assert pi_digits(10).tolist() == [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    assert pi_digits(6000).tolist() == _mpmath_pi_digits(6000)
    assert pi_digits(50, offset=1000).tolist() == _mpmath_pi_digits(50, 1000)


def test_sign_pattern_input_from_pi_digits():
    n, d, v = 30, 3, 0.25
    w = sign_pattern_input(n, d, v, "pi", dtype=torch.float64)
    digits = _mpmath_pi_digits(n * d)
    expected = np.array([v if dig >= 5 else -v for dig in digits]).reshape(d, n).T
    np.testing.assert_array_equal(w.numpy(), expected)
    # starting from the first decimal instead of the leading 3
    w1 = sign_pattern_input(n, 1, v, "pi", digit_offset=1, dtype=torch.float64)
    digits1 = _mpmath_pi_digits(n, 1)
    np.testing.assert_array_equal(w1[:, 0].numpy(), [v if x >= 5 else -v for x in digits1])


def test_sign_pattern_input_random_signs():
    w = sign_pattern_input(400, 2, 0.5, "random", seed=6, dtype=torch.float64)
    assert set(w.unique().tolist()) == {-0.5, 0.5}
    assert abs(float((w > 0).double().mean()) - 0.5) < 0.06  # 800 coins: sd 0.018
    assert torch.equal(w, sign_pattern_input(400, 2, 0.5, "random", seed=6,
                                             dtype=torch.float64))
    assert not torch.equal(w, sign_pattern_input(400, 2, 0.5, "random", seed=7,
                                                 dtype=torch.float64))
    with pytest.raises(ValueError, match="signs"):
        sign_pattern_input(4, 1, 0.5, "e")
    with pytest.raises(ValueError, match="v"):
        sign_pattern_input(4, 1, -0.5)
