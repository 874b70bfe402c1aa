"""The scikit-learn estimators (ESNRegressor, ESNClassifier, ESNForecaster): the numbers against
an explicit EchoStateNetwork with numpy ridge regression on the same states
(``np.linalg.lstsq``) and against hand-written loops; pipelines, searches, pandas, bad input.
scikit-learn's own estimator checks are in ``test_estimators_checks.py``."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import DataConversionWarning
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.estimators import (
    ESNClassifier,
    ESNForecaster,
    ESNRegressor,
    NotFittedError,
)
from rnnlab.tasks import mackey_glass, mackey_glass_squash
from tests.reference import esn_state_gap, gamma

F64 = torch.float64
UNITS = 20
OPTS = {"units": UNITS, "spectral_radius": 0.9, "bias_scaling": 0.2, "seed": 4}


# ------------------------------------------------------------------------------------------------
def _series(steps: int) -> np.ndarray:
    """Squashed Mackey-Glass (tau = 17), ``(steps, 1)``."""
    return mackey_glass_squash(mackey_glass(steps, seed=None, dtype=F64)).numpy().reshape(-1, 1)


def _esn(input_size: int) -> EchoStateNetwork:
    """The estimators' reservoir, built by hand with the same options."""
    return EchoStateNetwork(input_size=input_size, units=UNITS, spectral_radius=0.9,
                            bias_scaling=0.2, seed=4, dtype=F64)


def _states(esn: EchoStateNetwork, x: np.ndarray, state0: torch.Tensor | None = None
            ) -> np.ndarray:
    with torch.no_grad():
        s = esn.states(torch.from_numpy(np.ascontiguousarray(x)).view(1, len(x), -1),
                       None if state0 is None else state0.view(1, -1))
    return s[0].numpy()


def _ridge(states: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """min ||y - S w - c||^2 + alpha ||w||^2 (c not penalised) by least squares on the centred
    states stacked over sqrt(alpha) I: (w (N, O), c (O,))."""
    y = y.reshape(len(y), -1)
    mu_s, mu_y = states.mean(0), y.mean(0)
    n = states.shape[1]
    a = np.vstack([states - mu_s, np.sqrt(alpha) * np.eye(n)])
    b = np.vstack([y - mu_y, np.zeros((n, y.shape[1]))])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    return w, mu_y - mu_s @ w


def _ridge_gap(states: np.ndarray, y: np.ndarray, alpha: float, w: np.ndarray,
               c: np.ndarray, state_gap: float) -> float:
    """Bound on |prediction difference| between two ridge fits of the same problem that differ
    in the order of their sums (normal equations accumulated and solved by Cholesky here;
    QR-based least squares on centred data in the reference) and in the states by up to
    ``state_gap`` per entry. First-order perturbation of the SPD system (C + alpha I) w = b
    (Higham 2002, Thm 7.2): ||dw|| <= ||(C + alpha I)^-1|| (||dC|| ||w|| + ||db||). With
    |s| <= 1 (tanh) and M samples of N states, each of the N^2 sums of M products differs by
    <= 2 gamma_M M (and twice that through the mean term), and by <= 2 M state_gap through
    the states: ||dC||_F <= 4 N M (2 gamma_M + state_gap); likewise ||db|| <= 4 sqrt(N O) M
    max|y| (2 gamma_M + state_gap). A prediction w.s + c, with c = mean(y) - mean(s).w, then
    moves by <= 2 sqrt(N) ||dw|| + 2 ||w||_1 state_gap, plus the 2 gamma_{N+1} (||w||_1 +
    |c|) of its own sum."""
    m, n = states.shape
    y = y.reshape(m, -1)
    centred = states - states.mean(0)
    inv = 1.0 / np.linalg.eigvalsh(centred.T @ centred + alpha * np.eye(n)).min()
    per = 2 * gamma(m) + state_gap
    d_c = 4 * n * m * per
    d_b = 4 * np.sqrt(n * y.shape[1]) * m * float(np.abs(y).max()) * per
    d_w = inv * (d_c * np.linalg.norm(w) + d_b)
    w1 = float(np.abs(w).sum(0).max())
    return (2 * np.sqrt(n) * d_w + 2 * w1 * state_gap
            + 2 * gamma(n + 1) * (w1 + float(np.abs(c).max())))


# ------------------------------------------------------------------------------------------------
def test_regressor_equals_explicit_esn_and_numpy_ridge():
    s = _series(401)
    x, y = s[:-1], s[1:, 0]
    # alpha keeps ||(C + alpha I)^-1|| <= 1 / alpha, and with it the worst-case bound, small
    alpha, washout = 1e-2, 30
    est = ESNRegressor(**OPTS, alpha=alpha, washout=washout).fit(x, y)
    esn = _esn(1)
    torch.testing.assert_close(est.esn_.W, esn.W, rtol=0, atol=0)  # same constructor, seed
    states = _states(esn, x)
    w, c = _ridge(states[washout:], y[washout:], alpha)
    ref = (states @ w + c)[:, 0]
    gap = esn_state_gap(esn, len(x), float(np.abs(x).max()))
    tol = _ridge_gap(states[washout:], y[washout:], alpha, w, c, gap)
    pred = est.predict(x)
    assert pred.shape == (400,) and pred.dtype == np.float64
    np.testing.assert_allclose(pred, ref, rtol=0, atol=tol)
    # the test can fail: a washout of 5 fewer steps, twice the penalty, or no intercept move
    # the predictions well past tol
    no_intercept = np.linalg.lstsq(np.vstack([states[washout:], np.sqrt(alpha) * np.eye(UNITS)]),
                                   np.concatenate([y[washout:], np.zeros(UNITS)]), rcond=None)[0]
    for w2, c2 in (_ridge(states[washout - 5:], y[washout - 5:], alpha),
                   _ridge(states[washout:], y[washout:], 2 * alpha),
                   (no_intercept[:, None], 0.0)):
        assert np.abs(states @ w2 + c2 - ref[:, None]).max() > 10 * tol
    # multi-output y: one readout row per output
    y2 = np.stack([y, -2 * y], axis=1)
    pred2 = ESNRegressor(**OPTS, alpha=alpha, washout=washout).fit(x, y2).predict(x)
    assert pred2.shape == (400, 2)
    np.testing.assert_allclose(pred2[:, 1], -2 * pred, rtol=0, atol=4 * tol)
    # tensors in, tensors out; R^2 the same as for arrays (the same predictions: exact path)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert isinstance(est.predict(tx), torch.Tensor)
    assert est.score(tx, ty) == pytest.approx(est.score(x, y), rel=1e-12)
    assert est.score(tx[None], ty[None]) == pytest.approx(est.score(x, y), rel=1e-12)


def test_classifier_equals_explicit_esn_and_numpy_ridge():
    rng = np.random.default_rng(0)
    n, steps = 120, 15
    labels = rng.integers(0, 3, size=n)
    # three classes of noisy sequences: a sine at one of three frequencies
    t = np.arange(steps)
    x = np.sin(np.outer(labels + 1, t) * 0.5 + rng.uniform(0, 6, size=(n, 1)))
    x += 0.1 * rng.standard_normal(x.shape)
    names = np.array(["low", "mid", "high"])[labels]
    alpha = 1e-3
    esn = _esn(1)
    for pooling in ("last", "mean"):
        est = ESNClassifier(**OPTS, alpha=alpha, pooling=pooling, washout=2).fit(x, names)
        assert list(est.classes_) == ["high", "low", "mid"]  # sorted, as np.unique
        states = np.stack([_states(esn, row[:, None])[2:] for row in x])
        feats = states[:, -1] if pooling == "last" else states.mean(1)
        codes = np.searchsorted(est.classes_, names)
        w, c = _ridge(feats, np.eye(3)[codes], alpha)
        ref = feats @ w + c
        gap = esn_state_gap(esn, steps, float(np.abs(x).max()))
        tol = _ridge_gap(feats, np.eye(3)[codes], alpha, w, c, gap)
        np.testing.assert_allclose(est.decision_function(x), ref, rtol=0, atol=tol)
        margin = np.sort(ref, 1)[:, -1] - np.sort(ref, 1)[:, -2]
        assert margin.min() > 2 * tol  # no tie within round-off: the labels must agree
        np.testing.assert_array_equal(est.predict(x), est.classes_[ref.argmax(1)])
        assert est.score(x, names) > 0.75  # chance: 1/3
    # binary: decision_function is score_1 - score_0, positive means classes_[1]
    two = labels < 2
    est = ESNClassifier(**OPTS, alpha=alpha).fit(x[two], labels[two])
    dec = est.decision_function(x[two])
    assert dec.shape == (int(two.sum()),)
    np.testing.assert_array_equal(est.predict(x[two]), (dec > 0).astype(int))
    assert not hasattr(est, "predict_proba")
    # 3-D input (sequences, time, features) and tensors: the same numbers
    np.testing.assert_array_equal(est.decision_function(x[two][:, :, None]), dec)
    np.testing.assert_array_equal(est.decision_function(torch.from_numpy(x[two])), dec)


def test_forecaster_direct_equals_one_ridge_per_horizon():
    s = _series(300)
    alpha, washout, horizon = 1e-3, 20, 4
    est = ESNForecaster(**OPTS, alpha=alpha, washout=washout, horizon=horizon).fit(s)
    esn = _esn(1)
    states = _states(esn, s)
    gap = esn_state_gap(esn, len(s), float(np.abs(s).max()))
    np.testing.assert_allclose(est.state_.numpy(), states[-1], rtol=0, atol=gap)
    direct = est.forecast(horizon, method="direct")
    assert direct.shape == (horizon, 1)
    for k in range(1, horizon + 1):
        # readout k: the state after row t -> row t + k
        w, c = _ridge(states[washout:len(s) - k], s[washout + k:], alpha)
        tol = _ridge_gap(states[washout:len(s) - k], s[washout + k:], alpha, w, c, gap)
        np.testing.assert_allclose(direct[k - 1], states[-1] @ w + c, rtol=0, atol=tol)
        np.testing.assert_allclose(est.readouts_[k - 1].weight.numpy(), w.T, rtol=0,
                                   atol=tol)  # |s| <= 1: a weight gap moves outputs as much
    # good forecasts of a smooth series, and each horizon its own readout
    future = _series(300 + horizon)[300:]
    assert np.abs(direct - future).max() < 0.05
    assert not np.allclose(est.readouts_[0].weight, est.readouts_[1].weight)


def test_forecaster_free_run_equals_a_manual_loop():
    s = _series(300)
    est = ESNForecaster(**OPTS, alpha=1e-6, washout=20).fit(s)
    steps = 12
    free = est.forecast(steps, method="free")
    w_in, w, b = (t.numpy() for t in (est.esn_.W_in, est.esn_.W, est.esn_.bias))
    w_out, c = est.readouts_[0].weight.numpy(), est.readouts_[0].bias.numpy()
    x = est.state_.numpy().copy()
    manual = []
    for _ in range(steps):
        y = w_out @ x + c  # forecast of the next row, fed back as that row's input
        manual.append(y)
        x = np.tanh(w_in @ y + w @ x + b)
    manual = np.array(manual)
    # Each step's sums differ by <= 2 gamma_k m (esn_state_gap over one step) in the state and
    # 2 gamma_{N+1}(|W_out| + |c|) in the output; the closed loop carries a gap on by at most
    # L = ||W||_inf + ||W_in||_inf ||W_out||_inf per step (tanh' <= 1).
    one = esn_state_gap(est.esn_, 1, float(np.abs(manual).max()) + 1)
    out = 2 * gamma(UNITS + 1) * (np.abs(w_out).sum() + np.abs(c).max())
    lip = np.abs(w).sum(1).max() + np.abs(w_in).sum(1).max() * np.abs(w_out).sum()
    gaps, g = [], 0.0
    for _ in range(steps):
        gaps.append(np.abs(w_out).sum() * g + out)
        g = lip * g + one + np.abs(w_in).sum(1).max() * out
    assert free.shape == (steps, 1)
    np.testing.assert_array_less(np.abs(free - manual)[:, 0], np.array(gaps))
    np.testing.assert_allclose(free[0], est.forecast(1, method="direct")[0], rtol=0, atol=0)
    assert abs(free[0, 0] - _series(301)[300, 0]) < 0.01  # a good one-step forecast


def test_forecaster_partial_fit_equals_one_fit():
    s = _series(400)
    alpha, washout, horizon = 1e-3, 30, 3
    opts = dict(OPTS, alpha=alpha, washout=washout, horizon=horizon)
    whole = ESNForecaster(**opts).fit(s)
    chunked = ESNForecaster(**opts)
    for lo, hi in ((0, 17), (17, 18), (18, 150), (150, 400)):  # the washout spans two chunks
        chunked.partial_fit(s[lo:hi])
    # with y: fit(s[:-1], s[1:]) is the same model (its last target is fed before forecasting)
    paired = ESNForecaster(**opts).fit(s[:-1], s[1:, 0])
    paired_chunks = ESNForecaster(**opts)
    for lo, hi in ((0, 100), (100, 101), (101, 399)):
        paired_chunks.partial_fit(s[lo:hi], s[lo + 1:hi + 1, 0])
    assert chunked.n_steps_seen_ == whole.n_steps_seen_ == 400
    esn = _esn(1)
    states = _states(esn, s)
    # chunks restart the states from the carried state: the same sums up to their order
    gap = esn_state_gap(esn, len(s), float(np.abs(s).max()))
    np.testing.assert_allclose(chunked.state_, states[-1], rtol=0, atol=gap)
    for k in range(1, horizon + 1):
        st, tg = states[washout:400 - k], s[washout + k:]
        w, c = _ridge(st, tg, alpha)
        tol = _ridge_gap(st, tg, alpha, w, c, gap)
        # one row too few (the edge of a chunk lost) would move the weights by > 10 tol
        w_short = _ridge(st[1:], tg[1:], alpha)[0]
        assert np.abs(w_short - w).max() > 10 * tol
        for est in (whole, chunked, paired, paired_chunks):
            np.testing.assert_allclose(est.readouts_[k - 1].weight.numpy(), w.T, atol=tol,
                                       rtol=0)
            got = est.forecast(horizon, method="direct").reshape(-1)[k - 1]
            np.testing.assert_allclose(got, (states[-1] @ w + c)[0], rtol=0, atol=tol)
    with pytest.raises(ValueError, match="no training pair"):
        ESNForecaster(**opts).partial_fit(s[:10]).forecast()  # all within the washout


def test_forecaster_predict_continues_from_the_training_state():
    s = _series(300)
    est = ESNForecaster(**OPTS, alpha=1e-6, washout=20).fit(s[:200])
    state = est.state_.clone()
    pred = est.predict(s[200:299])
    torch.testing.assert_close(est.state_, state, rtol=0, atol=0)  # predict leaves it alone
    esn = _esn(1)
    cont = _states(esn, s[200:299], state)
    w, c = est.readouts_[0].weight.numpy(), est.readouts_[0].bias.numpy()
    tol = 2 * np.abs(w).sum() * esn_state_gap(esn, 99, 1.0) + 2 * gamma(UNITS + 1) * (
        np.abs(w).sum() + abs(c).max())
    np.testing.assert_allclose(pred, cont @ w.T + c, rtol=0, atol=tol)
    assert np.abs(pred - s[201:]).max() < 0.02  # one-step-ahead forecasts
    assert isinstance(est.predict(torch.from_numpy(s[200:299])), torch.Tensor)
    r2 = est.score(torch.from_numpy(s[200:299]), torch.from_numpy(s[201:]))
    assert r2 == pytest.approx(est.score(s[200:299], s[201:]), rel=1e-12) and r2 > 0.99


# ------------------------------------------------------------------------------------------------
def _regression_series(steps: int = 240) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(steps, 2)) * [1.0, 50.0]  # badly scaled: StandardScaler helps
    y = 0.6 * np.roll(x[:, 0], 1) + 0.01 * np.roll(x[:, 1], 2)
    return x, y


def test_pipeline_grid_search_and_time_series_split():
    x, y = _regression_series()
    pipe = make_pipeline(StandardScaler(), ESNRegressor(units=UNITS, washout=5))
    cv = TimeSeriesSplit(n_splits=3)
    scores = cross_val_score(pipe, x, y, cv=cv)
    assert np.isfinite(scores).all() and scores.min() > 0.5
    grid = GridSearchCV(pipe, {"esnregressor__alpha": [1e-6, 1e-2],
                               "esnregressor__units": np.arange(10, 31, 20)}, cv=cv,
                        error_score="raise")
    grid.fit(x, y)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert grid.best_score_ > 0.5
    # classifier in a grid search (sequences are exchangeable samples: plain k-fold)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=60)
    seqs = np.sin(np.outer(labels + 1, np.arange(10)) * 0.5) + 0.2 * rng.standard_normal(
        (60, 10))
    gc = GridSearchCV(ESNClassifier(units=UNITS), {"pooling": ["last", "mean"]}, cv=3)
    gc.fit(seqs, labels)
    assert np.isfinite(gc.cv_results_["mean_test_score"]).all() and gc.best_score_ > 0.8
    # the forecaster too
    s = _series(200)
    fc = cross_val_score(ESNForecaster(units=UNITS, washout=5), s[:-1], s[1:, 0], cv=cv)
    assert np.isfinite(fc).all() and fc.min() > 0.9


def test_pandas_inputs():
    x, y = _regression_series()
    frame = pd.DataFrame(x, columns=["a", "b"])
    series = pd.Series(y, name="y")
    est = ESNRegressor(units=UNITS).fit(frame, series)
    assert list(est.feature_names_in_) == ["a", "b"]
    np.testing.assert_array_equal(est.predict(frame), ESNRegressor(units=UNITS).fit(x, y)
                                  .predict(x))
    with pytest.warns(UserWarning, match="feature names"):
        est.predict(x)
    fc = ESNForecaster(units=UNITS, horizon=2).fit(pd.DataFrame({"s": _series(100)[:, 0]}))
    assert fc.forecast().shape == (2, 1)
    clf = ESNClassifier(units=UNITS).fit(pd.DataFrame(np.eye(4)), pd.Series(list("abab")))
    assert set(clf.predict(pd.DataFrame(np.eye(4)))) <= {"a", "b"}


# ------------------------------------------------------------------------------------------------
def test_bad_input_and_parameters():
    x, y = _regression_series(50)
    for est in (ESNRegressor(), ESNClassifier(), ESNForecaster()):
        with pytest.raises(NotFittedError, match="not fitted"):
            est.predict(x)
        with pytest.raises(RuntimeError):  # what ESNRegressor raised before
            est.predict(x)
    with pytest.raises(ValueError, match=r"(?i)complex"):
        ESNRegressor(units=UNITS).fit(x + 1j, y)
    with pytest.raises(ValueError, match=r"(?i)complex"):
        ESNRegressor(units=UNITS).fit(torch.from_numpy(x + 1j), y)
    with pytest.raises(ValueError, match="NaN"):
        ESNRegressor(units=UNITS).fit(torch.full((5, 2), float("nan")), torch.zeros(5))
    with pytest.raises(ValueError, match="1D array"):
        ESNRegressor(units=UNITS).fit(x, y).predict(x[:, 0])
    with pytest.raises(ValueError, match="dtype must be"):
        ESNRegressor(units=UNITS, dtype="int8").fit(x, y)
    with pytest.raises(ValueError, match="alpha"):
        ESNRegressor(units=UNITS, alpha=-1.0).fit(x, y)
    with pytest.raises(ValueError, match="pooling"):
        ESNClassifier(units=UNITS, pooling="max").fit(x, y > 0)
    with pytest.raises(ValueError, match="2 classes"):
        ESNClassifier(units=UNITS).fit(x, np.zeros(50))
    with pytest.raises(ValueError, match="Unknown label type"):
        ESNClassifier(units=UNITS).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataConversionWarning)
        with pytest.raises(DataConversionWarning):
            ESNClassifier(units=UNITS).fit(x, (y > 0)[:, None])
    fc = ESNForecaster(units=UNITS, horizon=2).fit(x, y)
    with pytest.raises(ValueError, match="as many features as y has outputs"):
        fc.forecast()
    with pytest.raises(ValueError, match="horizon >= 3"):
        ESNForecaster(units=UNITS, horizon=2).fit(_series(50)).forecast(3)
    with pytest.raises(ValueError, match="method must be one of"):
        ESNForecaster(units=UNITS).fit(_series(50)).forecast(method="recursive")
    with pytest.raises(ValueError, match=r"partial_fit\(X, y\)"):
        fc.partial_fit(x)
    with pytest.raises(ValueError, match="n_samples = 3"):
        ESNForecaster(units=UNITS, horizon=3, washout=1).fit(_series(3))
    with pytest.raises(ValueError, match="invalid parameter 'nope'"):
        ESNForecaster().set_params(nope=1)
    assert ESNRegressor(dtype=torch.float32).fit(x, y).predict(x).dtype == np.float32
