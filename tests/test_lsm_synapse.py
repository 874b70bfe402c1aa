"""Markram–Tsodyks dynamic synapses and delays of the liquid against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.reservoir.lsm import (
    LiquidColumn,
    tsodyks_markram_efficacies,
    tsodyks_markram_steady_state,
)
from tests.test_lsm_neuron import BACKENDS, constant_injection, hand_column


@pytest.mark.parametrize("U,D,F,period", [(0.5, 1100.0, 50.0, 20.0), (0.05, 125.0, 1200.0, 7.0),
                                          (0.25, 700.0, 20.0, 50.0)])
def test_steady_state_is_the_fixed_point_of_the_recursion(U, D, F, period):
    u, r = tsodyks_markram_steady_state(period, U, D, F)
    # The two defining equations of the fixed point (paper's recursion with Delta = period).
    assert u == pytest.approx(U + u * (1 - U) * math.exp(-period / F), rel=1e-13)
    assert r == pytest.approx(1 + (r - r * u - 1) * math.exp(-period / D), rel=1e-13)
    # and the recursion run from rest converges to it
    eff = tsodyks_markram_efficacies(torch.arange(4000) * period, U, D, F)
    assert float(eff[-1]) == pytest.approx(u * r, rel=1e-10)


def test_first_efficacies_by_hand():
    U, D, F, gap = 0.5, 100.0, 50.0, 10.0
    eff = tsodyks_markram_efficacies([0.0, gap], U, D, F)
    u2 = U + U * (1 - U) * math.exp(-gap / F)
    r2 = 1 + (1 - U - 1) * math.exp(-gap / D)
    assert eff.tolist() == pytest.approx([U, u2 * r2], rel=1e-14)


def _synapse_run(U, D, F, delay, amp=2.0, tau_s=3.0, dt=0.1, steps=8000, drive=20.0,
                 backend="auto"):
    """Neuron 0 fires regularly under a constant current; neuron 1 (no threshold) receives one
    synapse from it. Returns the presynaptic spike steps and neuron 1's current record."""
    col = hand_column(2, threshold=15.0, edges=[dict(pre=0, post=1, amplitude=amp, U=U, D=D, F=F,
                                                       delay=delay, tau_s=tau_s)])
    col.threshold[1] = 1e6
    liquid = LiquidColumn(col, dt=dt, dtype=torch.float64, backend=backend)
    inj = constant_injection(0.0, steps, n=2)
    inj[..., 0] = drive
    out = liquid(injection=inj, state=liquid.initial_state(1), record_current=True)
    return out.spikes[0, :, 0].nonzero().flatten(), out.current[0, :, 1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("U,D,F", [(0.5, 100.0, 50.0), (0.05, 125.0, 1200.0),
                                   (0.32, 144.0, 60.0)])
def test_simulated_synapse_follows_recursion_and_steady_state(U, D, F, backend):
    dt, tau_s, amp, delay = 0.1, 3.0, 2.0, 1.5
    pre, cur = _synapse_run(U, D, F, delay, amp=amp, tau_s=tau_s, dt=dt, backend=backend)
    d = round(delay / dt)
    arrive = pre + 1 + d
    arrive = arrive[arrive < cur.numel()]
    decay = math.exp(-dt / tau_s)
    jumps = cur[arrive] - cur[arrive - 1] * decay
    times = arrive.double() * dt
    ref = amp * tsodyks_markram_efficacies(times, U, D, F)
    # float64 arithmetic along two paths: rounding only (values O(amp))
    assert torch.allclose(jumps, ref, rtol=1e-9, atol=1e-10)
    # between arrivals the current only decays
    mask = torch.ones(cur.numel(), dtype=torch.bool)
    mask[arrive] = False
    mask[0] = False
    k = mask.nonzero().flatten()
    assert torch.allclose(cur[k], cur[k - 1] * decay, rtol=1e-12, atol=1e-300)
    # steady state of the regular train (period exactly the grid ISI)
    period = float(torch.diff(times)[-1])
    assert torch.allclose(torch.diff(times), torch.full_like(times[1:], period))
    u, r = tsodyks_markram_steady_state(period, U, D, F)
    n_spikes = arrive.numel()
    # The distance to the fixed point shrinks geometrically; after these ~70 spikes the slowest
    # case (U = 0.05, F = 1200 ms) is 4e-4 relative away, the others ~2e-6: bound 5e-3.
    assert n_spikes > 60
    assert float(ref[-1]) == pytest.approx(amp * u * r, rel=5e-3)
    assert float(jumps[-1]) == pytest.approx(amp * u * r, rel=5e-3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("delay", [0.8, 1.5, 2.3])
def test_spike_arrives_exactly_delay_later(delay, backend):
    dt = 0.1
    pre, cur = _synapse_run(0.5, 100.0, 50.0, delay, dt=dt, steps=400, backend=backend)
    first = int(pre[0])                 # spike at time (first + 1) dt
    arrival = first + 1 + round(delay / dt)
    assert torch.all(cur[:arrival] == 0)
    assert cur[arrival] > 0
    assert (arrival - (first + 1)) * dt == pytest.approx(delay)


def test_inhibitory_amplitude_gives_negative_current():
    _, cur = _synapse_run(0.25, 700.0, 20.0, 0.8, amp=-19.0, tau_s=6.0, steps=400)
    assert cur.min() < 0 and cur.max() == 0
