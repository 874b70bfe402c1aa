"""rnnlab.reservoir.tuning (moved out of the esn-forecast experiment, issue 11 item 3): each
function against an independent reference — numpy ridge regression, a brute-force grid search
over separately built networks, the weight structure of Rodan & Tino's reservoirs, NRMSE by
hand. The experiment's own tests (test_experiment_reservoir.py) check grid_states and free_run
against plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnlab.reservoir.tuning import (
    Series,
    build_reservoir,
    free_run,
    freerun_scores,
    grid_search,
    one_step_score,
    ridge_fits,
    trial_starts,
)
from tests.reference import gamma


def _np_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """min ||Y - X W^T - 1 c^T||^2 + alpha ||W||^2 by lstsq on the centred, augmented system."""
    mx, my = x.mean(0), y.mean(0)
    a = np.vstack([x - mx, math.sqrt(alpha) * np.eye(x.shape[1])])
    b = np.vstack([y - my, np.zeros((x.shape[1], y.shape[1]))])
    w = np.linalg.lstsq(a, b, rcond=None)[0].T
    return w, my - w @ mx


def _np_states(w: np.ndarray, w_in: np.ndarray, u: np.ndarray) -> np.ndarray:
    """x(t) = tanh(W x(t-1) + W_in u(t)), x(-1) = 0 (leak 1, no bias)."""
    x, out = np.zeros(w.shape[0]), []
    for u_t in u:
        x = np.tanh(w @ x + w_in[:, 0] * u_t)
        out.append(x)
    return np.array(out)


def _series(length: int = 260, seed: int = 0) -> Series:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(1, length + 1, 1, generator=g, dtype=torch.float64) - 0.5
    # a target that needs memory: y(t) = u(t - 1) u(t - 2) + 0.5 u(t - 3)
    y = torch.zeros_like(u)
    y[0, 3:, 0] = u[0, 2:-1, 0] * u[0, 1:-2, 0] + 0.5 * u[0, :-3, 0]
    return Series(u[:, :-1], y[:, 1:], slice(20, 160), slice(160, 210), slice(210, length))


def test_ridge_fits_match_numpy_ridge():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 7, generator=g, dtype=torch.float64)
    y = torch.randn(300, 2, generator=g, dtype=torch.float64) + x[:, :2].sum(1, keepdim=True)
    alphas = (1e-6, 0.1, 10.0)
    fits = ridge_fits(x, y, alphas)
    assert len(fits) == 3
    for ro, alpha in zip(fits, alphas, strict=True):
        w, c = _np_ridge(x.numpy(), y.numpy(), alpha)
        # Two solvers of the same well-posed system: the gap is bounded by the condition number
        # of C_xx + alpha I (here < 10: Gaussian columns, M = 300 >> F = 7) times the
        # accumulation round-off gamma_M of the sums; 1e3 * gamma_M covers it with margin.
        cond = float(np.linalg.cond(np.cov(x.numpy().T) * 299 + alpha * np.eye(7)))
        tol = 1e3 * cond * gamma(300)
        np.testing.assert_allclose(ro.weight.numpy(), w, rtol=0, atol=tol * np.abs(w).max())
        np.testing.assert_allclose(ro.bias.numpy(), c, rtol=0, atol=tol * (np.abs(c).max() + 1))


def test_grid_search_equals_brute_force_over_separate_networks():
    series = _series()
    radii, scalings, ridges = (0.5, 0.9), (0.2, 1.0), (1e-8, 1e-2)
    kw = {"seed": 4, "density": 0.3, "dlrb_feedback": 0.05, "input_signs": "pi",
          "dtype": torch.float64}
    u = series.inputs[0, :, 0].numpy()
    y = series.targets[0, :, 0].numpy()[:, None]
    scores = {}
    for r in radii:
        for v in scalings:
            esn = build_reservoir("esn", 12, r, input_scaling=v, **kw)
            xs = _np_states(esn.W.numpy(), esn.W_in.numpy(), u)
            for alpha in ridges:
                w, c = _np_ridge(xs[series.train], y[series.train], alpha)
                pred = xs[series.validation] @ w.T + c
                target = y[series.validation]
                scores[(r, v, alpha)] = float(np.mean((pred - target) ** 2) / np.var(target))
    ranked = sorted(scores, key=scores.get)
    # the test is only meaningful off a tie: the best beats the runner-up by far more than
    # the two code paths' round-off (states ~1e-15, ridge solves ~1e-12 relative)
    assert scores[ranked[1]] - scores[ranked[0]] > 1e-6 * scores[ranked[0]]

    def nmse(p: torch.Tensor, t: torch.Tensor) -> float:
        return float(((p - t) ** 2).mean() / t.var(unbiased=False))

    best = grid_search(lambda r: build_reservoir("esn", 12, r, **kw), series, radii, scalings,
                       ridges, one_step_score(series, nmse))
    assert (best["radius"], best["v"], best["alpha"]) == ranked[0]
    assert best["score"] == pytest.approx(scores[ranked[0]], rel=1e-7)
    # the returned network carries the chosen input scaling: its W_in is v times the v=1 one
    ref = build_reservoir("esn", 12, best["radius"], input_scaling=best["v"], **kw)
    torch.testing.assert_close(best["esn"].W_in, ref.W_in, rtol=4 * 2**-53, atol=0)


def test_grid_search_counts_a_non_finite_score_as_worst_and_rejects_an_empty_grid():
    series = _series()
    calls = []

    def score(esn, xs, readouts):
        calls.append(len(readouts))
        return [math.nan, 1.0] if len(calls) == 1 else [2.0, math.inf]

    best = grid_search(lambda r: build_reservoir("scr", 8, r, seed=0, density=1.0,
                                                 dlrb_feedback=0.0, input_signs="pi"),
                       series, (0.5,), (1.0, 0.5), (1e-6, 1e-3), score)
    assert (best["v"], best["alpha"], best["score"]) == (1.0, 1e-3, 1.0)
    with pytest.raises(ValueError, match="empty"):
        grid_search(lambda r: build_reservoir("dlr", 8, r, seed=0, density=1.0,
                                              dlrb_feedback=0.0, input_signs="pi"),
                    series, (), (1.0,), (1e-6,), score)


def test_build_reservoir_structures_and_spectral_radius():
    kw = {"seed": 0, "density": 0.5, "dlrb_feedback": 0.05, "input_signs": "pi"}
    n, r = 6, 0.7
    dlr = build_reservoir("dlr", n, r, **kw).W.numpy()
    np.testing.assert_array_equal(dlr, np.diag(np.full(n - 1, r), -1))     # W[i+1, i] = r
    dlrb = build_reservoir("dlrb", n, r, **kw).W.numpy()
    np.testing.assert_array_equal(dlrb, np.diag(np.full(n - 1, r), -1)
                                  + np.diag(np.full(n - 1, 0.05), 1))
    scr = build_reservoir("scr", n, r, **kw).W.numpy()
    cycle = np.diag(np.full(n - 1, r), -1)
    cycle[0, n - 1] = r
    np.testing.assert_array_equal(scr, cycle)
    # Rodan & Tino's inputs: one absolute value v, signs from the digits of pi, so the same
    # whatever the seed
    w_in = build_reservoir("scr", n, r, input_scaling=0.3, **kw).W_in.numpy()
    np.testing.assert_allclose(np.abs(w_in), 0.3)
    np.testing.assert_array_equal(w_in, build_reservoir("scr", n, r, input_scaling=0.3,
                                                         **{**kw, "seed": 9}).W_in.numpy())
    esn = build_reservoir("esn", 40, 0.9, **kw).W.numpy()
    # eigenvalues by LAPACK against the builder's scaling (its own eigen solver): both
    # backward stable, so the gap is a few eps times ||W||
    assert max(abs(np.linalg.eigvals(esn))) == pytest.approx(0.9, abs=1e-10)
    with pytest.raises(ValueError, match="unknown reservoir model"):
        build_reservoir("lstm", n, r, **kw)
    with pytest.raises(ValueError, match="input_signs"):
        build_reservoir("scr", n, r, **{**kw, "input_signs": "e"})


def test_freerun_scores_closed_form_and_trial_starts():
    pred = torch.tensor([[[1.0, 2.0], [0.0, 4.0]]], dtype=torch.float64)   # (A=1, K=2, H=2)
    true = torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    at_h, over = freerun_scores(pred, true, var=2.0)
    # at H: errors 2^2, 2^2 -> mean 4 / 2; over all: (1 + 4 + 0 + 4) / 4 / 2
    assert float(at_h[0]) == pytest.approx(math.sqrt(2.0), rel=1e-15)
    assert float(over[0]) == pytest.approx(math.sqrt(9 / 8), rel=1e-15)
    assert trial_starts(slice(100, 150), 20, 10) == [100, 110, 120, 130]


def test_free_run_of_two_readouts_equals_two_single_runs():
    series = _series()
    esn = build_reservoir("esn", 10, 0.8, seed=1, density=0.5, dlrb_feedback=0.0,
                          input_signs="pi", input_scaling=0.5)
    states = esn.states(series.inputs)[0]
    readouts = ridge_fits(states[series.train], series.targets[0, series.train], (1e-6, 1e-2))
    starts = trial_starts(series.test, 12, 15)
    both, true = free_run(esn, readouts, states, series, starts, 12)
    for a, ro in enumerate(readouts):
        one, true1 = free_run(esn, [ro], states, series, starts, 12)
        # the same operations on the same rows, batched by readout: bmm's blocks may sum in
        # another order, so allow a few units of round-off per step carried over 12 steps
        torch.testing.assert_close(both[a], one[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(true, true1, rtol=0, atol=0)


def test_old_import_path_still_works():
    from rnnlab.experiments import esn_forecast as old
    from rnnlab.reservoir import tuning

    for name in ("build_reservoir", "grid_states", "ridge_fits", "grid_search", "free_run",
                 "trial_starts", "freerun_scores", "one_step_score", "Series"):
        assert getattr(old, name) is getattr(tuning, name)
