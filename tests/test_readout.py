"""Readouts against numpy.linalg.lstsq and the published update equations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlab.reservoir.readout import (
    LMSReadout,
    RidgeClassifierReadout,
    RidgeReadout,
    RLSReadout,
    pool_states,
)
from tests.reference import assert_within, gamma, matmul_gap


def _data(m: int, f: int, o: int, seed: int, noise: float = 0.1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, f)) + rng.uniform(-2, 2, f)  # non-zero means: the bias matters
    w = rng.standard_normal((f, o))
    c = rng.standard_normal(o)
    y = x @ w + c + noise * rng.standard_normal((m, o))
    return x, y


def _lstsq_ridge(x: np.ndarray, y: np.ndarray, alpha: float, intercept: bool):
    """Ridge as plain least squares on the augmented system [X 1; sqrt(alpha) I 0] (the
    intercept column is not penalised)."""
    m, f = x.shape
    if intercept:
        top = np.hstack([x, np.ones((m, 1))])
        reg = np.hstack([np.sqrt(alpha) * np.eye(f), np.zeros((f, 1))])
    else:
        top, reg = x, np.sqrt(alpha) * np.eye(f)
    a = np.vstack([top, reg])
    b = np.vstack([y, np.zeros((f, y.shape[1]))])
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    return (sol[:f].T, sol[f]) if intercept else (sol.T, np.zeros(y.shape[1]))


def _solve_gap(x: np.ndarray, alpha: float) -> float:
    """Relative gap between two ridge solutions whose statistics were summed in other orders
    (chunks, shards, shapes): the statistics differ by 2 gamma_m of their sums of |terms|,
    which the solve amplifies by kappa(Z^T Z + alpha I), Z = [X 1] (Higham 2002, Thm 7.2)."""
    z = np.hstack([x, np.ones((x.shape[0], 1))])
    g = z.T @ z + alpha * np.diag([1.0] * x.shape[1] + [0.0])
    return float(np.linalg.cond(g)) * 2 * gamma(x.shape[0])


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 1e-3, 10.0])
def test_ridge_matches_lstsq_on_augmented_system(intercept, alpha):
    # Normal equations against a QR least-squares solve: the relative gap of the weights is at
    # most ~ kappa(Z^T Z + alpha I) (2 gamma_300 + the solves' own n u): kappa ~ 110 here
    # (13 without the intercept), ~1e-11 in all; rtol 1e-9 leaves a factor 100.
    x, y = _data(300, 12, 3, 0)
    ro = RidgeReadout(12, 3, alpha, fit_intercept=intercept, dtype=torch.float64)
    ro.fit(torch.from_numpy(x), torch.from_numpy(y))
    w_ref, c_ref = _lstsq_ridge(x, y, alpha, intercept)
    np.testing.assert_allclose(ro.weight.numpy(), w_ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(ro.bias.numpy(), c_ref, rtol=1e-9, atol=1e-10)
    pred = ro.predict(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(pred, x @ w_ref.T + c_ref, rtol=1e-9, atol=1e-9)


def test_ridge_float32_data_is_accumulated_in_float64():
    x, y = _data(500, 8, 2, 1)
    ro = RidgeReadout(8, 2, 1e-2).fit(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    assert ro.statistics()["xtx"].dtype == torch.float64
    w_ref, c_ref = _lstsq_ridge(x.astype(np.float32).astype(np.float64),
                                y.astype(np.float32).astype(np.float64), 1e-2, True)
    assert ro.weight.dtype == torch.float32
    np.testing.assert_allclose(ro.weight.numpy(), w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ro.bias.numpy(), c_ref, rtol=1e-5, atol=1e-5)


def test_ridge_batched_states_are_flattened():
    x, y = _data(240, 5, 2, 2)
    xb = torch.from_numpy(x).view(4, 60, 5)
    yb = torch.from_numpy(y).view(4, 60, 2)
    a = RidgeReadout(5, 2, 1e-3, dtype=torch.float64).fit(xb, yb)
    b = RidgeReadout(5, 2, 1e-3, dtype=torch.float64).fit(torch.from_numpy(x),
                                                           torch.from_numpy(y))
    gap = _solve_gap(x, 1e-3)
    torch.testing.assert_close(a.weight, b.weight, rtol=gap, atol=gap * float(b.weight.abs().max()))
    assert a.predict(xb).shape == (4, 60, 2)


def test_chunked_partial_fit_and_merge_equal_one_shot():
    x, y = _data(600, 10, 2, 3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    one = RidgeReadout(10, 2, 1e-4, dtype=torch.float64).fit(xt, yt)
    streamed = RidgeReadout(10, 2, 1e-4, dtype=torch.float64)
    for i in range(0, 600, 77):
        streamed.partial_fit(xt[i:i + 77], yt[i:i + 77])
    streamed.solve()
    # chunks, shards and hand-summed statistics against one pass: other summation orders
    gap = _solve_gap(x, 1e-4)
    tol = {"rtol": gap, "atol": gap * float(one.weight.abs().max())}
    torch.testing.assert_close(streamed.weight, one.weight, **tol)
    torch.testing.assert_close(streamed.bias, one.bias, rtol=gap,
                               atol=gap * float(one.bias.abs().max()))
    shards = [RidgeReadout(10, 2, 1e-4, dtype=torch.float64).partial_fit(xt[i::3], yt[i::3])
              for i in range(3)]
    merged = shards[0].merge(shards[1]).merge(shards[2]).solve()
    torch.testing.assert_close(merged.weight, one.weight, **tol)
    # statistics: what all_reduce would sum; summing them by hand gives the same solution
    summed = RidgeReadout(10, 2, 1e-4, dtype=torch.float64)
    parts = [RidgeReadout(10, 2, 1e-4).partial_fit(xt[i::2], yt[i::2]).statistics()
             for i in range(2)]
    summed.load_statistics({k: parts[0][k] + parts[1][k] for k in parts[0]}).solve()
    torch.testing.assert_close(summed.weight, one.weight, **tol)
    assert float(summed.statistics()["count"]) == 600
    with pytest.raises(ValueError, match="merge"):
        one.merge(RidgeReadout(9, 2))


def test_singular_system_raises_or_gives_minimum_norm():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((100, 4))
    x = np.hstack([x, x[:, :2]])  # rank 4 of 6 columns
    y = rng.standard_normal((100, 1))
    ro = RidgeReadout(6, 1, 0.0, fit_intercept=False, dtype=torch.float64)
    ro.partial_fit(torch.from_numpy(x), torch.from_numpy(y))
    with pytest.raises(ValueError, match="singular"):
        ro.solve()
    assert not ro.fitted
    pinv = RidgeReadout(6, 1, 0.0, fit_intercept=False, on_singular="pinv",
                        dtype=torch.float64).fit(torch.from_numpy(x), torch.from_numpy(y))
    ref = np.linalg.lstsq(x, y, rcond=None)[0]  # minimum-norm solution
    np.testing.assert_allclose(pinv.weight.numpy(), ref.T, rtol=1e-8, atol=1e-10)
    assert bool(torch.isfinite(pinv.weight).all())
    # a tiny positive alpha regularises it: finite, close to the minimum-norm solution
    reg = RidgeReadout(6, 1, 1e-8, fit_intercept=False, dtype=torch.float64).fit(
        torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(reg.weight.numpy(), ref.T, atol=1e-6)


def test_constant_feature_with_intercept_is_singular_when_alpha_is_zero():
    x, y = _data(50, 3, 1, 5)
    x[:, 1] = 2.0  # constant column: collinear with the intercept
    ro = RidgeReadout(3, 1, 0.0, dtype=torch.float64)
    with pytest.raises(ValueError, match="singular"):
        ro.fit(torch.from_numpy(x), torch.from_numpy(y))


def test_ridge_bad_input():
    ro = RidgeReadout(3, 1, 1e-3)
    with pytest.raises(ValueError, match="no data"):
        ro.solve()
    with pytest.raises(RuntimeError, match="not fitted"):
        ro.predict(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="features"):
        ro.partial_fit(torch.zeros(5, 4), torch.zeros(5, 1))
    with pytest.raises(ValueError, match="leading"):
        ro.partial_fit(torch.zeros(5, 3), torch.zeros(4, 1))
    bad = torch.zeros(5, 3)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        ro.partial_fit(bad, torch.zeros(5, 1))
    with pytest.raises(ValueError, match="alpha"):
        RidgeReadout(3, 1, -1.0)
    with pytest.raises(ValueError, match="alpha"):
        RidgeReadout(3, 1, float("nan"))


def test_ridge_state_dict_round_trip():
    x, y = _data(80, 4, 2, 6)
    a = RidgeReadout(4, 2, 1e-3, dtype=torch.float64).fit(torch.from_numpy(x),
                                                          torch.from_numpy(y))
    b = RidgeReadout(4, 2, 1e-3, dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.predict(torch.from_numpy(x)), a.predict(torch.from_numpy(x)))
    c = a.to(torch.float32)
    assert c.weight.dtype == torch.float32 and c.statistics()["xtx"].dtype == torch.float64


# ------------------------------------------------------------------------------------------------
def test_rls_equals_ridge_on_all_weights_and_converges_to_lstsq():
    x, y = _data(200, 6, 2, 7, noise=0.0)
    delta = 0.5
    rls = RLSReadout(6, 2, forgetting=1.0, delta=delta, dtype=torch.float64)
    for t in range(200):
        rls.step(torch.from_numpy(x[t]), torch.from_numpy(y[t]))
    # exact: ridge with penalty delta on [W c] (lstsq on the augmented system, all penalised)
    z = np.hstack([x, np.ones((200, 1))])
    a = np.vstack([z, np.sqrt(delta) * np.eye(7)])
    b = np.vstack([y, np.zeros((7, 2))])
    ref = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(rls.weight.numpy(), ref[:6].T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(rls.bias.numpy(), ref[6], rtol=1e-8, atol=1e-10)
    # noiseless, forgetting 1, a weak prior (P(0) = 1e6 I): converges to the lstsq solution
    plain = np.linalg.lstsq(z, y, rcond=None)[0]
    weak = RLSReadout(6, 2, forgetting=1.0, delta=1e-6, dtype=torch.float64)
    weak.step(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(weak.weight.numpy(), plain[:6].T, atol=1e-6)
    np.testing.assert_allclose(weak.bias.numpy(), plain[6], atol=1e-6)


def test_rls_one_step_by_hand_and_prediction_before_update():
    rls = RLSReadout(2, 1, forgetting=0.9, delta=2.0, fit_intercept=False, dtype=torch.float64)
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    y = torch.tensor([3.0], dtype=torch.float64)
    pred = rls.step(x, y)
    assert float(pred) == 0.0  # W(0) = 0: the prediction is made before the update
    p0 = np.eye(2) / 2.0
    k = p0 @ x.numpy() / (0.9 + x.numpy() @ p0 @ x.numpy())
    w1 = 3.0 * k
    p1 = (p0 - np.outer(k, x.numpy() @ p0)) / 0.9
    np.testing.assert_allclose(rls.weight.numpy()[0], w1, rtol=1e-14)
    np.testing.assert_allclose(rls.P.numpy(), p1, rtol=1e-14)
    pred2 = rls.step(x, y)
    assert float(pred2) == pytest.approx(float(w1 @ x.numpy()), rel=1e-14)


def test_rls_forgetting_tracks_a_changing_target():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((400, 3))
    w_a, w_b = np.array([1.0, -1.0, 0.5]), np.array([-2.0, 0.0, 1.0])
    y = np.concatenate([x[:200] @ w_a, x[200:] @ w_b])[:, None]
    rls = RLSReadout(3, 1, forgetting=0.95, delta=1.0, fit_intercept=False, dtype=torch.float64)
    rls.step(torch.from_numpy(x), torch.from_numpy(y))  # a batch is taken sample by sample
    np.testing.assert_allclose(rls.weight.numpy()[0], w_b, atol=1e-3)
    # exact: exponentially weighted least squares, sum_m lam^(M-m) e_m^2 + lam^M delta ||W||^2
    lam, m = 0.95, 400
    sw = np.sqrt(lam ** (m - 1 - np.arange(m)))[:, None]
    a = np.vstack([sw * x, np.sqrt(lam**m * 1.0) * np.eye(3)])
    b = np.vstack([sw * y, np.zeros((3, 1))])
    ref = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(rls.weight.numpy()[0], ref[:, 0], rtol=1e-8, atol=1e-10)


def test_lms_one_step_by_hand_and_error_decreases():
    lms = LMSReadout(2, 1, lr=0.1, dtype=torch.float64)
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    y = torch.tensor([[1.5]], dtype=torch.float64)
    assert float(lms.step(x, y)) == 0.0
    np.testing.assert_allclose(lms.weight.numpy(), 0.1 * 1.5 * x.numpy())
    np.testing.assert_allclose(lms.bias.numpy(), [0.15])

    x_all, y_all = _data(3000, 4, 1, 9, noise=0.0)
    x_all -= x_all.mean(0)
    lms = LMSReadout(4, 1, lr=0.02, dtype=torch.float64)
    errs = []
    for t in range(3000):
        pred = lms.step(torch.from_numpy(x_all[t]), torch.from_numpy(y_all[t]))
        errs.append(float((pred - torch.from_numpy(y_all[t])).pow(2).sum()))
    first, last = np.mean(errs[:100]), np.mean(errs[-100:])
    assert last < 1e-3 * first
    w_ref, c_ref = _lstsq_ridge(x_all, y_all, 0.0, True)
    np.testing.assert_allclose(lms.weight.numpy(), w_ref, atol=1e-3)
    np.testing.assert_allclose(lms.bias.numpy(), c_ref, atol=1e-3)


def test_online_readouts_bad_args():
    with pytest.raises(ValueError, match="forgetting"):
        RLSReadout(3, 1, forgetting=1.5)
    with pytest.raises(ValueError, match="delta"):
        RLSReadout(3, 1, delta=0.0)
    with pytest.raises(ValueError, match="lr"):
        LMSReadout(3, 1, lr=0.0)
    with pytest.raises(ValueError, match="features"):
        LMSReadout(3, 1).step(torch.zeros(4), torch.zeros(1))


# ------------------------------------------------------------------------------------------------
def test_pool_states_with_lengths():
    s = torch.arange(2 * 4 * 3, dtype=torch.float64).view(2, 4, 3)
    lengths = torch.tensor([2, 4])
    last = pool_states(s, "last", lengths)
    torch.testing.assert_close(last, torch.stack([s[0, 1], s[1, 3]]))
    mean = pool_states(s, "mean", lengths)
    torch.testing.assert_close(mean, torch.stack([s[0, :2].mean(0), s[1].mean(0)]))
    torch.testing.assert_close(pool_states(s, "mean"), s.mean(1))
    with pytest.raises(ValueError, match="lengths"):
        pool_states(s, "last", torch.tensor([0, 4]))


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_ridge_classifier_matches_one_hot_lstsq_and_separates(pooling):
    rng = np.random.default_rng(10)
    n_cls, batch, steps, f = 3, 90, 6, 5
    labels = rng.integers(0, n_cls, batch)
    centres = 3 * rng.standard_normal((n_cls, f))
    states = centres[labels][:, None, :] + 0.3 * rng.standard_normal((batch, steps, f))
    clf = RidgeClassifierReadout(f, n_cls, alpha=1e-3, pooling=pooling, dtype=torch.float64)
    clf.fit(torch.from_numpy(states), torch.from_numpy(labels))
    feats = states[:, -1] if pooling == "last" else states.mean(1)
    w_ref, c_ref = _lstsq_ridge(feats, np.eye(n_cls)[labels], 1e-3, True)
    scores = clf.decision_function(torch.from_numpy(states)).numpy()
    np.testing.assert_allclose(scores, feats @ w_ref.T + c_ref, rtol=1e-8, atol=1e-9)
    assert (clf.predict(torch.from_numpy(states)).numpy() == labels).mean() == 1.0
    with pytest.raises(ValueError, match="labels"):
        clf.fit(torch.from_numpy(states), torch.full((batch,), 3))


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_accumulate_statistics_in_slices_against_numpy(parts):
    from concurrent.futures import ThreadPoolExecutor

    from rnnlab.reservoir.readout import accumulate_statistics

    g = np.random.default_rng(4)
    x, y = g.normal(size=(101, 7)), g.normal(size=(101, 2))
    ro = RidgeReadout(7, 2, 1e-3, dtype=torch.float64)
    with ThreadPoolExecutor(max_workers=2) as pool:
        accumulate_statistics(ro.statistics(), torch.from_numpy(x).float(),
                              torch.from_numpy(y), pool=pool, parts=parts)
    x32 = x.astype(np.float32).astype(np.float64)  # what the float32 samples hold
    stats = ro.statistics()
    # Slices summed on pool threads against numpy's one product: other summation orders,
    # so each entry within 2 gamma_101 of its sum of |terms| (tests.reference.matmul_gap).
    xt, yt = torch.from_numpy(x32), torch.from_numpy(y)
    assert_within(stats["xtx"], xt.T @ xt, matmul_gap(xt.T, xt), "xtx")
    assert_within(stats["xty"], xt.T @ yt, matmul_gap(xt.T, yt), "xty")
    assert_within(stats["sum_x"], xt.sum(0), matmul_gap(torch.ones(1, 101, dtype=torch.float64),
                                                         xt)[0], "sum_x")
    assert float(stats["count"]) == 101


def test_rls_state_dict_carries_w_and_p_and_continues_exactly():
    """W and P are in the state dict (float64 extra state): a readout saved after 7 samples,
    loaded into a fresh one, continues exactly as the one that was never stopped (the same
    computation on the same numbers: equality is exact)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    whole = RLSReadout(3, 2, forgetting=0.99, delta=0.5, dtype=torch.float64)
    first = RLSReadout(3, 2, forgetting=0.99, delta=0.5, dtype=torch.float64)
    whole.step(x, y)
    first.step(x[:7], y[:7])
    saved = first.state_dict()
    assert set(saved) == {"weight", "bias", "_extra_state"}
    again = RLSReadout(3, 2, forgetting=0.99, delta=0.5, dtype=torch.float64)
    again.load_state_dict(saved)
    again.step(x[7:], y[7:])
    assert torch.equal(again.P, whole.P) and torch.equal(again.weight, whole.weight)
    with pytest.raises(ValueError, match="W and P"):
        RLSReadout(4, 2).load_state_dict(saved)  # another size: refused
