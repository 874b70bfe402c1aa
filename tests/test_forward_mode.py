"""Forward-mode RTRL for any cell, UORO, SnAp-1 and the O(N D) eLSTM rule."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab import ElmanRNN
from rnnlab.cells import concat_state as flatten_state
from rnnlab.cells.elstm import ELSTMCell
from rnnlab.learning import RTRL
from rnnlab.learning.approx import UORO, SnAp1
from rnnlab.learning.elstm_rtrl import ELSTMRTRL
from rnnlab.learning.forward_mode import ForwardModeRTRL
from tests.reference import CellNetwork, unrolled_gradients

F64 = torch.float64


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def elstm_net(d=2, n=3, o=2, seed=0):
    torch.manual_seed(seed)
    cell = ELSTMCell(d, n, dtype=F64)
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(3.0)  # away from the nearly linear regime
    return CellNetwork(cell, o)


def run(rule, x, y, every=None):
    rule.reset(x.shape[0])
    out = []
    for t in range(x.shape[1]):
        rule.step(x[:, t], y[:, t])
        if every is not None:
            out.append({n: p.grad.clone() for n, p in rule.model.named_parameters()})
    return out


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 5), d=st.integers(1, 3), batch=st.integers(1, 3),
       steps=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_forward_mode_equals_closed_form_rtrl_on_elman(n, d, batch, steps, seed):
    torch.manual_seed(seed)
    model = ElmanRNN(d, n, 2, dtype=F64)
    x = torch.randn(batch, steps, d, dtype=F64)
    y = torch.randn(batch, steps, 2, dtype=F64)
    generic = run(ForwardModeRTRL(model), x, y, every=True)
    model.zero_grad(set_to_none=True)
    exact = run(RTRL(model), x, y, every=True)
    for g_t, e_t in zip(generic, exact, strict=True):
        for name in e_t:
            assert rel(g_t[name], e_t[name]) < 1e-10


def test_forward_mode_equals_unrolled_autograd_on_tuple_state_cell():
    model = elstm_net()
    x = torch.randn(3, 7, 2, dtype=F64)
    y = torch.randn(3, 7, 2, dtype=F64)
    rule = ForwardModeRTRL(model)
    rule.reset(3)
    for t in range(7):
        rule.step(x[:, t], y[:, t])
        ref = unrolled_gradients(model, x, y, upto=t + 1)
        for name, p in model.named_parameters():
            assert rel(p.grad, ref[name]) < 1e-10, (name, t)


def test_forward_mode_influence_is_the_state_jacobian():
    model = elstm_net(seed=3)
    x = torch.randn(2, 4, 2, dtype=F64)
    rule = ForwardModeRTRL(model)
    rule.reset(2)
    for t in range(4):
        rule.step(x[:, t])
    names = rule.parameter_names

    def final_state(*params):
        mapping = dict(zip(names, params, strict=True))
        state = model.initial_state(2)
        for t in range(4):
            state = torch.func.functional_call(model.cell, {n.removeprefix("cell."): p
                                                            for n, p in mapping.items()},
                                               (x[:, t], state))
        return flatten_state(state)

    jac = torch.autograd.functional.jacobian(final_state,
                                             tuple(model.get_parameter(n) for n in names))
    dense = torch.cat([j.reshape(2, j.shape[1], -1) for j in jac], dim=2)
    assert torch.allclose(rule.influence, dense, atol=1e-12)
    assert set(names) == {"cell." + n for n, _ in model.cell.named_parameters()}
    assert rule.readout_names == ["readout.weight", "readout.bias"]


def test_elstm_rule_is_exact_and_equals_generic():
    model = elstm_net(d=3, n=4, o=2, seed=5)
    x = torch.randn(2, 6, 3, dtype=F64)
    y = torch.randn(2, 6, 2, dtype=F64)
    fast = run(ELSTMRTRL(model), x, y, every=True)
    for t, g_t in enumerate(fast):
        ref = unrolled_gradients(model, x, y, upto=t + 1)
        for name in ref:
            assert rel(g_t[name], ref[name]) < 1e-10, (name, t)
    model.zero_grad(set_to_none=True)
    generic = run(ForwardModeRTRL(model), x, y, every=True)
    for a, b in zip(fast, generic, strict=True):
        for name in a:
            assert rel(a[name], b[name]) < 1e-10


def test_snap1_is_exact_for_elementwise_recurrence():
    model = elstm_net(seed=7)
    x = torch.randn(2, 6, 2, dtype=F64)
    y = torch.randn(2, 6, 2, dtype=F64)
    run(SnAp1(model), x, y)
    snap = {n: p.grad.clone() for n, p in model.named_parameters()}
    ref = unrolled_gradients(model, x, y)
    for name in ref:
        assert rel(snap[name], ref[name]) < 1e-10, name


def test_snap1_on_elman_matches_its_closed_form():
    """SnAp-1 on Elman keeps M[i, (i, j)] only: M(t) = d_i (W_ii M(t-1) + z_j)."""
    torch.manual_seed(2)
    n, d = 4, 2
    model = ElmanRNN(d, n, 1, dtype=F64)
    x = torch.randn(1, 5, d, dtype=F64)
    rule = SnAp1(model)
    rule.reset(1)
    assert int(rule.pattern.sum()) == n * (n + d + 1)  # one unit per parameter
    mw = torch.zeros(n, n, dtype=F64)
    mu = torch.zeros(n, d, dtype=F64)
    mb = torch.zeros(n, dtype=F64)
    h = torch.zeros(n, dtype=F64)
    W, U, b = model.W.detach(), model.U.detach(), model.b.detach()
    for t in range(5):
        rule.step(x[:, t])
        h_new = torch.tanh(U @ x[0, t] + W @ h + b)
        dd = 1 - h_new**2
        diag = torch.diagonal(W)
        mw = dd[:, None] * (diag[:, None] * mw + h[None, :])
        mu = dd[:, None] * (diag[:, None] * mu + x[0, t][None, :])
        mb = dd * (diag * mb + 1)
        h = h_new
    dense = torch.zeros(rule.pattern.shape, dtype=F64)
    dense[rule._rows, rule._cols] = rule.values[0]
    # columns are ordered as rule.parameter_names: U, W, b
    expected = torch.cat([_block(mu), _block(mw), torch.diag(mb)], dim=1)
    assert rule.parameter_names == ["U", "W", "b"]
    assert torch.allclose(dense, expected, atol=1e-12)


def _block(m):
    """(N, K) per-unit values -> (N, N*K) with row i holding m[i] in columns i*K..i*K+K-1."""
    n, k = m.shape
    out = torch.zeros(n, n * k, dtype=m.dtype)
    for i in range(n):
        out[i, i * k : (i + 1) * k] = m[i]
    return out


def test_uoro_is_unbiased():
    torch.manual_seed(0)
    model = ElmanRNN(2, 4, 1, dtype=F64)
    reps = 20_000
    x = torch.randn(1, 3, 2, dtype=F64).expand(reps, 3, 2).contiguous()
    uoro = UORO(model, seed=1)
    uoro.reset(reps)
    exact = ForwardModeRTRL(model)
    exact.reset(1)
    for t in range(3):
        uoro.step(x[:, t])
        exact.step(x[:1, t])
    estimate = torch.einsum("bs,bp->sp", uoro.state_tilde, uoro.theta_tilde) / reps
    assert rel(estimate, exact.influence[0]) < 0.08
    # a single sample is far from exact (it is rank one)
    single = torch.outer(uoro.state_tilde[0], uoro.theta_tilde[0])
    assert rel(single, exact.influence[0]) > 0.2


def test_uoro_seeded_and_trains():
    torch.manual_seed(0)
    model = ElmanRNN(1, 8, 1, readout="identity")
    x = torch.sin(torch.arange(400.0) / 4).reshape(1, 400, 1)
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    rule = UORO(model, seed=3)
    rule.reset(1)
    losses = []
    for t in range(399):
        rule.step(x[:, t], y[:, t])
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(float(rule.last_loss))
    assert sum(losses[-50:]) < 0.3 * sum(losses[:50])


def test_bad_input():
    with pytest.raises(TypeError, match="cell protocol"):
        ForwardModeRTRL(torch.nn.Linear(2, 2), input_size=2)
    model = elstm_net()
    rule = ForwardModeRTRL(model)
    rule.reset(2)
    with pytest.raises(ValueError, match="reset"):
        rule.step(torch.randn(3, 2, dtype=F64))
    with pytest.raises(ValueError, match="shape"):
        rule.step(torch.randn(2, 2, dtype=F64), torch.randn(2, 5, dtype=F64))
    with pytest.raises(TypeError, match="ELSTMCell"):
        ELSTMRTRL(ElmanRNN(1, 2, 1))
    with pytest.raises(ValueError, match="eps"):
        UORO(model, eps=0.0)


@pytest.mark.parametrize(
    "make_cell",
    [
        lambda: __import__("rnnlab").LSTMCell(2, 3, dtype=F64),                 # peepholes
        lambda: __import__("rnnlab").LSTMCell(2, 3, variant="CIFG", dtype=F64),
        lambda: __import__("rnnlab").LSTMCell(2, 3, variant="FGR", dtype=F64),   # (h, c, gates)
        lambda: __import__("rnnlab").GRUCell(2, 3, form="cho", dtype=F64),
        lambda: __import__("rnnlab").GRUCell(2, 3, form="torch", dtype=F64),
        lambda: __import__("rnnlab").StackedCell(
            [__import__("rnnlab").LSTMCell(2, 3, dtype=F64),
             __import__("rnnlab").GRUCell(3, 2, dtype=F64)]),
        lambda: __import__("rnnlab").DeepTransitionCell(2, 3, layers=2, shortcut=True,
                                                        dtype=F64),
    ],
    ids=["lstm", "lstm-cifg", "lstm-fgr", "gru-cho", "gru-torch", "stacked", "dts"],
)
def test_forward_mode_rtrl_equals_bptt_for_gated_cells(make_cell):
    from rnnlab import RecurrentNetwork

    torch.manual_seed(11)
    model = RecurrentNetwork(make_cell(), 2, dtype=F64)
    x = torch.randn(2, 5, 2, dtype=F64)
    y = torch.randn(2, 5, 2, dtype=F64)
    run(ForwardModeRTRL(model), x, y)
    # a parameter a variant switches off (e.g. CIFG's forget peephole) has no gradient: zero
    rtrl = {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
            for n, p in model.named_parameters()}
    # BPTT through the network's own sequence forward (fused/hand-written paths where chosen)
    model.zero_grad(set_to_none=True)
    out, _ = model(x)
    (y - out).pow(2).sum().backward()
    for name, p in model.named_parameters():
        bptt = torch.zeros_like(p) if p.grad is None else p.grad
        if float(bptt.norm()) == 0.0:
            assert float(rtrl[name].norm()) == 0.0, name
        else:
            assert rel(rtrl[name], bptt) < 1e-10, name


def test_approximations_run_on_lstm_and_snap_keeps_two_units_per_column():
    from rnnlab import LSTMCell, RecurrentNetwork

    torch.manual_seed(0)
    model = RecurrentNetwork(LSTMCell(2, 4, peepholes=False, dtype=F64), 1, dtype=F64)
    x = torch.randn(3, 4, 2, dtype=F64)
    y = torch.randn(3, 4, 1, dtype=F64)
    snap = SnAp1(model)
    run(snap, x, y)
    # an LSTM parameter row feeds one unit's c and h: two entries per column
    per_column = snap.pattern.sum(0)
    assert int(per_column.max()) == 2 and int(per_column.min()) >= 1
    model.zero_grad(set_to_none=True)
    run(UORO(model, seed=0), x, y)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
