"""Generated scenes for image captioning: objects with a noun (a shape, or a handwritten digit),
colour, size and box on an RGB canvas, their pairwise relations computed from the boxes, and
the scene graph kept with each image. See ``docs/captions.md``.

Relations of an ordered pair (A, B), from the boxes ``(x0, y0, x1, y1)`` (``x1``, ``y1``
exclusive, y pointing down), with centres ``c = ((x0 + x1) / 2, (y0 + y1) / 2)``,
``dx = c_B.x - c_A.x`` and ``dy = c_B.y - c_A.y``:

* ``left of`` if ``dx > |dy|``, ``right of`` if ``-dx > |dy|``, ``above`` if ``dy > |dx|``,
  ``below`` if ``-dy > |dx|`` (the dominant direction, as in CLEVR's spatial relations,
  Johnson et al., CVPR 2017, with the diagonal tie left unnamed);
* ``next to`` (symmetric) if the gap between the boxes,
  ``max(max(0, x0_B - x1_A, x0_A - x1_B), max(0, y0_B - y1_A, y0_A - y1_B))``, is at most
  ``NEXT_TO_GAP`` of the canvas width;
* ``bigger than`` if ``side_A >= BIGGER_RATIO * side_B`` and ``smaller than`` the converse.

Sizes come from two classes (``small``/``large``, a fraction of the canvas side) with a gap
between them, so that ``bigger than`` holds exactly between objects of different classes.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

from rnnlab._random import make_generator
from rnnlab._validation import check_choice, check_int, check_positive_int

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 200),
    "orange": (245, 140, 30),
    "white": (235, 235, 235),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))
KINDS: tuple[str, ...] = ("shapes", "digits")
# Fraction of its box a shape's pixels fill in the continuum (circle pi/4, square 1, triangle and
# diamond 1/2); digits fill what the handwriting fills.
FILL_FRACTION: dict[str, float] = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5,
                                   "diamond": 0.5}
# Box sides as fractions of the canvas side: the classes are separated so that the side ratio
# between classes is >= 0.25/0.18 = 1.39 and within a class <= 0.18/0.14 = 1.29 (rounding the
# ends inwards only narrows both), with BIGGER_RATIO between them.
SIZE_CLASSES: dict[str, tuple[float, float]] = {"small": (0.14, 0.18), "large": (0.25, 0.32)}
BIGGER_RATIO = 1.33
NEXT_TO_GAP = 0.12
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below", "next to",
                              "bigger than", "smaller than")
MIN_CANVAS = 24
_PLACEMENT_GAP = 2  # pixels between boxes, so that objects never touch
_MAX_TRIES = 200


@dataclass(frozen=True)
class SceneObject:
    """One object: ``noun`` (a shape name or a digit ``"0"``..``"9"``), ``colour``, ``size``
    (``"small"``/``"large"``) and ``box = (x0, y0, x1, y1)`` in pixels (ends exclusive)."""

    noun: str
    colour: str
    size: str
    box: tuple[int, int, int, int]

    @property
    def side(self) -> int:
        return self.box[2] - self.box[0]


@dataclass(frozen=True)
class Scene:
    """The scene graph of one image: its objects, the relation triples ``(i, relation, j)``
    that hold between them (both directions of each), and its captions."""

    kind: str
    size: int
    objects: tuple[SceneObject, ...]
    relations: frozenset[tuple[int, str, int]]
    captions: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        """Plain data (JSON-ready) of the scene graph."""
        return {"kind": self.kind, "size": self.size,
                "objects": [{"noun": o.noun, "colour": o.colour, "size": o.size,
                             "box": list(o.box)} for o in self.objects],
                "relations": sorted([i, r, j] for i, r, j in self.relations),
                "captions": list(self.captions)}


@dataclass(frozen=True)
class SceneSet:
    """Images ``(N, 3, H, W)`` float32 in ``[0, 1]`` and their scenes (one per image)."""

    images: torch.Tensor
    scenes: list[Scene]

    def __len__(self) -> int:
        return len(self.scenes)


def relations_between(a: SceneObject, b: SceneObject, width: int) -> list[str]:
    """The relations that hold for the ordered pair ``(a, b)`` (module docstring)."""
    dx = (b.box[0] + b.box[2] - a.box[0] - a.box[2]) / 2
    dy = (b.box[1] + b.box[3] - a.box[1] - a.box[3]) / 2
    out = []
    if dx > abs(dy):
        out.append("left of")
    if -dx > abs(dy):
        out.append("right of")
    if dy > abs(dx):
        out.append("above")
    if -dy > abs(dx):
        out.append("below")
    gap_x = max(0, b.box[0] - a.box[2], a.box[0] - b.box[2])
    gap_y = max(0, b.box[1] - a.box[3], a.box[1] - b.box[3])
    if max(gap_x, gap_y) <= NEXT_TO_GAP * width:
        out.append("next to")
    if a.side >= BIGGER_RATIO * b.side:
        out.append("bigger than")
    if b.side >= BIGGER_RATIO * a.side:
        out.append("smaller than")
    return out


def scene_relations(objects: Sequence[SceneObject], width: int
                    ) -> frozenset[tuple[int, str, int]]:
    """All triples ``(i, relation, j)``, ``i != j``, of a scene."""
    return frozenset((i, r, j) for i, j in itertools.permutations(range(len(objects)), 2)
                     for r in relations_between(objects[i], objects[j], width))


@functools.lru_cache(maxsize=1)
def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    data = load_digits()
    return data.images.astype(np.float64) / 16.0, data.target.astype(np.int64)


# Fixed partition of the 1797 load_digits images into pools, independent of any scene seed, so
# that the i.i.d. test scenes show handwriting never seen in training.
DIGIT_POOLS: tuple[str, ...] = ("train", "val", "test")


def digit_pool(pool: str) -> np.ndarray:
    """Indices into ``load_digits`` of one pool: a fixed 60/20/20 split (permutation seed 0)."""
    check_choice("digit pool", pool, DIGIT_POOLS)
    n = len(_digit_images()[1])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).numpy()
    a, b = int(0.6 * n), int(0.8 * n)
    return np.sort({"train": perm[:a], "val": perm[a:b], "test": perm[b:]}[pool])


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g, dtype=torch.float64))


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]``."""
    return int(torch.randint(low, high + 1, (), generator=g))


def _side_range(size: str, canvas: int) -> tuple[int, int]:
    lo, hi = SIZE_CLASSES[size]
    return math.ceil(lo * canvas), math.floor(hi * canvas)


def _check_pairs(name: str, pairs: Iterable[tuple[str, str]] | None, nouns: Sequence[str],
                 colours: Sequence[str]) -> frozenset[tuple[str, str]]:
    if pairs is None:
        return frozenset()
    out = set()
    for pair in pairs:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValueError(f"{name} must hold (colour, noun) pairs, got {pair!r}")
        colour, noun = pair
        check_choice(f"colour in {name}", colour, colours)
        check_choice(f"noun in {name}", str(noun), nouns)
        out.add((colour, str(noun)))
    return frozenset(out)


def _draw(draw: ImageDraw.ImageDraw, canvas: np.ndarray, obj: SceneObject,
          digit: np.ndarray | None) -> None:
    x0, y0, x1, y1 = obj.box
    rgb = COLOURS[obj.colour]
    # PIL's shape boxes are inclusive, ours exclusive.
    if obj.noun == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=rgb)
    elif obj.noun == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=rgb)
    elif obj.noun == "triangle":
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=rgb)
    elif obj.noun == "diamond":
        xm, ym = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
        draw.polygon([(xm, y0), (x1 - 1, ym), (xm, y1 - 1), (x0, ym)], fill=rgb)
    else:  # a digit: its 8x8 grey levels upscaled to the box, tinted with the colour
        side = obj.side
        patch = Image.fromarray((digit * 255).astype(np.uint8)).resize(
            (side, side), Image.Resampling.BILINEAR)
        ink = np.asarray(patch, dtype=np.float64)[..., None] / 255.0
        canvas[y0:y1, x0:x1] = np.maximum(canvas[y0:y1, x0:x1],
                                          np.round(ink * np.array(rgb)).astype(np.uint8))


def _place(g: torch.Generator, sizes: list[str], canvas: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping boxes (with a gap) inside the canvas, by rejection sampling."""
    boxes: list[tuple[int, int, int, int]] = []
    for size in sizes:
        lo, hi = _side_range(size, canvas)
        for _ in range(_MAX_TRIES):
            side = _randint(g, lo, hi)
            x0, y0 = _randint(g, 0, canvas - side), _randint(g, 0, canvas - side)
            box = (x0, y0, x0 + side, y0 + side)
            if all(box[0] >= b[2] + _PLACEMENT_GAP or b[0] >= box[2] + _PLACEMENT_GAP
                   or box[1] >= b[3] + _PLACEMENT_GAP or b[1] >= box[3] + _PLACEMENT_GAP
                   for b in boxes):
                boxes.append(box)
                break
        else:
            return []
    return boxes


def generate_scenes(n: int, *, kind: str = "shapes", size: int = 64,
                    n_objects: int | tuple[int, int] = (2, 4),
                    colours: Sequence[str] | None = None, nouns: Sequence[str] | None = None,
                    exclude_pairs: Iterable[tuple[str, str]] | None = None,
                    require_pairs: Iterable[tuple[str, str]] | None = None,
                    captions_per_image: int = 5, digit_pool_name: str = "train",
                    seed: object = None, generator: torch.Generator | None = None) -> SceneSet:
    """``n`` scenes of ``kind`` (``"shapes"`` or ``"digits"``) on ``size`` x ``size`` canvases.

    Each object draws a (colour, noun) pair uniformly from the allowed pairs (those not in
    ``exclude_pairs``), a size class and a box; when ``require_pairs`` is given, the first object
    of every scene draws from those pairs instead (the compositional test). Captions come from
    :func:`rnnlab.tasks.captions.grammar.captions_for`.
    """
    from rnnlab.tasks.captions.grammar import captions_for

    n = check_int("n", n, low=0)
    check_choice("kind", kind, KINDS)
    size = check_int("size", size, low=MIN_CANVAS)
    if isinstance(n_objects, tuple | list):
        if len(n_objects) != 2:
            raise ValueError(f"n_objects must be an int or a (min, max) pair, got {n_objects!r}")
        lo_n, hi_n = n_objects
    else:
        lo_n = hi_n = n_objects
    lo_n, hi_n = check_positive_int("n_objects", lo_n), check_positive_int("n_objects", hi_n)
    if lo_n > hi_n:
        raise ValueError(f"n_objects range must have min <= max, got ({lo_n}, {hi_n})")
    # Area check: each large box with its gap needs (0.32*size + gap)^2; random placement
    # fails long before the boxes tile the canvas, so ask for at most half of it.
    need = hi_n * (SIZE_CLASSES["large"][1] * size + _PLACEMENT_GAP) ** 2
    if need > 0.5 * size * size:
        raise ValueError(f"canvas {size}x{size} is too small for {hi_n} objects: they need "
                         f"about {need:.0f} px^2, more than half the canvas; use fewer objects "
                         f"or a larger canvas")
    all_nouns = SHAPES if kind == "shapes" else DIGITS
    colours = tuple(COLOURS) if colours is None else tuple(colours)
    nouns = all_nouns if nouns is None else tuple(str(x) for x in nouns)
    if not colours or not nouns:
        raise ValueError("colours and nouns must not be empty")
    for c in colours:
        check_choice("colour", c, COLOURS)
    for x in nouns:
        check_choice(f"noun of kind {kind!r}", x, all_nouns)
    excluded = _check_pairs("exclude_pairs", exclude_pairs, nouns, colours)
    required = _check_pairs("require_pairs", require_pairs, nouns, colours)
    allowed = [(c, x) for c in colours for x in nouns if (c, x) not in excluded]
    if not allowed:
        raise ValueError("exclude_pairs removes every (colour, noun) pair")
    required_list = sorted(required)
    check_positive_int("captions_per_image", captions_per_image)
    g = make_generator(seed, generator)
    if kind == "digits":
        pool = digit_pool(digit_pool_name)
        images_8, targets = _digit_images()
        by_class = {str(d): pool[targets[pool] == d] for d in range(10)}

    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    scenes = []
    for k in range(n):
        count = _randint(g, lo_n, hi_n)
        for _ in range(_MAX_TRIES):
            sizes = [("small", "large")[_randint(g, 0, 1)] for _ in range(count)]
            boxes = _place(g, sizes, size)
            if boxes:
                break
        else:
            raise ValueError(f"could not place {count} objects on a {size}x{size} canvas in "
                             f"{_MAX_TRIES} tries; use fewer objects or a larger canvas")
        objects, digits = [], []
        for i, (sz, box) in enumerate(zip(sizes, boxes, strict=True)):
            pairs = required_list if (i == 0 and required_list) else allowed
            colour, noun = pairs[_randint(g, 0, len(pairs) - 1)]
            objects.append(SceneObject(noun, colour, sz, box))
            if kind == "digits":
                choices = by_class[noun]
                digits.append(images_8[choices[_randint(g, 0, len(choices) - 1)]])
            else:
                digits.append(None)
        pil = Image.fromarray(images[k])
        draw = ImageDraw.Draw(pil)
        for obj, digit in zip(objects, digits, strict=True):
            if digit is None:
                _draw(draw, images[k], obj, None)
        images[k] = np.asarray(pil)
        for obj, digit in zip(objects, digits, strict=True):
            if digit is not None:
                _draw(draw, images[k], obj, digit)
        objs = tuple(objects)
        rel = scene_relations(objs, size)
        scene = Scene(kind, size, objs, rel)
        caps = captions_for(scene, captions_per_image, generator=g)
        scenes.append(Scene(kind, size, objs, rel, caps))
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return SceneSet(tensor.contiguous(), scenes)
