"""Running an experiment's jobs: torch's thread count around a block, and a spawned process
pool whose workers start with one thread count (used by :meth:`RunContext.run_jobs`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class thread_count:
    """Context manager: ``torch.set_num_threads(n)`` inside, the previous count restored after."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.before = torch.get_num_threads()

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)



def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_pool(fn: Callable[..., dict[str, Any]], jobs: list[tuple[Any, ...]], workers: int,
              threads: int, finish: Callable[[int, dict[str, Any]], None]) -> None:
    """Run ``fn(*job)`` in a spawned process pool, calling ``finish(k, row)`` as job k ends."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads,))
    try:
        pending = {pool.submit(fn, *job): k for k, job in enumerate(jobs)}
        waiting = set(pending)
        while waiting:
            finished, waiting = wait(waiting, return_when=FIRST_COMPLETED)
            for future in finished:
                finish(pending[future], future.result())
    except BaseException:
        # Do not wait for the queued runs: what finished is already logged.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
