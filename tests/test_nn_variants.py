"""rnnlab.nn's options that torch lacks: LSTM peepholes and Greff et al.'s variants, the Cho-form
GRU, Pascanu et al.'s deep transition.

References (independent of the layer's own stacking, reversal and packing code):

* the rnnlab cell itself (:mod:`rnnlab.cells`), loaded with the layer's parameters and run one
  step at a time, one sequence at a time over its own length, the backward direction on the
  reversed sequence, layer on layer: the stack written out by hand;
* ``torch.autograd.gradcheck`` (central finite differences) in float64 on tiny sizes for the
  gradients.

Tolerance 1e-12 in float64: the reference does the same operations per step but in another
grouping (one sequence at a time, the input product per step), so values of size <= ~10 agree to
a few ulps (~1e-15).
"""

from __future__ import annotations

import pytest
import torch

import rnnlab.nn as rnn
from rnnlab.cells import VARIANTS, DeepTransitionCell, GRUCell, LSTMCell

TOL = 1e-12


def _cell_for(layer, index: int, input_size: int):
    """A standalone rnnlab cell holding the parameters of layer-direction ``index``."""
    suffix = f"_l{index // layer.num_directions}" + ("_reverse" if index % 2 and
                                                     layer.bidirectional else "")
    common = {"bias": layer.bias, "dtype": torch.float64}
    if isinstance(layer, rnn.LSTM):
        cell = LSTMCell(input_size, layer.hidden_size, peepholes=layer.peepholes,
                        variant=layer.variant, **common)
    elif isinstance(layer, rnn.GRU):
        cell = GRUCell(input_size, layer.hidden_size, form=layer.form, **common)
    else:
        cell = DeepTransitionCell(input_size, layer.hidden_size, layers=layer.transition_depth,
                                  transition_size=layer.transition_size,
                                  shortcut=layer.shortcut, **common)
    state = layer.state_dict()
    cell.load_state_dict({name: state[name.replace(".", "_") + suffix]
                          for name in cell.state_dict()})
    return cell


def _reference(layer, x: torch.Tensor, lengths: list[int], state0: list[torch.Tensor]):
    """The stack by hand: ``x`` (batch, time, features), each sequence alone over its length.
    ``state0``: the parts of hx in torch's layout. Returns (padded output, [final parts])."""
    batch, steps, _ = x.shape
    dirs = layer.num_directions
    outputs = torch.zeros(batch, steps, dirs * layer.hidden_size, dtype=x.dtype)
    finals = [torch.zeros_like(s) for s in state0]
    for b in range(batch):
        seq = x[b, :lengths[b]]
        for layer_index in range(layer.num_layers):
            width = seq.shape[-1]
            outs = []
            for d in range(dirs):
                index = layer_index * dirs + d
                cell = _cell_for(layer, index, width)
                state = tuple(s[index, b:b + 1] for s in state0)
                state = state[0] if len(state) == 1 else state
                order = range(seq.shape[0]) if d == 0 else reversed(range(seq.shape[0]))
                hs = {}
                for t in order:
                    state = cell(seq[t:t + 1], state)
                    hs[t] = cell.hidden(state)[0]
                outs.append(torch.stack([hs[t] for t in range(seq.shape[0])]))
                parts = state if isinstance(state, tuple) else (state,)
                for k, part in enumerate(parts):
                    finals[k][index, b] = part[0]
            seq = torch.cat(outs, -1)
        outputs[b, :lengths[b]] = seq
    return outputs, finals


LSTM_OPTIONS = [{"peepholes": True}] + [
    {"peepholes": True, "variant": name} for name in VARIANTS if name not in ("vanilla", "NP")
] + [{"variant": "CIFG"}, {"variant": "NIG", "forget_bias": 1.0}]
OPTIONS = ([(rnn.LSTM, o) for o in LSTM_OPTIONS] + [(rnn.GRU, {"form": "cho"})]
           + [(rnn.RNN, {"transition_depth": 2}),
              (rnn.RNN, {"transition_depth": 3, "transition_size": 3, "shortcut": True})])
IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for cls, o in OPTIONS]


def _layer(cls, options, **kw):
    return cls(3, 4, **kw, **options, dtype=torch.float64,
               generator=torch.Generator().manual_seed(2))


def _random_state(layer, batch, g):
    rows = layer.num_layers * layer.num_directions
    parts = [torch.randn(rows, batch, layer.hidden_size, generator=g, dtype=torch.float64)]
    if isinstance(layer, rnn.LSTM):
        parts.append(torch.randn(rows, batch, layer.hidden_size, generator=g,
                                 dtype=torch.float64))
        if layer.spec.gate_recurrence:
            parts.append(torch.rand(rows, batch, 3 * layer.hidden_size, generator=g,
                                    dtype=torch.float64))
    return parts


def _as_hx(layer, parts):
    return tuple(parts) if isinstance(layer, rnn.LSTM) else parts[0]


@pytest.mark.parametrize(("cls", "options"), OPTIONS, ids=IDS)
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, True)])
def test_options_equal_the_cells_run_step_by_step(cls, options, layers, bidirectional):
    layer = _layer(cls, options, num_layers=layers, bidirectional=bidirectional,
                   batch_first=True)
    assert not layer._torch_math()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 3, generator=g, dtype=torch.float64)
    state0 = _random_state(layer, 3, g)
    out, hn = layer(x, _as_hx(layer, state0))
    ref_out, ref_final = _reference(layer, x, [5, 5, 5], state0)
    torch.testing.assert_close(out, ref_out, atol=TOL, rtol=TOL)
    for mine, ref in zip(hn if isinstance(hn, tuple) else (hn,), ref_final, strict=True):
        torch.testing.assert_close(mine, ref, atol=TOL, rtol=TOL)
    # packed, unsorted variable lengths, time-major
    lengths = [2, 5, 4]
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                     enforce_sorted=False)
    out, hn = layer(packed, _as_hx(layer, state0))
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
    ref_out, ref_final = _reference(layer, x, lengths, state0)
    torch.testing.assert_close(padded, ref_out, atol=TOL, rtol=TOL)
    for mine, ref in zip(hn if isinstance(hn, tuple) else (hn,), ref_final, strict=True):
        torch.testing.assert_close(mine, ref, atol=TOL, rtol=TOL)
    # unbatched
    out, hn = layer(x[1], _as_hx(layer, [s[:, 1] for s in state0]))
    ref_out, _ = _reference(layer, x[1:2], [5], [s[:, 1:2] for s in state0])
    torch.testing.assert_close(out, ref_out[0], atol=TOL, rtol=TOL)


@pytest.mark.parametrize(("cls", "options"),
                         [OPTIONS[0], OPTIONS[7], OPTIONS[8], OPTIONS[5], *OPTIONS[-3:]],
                         ids=[IDS[0], IDS[7], IDS[8], IDS[5], *IDS[-3:]])
def test_gradients_pass_gradcheck(cls, options):
    layer = cls(2, 2, num_layers=2, bidirectional=True, **options, dtype=torch.float64,
                generator=torch.Generator().manual_seed(5))
    names = [n for n, _ in layer.named_parameters()]
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = [3, 2]

    def f(x, *params):
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths)
        out, hn = torch.func.functional_call(layer, dict(zip(names, params, strict=True)),
                                             (packed,))
        parts = hn if isinstance(hn, tuple) else (hn,)
        return (out.data, *parts)

    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    # fast mode: the Jacobian against random vectors, full in both directions (Wang et al.'s
    # 'fast gradcheck', torch's fast_mode)
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-5,
                                    fast_mode=True)


def test_fgr_state_has_the_previous_gates():
    layer = _layer(rnn.LSTM, {"variant": "FGR", "peepholes": True}, num_layers=2)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    out, (_h, _c, gates) = layer(x)
    assert gates.shape == (2, 2, 12)
    # (h_0, c_0) alone: the gates start from 0, as the cell's initial state
    zeros = torch.zeros(2, 2, 4, dtype=torch.float64)
    out2, _ = layer(x, (zeros, zeros))
    torch.testing.assert_close(out, out2, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"g_0 has shape"):
        layer(x, (zeros, zeros, torch.zeros(2, 2, 4, dtype=torch.float64)))


def test_variant_dropout_between_layers_only():
    # the cells' path draws the same mask as torch's kernel would, between layers only:
    # rebuild it by hand from the same seed
    layer = _layer(rnn.LSTM, {"peepholes": True}, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.manual_seed(3)
    out, (_h, _c) = layer(x)
    first = _cell_for(layer, 0, 3)  # (building a cell draws from the global RNG)
    second = _cell_for(layer, 1, 4)
    torch.manual_seed(3)
    state = first.initial_state(2)
    hs = []
    for t in range(5):
        state = first(x[t], state)
        hs.append(state[0])
    mid = torch.nn.functional.dropout(torch.stack(hs), 0.5, True)
    state = second.initial_state(2)
    top = []
    for t in range(5):
        state = second(mid[t], state)
        top.append(state[0])
    torch.testing.assert_close(out, torch.stack(top), atol=TOL, rtol=TOL)
    assert not torch.equal(mid, torch.stack(hs))  # the mask was applied


def test_peephole_lstm_trains_like_a_module():
    layer = rnn.LSTM(3, 4, peepholes=True, batch_first=True)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, y = torch.randn(2, 6, 3), torch.randn(2, 6, 4)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = ((layer(x)[0] - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert layer.peephole_i_l0.grad is not None and layer.peephole_i_l0.grad.abs().sum() > 0


def test_option_errors():
    with pytest.raises(ValueError, match="unknown LSTM variant"):
        rnn.LSTM(3, 4, variant="XYZ")
    with pytest.raises(ValueError, match="LSTMCell has no projection"):
        rnn.LSTM(3, 4, proj_size=2, peepholes=True)
    with pytest.raises(ValueError, match="form must be one of"):
        rnn.GRU(3, 4, form="keras")
    with pytest.raises(ValueError, match="needs nonlinearity='tanh'"):
        rnn.RNN(3, 4, nonlinearity="relu", transition_depth=2)
    with pytest.raises(ValueError, match="need transition_depth >= 2"):
        rnn.RNN(3, 4, shortcut=True)
    with pytest.raises(ValueError, match="proj_size"):
        rnn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="dropout must be <= 1"):
        rnn.GRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match=r"has no torch\.nn equivalent"):
        rnn.GRU(3, 4, form="cho").to_torch()
    # variant "NP" is torch's LSTM whatever peepholes says, and runs torch's kernel
    assert rnn.LSTM(3, 4, variant="NP", peepholes=True)._torch_math()
