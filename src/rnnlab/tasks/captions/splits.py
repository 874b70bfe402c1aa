"""Splits of the caption data: i.i.d. train/val/test drawn from one distribution, and a
compositional test whose every scene holds a (colour, noun) pair that no training, validation
or i.i.d. test scene contains (held out, after the compositional splits of CLEVR-CoGenT,
Johnson et al., CVPR 2017)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_int
from rnnlab.tasks.captions.scenes import COLOURS, SceneSet, generate_scenes

# A Latin square: every colour and every shape still occurs in training, only the pairing is new.
HELD_OUT_SHAPES: tuple[tuple[str, str], ...] = (
    ("red", "triangle"), ("green", "circle"), ("blue", "square"), ("yellow", "diamond"))
# Digit d is held out in colour number d mod 5: every digit and colour still occurs in training.
HELD_OUT_DIGITS: tuple[tuple[str, str], ...] = tuple(
    (tuple(COLOURS)[d % 5], str(d)) for d in range(10))


@dataclass(frozen=True)
class CaptionSplits:
    """``train``, ``val``, ``test`` (i.i.d.) and ``compositional`` scene sets and the held-out
    (colour, noun) pairs."""

    train: SceneSet
    val: SceneSet
    test: SceneSet
    compositional: SceneSet
    held_out: tuple[tuple[str, str], ...]


def caption_splits(n_train: int = 2000, n_val: int = 200, n_test: int = 400,
                   n_compositional: int = 400, *, kind: str = "shapes",
                   held_out: Iterable[tuple[str, str]] | None = None, seed: object = None,
                   generator: torch.Generator | None = None, **scene_options) -> CaptionSplits:
    """Train/val/test scenes without the ``held_out`` pairs and a compositional test in which
    the first object of every scene has one. For ``kind="digits"`` the sets draw their
    handwriting from the disjoint ``load_digits`` pools (train from ``"train"``, val from
    ``"val"``, both tests from ``"test"``). ``scene_options`` go to ``generate_scenes``."""
    for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test),
                    ("n_compositional", n_compositional)):
        check_int(name, v, low=0)
    if held_out is None:
        held_out = HELD_OUT_SHAPES if kind == "shapes" else HELD_OUT_DIGITS
    held = tuple(sorted((c, str(x)) for c, x in held_out))
    if not held:
        raise ValueError("held_out must name at least one (colour, noun) pair")
    g = make_generator(seed, generator)
    pools = {"train": "train", "val": "val", "test": "test"} if kind == "digits" else {}

    def make(n: int, pool: str, **kw) -> SceneSet:
        return generate_scenes(n, kind=kind, generator=g, digit_pool_name=pools.get(pool, "train"),
                               **scene_options, **kw)

    return CaptionSplits(
        train=make(n_train, "train", exclude_pairs=held),
        val=make(n_val, "val", exclude_pairs=held),
        test=make(n_test, "test", exclude_pairs=held),
        compositional=make(n_compositional, "test", require_pairs=held),
        held_out=held)


def iid_split(n: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), *,
              seed: object = None, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Disjoint index sets (train, val, test) of ``range(n)`` by a seeded permutation."""
    n = check_int("n", n, low=0)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, "
                         f"got {fractions}")
    perm = torch.randperm(n, generator=make_generator(seed, generator))
    a = round(fractions[0] * n)
    b = a + round(fractions[1] * n)
    return perm[:a], perm[a:b], perm[b:]
