"""state_dict round trips: saved from the device, loaded into a fresh CPU module.

See ``tests/device_parity/__init__.py`` for the method and the tolerances."""

from __future__ import annotations

import io

import pytest
import torch

from rnnlab.models import RecurrentNetwork
from rnnlab.reservoir import (
    EchoStateNetwork,
    RidgeReadout,
)
from tests.device_parity._parity import (
    CELLS,
    CPU,
    DTYPES,
    F64,
    OUT,
    PARITY_MARKS,
    B,
    D,
    H,
    N,
    T,
    _detach,
    assert_tensor,
    assert_tree,
    gen,
    moved,
    randn,
    to_dev,
)

pytestmark = PARITY_MARKS


def _round_trip(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    # no map_location: the tensors come back on the device they were saved from, and
    # load_state_dict copies them into the CPU module's own tensors
    return torch.load(buf, weights_only=True)


@DTYPES
def test_state_dict_round_trip_echo_state_network(dtype):
    def build(seed: int) -> EchoStateNetwork:
        return EchoStateNetwork(input_size=D, units=N, output_size=OUT, feedback_scaling=0.2,
                                density=0.5, leak=0.7, bias_scaling=0.1, seed=seed, dtype=F64)

    original = build(150)
    on_dev = moved(original, dtype)
    fresh = build(151)  # other weights, so that the load is what makes them equal
    assert not torch.equal(fresh.W, original.W)
    fresh.load_state_dict(_round_trip(on_dev))
    for name, t in fresh.named_buffers():
        assert t.device == CPU and t.dtype == F64, name
    u, y = randn(B, T, D, seed=152), randn(B, T, OUT, seed=153)
    got_cpu = fresh(u, teacher=y)[0]
    got_dev = on_dev(*to_dev((u,), dtype), teacher=to_dev(y, dtype))[0]
    # the fresh module holds the device module's (possibly float32-rounded) weights in float64
    assert_tensor(got_cpu, original(u, teacher=y)[0], dtype, device=CPU, out_dtype=F64)
    assert_tensor(got_dev, got_cpu, dtype)


@pytest.mark.parametrize("cell_name", ["lstm-vanilla", "gru-torch"])
@DTYPES
def test_state_dict_round_trip_gated_network(cell_name, dtype):
    original = RecurrentNetwork(CELLS[cell_name](), OUT, readout_layers=2, generator=gen(154))
    on_dev = moved(original, dtype)
    fresh = RecurrentNetwork(CELLS[cell_name](), OUT, readout_layers=2, generator=gen(155))
    with torch.no_grad():
        for p in fresh.parameters():
            p.mul_(-1.0)  # not the original's weights
    fresh.load_state_dict(_round_trip(on_dev))
    for name, p in fresh.named_parameters():
        assert p.device == CPU and p.dtype == F64, name
    x = randn(B, T, D, seed=156)
    got_cpu = fresh(x)
    assert_tree(_detach(got_cpu), _detach(original(x)), dtype, device=CPU, out_dtype=F64)
    assert_tree(_detach(on_dev(to_dev(x, dtype))), _detach(got_cpu), dtype)
    # a fitted ridge readout saved on the device predicts the same on the CPU
    states = randn(B, T, H, seed=157)
    readout = RidgeReadout(H, OUT, dtype=F64).fit(states, randn(B, T, OUT, seed=158))
    fresh_readout = RidgeReadout(H, OUT, dtype=F64)
    fresh_readout.load_state_dict(_round_trip(moved(readout, dtype)))
    assert_tensor(fresh_readout(states), readout(states), dtype, device=CPU, out_dtype=F64)
