"""``esn-forecast`` and ``reservoir-topologies``: tiny end-to-end runs checked against plain
numpy re-computations (reservoir loop, ridge by lstsq, free run) and scipy's tests."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from scipy import stats

from rnnlab.experiments import get_experiment, resolve_config, run_experiment
from rnnlab.experiments.esn_forecast import (
    build_reservoir,
    free_run,
    grid_states,
    ridge_fits,
    task_series,
    trial_starts,
)
from rnnlab.experiments.reservoir_topologies import significance_test
from rnnlab.reservoir import EchoStateNetwork
from rnnlab.reservoir.graphs import graph_reservoir
from rnnlab.tasks import mackey_glass
from tests.reference import carried_gaps, esn_state_gap, gamma, unit_roundoff

SPLIT = {"washout": 50, "train": 400, "validation": 150, "test": 200}
FORECAST = {"sizes": "16,24", "seeds": "2", "radii": "0.8,0.95", "input-scalings": "0.3,1",
            "ridges": "1e-4", "horizon": "20", "trial-every": "25",
            **{k: str(v) for k, v in SPLIT.items()}}
TOPO = {"units": "24", "seeds": "3", "mean-degree": "6", "waxman-alpha": "0.5", "growth-alpha": "1",
        "washout": "50", "train": "400", "validation": "150", "test": "200",
        "radii": "0.8,0.95", "input-scalings": "0.3,1", "ridges": "1e-8"}


def _metrics(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


# --- plain references -----------------------------------------------------------------------------
def _np_states(w: np.ndarray, w_in: np.ndarray, u: np.ndarray) -> np.ndarray:
    """x(t) = tanh(W x(t-1) + W_in u(t)), x(-1) = 0 (leak 1, no bias), one step at a time."""
    x = np.zeros(w.shape[0])
    out = []
    for u_t in u:
        x = np.tanh(w @ x + w_in[:, 0] * u_t)
        out.append(x)
    return np.array(out)


def _np_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """min ||y - X w - c||^2 + alpha ||w||^2 by lstsq on the centred, augmented system."""
    mx, my = x.mean(0), y.mean()
    a = np.vstack([x - mx, math.sqrt(alpha) * np.eye(x.shape[1])])
    b = np.concatenate([y - my, np.zeros(x.shape[1])])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    return w, my - mx @ w


def _np_nrmse(p: np.ndarray, y: np.ndarray) -> float:
    return math.sqrt(np.mean((p - y) ** 2) / np.var(y))


# ------------------------------------------------------------------------------------------------
def test_grid_batch_equals_separately_built_networks():
    u = torch.rand(1, 120, 1, dtype=torch.float64)
    for model in ("esn", "scr", "dlrb"):
        base = build_reservoir(model, 12, 0.9, seed=3, density=0.2, dlrb_feedback=0.05,
                               input_signs="random", dtype=torch.float64)
        batch = grid_states(base, u, (0.3, 1.7))
        for g, v in enumerate((0.3, 1.7)):
            fresh = build_reservoir(model, 12, 0.9, seed=3, density=0.2, dlrb_feedback=0.05,
                                    input_signs="random", input_scaling=v,
                                    dtype=torch.float64)
            ref = _np_states(fresh.W.numpy(), fresh.W_in.numpy(), u[0, :, 0].numpy())
            # v (W_in u) against (v W_in) u, numpy's sums against torch's: the update's
            # round-off bound over 120 steps (tests.reference.esn_state_gap)
            np.testing.assert_allclose(batch[g].numpy(), ref, rtol=0,
                                       atol=esn_state_gap(fresh, 120, float(u.abs().max())))


def test_free_run_matches_a_plain_loop():
    series = task_series("mackey-glass", 1, 50, 300, 0, 200, torch.float64)
    esn = EchoStateNetwork(input_size=1, units=15, spectral_radius=0.9, density=0.3,
                           input_scaling=0.5, seed=2, dtype=torch.float64)
    states = esn.states(series.inputs)[0]
    readouts = ridge_fits(states[series.train], series.targets[0, series.train], (1e-6, 1e-3))
    starts = trial_starts(series.test, 25, 60)
    assert starts == [350, 410, 470] and starts[-1] + 25 <= series.test.stop
    pred, true = free_run(esn, readouts, states, series, starts, 25)
    s = np.concatenate([series.inputs[0, :1, 0].numpy(), series.targets[0, :, 0].numpy()])
    w, w_in, xs = esn.W.numpy(), esn.W_in.numpy()[:, 0], states.numpy()
    n = w.shape[0]
    for a, ro in enumerate(readouts):
        w_out, c = ro.weight.numpy()[0], float(ro.bias)
        for k, t0 in enumerate(starts):
            x, u, outs, jacs = xs[t0 - 1], s[t0], [], []
            for _ in range(25):
                x = np.tanh(w @ x + w_in * u)
                u = w_out @ x + c
                outs.append(u)
                # the closed loop x -> tanh(W x + w_in (w_out x + c)): its Jacobian
                jacs.append(torch.from_numpy((1 - x**2)[:, None] * (w + np.outer(w_in, w_out))))
            # Tolerance from the computation: each step's sums (N + 1 terms, |x| <= 1) differ
            # by 2 gamma_(N+1) of their sizes between numpy and torch, y = w_out x + c too;
            # the closed loop carries the gaps on (tests.reference.carried_gaps), and y's gap
            # is |w_out| times the states' plus its own round-off.
            u_max = max(abs(v) for v in [*outs, s[t0]])
            y_round = 2 * gamma(n + 1) * (np.abs(w_out).sum() + abs(c))
            delta = (2 * gamma(n + 1) * (np.abs(w).sum(1).max() + np.abs(w_in).max() * u_max)
                     + np.abs(w_in).max() * y_round + 4 * unit_roundoff(torch.float64))
            tol = [np.abs(w_out).sum() * e + y_round for e in carried_gaps(jacs, delta)]
            assert np.all(np.abs(pred[a, k].numpy() - outs) <= tol), (a, k)
            np.testing.assert_array_equal(true[k].numpy(), s[t0 + 1:t0 + 26])  # copied data


# ------------------------------------------------------------------------------------------------
def test_esn_forecast_end_to_end(tmp_path):
    result, run_dir = run_experiment("esn-forecast", FORECAST, out_dir=tmp_path)
    rows = result.rows
    assert len(rows) == 2 * 4 * 2
    assert {(r["task"], r["model"], r["N"]) for r in rows} == {
        (t, m, n) for t in ("mackey-glass", "narma10") for m in ("esn", "dlr", "dlrb", "scr")
        for n in (16, 24)}
    for key in ("one_step_nrmse", "one_step_nrmse_std", "one_step_nmse", "freerun_nrmse84",
                "freerun_nrmse84_std", "freerun_nrmse_horizon", "radius", "input_scaling",
                "ridge", "seeds"):
        assert key in rows[0]
    runs = _metrics(run_dir)
    assert len(runs) == 2 * 4 * 2 * 2
    for r in rows:
        sel = [float(m["one_step_nrmse"]) for m in runs
               if (m["task"], m["model"], int(m["N"])) == (r["task"], r["model"], r["N"])]
        assert r["one_step_nrmse"] == pytest.approx(np.mean(sel), rel=1e-12)
        assert r["one_step_nrmse_std"] == pytest.approx(np.std(sel, ddof=1), rel=1e-9)
        assert math.isfinite(r["one_step_nrmse"])
        if r["task"] == "mackey-glass":
            assert math.isfinite(r["freerun_nrmse84"]) and r["freerun_nrmse84"] >= 0
        else:
            assert math.isnan(r["freerun_nrmse84"])
    # the trivial "tomorrow = today" predictor, computed here from the series itself
    for seed in (0, 1):
        s = (mackey_glass(1 + sum(SPLIT.values()), seed=seed, dtype=torch.float64) - 1).numpy()
        start = SPLIT["washout"] + SPLIT["train"] + SPLIT["validation"]
        persistence = _np_nrmse(s[start:-1], s[start + 1:])
        for m in runs:
            if m["task"] == "mackey-glass" and int(m["seed"]) == seed:
                assert float(m["persistence_nrmse"]) == pytest.approx(persistence, rel=1e-10)
                assert float(m["one_step_nrmse"]) < 0.2 * persistence
    assert {p.name for p in result.plots} == {"freerun_mackey_glass.png", "error_vs_n.png"}
    assert all(p.is_file() for p in result.plots)

    # one run re-computed from scratch with numpy: states, ridge (lstsq), one-step, free run
    m = next(r for r in runs if (r["task"], r["model"], r["N"], r["seed"])
             == ("mackey-glass", "esn", "16", "1"))
    esn = EchoStateNetwork(input_size=1, units=16, spectral_radius=float(m["radius"]), density=0.1,
                           input_scaling=float(m["input_scaling"]), seed=1, dtype=torch.float64)
    s = (mackey_glass(1 + sum(SPLIT.values()), seed=1, dtype=torch.float64) - 1).numpy()
    u, y = s[:-1], s[1:]
    x = _np_states(esn.W.numpy(), esn.W_in.numpy(), u)
    a, b = SPLIT["washout"], SPLIT["washout"] + SPLIT["train"]
    c = b + SPLIT["validation"]
    w_out, bias = _np_ridge(x[a:b], y[a:b], float(m["ridge"]))
    assert float(m["one_step_nrmse"]) == pytest.approx(_np_nrmse(x[c:] @ w_out + bias, y[c:]),
                                                       rel=1e-7)
    errors = []
    for t0 in range(c, len(u) - 20 + 1, 25):
        xt, ut = x[t0 - 1], u[t0]
        for _ in range(20):
            xt = np.tanh(esn.W.numpy() @ xt + esn.W_in.numpy()[:, 0] * ut)
            ut = xt @ w_out + bias
        errors.append((ut - s[t0 + 20]) ** 2)
    nrmse84 = math.sqrt(np.mean(errors) / np.var(y[c:]))
    assert float(m["freerun_nrmse84"]) == pytest.approx(nrmse84, rel=1e-6)


def test_esn_forecast_is_seeded(tmp_path):
    opts = {**FORECAST, "sizes": "12", "seeds": "1", "tasks": "narma10", "models": "esn,scr"}
    first, _ = run_experiment("esn-forecast", opts, out_dir=tmp_path / "a")
    second, _ = run_experiment("esn-forecast", opts, out_dir=tmp_path / "b")
    assert first.rows == second.rows


# ------------------------------------------------------------------------------------------------
def test_reservoir_topologies_end_to_end(tmp_path):
    result, run_dir = run_experiment("reservoir-topologies", TOPO, out_dir=tmp_path)
    topologies = ("random", "small_world", "scale_free", "spatial", "spatial_growth", "dlr",
                  "dlrb", "scr")
    tasks = ("narma10", "mackey-glass", "memory-capacity")
    assert [(r["task"], r["topology"]) for r in result.rows] == [
        (t, k) for t in tasks for k in topologies]
    runs = _metrics(run_dir)
    assert len(runs) == 3 * len(topologies)
    for row in result.rows:
        scores = [float(m[row["task"]]) for m in runs if m["topology"] == row["topology"]]
        ref = [float(m[row["task"]]) for m in runs if m["topology"] == "random"]
        assert len(scores) == 3 and all(math.isfinite(v) for v in scores)
        assert row["mean"] == pytest.approx(np.mean(scores), rel=1e-12)
        assert row["std"] == pytest.approx(np.std(scores, ddof=1), rel=1e-9)
        if row["topology"] == "random":
            assert math.isnan(row["p_value"]) and row["verdict"] == "reference"
            continue
        p = stats.ttest_ind(scores, ref, equal_var=False).pvalue
        assert row["p_value"] == pytest.approx(p, rel=1e-10)
        significant = row["verdict"].startswith("significantly")
        # the verdict follows the run's own p (scipy's may sit on the other side of 0.05 when
        # the two are within round-off of it)
        assert significant == (row["p_value"] < 0.05)
    nnz = {r["topology"]: r["nnz_per_row"] for r in result.rows if r["task"] == "narma10"}
    assert nnz["random"] == nnz["small_world"] == 6.0
    # the grown graph's beta is bisected per seed to exactly 24 * 6 / 2 edges
    assert nnz["spatial_growth"] == 6.0
    assert nnz["scale_free"] == 2 * 3 * (24 - 3) / 24
    assert nnz["scr"] == 1.0 and nnz["dlr"] == 23 / 24 and nnz["dlrb"] == 2 * 23 / 24
    mc = [r["mean"] for r in result.rows if r["task"] == "memory-capacity"]
    assert all(0 < v <= 2 * 24 for v in mc)
    assert (run_dir / "topologies.png").is_file()

    # graph-reservoir scores re-computed with numpy, at the setting the tuning chose
    for topology, extra in (("small_world", {"rewire": 0.1}),
                            ("spatial_growth", {"growth_alpha": 1.0})):
        m = next(r for r in runs if (r["topology"], r["seed"]) == (topology, "2"))
        radius, v, alpha = map(float, m["narma10_setting"].split("/"))
        assert radius in (0.8, 0.95) and v in (0.3, 1.0) and alpha == 1e-8
        w = graph_reservoir(topology, 24, 6, **extra, spectral_radius=radius, seed=2,
                            dtype=torch.float64)
        esn = EchoStateNetwork(input_size=1, units=24, topology=w, input_scaling=v, seed=2,
                               dtype=torch.float64)
        series = task_series("narma10", 2, 50, 400, 150, 200, torch.float64)
        u, y = series.inputs[0, :, 0].numpy(), series.targets[0, :, 0].numpy()
        x = _np_states(w.numpy(), esn.W_in.numpy(), u)
        w_out, bias = _np_ridge(x[50:450], y[50:450], alpha)
        assert float(m["narma10"]) == pytest.approx(
            _np_nrmse(x[600:] @ w_out + bias, y[600:]), rel=1e-6)
        # the chosen setting is the best of the grid on the validation segment
        val = []
        for r in (0.8, 0.95):
            wr = graph_reservoir(topology, 24, 6, **extra, spectral_radius=r, seed=2,
                                 dtype=torch.float64).numpy()
            for s in (0.3, 1.0):
                xr = _np_states(wr, s * esn.W_in.numpy() / v, u)
                wo, b0 = _np_ridge(xr[50:450], y[50:450], 1e-8)
                val.append((_np_nrmse(xr[450:600] @ wo + b0, y[450:600]), r, s))
        assert min(val)[1:] == (radius, v)


def test_mann_whitney_p_values_equal_scipy(tmp_path):
    opts = {**TOPO, "seeds": "4", "tasks": "narma10",
            "topologies": "random,scr,spatial,spatial_growth",
            "test-name": "mannwhitney", "tune": "false"}
    result, run_dir = run_experiment("reservoir-topologies", opts, out_dir=tmp_path)
    runs = _metrics(run_dir)
    ref = [float(m["narma10"]) for m in runs if m["topology"] == "random"]
    for row in result.rows[1:]:
        scores = [float(m["narma10"]) for m in runs if m["topology"] == row["topology"]]
        p = stats.mannwhitneyu(scores, ref, alternative="two-sided").pvalue
        assert row["p_value"] == pytest.approx(p, rel=1e-12)
    assert {m["narma10_setting"] for m in runs} == {"0.9/0.3/1e-08"}    # no tuning
    again, _ = run_experiment("reservoir-topologies", opts, out_dir=tmp_path / "again")
    assert [r["mean"] for r in again.rows] == [r["mean"] for r in result.rows]


def test_significance_test_edge_cases():
    assert significance_test("welch", [1.0, 1.0], [1.0, 1.0]) == 1.0
    assert significance_test("welch", [1.0, 1.0], [2.0, 2.0]) == 0.0
    a, b = [0.1, 0.3, 0.2, 0.25], [0.5, 0.45, 0.6, 0.4]
    assert significance_test("welch", a, b) == pytest.approx(
        stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-14)
    with pytest.raises(ValueError, match="test"):
        significance_test("ks", a, b)


@pytest.mark.parametrize("name,opts,match", [
    ("esn-forecast", {"models": "esn,lstm"}, "unknown models"),
    ("esn-forecast", {"models": "esn,esn"}, "duplicates"),
    ("esn-forecast", {"tasks": "lorenz"}, "tasks"),
    ("esn-forecast", {"sizes": "1,10"}, "sizes"),
    ("esn-forecast", {"radii": "0,0.5"}, "radii"),
    ("esn-forecast", {"input-scalings": "-1"}, "input_scalings"),
    ("esn-forecast", {"ridges": "-1e-6"}, "ridges"),
    ("esn-forecast", {"density": "1.5"}, "density"),
    ("esn-forecast", {"validation": "50"}, "horizon"),
    ("esn-forecast", {"input-signs": "e"}, "input_signs"),
    ("esn-forecast", {"dtype": "float16"}, "dtype"),
    ("esn-forecast", {"seeds": "0"}, "seeds"),
    ("reservoir-topologies", {"topologies": "scr,dlr"}, "random"),
    ("reservoir-topologies", {"seeds": "1"}, "significance test"),
    ("reservoir-topologies", {"mean-degree": "5"}, "even mean_degree"),
    ("reservoir-topologies", {"mean-degree": "100"}, "mean_degree"),
    ("reservoir-topologies", {"graph-mode": "both"}, "graph_mode"),
    ("reservoir-topologies", {"test-name": "ks"}, "test_name"),
    ("reservoir-topologies", {"significance": "1.5"}, "significance"),
    ("reservoir-topologies", {"rewire": "2"}, "rewire"),
    ("reservoir-topologies", {"growth-alpha": "0"}, "growth_alpha"),
    ("reservoir-topologies", {"topologies": "random,spatial_growth", "mean-degree": "1"},
     "spatial_growth is connected"),
    ("reservoir-topologies", {"spectral-radius": "0"}, "spectral_radius"),
    ("reservoir-topologies", {"mc-ridge": "-1"}, "mc_ridge"),
    ("reservoir-topologies", {"radii": "0"}, "radii"),
    ("reservoir-topologies", {"validation": "0"}, "validation"),
])
def test_bad_options(name, opts, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(get_experiment(name), opts)


def test_check_choices_messages():
    from rnnlab.experiments.registry import check_choices

    check_choices("models", ("a", "b"), ("a", "b", "c"))
    with pytest.raises(ValueError, match="must name at least one of a, b"):
        check_choices("models", (), ("a", "b"))
    with pytest.raises(ValueError, match=r"unknown model \['z'\]; valid: a, b"):
        check_choices("models", ("a", "z"), ("a", "b"), item="model")
    with pytest.raises(ValueError, match="duplicates"):
        check_choices("models", ("a", "a"), ("a", "b"))
    check_choices("models", ("a", "a"), ("a", "b"), unique=False)
