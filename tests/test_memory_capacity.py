"""Memory capacity against linear-systems theory, closed forms and an independent numpy
re-implementation of the protocol; Jaeger's bound MC <= N."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab.analysis.memory import linear_memory_capacity, memory_capacity
from rnnlab.reservoir import EchoStateNetwork, delay_line, simple_cycle


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
                          test_length=5000, alpha=1e-12, seed=0)
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
                          test_length=10000, alpha=1e-12, seed=seed)
    # Sampling std of r^2 on 10000 test steps is below 0.008 per delay.
    np.testing.assert_allclose(res.mc_k.numpy(), theory.mc_k.numpy(), atol=0.03)
    assert res.mc == pytest.approx(theory.mc, abs=0.12)


def test_measured_batch_and_normal_input_match_theory():
    # The theory holds for any i.i.d. input; the batch pools independent sequences.
    n = 8
    w, b = _random_linear(n, 0.7, seed=5)
    theory = linear_memory_capacity(w, b, 2 * n)
    res = memory_capacity(LinearReservoir(w, b), n_delays=2 * n, train_length=1500,
                          test_length=2500, alpha=1e-12, batch=4, input_dist="normal",
                          input_scale=0.3, seed=2)
    np.testing.assert_allclose(res.mc_k.numpy(), theory.mc_k.numpy(), atol=0.03)


@pytest.mark.parametrize("leak", [1.0, 0.5])
def test_esn_in_its_linear_regime_matches_theory(leak):
    # With a tiny input scaling tanh(z) = z (1 + O(z^2)): the ESN is the linear reservoir
    # A = (1 - a) I + a W, b = a W_in.
    esn = EchoStateNetwork(12, 1, topology="scr", spectral_radius=0.9, input_weights="sign_pi",
                           input_scaling=1e-5, leak=leak, dtype=torch.float64)
    theory = linear_memory_capacity(esn.W, esn.W_in, 24, leak=leak)
    res = memory_capacity(esn, n_delays=24, train_length=3000, test_length=10000, alpha=0.0,
                          seed=1)
    # Sampling std of r^2 on 10000 test steps is below 0.008 per delay.
    np.testing.assert_allclose(res.mc_k.numpy(), theory.mc_k.numpy(), atol=0.03)
    assert res.mc == pytest.approx(theory.mc, abs=0.2)


# ------------------------------------------------------------------------------------------------
# The protocol against an independent numpy implementation, on a non-linear ESN
def test_protocol_matches_numpy_reimplementation():
    esn = EchoStateNetwork(20, 1, spectral_radius=0.9, leak=0.7, bias_scaling=0.2,
                           dtype=torch.float64, seed=4)
    washout, train, test, kmax, alpha = 50, 800, 400, 30, 1e-6
    res = memory_capacity(esn, n_delays=kmax, washout=washout, train_length=train,
                          test_length=test, alpha=alpha, seed=7)
    # Same inputs: the documented draw, u = 2 * rand - 1 from a generator seeded with 7.
    g = torch.Generator().manual_seed(7)
    u = (2.0 * torch.rand(1, washout + train + test, generator=g, dtype=torch.float64) - 1.0)
    x = esn.states(u.unsqueeze(-1))[0].numpy()
    u = u[0].numpy()
    tr = np.arange(washout, washout + train)
    te = np.arange(washout + train, washout + train + test)
    xtr = x[tr] - x[tr].mean(0)
    expect = []
    for k in range(1, kmax + 1):
        y = u[tr - k] - u[tr - k].mean()
        # Ridge as an augmented least-squares problem (numpy's lstsq).
        aug = np.vstack([xtr, math.sqrt(alpha) * np.eye(20)])
        v = np.linalg.lstsq(aug, np.r_[y, np.zeros(20)], rcond=None)[0]
        o = (x[te] - x[tr].mean(0)) @ v
        expect.append(np.corrcoef(u[te - k], o)[0, 1] ** 2)
    np.testing.assert_allclose(res.mc_k.numpy(), expect, rtol=1e-6, atol=1e-9)


def test_tanh_esn_obeys_jaeger_bound_and_defaults():
    n = 30
    esn = EchoStateNetwork(n, 1, spectral_radius=0.95, dtype=torch.float64, seed=2)
    res = memory_capacity(esn, train_length=2000, test_length=1000)
    assert res.delays.tolist() == list(range(1, 2 * n + 1))  # default K = 2N
    assert 1.0 < res.mc < n
    assert bool((res.mc_k >= 0).all()) and bool((res.mc_k <= 1).all())
    # Memory fades: the first delays are remembered better than the last ones.
    assert float(res.mc_k[:3].mean()) > 0.9 > float(res.mc_k[-10:].mean()) + 0.5


def test_seeded_and_reproducible_float32():
    esn = EchoStateNetwork(15, 1, spectral_radius=0.9, seed=0, dtype=torch.float32)
    kw = {"n_delays": 20, "train_length": 600, "test_length": 300}
    a = memory_capacity(esn, seed=3, **kw)
    b = memory_capacity(esn, seed=3, **kw)
    c = memory_capacity(esn, seed=4, **kw)
    assert torch.equal(a.mc_k, b.mc_k)
    assert not torch.equal(a.mc_k, c.mc_k)
    assert a.mc_k.dtype == torch.float64
    # float32 and float64 reservoirs (same weights) agree to float32 round-off.
    esn64 = EchoStateNetwork(15, 1, spectral_radius=0.9, seed=0, dtype=torch.float64)
    d = memory_capacity(esn64, seed=3, **kw)
    np.testing.assert_allclose(a.mc_k.numpy(), d.mc_k.numpy(), atol=2e-3)
    gen = torch.Generator().manual_seed(3)
    e = memory_capacity(esn, generator=gen, **kw)
    assert torch.equal(a.mc_k, e.mc_k)


# ------------------------------------------------------------------------------------------------
def test_bad_input():
    esn = EchoStateNetwork(10, 1, dtype=torch.float64)
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
        memory_capacity(EchoStateNetwork(10, 2))
    with pytest.raises(ValueError, match="feeds its output back"):
        memory_capacity(EchoStateNetwork(10, 1, 1, feedback_scaling=0.5))
    with pytest.raises(TypeError, match="states"):
        memory_capacity(torch.nn.Linear(1, 3))
    w, b = _random_linear(4, 0.5, seed=0)
    with pytest.raises(ValueError, match="not stable"):
        linear_memory_capacity(2.0 * w, b, 5)
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
