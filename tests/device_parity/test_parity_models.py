"""Device parity of the models (ElmanRNN, RecurrentNetwork) and of modules built on the device.

See ``tests/device_parity/__init__.py`` for the method and the tolerances."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from rnnlab.cells import (
    DeepTransitionCell,
    ElmanCell,
    ELSTMCell,
    GRUCell,
    LSTMCell,
    run_cell,
)
from rnnlab.models import READOUTS, ElmanRNN, RecurrentNetwork
from tests.device_parity._parity import (
    CELLS,
    DEV,
    DTYPES,
    F64,
    OUT,
    PARITY_MARKS,
    B,
    D,
    H,
    T,
    _detach,
    assert_tensor,
    assert_tree,
    gen,
    grads_of,
    moved,
    on_device,
    probe,
    randn,
    to_dev,
)

pytestmark = PARITY_MARKS


@pytest.mark.parametrize("readout", list(READOUTS))
@DTYPES
def test_elman_rnn(readout, dtype):
    torch.manual_seed(40)
    model = ElmanRNN(D, H, OUT, readout=readout, dtype=F64)
    x, h0 = randn(B, T, D, seed=41), randn(B, H, seed=42, scale=0.5)

    def run(m: ElmanRNN, xs: torch.Tensor, h: torch.Tensor) -> dict[str, Any]:
        h = h.clone().requires_grad_(True)
        out, h_t = m(xs, h)
        probe(out, h_t).backward()
        zero = m.initial_state(B)
        return {"out": out.detach(), "h_T": h_t.detach(), "h0.grad": h.grad, "zero": zero,
                "grads": grads_of(m), "states": m.hidden_states(xs).detach(),
                "cell": m.cell(xs[:, 0], zero).detach(), "output": m.output(zero).detach()}

    ref = run(copy.deepcopy(model), x, h0)
    assert_tree(run(moved(model, dtype), to_dev(x, dtype), to_dev(h0, dtype)), ref, dtype)


def _network_cases() -> list[tuple[str, str, int]]:
    cases = [(cell, readout, 1) for readout in READOUTS
             for cell in ("lstm-vanilla", "gru-torch", "stacked-np")]
    cases += [("dts-3", "tanh", 3), ("lstm-NP", "sigmoid", 2)]
    return cases


@pytest.mark.parametrize(("cell_name", "readout", "layers"), _network_cases())
@DTYPES
def test_recurrent_network(cell_name, readout, layers, dtype):
    net = RecurrentNetwork(CELLS[cell_name](), OUT, readout, readout_layers=layers,
                           readout_hidden_size=4, readout_activation="relu", generator=gen(43))
    x = randn(B, T, D, seed=44)
    lengths = torch.tensor([T, 5, 1])

    def run(n: RecurrentNetwork, xs: torch.Tensor, lens: Any) -> dict[str, Any]:
        out, final, states = n(xs, lengths=lens, return_states=True)
        packed, _ = n(pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False))
        probe(out, final, packed.data).backward()
        return {"out": out.detach(), "final": _detach(final), "states": _detach(states),
                "packed": packed.data.detach(), "grads": grads_of(n),
                "output": n.output(_detach(final)).detach(), "zero": n.initial_state(B)}

    with torch.no_grad():  # inference first: it runs even where backward cannot
        ref = _detach(net(x, lengths=lengths, return_states=True))
        got = moved(net, dtype)(to_dev(x, dtype), lengths=to_dev(lengths, dtype),
                                return_states=True)
    assert_tree(got, ref, dtype, "no_grad")
    ref = run(copy.deepcopy(net), x, lengths)
    assert_tree(run(moved(net, dtype), to_dev(x, dtype), to_dev(lengths, dtype)), ref, dtype)


CONSTRUCTORS: dict[str, Callable[..., torch.nn.Module]] = {
    "ElmanCell": lambda **f: ElmanCell(D, H, **f),
    "LSTMCell": lambda **f: LSTMCell(D, H, variant="FGR", **f),
    "GRUCell": lambda **f: GRUCell(D, H, **f),
    "DeepTransitionCell": lambda **f: DeepTransitionCell(D, H, shortcut=True, **f),
    "ELSTMCell": lambda **f: ELSTMCell(D, H, **f),
    "ElmanRNN": lambda **f: ElmanRNN(D, H, OUT, **f),
}


@pytest.mark.parametrize("name", list(CONSTRUCTORS))
@DTYPES
def test_modules_built_on_the_device(name, dtype):
    # device=/dtype= at construction: the parameters are born there, and with the reference's
    # weights loaded the forward there matches the CPU float64 one.
    torch.manual_seed(45)
    ref = CONSTRUCTORS[name](dtype=F64)
    module = CONSTRUCTORS[name](device=DEV, dtype=dtype)
    for pname, p in module.named_parameters():
        assert on_device(p) and p.dtype == dtype, pname
    module.load_state_dict(ref.state_dict())
    x = randn(B, T, D, seed=46)
    if name == "ElmanRNN":
        got, want = module(to_dev(x, dtype))[0], ref(x)[0]
    elif name == "ELSTMCell":
        got = module(to_dev(x[:, 0], dtype), module.initial_state(B))[1]
        want = ref(x[:, 0], ref.initial_state(B))[1]
    else:
        got = run_cell(module, to_dev(x, dtype))[0]
        want = run_cell(ref, x)[0]
    assert_tensor(got.detach(), want.detach(), dtype, name=name)


@pytest.mark.parametrize("name", [*CONSTRUCTORS, "RecurrentNetwork"])
@DTYPES
def test_seeded_initialization_on_the_device(name, dtype):
    # ``generator`` seeds the initialization (constructor argument of the cells and of
    # RecurrentNetwork, reset_parameters(generator) of every module); torch.Generator() is a
    # CPU generator, the usual one (rnnlab's reservoirs even require it). A module that lives
    # on the device must accept it, whether it is built there or re-initialised there.
    if name == "RecurrentNetwork":
        cell = ElmanCell(D, H, device=DEV, dtype=dtype)
        module = RecurrentNetwork(cell, OUT, readout_layers=2, generator=gen(47))
    elif name in ("ElmanRNN", "ELSTMCell"):  # no generator argument: reset_parameters has it
        module = CONSTRUCTORS[name](device=DEV, dtype=dtype)
        module.reset_parameters(gen(47))
    else:
        module = CONSTRUCTORS[name](generator=gen(47), device=DEV, dtype=dtype)
        module.reset_parameters(gen(48))
    for pname, p in module.named_parameters():
        assert on_device(p) and p.dtype == dtype and bool(torch.isfinite(p).all()), pname
