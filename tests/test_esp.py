"""Echo-state-property conditions on matrices of known spectra (against numpy and closed
forms), the Buehner–Young bound, and the empirical contraction test.

Tolerances. A backward-stable eigen- or singular-value solver (LAPACK's, in torch or numpy,
possibly different builds) returns the values of W + E with ||E|| <= n u ||W|| (Golub & Van
Loan, Matrix Computations, 4th ed., 7.5.6 and 8.6): a singular value moves by at most that
(Weyl), a simple eigenvalue by kappa times it (kappa = 1 for the normal matrices here). With
n <= 40 and ||W|| <= 2 that is <= 2e-14 kappa: hence 1e-14 absolute on the 4 x 4 diagonal
matrix, 1e-12 relative on the others (kappa measured below 3 for the random 12 x 12 and the
40-unit ESN matrices here), 1e-10 on an ESN's non-normal W. The contraction ratios are
compared with 1e-8 relative: the states are ~1e-6 (zero input), where tanh's dropped cubic term
is x^2 ~ 1e-12 relative and 80 steps of 20-term sums add ~80 x 20 u ~ 2e-13 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from rnnlab.analysis.esp import diagonally_scaled_norm, esp_check, state_contraction
from rnnlab.reservoir import EchoStateNetwork


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _np_rho(m: np.ndarray) -> float:
    return float(np.abs(np.linalg.eigvals(m)).max())


# ------------------------------------------------------------------------------------------------
def test_diagonal_matrix_closed_form():
    d = np.array([0.5, -0.9, 0.3, 0.95])
    a = 0.4
    rep = esp_check(torch.from_numpy(np.diag(d)), leak=a)
    assert rep.sigma_max == pytest.approx(0.95, abs=1e-14)
    assert rep.spectral_radius == pytest.approx(0.95, abs=1e-14)
    assert rep.effective_spectral_radius == pytest.approx(np.abs(1 - a + a * d).max(), abs=1e-14)
    assert rep.contraction_bound == pytest.approx(1 - a + a * 0.95, abs=1e-14)
    assert rep.sufficient and rep.necessary
    assert "guaranteed" in rep.verdict


@pytest.mark.parametrize("c", [0.7, 1.2])
def test_scaled_orthogonal_against_numpy(c):
    q = c * _orthogonal(30, seed=0)
    a = 0.3
    rep = esp_check(q, leak=a)
    qn = q.numpy()
    assert rep.sigma_max == pytest.approx(c, rel=1e-12)          # all singular values are c
    assert rep.spectral_radius == pytest.approx(c, rel=1e-12)    # all |eigenvalues| are c
    assert rep.effective_spectral_radius == pytest.approx(
        _np_rho((1 - a) * np.eye(30) + a * qn), rel=1e-12)
    assert rep.sufficient == (c < 1)
    assert rep.necessary == (_np_rho((1 - a) * np.eye(30) + a * qn) < 1)
    # The same for a scipy sparse matrix.
    rep_sp = esp_check(sp.csr_matrix(qn), leak=a)
    assert rep_sp.sigma_max == pytest.approx(rep.sigma_max, rel=1e-12)
    assert rep_sp.effective_spectral_radius == pytest.approx(rep.effective_spectral_radius,
                                                             rel=1e-12)


def test_non_normal_matrix_is_undetermined_until_rescaled():
    w = torch.tensor([[0.5, 10.0], [0.0, 0.5]], dtype=torch.float64)
    rep = esp_check(w)
    assert rep.sigma_max == pytest.approx(np.linalg.norm(w.numpy(), 2), rel=1e-12)
    assert rep.sigma_max > 10 and rep.spectral_radius == pytest.approx(0.5)
    assert rep.necessary and not rep.sufficient
    assert "undetermined" in rep.verdict
    # D = diag(1, d) scales the corner to 10 d: the infimum over D is rho = 0.5.
    rep2 = esp_check(w, scaled=True)
    assert rep2.scaled_sigma_max == pytest.approx(0.5, abs=1e-3)
    assert rep2.sufficient
    d = rep2.scaling.numpy()
    assert np.linalg.norm(np.diag(d) @ w.numpy() @ np.diag(1 / d), 2) == pytest.approx(
        rep2.scaled_sigma_max, rel=1e-12)


def test_zero_input_instability_is_reported():
    rep = esp_check(1.1 * _orthogonal(10, seed=1))
    assert not rep.necessary and not rep.sufficient
    assert "no echo state property" in rep.verdict


@pytest.mark.parametrize("n", [8, 40])
def test_diagonally_scaled_norm_recovers_a_hidden_scaling(n):
    # W = D0 M D0^-1 with M = 0.8 Q: sigma_max(W) is large, but D = D0^-1 gives 0.8, which is
    # the infimum (>= rho(W) = 0.8).
    g = torch.Generator().manual_seed(n)
    d0 = torch.exp(1.5 * torch.randn(n, generator=g, dtype=torch.float64))
    w = d0.unsqueeze(1) * (0.8 * _orthogonal(n, seed=n)) / d0.unsqueeze(0)
    assert float(torch.linalg.matrix_norm(w, 2)) > 4
    value, d = diagonally_scaled_norm(w)
    assert value == pytest.approx(0.8, abs=1e-4)
    wn, dn = w.numpy(), d.numpy()
    assert np.linalg.norm(np.diag(dn) @ wn @ np.diag(1 / dn), 2) == pytest.approx(value,
                                                                                  rel=1e-12)


def test_diagonally_scaled_norm_bounds_on_random_matrices():
    rng = np.random.default_rng(0)
    for _ in range(3):
        w = rng.uniform(-1, 1, (15, 15)) * (rng.random((15, 15)) < 0.3)
        value, _ = diagonally_scaled_norm(w)
        assert _np_rho(w) - 1e-12 <= value <= np.linalg.norm(w, 2) + 1e-12


def test_gain_and_per_unit_leak_against_definitions():
    rng = np.random.default_rng(1)
    n = 12
    w = rng.uniform(-1, 1, (n, n)) * 0.3
    a = rng.uniform(0.2, 1.0, n)
    gain = rng.uniform(0.5, 1.5, n)
    rep = esp_check(torch.from_numpy(w), leak=torch.from_numpy(a), gain=torch.from_numpy(gain))
    gw = np.diag(gain) @ w
    jac = np.diag(1 - a) + np.diag(a) @ gw
    assert rep.sigma_max == pytest.approx(np.linalg.norm(gw, 2), rel=1e-12)
    assert rep.spectral_radius == pytest.approx(_np_rho(gw), rel=1e-12)
    assert rep.effective_spectral_radius == pytest.approx(_np_rho(jac), rel=1e-12)
    assert rep.contraction_bound == pytest.approx(
        (1 - a.min()) + a.max() * np.linalg.norm(gw, 2), rel=1e-12)
    assert (rep.leak_min, rep.leak_max) == pytest.approx((a.min(), a.max()))


def test_reservoir_module_is_read():
    esn = EchoStateNetwork(input_size=1, units=40, spectral_radius=0.9, leak=0.3,
                           dtype=torch.float64, seed=0)
    rep = esp_check(esn)
    ref = esp_check(esn.W, leak=0.3)
    assert rep == ref
    assert rep.effective_spectral_radius == pytest.approx(
        _np_rho(0.7 * np.eye(40) + 0.3 * esn.W.numpy()), rel=1e-10)
    # Intrinsic plasticity's gain (buffer a) enters: G W.
    with torch.no_grad():
        esn.a.fill_(1.5)
    rep_g = esp_check(esn)
    assert rep_g.sigma_max == pytest.approx(1.5 * ref.sigma_max, rel=1e-12)
    assert rep_g.spectral_radius == pytest.approx(1.35, rel=1e-10)
    with pytest.raises(ValueError, match="either a reservoir module"):
        esp_check(esn, leak=0.5)


# ------------------------------------------------------------------------------------------------
def _esn_with(w: torch.Tensor, leak: float = 1.0, bias: float = 0.0, **kw) -> EchoStateNetwork:
    return EchoStateNetwork(input_size=1, units=w.shape[0], topology=w, leak=leak,
                            bias_scaling=bias, dtype=torch.float64, **kw)


def test_contraction_rate_of_a_scaled_orthogonal_reservoir():
    # Zero input, zero bias, tiny states: x(t) = c Q x(t-1) up to O(x^3), so every distance
    # shrinks by exactly c per step.
    c = 0.8
    esn = _esn_with(c * _orthogonal(20, seed=2))
    res = state_contraction(esn, torch.zeros(1, 80, 1, dtype=torch.float64), n_initial=4,
                            init_scale=1e-6)
    t = torch.arange(80, dtype=torch.float64)
    torch.testing.assert_close(res.ratio, c ** (t + 1), rtol=1e-8, atol=0)
    assert res.rate == pytest.approx(c, rel=1e-8)
    assert res.distances.shape == (4, 1, 80) and res.initial_distances.shape == (4, 1)
    assert res.forgets and res.steps_to_tol == math.ceil(math.log(1e-6) / math.log(c)) - 1


def test_contraction_of_a_leaky_reservoir_tends_to_the_effective_radius():
    d = torch.tensor([0.9, -0.5, 0.2, 0.6, -0.95], dtype=torch.float64)
    a = 0.4
    esn = _esn_with(torch.diag(d), leak=a)
    res = state_contraction(esn, torch.zeros(1, 200, 1, dtype=torch.float64), n_initial=3,
                            init_scale=1e-6)
    eff = esp_check(torch.diag(d), leak=a).effective_spectral_radius   # 0.96
    assert eff == pytest.approx(float(torch.abs(1 - a + a * d).max()))
    late = float((res.ratio[150] / res.ratio[100]) ** (1 / 50))
    assert late == pytest.approx(eff, rel=1e-6)


def test_contraction_bound_holds_under_input():
    # ||x(t) - y(t)|| <= sigma_max^(t+1) ||x(-1) - y(-1)|| for tanh units with any input.
    g = torch.Generator().manual_seed(3)
    w = torch.randn(30, 30, generator=g, dtype=torch.float64)
    w *= 0.95 / torch.linalg.matrix_norm(w, 2)
    esn = _esn_with(w, bias=0.5)
    u = 2 * torch.rand(2, 300, 1, generator=g, dtype=torch.float64) - 1
    res = state_contraction(esn, u, n_initial=5, seed=1)
    t = torch.arange(300, dtype=torch.float64)
    bound = 0.95 ** (t + 1)
    assert bool((res.ratio <= bound * (1 + 1e-9) + 1e-15).all())
    assert res.forgets and res.rate < 0.95
    k = res.steps_to_tol
    assert bool((res.ratio[k:] <= 1e-6).all()) and float(res.ratio[k - 1]) > 1e-6
    assert esp_check(w).sufficient


def test_no_echo_states_when_the_origin_is_unstable():
    # rho = sigma = 1.5, zero input: trajectories settle on different non-zero attractors.
    esn = _esn_with(1.5 * _orthogonal(20, seed=4))
    res = state_contraction(esn, torch.zeros(1, 300, 1, dtype=torch.float64), n_initial=6,
                            seed=0)
    assert not res.forgets and res.steps_to_tol is None
    assert float(res.ratio[-50:].min()) > 0.05
    assert not esp_check(esn).necessary


def test_contraction_is_seeded_and_runs_in_float32():
    esn = EchoStateNetwork(input_size=1, units=25, spectral_radius=0.9, seed=0)   # float32 default
    u = torch.rand(1, 80, 1)
    a = state_contraction(esn, u, seed=5)
    b = state_contraction(esn, u, seed=5)
    c = state_contraction(esn, u, seed=6)
    assert torch.equal(a.distances, b.distances) and not torch.equal(a.distances, c.distances)
    assert a.forgets and 0 < a.rate < 1


def test_bad_input():
    esn = EchoStateNetwork(input_size=1, units=10, dtype=torch.float64)
    u = torch.zeros(1, 20, 1, dtype=torch.float64)
    with pytest.raises(TypeError, match="n_initial"):
        state_contraction(esn, u, n_initial=2.5)
    with pytest.raises(ValueError, match="n_initial"):
        state_contraction(esn, u, n_initial=0)
    with pytest.raises(ValueError, match="init_scale"):
        state_contraction(esn, u, init_scale=0.0)
    with pytest.raises(ValueError, match="dimensions"):
        state_contraction(esn, u[0])
    with pytest.raises(ValueError, match="non-finite"):
        state_contraction(esn, u + float("nan"))
    with pytest.raises(TypeError, match="states"):
        state_contraction(torch.nn.Linear(1, 1), u)
    with pytest.raises(ValueError, match="square"):
        esp_check(torch.ones(3, 4))
    with pytest.raises(ValueError, match="non-finite"):
        esp_check(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="leak"):
        esp_check(torch.eye(3), leak=0.0)
    with pytest.raises(ValueError, match="leak"):
        esp_check(torch.eye(3), leak=torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="gain"):
        esp_check(torch.eye(3), gain=torch.ones(2))
    with pytest.raises(ValueError, match="max_iter"):
        diagonally_scaled_norm(torch.eye(3), max_iter=0)
