"""Ridge readouts fitted over several processes with ``torch.distributed``.

A ridge readout keeps only the sums of its normal equations (``X^T X``, ``X^T Y``, ``X^T 1``,
``Y^T 1``, ``M``; see :mod:`rnnlab.reservoir.readout`), and the sums over disjoint shards of the
data add up to the sums over all of it. So each process (rank) runs the reservoir over its own
shard of sequences and accumulates its statistics with ``partial_fit``;
:func:`all_reduce_statistics` sums them across the ranks with one ``all_reduce`` (SUM), in float64;
every rank then solves the same system and holds the readout of the whole data set::

    torch.distributed.init_process_group("gloo")        # torchrun sets rank and world size
    readout = RidgeReadout(units, outputs, alpha)
    for x, y in my_shard:                                # each rank its own sequences
        readout.partial_fit(esn.states(x)[:, washout:], y[:, washout:])
    all_reduce_statistics(readout).solve()               # the same weights on every rank

The engine is torch's own (gloo on the CPU, NCCL on CUDA tensors): nothing is sent but the
statistics, O(F^2 + F O) numbers whatever the data's length.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from rnnlab.reservoir.readout import RidgeClassifierReadout, RidgeReadout

_KEYS = ("xtx", "xty", "sum_x", "sum_y", "count")


def _ridge(readout: RidgeReadout | RidgeClassifierReadout) -> RidgeReadout:
    if isinstance(readout, RidgeClassifierReadout):
        return readout.ridge
    if isinstance(readout, RidgeReadout):
        return readout
    raise TypeError("all_reduce_statistics takes a RidgeReadout or a RidgeClassifierReadout, "
                    f"got {type(readout).__name__}")


def all_reduce_statistics(readout: RidgeReadout | RidgeClassifierReadout,
                          group: Any = None) -> RidgeReadout | RidgeClassifierReadout:
    """Sum ``readout``'s ridge statistics over every process of ``group`` (default: the whole
    world), in place, and return ``readout`` (call ``.solve()`` next).

    Every rank must call it (it is a collective) with a readout of the same shape and the same
    ``fit_intercept``; a rank whose readout differs makes every rank raise ``ValueError`` (the
    shapes are compared first, with one small ``all_reduce``, so a mismatch cannot hang or
    silently mix statistics). The statistics travel as one flat float64 tensor on the
    readout's device (gloo for CPU tensors, NCCL for CUDA ones).
    """
    ridge = _ridge(readout)
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("torch.distributed is not initialised: call "
                           "torch.distributed.init_process_group first (e.g. under torchrun)")
    stats = ridge.statistics()
    device = stats["xtx"].device
    # MAX and -MIN of the same description agree on every rank iff every rank has the same
    sig = torch.tensor([ridge.n_features, ridge.n_outputs, int(ridge.fit_intercept)],
                       dtype=torch.float64, device=device)
    both = torch.cat([sig, -sig])
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    if not torch.equal(both[:3], -both[3:]):
        raise ValueError(
            "the readouts differ across ranks: (n_features, n_outputs, fit_intercept) range "
            f"from {(-both[3:]).tolist()} to {both[:3].tolist()}; this rank has "
            f"{sig.tolist()}")
    flat = torch.cat([stats[k].reshape(-1) for k in _KEYS])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    start = 0
    for k in _KEYS:
        n = stats[k].numel()
        stats[k].copy_(flat[start:start + n].view_as(stats[k]))
        start += n
    return readout
