"""``lsm-classify``: the jitter generator, the filtered-input baseline features (against a direct
numpy sum) and a tiny run of the experiment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab.experiments import run_experiment
from rnnlab.experiments.lsm_classify import (
    draw_templates,
    input_features,
    jitter_spike_times,
    make_stimuli,
)


def test_jitter_displacement_has_requested_sd():
    gen = torch.Generator().manual_seed(0)
    n, sd = 20_000, 4.0
    times = torch.rand(n, dtype=torch.float64, generator=gen) * 1000.0
    moved = jitter_spike_times(times, sd, gen)
    d = (moved - times).numpy()
    # sample mean: SE sd/sqrt(n); sample SD of a Gaussian: relative SE 1/sqrt(2(n-1)) (0.5 %);
    # both bounds at 5 SE, so a correct generator fails them with probability < 1e-6
    assert abs(d.mean()) < 5 * sd / math.sqrt(n)
    assert abs(d.std(ddof=1) / sd - 1.0) < 5 / math.sqrt(2 * (n - 1))
    # a wrong SD (e.g. variance used as SD: 16 ms, or sd/2) is far outside that bound
    assert torch.equal(jitter_spike_times(times, 0.0, gen), times)
    with pytest.raises(ValueError, match="jitter"):
        jitter_spike_times(times, -1.0, gen)


def test_stimuli_carry_the_jitter_onto_the_grid():
    # one template spike at 100 ms, 2000 jittered copies binned at dt: the binned time
    # floor(s'/dt) dt has mean 100 - dt/2 and variance sd^2 + dt^2/12 (Gaussian + uniform
    # rounding error); spikes beyond [0, 200) have probability ~1e-138 at sd = 4 ms
    dt, sd, n = 0.1, 4.0, 2000
    templates = [[torch.tensor([100.0], dtype=torch.float64)]]
    x = make_stimuli(templates, torch.zeros(n, dtype=torch.long), sd, 200.0, dt,
                     torch.Generator().manual_seed(1))
    assert x.shape == (n, 2000, 1) and float(x.sum()) == n
    t = torch.nonzero(x[:, :, 0])[:, 1].double() * dt
    sd_expected = math.sqrt(sd**2 + dt**2 / 12)
    assert abs(float(t.mean()) - (100.0 - dt / 2)) < 5 * sd_expected / math.sqrt(n)
    assert abs(float(t.std()) / sd_expected - 1.0) < 5 / math.sqrt(2 * (n - 1))
    # spikes pushed outside [0, duration) are dropped, not clipped onto the edge
    edge = [[torch.tensor([0.5, 199.5], dtype=torch.float64)]]
    x = make_stimuli(edge, torch.zeros(400, dtype=torch.long), 20.0, 200.0, dt,
                     torch.Generator().manual_seed(2))
    per_trial = x.sum((1, 2))
    assert float(per_trial.max()) <= 2 and float(per_trial.mean()) < 1.5   # ~1 kept of 2
    assert float(x[:, 0].sum()) < 20 and float(x[:, -1].sum()) < 20        # no pile-up


def test_input_features_match_direct_exponential_filter():
    dt, tau, duration = 0.1, 30.0, 150.0
    gen = torch.Generator().manual_seed(3)
    templates = draw_templates(2, 3, 40.0, duration, gen)
    labels = torch.tensor([0, 1, 1, 0, 1])
    x = make_stimuli(templates, labels, 5.0, duration, dt, gen)
    times = (12.34, 77.77, 150.0)         # off the grid and the end (no spike sits on them)
    got = input_features(x, dt, times, tau).numpy()
    assert got.shape == (5, len(times) * 3)
    raster = x.numpy()
    ref = np.zeros((5, len(times), 3))
    for b in range(5):
        for c in range(3):
            k = np.nonzero(raster[b, :, c])[0]
            s, w = k * dt, raster[b, k, c]    # bin k of an input raster is the time k dt
            for i, t in enumerate(times):
                m = s <= t
                ref[b, i, c] = np.sum(w[m] * np.exp(-(t - s[m]) / tau))
    # float64 sums of < 20 terms <= 1 each: round-off ~20 eps64, far below 1e-12
    np.testing.assert_allclose(got, ref.reshape(5, -1), rtol=0, atol=1e-12)
    assert ref.max() > 0.5                  # the check is not vacuous


def test_lsm_classify_tiny(tmp_path):
    opts = {"seeds": "1", "classes": "2", "channels": "4", "duration": "100",
            "sample-times": "100", "jitters": "0,8", "train-per-class": "10",
            "test-per-class": "10", "workers": "1", "raster-jitter": "8"}
    result, run_dir = run_experiment("lsm-classify", opts, out_dir=tmp_path)
    assert (run_dir / "lsm_classify_accuracy.png").exists()
    assert (run_dir / "lsm_classify_raster.png").exists()
    rows = {(r["jitter"], r["model"]): r for r in result.rows}
    models = ("liquid", "input", "liquid-input")
    assert [(r["jitter"], r["model"]) for r in result.rows] == \
        [(j, m) for j in (0.0, 8.0) for m in models]
    for (j, m), r in rows.items():
        assert r["seeds"] == 1
        if m == "liquid-input":        # the paired difference of the two rows above it
            assert r["chance"] == 0.0
            assert r["accuracy"] == pytest.approx(
                rows[(j, "liquid")]["accuracy"] - rows[(j, "input")]["accuracy"], abs=1e-12)
        else:
            assert r["chance"] == 0.5 and 0.0 <= r["accuracy"] <= 1.0
    # two templates without jitter differ only by the trials' initial potentials, which this
    # column forgets within ~100 ms (docs/lsm.md): accuracy 1.0 here (20 test stimuli); 0.8
    # (4 errors) leaves the bound far from both that and chance (0.5)
    assert rows[(0.0, "liquid")]["accuracy"] >= 0.8


def test_lsm_classify_bad_options(tmp_path):
    with pytest.raises(ValueError, match="sample_times"):
        run_experiment("lsm-classify", {"duration": "100", "sample-times": "150"},
                       out_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="jitters must be distinct"):
        run_experiment("lsm-classify", {"jitters": "0,4,4"}, out_dir=tmp_path / "b")
