import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnlab.analysis.gradients import (
    GradientNormTracker,
    state_jacobian_norms,
    state_jacobians,
)
from rnnlab.models.elman import ElmanRNN
from tests.reference import elman_forward

F64 = torch.float64


def make(n=6, d=3, batch=4, steps=12, w_scale=1.5, seed=0, dtype=F64):
    torch.manual_seed(seed)
    model = ElmanRNN(d, n, 2, dtype=dtype)
    with torch.no_grad():
        model.W.mul_(w_scale * math.sqrt(n))  # entries ~ U(-1.5, 1.5): a far from trivial W
    x = torch.randn(batch, steps, d, dtype=dtype)
    return model, x


def explicit_jacobian(model, x, t, tau, h0=None):
    """prod_{s=t..t-tau+1} diag(1 - h(s)^2) W, with h from the plain reference forward pass."""
    params = [p.detach() for p in (model.U, model.W, model.b, model.V, model.c)]
    _, hs = elman_forward(*params, x, h0=h0)
    n = model.hidden_size
    out = []
    for i in range(x.shape[0]):
        prod = torch.eye(n, dtype=x.dtype)
        for s in range(t, t - tau, -1):  # 1-based step s is hs[:, s - 1]
            prod = prod @ (torch.diag(1.0 - hs[i, s - 1] ** 2) @ params[1])
        out.append(prod)
    return torch.stack(out)


@pytest.mark.parametrize("t", [None, 7])
def test_jacobians_equal_the_explicit_product_of_step_jacobians(t):
    model, x = make()
    lags = [0, 1, 2, 5, 7]
    jac = state_jacobians(model, x, lags, t)
    t_ = x.shape[1] if t is None else t
    assert jac.shape == (4, len(lags), 6, 6)
    for i, tau in enumerate(lags):
        ref = explicit_jacobian(model, x, t_, tau)
        assert torch.allclose(jac[:, i], ref, atol=1e-12, rtol=1e-10), tau


@pytest.mark.parametrize("ord", ["fro", 2, "nuc"])
def test_norms_equal_numpy_norms_of_the_explicit_product(ord):
    model, x = make(seed=1)
    lags = [1, 3, 12]
    norms = state_jacobian_norms(model, x, lags, ord=ord)
    assert norms.shape == (4, 3)
    for i, tau in enumerate(lags):
        ref = explicit_jacobian(model, x, 12, tau).numpy()
        expected = [np.linalg.norm(m, ord) for m in ref]
        np.testing.assert_allclose(norms[:, i].numpy(), expected, rtol=1e-10, atol=1e-300)


def test_with_initial_state_and_loop_over_rows():
    model, x = make(seed=2)
    h0 = torch.rand(4, 6, dtype=F64) * 2 - 1
    jac = state_jacobians(model, x, [12, 4], h0=h0)
    slow = state_jacobians(model, x, [12, 4], h0=h0, vectorize=False)
    assert torch.allclose(jac, slow, atol=1e-14)
    assert torch.allclose(jac[:, 0], explicit_jacobian(model, x, 12, 12, h0=h0), atol=1e-12)


def test_zero_drive_gives_powers_of_w():
    # U = 0, b = 0, h(0) = 0: every h(s) = 0, so each factor is diag(1) W and the product is W^tau.
    model, x = make(n=5, seed=3, w_scale=1.0)
    with torch.no_grad():
        model.U.zero_()
        model.b.zero_()
    norms = state_jacobian_norms(model, x, [1, 4, 9], ord=2)
    w = model.W.detach().numpy()
    for i, tau in enumerate([1, 4, 9]):
        expected = np.linalg.norm(np.linalg.matrix_power(w, tau), 2)
        np.testing.assert_allclose(norms[:, i].numpy(), expected, rtol=1e-10)


def test_vanishing_below_and_growth_above_spectral_radius_one():
    # Tiny inputs keep tanh in its linear regime (even as 1.2^40 amplifies them): the norm
    # follows rho(W)^tau.
    torch.manual_seed(4)
    n = 8
    model = ElmanRNN(1, n, 1, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64))
    x = 1e-9 * torch.randn(2, 40, 1, dtype=F64)
    with torch.no_grad():
        model.b.zero_()
        model.W.copy_(0.5 * q)
    small = state_jacobian_norms(model, x, [1, 20, 40], ord=2)
    with torch.no_grad():
        model.W.copy_(1.2 * q)
    large = state_jacobian_norms(model, x, [1, 20, 40], ord=2)
    # W = a Q has every singular value a; tanh' ~ 1 near 0: ||J(tau)||_2 ~ a^tau.
    np.testing.assert_allclose(small.numpy(), np.broadcast_to([0.5, 0.5**20, 0.5**40], (2, 3)),
                               rtol=1e-3)
    np.testing.assert_allclose(large.numpy(), np.broadcast_to([1.2, 1.2**20, 1.2**40], (2, 3)),
                               rtol=1e-3)


def test_float32_matches_float64():
    model, x = make(seed=5)
    ref = state_jacobian_norms(model, x, [1, 6])
    model32 = model.to(torch.float32)
    got = state_jacobian_norms(model32, x.float(), [1, 6])
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), ref, rtol=1e-4)


class TupleStateModel(nn.Module):
    """A cell with a tuple state (h, c): torch's LSTMCell."""

    def __init__(self, d, n):
        super().__init__()
        self.lstm = nn.LSTMCell(d, n, dtype=F64)
        self.n = n

    def initial_state(self, batch):
        z = torch.zeros(batch, self.n, dtype=F64)
        return (z, z.clone())

    def cell(self, x_t, state):
        return self.lstm(x_t, state)


def test_tuple_state_against_autograd_jacobian_of_the_unrolled_map():
    torch.manual_seed(6)
    n, d, steps = 3, 2, 6
    model = TupleStateModel(d, n)
    x = torch.randn(2, steps, d, dtype=F64)
    tau = 4
    full = state_jacobians(model, x, [tau])
    only_h = state_jacobians(model, x, [tau], component=0)
    assert full.shape == (2, 1, 2 * n, 2 * n) and only_h.shape == (2, 1, n, n)
    for i in range(2):
        # the state at step t - tau, then the map s(t - tau) -> s(t) as a plain function
        with torch.no_grad():
            s = model.initial_state(1)
            for k in range(steps - tau):
                s = model.cell(x[i : i + 1, k], s)
        start = torch.cat(s, dim=1)[0]

        def unrolled(flat, i=i):
            s = (flat[:n].unsqueeze(0), flat[n:].unsqueeze(0))
            for k in range(steps - tau, steps):
                s = model.cell(x[i : i + 1, k], s)
            return torch.cat(s, dim=1)[0]

        ref = torch.autograd.functional.jacobian(unrolled, start)
        assert torch.allclose(full[i, 0], ref, atol=1e-12)
        assert torch.allclose(only_h[i, 0], ref[:n, :n], atol=1e-12)


class StackedTupleStateModel(nn.Module):
    """Two LSTM cells stacked: a nested state ((h1, c1), (h2, c2))."""

    def __init__(self, d, n):
        super().__init__()
        self.first = nn.LSTMCell(d, n, dtype=F64)
        self.second = nn.LSTMCell(n, n, dtype=F64)
        self.n = n

    def initial_state(self, batch):
        return tuple((torch.zeros(batch, self.n, dtype=F64),
                      torch.zeros(batch, self.n, dtype=F64)) for _ in range(2))

    def cell(self, x_t, state):
        s1 = self.first(x_t, state[0])
        return (s1, self.second(s1[0], state[1]))


def test_nested_state_against_autograd_jacobian():
    torch.manual_seed(9)
    n, d, steps, tau = 2, 2, 5, 3
    model = StackedTupleStateModel(d, n)
    x = torch.randn(1, steps, d, dtype=F64)
    jac = state_jacobians(model, x, [tau])[0, 0]
    c2 = state_jacobians(model, x, [tau], component=3)[0, 0]
    assert jac.shape == (4 * n, 4 * n) and c2.shape == (n, n)
    with torch.no_grad():
        s = model.initial_state(1)
        for k in range(steps - tau):
            s = model.cell(x[:, k], s)
    flat = lambda s: torch.cat([s[0][0], s[0][1], s[1][0], s[1][1]], dim=1)[0]  # noqa: E731

    def unrolled(v):
        parts = [v[i * n : (i + 1) * n].unsqueeze(0) for i in range(4)]
        s = ((parts[0], parts[1]), (parts[2], parts[3]))
        for k in range(steps - tau, steps):
            s = model.cell(x[:, k], s)
        return flat(s)

    ref = torch.autograd.functional.jacobian(unrolled, flat(s))
    assert torch.allclose(jac, ref, atol=1e-12)
    assert torch.allclose(c2, ref[3 * n :, 3 * n :], atol=1e-12)


class BareCell(nn.Module):
    """A cell module used directly: ``cell(x_t, state)`` is its forward (as rnnlab.cells)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def initial_state(self, batch):
        return self.inner.initial_state(batch)

    def forward(self, x_t, state):
        return self.inner.cell(x_t, state)


def test_bare_cell_module_and_non_protocol_model():
    torch.manual_seed(10)
    wrapped = TupleStateModel(2, 3)
    x = torch.randn(2, 6, 2, dtype=F64)
    assert torch.equal(state_jacobians(BareCell(wrapped), x, [2, 6]),
                       state_jacobians(wrapped, x, [2, 6]))
    with pytest.raises(TypeError, match="cell protocol"):
        state_jacobians(nn.Linear(2, 2, dtype=F64), x, [1])


def test_bad_arguments():
    model, x = make(steps=10)
    with pytest.raises(ValueError, match="lag tau=11 is longer"):
        state_jacobian_norms(model, x, [1, 11])
    with pytest.raises(ValueError, match="lag tau=6 is longer"):
        state_jacobian_norms(model, x, [6], t=5)
    with pytest.raises(ValueError, match="lags must be >= 0"):
        state_jacobian_norms(model, x, [-1])
    with pytest.raises(ValueError, match="lags is empty"):
        state_jacobian_norms(model, x, [])
    with pytest.raises(TypeError, match="lag must be an int"):
        state_jacobian_norms(model, x, [1.5])
    with pytest.raises(ValueError, match="past the end"):
        state_jacobian_norms(model, x, [1], t=11)
    with pytest.raises(ValueError, match="positive integer"):
        state_jacobian_norms(model, x, [0], t=0)
    with pytest.raises(ValueError, match="ord must be"):
        state_jacobian_norms(model, x, [1], ord="bogus")
    with pytest.raises(ValueError, match="component=1"):
        state_jacobian_norms(model, x, [1], component=1)
    with pytest.raises(ValueError, match="3 dimensions"):
        state_jacobian_norms(model, x[0], [1])
    bad = x.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        state_jacobian_norms(model, bad, [1])
    with pytest.raises(TypeError, match="dtype"):
        state_jacobian_norms(model, x.float(), [1])


# ----------------------------------------------------------------------------------------------
# GradientNormTracker
# ----------------------------------------------------------------------------------------------
def backward_once(model, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, model.input_size, generator=g, dtype=F64)
    y = torch.randn(3, 5, model.output_size, generator=g, dtype=F64)
    model.zero_grad(set_to_none=True)
    out, _ = model(x)
    (out - y).pow(2).sum().backward()


def test_tracker_per_parameter_and_total_against_manual_norms():
    torch.manual_seed(7)
    model = ElmanRNN(2, 4, 3, dtype=F64)
    tracker = GradientNormTracker(model)
    assert tracker.columns == ["U", "W", "b", "V", "c"]
    for k in range(3):
        backward_once(model, k)
        row = tracker.record()
        grads = {n: p.grad for n, p in model.named_parameters()}
        for n, g in grads.items():
            assert row[n] == pytest.approx(math.sqrt(float((g**2).sum())), rel=1e-12)
        flat = torch.cat([g.reshape(-1) for g in grads.values()])
        assert row["total"] == pytest.approx(float(flat.norm()), rel=1e-12)
        assert row["step"] == k
    assert len(tracker.history) == 3
    rows = tracker.to_rows()
    rows[0]["total"] = -1.0  # a copy
    assert tracker.history[0]["total"] != -1.0
    table = tracker.as_tensor()
    assert table.shape == (3, 6)
    assert table[2, -1].item() == tracker.history[2]["total"]


def test_tracker_groups_inf_norm_missing_grads_and_every():
    torch.manual_seed(8)
    model = ElmanRNN(2, 4, 3, dtype=F64)
    tracker = GradientNormTracker(
        model, groups={"recurrent": ["U", "W", "b"], "readout": ["V", "c"]}, every=2
    )
    backward_once(model, 0)
    model.c.grad = None  # counts as zero
    row = tracker.record(step=10)
    rec = torch.cat([model.get_parameter(n).grad.reshape(-1) for n in "UWb"])
    assert row["recurrent"] == pytest.approx(float(rec.norm()), rel=1e-12)
    assert row["readout"] == pytest.approx(float(model.V.grad.norm()), rel=1e-12)
    assert row["step"] == 10
    assert tracker.record() is None  # every=2 skips the second call
    assert len(tracker.history) == 1

    inf_tracker = GradientNormTracker(list(model.named_parameters()), norm_type=math.inf)
    row = inf_tracker.record()
    assert row["W"] == pytest.approx(float(model.W.grad.abs().max()))
    assert row["total"] == pytest.approx(max(float(p.grad.abs().max())
                                             for p in model.parameters() if p.grad is not None))
    model.W.grad[0, 0] = float("nan")
    assert math.isnan(GradientNormTracker(model).record()["total"])


def test_tracker_bad_arguments():
    model = ElmanRNN(2, 4, 3)
    with pytest.raises(ValueError, match="unknown parameters"):
        GradientNormTracker(model, groups={"g": ["Q"]})
    with pytest.raises(ValueError, match="reserved"):
        GradientNormTracker({"total": model.W})
    with pytest.raises(ValueError, match="norm_type"):
        GradientNormTracker(model, norm_type=0)
    with pytest.raises(ValueError, match="no parameters"):
        GradientNormTracker([])
    with pytest.raises(TypeError):
        GradientNormTracker([1, 2])
