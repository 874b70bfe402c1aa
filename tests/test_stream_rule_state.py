"""``state_dict``/``load_state_dict`` of the online learning rules: a rule saved after k steps
and loaded into a fresh rule continues exactly like the uninterrupted one (same operations on
the same values: bit equality is the right test), through a ``torch.save`` file loaded with
``weights_only=True``; a state of another rule or size is refused and nothing is half-loaded."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from rnnlab import ElmanRNN, GRUCell, RecurrentNetwork
from rnnlab.cells.elstm import ELSTMCell
from rnnlab.learning import BPTT, ELSTMRTRL, RTRL, UORO, ForwardModeRTRL, SnAp1

D, N, OUT, B, T, K = 2, 4, 1, 2, 9, 4


class _ELSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.input_size = D
        self.cell = ELSTMCell(D, N)
        self.readout = nn.Linear(N, OUT)

    def initial_state(self, batch: int):
        return self.cell.initial_state(batch)

    def output(self, state):
        return self.readout(state[1])


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "elman":
        return ElmanRNN(D, N, OUT, readout="identity", dtype=torch.float64)
    if kind == "elstm":
        return _ELSTMNet().double()
    return RecurrentNetwork(GRUCell(D, N, generator=torch.Generator().manual_seed(0),
                                    dtype=torch.float64), OUT,
                            dtype=torch.float64)


RULES = {
    "RTRL": ("elman", lambda m: RTRL(m)),
    "BPTT": ("gru", lambda m: BPTT(m, truncation=2)),
    "ForwardModeRTRL": ("gru", lambda m: ForwardModeRTRL(m)),
    "UORO": ("gru", lambda m: UORO(m, seed=3)),
    "SnAp1": ("gru", lambda m: SnAp1(m)),
    "ELSTMRTRL": ("elstm", lambda m: ELSTMRTRL(m)),
}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(B, T, D, generator=gen, dtype=torch.float64),
            torch.randn(B, T, OUT, generator=gen, dtype=torch.float64))


def _run(rule, model, opt, x, y, steps) -> list[torch.Tensor]:
    outs = []
    for t in steps:
        outs.append(rule.step(x[:, t], y[:, t]))
        if rule.grad_ready:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return outs


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", list(RULES))
def test_saved_rule_continues_bit_identically(name: str) -> None:
    kind, make = RULES[name]
    x, y = _data()
    model = _model(kind)
    rule = make(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    assert rule.state_dict()["state"] is None  # not started
    whole = _run(rule, model, opt, x, y, range(T))

    model2 = _model(kind)
    rule2 = make(model2)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05)
    first = _run(rule2, model2, opt2, x, y, range(K))
    saved = _roundtrip({"rule": rule2.state_dict(), "model": model2.state_dict()})
    assert saved["rule"]["kind"] == name

    model3 = _model(kind)
    model3.load_state_dict(saved["model"])
    rule3 = make(model3)
    rule3.load_state_dict(saved["rule"])
    opt3 = torch.optim.SGD(model3.parameters(), lr=0.05)
    rest = _run(rule3, model3, opt3, x, y, range(K, T))
    for a, b in zip(whole, first + rest, strict=True):
        assert torch.equal(a, b)
    for p, q in zip(model.parameters(), model3.parameters(), strict=True):
        assert torch.equal(p, q)


def test_state_of_another_rule_or_size_is_refused_and_nothing_half_loaded() -> None:
    x, y = _data()
    model = _model("elman")
    rule = RTRL(model)
    _run(rule, model, torch.optim.SGD(model.parameters(), lr=0.0), x, y, range(3))
    before = rule.state_dict()
    with pytest.raises(ValueError, match="not of a RTRL"):
        rule.load_state_dict(UORO(_model("gru")).state_dict())
    bad = dict(before)
    bad["influence"] = {**before["influence"], "U": before["influence"]["U"][:, :, :, :1]}
    with pytest.raises(ValueError, match="influence"):
        rule.load_state_dict(bad)
    after = rule.state_dict()
    assert torch.equal(after["state"], before["state"])
    for k in before["influence"]:
        assert torch.equal(after["influence"][k], before["influence"][k])
    with pytest.raises(ValueError, match="lacks"):
        rule.load_state_dict({"kind": "RTRL", "state": None})

    gru_rule = ForwardModeRTRL(_model("gru"))
    gru_rule.reset(B)
    state = gru_rule.state_dict()
    state["state"] = state["state"].float()  # another dtype: refused, not cast
    with pytest.raises(ValueError, match="dtype"):
        gru_rule.load_state_dict(state)


def test_bptt_refuses_to_save_inside_a_chunk() -> None:
    x, y = _data()
    model = _model("gru")
    rule = BPTT(model, truncation=3)
    rule.step(x[:, 0], y[:, 0])
    with pytest.raises(RuntimeError, match="truncation chunk"):
        rule.state_dict()


def test_uoro_generator_is_public_and_old_name_works() -> None:
    rule = UORO(_model("gru"), seed=5)
    rule.reset(B)
    assert rule._generator is rule.generator
    replacement = torch.Generator().manual_seed(9)
    rule._generator = replacement
    assert rule.generator is replacement
