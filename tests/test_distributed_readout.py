"""Ridge readouts over two processes (torch.distributed, gloo on loopback through a file store):
the statistics summed by ``all_reduce_statistics`` solve to the single-process readout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rnnlab.reservoir import EchoStateNetwork, RidgeClassifierReadout, RidgeReadout
from rnnlab.reservoir.distributed import all_reduce_statistics

WORLD = 2
UNITS, WASHOUT = 30, 10


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(6, 80, 2, generator=gen, dtype=torch.float64) * 2 - 1
    y = torch.stack([x[..., 0].roll(2, dims=1), x[..., 1] * x[..., 0]], dim=-1)
    return x, y


def _esn() -> EchoStateNetwork:
    return EchoStateNetwork(input_size=2, units=UNITS, spectral_radius=0.9, seed=5,
                            dtype=torch.float64)


def _worker(rank: int, store: str, out: str, outputs_on_rank1: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=WORLD)
    try:
        x, y = _data()
        xs, ys = x[rank::WORLD], y[rank::WORLD]  # this rank's shard of sequences
        n_out = outputs_on_rank1 if rank == 1 else 2
        readout = RidgeReadout(UNITS, n_out, alpha=1e-6, dtype=torch.float64)
        readout.partial_fit(_esn().states(xs)[:, WASHOUT:], ys[:, WASHOUT:, :n_out])
        try:
            all_reduce_statistics(readout).solve()
            result: object = {"weight": readout.weight, "bias": readout.bias}
        except ValueError as exc:
            result = str(exc)
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run(tmp_path: Path, outputs_on_rank1: int) -> list[object]:
    store = tmp_path / "store"
    mp.spawn(_worker, args=(str(store), str(tmp_path), outputs_on_rank1), nprocs=WORLD,
             join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_process_readout_equals_one_process(tmp_path: Path) -> None:
    results = _run(tmp_path, outputs_on_rank1=2)
    x, y = _data()
    single = RidgeReadout(UNITS, 2, alpha=1e-6, dtype=torch.float64)
    single.fit(_esn().states(x)[:, WASHOUT:], y[:, WASHOUT:])
    for res in results:
        assert isinstance(res, dict), res
        # only the order of the float64 sums differs (shards then one add, against one pass):
        # |error| ~ M eps |X|^T|X| amplified by cond(C_xx + alpha I) ~ 1e4 here; 1e-10 leaves room
        scale = single.weight.abs().max()
        assert torch.allclose(res["weight"], single.weight, rtol=0, atol=1e-10 * scale)
        assert torch.allclose(res["bias"], single.bias, rtol=0, atol=1e-10 * scale)
    # every rank holds the same readout (the same summed system, solved the same way)
    assert torch.equal(results[0]["weight"], results[1]["weight"])


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_ranks_with_different_readouts_raise_on_every_rank(tmp_path: Path) -> None:
    results = _run(tmp_path, outputs_on_rank1=1)
    for res in results:
        assert isinstance(res, str) and "differ across ranks" in res


def test_refuses_without_a_process_group_and_other_types() -> None:
    with pytest.raises(RuntimeError, match="init_process_group"):
        all_reduce_statistics(RidgeReadout(3, 1))
    with pytest.raises(TypeError, match="RidgeReadout"):
        all_reduce_statistics(torch.nn.Linear(3, 1))  # type: ignore[arg-type]
    # a classifier's ridge is reached through it
    with pytest.raises(RuntimeError, match="init_process_group"):
        all_reduce_statistics(RidgeClassifierReadout(3, 2))
