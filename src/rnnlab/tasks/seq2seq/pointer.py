"""Pointer tasks (Vinyals, Fortunato & Jaitly 2015, "Pointer networks", NeurIPS): the output
is a sequence of positions of the input, so its "vocabulary" grows with the input length.

* :func:`pointer_sort` -- n numbers uniform on [0, 1); target the positions in increasing
  order of value (argsort).
* :func:`convex_hull` -- n points uniform on the unit square; target the hull's vertices.
  Order convention of Vinyals et al. (2015, Sec. 4.2): start at the vertex with the lowest
  index and go counter-clockwise. Ground truth from ``scipy.spatial.ConvexHull`` (Qhull; its
  2-D ``vertices`` are counter-clockwise), rotated to start at the lowest index.

Both return :class:`PointerData` with ``inputs`` ``(B, T, d)``, ``lengths`` ``(B,)``,
``targets`` ``(B, S)`` (positions, padded with ``pad``) and ``target_lengths`` ``(B,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_int, check_positive_int
from rnnlab.tasks.seq2seq.data import _lengths

POINTER_TASKS = ("sort", "hull")


@dataclass
class PointerData:
    inputs: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    target_lengths: torch.Tensor
    pad: int = -1

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def target_lists(self) -> list[list[int]]:
        return [self.targets[b, : int(n)].tolist() for b, n in enumerate(self.target_lengths)]


def _pack(inputs: list[torch.Tensor], targets: list[list[int]], pad: int,
          dtype: torch.dtype) -> PointerData:
    B, d = len(inputs), inputs[0].shape[1]
    T, S = max(x.shape[0] for x in inputs), max(len(t) for t in targets)
    x = torch.zeros(B, T, d, dtype=dtype)
    y = torch.full((B, S), pad, dtype=torch.long)
    for b, (xi, ti) in enumerate(zip(inputs, targets, strict=True)):
        x[b, : xi.shape[0]] = xi
        y[b, : len(ti)] = torch.tensor(ti, dtype=torch.long)
    return PointerData(x, torch.tensor([xi.shape[0] for xi in inputs]),
                       y, torch.tensor([len(t) for t in targets]), pad)


def pointer_sort(n: int, min_length: int, max_length: int, *, pad: int = -1,
                 dtype: torch.dtype = torch.float32, seed: int | None = None,
                 generator: torch.Generator | None = None) -> PointerData:
    """``n`` sequences of numbers uniform on [0, 1), lengths uniform on
    ``[min_length, max_length]``; target the argsort (ties have probability zero)."""
    n = check_positive_int("n", n)
    lo, hi = _lengths(min_length, max_length)
    g = make_generator(seed, generator)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    xs, ys = [], []
    for L in lengths:
        v = torch.rand(L, generator=g, dtype=torch.float64)
        xs.append(v.to(dtype)[:, None])
        ys.append(torch.argsort(v).tolist())
    return _pack(xs, ys, check_int("pad", pad), dtype)


def hull_order(points: np.ndarray) -> list[int]:
    """Indices of the convex hull's vertices of 2-D ``points`` ``(n, 2)``, starting at the
    lowest index and counter-clockwise (Vinyals et al. 2015), by ``scipy.spatial.ConvexHull``."""
    from scipy.spatial import ConvexHull

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 3:
        raise ValueError(f"points must have shape (n >= 3, 2), got {pts.shape}")
    v = [int(i) for i in ConvexHull(pts).vertices]  # counter-clockwise in 2-D
    k = v.index(min(v))
    return v[k:] + v[:k]


def convex_hull(n: int, min_points: int, max_points: int, *, pad: int = -1,
                dtype: torch.dtype = torch.float32, seed: int | None = None,
                generator: torch.Generator | None = None) -> PointerData:
    """``n`` sets of points uniform on the unit square, sizes uniform on
    ``[min_points, max_points]`` (at least 3); target :func:`hull_order`."""
    n = check_positive_int("n", n)
    lo, hi = _lengths(min_points, max_points)
    if lo < 3:
        raise ValueError(f"a convex hull needs at least 3 points, got min_points={lo}")
    g = make_generator(seed, generator)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    xs, ys = [], []
    for L in lengths:
        p = torch.rand(L, 2, generator=g, dtype=torch.float64)
        xs.append(p.to(dtype))
        ys.append(hull_order(p.numpy()))
    return _pack(xs, ys, check_int("pad", pad), dtype)


def add_end_position(data: PointerData) -> PointerData:
    """The same data with an "end" element in front, as Vinyals et al. (2015) give the decoder a
    position that ends the output: inputs ``(B, T + 1, d + 1)`` with element 0 the unit vector
    of the new last feature (the other elements get 0 there), targets shifted by one and followed
    by 0 (point at the end), ``lengths`` and ``target_lengths`` one larger. Output lengths then
    need not be known in advance (the convex hull's is not)."""
    B, T, d = data.inputs.shape
    x = data.inputs.new_zeros(B, T + 1, d + 1)
    x[:, 1:, :d] = data.inputs
    x[:, 0, d] = 1.0
    S = data.targets.shape[1]
    y = torch.full((B, S + 1), data.pad, dtype=torch.long)
    for b in range(B):
        n = int(data.target_lengths[b])
        y[b, :n] = data.targets[b, :n] + 1
        y[b, n] = 0
    return PointerData(x, data.lengths + 1, y, data.target_lengths + 1, data.pad)


def pointer_task(task: str, n: int, min_length: int, max_length: int, **kwargs) -> PointerData:
    """``"sort"`` (:func:`pointer_sort`) or ``"hull"`` (:func:`convex_hull`)."""
    if task not in POINTER_TASKS:
        raise ValueError(f"task must be one of {POINTER_TASKS}, got {task!r}")
    fn = pointer_sort if task == "sort" else convex_hull
    return fn(n, min_length, max_length, **kwargs)
