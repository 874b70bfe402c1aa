"""The cells one step at a time: torch.nn parity, hand-written references, the pure-step protocol
(torch.func jvp/vmap/functional_call), initialization and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp, vmap
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.cells import (
    DeepTransitionCell,
    ElmanCell,
    GRUCell,
    LSTMCell,
    RecurrentCell,
    StackedCell,
    flatten_state,
    map_state,
)
from rnnlab.models import ElmanRNN
from rnnlab.models.recurrent import RecurrentLayer

TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float64]
F64 = torch.float64

FACTORIES = {
    "elman": lambda **kw: ElmanCell(3, 4, **kw),
    "elman-relu": lambda **kw: ElmanCell(3, 4, nonlinearity="relu", **kw),
    "lstm": lambda **kw: LSTMCell(3, 4, **kw),
    "lstm-fgr": lambda **kw: LSTMCell(3, 4, variant="FGR", **kw),
    "gru-cho": lambda **kw: GRUCell(3, 4, **kw),
    "gru-torch": lambda **kw: GRUCell(3, 4, form="torch", **kw),
    "dt": lambda **kw: DeepTransitionCell(3, 4, layers=3, transition_size=5, **kw),
    "dts": lambda **kw: DeepTransitionCell(3, 4, shortcut=True, **kw),
    "stacked": lambda **kw: StackedCell(
        [LSTMCell(3, 5, **kw), GRUCell(5, 2, **kw), ElmanCell(2, 4, **kw)]
    ),
}


def _random_state(cell: RecurrentCell, batch: int) -> object:
    return map_state(lambda z: torch.randn_like(z) * 0.5, cell.initial_state(batch))


# ---------------------------------------------------------------------------------------------
# Elman
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_elman_step_equals_nn_rnncell(dtype, nonlinearity):
    ref = nn.RNNCell(3, 5, nonlinearity=nonlinearity, dtype=dtype)
    cell = ElmanCell(3, 5, nonlinearity=nonlinearity, dtype=dtype)
    cell.load_state_dict(ref.state_dict())
    x, h = torch.randn(4, 3, dtype=dtype), torch.randn(4, 5, dtype=dtype)
    torch.testing.assert_close(cell(x, h), ref(x, h), atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["fused", "loop"])
@pytest.mark.parametrize("bias", [True, False])
def test_elman_layer_equals_nn_rnn(dtype, impl, bias):
    ref = nn.RNN(3, 5, batch_first=True, bias=bias, dtype=dtype)
    cell = ElmanCell(3, 5, bias=bias, dtype=dtype)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in ref.state_dict().items()})
    x, h0 = torch.randn(2, 9, 3, dtype=dtype), torch.randn(2, 5, dtype=dtype)
    y_ref, h_ref = ref(x, h0[None])
    y, h = RecurrentLayer(cell, impl=impl)(x, h0)
    torch.testing.assert_close(y, y_ref, atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(h, h_ref[0], atol=TOL[dtype], rtol=0)


def test_elman_cell_equals_course_elman_rnn():
    model = ElmanRNN(3, 5, 1, dtype=F64)
    cell = ElmanCell(3, 5, dtype=F64)
    with torch.no_grad():
        cell.weight_ih.copy_(model.U)
        cell.weight_hh.copy_(model.W)
        cell.bias_ih.copy_(model.b)
        cell.bias_hh.zero_()
    x = torch.randn(2, 7, 3, dtype=F64)
    torch.testing.assert_close(RecurrentLayer(cell)(x)[0], model.hidden_states(x),
                               atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# GRU
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_form_gru_step_equals_nn_grucell(dtype):
    ref = nn.GRUCell(3, 5, dtype=dtype)
    cell = GRUCell(3, 5, form="torch", dtype=dtype)
    cell.load_state_dict(ref.state_dict())
    x, h = torch.randn(4, 3, dtype=dtype), torch.randn(4, 5, dtype=dtype)
    torch.testing.assert_close(cell(x, h), ref(x, h), atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["auto", "fused", "loop"])
def test_torch_form_gru_layer_equals_nn_gru(dtype, impl):
    ref = nn.GRU(3, 5, batch_first=True, dtype=dtype)
    cell = GRUCell(3, 5, form="torch", dtype=dtype)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in ref.state_dict().items()})
    x, h0 = torch.randn(2, 9, 3, dtype=dtype), torch.randn(2, 5, dtype=dtype)
    y_ref, h_ref = ref(x, h0[None])
    y, h = RecurrentLayer(cell, impl=impl)(x, h0)
    torch.testing.assert_close(y, y_ref, atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(h, h_ref[0], atol=TOL[dtype], rtol=0)
    # and with variable lengths, against nn.GRU on the packed batch
    lengths = torch.tensor([4, 9])
    y_ref, h_ref = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False),
                       h0[None])
    y_ref, _ = pad_packed_sequence(y_ref, batch_first=True, total_length=9)
    y, h = RecurrentLayer(cell, impl=impl)(x, h0, lengths=lengths)
    torch.testing.assert_close(y, y_ref, atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(h, h_ref[0], atol=TOL[dtype], rtol=0)


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def cho_gru_reference(cell, x, h0):
    """Cho et al. 2014, eqs. 5-8 (with torch's z convention h = z h_prev + (1 - z) h~)."""
    P = {k: v.detach().numpy() for k, v in cell.named_parameters()}
    H = cell.hidden_size
    Wr, Wz, Wn = (P["weight_ih"][k * H:(k + 1) * H] for k in range(3))
    Ur, Uz, Un = (P["weight_hh"][k * H:(k + 1) * H] for k in range(3))
    br, bz, bn = (P["bias_ih"][k * H:(k + 1) * H] for k in range(3))
    cr, cz, cn = (P["bias_hh"][k * H:(k + 1) * H] for k in range(3))
    h = h0.numpy()
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t].numpy()
        r = _sig(xt @ Wr.T + br + h @ Ur.T + cr)
        z = _sig(xt @ Wz.T + bz + h @ Uz.T + cz)
        h_tilde = np.tanh(xt @ Wn.T + bn + (r * h) @ Un.T + cn)
        h = z * h + (1.0 - z) * h_tilde
        out.append(h)
    return np.stack(out, 1)


def test_cho_gru_equals_hand_computed():
    cell = GRUCell(3, 4, form="cho", dtype=F64)
    x, h0 = torch.randn(2, 6, 3, dtype=F64), torch.randn(2, 4, dtype=F64)
    y, h = RecurrentLayer(cell)(x, h0)
    np.testing.assert_allclose(h.detach().numpy(), y[:, -1].detach().numpy(), atol=0, rtol=0)
    ref = cho_gru_reference(cell, x, h0)
    np.testing.assert_allclose(y.detach().numpy(), ref, atol=1e-12, rtol=0)
    # the two forms are different functions of the same weights
    torch_form = GRUCell(3, 4, form="torch", dtype=F64)
    torch_form.load_state_dict(cell.state_dict())
    assert (RecurrentLayer(torch_form)(x, h0)[0] - y).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------
# Deep transition
def dt_reference(cell, x, h0):
    """Pascanu et al. 2014, DT-RNN eq. 6 (+ DT(S) shortcut), tanh everywhere."""
    U = cell.weight_ih.detach().numpy()
    W1 = cell.weight_hh.detach().numpy()
    b1 = cell.bias_ih.detach().numpy()
    layers = [(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in cell.transition]
    Ws = None if cell.weight_shortcut is None else cell.weight_shortcut.detach().numpy()
    h = h0.numpy()
    out = []
    for t in range(x.shape[1]):
        z = np.tanh(h @ W1.T + x[:, t].numpy() @ U.T + b1)
        for k, (W, b) in enumerate(layers):
            a = z @ W.T + b
            if k == len(layers) - 1 and Ws is not None:
                a = a + h @ Ws.T
            z = np.tanh(a)
        h = z
        out.append(h)
    return np.stack(out, 1)


@pytest.mark.parametrize(("layers", "shortcut"), [(1, False), (2, False), (2, True), (3, True)])
def test_deep_transition_equals_hand_computed(layers, shortcut):
    cell = DeepTransitionCell(3, 4, layers=layers, transition_size=6, shortcut=shortcut, dtype=F64)
    x, h0 = torch.randn(2, 5, 3, dtype=F64), torch.randn(2, 4, dtype=F64)
    y, _ = RecurrentLayer(cell)(x, h0)
    np.testing.assert_allclose(y.detach().numpy(), dt_reference(cell, x, h0), atol=1e-12, rtol=0)


def test_one_layer_deep_transition_is_elman():
    dt = DeepTransitionCell(3, 4, layers=1, dtype=F64)
    el = ElmanCell(3, 4, dtype=F64)
    with torch.no_grad():
        el.weight_ih.copy_(dt.weight_ih)
        el.weight_hh.copy_(dt.weight_hh)
        el.bias_ih.copy_(dt.bias_ih)
        el.bias_hh.zero_()
    x = torch.randn(2, 5, 3, dtype=F64)
    torch.testing.assert_close(RecurrentLayer(dt)(x)[0], RecurrentLayer(el)(x)[0],
                               atol=1e-12, rtol=0)


def test_relu_transition_uses_relu():
    cell = DeepTransitionCell(3, 4, layers=2, nonlinearity="relu", dtype=F64)
    x, h = torch.randn(5, 3, dtype=F64), torch.randn(5, 4, dtype=F64)
    z = torch.relu(x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T)
    ref = torch.tanh(cell.transition[0](z))
    torch.testing.assert_close(cell(x, h), ref, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# The protocol, for every cell
@pytest.mark.parametrize("kind", list(FACTORIES))
def test_initial_state_and_hidden(kind):
    cell = FACTORIES[kind](dtype=F64)
    state = cell.initial_state(3)
    leaves = flatten_state(state)
    assert all(leaf.dtype == F64 and leaf.shape[0] == 3 and not leaf.any() for leaf in leaves)
    assert cell.hidden(state).shape == (3, cell.hidden_size)
    new = cell(torch.randn(3, 3, dtype=F64), state)
    assert cell.hidden(new).shape == (3, cell.hidden_size)
    assert [leaf.shape for leaf in flatten_state(new)] == [leaf.shape for leaf in leaves]


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_step_is_pure(kind):
    cell = FACTORIES[kind](dtype=F64)
    x, state = torch.randn(2, 3, dtype=F64), _random_state(cell, 2)
    before = [t.clone() for t in flatten_state(state)] + [p.clone() for p in cell.parameters()]
    a, b = cell(x, state), cell(x, state)
    after = flatten_state(state) + list(cell.parameters())
    assert all(torch.equal(u, v) for u, v in zip(before, after, strict=True))
    assert all(torch.equal(u, v) for u, v in zip(flatten_state(a), flatten_state(b), strict=True))


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_forward_mode_jvp_equals_finite_differences(kind):
    """torch.func.jvp through the step (what generic RTRL does) against central differences."""
    cell = FACTORIES[kind](dtype=F64)
    x, state = torch.randn(2, 3, dtype=F64), _random_state(cell, 2)
    params = {k: v.detach() for k, v in cell.named_parameters()}
    tangent = {k: torch.randn_like(v) for k, v in params.items()}
    s_tangent = map_state(torch.randn_like, state)

    def step(p, s):
        return functional_call(cell, p, (x, s))

    _, out_tangent = jvp(step, (params, state), (tangent, s_tangent))
    eps = 1e-6
    plus = step({k: v + eps * tangent[k] for k, v in params.items()},
                map_state(lambda s, d: s + eps * d, state, s_tangent))
    minus = step({k: v - eps * tangent[k] for k, v in params.items()},
                 map_state(lambda s, d: s - eps * d, state, s_tangent))
    for t, p, m in zip(flatten_state(out_tangent), flatten_state(plus), flatten_state(minus),
                       strict=True):
        torch.testing.assert_close(t, (p - m) / (2 * eps), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_vmap_over_the_batch_equals_the_batched_step(kind):
    cell = FACTORIES[kind](dtype=F64)
    x, state = torch.randn(4, 3, dtype=F64), _random_state(cell, 4)
    batched = cell(x, state)
    mapped = vmap(cell)(x, state)
    for u, v in zip(flatten_state(batched), flatten_state(mapped), strict=True):
        torch.testing.assert_close(u, v, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_float32_and_float64_and_to(kind):
    cell = FACTORIES[kind]()
    assert cell.dtype == torch.float32
    x, state = torch.randn(2, 3), cell.initial_state(2)
    out32 = cell(x, state)
    cell64 = cell.to(F64)
    assert cell64.dtype == F64
    assert all(leaf.dtype == F64 for leaf in flatten_state(cell64.initial_state(1)))
    out64 = cell64(x.double(), map_state(lambda s: s.double(), state))
    for a, b in zip(flatten_state(out32), flatten_state(out64), strict=True):
        assert b.dtype == F64
        torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", [k for k in FACTORIES if k != "stacked"])
def test_same_generator_seed_same_parameters(kind):
    a = FACTORIES[kind](generator=torch.Generator().manual_seed(3))
    b = FACTORIES[kind](generator=torch.Generator().manual_seed(3))
    c = FACTORIES[kind](generator=torch.Generator().manual_seed(4))
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_stacked_step_chains_the_layers():
    cells = [LSTMCell(3, 5, dtype=F64), GRUCell(5, 2, dtype=F64), ElmanCell(2, 4, dtype=F64)]
    stack = StackedCell(cells)
    x, state = torch.randn(2, 3, dtype=F64), _random_state(stack, 2)
    new = stack(x, state)
    s0 = cells[0](x, state[0])
    s1 = cells[1](s0[0], state[1])
    s2 = cells[2](s1, state[2])
    for u, v in zip(flatten_state(new), flatten_state((s0, s1, s2)), strict=True):
        torch.testing.assert_close(u, v, atol=0, rtol=0)
    assert stack.hidden(new) is new[2]
    assert (stack.input_size, stack.hidden_size, len(stack)) == (3, 4, 3)


# ---------------------------------------------------------------------------------------------
# Bad input
def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="nonlinearity"):
        ElmanCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="form must be one of"):
        GRUCell(3, 4, form="keras")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        LSTMCell(3, 0)
    with pytest.raises(TypeError, match="input_size must be an int"):
        GRUCell(True, 4)
    with pytest.raises(ValueError, match="shortcut needs layers >= 2"):
        DeepTransitionCell(3, 4, layers=1, shortcut=True)
    with pytest.raises(ValueError, match="layers must be a positive integer"):
        DeepTransitionCell(3, 4, layers=0)
    with pytest.raises(ValueError, match=r"cells\[1\] has input_size 3 but cells\[0\] has "
                                         r"hidden_size 4"):
        StackedCell([ElmanCell(2, 4), ElmanCell(3, 4)])
    with pytest.raises(ValueError, match="at least one cell"):
        StackedCell([])
    with pytest.raises(TypeError, match="peepholes must be a bool"):
        LSTMCell(3, 4, peepholes="yes")


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_step_rejects_wrong_sizes(kind):
    cell = FACTORIES[kind]()
    state = cell.initial_state(2)
    with pytest.raises(ValueError, match="x_t must have 3 features"):
        cell(torch.randn(2, 5), state)
    bad = map_state(lambda s: torch.zeros(2, s.shape[1] + 1), state)
    with pytest.raises(ValueError, match="features in its last dimension"):
        cell(torch.randn(2, 3), bad)
    with pytest.raises(TypeError, match=r"x_t must be a torch\.Tensor"):
        cell([0.0, 1.0, 2.0], state)
