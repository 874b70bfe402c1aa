"""Image-captioning data: generated scenes of shapes or handwritten digits with ground-truth
boxes, scene graphs and captions from a grammar, the caption parser for exact semantic accuracy,
and the i.i.d. and compositional splits. See ``docs/captions.md``."""

from rnnlab.tasks.captions.grammar import (
    CaptionParseError,
    Fragment,
    ObjectSpec,
    box_mask,
    captions_for,
    fragment_matches,
    ground_caption,
    match_assignment,
    parse_caption,
    semantic_match,
    tokenize,
)
from rnnlab.tasks.captions.scenes import (
    COLOURS,
    DIGITS,
    FILL_FRACTION,
    RELATIONS,
    SHAPES,
    Scene,
    SceneObject,
    SceneSet,
    digit_pool,
    generate_scenes,
    relations_between,
    scene_relations,
)
from rnnlab.tasks.captions.splits import (
    HELD_OUT_DIGITS,
    HELD_OUT_SHAPES,
    CaptionSplits,
    caption_splits,
    iid_split,
)

__all__ = [
    "COLOURS", "DIGITS", "FILL_FRACTION", "HELD_OUT_DIGITS", "HELD_OUT_SHAPES", "RELATIONS",
    "SHAPES", "CaptionParseError", "CaptionSplits", "Fragment", "ObjectSpec", "Scene",
    "SceneObject", "SceneSet", "box_mask", "caption_splits", "captions_for", "digit_pool",
    "fragment_matches", "generate_scenes", "ground_caption", "iid_split", "match_assignment",
    "parse_caption", "relations_between", "scene_relations", "semantic_match", "tokenize",
]
