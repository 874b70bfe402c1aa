import copy
import math

import pytest
import torch

from rnnlab.learning.bptt import BPTT
from rnnlab.learning.clipping import GradientClipper, clip_grad_norm_, clip_grad_value_
from rnnlab.learning.rtrl import RTRL
from rnnlab.models.elman import ElmanRNN

F64 = torch.float64


def with_grads(*grads):
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros_like(torch.as_tensor(g, dtype=F64)))
        p.grad = torch.as_tensor(g, dtype=F64).clone()
        params.append(p)
    return params


def random_params(seed, scale=10.0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (4, 4), (4,), (2, 4)]
    return with_grads(*[scale * torch.randn(s, generator=g, dtype=F64) for s in shapes])


def test_norm_clipping_hand_computed():
    a, b = with_grads([3.0, 0.0], [[4.0]])
    norm = clip_grad_norm_([a, b], 1.0)
    assert float(norm) == pytest.approx(5.0)
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.0], dtype=F64))
    assert torch.allclose(b.grad, torch.tensor([[0.8]], dtype=F64))
    # below the threshold: untouched, bit for bit (no arithmetic on the gradient). The norm,
    # 5, sits 20% under max_norm, not on it: a norm that rounds to 5 + 1 ulp on some machine
    # must not decide the test.
    (c,) = with_grads([3.0, 4.0])
    clip_grad_norm_([c], 6.0)
    assert torch.equal(c.grad, torch.tensor([3.0, 4.0], dtype=F64))
    # a parameter without grad is skipped
    d = torch.nn.Parameter(torch.ones(2, dtype=F64))
    assert float(clip_grad_norm_([d], 1.0)) == 0.0


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 5.0, 1e6])
def test_norm_clipping_matches_torch(norm_type, max_norm):
    ours, ref = random_params(0), random_params(0)
    n1 = clip_grad_norm_(ours, max_norm, norm_type)
    n2 = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type)
    # Two sums of 49 positive terms |g|^p in different orders: relative gap <= 2 gamma_49
    # = 1.1e-14 (tests.reference.gamma), plus a few ulps from pow and the p-th root; 1e-12.
    assert float(n1) == pytest.approx(float(n2), rel=1e-12)
    for p, q in zip(ours, ref, strict=True):
        # torch divides by (norm + 1e-6); ours by the norm exactly
        assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=0)
    total = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in ours]), norm_type)
    assert float(total) == pytest.approx(min(max_norm, float(n1)), rel=1e-12)


def test_value_clipping_hand_computed_and_matches_torch():
    (a,) = with_grads([-3.0, 0.5, 2.0])
    norm = clip_grad_value_([a], 1.0)
    assert float(norm) == pytest.approx(math.sqrt(9 + 0.25 + 4))
    assert torch.equal(a.grad, torch.tensor([-1.0, 0.5, 1.0], dtype=F64))
    ours, ref = random_params(1), random_params(1)
    clip_grad_value_(ours, 2.5)
    torch.nn.utils.clip_grad_value_(ref, 2.5)
    for p, q in zip(ours, ref, strict=True):
        assert torch.equal(p.grad, q.grad)  # clamping rounds nothing: exact on any path


def test_nonfinite_norm_is_never_turned_into_nan_by_the_functions():
    a, b = with_grads([math.inf, 1.0], [2.0])
    norm = clip_grad_norm_([a, b], 1.0)
    assert math.isinf(float(norm))
    assert not torch.isnan(a.grad).any() and b.grad.item() == 2.0
    with pytest.raises(FloatingPointError):
        clip_grad_norm_([a, b], 1.0, error_if_nonfinite=True)


def test_bad_thresholds():
    params = random_params(2)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_norm"):
            clip_grad_norm_(params, bad)
        with pytest.raises(ValueError, match="clip_value"):
            clip_grad_value_(params, bad)
        with pytest.raises(ValueError, match="threshold"):
            GradientClipper("norm", bad)
    with pytest.raises(ValueError, match="mode"):
        GradientClipper("elementwise", 1.0)
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm_(params, 1.0, norm_type=-2)
    with pytest.raises(ValueError, match="on_nonfinite"):
        GradientClipper("norm", 1.0, on_nonfinite="ignore")


# ----------------------------------------------------------------------------------------------
# GradientClipper
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["norm", "value"])
def test_clipper_matches_torch_and_reports(mode):
    ours, ref = random_params(3), random_params(3)
    clipper = GradientClipper(mode, 2.0)
    result = clipper(ours)
    if mode == "norm":
        expected_norm = torch.nn.utils.clip_grad_norm_(ref, 2.0)
    else:
        expected_norm = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in ref]))
        torch.nn.utils.clip_grad_value_(ref, 2.0)
    assert result.norm == pytest.approx(float(expected_norm), rel=1e-12)
    assert result.clipped and result.finite
    for p, q in zip(ours, ref, strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=0)
    small = with_grads([0.1, -0.2])
    assert not clipper(small).clipped
    assert (clipper.calls, clipper.clipped, clipper.skipped) == (2, 1, 0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_clipper_skips_nonfinite_steps_and_never_writes_them(bad):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2, dtype=F64)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    clipper = GradientClipper("norm", 1.0)
    model(torch.randn(4, 3, dtype=F64)).sum().backward()
    assert clipper.step(opt).stepped  # a normal step first, so Adam has momentum
    before = copy.deepcopy(model.state_dict())
    opt.zero_grad()
    model(torch.randn(4, 3, dtype=F64)).sum().backward()
    model.weight.grad[0, 1] = bad
    with pytest.warns(RuntimeWarning, match="non-finite gradient"):
        result = clipper.step(opt)
    assert not result.finite and not result.stepped and not result.clipped
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # even a caller that steps anyway leaves the weights alone
    opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert clipper.skipped == 1

    raising = GradientClipper("value", 1.0, on_nonfinite="raise")
    model(torch.randn(4, 3, dtype=F64)).sum().backward()
    model.bias.grad[0] = bad
    with pytest.raises(FloatingPointError, match="non-finite"):
        raising(model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_clipper_with_rtrl_and_bptt_gradients():
    torch.manual_seed(1)
    model = ElmanRNN(2, 5, 1, dtype=F64)
    with torch.no_grad():
        model.W.mul_(6.0)  # large recurrent weights: large gradients to clip
    x = torch.randn(3, 15, 2, dtype=F64)
    y = torch.randn(3, 15, 1, dtype=F64)
    threshold = 0.5

    def grads_of(rule_name):
        model.zero_grad(set_to_none=True)
        if rule_name == "bptt":
            BPTT(model).accumulate(x, y)
        else:
            rule = RTRL(model)
            rule.reset(3)
            for t in range(x.shape[1]):
                rule.step(x[:, t], y[:, t])
        return [p.grad.clone() for p in model.parameters()]

    for rule_name in ("bptt", "rtrl"):
        raw = grads_of(rule_name)
        norm = math.sqrt(sum(float((g**2).sum()) for g in raw))
        assert norm > threshold
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        result = GradientClipper("norm", threshold).step(opt)
        assert result.stepped and result.clipped
        assert result.norm == pytest.approx(norm, rel=1e-12)
        # the step taken is -lr * threshold * g / ||g|| (Pascanu et al. 2013), per parameter
        for p, b, g in zip(model.parameters(), before, raw, strict=True):
            assert torch.allclose(p.detach(), b - 0.1 * threshold * g / norm, atol=1e-14)
        with torch.no_grad():
            for p, b in zip(model.parameters(), before, strict=True):
                p.copy_(b)
    # BPTT and RTRL give the same gradient, so the same clipped step
    bptt, rtrl = grads_of("bptt"), grads_of("rtrl")
    for a, b in zip(bptt, rtrl, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_clipper_float32_large_gradients_do_not_overflow():
    (p,) = [torch.nn.Parameter(torch.zeros(4))]
    p.grad = torch.full((4,), 1e30)  # finite, but its sum of squares overflows float32
    result = GradientClipper("norm", 1.0)([p])
    assert result.finite and result.norm == pytest.approx(2e30, rel=1e-6)
    assert torch.allclose(p.grad, torch.full((4,), 0.5), rtol=1e-6)
