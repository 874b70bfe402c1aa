"""rnnlab.nn state dicts: torch's keys both ways, and bad loads and bad inputs refused with a
clear message, nothing half-loaded (issue 12, part 6)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import rnnlab.nn as rnn


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} was written by a failed load"


@pytest.mark.parametrize(("ours_cls", "torch_cls", "kw"), [
    (rnn.LSTM, nn.LSTM, {"proj_size": 2}), (rnn.LSTM, nn.LSTM, {}), (rnn.GRU, nn.GRU, {}),
    (rnn.RNN, nn.RNN, {"nonlinearity": "relu"})])
def test_state_dicts_load_both_ways(ours_cls, torch_cls, kw):
    ours = ours_cls(3, 4, num_layers=2, bidirectional=True, bias=True, **kw)
    ref = torch_cls(3, 4, num_layers=2, bidirectional=True, **kw)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    fresh = torch_cls(3, 4, num_layers=2, bidirectional=True, **kw)
    fresh.load_state_dict(ours.state_dict())  # torch ignores rnnlab's metadata
    for key, value in ours.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    # through torch.save / torch.load (the metadata travels with the state dict)
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    again = ours_cls(3, 4, num_layers=2, bidirectional=True, **kw)
    again.load_state_dict(torch.load(buffer))
    _assert_unchanged(again, _snapshot(ours))


BAD = [
    ("hidden size", lambda: nn.LSTM(3, 5), r"weight_ih_l0 has shape \(20, 3\) in the state "
     r"dict but \(16, 3\) here"),
    ("input size", lambda: nn.LSTM(2, 4), r"weight_ih_l0 has shape \(16, 2\)"),
    ("layers", lambda: nn.LSTM(3, 4, num_layers=2), r"unexpected: .*weight_ih_l1.*it has 2 "
     r"layer\(s\), this layer 1"),
    ("bidirectional", lambda: nn.LSTM(3, 4, bidirectional=True), r"it is bidirectional"),
    ("bias", lambda: nn.LSTM(3, 4, bias=False), r"missing: bias_hh_l0, bias_ih_l0.*"
     r"bias=False there"),
    ("proj", lambda: nn.LSTM(3, 4, proj_size=2), r"proj_size > 0: yes there"),
    ("peepholes", lambda: rnn.LSTM(3, 4, peepholes=True), r"unexpected: peephole_f_l0.*"
     r"peepholes: yes there, no here"),
    ("variant", lambda: rnn.LSTM(3, 4, variant="CIFG"),
     r"variant='CIFG' there, 'vanilla' here"),
    ("GRU", lambda: nn.GRU(3, 4), r"weight_ih_l0 has shape \(12, 3\)"),
]


@pytest.mark.parametrize(("what", "source", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_state_dicts_are_refused_and_nothing_is_loaded(what, source, message):
    target = rnn.LSTM(3, 4)
    before = _snapshot(target)
    state = source().state_dict()
    with pytest.raises(RuntimeError, match=message) as info:
        target.load_state_dict(state)
    assert "nothing was loaded" in str(info.value)
    _assert_unchanged(target, before)


def test_a_partial_shape_mismatch_writes_nothing_even_non_strict():
    # torch's own load would copy weight_hh/biases and then complain about weight_ih
    target = rnn.LSTM(3, 4)
    before = _snapshot(target)
    state = nn.LSTM(2, 4).state_dict()
    with pytest.raises(RuntimeError, match=r"weight_ih_l0 has shape \(16, 2\)"):
        target.load_state_dict(state, strict=False)
    _assert_unchanged(target, before)


def test_inside_a_parent_module_nothing_of_the_layer_is_written():
    class Net(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.rnn = rnn.GRU(d, 4)

    target = Net(3)
    before = _snapshot(target)
    with pytest.raises(RuntimeError, match=r"rnn\.weight_ih_l0 has shape \(12, 2\)"):
        target.load_state_dict(Net(2).state_dict())
    _assert_unchanged(target, before)


def test_cho_gru_refuses_a_torch_gru_state_dict():
    cho = rnn.GRU(3, 4, form="cho")
    before = _snapshot(cho)
    with pytest.raises(RuntimeError, match=r"form='torch'.*form='cho'.*different function"):
        cho.load_state_dict(nn.GRU(3, 4).state_dict())
    _assert_unchanged(cho, before)
    # the other way: torch-form rnnlab GRU from a cho state dict
    plain = rnn.GRU(3, 4)
    with pytest.raises(RuntimeError, match=r"form='cho' there, 'torch' here"):
        plain.load_state_dict(cho.state_dict())
    # explicitly: strict=False loads the numbers, with a warning that says so
    with pytest.warns(UserWarning, match="different function"):
        cho.load_state_dict(nn.GRU(3, 4).state_dict(), strict=False)
    # a cho state dict loads into a cho GRU
    other = rnn.GRU(3, 4, form="cho")
    other.load_state_dict(cho.state_dict())
    _assert_unchanged(other, _snapshot(cho))


def test_same_shaped_lstm_variants_refuse_each_other():
    nig = rnn.LSTM(3, 4, variant="NIG")
    before = _snapshot(nig)
    with pytest.raises(RuntimeError, match=r"variant='vanilla'.*variant='NIG'"):
        nig.load_state_dict(nn.LSTM(3, 4).state_dict())
    with pytest.raises(RuntimeError, match=r"variant='NOG' there, 'NIG' here"):
        nig.load_state_dict(rnn.LSTM(3, 4, variant="NOG").state_dict())
    _assert_unchanged(nig, before)
    # torch.nn.LSTM itself cannot tell (same keys); to_torch refuses instead
    with pytest.raises(ValueError, match=r"no torch\.nn equivalent"):
        nig.to_torch()


@pytest.mark.parametrize("cls", [rnn.LSTM, rnn.GRU, rnn.RNN])
def test_input_errors_name_the_problem(cls):
    layer = cls(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"input has 5 features .* input_size=3"):
        layer(torch.randn(6, 2, 5))
    with pytest.raises(ValueError, match=r"expects input of shape \(T, D\) unbatched"):
        layer(torch.randn(6, 2, 3, 1))
    with pytest.raises(TypeError, match=r"float64 but the layer.s parameters are torch\.float32"):
        layer(torch.randn(6, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"1 NaN"):
        x = torch.randn(6, 2, 3)
        x[2, 1, 0] = float("nan")
        layer(x)
    h = torch.zeros(2, 5, 4)  # batch 5, input batch 2
    hx = (h, h) if cls is rnn.LSTM else h
    with pytest.raises(ValueError, match=r"h_0 has shape \(2, 5, 4\), expected \(2, 2, 4\)"):
        layer(torch.randn(6, 2, 3), hx)
    h = torch.zeros(2, 2, 4)
    hx = (h, h) if cls is rnn.LSTM else h
    with pytest.raises(ValueError, match="unbatched 2-D input, h_0 must be 2-D"):
        layer(torch.randn(6, 3), hx)
    if cls is rnn.LSTM:
        with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
            layer(torch.randn(6, 2, 3), h)


def test_time_major_input_of_the_right_size_cannot_be_detected():
    # documented in docs/nn.md: (B, T, D) fed to a time-major layer runs as (T, B, D)
    layer = rnn.LSTM(3, 4)
    out, _ = layer(torch.randn(2, 7, 3))  # meant as batch 2, time 7
    assert out.shape == (2, 7, 4)  # read as time 2, batch 7: no error is possible


def test_option_mismatch_is_refused_inside_a_parent_module_too():
    class Net(nn.Module):
        def __init__(self, form):
            super().__init__()
            self.head = nn.Linear(2, 2)
            self.rnn = rnn.GRU(3, 4, form=form)

    target = Net("cho")
    before = _snapshot(target.rnn)
    with pytest.raises(RuntimeError, match=r"rnn\.: .*form='torch' there, 'cho' here"):
        target.load_state_dict(Net("torch").state_dict())
    _assert_unchanged(target.rnn, before)


def test_copies_pickles_casts_and_assign_keep_the_cells_path_right():
    import copy

    layer = rnn.LSTM(3, 4, peepholes=True, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    out = layer(x)[0]
    twin = copy.deepcopy(layer)
    torch.testing.assert_close(twin(x)[0], out, atol=0, rtol=0)
    with torch.no_grad():
        twin.weight_ih_l0.add_(1.0)
    torch.testing.assert_close(layer(x)[0], out, atol=0, rtol=0)  # no shared parameters
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.load(buffer, weights_only=False)(x)[0], out, atol=0, rtol=0)
    other = rnn.LSTM(3, 4, peepholes=True, num_layers=2, bidirectional=True)
    other.load_state_dict(layer.state_dict(), assign=True)  # new parameter objects
    torch.testing.assert_close(other(x)[0], out, atol=0, rtol=0)
    wide = layer.double()
    # float64 of the same weights: the float32 result to float32 rounding
    torch.testing.assert_close(wide(x.double())[0].float(), out, atol=1e-6, rtol=1e-5)


def test_check_finite_option():
    x = torch.randn(4, 2, 3)
    x[0, 0, 0] = float("nan")
    out, _ = rnn.GRU(3, 4, check_finite=False)(x)  # not scanned: the NaN flows through
    assert torch.isnan(out).any()
    with pytest.raises(ValueError, match=r"input contains non-finite values \(1 NaN, 0 inf\)"):
        rnn.GRU(3, 4, check_finite=True)(x)
    with pytest.raises(ValueError, match="check_finite must be"):
        rnn.GRU(3, 4, check_finite="yes")


def test_rnn_nonlinearity_is_checked_between_rnnlab_state_dicts():
    tanh = rnn.RNN(3, 4)
    with pytest.raises(RuntimeError, match="nonlinearity='relu' there, 'tanh' here"):
        tanh.load_state_dict(rnn.RNN(3, 4, nonlinearity="relu").state_dict())
    # a torch.nn.RNN state dict does not record it (as in torch, either loads)
    tanh.load_state_dict(nn.RNN(3, 4, nonlinearity="relu").state_dict())
    assert repr(rnn.RNN(3, 4, nonlinearity="relu")) == repr(nn.RNN(3, 4, nonlinearity="relu"))
