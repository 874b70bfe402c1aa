"""Reservoir-computing tasks: NARMA, Hénon, Lorenz, channel equalization, Japanese Vowels.

Every generator is checked against its formula recomputed here by a plain loop over the
returned inputs, and against an independent reference: closed-form fixed points, published
Lyapunov exponents, scipy's high-order ODE solver, scipy's statistical tests, numpy's least
squares, and aeon's own loader.

Tolerances. The recomputed recursions (NARMA, Hénon, channel) make a few ulps of round-off per
step (at most ~15 u of terms of O(1)); the one-step checks (Hénon, the channel) start each
step from the generator's own value, so nothing accumulates: 1e-12 absolute. NARMA is run
freely, but its map contracts on these inputs (the derivatives of y(t+1) by y(t), ..., y(t-9)
add up to about 0.3 + 0.05 (10 y_mean + 2 y) ~ 0.58 with y_mean = 0.4, y <= 0.8), so the gap
stays within ~2.5 x one step's, far below 1e-12.
"""

import math
import sys

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import solve_ivp

from rnnlab.tasks.channel import (
    CHANNEL_TAPS,
    SYMBOLS,
    channel_equalization,
    nearest_symbol,
    symbol_error_rate,
)
from rnnlab.tasks.chaotic import henon, henon_fixed_points, lorenz, lorenz_equilibria, lorenz_rhs
from rnnlab.tasks.narma import narma, narma_targets
from rnnlab.tasks.prediction import nrmse
from rnnlab.tasks.vowels import classification_accuracy, japanese_vowels

F64 = torch.float64

# ----------------------------------------------------------------------------- NARMA


def narma_reference(u, order):
    """The formulas of Rodan & Tino (2011), on a dict indexed by time (zero history)."""
    a, b, c, d = (0.3, 0.05, 1.5, 0.1) if order == 10 else (0.3, 0.05, 1.5, 0.01)
    y = {t: 0.0 for t in range(-order, 1)}

    def uu(t):
        return u[t] if t >= 0 else 0.0

    for t in range(len(u)):
        s = a * y[t] + b * y[t] * sum(y[t - i] for i in range(order)) \
            + c * uu(t - (order - 1)) * uu(t) + d
        y[t + 1] = math.tanh(s) if order == 20 else s
    return [y[t + 1] for t in range(len(u))]


@pytest.mark.parametrize("order", [10, 20])
def test_narma_matches_formula(order):
    u, y = narma(400, order, batch=2, seed=1, dtype=F64)
    assert u.shape == y.shape == (2, 400, 1) and u.dtype == F64
    for row in range(2):
        ref = narma_reference(u[row, :, 0].tolist(), order)
        assert torch.allclose(y[row, :, 0], torch.tensor(ref, dtype=F64), rtol=0, atol=1e-12)
    # The published systems differ visibly: NARMA-20's constant is 0.01 and it is squashed.
    assert float(y[:, 0].min()) == pytest.approx(0.1 if order == 10 else math.tanh(0.01))


def test_narma_inputs_are_uniform_on_0_half():
    u, _ = narma(20000, 20, seed=4, dtype=F64)
    x = u.flatten().numpy()
    assert x.min() >= 0.0 and x.max() <= 0.5
    assert stats.kstest(x, stats.uniform(loc=0.0, scale=0.5).cdf).pvalue > 1e-3
    # Independence of successive draws: lag-1 autocorrelation within 4 standard errors.
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 4 / math.sqrt(len(x))


def test_narma_seeded_and_washout():
    a = narma(300, 10, batch=3, seed=7)
    b = narma(300, 10, batch=3, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], narma(300, 10, batch=3, seed=8)[0])
    c = narma(300, 10, batch=3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[1], c[1])
    u_full, y_full = narma(350, 10, seed=2, dtype=F64)
    u_w, y_w = narma(300, 10, washout=50, seed=2, dtype=F64)
    assert torch.equal(u_w, u_full[:, 50:]) and torch.equal(y_w, y_full[:, 50:])
    assert narma(10, 10, dtype=torch.float32)[0].dtype == torch.float32


def test_narma_targets_of_given_inputs():
    u, y = narma(200, 20, batch=2, seed=3, dtype=F64)
    assert torch.allclose(narma_targets(u, order=20), y, atol=1e-14)


def test_narma_divergence_is_detected_and_resampled():
    # Constant input 0.5: the fixed-point equation 0.5 y^2 - 0.7 y + 0.475 = 0 has no real
    # root (0.49 < 4 * 0.5 * 0.475), so NARMA-10 must blow up.
    with pytest.raises(ValueError, match="diverged"):
        narma_targets(torch.full((1, 300, 1), 0.5, dtype=F64), order=10)
    # With i.i.d. inputs about 1% of 2000-step NARMA-10 series diverge; seed 0 has one.
    with pytest.raises(ValueError, match=r"diverged.*rows \[6\]"):
        narma(2000, 10, batch=50, seed=0, on_divergence="raise")
    u, y = narma(2000, 10, batch=50, seed=0, dtype=F64)
    assert bool(torch.isfinite(y).all()) and float(y.max()) < 14
    ref = narma_reference(u[6, :, 0].tolist(), 10)  # the redrawn row obeys the formula
    assert torch.allclose(y[6, :, 0], torch.tensor(ref, dtype=F64), atol=1e-12)


def test_narma_bad_input():
    with pytest.raises(ValueError, match="order"):
        narma(100, 15)
    with pytest.raises(ValueError, match="length"):
        narma(0)
    with pytest.raises(TypeError, match="length"):
        narma(10.5)
    with pytest.raises(ValueError, match="washout"):
        narma(10, washout=-1)
    with pytest.raises(ValueError, match="on_divergence"):
        narma(10, on_divergence="ignore")
    with pytest.raises(TypeError, match="dtype"):
        narma(10, dtype=torch.int64)
    with pytest.raises(TypeError, match="seed"):
        narma(10, seed=1.5)
    with pytest.raises(ValueError, match="non-finite"):
        narma_targets(torch.tensor([[[0.1], [math.nan]]]))
    with pytest.raises(ValueError, match="dimensions"):
        narma_targets(torch.rand(10))


# ----------------------------------------------------------------------------- Hénon


def test_henon_matches_map():
    s = henon(500, seed=3, dtype=F64)
    assert s.shape == (500, 2)
    x, y = s[:, 0].tolist(), s[:, 1].tolist()
    for n in range(499):
        assert x[n + 1] == pytest.approx(1 - 1.4 * x[n] ** 2 + y[n], abs=1e-12)
        assert y[n + 1] == pytest.approx(0.3 * x[n], abs=1e-12)


def test_henon_fixed_points_closed_form():
    a, b = 1.4, 0.3
    roots = sorted(np.roots([a, 1 - b, -1]).real)  # x = 1 - a x^2 + b x
    points = sorted(henon_fixed_points(a, b))
    assert [p[0] for p in points] == pytest.approx(roots, abs=1e-12)
    assert [p[1] for p in points] == pytest.approx([b * r for r in roots], abs=1e-12)
    for point in points:
        # Both are saddles (an eigenvalue of magnitude > 1), so only a short orbit stays put.
        orbit = henon(12, initial=point, washout=0, dtype=F64)
        assert torch.allclose(orbit, torch.tensor([point] * 12, dtype=F64), atol=1e-9)


def test_henon_lyapunov_exponents_published():
    """lambda_1 = 0.41922 (Sprott 2003, Chaos and Time-Series Analysis, table of maps);
    lambda_1 + lambda_2 = ln b exactly since det J = -b."""
    orbit = henon(20000, seed=0, dtype=F64).tolist()
    # Benettin's method in 2-D: push two tangent vectors, Gram-Schmidt each step.
    v1, v2, s1, s2 = (1.0, 0.0), (0.0, 1.0), 0.0, 0.0
    for x, _ in orbit:
        w1 = (-2.8 * x * v1[0] + v1[1], 0.3 * v1[0])
        w2 = (-2.8 * x * v2[0] + v2[1], 0.3 * v2[0])
        n1 = math.hypot(*w1)
        e1 = (w1[0] / n1, w1[1] / n1)
        proj = w2[0] * e1[0] + w2[1] * e1[1]
        r2 = (w2[0] - proj * e1[0], w2[1] - proj * e1[1])
        n2 = math.hypot(*r2)
        s1, s2 = s1 + math.log(n1), s2 + math.log(n2)
        v1, v2 = e1, (r2[0] / n2, r2[1] / n2)
    lam1, lam2 = s1 / len(orbit), s2 / len(orbit)
    assert lam1 == pytest.approx(0.41922, abs=0.01)
    assert lam1 + lam2 == pytest.approx(math.log(0.3), abs=1e-9)


def test_henon_seeded_bounded_and_bad_input():
    a, b = henon(100, seed=5), henon(100, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, henon(100, seed=6))
    # The attractor extends over |x| <= 1.285 and |y| = 0.3 |x_prev| <= 0.386.
    s = henon(5000, seed=1, dtype=F64)
    assert float(s[:, 0].abs().max()) < 1.3 and float(s[:, 1].abs().max()) < 0.39
    with pytest.raises(ValueError, match="escaped"):
        henon(50, initial=(3.0, 3.0), washout=0)
    with pytest.raises(ValueError, match="initial"):
        henon(10, initial=(0.1,))
    with pytest.raises(ValueError, match="initial"):
        henon(10, initial=(math.nan, 0.0))
    with pytest.raises(ValueError, match="washout"):
        henon(10, washout=-3)
    with pytest.raises(ValueError, match="a must be"):
        henon(10, a=math.inf)


# ----------------------------------------------------------------------------- Lorenz


def lorenz_scipy(x0, t_eval):
    def f(_t, s):
        x, y, z = s
        return [10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z]

    sol = solve_ivp(f, (0.0, float(t_eval[-1])), x0, method="DOP853", rtol=1e-13, atol=1e-13,
                    t_eval=t_eval)
    return sol.y.T


def test_lorenz_equilibria_are_fixed():
    eq = lorenz_equilibria()
    r = math.sqrt(8.0 / 3.0 * 27.0)
    assert eq == [(0.0, 0.0, 0.0), pytest.approx((r, r, 27.0)), pytest.approx((-r, -r, 27.0))]
    for point in eq:
        assert lorenz_rhs(point) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)
        orbit = lorenz(50, initial=point, washout=0, dtype=F64)
        assert torch.allclose(orbit, torch.tensor([point] * 50, dtype=F64), atol=1e-9)


def test_lorenz_rk4_against_scipy_and_fourth_order():
    x0 = [1.0, 2.0, 20.0]
    ref = lorenz_scipy(x0, np.arange(11) * 0.02)
    ours = lorenz(11, initial=x0, washout=0, dt=0.01, sample_every=2, dtype=F64).numpy()
    assert np.abs(ours - ref).max() < 5e-6
    # Halving the step divides the global error by 2^4 = 16 for a 4th-order method.
    errors = []
    for dt in (0.01, 0.005):
        n = round(0.2 / dt)
        end = lorenz(2, initial=x0, washout=0, dt=dt, sample_every=n, dtype=F64)[1].numpy()
        errors.append(np.abs(end - ref[-1]).max())
    assert 14.0 < errors[0] / errors[1] < 18.0


def test_lorenz_largest_lyapunov_exponent_published():
    """lambda_1 = 0.9056 (Sprott 2003) from two nearby trajectories renormalised every 0.5
    time units (Benettin et al. 1980), over 2 x 200 time units."""
    eps, tau, estimates = 1e-8, 0.5, []
    for seed in (0, 1):
        p = lorenz(1, seed=seed, dtype=F64)[0].tolist()
        q, total = [p[0] + eps, p[1], p[2]], 0.0
        for _ in range(400):
            a = lorenz(2, initial=p, washout=0, sample_every=50, dtype=F64)[1].tolist()
            b = lorenz(2, initial=q, washout=0, sample_every=50, dtype=F64)[1].tolist()
            dist = math.dist(a, b)
            total += math.log(dist / eps)
            p, q = a, [a[i] + (b[i] - a[i]) * eps / dist for i in range(3)]
        estimates.append(total / (400 * tau))
    assert sum(estimates) / 2 == pytest.approx(0.9056, abs=0.03)


def test_lorenz_sampling_washout_seed_and_bad_input():
    s = lorenz(300, seed=2, dtype=F64)
    assert s.shape == (300, 3)
    assert torch.equal(s, lorenz(300, seed=2, dtype=F64))
    assert not torch.equal(s, lorenz(300, seed=3, dtype=F64))
    # sample_every=2 at dt=0.01 is every other point of the sample_every=1 series.
    fine = lorenz(600, seed=2, sample_every=1, dtype=F64)
    assert torch.equal(s, fine[::2])
    # washout=w drops the first w/dt steps of the washout-free trajectory.
    x0 = [1.0, 1.0, 1.0]
    long = lorenz(200, initial=x0, washout=0.0, dtype=F64)
    cut = lorenz(150, initial=x0, washout=1.0, dtype=F64)
    assert torch.equal(cut, long[50:])
    # On the attractor: |x| < 25, |y| < 30, 0 < z < 50.
    assert float(s[:, 0].abs().max()) < 25 and float(s[:, 1].abs().max()) < 30
    assert 0 < float(s[:, 2].min()) and float(s[:, 2].max()) < 50
    with pytest.raises(ValueError, match="dt"):
        lorenz(10, dt=0.0)
    with pytest.raises(ValueError, match="washout/dt"):
        lorenz(10, washout=0.015)
    with pytest.raises(ValueError, match="initial"):
        lorenz(10, initial=(1.0, 2.0))
    with pytest.raises(ValueError, match="sample_every"):
        lorenz(10, sample_every=0)
    with pytest.raises(ValueError, match="blew up"):
        lorenz(200, dt=0.5, washout=0.0, initial=(1.0, 1.0, 1.0))


# ----------------------------------------------------------------------------- channel

# Jaeger & Haas (2004), supplementary material: taps for d(n+2) .. d(n-7), and the cubic.
PUBLISHED_TAPS = [0.08, -0.12, 1.0, 0.18, -0.1, 0.091, -0.05, 0.04, 0.03, 0.01]


def test_channel_matches_published_formula():
    assert list(CHANNEL_TAPS) == PUBLISHED_TAPS
    data = channel_equalization(300, snr_db=20.0, batch=2, seed=1, dtype=F64)
    assert data.inputs.shape == data.targets.shape == data.noiseless.shape == (2, 300, 1)
    assert data.symbols.shape == (2, 309)
    for row in range(2):
        sym = data.symbols[row].tolist()

        def d(n, sym=sym):
            return sym[n + 7]

        for n in range(300):
            q = sum(c * d(n + 2 - k) for k, c in enumerate(PUBLISHED_TAPS))
            x = q + 0.036 * q**2 - 0.011 * q**3
            assert float(data.noiseless[row, n, 0]) == pytest.approx(x, abs=1e-12)
            assert float(data.targets[row, n, 0]) == d(n - 2)


def test_channel_symbols_uniform_on_four_levels():
    data = channel_equalization(20000, seed=2, dtype=F64)
    values, counts = torch.unique(data.symbols, return_counts=True)
    assert values.tolist() == [-3.0, -1.0, 1.0, 3.0]
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("snr_db", [12.0, 24.0, 32.0])
def test_channel_noise_has_requested_snr(snr_db):
    data = channel_equalization(40000, snr_db=snr_db, seed=3, dtype=F64)
    noise = (data.inputs - data.noiseless).flatten().numpy()
    measured = 10 * math.log10(float(data.noiseless.pow(2).mean()) / float(np.mean(noise**2)))
    assert measured == pytest.approx(snr_db, abs=0.1)
    assert abs(noise.mean()) < 4 * noise.std() / math.sqrt(noise.size)
    assert stats.normaltest(noise).pvalue > 1e-3
    clean = channel_equalization(100, snr_db=None, seed=3)
    assert torch.equal(clean.inputs, clean.noiseless)


def test_channel_is_equalizable_with_the_stated_delay():
    """A causal linear equalizer fitted by numpy least squares on u(n) .. u(n-11) recovers
    d(n-2) far better than rounding the received signal: the target is aligned."""
    data = channel_equalization(6000, snr_db=24.0, seed=3, dtype=F64)
    u, d = data.inputs[0, :, 0].numpy(), data.targets[0, :, 0].numpy()
    k = 12
    x = np.stack([u[k - j : len(u) - j] for j in range(k)] + [np.ones(len(u) - k)], axis=1)
    target = d[k:]
    w = np.linalg.lstsq(x[:3000], target[:3000], rcond=None)[0]
    pred = torch.from_numpy(x[3000:] @ w)
    ser = symbol_error_rate(pred, torch.from_numpy(target[3000:]))
    raw = symbol_error_rate(torch.from_numpy(u[k - 2 + 3000 : -2]), torch.from_numpy(target[3000:]))
    assert ser < 0.02 and raw > 0.05
    assert nrmse(pred, torch.from_numpy(target[3000:])) < 0.3


def test_channel_seed_delay_and_bad_input():
    a, b = channel_equalization(200, seed=4), channel_equalization(200, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.inputs, channel_equalization(200, seed=5).inputs)
    d0 = channel_equalization(200, delay=0, seed=4, dtype=F64)
    assert torch.equal(d0.targets[0, :, 0], d0.symbols[0, 7:207])
    with pytest.raises(ValueError, match="delay"):
        channel_equalization(10, delay=8)
    with pytest.raises(ValueError, match="snr_db"):
        channel_equalization(10, snr_db=math.nan)
    with pytest.raises(ValueError, match="length"):
        channel_equalization(0)


def test_symbol_error_rate_by_hand_and_against_numpy():
    target = torch.tensor([3.0, -1.0, 1.0, -3.0, 1.0, 1.0, -3.0, 1.0])
    pred = torch.tensor([2.1, -0.4, 0.2, -3.9, 0.9, 1.9, -2.2, 2.5])  # only 2.5 -> 3 is wrong
    assert symbol_error_rate(pred, target) == pytest.approx(1 / 8)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor(SYMBOLS)[torch.randint(4, (1000,), generator=g)]
    p = t + 1.2 * torch.randn(1000, generator=g)
    levels = np.array(SYMBOLS)
    decided = levels[np.abs(p.numpy()[:, None] - levels[None, :]).argmin(axis=1)]
    assert symbol_error_rate(p, t) == pytest.approx(float(np.mean(decided != t.numpy())))
    decided = nearest_symbol(torch.tensor([-5.0, 0.1, 7.0]))
    assert torch.equal(decided, torch.tensor([-3.0, 1.0, 3.0]))
    with pytest.raises(ValueError, match="not symbols"):
        symbol_error_rate(pred, target + 0.5)
    with pytest.raises(ValueError, match="differ"):
        symbol_error_rate(pred[:3], target)
    with pytest.raises(ValueError, match="non-finite"):
        symbol_error_rate(torch.tensor([math.nan]), torch.tensor([1.0]))


# ----------------------------------------------------------------------------- vowels


@pytest.fixture(scope="module")
def aeon_reference():
    pytest.importorskip("aeon", reason="aeon is not installed (pip install 'rnnlab[data]')")
    from aeon.datasets import load_classification

    return {s: load_classification("JapaneseVowels", split=s) for s in ("train", "test")}


def test_japanese_vowels_published_sizes(aeon_reference):
    train, test = japanese_vowels("train"), japanese_vowels("test")
    # UCI description (Kudo et al. 1999): 270 training utterances, 30 per speaker; 370 test
    # utterances with 31, 35, 88, 44, 29, 24, 40, 50, 29 per speaker; 12 coefficients; 7..29
    # frames.
    assert train.inputs.shape == (270, 26, 12) and test.inputs.shape == (370, 29, 12)
    assert train.labels.bincount().tolist() == [30] * 9
    assert test.labels.bincount().tolist() == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    assert int(train.lengths.min()) == 7 and int(train.lengths.max()) == 26
    assert int(test.lengths.min()) == 7 and int(test.lengths.max()) == 29
    assert train.labels.dtype == torch.int64 and train.lengths.dtype == torch.int64


@pytest.mark.parametrize("split", ["train", "test"])
def test_japanese_vowels_equal_aeon_loader(aeon_reference, split):
    x_ref, y_ref = aeon_reference[split]
    ours = japanese_vowels(split, pad_to=30, dtype=F64)
    assert ours.inputs.shape == (len(x_ref), 30, 12)
    for i, seq in enumerate(x_ref):  # aeon: (channels, time)
        n = seq.shape[1]
        assert int(ours.lengths[i]) == n
        assert np.array_equal(ours.inputs[i, :n].numpy(), seq.T)
        assert not bool(ours.inputs[i, n:].any())
    assert ours.labels.tolist() == [int(v) - 1 for v in y_ref]


def test_japanese_vowels_labels_carry_signal():
    """Nearest class-mean of the time-averaged frame: far above the 1/9 chance level."""
    pytest.importorskip("aeon", reason="aeon is not installed (pip install 'rnnlab[data]')")
    train, test = japanese_vowels("train", dtype=F64), japanese_vowels("test", dtype=F64)

    def features(s):
        return s.inputs.sum(1) / s.lengths.unsqueeze(1)

    f_train, f_test = features(train), features(test)
    centroids = torch.stack([f_train[train.labels == k].mean(0) for k in range(9)])
    assert classification_accuracy(-torch.cdist(f_test, centroids), test.labels) > 0.8


def test_japanese_vowels_bad_input_and_missing_aeon(monkeypatch):
    pytest.importorskip("aeon", reason="aeon is not installed (pip install 'rnnlab[data]')")
    with pytest.raises(ValueError, match="split"):
        japanese_vowels("dev")
    with pytest.raises(ValueError, match="pad_to"):
        japanese_vowels("test", pad_to=20)
    monkeypatch.setitem(sys.modules, "aeon", None)  # as if aeon were not installed
    with pytest.raises(ImportError, match=r"pip install \"rnnlab\[data\]\""):
        japanese_vowels("train")


def test_classification_accuracy():
    labels = torch.tensor([0, 2, 1, 1])
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.0, 1.0, 0.0]])
    assert classification_accuracy(scores, labels) == pytest.approx(3 / 4)
    assert classification_accuracy(torch.tensor([0, 2, 0, 0]), labels) == pytest.approx(2 / 4)
    with pytest.raises(TypeError, match="integer"):
        classification_accuracy(torch.tensor([0.0, 2.0, 1.0, 1.0]), labels)
    with pytest.raises(ValueError, match="predictions"):
        classification_accuracy(torch.tensor([0, 1]), labels)
    with pytest.raises(ValueError, match="NaN"):
        classification_accuracy(torch.full((4, 3), math.nan), labels)
    with pytest.raises(ValueError, match="labels must lie"):
        classification_accuracy(scores[:, :2], labels)


def test_generators_honour_dtype_and_device():
    cases = [
        narma(20, 10, dtype=torch.float32, device="cpu")[1],
        henon(20, dtype=torch.float32, device="cpu"),
        lorenz(20, dtype=torch.float32, device="cpu"),
        channel_equalization(20, dtype=torch.float32, device="cpu").inputs,
    ]
    for tensor in cases:
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu"
    assert lorenz(20, dtype=F64).dtype == F64
    with pytest.raises(TypeError, match="dtype"):
        henon(10, dtype=torch.int32)
