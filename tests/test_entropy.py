"""Average state entropy against a direct double loop, the Gaussian closed form and its
finite-sample expectation, and its invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab.analysis import entropy as entropy_module
from rnnlab.analysis.entropy import layer_state_entropy, state_entropy
from rnnlab.reservoir import EchoStateNetwork


def _double_loop_h2(samples: list[float], sigma: float) -> float:
    """H2 = -log((1/M^2) sum_ij G_{sigma sqrt 2}(x_i - x_j)),
    G_s(z) = exp(-z^2 / 2 s^2) / (sqrt(2 pi) s)."""
    m = len(samples)
    s = sigma * math.sqrt(2.0)
    total = 0.0
    for xi in samples:
        for xj in samples:
            total += math.exp(-((xi - xj) ** 2) / (2 * s * s)) / (math.sqrt(2 * math.pi) * s)
    return -math.log(total / m**2)


def _silverman(samples: list[float]) -> float:
    m = len(samples)
    mean = sum(samples) / m
    std = math.sqrt(sum((x - mean) ** 2 for x in samples) / (m - 1))
    return 1.06 * std * m ** (-0.2)


def test_matches_double_loop_fixed_and_silverman():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, generator=g, dtype=torch.float64) * 0.5
    got_fixed = state_entropy(x, 0.3, reduction="none")
    got_silv = state_entropy(x, reduction="none")
    for b in range(2):
        for t in range(4):
            samples = x[b, t].tolist()
            assert got_fixed[b, t] == pytest.approx(_double_loop_h2(samples, 0.3), rel=1e-12)
            assert got_silv[b, t] == pytest.approx(
                _double_loop_h2(samples, _silverman(samples)), rel=1e-12)
    # "mean" is the average state entropy: the time average of the per-step values.
    torch.testing.assert_close(state_entropy(x, 0.3), got_fixed.mean(1))
    torch.testing.assert_close(state_entropy(x, "silverman"), got_silv.mean(1))


def test_far_apart_samples_do_not_underflow():
    # exp(-d^2 / 4 sigma^2) underflows to 0 off the diagonal; only the diagonal survives:
    # V = M G(0) / M^2 = 1 / (M 2 sqrt(pi) sigma).
    x = torch.tensor([[[0.0, 1e3, 2e3, 3e3]]], dtype=torch.float64)
    got = float(state_entropy(x, 0.01))
    assert got == pytest.approx(math.log(4 * 2 * math.sqrt(math.pi) * 0.01), rel=1e-12)


def test_gaussian_finite_sample_expectation():
    # For M samples of N(0, s^2) and kernel sigma:
    # E[V] = (M-1)/M * 1/(2 sqrt(pi) sqrt(s^2 + sigma^2)) + 1/(M 2 sqrt(pi) sigma).
    m, s, sigma = 400, 0.7, 0.2
    g = torch.Generator().manual_seed(1)
    x = s * torch.randn(1, 200, m, generator=g, dtype=torch.float64)
    v = torch.exp(-state_entropy(x, sigma, reduction="none"))
    expect = ((m - 1) / m / (2 * math.sqrt(math.pi) * math.sqrt(s * s + sigma * sigma))
              + 1 / (m * 2 * math.sqrt(math.pi) * sigma))
    # V is a U-statistic: measured relative std about 0.045 per step, 0.003 over 200 steps.
    assert float(v.mean()) == pytest.approx(expect, rel=0.012)


def test_gaussian_closed_form_in_the_large_sample_limit():
    # H2 of N(0, s^2) is log(2 sqrt(pi) s). With Silverman's width sigma = 1.06 s M^-0.2 the
    # estimate is biased up by about 0.5 log(1 + (sigma/s)^2) (kernel) minus the diagonal.
    m, s = 3000, 2.0
    g = torch.Generator().manual_seed(2)
    x = s * torch.randn(1, 8, m, generator=g, dtype=torch.float64)
    got = float(state_entropy(x))
    exact = math.log(2 * math.sqrt(math.pi) * s)
    ratio = 1.06 * m ** (-0.2)
    assert got == pytest.approx(exact + 0.5 * math.log(1 + ratio**2), abs=0.03)
    assert abs(got - exact) < 0.05


def test_invariances():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 5, 20, generator=g, dtype=torch.float64) * 2 - 1
    h = state_entropy(x)
    perm = torch.randperm(20, generator=g)
    torch.testing.assert_close(state_entropy(x[..., perm]), h)          # unit order
    torch.testing.assert_close(state_entropy(x + 3.5), h)                # translation
    torch.testing.assert_close(state_entropy(-x), h)                     # reflection
    # Scaling by c shifts H2 by log c (Silverman's width scales with the data; a fixed width
    # has to be scaled by hand).
    torch.testing.assert_close(state_entropy(4.0 * x), h + math.log(4.0))
    torch.testing.assert_close(state_entropy(4.0 * x, 0.8), state_entropy(x, 0.2) + math.log(4.0))
    # Spreading the units out (same kernel) raises the entropy.
    assert bool((state_entropy(2.0 * x, 0.1) > state_entropy(x, 0.1)).all())


def test_chunking_and_dtypes(monkeypatch):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 9, 30, generator=g, dtype=torch.float64)
    whole = state_entropy(x, reduction="none")
    monkeypatch.setattr(entropy_module, "_PAIR_CHUNK_ELEMENTS", 30 * 30 * 4)  # 4 steps a chunk
    torch.testing.assert_close(state_entropy(x, reduction="none"), whole)
    # float32 states are computed in float64 (to float32 round-off of the inputs).
    got32 = state_entropy(x.float(), reduction="none")
    assert got32.dtype == torch.float64
    torch.testing.assert_close(got32, whole, atol=1e-5, rtol=0)


def test_per_layer_entropy():
    g = torch.Generator().manual_seed(5)
    layers = [torch.randn(2, 6, n, generator=g, dtype=torch.float64) * (i + 1)
              for i, n in enumerate((10, 15, 5))]
    cat = torch.cat(layers, dim=-1)
    got = layer_state_entropy(cat, [10, 15, 5])
    assert got.shape == (2, 3)
    for i, layer in enumerate(layers):
        torch.testing.assert_close(got[:, i], state_entropy(layer))
    torch.testing.assert_close(layer_state_entropy(layers), got)
    per_step = layer_state_entropy(layers, kernel_size=0.5, reduction="none")
    assert per_step.shape == (2, 6, 3)
    torch.testing.assert_close(per_step[..., 1], state_entropy(layers[1], 0.5, reduction="none"))


def test_esn_states_give_finite_entropy():
    esn = EchoStateNetwork(input_size=1, units=50, spectral_radius=0.9, dtype=torch.float64, seed=0)
    u = torch.rand(1, 200, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    states, _ = esn(2 * u - 1, washout=20)
    h = state_entropy(states)
    # The units' activations lie in (-1, 1): a width-2 interval holds at most log 2 of
    # Renyi-2 entropy for its distribution; the kernel widens it a little.
    assert h.shape == (1,)
    assert -5.0 < float(h) < math.log(2.0) + 0.5


def test_bad_input():
    x = torch.randn(1, 3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="dimensions"):
        state_entropy(x[0])
    with pytest.raises(ValueError, match="non-finite"):
        state_entropy(x.masked_fill(x > 0.5, float("nan")))
    with pytest.raises(TypeError, match="floating"):
        state_entropy(torch.ones(1, 3, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least 2 units"):
        state_entropy(x[..., :1])
    with pytest.raises(ValueError, match="kernel_size"):
        state_entropy(x, 0.0)
    with pytest.raises(ValueError, match="kernel_size"):
        state_entropy(x, float("inf"))
    with pytest.raises(ValueError, match="kernel_size"):
        state_entropy(x, "scott")
    with pytest.raises(TypeError, match="kernel_size"):
        state_entropy(x, [0.1])
    with pytest.raises(ValueError, match="reduction"):
        state_entropy(x, reduction="sum")
    const = x.clone()
    const[0, 1] = 0.25
    with pytest.raises(ValueError, match="time step 1"):
        state_entropy(const)
    assert bool(torch.isfinite(state_entropy(const, 0.1)).all())   # a fixed width copes
    with pytest.raises(ValueError, match="sum to"):
        layer_state_entropy(x, [2, 2])
    with pytest.raises(ValueError, match="layer_sizes"):
        layer_state_entropy(x)
    with pytest.raises(ValueError, match="share"):
        layer_state_entropy([x, torch.randn(1, 4, 5, dtype=torch.float64)])
    with pytest.raises(ValueError, match="empty"):
        layer_state_entropy([])


def test_numpy_reference_vectorised():
    # A second, vectorised reference in numpy for a larger case (double loop would be slow).
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (1, 3, 60))
    got = state_entropy(torch.from_numpy(x), 0.15, reduction="none").numpy()
    d = x[..., :, None] - x[..., None, :]
    v = (np.exp(-d**2 / (4 * 0.15**2)) / (2 * math.sqrt(math.pi) * 0.15)).mean(axis=(-1, -2))
    np.testing.assert_allclose(got, -np.log(v), rtol=1e-12)
