"""RecurrentLayer and RecurrentNetwork: every implementation against stepping the cell by hand,
variable lengths against running each sequence alone, readouts against hand-written formulas,
BPTT through the layer against finite differences, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jvp
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.cells import (
    DeepTransitionCell,
    ElmanCell,
    GRUCell,
    LSTMCell,
    StackedCell,
    flatten_state,
    map_state,
)
from rnnlab.models.recurrent import RecurrentLayer, RecurrentNetwork

F64 = torch.float64

FACTORIES = {
    "elman": lambda: ElmanCell(3, 4, dtype=F64),
    "lstm": lambda: LSTMCell(3, 4, dtype=F64),
    "lstm-np": lambda: LSTMCell(3, 4, variant="NP", dtype=F64),
    "lstm-cifg": lambda: LSTMCell(3, 4, variant="CIFG", dtype=F64),
    "lstm-fgr": lambda: LSTMCell(3, 4, variant="FGR", dtype=F64),
    "gru-cho": lambda: GRUCell(3, 4, dtype=F64),
    "gru-torch": lambda: GRUCell(3, 4, form="torch", dtype=F64),
    "dts": lambda: DeepTransitionCell(3, 4, shortcut=True, dtype=F64),
    "stacked-np": lambda: StackedCell(
        [LSTMCell(3, 5, variant="NP", dtype=F64), LSTMCell(5, 4, variant="NP", dtype=F64)]
    ),
    "stacked-mixed": lambda: StackedCell([LSTMCell(3, 5, dtype=F64), GRUCell(5, 4, dtype=F64)]),
}


def _cases(return_states: bool) -> list[tuple[str, str]]:
    cases = []
    for kind, make in FACTORIES.items():
        for impl in ("auto", *make().available_impls(return_states)):
            cases.append((kind, impl))
    return cases


def _step_by_hand(cell, x, state):
    """The protocol itself: state = cell(x_t, state), one call per step."""
    hs, states = [], []
    for t in range(x.shape[1]):
        state = cell(x[:, t], state)
        hs.append(cell.hidden(state))
        states.append(state)
    return torch.stack(hs, 1), state, map_state(lambda *s: torch.stack(s, 1), *states)


def _assert_states_close(a, b, atol=1e-12):
    for u, v in zip(flatten_state(a), flatten_state(b), strict=True):
        torch.testing.assert_close(u, v, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "impl"), _cases(return_states=True))
def test_layer_equals_stepping_the_cell(kind, impl):
    cell = FACTORIES[kind]()
    x = torch.randn(3, 6, 3, dtype=F64)
    s0 = map_state(torch.randn_like, cell.initial_state(3))
    y_ref, final_ref, states_ref = _step_by_hand(cell, x, s0)
    y, final, states = RecurrentLayer(cell, impl=impl)(x, s0, return_states=True)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    _assert_states_close(final, final_ref)
    _assert_states_close(states, states_ref)
    y2, final2 = RecurrentLayer(cell, impl=impl)(x, s0)
    torch.testing.assert_close(y2, y_ref, atol=1e-12, rtol=0)
    _assert_states_close(final2, final_ref)


@pytest.mark.parametrize(("kind", "impl"), _cases(return_states=False))
def test_lengths_equal_each_sequence_alone(kind, impl):
    cell = FACTORIES[kind]()
    lengths = [5, 2, 4]
    x = torch.randn(3, 5, 3, dtype=F64)
    for b, n in enumerate(lengths):  # padding holds large garbage: it must not matter
        x[b, n:] = 1e3
    x.requires_grad_(True)
    s0 = map_state(torch.randn_like, cell.initial_state(3))
    layer = RecurrentLayer(cell, impl=impl)
    y, final = layer(x, s0, lengths=lengths)
    w = torch.randn_like(y)
    ((y * w).sum() + sum(s.sum() for s in flatten_state(final))).backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in cell.parameters()]
    cell.zero_grad()
    alone_grads = [torch.zeros_like(g) for g in grads]
    for b, n in enumerate(lengths):
        xb = x.detach()[b:b + 1, :n].clone().requires_grad_(True)
        sb = map_state(lambda s, b=b: s[b:b + 1], s0)
        yb, fb = RecurrentLayer(cell, impl="loop")(xb, sb)
        torch.testing.assert_close(y[b:b + 1, :n], yb, atol=1e-12, rtol=0)
        assert (y[b, n:] == 0).all()
        _assert_states_close(map_state(lambda s, b=b: s[b:b + 1], final), fb)
        ((yb * w[b:b + 1, :n]).sum() + sum(s.sum() for s in flatten_state(fb))).backward()
        torch.testing.assert_close(x.grad[b, :n], xb.grad[0], atol=1e-10, rtol=0)
        assert (x.grad[b, n:] == 0).all()
        for acc, p in zip(alone_grads, cell.parameters(), strict=True):
            acc += p.grad if p.grad is not None else 0.0
        cell.zero_grad()
    for g, a in zip(grads, alone_grads, strict=True):
        torch.testing.assert_close(g, a, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "gru-cho", "stacked-mixed"])
def test_return_states_with_lengths_zero_after_the_end(kind):
    cell = FACTORIES[kind]()
    x = torch.randn(2, 4, 3, dtype=F64)
    _, final, states = RecurrentLayer(cell)(x, lengths=torch.tensor([4, 2]), return_states=True)
    for leaf_states, leaf_final in zip(flatten_state(states), flatten_state(final), strict=True):
        assert (leaf_states[1, 2:] == 0).all()
        torch.testing.assert_close(leaf_states[1, 1], leaf_final[1], atol=0, rtol=0)
        torch.testing.assert_close(leaf_states[0, 3], leaf_final[0], atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "lstm-np", "gru-cho", "stacked-np"])
def test_packed_sequence_equals_lengths(kind):
    cell = FACTORIES[kind]()
    x = torch.randn(4, 6, 3, dtype=F64)
    lengths = torch.tensor([3, 6, 1, 4])
    y, final = RecurrentLayer(cell)(x, lengths=lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    yp, final_p = RecurrentLayer(cell)(packed)
    assert isinstance(yp, torch.nn.utils.rnn.PackedSequence)
    torch.testing.assert_close(yp.sorted_indices, packed.sorted_indices)
    y_unpacked, out_lengths = pad_packed_sequence(yp, batch_first=True, total_length=6)
    assert torch.equal(out_lengths, lengths)
    torch.testing.assert_close(y_unpacked, y, atol=1e-12, rtol=0)
    _assert_states_close(final_p, final)


def test_forward_mode_through_the_loop_layer():
    """jvp through a whole sequence (impl="loop") equals central finite differences."""
    cell = LSTMCell(3, 4, dtype=F64)
    layer = RecurrentLayer(cell, impl="loop")
    x = torch.randn(2, 5, 3, dtype=F64)
    params = {f"cell.{k}": v.detach() for k, v in cell.named_parameters()}
    tangent = {k: torch.randn_like(v) for k, v in params.items()}

    def run(p):
        return functional_call(layer, p, (x,))[0]

    _, dy = jvp(run, (params,), (tangent,))
    eps = 1e-6
    fd = (run({k: v + eps * tangent[k] for k, v in params.items()})
          - run({k: v - eps * tangent[k] for k, v in params.items()})) / (2 * eps)
    torch.testing.assert_close(dy, fd, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize(("kind", "impl"), [("gru-cho", "loop"), ("gru-torch", "fused"),
                                            ("elman", "fused"), ("dts", "loop"),
                                            ("stacked-mixed", "auto")])
def test_bptt_gradcheck(kind, impl):
    cell = FACTORIES[kind]()
    names = [n for n, _ in cell.named_parameters()]
    values = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    layer = RecurrentLayer(cell, impl=impl)
    x = torch.randn(2, 3, 3, dtype=F64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def f(x, *vals):
        p = {f"cell.{n}": v for n, v in zip(names, vals, strict=True)}
        y, final = functional_call(layer, p, (x,), {"lengths": lengths})
        return (y, *flatten_state(final))

    assert torch.autograd.gradcheck(f, (x, *values), atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# RecurrentNetwork
@pytest.mark.parametrize("readout", ["identity", "tanh", "sigmoid"])
def test_network_readout_by_hand(readout):
    cell = LSTMCell(3, 4, dtype=F64)
    net = RecurrentNetwork(cell, 2, readout=readout)
    assert net.readout.weight.dtype == F64
    x = torch.randn(2, 5, 3, dtype=F64)
    out, final, (hs, _) = net(x, return_states=True)
    f = {"identity": lambda a: a, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[readout]
    ref = f(hs @ net.readout.weight.T + net.readout.bias)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(net.output(final), out[:, -1], atol=1e-12, rtol=0)


def test_deep_output_network_by_hand():
    """DOT(S)-RNN: deep transition with shortcut under a 3-layer readout MLP."""
    cell = DeepTransitionCell(3, 4, shortcut=True, dtype=F64)
    net = RecurrentNetwork(cell, 2, readout="sigmoid", readout_layers=3, readout_hidden_size=6,
                           readout_activation="relu")
    assert [lin.out_features for lin in (*net.output_hidden, net.readout)] == [6, 6, 2]
    x = torch.randn(2, 5, 3, dtype=F64)
    out, _ = net(x)
    h, _ = RecurrentLayer(cell)(x)
    v1, v2, v3 = (*net.output_hidden, net.readout)
    ref = torch.sigmoid(v3(torch.relu(v2(torch.relu(v1(h))))))
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


def test_network_from_a_list_stacks_and_masks_padding():
    net = RecurrentNetwork([GRUCell(3, 4, dtype=F64), GRUCell(4, 4, dtype=F64)], 2)
    assert isinstance(net.cell, StackedCell) and len(net.cell) == 2
    x = torch.randn(3, 5, 3, dtype=F64)
    lengths = [5, 1, 3]
    out, final = net(x, lengths=lengths)
    for b, n in enumerate(lengths):
        alone, fb = net(x[b:b + 1, :n])
        torch.testing.assert_close(out[b:b + 1, :n], alone, atol=1e-12, rtol=0)
        assert (out[b, n:] == 0).all()
        _assert_states_close(map_state(lambda s, b=b: s[b:b + 1], final), fb)
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True,
                                  enforce_sorted=False)
    out_p, _ = net(packed)
    torch.testing.assert_close(
        pad_packed_sequence(out_p, batch_first=True, total_length=5)[0], out, atol=1e-12, rtol=0
    )


def test_network_seeded_readout():
    a = RecurrentNetwork(ElmanCell(3, 4), 2, generator=torch.Generator().manual_seed(1))
    b = RecurrentNetwork(ElmanCell(3, 4), 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.readout.weight, b.readout.weight)


# ---------------------------------------------------------------------------------------------
# Bad input
def test_bad_sequences_and_lengths():
    layer = RecurrentLayer(LSTMCell(3, 4))
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"x must have 3 dimensions \(batch, time, features\)"):
        layer(x[0])
    with pytest.raises(ValueError, match="x has 2 features in its last dimension, expected 3"):
        layer(torch.randn(2, 5, 2))
    with pytest.raises(TypeError, match=r"dtype torch\.float64"):
        layer(x.double())
    bad = x.clone()
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        layer(bad)
    with pytest.raises(ValueError, match="lengths has 3 entries but the input has 2 sequences"):
        layer(x, lengths=[5, 4, 3])
    with pytest.raises(ValueError, match="between 1 and the input's 5 time steps"):
        layer(x, lengths=[6, 2])
    with pytest.raises(ValueError, match="between 1 and the input's 5 time steps"):
        layer(x, lengths=torch.tensor([0, 2]))
    with pytest.raises(TypeError, match="lengths must hold integers"):
        layer(x, lengths=torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="lengths must be 1-D"):
        layer(x, lengths=torch.tensor([[2, 3]]))
    packed = pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
    with pytest.raises(ValueError, match="not both"):
        layer(packed, lengths=[5, 3])
    with pytest.raises(ValueError,
                       match=r"state0\[0\] \(h\) has shape \(3, 4\), expected \(2, 4\)"):
        layer(x, (torch.zeros(3, 4), torch.zeros(3, 4)))
    with pytest.raises(ValueError, match="impl must be one of"):
        RecurrentLayer(LSTMCell(3, 4), impl="cuda")
    with pytest.raises(TypeError, match="RecurrentCell or a list"):
        RecurrentLayer(torch.nn.LSTM(3, 4))


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="readout must be one of"):
        RecurrentNetwork(ElmanCell(3, 4), 2, readout="softmax")
    with pytest.raises(ValueError, match="readout_layers must be a positive integer"):
        RecurrentNetwork(ElmanCell(3, 4), 2, readout_layers=0)
    with pytest.raises(ValueError, match="readout_activation"):
        RecurrentNetwork(ElmanCell(3, 4), 2, readout_layers=2, readout_activation="gelu")
    with pytest.raises(ValueError, match="output_size must be a positive integer"):
        RecurrentNetwork(ElmanCell(3, 4), 0)
    with pytest.raises(ValueError, match="impl='fused' is not available for layer 0"):
        RecurrentLayer([LSTMCell(3, 4), LSTMCell(4, 4, variant="NP")], impl="fused")(
            torch.randn(1, 2, 3))
