"""LIF neurons of the liquid against closed forms (rnnlab.reservoir.lsm)."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.reservoir.lsm import Column, LiquidColumn, lif_rate, poisson_spike_trains
from rnnlab.reservoir.lsm._kernel import AVAILABLE as NUMBA

# Both simulation paths: the torch loop (any device) and the fused numba kernel (CPU).
BACKENDS = ["torch", "numba"] if NUMBA else ["torch"]


def hand_column(n: int = 1, *, tau_m: float = 30.0, resistance: float = 1.0,
                threshold: float = 15.0, reset: float = 13.5, refractory: float = 3.0,
                background: float = 0.0, input_tau: float = 3.0, edges=(),
                input_weights=None) -> Column:
    """A column written by hand: ``n`` identical neurons, ``edges`` a list of dicts with pre,
    post, amplitude, U, D, F, delay, tau_s."""
    def full(x: float) -> torch.Tensor:
        return torch.full((n,), float(x), dtype=torch.float64)

    def edge(name: str, dtype=torch.float64) -> torch.Tensor:
        return torch.tensor([e[name] for e in edges], dtype=dtype)

    w = torch.zeros((1, n), dtype=torch.float64) if input_weights is None else \
        torch.as_tensor(input_weights, dtype=torch.float64)
    return Column(
        positions=torch.zeros((n, 3), dtype=torch.int64),
        inhibitory=torch.zeros(n, dtype=torch.bool),
        tau_m=full(tau_m), resistance=full(resistance), threshold=full(threshold),
        reset=full(reset), refractory=full(refractory), background=full(background),
        v_init_low=full(reset), v_init_high=full(reset), input_tau=full(input_tau),
        pre=edge("pre", torch.int64), post=edge("post", torch.int64),
        amplitude=edge("amplitude"), U=edge("U"), D=edge("D"), F=edge("F"),
        delay=edge("delay"), tau_s=edge("tau_s"), input_weights=w,
    )


def constant_injection(current: float, steps: int, n: int = 1, batch: int = 1,
                       dtype=torch.float64) -> torch.Tensor:
    return torch.full((batch, steps, n), current, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reset,current", [(13.5, 20.0), (0.0, 20.0), (13.5, 16.3)])
def test_lif_fires_at_closed_form_rate(reset, current, backend):
    tau_m, theta, t_ref, dt = 30.0, 15.0, 3.0, 0.1
    col = hand_column(reset=reset, refractory=t_ref)
    liquid = LiquidColumn(col, dt=dt, dtype=torch.float64, backend=backend)
    steps = 3000
    out = liquid(injection=constant_injection(current, steps), state=liquid.initial_state(1))
    k = out.spikes[0, :, 0].nonzero().flatten()
    times = (k + 1).double() * dt
    isi = torch.diff(times)
    charge = tau_m * math.log((current - reset) / (current - theta))
    # On the step grid the threshold is seen at the first grid point after the crossing:
    # ISI = t_ref + ceil(charge/dt) dt; the parameters keep charge/dt away from an integer.
    frac = charge / dt - math.floor(charge / dt)
    assert 0.05 < frac < 0.95
    expected_grid = t_ref + math.ceil(charge / dt) * dt
    assert torch.allclose(isi, torch.full_like(isi, expected_grid), atol=1e-9)
    assert abs(float(times[0]) - math.ceil(charge / dt) * dt) < 1e-9   # from V0 = reset
    # and the closed-form rate to within one step of the period
    rate = lif_rate(current, tau_m=tau_m, resistance=1.0, threshold=theta, reset=reset,
                    refractory=t_ref)
    assert abs(1000.0 / rate - float(isi.mean())) <= dt


def test_lif_rate_converges_as_dt_shrinks():
    col = hand_column()
    rate = lif_rate(20.0, tau_m=30.0, resistance=1.0, threshold=15.0, reset=13.5,
                    refractory=3.0)
    dt = 0.01
    out = LiquidColumn(col, dt=dt, dtype=torch.float64)(
        injection=constant_injection(20.0, 6000), state=None, seed=0)
    k = out.spikes[0, :, 0].nonzero().flatten().double()
    isi = float(torch.diff(k).mean()) * dt
    assert abs(isi - 1000.0 / rate) <= dt


def test_lif_silent_below_rheobase_and_fires_above():
    col = hand_column()
    liquid = LiquidColumn(col, dt=0.1, dtype=torch.float64)
    below = liquid(injection=constant_injection(14.9, 5000), seed=0)   # RI = 14.9 < 15 mV
    assert not below.spikes.any()
    above = liquid(injection=constant_injection(15.1, 5000), seed=0)
    assert above.spikes.sum() > 3
    assert lif_rate(14.9, tau_m=30.0, resistance=1.0, threshold=15.0, reset=13.5,
                    refractory=3.0) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tau_s,dt", [(3.0, 0.1), (6.0, 0.7), (30.0, 0.25)])
def test_exponential_euler_matches_analytic_trajectory(tau_s, dt, backend):
    # One neuron, background current I_b, one input spike of A nA at t = 0 decaying with
    # tau_s; no threshold crossing. Analytic solution of tau_m V' = -V + R (I_b + A e^{-t/tau_s}):
    # V = V0 e^{-t/tau_m} + R I_b (1 - e^{-t/tau_m}) + R A K(t), with
    # K = tau_s/(tau_s - tau_m) (e^{-t/tau_s} - e^{-t/tau_m}), or (t/tau_m) e^{-t/tau_m} when equal.
    tau_m, ib, amp, v0 = 30.0, 5.0, 40.0, 2.0
    col = hand_column(threshold=1e6, background=ib, input_tau=tau_s,
                      input_weights=[[amp]])
    liquid = LiquidColumn(col, dt=dt, dtype=torch.float64, backend=backend)
    steps = 400
    x = torch.zeros((1, steps, 1), dtype=torch.float64)
    x[0, 0, 0] = 1.0
    out = liquid(x, state=liquid.initial_state(1, v0=torch.tensor([v0])), record_voltage=True)
    t = torch.arange(1, steps + 1, dtype=torch.float64) * dt
    em = torch.exp(-t / tau_m)
    if tau_s == tau_m:
        kern = t / tau_m * em
    else:
        kern = tau_s / (tau_s - tau_m) * (torch.exp(-t / tau_s) - em)
    ref = v0 * em + ib * (1 - em) + amp * kern
    # Exact propagator: only rounding, ~ steps * few eps * max|V| at most.
    tol = steps * 8 * torch.finfo(torch.float64).eps * float(ref.abs().max())
    assert torch.allclose(out.voltage[0, :, 0], ref, rtol=0, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_and_float64_trajectories_agree(backend):
    col = hand_column(threshold=1e6, background=10.0, input_weights=[[6.0]])
    x = poisson_spike_trains(2, 1, rate=200.0, duration=200.0, dt=0.1, seed=3,
                             dtype=torch.float64)
    runs = {}
    for dtype in (torch.float32, torch.float64):
        liquid = LiquidColumn(col, dt=0.1, dtype=dtype, backend=backend)
        out = liquid(x.to(dtype), seed=0, record_voltage=True)
        runs[dtype] = out.voltage.double()
    v64 = runs[torch.float64]
    # V_{k+1} = a V_k + c_k with a = e^{-dt/tau_m}: a few float32 roundings per step, each
    # <= eps32 max|V|, accumulate to at most ~ 8 eps32 max|V| / (1 - a).
    a = math.exp(-0.1 / 30.0)
    tol = 8 * torch.finfo(torch.float32).eps * float(v64.abs().max()) / (1 - a)
    err = float((runs[torch.float32] - v64).abs().max())
    assert err <= tol
    assert err > 0   # the two runs did take different precisions


def test_refractory_clamps_voltage_for_the_refractory_period():
    dt, t_ref = 0.1, 3.0
    col = hand_column(refractory=t_ref)
    out = LiquidColumn(col, dt=dt, dtype=torch.float64)(
        injection=constant_injection(40.0, 2000), seed=0, record_voltage=True)
    k = int(out.spikes[0, :, 0].nonzero()[0])
    n_ref = round(t_ref / dt)
    held = out.voltage[0, k:k + n_ref + 1, 0]
    assert torch.all(held == 13.5)           # reset value held (copied, not computed)
    assert out.voltage[0, k + n_ref + 1, 0] > 13.5
