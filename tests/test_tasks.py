import math

import pytest
import torch

from rnnlab.tasks import (
    MackeyGlass,
    mackey_glass,
    mackey_glass_squash,
    nmse,
    nrmse,
    one_step_ahead,
    sine_mixture,
    stream_one_step_ahead,
)


def test_sine_mixture_closed_form():
    s = sine_mixture(50, periods=(10.0, 25.0), amplitudes=(1.0, 0.5), phases=(0.0, 1.0),
                     dtype=torch.float64)
    t = torch.arange(50, dtype=torch.float64)
    ref = torch.sin(2 * math.pi * t / 10) + 0.5 * torch.sin(2 * math.pi * t / 25 + 1.0)
    assert torch.allclose(s, ref, atol=1e-12)


def test_sine_mixture_seeded():
    a, b = sine_mixture(30, noise=0.1, seed=5), sine_mixture(30, noise=0.1, seed=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, sine_mixture(30, noise=0.1, seed=6))
    assert sine_mixture(1000).abs().max() <= 1.0


def test_mackey_glass_equilibrium_is_fixed():
    """x* = (beta/gamma - 1)^(1/n) = 1 is an equilibrium for beta=0.2, gamma=0.1."""
    s = mackey_glass(200, x0=1.0, washout=0.0, dtype=torch.float64)
    assert torch.allclose(s, torch.ones(200, dtype=torch.float64), atol=1e-12)


def euler_reference(t_end, dt, tau=17.0, beta=0.2, gamma=0.1, n=10, x0=1.2):
    """Forward Euler with a tiny step: an independent integrator of the same DDE."""
    delay = round(tau / dt)
    hist = [x0] * (delay + 1)
    for _ in range(round(t_end / dt)):
        lag = hist[-delay - 1]
        hist.append(hist[-1] + dt * (beta * lag / (1 + lag**n) - gamma * hist[-1]))
    return hist[delay + 1 :]


def test_mackey_glass_rk4_agrees_with_fine_euler():
    t_end = 60.0
    rk4 = mackey_glass(int(t_end), washout=0.0, dtype=torch.float64)
    fine = euler_reference(t_end, 0.0005)
    every = round(1.0 / 0.0005)
    ref = torch.tensor(fine[every - 1 :: every][: int(t_end)], dtype=torch.float64)
    assert torch.allclose(rk4, ref, atol=5e-4)


def test_mackey_glass_is_chaotic_in_published_range():
    s = mackey_glass(3000, dtype=torch.float64)
    assert 0.2 < float(s.min()) < 0.5 and 1.2 < float(s.max()) < 1.45
    assert float(s.std()) > 0.15  # not settled on a fixed point or a tiny cycle


def test_mackey_glass_stream_equals_batch_and_seed_varies():
    stream = iter(MackeyGlass(washout=100.0, seed=3))
    values = [next(stream) for _ in range(40)]
    batch = mackey_glass(40, washout=100.0, seed=3, dtype=torch.float64)
    assert torch.allclose(batch, torch.tensor(values, dtype=torch.float64))
    assert not torch.allclose(batch, mackey_glass(40, washout=100.0, seed=4,
                                                  dtype=torch.float64))


def test_mackey_glass_bad_parameters():
    with pytest.raises(ValueError, match="integer"):
        MackeyGlass(tau=17.05, dt=0.1)
    with pytest.raises(ValueError, match="dt"):
        MackeyGlass(dt=0.0)
    with pytest.raises(ValueError, match="length"):
        mackey_glass(0)


def test_squash_and_one_step_ahead():
    assert mackey_glass_squash(1.0) == 0.0
    s = torch.arange(6.0)
    x, y = one_step_ahead(s)
    assert x.shape == (1, 5, 1) and torch.equal(y[0, :, 0], s[1:])
    pairs = list(stream_one_step_ahead(s.tolist()))
    assert len(pairs) == 5 and float(pairs[2][0]) == 2.0 and float(pairs[2][1]) == 3.0
    with pytest.raises(ValueError, match="time >= 2"):
        one_step_ahead(torch.zeros(1))


def test_metrics():
    y = torch.tensor([0.0, 2.0, 4.0])
    assert nmse(y, y) == 0.0
    assert nmse(torch.full((3,), 2.0), y) == pytest.approx(1.0)  # predicting the mean
    assert nrmse(torch.zeros(3), y) == pytest.approx(math.sqrt((0 + 4 + 16) / 3 / (8 / 3)))
    with pytest.raises(ValueError, match="zero variance"):
        nmse(y, torch.ones(3))
