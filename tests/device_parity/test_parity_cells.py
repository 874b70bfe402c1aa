"""Device parity of the cells through RecurrentLayer / run_cell, every implementation that applies.

See ``tests/device_parity/__init__.py`` for the method and the tolerances."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from rnnlab.cells import (
    IMPLS,
    ELSTMCell,
    run_cell,
)
from rnnlab.models import RecurrentLayer
from tests.device_parity._parity import (
    CELLS,
    DTYPES,
    F64,
    PARITY_MARKS,
    B,
    D,
    H,
    T,
    _detach,
    assert_tree,
    gen,
    grads_of,
    leaves,
    moved,
    probe,
    randn,
    to_dev,
)

pytestmark = PARITY_MARKS


def _layer_cases() -> list[tuple[str, str]]:
    cases = []
    for name, make in CELLS.items():
        cell = make()
        for impl in IMPLS:
            if impl in ("auto", "loop") or impl in cell.available_impls(False):
                cases.append((name, impl))
    return cases


def _run_layer(layer: RecurrentLayer, x: torch.Tensor, state0: Any, lengths: Any,
               return_states: bool, train: bool) -> dict[str, Any]:
    """The layer's outputs, and with ``train`` the gradients of a probe of all of them with
    respect to the parameters, the input and the initial state; without, under no_grad (the
    inference path, which the fused kernels run differently)."""
    if not train:
        with torch.no_grad():
            out = layer(x, state0=state0, lengths=lengths, return_states=return_states)
        return {"outputs": out[0], "final": out[1], "states": out[2] if return_states else None}
    x = x.clone().requires_grad_(True)
    if state0 is not None:
        state0 = tuple(s.clone().requires_grad_(True) for s in leaves(state0))
        state0 = _restructure(state0, layer.initial_state(1))
    out = layer(x, state0=state0, lengths=lengths, return_states=return_states)
    probe(*out).backward()
    result = {"outputs": out[0].detach(), "final": _detach(out[1]), "x.grad": x.grad,
              "grads": grads_of(layer)}
    if return_states:
        result["states"] = _detach(out[2])
    if state0 is not None:
        result["state0.grad"] = [s.grad for s in leaves(state0)]
    return result


def _restructure(flat: tuple[torch.Tensor, ...], like: Any) -> Any:
    it = iter(flat)

    def build(template: Any) -> Any:
        if isinstance(template, torch.Tensor):
            return next(it)
        return tuple(build(t) for t in template)

    return build(like)


def _random_state(cell: Any, batch: int, seed: int) -> Any:
    return _restructure(tuple(randn(*leaf.shape, seed=seed + i, scale=0.5)
                              for i, leaf in enumerate(leaves(cell.initial_state(batch)))),
                        cell.initial_state(batch))


@pytest.mark.parametrize(("cell_name", "impl"), _layer_cases())
@DTYPES
def test_recurrent_layer_every_cell_and_impl(cell_name, impl, dtype):
    cell = CELLS[cell_name]()
    layer = RecurrentLayer(cell, impl=impl)
    x = randn(B, T, D, seed=30)
    state0 = _random_state(cell, B, seed=31)
    lengths = torch.tensor([T, T - 2, 3])
    # Full sequences from the zero state, then padded ones from a given state with every step's
    # state when the implementation can return them.
    with_states = impl in ("auto", "loop") or impl in cell.available_impls(True)
    runs = [(None, None, False), (state0, lengths, with_states)]
    # no_grad changes the path of torch's fused kernels only (an inference mode of their own)
    modes = (False, True) if impl in ("auto", "fused") else (True,)
    for s0, lens, ret in runs:
        for train in modes:
            ref = _run_layer(copy.deepcopy(layer), x, s0, lens, ret, train)
            got = _run_layer(moved(layer, dtype), to_dev(x, dtype), to_dev(s0, dtype),
                             to_dev(lens, dtype), ret, train)
            assert_tree(got, ref, dtype,
                        f"{cell_name}/{impl}/lengths={lens is not None}/train={train}")


@pytest.mark.parametrize("cell_name", ["elman-tanh", "lstm-NP", "lstm-vanilla", "gru-torch",
                                       "stacked-mixed"])
@DTYPES
def test_run_cell_packed_sequence(cell_name, dtype):
    cell = CELLS[cell_name]()
    x = randn(B, T, D, seed=32)
    lengths = torch.tensor([4, T, 2])

    def run(c: Any, xs: torch.Tensor, train: bool) -> dict[str, Any]:
        xs = xs.clone().requires_grad_(train)
        packed = pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False)
        with torch.set_grad_enabled(train):
            out, final, _ = run_cell(c, packed)
        if not train:
            return {"data": out.data, "final": final}
        probe(out.data, final).backward()
        return {"data": out.data.detach(), "final": _detach(final), "x.grad": xs.grad,
                "grads": grads_of(c)}

    for train in (False, True):  # inference first: it runs even where backward cannot
        ref = run(copy.deepcopy(cell), x, train)
        assert_tree(run(moved(cell, dtype), to_dev(x, dtype), train), ref, dtype, cell_name)


@DTYPES
def test_cell_step_and_initial_state(dtype):
    # The bare step protocol: initial_state on the cell's device/dtype, one step, hidden().
    for name, make in CELLS.items():
        cell = make()
        x_t = randn(B, D, seed=33)

        def step(c: Any, xt: torch.Tensor) -> dict[str, Any]:
            s0 = c.initial_state(B)
            s1 = c(xt, s0)
            s2 = c(xt, s1)
            return {"s0": s0, "s2": _detach(s2), "h": c.hidden(s2).detach()}

        assert_tree(step(moved(cell, dtype), to_dev(x_t, dtype)), step(cell, x_t), dtype, name)


@DTYPES
def test_elstm_cell(dtype):
    cell = ELSTMCell(D, H, dtype=F64)
    cell.reset_parameters(gen(34))
    x = randn(B, T, D, seed=35)

    def run(c: ELSTMCell, xs: torch.Tensor) -> dict[str, Any]:
        state = c.initial_state(B)
        outs = []
        for t in range(T):
            state = c(xs[:, t], state)
            outs.append(c.hidden(state))
        probe(torch.stack(outs, 1), state).backward()
        return {"h": torch.stack(outs, 1).detach(), "state": _detach(state), "grads": grads_of(c)}

    assert_tree(run(moved(cell, dtype), to_dev(x, dtype)), run(copy.deepcopy(cell), x), dtype)
