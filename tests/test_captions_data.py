"""Generated caption scenes: relations against a direct rule, boxes against the drawn pixels,
seeded reproducibility, the compositional split and bad input."""

import math

import numpy as np
import pytest
import torch

from rnnlab.tasks.captions import (
    COLOURS,
    FILL_FRACTION,
    HELD_OUT_DIGITS,
    HELD_OUT_SHAPES,
    caption_splits,
    digit_pool,
    generate_scenes,
    iid_split,
)

# Perimeters in units of the box side: circle pi, square 4, triangle 1 + sqrt(5) (base and two
# sides to the apex at the top middle), diamond 2 * sqrt(2).
PERIMETER = {"circle": math.pi, "square": 4.0, "triangle": 1 + math.sqrt(5),
             "diamond": 2 * math.sqrt(2)}


@pytest.fixture(scope="module")
def shapes():
    return generate_scenes(40, seed=3)


@pytest.fixture(scope="module")
def digits():
    return generate_scenes(20, kind="digits", seed=4)


def _reference_relations(scene):
    """Relations by an independent formulation: the direction from the angle of the centre
    offset (open 90-degree sectors), the box gap from the pixel coordinates themselves, size
    from box areas."""
    out = set()
    for i, a in enumerate(scene.objects):
        for j, b in enumerate(scene.objects):
            if i == j:
                continue
            ca = np.array([a.box[0] + a.box[2], a.box[1] + a.box[3]]) / 2
            cb = np.array([b.box[0] + b.box[2], b.box[1] + b.box[3]]) / 2
            angle = math.degrees(math.atan2(cb[1] - ca[1], cb[0] - ca[0]))
            sectors = {"left of": 0.0, "above": 90.0, "right of": 180.0, "below": -90.0}
            for name, centre in sectors.items():
                d = abs((angle - centre + 180.0) % 360.0 - 180.0)
                if d < 45.0:
                    out.add((i, name, j))
            # Chebyshev distance between the nearest pixels minus one = empty pixels between.
            xa, ya = np.arange(a.box[0], a.box[2]), np.arange(a.box[1], a.box[3])
            xb, yb = np.arange(b.box[0], b.box[2]), np.arange(b.box[1], b.box[3])
            gap = max(np.abs(xa[:, None] - xb[None]).min(), np.abs(ya[:, None] - yb[None]).min())
            if gap - 1 <= 0.12 * scene.size:
                out.add((i, "next to", j))
            area_a = (a.box[2] - a.box[0]) * (a.box[3] - a.box[1])
            area_b = (b.box[2] - b.box[0]) * (b.box[3] - b.box[1])
            if area_a >= 1.33 ** 2 * area_b:
                out.add((i, "bigger than", j))
            if area_b >= 1.33 ** 2 * area_a:
                out.add((i, "smaller than", j))
    return out


def test_relations_match_direct_rule(shapes, digits):
    for scene in shapes.scenes + digits.scenes:
        assert set(scene.relations) == _reference_relations(scene)
    # Each relation name occurs, so the comparison above exercised them all.
    names = {r for s in shapes.scenes for _, r, _ in s.relations}
    assert names == {"left of", "right of", "above", "below", "next to", "bigger than",
                     "smaller than"}


def test_bigger_than_is_the_size_class():
    s = generate_scenes(30, seed=5)
    for scene in s.scenes:
        for i, a in enumerate(scene.objects):
            for j, b in enumerate(scene.objects):
                if i != j:
                    big = a.size == "large" and b.size == "small"
                    assert ((i, "bigger than", j) in scene.relations) == big


def test_boxes_match_drawn_pixels(shapes):
    img = (shapes.images * 255).round().to(torch.int64).permute(0, 2, 3, 1).numpy()
    assert shapes.images.shape == (40, 3, 64, 64) and shapes.images.dtype == torch.float32
    assert 0 <= shapes.images.min() and shapes.images.max() <= 1
    for k, scene in enumerate(shapes.scenes):
        ink = img[k].sum(-1) > 0
        inside = np.zeros_like(ink)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and x1 - x0 == y1 - y0
            inside[y0:y1, x0:x1] = True
            patch = img[k, y0:y1, x0:x1]
            on = patch.sum(-1) > 0
            # Every pixel in the box is background or exactly the object's colour (no overlap).
            assert (patch[on] == np.array(COLOURS[obj.colour])).all()
            # The box is the tight box of the pixels (the drawn rasterisation may miss the one
            # row or column at a sharp vertex: tolerance 1 pixel).
            rows, cols = np.nonzero(on)
            assert rows.min() <= 1 and cols.min() <= 1
            assert rows.max() >= y1 - y0 - 2 and cols.max() >= x1 - x0 - 2
            # Filled fraction close to the continuum fraction: rasterising can only change the
            # band of pixels the outline crosses; half a pixel along the perimeter P (in box
            # sides) gives |error| <= 0.5 * P / side (measured up to 0.16 * P / side).
            frac = on.mean()
            tol = 0.5 * PERIMETER[obj.noun] / (x1 - x0)
            assert abs(frac - FILL_FRACTION[obj.noun]) <= tol, (obj, frac)
        assert not ink[~inside].any()


def test_digit_pixels_inside_boxes(digits):
    img = digits.images.permute(0, 2, 3, 1).numpy()
    for k, scene in enumerate(digits.scenes):
        ink = img[k].sum(-1) > 0
        inside = np.zeros_like(ink)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            inside[y0:y1, x0:x1] = True
            on = img[k, y0:y1, x0:x1].sum(-1) > 0
            # Upscaled load_digits strokes cover much of their box (measured >= 0.47).
            assert on.mean() >= 0.3
            assert obj.noun in "0123456789"
        assert not ink[~inside].any()


def test_digit_pools_are_disjoint():
    pools = [set(digit_pool(p).tolist()) for p in ("train", "val", "test")]
    assert not pools[0] & pools[1] and not pools[0] & pools[2] and not pools[1] & pools[2]
    assert sum(map(len, pools)) == 1797


def test_seeded_reproducibility():
    a, b = generate_scenes(6, seed=11), generate_scenes(6, seed=11)
    c = generate_scenes(6, seed=12)
    assert torch.equal(a.images, b.images) and a.scenes == b.scenes
    assert not torch.equal(a.images, c.images)
    g = torch.Generator().manual_seed(11)
    assert generate_scenes(6, generator=g).scenes == a.scenes


def test_at_least_five_distinct_captions(shapes, digits):
    for scene in shapes.scenes + digits.scenes:
        assert len(set(scene.captions)) == len(scene.captions) >= 5


@pytest.mark.parametrize("kind, held", [("shapes", HELD_OUT_SHAPES), ("digits", HELD_OUT_DIGITS)])
def test_compositional_split(kind, held):
    sp = caption_splits(60, 10, 10, 20, kind=kind, seed=0)
    assert set(sp.held_out) == set(held)
    pairs = lambda s: {(o.colour, o.noun) for o in s.objects}  # noqa: E731
    for part in (sp.train, sp.val, sp.test):
        assert all(not pairs(s) & set(held) for s in part.scenes)
    assert all(pairs(s) & set(held) for s in sp.compositional.scenes)
    # Every colour and every noun of the held-out pairs still occurs in training.
    seen = set().union(*(pairs(s) for s in sp.train.scenes))
    for colour, noun in held:
        assert any(c == colour for c, _ in seen) and any(x == noun for _, x in seen)


def test_iid_split_disjoint_and_seeded():
    a = iid_split(50, seed=1)
    assert sorted(torch.cat(a).tolist()) == list(range(50))
    assert [len(x) for x in a] == [40, 5, 5]
    assert all(torch.equal(x, y) for x, y in zip(a, iid_split(50, seed=1), strict=True))
    with pytest.raises(ValueError, match="summing to 1"):
        iid_split(10, (0.5, 0.5, 0.5))


def test_bad_input():
    with pytest.raises(ValueError, match="n_objects"):
        generate_scenes(2, n_objects=0)
    with pytest.raises(ValueError, match="min, max"):
        generate_scenes(2, n_objects=(2,))
    with pytest.raises(ValueError, match="too small"):
        generate_scenes(2, size=32, n_objects=6)
    with pytest.raises(ValueError, match="size"):
        generate_scenes(2, size=8)
    with pytest.raises(ValueError, match=r"colour.*'pink'"):
        generate_scenes(2, colours=["red", "pink"])
    with pytest.raises(ValueError, match=r"noun.*'hexagon'"):
        generate_scenes(2, nouns=["hexagon"])
    with pytest.raises(ValueError, match="kind"):
        generate_scenes(2, kind="faces")
    with pytest.raises(ValueError, match="every"):
        generate_scenes(2, colours=["red"], nouns=["circle"], exclude_pairs=[("red", "circle")])
    with pytest.raises(ValueError, match="colour in exclude_pairs"):
        generate_scenes(2, exclude_pairs=[("pink", "circle")])
