"""Intrinsic plasticity: the published update equations on hand-computed values, the gradient of
the KL objective by autograd, ReservoirPy's IPReservoir run side by side, the KL estimate against
scipy, and the effect of IP on the unit output distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from rnnlab.reservoir.deep import DeepEchoStateNetwork
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.plasticity import (
    IntrinsicPlasticity,
    LogisticEchoStateNetwork,
    schrauwen_update,
    triesch_update,
    unit_outputs,
)
from tests.reference import esn_state_gap, unit_roundoff

F64 = torch.float64


def t64(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=F64)


def one_unit(cls=EchoStateNetwork, w_in=0.5, a=1.0, b=0.0) -> EchoStateNetwork:
    """A single unit without recurrence: net(t) = w_in u(t)."""
    esn = cls(input_size=1, units=1, topology=torch.zeros(1, 1, dtype=F64),
              input_weights=torch.full((1, 1), w_in, dtype=F64), dtype=F64)
    esn.a.fill_(a)
    esn.b.fill_(b)
    return esn


def random_esn(cls=EchoStateNetwork, units=40, seed=0, **kw) -> EchoStateNetwork:
    opts = {"spectral_radius": 0.9, "density": 0.2, "input_scaling": 0.5, "bias_scaling": 0.1,
            "dtype": F64, "seed": seed}
    opts.update(kw)
    return cls(input_size=1, units=units, **opts)


def uniform_inputs(steps, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(batch, steps, 1, generator=g, dtype=F64) - 1


# ------------------------------------------------------------------------------------------------
# One update against the published equations, worked by hand
def test_triesch_update_hand_computed():
    # mu = 1/4, so 2 + 1/mu = 6 and 1/mu = 4: db = lr (1 - 6 y + 4 y^2).
    # a = 2, net x = 0.5, b = -1: a x + b = 0, y = 1/2, db = lr (1 - 3 + 1) = -lr,
    # da = lr/2 + (-lr)(0.5) = 0.
    lr = 0.01
    da, db = triesch_update(t64(0.5), t64(0.5), t64(2.0), lr, 0.25)
    assert float(db) == pytest.approx(-0.01, abs=1e-15)
    assert float(da) == pytest.approx(0.0, abs=1e-15)
    # y = 3/4 (a x + b = ln 3 with a = 1, x = ln 3, b = 0): db = lr (1 - 4.5 + 2.25) = -1.25 lr,
    # da = lr - 1.25 lr ln 3.
    x = math.log(3.0)
    da, db = triesch_update(t64(x), t64(0.75), t64(1.0), lr, 0.25)
    assert float(db) == pytest.approx(-0.0125, rel=1e-14)
    assert float(da) == pytest.approx(0.01 - 0.0125 * x, rel=1e-14)


def test_schrauwen_update_hand_computed():
    lr = 0.01
    # mu = 0, sigma^2 = 1/2: db = -lr (2 y (2 - y^2)); y = 1/2 -> db = -1.75 lr.
    x, a = 0.4, 1.25          # any net input: the rule only needs y, x and a
    da, db = schrauwen_update(t64(x), t64(0.5), t64(a), lr, 0.0,
                              math.sqrt(0.5))
    assert float(db) == pytest.approx(-0.0175, rel=1e-14)
    assert float(da) == pytest.approx(0.01 / 1.25 - 0.0175 * 0.4, rel=1e-14)
    # mu = 0.2, sigma^2 = 1/4, y = 1/2: db = -lr (-0.8 + 4 (0.5)(0.5 + 1 - 0.25 + 0.1)) = -1.9 lr.
    da, db = schrauwen_update(t64(-0.3), t64(0.5), t64(0.5), lr, 0.2,
                              0.5)
    assert float(db) == pytest.approx(-0.019, rel=1e-14)
    assert float(da) == pytest.approx(0.02 + 0.019 * 0.3, rel=1e-14)


@pytest.mark.parametrize("cls, rule, a0, b0, mu, sigma, expect_a, expect_b", [
    # The Triesch case above through a whole fit step: net = 0.5 * u(0) = 0.5 with u(0) = 1.
    (LogisticEchoStateNetwork, "triesch", 2.0, -1.0, 0.25, 1.0, 2.0, -1.01),
    # Schrauwen, mu = 0, sigma^2 = 1/2, a = 1: b chosen so that y = tanh(0.5 + b) = 1/2.
    (EchoStateNetwork, "schrauwen", 1.0, math.atanh(0.5) - 0.5, 0.0, math.sqrt(0.5),
     1.0 + 0.01 - 0.0175 * 0.5, math.atanh(0.5) - 0.5 - 0.0175),
])
def test_one_fit_step_hand_computed(cls, rule, a0, b0, mu, sigma, expect_a, expect_b):
    esn = one_unit(cls, w_in=0.5, a=a0, b=b0)
    ip = IntrinsicPlasticity(rule, lr=0.01, mu=mu, sigma=sigma, epochs=1)
    ip.fit(esn, torch.ones(1, 1, 1, dtype=F64))
    assert float(esn.a) == pytest.approx(expect_a, rel=1e-13, abs=1e-15)
    assert float(esn.b) == pytest.approx(expect_b, rel=1e-13)


def test_batch_update_is_the_mean_of_the_sequences():
    """Two sequences in a batch: one step moves a, b by the mean of the per-sequence updates."""
    u = torch.tensor([[[1.0]], [[-0.6]]], dtype=F64)
    esn = one_unit(w_in=0.5, a=1.3, b=0.1)
    ip = IntrinsicPlasticity("schrauwen", lr=0.02, mu=0.1, sigma=0.3)
    net = 0.5 * u.view(2)
    y = torch.tanh(1.3 * net + 0.1)
    da, db = schrauwen_update(net, y, torch.tensor(1.3, dtype=F64), 0.02, 0.1, 0.3)
    ip.fit(esn, u)
    assert float(esn.a) == pytest.approx(1.3 + float(da.mean()), rel=1e-14)
    assert float(esn.b) == pytest.approx(0.1 + float(db.mean()), rel=1e-14)


@pytest.mark.parametrize("rule", ["triesch", "schrauwen"])
def test_rules_are_the_negative_kl_gradient(rule):
    """Independent derivation by autograd: per sample, D(a, b) = -log|dy/dx| - log q(y) + const,
    with dy/dx = a f'(a x + b) and q the target; the rule is (da, db) = -lr grad D."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, generator=g, dtype=F64)
    a = (0.5 + torch.rand(20, generator=g, dtype=F64)).requires_grad_()
    b = (0.3 * torch.randn(20, generator=g, dtype=F64)).requires_grad_()
    lr, mu, sigma = 0.003, (0.15 if rule == "triesch" else -0.2), 0.35
    z = a * x + b
    if rule == "triesch":
        y = torch.sigmoid(z)
        loss = -torch.log(a * y * (1 - y)) + y / mu
    else:
        y = torch.tanh(z)
        loss = -torch.log(a * (1 - y * y)) + (y - mu) ** 2 / (2 * sigma**2)
    grad_a, grad_b = torch.autograd.grad(loss.sum(), (a, b))
    with torch.no_grad():
        if rule == "triesch":
            da, db = triesch_update(x, y, a, lr, mu)
        else:
            da, db = schrauwen_update(x, y, a, lr, mu, sigma)
    np.testing.assert_allclose(da.numpy(), (-lr * grad_a).numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db.numpy(), (-lr * grad_b).numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("rule", ["triesch", "schrauwen"])
def test_matches_reservoirpy_ipreservoir(rule):
    """ReservoirPy 0.4's IPReservoir with the same W, W_in and bias (leak 1, where its update
    and ours coincide), one epoch, no warm-up: the same gains and shifts after 300 steps."""
    rpy = pytest.importorskip("reservoirpy.nodes")
    cls = LogisticEchoStateNetwork if rule == "triesch" else EchoStateNetwork
    esn = cls(input_size=2, units=30, spectral_radius=0.9, bias_scaling=0.3, input_scaling=0.5,
              density=0.3, dtype=F64, seed=3)
    u = uniform_inputs(300).expand(1, 300, 2).contiguous() * torch.tensor([1.0, -0.5],
                                                                          dtype=F64)
    mu = 0.2 if rule == "triesch" else 0.1
    res = rpy.IPReservoir(W=esn.W.numpy().copy(), Win=esn.W_in.numpy().copy(),
                          bias=esn.bias.numpy().copy(), mu=mu, sigma=0.3, learning_rate=5e-3,
                          epochs=1, activation="sigmoid" if rule == "triesch" else "tanh")
    res.fit(u[0].numpy(), warmup=0)
    net_max = float((esn.W.abs().sum(1) + esn.W_in.abs().sum(1) + esn.bias.abs()).max())
    IntrinsicPlasticity(rule, lr=5e-3, mu=mu, sigma=0.3).fit(esn, u)
    assert np.abs(esn.a.numpy() - 1).max() > 0.1     # IP did move the gains
    # Tolerance (first order): the two runs' states, hence y and net, differ by round-off,
    # at most the update's bound (tests.reference.esn_state_gap, with the final gains); each of
    # the 300 steps moves b by lr |d db/dy| <= lr c times that (c = (2 s^2 + 4 + 2 |mu|) / s^2
    # for Schrauwen's rule, 2 + 3 / mu for Triesch's, |y| <= 1) and a by as much times |net|.
    gap = esn_state_gap(esn, 300, 1.0)
    c = (2 * 0.09 + 4 + 2 * abs(mu)) / 0.09 if rule == "schrauwen" else 2 + 3 / mu
    tol = 300 * 5e-3 * c * gap
    np.testing.assert_allclose(esn.a.numpy(), res.a, rtol=0, atol=tol * (1 + net_max))
    np.testing.assert_allclose(esn.b.numpy(), res.b, rtol=0, atol=tol)


# ------------------------------------------------------------------------------------------------
# The target distribution and the KL estimate, against scipy
@pytest.mark.parametrize("rule, mu, sigma", [("schrauwen", 0.1, 0.3), ("schrauwen", -0.5, 0.05),
                                             ("triesch", 0.2, 1.0), ("triesch", 0.05, 1.0)])
def test_target_bins_and_kl_against_scipy(rule, mu, sigma):
    ip = IntrinsicPlasticity(rule, mu=mu, sigma=sigma, bins=40)
    lo, hi = (0.0, 1.0) if rule == "triesch" else (-1.0, 1.0)
    edges = np.linspace(lo, hi, 41)
    dist = stats.expon(scale=mu) if rule == "triesch" else stats.norm(mu, sigma)
    # Lower tail by differences of the cdf, upper tail of the survival function (each precise).
    q = np.where(edges[1:] <= dist.median(), np.diff(dist.cdf(edges)), -np.diff(dist.sf(edges)))
    q /= q.sum()
    np.testing.assert_allclose(ip.target_bin_probabilities().numpy(), q, rtol=1e-9, atol=1e-300)
    rng = np.random.default_rng(0)
    samples = lo + (hi - lo) * rng.beta(2.0, 5.0, size=(3000, 4))
    ours = ip.kl_divergence(torch.from_numpy(samples)).numpy()
    for unit in range(4):
        p, _ = np.histogram(samples[:, unit], bins=edges)
        np.testing.assert_allclose(ours[unit], stats.entropy(p / p.sum(), q), rtol=1e-10)


def test_kl_of_target_samples_is_small():
    """Samples of the (truncated) target itself: KL near its small positive bias."""
    rng = np.random.default_rng(1)
    gauss = stats.truncnorm.rvs(-3.5, 2.5, loc=0.05, scale=0.3, size=(20000, 3), random_state=rng)
    expo = stats.truncexpon.rvs(1 / 0.2, scale=0.2, size=(20000, 3), random_state=rng)
    for rule, mu, sigma, y in (("schrauwen", 0.05, 0.3, gauss), ("triesch", 0.2, 1.0, expo)):
        ip = IntrinsicPlasticity(rule, mu=mu, sigma=sigma)
        kl = ip.kl_divergence(torch.from_numpy(y))
        assert float(kl.max()) < 0.01
        wrong = IntrinsicPlasticity(rule, mu=mu / 2 if rule == "triesch" else mu + 0.4,
                                    sigma=sigma)
        assert float(wrong.kl_divergence(torch.from_numpy(y)).min()) > 0.1


# ------------------------------------------------------------------------------------------------
# What IP does to a reservoir
def test_schrauwen_moves_outputs_toward_the_gaussian_target():
    esn = random_esn(units=40, input_scaling=0.15, bias_scaling=0.0, leak=1.0)
    w = [t.clone() for t in (esn.W, esn.W_in, esn.bias, esn.leak)]
    u = uniform_inputs(1200)
    ip = IntrinsicPlasticity("schrauwen", lr=2e-3, mu=0.1, sigma=0.3, epochs=4)
    before = ip.evaluate(esn, u, washout=100)[0]
    history = ip.fit(esn, u, washout=100, frozen_stats=True)
    after = ip.evaluate(esn, u, washout=100)[0]
    # Measured: KL 0.87 -> 0.18, mean 0.000 -> 0.087, std 0.087 -> 0.274.
    assert after["kl"] < 0.3 * before["kl"]
    assert abs(after["mean"] - 0.1) < 0.03 and abs(before["mean"] - 0.1) > 0.08
    assert abs(after["std"] - 0.3) < 0.05 and abs(before["std"] - 0.3) > 0.15
    assert history["epoch"] == [0, 1, 2, 3] and history["layer"] == [0] * 4
    assert history["frozen_kl"][-1] == pytest.approx(after["kl"], rel=1e-12)
    assert history["kl"][-1] < history["kl"][0]
    # Only the gains and shifts changed.
    for old, new in zip(w, (esn.W, esn.W_in, esn.bias, esn.leak), strict=True):
        assert torch.equal(old, new)
    assert not torch.equal(esn.a, torch.ones_like(esn.a))


def test_triesch_moves_outputs_toward_the_exponential_target():
    esn = random_esn(LogisticEchoStateNetwork, units=40, leak=1.0)
    u = uniform_inputs(1200, seed=2)
    ip = IntrinsicPlasticity("triesch", lr=2e-3, mu=0.2, epochs=4)
    before = ip.evaluate(esn, u, washout=100)[0]
    ip.fit(esn, u, washout=100)
    after = ip.evaluate(esn, u, washout=100)[0]
    # The mean of the exponential truncated to (0, 1) is 0.193 for mu = 0.2.
    truncated_mean = stats.truncexpon(1 / 0.2, scale=0.2).mean()
    # Measured: KL 3.34 -> 0.59, mean 0.538 -> 0.172, std 0.031 -> 0.079 (a logistic unit with
    # an affine input cannot reach the exponential's std 0.18 from this input).
    assert after["kl"] < 0.3 * before["kl"]
    assert abs(after["mean"] - truncated_mean) < 0.04 and before["mean"] > 0.4
    # An exponential has std = mean: the outputs spread out from the narrow logistic start.
    assert after["std"] > 1.5 * before["std"]


def test_deep_fit_adapts_every_layer_in_order():
    deep = DeepEchoStateNetwork(1, [20, 15], variant="deepESN", input_scaling=0.2,
                                inter_scaling=0.5, density=0.3, dtype=F64, seed=4)
    twin = DeepEchoStateNetwork(1, [20, 15], variant="deepESN", input_scaling=0.2,
                                inter_scaling=0.5, density=0.3, dtype=F64, seed=4)
    u = uniform_inputs(400, batch=2)
    ip = IntrinsicPlasticity("schrauwen", lr=2e-3, mu=0.0, sigma=0.3, epochs=2)
    history = ip.fit(deep, u, washout=50)
    assert history["layer"] == [0, 0, 1, 1] and history["epoch"] == [0, 1, 0, 1]
    assert all(not torch.equal(la.a, torch.ones_like(la.a)) for la in deep.layers)
    # Layer 2 is adapted on the states of the already adapted layer 1: the same as adapting a
    # copy of layer 1 on u, then a copy of layer 2 on that copy's states.
    ip.fit(twin.layers[0], u, washout=50)
    ip.fit(twin.layers[1], twin.layers[0].states(u), washout=50)
    # fit() does exactly these calls (layer 2's inputs: esn.states of the adapted layer 1)
    for mine, theirs in zip(deep.layers, twin.layers, strict=True):
        assert torch.equal(mine.a, theirs.a) and torch.equal(mine.b, theirs.b)
    per_layer = ip.evaluate(deep, u, washout=50)
    assert len(per_layer) == 2 and all(set(s) == {"mean", "std", "kl"} for s in per_layer)
    outs = unit_outputs(deep, u, washout=50)
    assert [tuple(o.shape) for o in outs] == [(2, 350, 20), (2, 350, 15)]


def test_deterministic_and_data_dependent():
    u = uniform_inputs(300)
    results = []
    for seed, data in ((0, u), (0, u), (1, u), (0, uniform_inputs(300, seed=5))):
        esn = random_esn(units=20, seed=seed)
        IntrinsicPlasticity("schrauwen", lr=1e-3, epochs=2).fit(esn, data, washout=20)
        results.append(torch.cat([esn.a, esn.b]))
    assert torch.equal(results[0], results[1])
    assert not torch.allclose(results[0], results[2])
    assert not torch.allclose(results[0], results[3])


def test_unit_outputs_are_the_pre_leak_activations():
    """With frozen a, b: y(t) = tanh(a net + b) and x(t) = (1 - leak) x(t-1) + leak y(t), so
    y(t) = (x(t) - (1 - leak) x(t-1)) / leak from the ESN's own states."""
    esn = random_esn(units=15, leak=0.4)
    esn.a.uniform_(0.5, 1.5)
    esn.b.uniform_(-0.2, 0.2)
    u = uniform_inputs(50, batch=2)
    x = esn.states(u)
    prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)
    y = (x - 0.6 * prev) / 0.4
    # unit_outputs runs the ESN itself: its states within the update's round-off bound of
    # these, so y within (1 + 0.6) / 0.4 times that, plus 4 u of this recomputation
    gap = esn_state_gap(esn, 50, float(u.abs().max()))
    np.testing.assert_allclose(unit_outputs(esn, u, washout=5)[0].numpy(), y[:, 5:].numpy(),
                               rtol=0, atol=1.6 / 0.4 * gap + 4 * unit_roundoff(F64))


@pytest.mark.parametrize("sparse", [False, True])
def test_logistic_esn_against_a_plain_loop(sparse):
    esn = random_esn(LogisticEchoStateNetwork, units=12, leak=0.7, sparse=sparse)
    esn.a.uniform_(0.5, 1.5)
    esn.b.uniform_(-0.3, 0.3)
    u = uniform_inputs(30, batch=2)
    W, Win, bias = esn.W.numpy(), esn.W_in.numpy(), esn.bias.numpy()
    a, b = esn.a.numpy(), esn.b.numpy()
    ref = np.zeros((2, 30, 12))
    for s in range(2):
        x = np.zeros(12)
        for t in range(30):
            y = 1 / (1 + np.exp(-(a * (Win @ u[s, t].numpy() + bias + W @ x) + b)))
            x = 0.3 * x + 0.7 * y
            ref[s, t] = x
    # numpy sums in other orders: the update's round-off bound (logistic units included)
    tol = esn_state_gap(esn, 30, float(u.abs().max()))
    np.testing.assert_allclose(esn.states(u).numpy(), ref, rtol=0, atol=tol)
    x = esn.initial_state(2)
    for t in range(3):
        x = esn.step(u[:, t], x)
    np.testing.assert_allclose(x.numpy(), ref[:, 2], rtol=0, atol=tol)


def test_output_feedback_uses_the_teacher():
    esn = EchoStateNetwork(input_size=1, units=10, output_size=1, feedback_scaling=0.5,
                           density=0.5, dtype=F64)
    u = uniform_inputs(40)
    ip = IntrinsicPlasticity("schrauwen", lr=1e-3)
    with pytest.raises(ValueError, match="teacher"):
        ip.fit(esn, u)
    ip.fit(esn, u, teacher=torch.sin(u))
    assert not torch.equal(esn.b, torch.zeros_like(esn.b))


# ------------------------------------------------------------------------------------------------
def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="lr"):
        IntrinsicPlasticity(lr=0.0)
    with pytest.raises(ValueError, match="lr"):
        IntrinsicPlasticity(lr=-1e-3)
    with pytest.raises(ValueError, match="lr"):
        IntrinsicPlasticity(lr=float("nan"))
    with pytest.raises(TypeError, match="lr"):
        IntrinsicPlasticity(lr="fast")
    with pytest.raises(ValueError, match="sigma"):
        IntrinsicPlasticity("schrauwen", sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        IntrinsicPlasticity("schrauwen", sigma=-0.2)
    for mu in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError, match="mu"):
            IntrinsicPlasticity("triesch", mu=mu)
    for mu in (1.0, -1.0, 3.0):
        with pytest.raises(ValueError, match="mu"):
            IntrinsicPlasticity("schrauwen", mu=mu)
    with pytest.raises(ValueError, match="rule"):
        IntrinsicPlasticity("bcm")
    with pytest.raises(ValueError, match="epochs"):
        IntrinsicPlasticity(epochs=0)
    with pytest.raises(ValueError, match="bins"):
        IntrinsicPlasticity(bins=1)


def test_bad_use():
    u = uniform_inputs(30)
    tanh_esn, logistic_esn = random_esn(units=10), random_esn(LogisticEchoStateNetwork, units=10)
    with pytest.raises(ValueError, match="logistic"):
        IntrinsicPlasticity("triesch").fit(tanh_esn, u)
    with pytest.raises(ValueError, match="tanh"):
        IntrinsicPlasticity("schrauwen").fit(logistic_esn, u)
    ip = IntrinsicPlasticity("schrauwen")
    with pytest.raises(ValueError, match="washout"):
        ip.fit(tanh_esn, u, washout=30)
    with pytest.raises(ValueError, match="washout"):
        ip.fit(tanh_esn, u, washout=-2)
    bad = u.clone()
    bad[0, 4, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        ip.fit(tanh_esn, bad)
    with pytest.raises(TypeError, match="dtype"):
        ip.fit(tanh_esn, u.float())
    with pytest.raises(ValueError, match="3 dimensions"):
        ip.fit(tanh_esn, u[0])
    with pytest.raises(TypeError, match="EchoStateNetwork"):
        ip.fit(torch.nn.Linear(1, 1), u)
    with pytest.raises(ValueError, match="diverged"):
        IntrinsicPlasticity("schrauwen", lr=50.0).fit(random_esn(units=10), u)
    with pytest.raises(ValueError, match="teacher"):
        ip.fit(DeepEchoStateNetwork(1, 8, 2, density=0.5, dtype=F64), u, teacher=u)
