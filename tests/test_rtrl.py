"""The proof: exact RTRL = BPTT = autograd, at every prefix, and P(t) = dh(t)/dtheta."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab import ElmanRNN
from rnnlab.learning import BPTT, RTRL
from tests.reference import elman_forward, elman_loss

NAMES = ("U", "W", "b", "V", "c")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 7),
    d=st.integers(1, 4),
    o=st.integers(1, 3),
    batch=st.integers(1, 4),
    steps=st.integers(1, 9),
    readout=st.sampled_from(["tanh", "identity", "sigmoid"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_rtrl_equals_bptt_and_autograd_at_every_prefix(n, d, o, batch, steps, readout, seed):
    gen = torch.Generator().manual_seed(seed)
    model = ElmanRNN(d, n, o, readout=readout, dtype=torch.float64)
    with torch.no_grad():  # weights large enough that the dynamics are not trivially linear
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = torch.randn(batch, steps, d, generator=gen, dtype=torch.float64)
    y = torch.randn(batch, steps, o, generator=gen, dtype=torch.float64)
    params = [getattr(model, name) for name in NAMES]

    rule = RTRL(model)
    rule.reset(batch)
    for t in range(steps):
        rule.step(x[:, t], y[:, t])
        rtrl = grads_of(model)
        # autograd on the plainly written loss of the prefix 0..t
        ref = torch.autograd.grad(elman_loss(params, x, y, readout, upto=t + 1), params)
        # BPTT on the prefix, from zero gradients
        saved = [p.grad for p in params]
        model.zero_grad(set_to_none=True)
        BPTT(model).accumulate(x[:, : t + 1], y[:, : t + 1])
        bptt = grads_of(model)
        for p, g in zip(params, saved, strict=True):
            p.grad = g
        # Three algorithms, three summation orders: per step each sum has k <= 12 terms, so
        # ~ T k u = 1e-14 relative for T <= 9 unless the gradient cancels; the worst seen over
        # 300 random draws (of this strategy) is 1.8e-13, so 1e-10 stands far from it.
        for name, r in zip(NAMES, ref, strict=True):
            assert rel_err(rtrl[name], r) < 1e-10, (name, t)
            assert rel_err(bptt[name], r) < 1e-10, (name, t)
            assert rel_err(rtrl[name], bptt[name]) < 1e-10, (name, t)


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 6),
    d=st.integers(1, 3),
    batch=st.integers(1, 3),
    steps=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
)
def test_influence_tensors_equal_autograd_jacobians(n, d, batch, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    model = ElmanRNN(d, n, 1, dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = torch.randn(batch, steps, d, generator=gen, dtype=torch.float64)
    rule = RTRL(model)
    rule.reset(batch)
    U, W, b = (model.U.detach(), model.W.detach(), model.b.detach())
    for t in range(steps):
        rule.step(x[:, t])  # no target: advance only
        def h_t(U_, W_, b_, t=t):
            _, hs = elman_forward(U_, W_, b_, model.V.detach(), model.c.detach(), x[:, : t + 1])
            return hs[:, -1]
        jac = torch.autograd.functional.jacobian(h_t, (U, W, b))  # each (batch, N, *param)
        assert rule.influence["U"].shape == (batch, n, n, d)
        assert rule.influence["W"].shape == (batch, n, n, n)
        assert rule.influence["b"].shape == (batch, n, n)
        for name, j in zip(("U", "W", "b"), jac, strict=True):
            assert torch.allclose(rule.influence[name], j, rtol=1e-10, atol=1e-12), (name, t)
    assert torch.allclose(rule.state, elman_forward(U, W, b, model.V, model.c, x)[1][:, -1])


def test_course_first_step_influence_closed_form():
    """dh(1)/dW_ij = (1 - h_k(1)^2) delta_ki h_j(0) = 0 for h(0) = 0; dh(1)/dU = delta x(1)."""
    model = ElmanRNN(2, 3, 1, dtype=torch.float64)
    x1 = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    rule = RTRL(model)
    rule.step(x1)
    h1 = rule.state[0]
    d = 1 - h1**2
    assert torch.count_nonzero(rule.influence["W"]) == 0
    expected_u = torch.einsum("ki,j->kij", torch.diag(d), x1[0])
    assert torch.allclose(rule.influence["U"][0], expected_u)
    assert torch.allclose(rule.influence["b"][0], torch.diag(d))


def test_mean_reduction_and_initial_state():
    model = ElmanRNN(2, 4, 2, dtype=torch.float64)
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    y = torch.randn(3, 5, 2, dtype=torch.float64)
    h0 = torch.randn(3, 4, dtype=torch.float64) * 0.5
    rule = RTRL(model, reduction="mean")
    rule.reset(h0=h0)
    for t in range(5):
        rule.step(x[:, t], y[:, t])
    rtrl = grads_of(model)
    model.zero_grad(set_to_none=True)
    BPTT(model, reduction="mean").accumulate(x, y, h0=h0)
    for name in NAMES:
        assert rel_err(rtrl[name], model.get_parameter(name).grad) < 1e-10


def test_rtrl_float32_close_to_float64():
    model = ElmanRNN(1, 8, 1)
    x, y = torch.randn(2, 20, 1), torch.randn(2, 20, 1) * 0.5
    rule = RTRL(model)
    for t in range(20):
        rule.step(x[:, t], y[:, t])
    g32 = grads_of(model)
    model.zero_grad(set_to_none=True)
    BPTT(model).accumulate(x, y)
    for name in NAMES:
        assert rel_err(g32[name], model.get_parameter(name).grad) < 1e-5


def test_rtrl_bad_input():
    model = ElmanRNN(2, 3, 1)
    rule = RTRL(model)
    rule.reset(4)
    with pytest.raises(ValueError, match="reset"):
        rule.step(torch.randn(5, 2), torch.randn(5, 1))
    with pytest.raises(ValueError, match="2 dimensions"):
        rule.step(torch.randn(4, 1, 2))
    with pytest.raises(ValueError, match="expected 1"):
        rule.step(torch.randn(4, 2), torch.randn(4, 3))
    with pytest.raises(TypeError, match="dtype"):
        rule.step(torch.randn(4, 2, dtype=torch.float64))
    bad = torch.randn(4, 2)
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rule.step(bad)
    with pytest.raises(ValueError, match="batch size 3"):
        rule.step(torch.randn(4, 2), torch.randn(3, 1))
    model.double()
    with pytest.raises(ValueError, match="reset"):
        rule.step(torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="ElmanRNN"):
        RTRL(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="reduction"):
        RTRL(model, reduction="max")
    with pytest.raises(RuntimeError, match="reset"):
        RTRL(model).influence  # noqa: B018
