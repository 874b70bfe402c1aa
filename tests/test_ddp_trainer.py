"""Data-parallel training through ``Trainer(distributed=True)``: two processes (gloo on
loopback, a file:// store, torch.multiprocessing.spawn) on a tiny GRU network equal one process
on the same global batches; rank 0 alone writes the checkpoint and metrics, and both ranks
resume from it to the same bits as the uninterrupted two-process run."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rnnlab import GRUCell, RecurrentNetwork
from rnnlab.learning import BPTT, UORO
from rnnlab.train import Trainer

WORLD = 2
SEQS, STEPS, BATCH, LR, EPOCHS = 8, 6, 4, 0.1, 2
SHARDS: list[int] = []  # the batch sizes the loss saw in this process


def _loss(o: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    SHARDS.append(o.shape[0])
    return (y - o).pow(2).sum()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(SEQS, STEPS, 2, generator=gen, dtype=torch.float64)
    return x, torch.tanh(x.cumsum(1)[..., :1] * 0.5)


def _model(seed: int = 0) -> RecurrentNetwork:
    gen = torch.Generator().manual_seed(seed)
    return RecurrentNetwork(GRUCell(2, 5, generator=gen, dtype=torch.float64), 1,
                            generator=gen, dtype=torch.float64)


def _trainer(model: RecurrentNetwork, run_dir: Path | None, distributed: bool) -> Trainer:
    # truncation 4 of 6 steps: two chunks per minibatch (DDP's no_sync path is exercised)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=LR), BPTT(model, truncation=4),
                   loss=_loss, batch_size=BATCH, seed=0, run_dir=run_dir, progress=False,
                   metrics_every=1, distributed=distributed)


def _mean_trainer(model: RecurrentNetwork, distributed: bool) -> Trainer:
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=LR),
                   BPTT(model, reduction="mean"), batch_size=3, seed=1, progress=False,
                   distributed=distributed)


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=WORLD)
    try:
        data, tmp = _data(), Path(out)
        result: dict[str, object] = {}
        model = _model()
        _trainer(model, tmp / "a", True).fit(data, epochs=EPOCHS)
        result["a"] = _params(model)
        result["shards"] = list(SHARDS)
        # run b: one epoch, then fresh objects (other initial weights) resume from rank 0's
        # checkpoint and finish
        model = _model()
        _trainer(model, tmp / "b", True).fit(data, epochs=1)
        resumed = _model(seed=7)
        _trainer(resumed, tmp / "b", True).resume().fit(data, epochs=EPOCHS)
        result["b"] = _params(resumed)
        # run c: the loss averaged over the batch, global batches of 3 (shards of 2 and 1, and
        # a last batch of 2): the factor world * B_r / B makes DDP's average the global mean
        model = _model()
        _mean_trainer(model, True).fit(data, epochs=EPOCHS)
        result["c"] = _params(model)
        try:
            other = _model()
            Trainer(other, torch.optim.SGD(other.parameters(), lr=LR), UORO(other),
                    distributed=True)
        except ValueError as exc:
            result["online"] = str(exc)
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_process_ddp_equals_one_process_and_resumes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]

    single = _model()
    SHARDS.clear()
    rows = _trainer(single, tmp_path / "single", False).fit(_data(), epochs=EPOCHS)
    assert set(SHARDS) == {BATCH}
    mean_single = _model()
    _mean_trainer(mean_single, False).fit(_data(), epochs=EPOCHS)
    for res in ranks:
        # every loss call saw one rank's shard: half of each global minibatch
        assert set(res["shards"]) == {BATCH // WORLD}
        # The two runs differ only in the order of the float64 sums of per-sequence gradients
        # (each rank sums its 2 sequences, DDP adds the 2 shard sums; the loss x 2 then the
        # average / 2 are exact). Per update |dg| <= n u sum_b |g_b| with n ~ B T N = 120
        # terms, u = 1.1e-16, sum_b |g_b| <~ 10: ~1e-13, times lr = 0.1, over 4 updates with
        # little growth: ~1e-13. 1e-11 leaves a margin of 100; a wrong scaling (no factor 2)
        # halves the gradients and fails by ~1e-2.
        for p, q in zip(res["a"], single.parameters(), strict=True):
            assert torch.allclose(p, q.detach(), rtol=0, atol=1e-11)
        # the resumed two-process run repeats the uninterrupted one bit for bit
        for p, q in zip(res["b"], res["a"], strict=True):
            assert torch.equal(p, q)
        assert "supports BPTT" in res["online"]
        for p, q in zip(res["c"], mean_single.parameters(), strict=True):
            assert torch.allclose(p, q.detach(), rtol=0, atol=1e-11)  # the bound above
    # DDP keeps the ranks identical: each applies the same averaged gradient
    for p, q in zip(ranks[0]["a"], ranks[1]["a"], strict=True):
        assert torch.equal(p, q)
    # rank 0 alone wrote the run folder; its epoch losses are the global batch's
    files = sorted(f.name for f in (tmp_path / "a").iterdir())
    assert files == ["checkpoint.pt", "metrics.csv", "metrics.jsonl"]
    with open(tmp_path / "a" / "metrics.csv", newline="") as f:
        epochs = [r for r in csv.DictReader(f) if r["kind"] == "epoch"]
    assert len(epochs) == EPOCHS
    for got, want in zip(epochs, rows, strict=True):
        assert float(got["train_loss"]) == pytest.approx(want["train_loss"], rel=1e-12)
    assert (tmp_path / "b" / "checkpoint.pt").is_file()


def test_distributed_needs_a_process_group() -> None:
    model = _model()
    with pytest.raises(RuntimeError, match="init_process_group"):
        _trainer(model, None, True)
