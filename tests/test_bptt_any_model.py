"""BPTT and EpochTrainer on every model of the model protocol (issue 10, item 4).

They used to duck-type on ``ElmanRNN``'s ``.W`` and ``check_input`` and raised AttributeError for
``RecurrentNetwork(LSTMCell(...), ...)``. The references here are independent: torch.nn.LSTM /
torch.nn.GRU with torch.nn.Linear holding the same weights, differentiated by autograd.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlab.cells import ElmanCell, GRUCell, LSTMCell
from rnnlab.learning import BPTT, EpochTrainer
from rnnlab.models import ElmanRNN, RecurrentNetwork

F64 = torch.float64


def _lstm_pair(d: int, h: int, o: int, seed: int) -> tuple[RecurrentNetwork, nn.Module]:
    torch.manual_seed(seed)
    ref_rnn = nn.LSTM(d, h, batch_first=True, dtype=F64)
    ref_out = nn.Linear(h, o, dtype=F64)
    cell = LSTMCell(d, h, variant="NP", dtype=F64)  # no peepholes: torch's LSTM
    cell.load_state_dict({k[:-3]: v for k, v in ref_rnn.state_dict().items()})
    model = RecurrentNetwork(cell, o)
    model.readout.load_state_dict(ref_out.state_dict())
    return model, nn.ModuleDict({"rnn": ref_rnn, "out": ref_out})


def _gru_pair(d: int, h: int, o: int, seed: int) -> tuple[RecurrentNetwork, nn.Module]:
    torch.manual_seed(seed)
    ref_rnn = nn.GRU(d, h, batch_first=True, dtype=F64)
    ref_out = nn.Linear(h, o, dtype=F64)
    cell = GRUCell(d, h, form="torch", dtype=F64)
    cell.load_state_dict({k[:-3]: v for k, v in ref_rnn.state_dict().items()})
    model = RecurrentNetwork(cell, o)
    model.readout.load_state_dict(ref_out.state_dict())
    return model, nn.ModuleDict({"rnn": ref_rnn, "out": ref_out})


def _reference_grads(ref: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int
                     ) -> dict[str, torch.Tensor]:
    """d/dtheta of sum_t ||y - o||^2, the state carried between chunks of k steps but detached
    (truncated BPTT(k, k)), computed by torch.nn and autograd."""
    ref.zero_grad(set_to_none=True)
    state = None
    for start in range(0, x.shape[1], k):
        hs, state = ref["rnn"](x[:, start:start + k], state)
        loss = (y[:, start:start + k] - ref["out"](hs)).pow(2).sum()
        loss.backward()
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    return {name: p.grad for name, p in ref.named_parameters()}


def _grads_by_torch_name(model: RecurrentNetwork) -> dict[str, torch.Tensor]:
    out = {f"rnn.{n}_l0": p.grad for n, p in model.cell.named_parameters()}
    out.update({f"out.{n}": p.grad for n, p in model.readout.named_parameters()})
    return out


def _data(batch: int, steps: int, d: int, o: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, steps, d, generator=g, dtype=F64),
            torch.randn(batch, steps, o, generator=g, dtype=F64))


# float64 sums of a few hundred terms of size ~1 along different code paths (cuDNN-style fused
# kernels vs the torch.nn ones): round-off ~ 1e-13; 1e-10 is far from it yet catches any wrong term
TOL = {"rtol": 1e-10, "atol": 1e-10}


@pytest.mark.parametrize("pair", [_lstm_pair, _gru_pair])
@pytest.mark.parametrize("truncation", [None, 4])
def test_bptt_on_gated_networks_equals_torch_nn(pair, truncation):
    model, ref = pair(2, 5, 3, seed=1)
    x, y = _data(3, 11, 2, 3)
    rule = BPTT(model, truncation=truncation)
    result = rule.accumulate(x, y)
    want = _reference_grads(ref, x, y, 11 if truncation is None else truncation)
    got = _grads_by_torch_name(model)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TOL, msg=name)
    assert isinstance(result.final_state, tuple) == (pair is _lstm_pair)


@pytest.mark.parametrize("truncation", [None, 3])
def test_bptt_step_by_step_equals_whole_sequence_on_lstm(truncation):
    model, _ = _lstm_pair(2, 4, 1, seed=2)
    x, y = _data(2, 9, 2, 1, seed=3)
    whole = BPTT(model, truncation=truncation)
    whole.accumulate(x, y)
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    online = BPTT(model, truncation=truncation)
    online.reset(2)
    for t in range(9):
        online.step(x[:, t], y[:, t])
    online.flush()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], **TOL, msg=n)
    h, c = online.state
    assert h.shape == c.shape == (2, 4) and not h.requires_grad


def test_bptt_reset_with_a_tuple_state_and_its_checks():
    model, _ = _lstm_pair(1, 3, 1, seed=0)
    rule = BPTT(model)
    h0 = (torch.full((2, 3), 0.1, dtype=F64), torch.full((2, 3), -0.2, dtype=F64))
    rule.reset(h0=h0)
    torch.testing.assert_close(rule.state[1], h0[1], rtol=0, atol=0)  # a copy of h0
    with pytest.raises(ValueError, match="batch size 3"):
        rule.step(torch.zeros(3, 1, dtype=F64))
    with pytest.raises(TypeError, match="dtype"):
        rule.step(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="features"):
        BPTT(model).accumulate(torch.zeros(1, 4, 2, dtype=F64), torch.zeros(1, 4, 1, dtype=F64))
    with pytest.raises(TypeError, match="model protocol"):
        BPTT(nn.Linear(2, 2))


@pytest.mark.parametrize("make", [
    lambda: RecurrentNetwork(LSTMCell(1, 8, dtype=F64), 1),
    lambda: RecurrentNetwork(GRUCell(1, 8, dtype=F64), 1),
    lambda: RecurrentNetwork([ElmanCell(1, 6, dtype=F64), ElmanCell(6, 6, dtype=F64)], 1),
    lambda: ElmanRNN(1, 8, 1, readout="identity", dtype=F64),
])
def test_epoch_trainer_trains_any_model_as_a_hand_written_loop(make):
    torch.manual_seed(0)
    model = make()
    x, _ = _data(8, 12, 1, 1, seed=5)
    y = 0.5 * torch.roll(x, 1, dims=1)  # recall the previous input
    y[:, 0] = 0
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    sgd = torch.optim.SGD(model.parameters(), lr=0.003)
    trainer = EpochTrainer(BPTT(model, truncation=6), sgd)
    history = trainer.fit(x, y, epochs=3, batch_size=4, seed=7)
    assert len(history) == 3 and history[-1] < history[0]
    # the same epochs by hand: same batches (randperm of the same seed), chunked autograd
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(start[n])
    opt = torch.optim.SGD(model.parameters(), lr=0.003)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        order = torch.randperm(8, generator=gen)
        for s in range(0, 8, 4):
            idx = order[s:s + 4]
            opt.zero_grad(set_to_none=True)
            state = None
            for c in range(0, 12, 6):
                out, state = model(x[idx, c:c + 6], state)
                (y[idx, c:c + 6] - out).pow(2).sum().backward()
                state = (tuple(t.detach() for t in state) if isinstance(state, tuple)
                         else state.detach())
            opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), trained[n], **TOL, msg=n)
