"""Memory capacity against linear-systems theory, closed forms and an independent numpy
re-implementation of the protocol; Jaeger's bound MC <= N."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab.analysis.memory import linear_memory_capacity, memory_capacity
from rnnlab.reservoir import EchoStateNetwork, delay_line, simple_cycle
from rnnlab.reservoir.deep import DeepEchoStateNetwork


class LinearReservoir(torch.nn.Module):
    """The reference linear reservoir x(t) = A x(t-1) + b u(t), x(-1) = 0, written plainly."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("b", b)
        self.input_size = 1

    def states(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.new_zeros(inputs.shape[0], self.A.shape[0])
        out = []
        for t in range(inputs.shape[1]):
            x = x @ self.A.t() + inputs[:, t, :1] * self.b
            out.append(x)
        return torch.stack(out, 1)


def _random_linear(n: int, rho: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    w *= rho / torch.linalg.eigvals(w).abs().max()
    b = 2.0 * torch.rand(n, generator=g, dtype=torch.float64) - 1.0
    return w, b


def _series_theory(A: np.ndarray, b: np.ndarray, delays: np.ndarray, terms: int = 3000):
    """MC_k = c_k^T C^-1 c_k / var(u), C and c_k as truncated sums of the impulse response:
    C / var(u) = sum_j A^j b b^T A^jT, c_k / var(u) = A^k b (numpy, no Lyapunov solver)."""
    n = A.shape[0]
    C = np.zeros((n, n))
    v = b.copy()
    impulse = []
    for _ in range(terms):
        impulse.append(v)
        C += np.outer(v, v)
        v = A @ v
    return np.array([impulse[k] @ np.linalg.solve(C, impulse[k]) for k in delays])


# ------------------------------------------------------------------------------------------------
# Theory (linear_memory_capacity) against independent computations
def test_theory_matches_truncated_series_both_methods():
    w, b = _random_linear(6, 0.7, seed=0)
    ref = _series_theory(w.numpy(), b.numpy(), np.arange(1, 13))
    for method in ("krylov", "lyapunov"):
        got = linear_memory_capacity(w, b, 12, method=method)
        assert got.delays.tolist() == list(range(1, 13))
        np.testing.assert_allclose(got.mc_k.numpy(), ref, atol=1e-8)
        assert got.mc == pytest.approx(ref.sum(), abs=1e-7)


def test_theory_leaky_reservoir_uses_effective_matrix():
    w, b = _random_linear(5, 0.9, seed=1)
    a = 0.3
    A = (1 - a) * np.eye(5) + a * w.numpy()
    ref = _series_theory(A, a * b.numpy(), np.arange(0, 16), terms=6000)
    got = linear_memory_capacity(w, b.unsqueeze(1), 15, leak=a, min_delay=0)
    np.testing.assert_allclose(got.mc_k.numpy(), ref, atol=1e-8)
    # The input's scale does not matter, only the direction of b.
    got2 = linear_memory_capacity(w, 7.0 * b, 15, leak=a, min_delay=0)
    np.testing.assert_allclose(got2.mc_k.numpy(), ref, atol=1e-8)


@pytest.mark.parametrize("lam", [0.3, -0.6, 0.9])
def test_theory_scalar_reservoir_closed_form(lam):
    # x(t) = lam x(t-1) + u(t): var x = 1 / (1 - lam^2), cov(x(t), u(t-k)) = lam^k, so
    # MC_k = lam^(2k) (1 - lam^2) and sum_{k>=0} MC_k = 1 = N.
    got = linear_memory_capacity(torch.tensor([[lam]], dtype=torch.float64),
                                 torch.tensor([1.0], dtype=torch.float64), 30, min_delay=0)
    k = np.arange(0, 31)
    np.testing.assert_allclose(got.mc_k.numpy(), lam ** (2 * k) * (1 - lam**2), atol=1e-12)


def test_theory_delay_line_closed_form():
    # x_i(t) = r^(i-1) w u(t - i + 1): delays 0..N-1 are read exactly, nothing older.
    n = 12
    got = linear_memory_capacity(delay_line(n, 0.8, dtype=torch.float64),
                                 0.5 * torch.ones(n, dtype=torch.float64), 2 * n, min_delay=0)
    expect = np.r_[np.ones(n), np.zeros(n + 1)]
    np.testing.assert_allclose(got.mc_k.numpy(), expect, atol=1e-10)
    assert got.mc == pytest.approx(n, abs=1e-9)


def test_theory_total_memory_is_the_rank_jaeger_bound():
    # sum_{k>=0} MC_k = rank of the reachable subspace <= N (Jaeger 2001).
    w, b = _random_linear(8, 0.6, seed=3)
    full = linear_memory_capacity(w, b, 400, min_delay=0)
    assert full.mc == pytest.approx(8.0, abs=1e-6)
    assert bool((full.mc_k >= -1e-12).all()) and bool((full.mc_k <= 1 + 1e-12).all())
    # W = 0.5 I: every state is the same filtered input, rank 1, total memory 1.
    diag = linear_memory_capacity(0.5 * torch.eye(5, dtype=torch.float64),
                                  torch.ones(5, dtype=torch.float64), 200, min_delay=0)
    assert diag.mc == pytest.approx(1.0, abs=1e-9)
    # SCR with a sign pattern: controllable, MC from k=0 equals N.
    n = 10
    signs = torch.tensor([1, -1, 1, 1, -1, -1, 1, -1, -1, -1], dtype=torch.float64)
    scr = linear_memory_capacity(simple_cycle(n, 0.9, dtype=torch.float64), signs, 600,
                                 min_delay=0)
    assert scr.mc == pytest.approx(n, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# Measured MC of linear reservoirs against the theory
def test_measured_delay_line_matches_closed_form():
    n = 15
    A = delay_line(n, 0.9, dtype=torch.float64)
    b = 0.5 * torch.ones(n, dtype=torch.float64)
    res = memory_capacity(LinearReservoir(A, b), n_delays=2 * n, train_length=3000,
                          test_length=5000, seed=0)
    assert res.delays.tolist() == list(range(1, 2 * n + 1))
    # k = 1..N-1 are exact linear functions of the state; k >= N are independent of it.
    np.testing.assert_allclose(res.mc_k[: n - 1].numpy(), 1.0, atol=1e-8)
    assert float(res.mc_k[n - 1:].max()) < 5e-3
    assert res.mc == pytest.approx(n - 1, abs=0.03)
    assert res.n_features == n


@pytest.mark.parametrize("seed", [0, 1])
def test_measured_random_linear_reservoir_matches_theory(seed):
    n = 10
    w, b = _random_linear(n, 0.8, seed=10 + seed)
    theory = linear_memory_capacity(w, b, 2 * n)
    res = memory_capacity(LinearReservoir(w, b), n_delays=2 * n, train_length=4000,
                          test_length=10000, seed=seed)
    # Sampling std of r^2 on 10000 test steps is below 0.008 per delay.
    np.testing.assert_allclose(res.mc_k.numpy(), theory.mc_k.numpy(), atol=0.03)
    assert res.mc == pytest.approx(theory.mc, abs=0.12)


def test_measured_batch_and_normal_input_match_theory():
    # The theory holds for any i.i.d. input; the batch pools independent sequences.
    n = 8
    w, b = _random_linear(n, 0.7, seed=5)
    theory = linear_memory_capacity(w, b, 2 * n)
    res = memory_capacity(LinearReservoir(w, b), n_delays=2 * n, train_length=1500,
                          test_length=2500, batch=4, input_dist="normal",
                          input_scale=0.3, seed=2)
    np.testing.assert_allclose(res.mc_k.numpy(), theory.mc_k.numpy(), atol=0.03)


@pytest.mark.parametrize("leak", [1.0, 0.5])
def test_esn_in_its_linear_regime_matches_theory(leak):
    # With a tiny input scaling tanh(z) = z (1 + O(z^2)): the ESN is the linear reservoir
    # A = (1 - a) I + a W, b = a W_in.
    esn = EchoStateNetwork(input_size=1, units=12, topology="scr", spectral_radius=0.9,
                           input_weights="sign_pi",
                           input_scaling=1e-5, leak=leak, dtype=torch.float64)
    theory = linear_memory_capacity(esn.W, esn.W_in, 24, leak=leak)
    res = memory_capacity(esn, n_delays=24, train_length=3000, test_length=10000, seed=1)
    # Sampling std of r^2 on 10000 test steps is below 0.008 per delay.
    np.testing.assert_allclose(res.mc_k.numpy(), theory.mc_k.numpy(), atol=0.03)
    assert res.mc == pytest.approx(theory.mc, abs=0.2)


# ------------------------------------------------------------------------------------------------
# The protocol against independent numpy implementations, on non-linear ESNs
def _documented_input(seed: int, length: int) -> torch.Tensor:
    """The documented draw of memory_capacity: u = 2 rand - 1 from a generator seeded with seed."""
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.rand(1, length, generator=g, dtype=torch.float64) - 1.0


def test_relative_ridge_matches_numpy_reimplementation():
    esn = EchoStateNetwork(input_size=1, units=20, spectral_radius=0.9, leak=0.7, bias_scaling=0.2,
                           dtype=torch.float64, seed=4)
    washout, train, test, kmax, alpha = 50, 800, 400, 30, 1e-6
    res = memory_capacity(esn, n_delays=kmax, washout=washout, train_length=train,
                          test_length=test, alpha=alpha, seed=7)
    u = _documented_input(7, washout + train + test)
    x = esn.states(u.unsqueeze(-1))[0].numpy()
    u = u[0].numpy()
    tr = np.arange(washout, washout + train)
    te = np.arange(washout + train, washout + train + test)
    mean, sd = x[tr].mean(0), x[tr].std(0)
    ztr = (x[tr] - mean) / sd
    expect = []
    for k in range(1, kmax + 1):
        y = u[tr - k] - u[tr - k].mean()
        # The documented relative ridge, min ||Z v - y||^2 + alpha M ||v||^2 on the
        # standardised states, as an augmented least-squares problem (numpy's lstsq).
        aug = np.vstack([ztr, math.sqrt(alpha * train) * np.eye(20)])
        v = np.linalg.lstsq(aug, np.r_[y, np.zeros(20)], rcond=None)[0]
        o = ((x[te] - mean) / sd) @ v
        expect.append(np.corrcoef(u[te - k], o)[0, 1] ** 2)
    # alpha = 1e-6 keeps the augmented problem's condition number below 1 / sqrt(1e-6) = 1e3:
    # both solutions agree to ~1e3 eps, far inside 1e-9.
    np.testing.assert_allclose(res.mc_k.numpy(), expect, rtol=0, atol=1e-9)


def test_default_readout_is_the_deepesn_authors_pinv_readout():
    """The default (alpha = 0) on a deep ESN with the settings of the DeepESN code's MC example
    (input, inter-layer and bias scaling 0.1, dense layers) against that code's readout,
    rewritten in numpy: ``W_out = Y pinv([X; 1])`` on the raw states with a bias row, and the
    score ``corrcoef(target, output)^2`` (Gallicchio et al., DeepESN2018a, ``train_readout``,
    ``MCscore``)."""
    deep = DeepEchoStateNetwork(1, 5, 4, spectral_radius=0.9, input_scaling=0.1,
                                inter_scaling=0.1, bias_scaling=0.1, density=1.0, seed=0,
                                dtype=torch.float64)
    washout, train, test, kmax = 60, 1500, 500, 40
    res = memory_capacity(deep, n_delays=kmax, washout=washout, train_length=train,
                          test_length=test, seed=5)
    u = _documented_input(5, washout + train + test)
    x = deep.states(u.unsqueeze(-1))[0].numpy()
    u = u[0].numpy()
    tr = np.arange(washout, washout + train)
    te = np.arange(washout + train, washout + train + test)
    xtr = np.hstack([x[tr], np.ones((train, 1))])
    pinv = np.linalg.pinv(xtr, rcond=max(xtr.shape) * np.finfo(float).eps)
    targets = np.stack([u[tr - k] for k in range(1, kmax + 1)], 1)
    w_out = pinv @ targets
    out = np.hstack([x[te], np.ones((test, 1))]) @ w_out
    expect = np.array([np.corrcoef(u[te - k], out[:, k - 1])[0, 1] ** 2
                       for k in range(1, kmax + 1)])
    # Both are least-squares readouts of the same data; they differ by round-off amplified by
    # the condition number of the raw states (the upper layers' states are ~1e-3 of the
    # first's), which the pinv of the raw states suffers and the standardised QR solve does
    # not: |dr^2| <~ 2 cond([X, 1]) eps per delay.
    cond = np.linalg.cond(xtr)
    tol = 2 * cond * np.finfo(float).eps
    assert tol < 1e-3  # the comparison is not vacuous
    np.testing.assert_allclose(res.mc_k.numpy(), expect, rtol=0, atol=tol)
    assert res.mc == pytest.approx(expect.sum(), abs=kmax * tol)


class _ScaledStates(torch.nn.Module):
    """A model whose states are another model's times a constant (one per feature allowed)."""

    def __init__(self, model: torch.nn.Module, scale: float | torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float64))
        self.input_size = 1

    def states(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model.states(inputs) * self.scale


def test_default_is_invariant_to_the_scale_of_the_states():
    """MC is a property of the information in the states, not of their units: states times
    1e-6 must give the same MC (an absolute ridge penalty, the old default alpha = 1e-8 in
    units of X^T X, drove it to ~0 here)."""
    esn = EchoStateNetwork(input_size=1, units=20, spectral_radius=0.9, input_scaling=0.5,
                           bias_scaling=0.2, density=0.5, seed=1, dtype=torch.float64)
    washout, train, test, kmax = 50, 1000, 500, 40
    kw = {"n_delays": kmax, "train_length": train, "test_length": test, "washout": washout,
          "seed": 2}
    for ridge in ({}, {"alpha": 1e-4}):   # the default readout, and a relative ridge
        a = memory_capacity(esn, **ridge, **kw)
        b = memory_capacity(_ScaledStates(esn, 1e-6), **ridge, **kw)
        # Tolerance from the computation: scaling by 1e-6 perturbs each standardised feature by
        # ~kappa eps (kappa = max|x_j| / sd_j, the cancellation in centring); a least-squares
        # fit and its predictions move by at most ~cond(Z)^2 times that (Golub & Van Loan,
        # Thm. 5.3.1), r^2 by about twice the relative change of the prediction.
        x = esn.states(_documented_input(2, washout + train + test).unsqueeze(-1))[0]
        x = x[washout:washout + train]
        sd = x.std(0, unbiased=False)
        z = (x - x.mean(0)) / sd
        kappa = float((x.abs().amax(0) / sd).max())
        tol = 4 * float(torch.linalg.cond(z)) ** 2 * kappa * x.shape[1] * 2.2e-16
        assert tol < 1e-6  # the comparison is not vacuous
        np.testing.assert_allclose(b.mc_k.numpy(), a.mc_k.numpy(), rtol=0, atol=tol)
        assert a.mc > 5.0  # there is memory to lose


def test_deep_esn_mc_does_not_depend_on_each_layers_scale():
    """A deep ESN's upper layers have states orders of magnitude smaller than its first layer's
    (here 6e-2 down to 4e-6 with the DeepESN code's scalings 0.1). Rescaling every layer to
    unit size must not change the MC; an absolute penalty discarded the small layers."""
    deep = DeepEchoStateNetwork(1, 5, 6, spectral_radius=0.9, input_scaling=0.1,
                                inter_scaling=0.1, bias_scaling=0.1, density=1.0, seed=0,
                                dtype=torch.float64)
    washout, train, test = 100, 1000, 500
    kw = {"n_delays": 40, "train_length": train, "test_length": test, "washout": washout,
          "seed": 3}
    x = deep.states(_documented_input(3, washout + train + test).unsqueeze(-1))[0, washout:]
    layer_sd = x.std(0).view(6, 5).mean(1)
    assert float(layer_sd[0] / layer_sd[-1]) > 1e3
    # Powers of two: the rescaling itself is exact in binary floating point, so the
    # standardised states are the same numbers and any difference would come from the
    # readout (1e-12: far below one sample's weight in r^2, 1 / test_length).
    factor = torch.repeat_interleave(2.0 ** torch.round(-torch.log2(layer_sd)), 5)
    raw = memory_capacity(deep, **kw)
    unit = memory_capacity(_ScaledStates(deep, factor), **kw)
    np.testing.assert_allclose(unit.mc_k.numpy(), raw.mc_k.numpy(), rtol=0, atol=1e-12)
    # Beyond the first layer's memory: the upper layers contribute.
    first = memory_capacity(_FirstLayer(deep), **kw)
    assert raw.mc > first.mc + 3.0


class _FirstLayer(torch.nn.Module):
    def __init__(self, deep: DeepEchoStateNetwork) -> None:
        super().__init__()
        self.deep = deep
        self.input_size = 1

    def states(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.deep.layer_states(inputs)[0]


def test_fewer_training_samples_than_features():
    # The minimum-norm readout interpolates the training data; MC_k stays a valid r^2.
    esn = EchoStateNetwork(input_size=1, units=30, spectral_radius=0.9, dtype=torch.float64, seed=0)
    res = memory_capacity(esn, n_delays=10, train_length=20, test_length=200, washout=10)
    assert bool((res.mc_k >= 0).all()) and bool((res.mc_k <= 1 + 1e-12).all())


def test_constant_states_have_no_memory():
    class Constant(torch.nn.Module):
        input_size = 1

        def states(self, inputs: torch.Tensor) -> torch.Tensor:
            return torch.full((*inputs.shape[:2], 3), 0.25, dtype=torch.float64)

    res = memory_capacity(Constant(), n_delays=5, train_length=50, test_length=50)
    assert res.mc == 0.0 and res.n_features == 3


def test_tanh_esn_obeys_jaeger_bound_and_defaults():
    n = 30
    esn = EchoStateNetwork(input_size=1, units=n, spectral_radius=0.95, dtype=torch.float64, seed=2)
    res = memory_capacity(esn, train_length=2000, test_length=1000)
    assert res.delays.tolist() == list(range(1, 2 * n + 1))  # default K = 2N
    assert 1.0 < res.mc < n
    # cov^2 <= var var holds exactly only in exact arithmetic: allow the round-off of the sums.
    assert bool((res.mc_k >= 0).all()) and bool((res.mc_k <= 1 + 1e-12).all())
    # Memory fades: the first delays are remembered better than the last ones.
    assert float(res.mc_k[:3].mean()) > 0.9 > float(res.mc_k[-10:].mean()) + 0.5


def test_seeded_and_reproducible_float32():
    esn = EchoStateNetwork(input_size=1, units=15, spectral_radius=0.9, seed=0, dtype=torch.float32)
    kw = {"n_delays": 20, "train_length": 600, "test_length": 300}
    a = memory_capacity(esn, seed=3, **kw)
    b = memory_capacity(esn, seed=3, **kw)
    c = memory_capacity(esn, seed=4, **kw)
    assert torch.equal(a.mc_k, b.mc_k)
    assert not torch.equal(a.mc_k, c.mc_k)
    assert a.mc_k.dtype == torch.float64
    # float32 and float64 reservoirs (same weights) agree to float32 round-off.
    esn64 = EchoStateNetwork(input_size=1, units=15, spectral_radius=0.9, seed=0,
                             dtype=torch.float64)
    d = memory_capacity(esn64, seed=3, **kw)
    np.testing.assert_allclose(a.mc_k.numpy(), d.mc_k.numpy(), atol=2e-3)
    gen = torch.Generator().manual_seed(3)
    e = memory_capacity(esn, generator=gen, **kw)
    assert torch.equal(a.mc_k, e.mc_k)


# ------------------------------------------------------------------------------------------------
def test_bad_input():
    esn = EchoStateNetwork(input_size=1, units=10, dtype=torch.float64)
    with pytest.raises(ValueError, match="washout"):
        memory_capacity(esn, n_delays=50, washout=20)
    with pytest.raises(ValueError, match="n_delays"):
        memory_capacity(esn, n_delays=0)
    with pytest.raises(TypeError, match="train_length"):
        memory_capacity(esn, train_length=10.5)
    with pytest.raises(ValueError, match="input_dist"):
        memory_capacity(esn, input_dist="cauchy")
    with pytest.raises(ValueError, match="alpha"):
        memory_capacity(esn, alpha=-1.0)
    with pytest.raises(ValueError, match="input_scale"):
        memory_capacity(esn, input_scale=float("nan"))
    with pytest.raises(ValueError, match="min_delay"):
        memory_capacity(esn, n_delays=5, min_delay=6)
    with pytest.raises(ValueError, match="one input feature"):
        memory_capacity(EchoStateNetwork(input_size=2, units=10))
    with pytest.raises(ValueError, match="feeds its output back"):
        memory_capacity(EchoStateNetwork(input_size=1, units=10, output_size=1,
                                         feedback_scaling=0.5))
    with pytest.raises(TypeError, match="states"):
        memory_capacity(torch.nn.Linear(1, 3))
    w, b = _random_linear(4, 0.5, seed=0)
    with pytest.raises(ValueError, match="not stable"):
        linear_memory_capacity(2.5 * w, b, 5)  # rho 1.25: clearly unstable
    with pytest.raises(ValueError, match="rcond"):
        memory_capacity(esn, rcond=-1e-3)
    with pytest.raises(ValueError, match="w_in"):
        linear_memory_capacity(w, torch.ones(3, dtype=torch.float64), 5)
    with pytest.raises(ValueError, match="non-finite"):
        linear_memory_capacity(w.masked_fill(w > 0.1, float("nan")), b, 5)
    with pytest.raises(ValueError, match="leak"):
        linear_memory_capacity(w, b, 5, leak=1.5)
    with pytest.raises(ValueError, match="method"):
        linear_memory_capacity(w, b, 5, method="magic")
    with pytest.raises(ValueError, match="square"):
        linear_memory_capacity(torch.ones(3, 4, dtype=torch.float64), b, 5)


@pytest.mark.parametrize("scale", [2.0, 2.0 * (1 - 2.0**-52), 2.0 * (1 + 2.0**-52)])
def test_marginal_reservoir_is_not_stable_whatever_the_last_bit(scale):
    """rho(A) = 1 up to round-off has no stationary covariance, whichever side of 1 the computed
    eigenvalues land on (eigvals gives 0.9999999999999999 for ``2 w`` with rho(w) = 0.5 on some
    machines and 1.0 on others: the old ``rho >= 1`` check passed or failed by the last bit)."""
    w, b = _random_linear(4, 0.5, seed=0)
    with pytest.raises(ValueError, match="not stable"):
        linear_memory_capacity(scale * w, b, 5)


def test_stability_margin_is_the_round_off_of_eigvals():
    # Eigenvalues that are exact in floating point: one ulp below 1 is refused (the old check
    # let it through), 1e-9 below 1 is clearly stable (the margin is n eps ||A||_F ~ 5e-16).
    one = torch.ones(2, dtype=torch.float64)
    below = torch.diag(torch.tensor([1.0 - 2.0**-53, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="not stable"):
        linear_memory_capacity(below, one, 5)
    near = torch.diag(torch.tensor([1.0 - 1e-9, 0.5], dtype=torch.float64))
    assert linear_memory_capacity(near, one, 5, method="lyapunov").mc > 0
