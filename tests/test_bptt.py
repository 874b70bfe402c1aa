import pytest
import torch

from rnnlab import ElmanRNN
from rnnlab.learning import BPTT
from tests.reference import elman_forward

NAMES = ("U", "W", "b", "V", "c")


def make(seed=0):
    torch.manual_seed(seed)
    model = ElmanRNN(2, 5, 2, dtype=torch.float64)
    x = torch.randn(3, 11, 2, dtype=torch.float64)
    y = torch.randn(3, 11, 2, dtype=torch.float64)
    return model, x, y


def truncated_reference(model, x, y, k):
    """Chunks of k steps; the state between chunks is a constant (no gradient flows back)."""
    params = [getattr(model, n) for n in NAMES]
    total = [torch.zeros_like(p) for p in params]
    h = torch.zeros(x.shape[0], model.hidden_size, dtype=x.dtype)
    for s in range(0, x.shape[1], k):
        o, hs = elman_forward(*params, x[:, s : s + k], "tanh", h0=h.detach())
        loss = (y[:, s : s + k] - o).pow(2).sum()
        for acc, g in zip(total, torch.autograd.grad(loss, params), strict=True):
            acc += g
        h = hs[:, -1]
    return total


def test_full_bptt_equals_autograd_and_reports_loss():
    model, x, y = make()
    params = [getattr(model, n) for n in NAMES]
    o, _ = elman_forward(*params, x)
    loss = (y - o).pow(2).sum()
    ref = torch.autograd.grad(loss, params)
    result = BPTT(model).accumulate(x, y)
    assert result.loss == pytest.approx(float(loss.detach()), rel=1e-12)
    assert torch.allclose(result.outputs, o.detach(), atol=1e-12)
    for p, r in zip(params, ref, strict=True):
        assert torch.allclose(p.grad, r, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 4, 11, 50])
def test_truncated_bptt_equals_chunked_reference(k):
    model, x, y = make(1)
    ref = truncated_reference(model, x, y, k)
    BPTT(model, truncation=k).accumulate(x, y)
    for n, r in zip(NAMES, ref, strict=True):
        assert torch.allclose(model.get_parameter(n).grad, r, atol=1e-12), n


def test_truncation_changes_the_gradient():
    model, x, y = make(2)
    BPTT(model).accumulate(x, y)
    full = model.W.grad.clone()
    model.zero_grad()
    BPTT(model, truncation=2).accumulate(x, y)
    assert not torch.allclose(full, model.W.grad, atol=1e-6)


@pytest.mark.parametrize("k", [None, 4])
def test_step_form_equals_sequence_form(k):
    model, x, y = make(3)
    BPTT(model, truncation=k).accumulate(x, y)
    ref = {n: model.get_parameter(n).grad.clone() for n in NAMES}
    model.zero_grad(set_to_none=True)
    rule = BPTT(model, truncation=k)
    rule.reset(3)
    ready = []
    for t in range(x.shape[1]):
        rule.step(x[:, t], y[:, t])
        ready.append(rule.grad_ready)
    rule.flush()
    if k == 4:
        assert ready == [(t + 1) % 4 == 0 for t in range(11)]
    for n in NAMES:
        assert torch.allclose(model.get_parameter(n).grad, ref[n], atol=1e-12), n


def test_bptt_bad_input():
    model, x, y = make()
    with pytest.raises(ValueError, match="do not match"):
        BPTT(model).accumulate(x, y[:, :5])
    with pytest.raises(ValueError, match="truncation"):
        BPTT(model, truncation=0)
    rule = BPTT(model)
    rule.reset(3)
    with pytest.raises(ValueError, match="reset"):
        rule.step(x[:2, 0], y[:2, 0])
