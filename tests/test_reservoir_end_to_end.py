"""End-to-end reservoir checks: Japanese Vowels classification, and ridge statistics summed
across processes with torch.distributed (the shardable readout the design promises)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rnnlab.reservoir import EchoStateNetwork, RidgeClassifierReadout, RidgeReadout


def test_esn_classifies_japanese_vowels():
    pytest.importorskip("aeon", reason="Japanese Vowels ships with aeon (pip install rnnlab[data])")
    from rnnlab.tasks import classification_accuracy, japanese_vowels

    train = japanese_vowels("train", pad_to=29, dtype=torch.float64)
    test = japanese_vowels("test", pad_to=29, dtype=torch.float64)
    esn = EchoStateNetwork(input_size=12, units=200, spectral_radius=0.9, density=0.1, leak=0.3,
                           input_scaling=0.2, seed=0, dtype=torch.float64)
    with torch.no_grad():
        s_train, _ = esn(train.inputs)
        s_test, _ = esn(test.inputs)
    clf = RidgeClassifierReadout(200, 9, alpha=1e-2, pooling="mean", dtype=torch.float64)
    clf.fit(s_train, train.labels, lengths=train.lengths)
    accuracy = classification_accuracy(clf.predict(s_test, lengths=test.lengths), test.labels)
    # chance is 1/9; published ESN results on this set are ~0.98-0.99 (e.g. Gallicchio et al.)
    assert accuracy > 0.9, accuracy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard_worker(rank: int, world: int, port: int, x: torch.Tensor, y: torch.Tensor,
                  out: dict) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        readout = RidgeReadout(x.shape[1], y.shape[1], alpha=1e-3, dtype=torch.float64)
        readout.partial_fit(x[rank::world], y[rank::world])        # this process's shard
        for t in readout.statistics().values():
            dist.all_reduce(t)                                      # SUM over shards
        readout.solve()
        out[rank] = readout.predict(x).clone()
    finally:
        dist.destroy_process_group()


def test_ridge_normal_equations_all_reduce_across_processes():
    torch.manual_seed(0)
    x = torch.randn(300, 7, dtype=torch.float64)
    y = x @ torch.randn(7, 2, dtype=torch.float64) + 0.1 * torch.randn(300, 2, dtype=torch.float64)
    reference = RidgeReadout(7, 2, alpha=1e-3, dtype=torch.float64).fit(x, y).predict(x)
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_shard_worker, args=(2, _free_port(), x, y, out), nprocs=2, join=True)
    for rank in (0, 1):
        assert torch.allclose(out[rank], reference, atol=1e-10)
