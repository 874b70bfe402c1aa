"""Data-parallel training of a GRU network through ``rnnlab.train.Trainer(distributed=True)``.

Run (two processes, gloo on loopback)::

    .venv/bin/torchrun --standalone --nproc_per_node=2 benchmarks/ddp_train.py

or as one process (``.venv/bin/python benchmarks/ddp_train.py``). Rank 0 then trains the same
model on the same global minibatches without DDP, in the same run, and prints: the wall time of
both, the speed-up, and the largest difference between the two parameter sets (float64: only the
order of the gradient sums differs; see ``docs/distributed.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.distributed as dist

from rnnlab import GRUCell, RecurrentNetwork
from rnnlab.learning import BPTT
from rnnlab.train import Trainer


def _model(args: argparse.Namespace) -> RecurrentNetwork:
    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, args.dtype)
    return RecurrentNetwork(GRUCell(args.inputs, args.hidden, generator=gen, dtype=dtype), 1,
                            generator=gen, dtype=dtype)


def _data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    dtype = getattr(torch, args.dtype)
    x = torch.randn(args.seqs, args.steps, args.inputs, generator=gen, dtype=dtype)
    return x, torch.tanh(0.3 * x.cumsum(1)[..., :1])


def _train(args: argparse.Namespace, distributed: bool) -> tuple[float, RecurrentNetwork]:
    model = _model(args)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=args.lr),
                      BPTT(model, truncation=args.truncation, reduction="mean"),
                      batch_size=args.batch, seed=0,
                      progress=False, distributed=distributed)
    data = _data(args)
    if distributed:
        dist.barrier()
    start = time.perf_counter()
    trainer.fit(data, epochs=args.epochs)
    return time.perf_counter() - start, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seqs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64, help="the global minibatch")
    parser.add_argument("--truncation", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="SGD on the loss averaged over the batch (reduction='mean')")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    try:
        seconds, model = _train(args, distributed)
        if rank == 0:
            print(f"machine: {platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} CPUs; torch {torch.__version__}; {args.threads} thread(s) "
                  f"per process; {args.dtype}")
            print(f"GRU network D={args.inputs} N={args.hidden}; {args.seqs} sequences x "
                  f"{args.steps} steps, global batch {args.batch}, truncation "
                  f"{args.truncation}, {args.epochs} epochs, SGD lr {args.lr}")
            print(f"{world} process(es): {seconds:.2f} s")
        if distributed:
            if rank == 0:
                alone, reference = _train(args, False)
                with torch.no_grad():
                    pairs = list(zip(model.parameters(), reference.parameters(), strict=True))
                    diff = max(float((p - q).abs().max()) for p, q in pairs)
                    size = max(float(q.abs().max()) for _, q in pairs)
                print(f"1 process (same run): {alone:.2f} s; speed-up {alone / seconds:.2f}x")
                print(f"max |parameter difference| DDP vs one process: {diff:.3e} "
                      f"(max |parameter| {size:.3g})")
            dist.barrier()
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
