"""Torch-shaped cell constructors (issue 11): ``(input_size, hidden_size, bias=True, *, ...)``.

A positional third argument means ``bias``, as in ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell``;
callers of the order before are never silently misread: where the old third argument was a bool
(the LSTM's peepholes) a FutureWarning says its meaning changed; the old order with any other
positional value keeps its old meaning for one release with a DeprecationWarning that spells the
call to write now. References: torch.nn's cells (bias or not, same weights, same outputs).
"""

import inspect
import warnings

import pytest
import torch

from rnnlab.cells import DeepTransitionCell, ElmanCell, ELSTMCell, GRUCell, LSTMCell

F64 = torch.float64
CELLS = [ElmanCell, LSTMCell, GRUCell, DeepTransitionCell, ELSTMCell]


@pytest.mark.parametrize("cls", CELLS)
def test_signature_is_torch_shaped(cls):
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params[:3]] == ["input_size", "hidden_size", "bias"]
    assert params[2].default is True
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[3:])


@pytest.mark.parametrize(("ours", "theirs"), [
    (lambda: ElmanCell(3, 4, False, dtype=F64), lambda: torch.nn.RNNCell(3, 4, False, dtype=F64)),
    (lambda: LSTMCell(3, 4, False, peepholes=False, dtype=F64),
     lambda: torch.nn.LSTMCell(3, 4, False, dtype=F64)),
    (lambda: GRUCell(3, 4, False, form="torch", dtype=F64),
     lambda: torch.nn.GRUCell(3, 4, False, dtype=F64)),
])
def test_positional_bias_false_is_torch_s(ours, theirs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        cell = ours()
    ref = theirs()
    assert cell.bias_ih is None and cell.bias_hh is None
    cell.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, dtype=F64)
    state = cell.initial_state(5)
    new = cell(x, state)
    h = new[0] if isinstance(new, tuple) else new
    want = ref(x)
    want = want[0] if isinstance(want, tuple) else want
    # the same few dot products of length <= 4 + 3, summed in other orders: ~1e-15
    assert torch.allclose(h, want, atol=1e-13, rtol=0)


def test_lstm_positional_bool_warns_that_it_is_bias_now():
    with pytest.warns(FutureWarning, match="bias=False or peepholes=False"):
        cell = LSTMCell(3, 4, False)
    assert cell.bias_ih is None and cell.spec.peepholes  # bias off, peepholes on (the default)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LSTMCell(3, 4, bias=False).bias_ih is None
        assert not LSTMCell(3, 4, peepholes=False).spec.peepholes
        ElmanCell(3, 4, False)  # a bool was never the old meaning of Elman's third argument
        GRUCell(3, 4, False)


@pytest.mark.parametrize(("make", "attr", "value", "write"), [
    (lambda: ElmanCell(3, 4, "relu"), "nonlinearity", "relu",
     "ElmanCell(3, 4, nonlinearity='relu')"),
    (lambda: GRUCell(3, 4, "torch"), "form", "torch", "GRUCell(3, 4, form='torch')"),
    (lambda: DeepTransitionCell(3, 4, 3), "num_layers", 3, "DeepTransitionCell(3, 4, layers=3)"),
    (lambda: ELSTMCell(3, 4, 2.0), "forget_bias", 2.0, "ELSTMCell(3, 4, forget_bias=2.0)"),
    (lambda: LSTMCell(3, 4, False, "NP"), "variant", "NP",
     "LSTMCell(3, 4, peepholes=False, variant='NP')"),
])
def test_old_positional_options_keep_their_meaning_with_a_deprecation(make, attr, value, write):
    with pytest.warns(DeprecationWarning, match=write.replace("(", r"\(").replace(")", r"\)")):
        cell = make()
    assert getattr(cell, attr) == value


def test_old_order_with_bias_last_and_bad_calls():
    with pytest.warns(DeprecationWarning):
        cell = ElmanCell(3, 4, "tanh", False)
    assert cell.bias_ih is None
    with pytest.raises(TypeError, match="positional arguments"):
        GRUCell(3, 4, "cho", True, 7)
    with pytest.raises(TypeError, match="multiple values for form"):
        GRUCell(3, 4, "cho", form="torch")
    with pytest.raises(TypeError, match="bias must be a bool"):
        LSTMCell(3, 4, bias="no")
    with pytest.raises(ValueError, match="no bias=False"):
        ELSTMCell(3, 4, False)


def test_one_bias_elman_cell_is_the_two_bias_cell_with_zero_recurrent_bias():
    one = ElmanCell(3, 4, recurrent_bias=False, dtype=F64)
    two = ElmanCell(3, 4, dtype=F64)
    with torch.no_grad():
        two.weight_ih.copy_(one.weight_ih)
        two.weight_hh.copy_(one.weight_hh)
        two.bias_ih.copy_(one.bias_ih)
        two.bias_hh.zero_()
    assert [n for n, _ in one.named_parameters()] == ["weight_ih", "weight_hh", "bias_ih"]
    assert list(one.state_dict()) == ["weight_ih", "weight_hh", "bias_ih"]
    x = torch.randn(2, 5, 3, dtype=F64)
    from rnnlab.cells import run_cell
    for impl in ("fused", "loop"):
        a = run_cell(one, x, impl=impl)[0]
        b = run_cell(two, x, impl="loop")[0]
        assert torch.allclose(a, b, atol=1e-13, rtol=0), impl
