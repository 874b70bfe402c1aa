"""The generated column, inputs, outputs and errors of rnnlab.reservoir.lsm."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch

from rnnlab.reservoir.lsm import (
    CONNECTION_TYPES,
    ColumnParameters,
    LiquidColumn,
    NeuronParameters,
    SynapseParameters,
    build_column,
    liquid_states,
    poisson_spike_trains,
    raster_to_spike_times,
    spike_times_to_raster,
)
from rnnlab.reservoir.lsm.column import grid_positions, sample_gamma
from rnnlab.reservoir.lsm.simulate import flush_denormal, flush_denormal_active
from tests.test_lsm_neuron import BACKENDS, constant_injection, hand_column


def test_paper_column_shape_and_types():
    col = build_column(seed=0)
    assert col.n_neurons == 135
    assert int(col.inhibitory.sum()) == 27                       # 20 %
    assert torch.all(col.pre != col.post)
    types = col.connection_type()
    for i, t in enumerate(types[:50]):
        s = ColumnParameters().synapses[t]
        assert col.delay[i] == s.delay and col.tau_s[i] == s.tau_s
        assert math.copysign(1.0, float(col.amplitude[i])) == math.copysign(1.0, s.A)
    assert torch.all((col.U > 0) & (col.U <= 1)) and torch.all(col.D > 0) and torch.all(col.F > 0)
    assert torch.all((col.background >= 13.5) & (col.background <= 14.5))


def test_connection_probability_matches_distance_law():
    params = ColumnParameters(shape=(12, 12, 8))
    col = build_column(params, seed=1)
    pos, inh = col.positions, col.inhibitory
    n = col.n_neurons
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    kind = inh.long()[:, None] * 2 + inh.long()[None]
    adj = torch.zeros((n, n), dtype=torch.bool)
    adj[col.pre, col.post] = True
    off = ~torch.eye(n, dtype=torch.bool)
    checked = 0
    for k, name in enumerate(CONNECTION_TYPES):
        c = params.synapses[name].C
        for dist2 in range(0, 10):
            sel = (kind == k) & (d2 == dist2) & off
            pairs = int(sel.sum())
            p = c * math.exp(-dist2 / params.lam**2)
            if pairs * p < 20:
                continue
            hits = int(adj[sel].sum())
            # binomial: 5 standard deviations (a false alarm has probability ~6e-7 per cell)
            sd = math.sqrt(pairs * p * (1 - p))
            assert abs(hits - pairs * p) <= 5 * sd + 1, (name, dist2, hits, pairs * p)
            checked += 1
    assert checked >= 12


def test_udf_and_amplitude_statistics():
    params = ColumnParameters(shape=(12, 12, 8))
    col = build_column(params, seed=2)
    types = col.connection_type()
    ee = torch.tensor([t == "EE" for t in types])
    s = params.synapses["EE"]
    m = int(ee.sum())
    # Gamma(1/cv^2) amplitudes: mean A, SD cv A (cv = 1); 6 standard errors
    a = col.amplitude[ee]
    assert abs(float(a.mean()) - s.A) < 6 * s.A / math.sqrt(m)
    assert abs(float(a.std()) - s.A) < 0.2 * s.A
    # D: Normal(mean, (mean/2)^2) with the rare non-positive draws redrawn; mean within 6 SE
    d = col.D[ee]
    assert abs(float(d.mean()) - s.D) < 6 * 0.5 * s.D / math.sqrt(m)


@pytest.mark.parametrize("k", [0.5, 1.0, 4.0])
def test_gamma_sampler_moments(k):
    g = sample_gamma(k, 40000, torch.Generator().manual_seed(0))
    se = math.sqrt(k / 40000)
    assert abs(float(g.mean()) - k) < 6 * se
    assert abs(float(g.var()) - k) < 6 * math.sqrt((2 * k**2 + 6 * k) / 40000)


def test_same_seed_same_column_and_run():
    a, b, c = build_column(seed=5), build_column(seed=5), build_column(seed=6)
    for f in dataclasses.fields(a):
        assert torch.equal(getattr(a, f.name), getattr(b, f.name))
    assert not torch.equal(a.U, c.U) or not torch.equal(a.pre, c.pre)
    x = poisson_spike_trains(2, 1, 40.0, 100.0, 0.1, seed=1)
    liquid = LiquidColumn(a, dt=0.1)
    assert torch.equal(liquid(x, seed=3).spikes, liquid(x, seed=3).spikes)


def test_grid_positions():
    pos = grid_positions((2, 3, 4))
    assert pos.shape == (24, 3)
    assert len({tuple(p) for p in pos.tolist()}) == 24


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_equals_trials_one_by_one_and_chunks(backend):
    col = build_column(seed=0)
    liquid = LiquidColumn(col, dt=0.1, dtype=torch.float64, backend=backend)
    x = poisson_spike_trains(3, 1, 40.0, 150.0, 0.1, seed=2, dtype=torch.float64)
    s0 = liquid.initial_state(3, seed=4)
    batch = liquid(x, state=s0, record_voltage=True)
    assert batch.spikes.any()
    # Two code paths differ only in the order of summed arrivals (<= a few per neuron and
    # step, |A| <= ~200 nA): eps64 * 1e3 mV per step, carried at most 1/(1 - e^{-dt/tau_m})
    # = 300 steps: ~1e-10 mV. A spike flip would need V within that of the threshold.
    tol = 1e-9
    for i in range(3):
        one = liquid(x[i:i + 1], state=liquid.initial_state(1, v0=s0.v[i]), record_voltage=True)
        assert torch.equal(one.spikes[0], batch.spikes[i])
        assert torch.allclose(one.voltage[0], batch.voltage[i], rtol=0, atol=tol)
    # running in two pieces, carrying the state, equals one run
    first = liquid(x[:, :700], state=s0, record_voltage=True)
    second = liquid(x[:, 700:], state=first.state, record_voltage=True)
    assert torch.equal(torch.cat([first.spikes, second.spikes], 1), batch.spikes)
    assert torch.allclose(torch.cat([first.voltage, second.voltage], 1), batch.voltage,
                          rtol=0, atol=tol)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs numba")
def test_numba_kernel_equals_torch_loop():
    col = build_column(seed=3)
    x = poisson_spike_trains(3, 1, 30.0, 200.0, 0.1, seed=5, dtype=torch.float64)
    inj = 0.5 * torch.rand((3, 2000, col.n_neurons), generator=torch.Generator().manual_seed(1),
                           dtype=torch.float64)
    runs = {}
    for backend in ("torch", "numba"):
        liquid = LiquidColumn(col, dt=0.1, dtype=torch.float64, backend=backend)
        runs[backend] = liquid(x, injection=inj, seed=1, record_voltage=True,
                               record_current=True)
    a, b = runs["torch"], runs["numba"]
    assert a.spikes.any()
    assert torch.equal(a.spikes, b.spikes)   # a flip needs V within ~1e-10 mV of threshold
    # same operations in a different order: round-off (see the batch test for the bound)
    assert torch.allclose(a.voltage, b.voltage, rtol=0, atol=1e-9)
    assert torch.allclose(a.current, b.current, rtol=0, atol=1e-9)
    for name in ("facilitation", "recovery", "current", "v"):
        assert torch.allclose(getattr(a.state, name), getattr(b.state, name), rtol=0,
                              atol=1e-9)
    for name in ("refractory", "ring", "last"):
        assert torch.equal(getattr(a.state, name), getattr(b.state, name))


def test_column_runs_in_float32_and_restores_denormal_flag():
    before = flush_denormal_active()
    col = build_column(seed=0)
    liquid = LiquidColumn(col, dt=0.1)            # default dtype float32
    out = liquid(poisson_spike_trains(2, 1, 20.0, 100.0, 0.1, seed=0), seed=0)
    assert out.spikes.shape == (2, 1000, 135) and out.spikes.dtype == torch.bool
    assert flush_denormal_active() == before
    with flush_denormal():
        assert flush_denormal_active()
    assert flush_denormal_active() == before
    liquid.to(torch.float64)
    assert liquid(steps=10, batch=2, seed=0).state.v.dtype == torch.float64


def test_flush_does_not_poison_numpy_float_limits():
    # A fresh process (numpy's limits are cached on first use): numba's argument typing
    # imports numpy.ma, which computes np.finfo; under the flush that would warn and cache a
    # smallest subnormal of 0.
    script = (
        "import numpy as np, torch\n"
        "from rnnlab.reservoir.lsm import LiquidColumn, build_column\n"
        "LiquidColumn(build_column(seed=0), dt=0.1)(steps=20, seed=0)\n"
        "assert np.finfo(np.float32).smallest_subnormal > 0\n"
    )
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", script],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_analog_current_reaches_the_chosen_neurons():
    col = hand_column(3, threshold=1e6, input_weights=[[2.0, 0.0, 5.0]])
    liquid = LiquidColumn(col, dt=0.1, dtype=torch.float64)
    x = torch.full((1, 3000, 1), 3.0, dtype=torch.float64)
    out = liquid(current=x, state=liquid.initial_state(1, v0=torch.zeros(3)),
                 record_voltage=True)
    # V -> R * w * x after many tau_m (300 ms = 10 tau_m: e^{-10} relative left)
    assert out.voltage[0, -1].tolist() == pytest.approx([6.0, 0.0, 15.0], abs=15 * math.exp(-10))


def test_poisson_counts_mean_and_variance():
    rate, duration, n = 20.0, 500.0, 4000
    x = poisson_spike_trains(n, 1, rate, duration, dt=1.0, seed=7, dtype=torch.float64)
    counts = x.sum(1).flatten()
    mu = rate * duration / 1000.0                      # 10 spikes
    # Poisson(mu): mean SE sqrt(mu/n); sample variance SE sqrt((mu + 2 mu^2)/n); 6 SE bounds
    assert abs(float(counts.mean()) - mu) < 6 * math.sqrt(mu / n)
    assert abs(float(counts.var()) - mu) < 6 * math.sqrt((mu + 2 * mu**2) / n)
    assert torch.equal(x, poisson_spike_trains(n, 1, rate, duration, 1.0, seed=7,
                                               dtype=torch.float64))


def test_spike_time_lists_round_trip():
    times = [[[0.0, 1.25, 7.5], []], [[3.0], [0.1, 0.2, 9.9]]]
    r = spike_times_to_raster(times, duration=10.0, dt=0.05)
    assert r.shape == (2, 200, 2) and float(r.sum()) == 7
    back = raster_to_spike_times(r, dt=0.05)
    for b in range(2):
        for c in range(2):
            assert back[b][c].tolist() == pytest.approx(sorted(times[b][c]))
    with pytest.raises(ValueError, match="outside"):
        spike_times_to_raster([[[12.0]]], duration=10.0, dt=0.1)


def test_liquid_states_match_direct_sum():
    g = torch.Generator().manual_seed(0)
    spikes = torch.rand((2, 300, 4), generator=g) < 0.02
    dt, tau = 0.5, 30.0
    times = [10.0, 50.5, 150.0]
    got = liquid_states(spikes, dt, times, tau=tau).double()
    for b in range(2):
        for n in range(4):
            s = (spikes[b, :, n].nonzero().flatten().double() + 1) * dt
            for j, t in enumerate(times):
                ref = float(torch.exp(-(t - s[s <= t]) / tau).sum())
                assert float(got[b, j, n]) == pytest.approx(ref, rel=1e-6, abs=1e-9)


def _bad(n=1, **kw):
    return hand_column(n, **kw)


@pytest.mark.parametrize("make,match", [
    (lambda: NeuronParameters(tau_m=0.0).validate(), "tau_m"),
    (lambda: NeuronParameters(refractory=-1.0).validate(), "refractory"),
    (lambda: SynapseParameters(C=1.5, A=1, U=.5, D=1, F=1, delay=1, tau_s=3).validate(), "C"),
    (lambda: SynapseParameters(C=.5, A=1, U=.5, D=0, F=1, delay=1, tau_s=3).validate(), "D"),
    (lambda: SynapseParameters(C=.5, A=1, U=.5, D=1, F=1, delay=1, tau_s=-3).validate(), "tau_s"),
    (lambda: build_column(ColumnParameters(shape=(0, 3, 3))), "no neurons"),
    (lambda: build_column(ColumnParameters(input_probability=1.2)), "input_probability"),
    (lambda: LiquidColumn(_bad(tau_m=0.0)), "tau_m"),
    (lambda: LiquidColumn(_bad(refractory=0.1), dt=0.1), "refractory"),
    (lambda: LiquidColumn(_bad(2, edges=[dict(pre=0, post=1, amplitude=1, U=.5, D=1, F=1,
                                              delay=0.5, tau_s=3)]), dt=0.5), "delay"),
    (lambda: LiquidColumn(_bad(), dt=0.0), "dt"),
])
def test_bad_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise():
    liquid = LiquidColumn(hand_column(), dt=0.1, dtype=torch.float64)
    with pytest.raises(ValueError, match="empty"):
        liquid(torch.zeros((1, 0, 1), dtype=torch.float64))
    inj = constant_injection(1.0, 10)
    inj[0, 3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"injection.*non-finite"):
        liquid(injection=inj)
    with pytest.raises(ValueError, match="non-negative"):
        liquid(-torch.ones((1, 5, 1), dtype=torch.float64))
    with pytest.raises(ValueError, match="steps"):
        liquid()
    with pytest.raises(ValueError, match=r"n_inputs|features"):
        liquid(torch.zeros((1, 5, 2), dtype=torch.float64))
    with pytest.raises(ValueError, match="empty"):
        liquid_states(torch.zeros((1, 5, 2)), 0.1, [])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_torch_loop_equals_cpu():
    col = build_column(seed=3)
    x = poisson_spike_trains(4, 1, 30.0, 200.0, 0.1, seed=5, dtype=torch.float64)
    cpu = LiquidColumn(col, dt=0.1, dtype=torch.float64, backend="torch")
    gpu = LiquidColumn(col, dt=0.1, dtype=torch.float64, backend="auto").to("cuda")
    assert gpu.resolved_backend() == "torch"
    a = cpu(x, seed=1, record_voltage=True)
    b = gpu(x.cuda(), seed=1, record_voltage=True)
    assert torch.equal(a.spikes, b.spikes.cpu())
    # float64 on two devices: round-off only (bound as in the batch test)
    assert torch.allclose(a.voltage, b.voltage.cpu(), rtol=0, atol=1e-9)
