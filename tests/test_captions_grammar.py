"""The caption grammar and its parser: generated captions parse back to fragments consistent
with their scene graphs, perturbed captions fail, and sentences outside the grammar are named."""

import re

import pytest
import torch

from rnnlab.tasks.captions import (
    COLOURS,
    CaptionParseError,
    Fragment,
    ObjectSpec,
    Scene,
    SceneObject,
    box_mask,
    captions_for,
    fragment_matches,
    generate_scenes,
    ground_caption,
    parse_caption,
    scene_relations,
    semantic_match,
    tokenize,
)


@pytest.fixture(scope="module")
def scenes():
    return (generate_scenes(60, seed=21).scenes
            + generate_scenes(20, kind="digits", n_objects=(1, 3), seed=22).scenes
            + generate_scenes(10, n_objects=1, seed=23).scenes)


def _scene(*objects):
    objs = tuple(SceneObject(*o) for o in objects)
    return Scene("shapes", 64, objs, scene_relations(objs, 64))


def test_every_generated_caption_parses_and_matches(scenes):
    for scene in scenes:
        for caption in scene.captions:
            fragment = parse_caption(caption)
            assert fragment_matches(fragment, scene), (caption, scene)
            # Independent check of the attributes: every word of the caption naming a colour
            # names one of the scene's colours.
            for word in caption.split():
                if word in COLOURS:
                    assert word in {o.colour for o in scene.objects}


def test_wrong_colour_fails(scenes):
    checked = 0
    for scene in scenes:
        absent = sorted(set(COLOURS) - {o.colour for o in scene.objects})
        for caption in scene.captions:
            words = caption.split()
            idx = [i for i, w in enumerate(words) if w in COLOURS]
            if not idx:
                continue
            words[idx[0]] = absent[0]
            assert not semantic_match(" ".join(words), scene)
            checked += 1
    assert checked > 300


def test_parse_known_sentences():
    circle = ObjectSpec("circle", "red", None)
    square = ObjectSpec("square", "blue", "large")
    expected = Fragment((circle, square), ((0, "left of", 1),))
    for s in ("a red circle left of a big blue square",
              "there is a red disk to the left of the large blue block",
              "A red ball is on the left of a big blue square.",
              "to the left of a large blue square there is a red circle"):
        assert parse_caption(s) == expected, s
    assert parse_caption("the digit 3 above the number 7") == Fragment(
        (ObjectSpec("3"), ObjectSpec("7")), ((0, "above", 1),))
    assert parse_caption("an orange diamond and a tiny white triangle") == Fragment(
        (ObjectSpec("diamond", "orange"), ObjectSpec("triangle", "white", "small")))


def test_semantic_match_on_a_hand_built_scene():
    scene = _scene(("circle", "red", "small", (4, 20, 14, 30)),
                   ("square", "blue", "large", (30, 18, 50, 38)))
    assert semantic_match("a red circle left of a blue square", scene)
    assert semantic_match("the big blue square is bigger than the small red circle", scene)
    assert not semantic_match("a red circle right of a blue square", scene)
    assert not semantic_match("a red circle above a blue square", scene)
    assert not semantic_match("a large red circle", scene)
    assert not semantic_match("a red circle next to a blue square", scene)  # gap 16 > 7.68
    assert not semantic_match("a red circle and a red circle", scene)  # needs two objects
    assert not semantic_match("circle circle", scene)  # outside the grammar


def test_parse_errors_name_the_word():
    with pytest.raises(CaptionParseError, match="'pink'"):
        parse_caption("a pink circle")
    with pytest.raises(CaptionParseError, match=re.escape("<end of sentence>")):
        parse_caption("a red")
    with pytest.raises(CaptionParseError, match="empty"):
        parse_caption("  . ")
    with pytest.raises(CaptionParseError, match="structure"):
        parse_caption("a red circle a blue square")
    with pytest.raises(TypeError, match="str"):
        parse_caption(3)


def test_captions_for_is_seeded_and_distinct():
    scene = _scene(("circle", "red", "small", (4, 20, 14, 30)),
                   ("square", "blue", "large", (30, 18, 50, 38)))
    a = captions_for(scene, 8, seed=1)
    assert a == captions_for(scene, 8, seed=1) and len(set(a)) == 8


def test_ground_caption():
    scene = _scene(("circle", "red", "small", (4, 20, 14, 30)),
                   ("square", "blue", "large", (30, 18, 50, 38)))
    g = ground_caption("To the left of a large blue square, there is a red circle.", scene)
    assert g == [None] * 4 + [1] * 4 + [None] * 2 + [0] * 3
    with pytest.raises(ValueError, match="does not match"):
        ground_caption("a red circle right of a blue square", scene)


def test_groundings_of_generated_captions(scenes):
    for scene in scenes[:40]:
        for caption in scene.captions:
            tokens = tokenize(caption)
            for word, obj in zip(tokens, ground_caption(caption, scene), strict=True):
                if word in COLOURS:
                    assert scene.objects[obj].colour == word
                if word in ("left", "above", "below", "there", "and"):
                    assert obj is None


@pytest.mark.parametrize("size, grid", [(64, 8), (64, 7), (30, 4)])
def test_box_mask_against_pixel_counts(size, grid):
    # Reference: a pixel mask, each pixel split into `grid` x `grid` sub-pixels so that the
    # canvas divides into grid cells of size x size sub-pixels, then counted per cell.
    gen = torch.Generator().manual_seed(size + grid)
    for _ in range(10):
        x0, y0 = (int(v) for v in torch.randint(0, size - 2, (2,), generator=gen))
        x1 = x0 + 1 + int(torch.randint(0, size - x0 - 1, (), generator=gen))
        y1 = y0 + 1 + int(torch.randint(0, size - y0 - 1, (), generator=gen))
        pix = torch.zeros(size, size, dtype=torch.float64)
        pix[y0:y1, x0:x1] = 1
        fine = pix.repeat_interleave(grid, 0).repeat_interleave(grid, 1)
        ref = fine.reshape(grid, size, grid, size).mean(dim=(1, 3))
        got = box_mask((x0, y0, x1, y1), size, grid)
        # Both are sums of exact multiples of 1/size**2 in float64: rounding ~1e-15.
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
        assert abs(got.sum() * (size / grid) ** 2 - (x1 - x0) * (y1 - y0)) < 1e-9
    with pytest.raises(ValueError, match="inside"):
        box_mask((0, 0, size + 1, 3), size, grid)
