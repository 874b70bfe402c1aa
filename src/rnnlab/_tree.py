"""States as trees of tensors: the one set of helpers every module uses.

A *state* is a tensor or a (nested) tuple of tensors: ``h`` for the Elman cell, ``(h, c)`` for
the LSTM, a tuple of per-layer states for a stack. Leaves are taken depth first, left to right.

* :func:`tree_map` applies a function leaf by leaf to trees of the same structure;
* :func:`tree_leaves` lists the leaves;
* :func:`tree_concat` concatenates the leaves of a batched state into one ``(batch, S)`` matrix
  (each leaf flattened after its batch axis), :func:`tree_split` is its inverse;
* :class:`TreeLayout` remembers a state's structure and leaf shapes once, to concatenate and
  split many states of that layout (and to check that they have it).

Public spellings: ``rnnlab.cells.map_state``, ``flatten_state`` (the leaves), ``concat_state``
and ``split_state``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Union

import torch

Tree = Union[torch.Tensor, tuple["Tree", ...]]  # noqa: UP007 (a recursive alias needs Union)


def tree_map(fn: Callable[..., torch.Tensor], *trees: Any) -> Any:
    """Apply ``fn`` leaf by leaf to trees of the same structure: ``tree_map(f, a, b)``."""
    first = trees[0]
    if isinstance(first, torch.Tensor):
        return fn(*trees)
    return tuple(tree_map(fn, *parts) for parts in zip(*trees, strict=True))


def tree_leaves(tree: Any) -> list[torch.Tensor]:
    """The leaves of a tree, depth first (an empty tuple has none)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if not isinstance(tree, tuple | list):
        raise TypeError(
            f"a state must be a tensor or a (nested) tuple of tensors, got {type(tree).__name__}"
        )
    return [leaf for part in tree for leaf in tree_leaves(part)]


def tree_structure(tree: Any) -> Any:
    """The nesting of a tree with its leaves replaced by None."""
    if isinstance(tree, torch.Tensor):
        return None
    return tuple(tree_structure(part) for part in tree)


def tree_concat(tree: Any) -> torch.Tensor:
    """``(batch, S)``: the leaves of a batched state, each flattened after dim 0, concatenated."""
    leaves = tree_leaves(tree)
    if len(leaves) == 1:
        return leaves[0].reshape(leaves[0].shape[0], -1)
    return torch.cat([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], dim=1)


def tree_split(flat: torch.Tensor, like: Any) -> Any:
    """The inverse of :func:`tree_concat`: cut ``flat`` ``(batch, S)`` into a state shaped like
    ``like`` (only ``like``'s structure and leaf shapes after dim 0 are used)."""
    return TreeLayout(like).split(flat)


class TreeLayout:
    """The structure and per-sample leaf shapes of a state, to concatenate and split states of
    that layout: ``layout.concat(state) -> (batch, S)``, ``layout.split(flat) -> state``."""

    def __init__(self, like: Any) -> None:
        leaves = tree_leaves(like)
        if not leaves:
            raise TypeError("a state must be a tensor or a (nested) tuple of tensors, got ()")
        self.structure = tree_structure(like)
        self.shapes = [leaf.shape[1:] for leaf in leaves]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.offsets = [0]
        for size in self.sizes:
            self.offsets.append(self.offsets[-1] + size)

    @property
    def total(self) -> int:
        """S, the features of the concatenated state."""
        return self.offsets[-1]

    def concat(self, tree: Any, what: str = "the state") -> torch.Tensor:
        leaves = tree_leaves(tree)
        if len(leaves) != len(self.sizes):
            raise ValueError(
                f"{what} has {len(leaves)} tensors, the layout (the initial state) has "
                f"{len(self.sizes)}"
            )
        return tree_concat(leaves)

    def split(self, flat: torch.Tensor) -> Any:
        parts = iter(
            flat[:, a:b].reshape(flat.shape[0], *shape)
            for a, b, shape in zip(self.offsets[:-1], self.offsets[1:], self.shapes, strict=True)
        )

        def build(structure: Any) -> Any:
            if structure is None:
                return next(parts)
            return tuple(build(part) for part in structure)

        return build(self.structure)


__all__ = ["Tree", "TreeLayout", "tree_concat", "tree_leaves", "tree_map", "tree_split",
           "tree_structure"]
