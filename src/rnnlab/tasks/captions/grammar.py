"""The caption grammar: captions generated from a scene graph with synonyms and varied order,
and the parser that maps a sentence back to a scene-graph fragment for exact semantic accuracy.

Grammar (``|`` alternatives, ``[]`` optional)::

    NP       := ARTICLE [SIZE] [COLOUR] NOUN        (colour always given for shapes)
    NOUN     := SHAPE-WORD | ("digit" | "number") DIGIT
    S        := NP | "there is" NP | NP "and" NP
              | ["there is"] NP ["is"] REL NP | REL NP "there is" NP

A fragment matches a scene when its objects can be assigned to distinct scene objects whose
attributes agree with every attribute the fragment names and whose relations include every
relation it states (``semantic_match``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_positive_int
from rnnlab.tasks.captions.scenes import COLOURS, DIGITS, Scene

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disk", "ball"),
    "square": ("square", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
}
DIGIT_WORDS: tuple[str, ...] = ("digit", "number")
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"),
                                          "large": ("large", "big")}
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "next to": ("next to", "beside", "near"),
    "bigger than": ("bigger than", "larger than"),
    "smaller than": ("smaller than",),
}
ARTICLES = ("a", "an", "the")
_TEMPLATES = ("plain", "there", "is", "front", "and")


class CaptionParseError(ValueError):
    """A sentence outside the caption grammar (the message names the offending word)."""


@dataclass(frozen=True)
class ObjectSpec:
    """An object as a caption describes it; ``None`` leaves an attribute open."""

    noun: str
    colour: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class Fragment:
    """What one caption states: objects and relation triples ``(i, relation, j)`` among them."""

    objects: tuple[ObjectSpec, ...]
    relations: tuple[tuple[int, str, int], ...] = ()
    # Token span [start, end) of each object's noun phrase in ``tokenize(sentence)``.
    spans: tuple[tuple[int, int], ...] = field(default=(), compare=False)


def _choice(g: torch.Generator, seq: Sequence):
    return seq[int(torch.randint(len(seq), (), generator=g))]


def _phrase(g: torch.Generator, obj, *, colour: bool, size: bool) -> str:
    words = []
    if size:
        words.append(_choice(g, SIZE_WORDS[obj.size]))
    if colour:
        words.append(obj.colour)
    if obj.noun in SHAPE_WORDS:
        words.append(_choice(g, SHAPE_WORDS[obj.noun]))
    else:
        words += [_choice(g, DIGIT_WORDS), obj.noun]
    article = _choice(g, ("a", "the"))
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return " ".join([article, *words])


def _sentence(g: torch.Generator, scene: Scene) -> str:
    objs = scene.objects
    digits = scene.kind == "digits"

    def np_(i: int) -> str:
        return _phrase(g, objs[i], colour=(not digits) or bool(_choice(g, (0, 1))),
                       size=bool(_choice(g, (0, 1))))

    triples = sorted(scene.relations)
    template = _choice(g, _TEMPLATES)
    if len(objs) == 1 or not triples:
        i = int(torch.randint(len(objs), (), generator=g))
        if len(objs) > 1 and template == "and":
            j = _choice(g, [k for k in range(len(objs)) if k != i])
            return f"{np_(i)} and {np_(j)}"
        return f"there is {np_(i)}" if template in ("there", "front") else np_(i)
    i, rel, j = _choice(g, triples)
    word = _choice(g, RELATION_WORDS[rel])
    if template == "plain":
        return f"{np_(i)} {word} {np_(j)}"
    if template == "there":
        return f"there is {np_(i)} {word} {np_(j)}"
    if template == "is":
        return f"{np_(i)} is {word} {np_(j)}"
    if template == "front":
        b = np_(j)
        return f"{word} {b} there is {np_(i)}"
    return f"{np_(i)} and {np_(j)}"


def captions_for(scene: Scene, count: int = 5, *, seed: object = None,
                 generator: torch.Generator | None = None) -> tuple[str, ...]:
    """``count`` distinct captions of ``scene`` (fewer only if the grammar has no more)."""
    count = check_positive_int("count", count)
    g = make_generator(seed, generator)
    out: list[str] = []
    for _ in range(50 * count):
        s = _sentence(g, scene)
        if s not in out:
            out.append(s)
            if len(out) == count:
                break
    return tuple(out)


_COLOUR_SET = frozenset(COLOURS)
_SHAPE_LOOKUP = {w: shape for shape, ws in SHAPE_WORDS.items() for w in ws}
_SIZE_LOOKUP = {w: size for size, ws in SIZE_WORDS.items() for w in ws}
_REL_PHRASES = sorted(((tuple(p.split()), rel) for rel, ps in RELATION_WORDS.items() for p in ps),
                      key=lambda t: -len(t[0]))


def _noun_phrase(tokens: list[str], k: int) -> tuple[ObjectSpec, int]:
    start = k
    if k < len(tokens) and tokens[k] in ARTICLES:
        k += 1
    size = colour = None
    if k < len(tokens) and tokens[k] in _SIZE_LOOKUP:
        size = _SIZE_LOOKUP[tokens[k]]
        k += 1
    if k < len(tokens) and tokens[k] in _COLOUR_SET:
        colour = tokens[k]
        k += 1
    if k < len(tokens) and tokens[k] in _SHAPE_LOOKUP:
        return ObjectSpec(_SHAPE_LOOKUP[tokens[k]], colour, size), k + 1
    if k + 1 < len(tokens) and tokens[k] in DIGIT_WORDS and tokens[k + 1] in DIGITS:
        return ObjectSpec(tokens[k + 1], colour, size), k + 2
    word = tokens[k] if k < len(tokens) else "<end of sentence>"
    raise CaptionParseError(f"expected a noun phrase at word {k + 1} ({word!r}) after "
                            f"{' '.join(tokens[start:k])!r}")


def tokenize(sentence: str) -> list[str]:
    """Lower-case words, punctuation dropped: the tokens the parser and the groundings use."""
    if not isinstance(sentence, str):
        raise TypeError(f"sentence must be a str, got {type(sentence).__name__}")
    return re.sub(r"[.,;!?]", " ", sentence.lower()).split()


def parse_caption(sentence: str) -> Fragment:
    """The scene-graph fragment a sentence of the grammar states, else :class:`CaptionParseError`
    naming the offending word."""
    tokens = tokenize(sentence)
    if not tokens:
        raise CaptionParseError("empty caption")
    units: list[tuple[str, object]] = []  # ("np", spec) | ("rel", name) | ("word", token)
    spans: list[tuple[int, int]] = []
    k = 0
    while k < len(tokens):
        for phrase, rel in _REL_PHRASES:
            if tuple(tokens[k:k + len(phrase)]) == phrase:
                units.append(("rel", rel))
                k += len(phrase)
                break
        else:
            if tokens[k] in ("there", "is", "and"):
                units.append(("word", tokens[k]))
                k += 1
            else:
                start = k
                spec, k = _noun_phrase(tokens, k)
                units.append(("np", spec))
                spans.append((start, k))
    kinds = [u if t == "word" else t for t, u in units]
    values = [u for _, u in units]
    # Strip the fillers "there is" at the start and "is" before a relation.
    if kinds[:2] == ["there", "is"]:
        kinds, values = kinds[2:], values[2:]
    if kinds == ["np"]:
        return Fragment((values[0],), (), tuple(spans))
    if kinds == ["np", "and", "np"]:
        return Fragment((values[0], values[2]), (), tuple(spans))
    if kinds in (["np", "rel", "np"], ["np", "is", "rel", "np"]):
        return Fragment((values[0], values[-1]), ((0, values[-2], 1),), tuple(spans))
    if kinds == ["rel", "np", "there", "is", "np"]:
        return Fragment((values[4], values[1]), ((0, values[0], 1),), (spans[1], spans[0]))
    raise CaptionParseError(f"sentence structure {kinds} is not in the grammar: {sentence!r}")


def _agrees(spec: ObjectSpec, obj) -> bool:
    return (spec.noun == obj.noun and spec.colour in (None, obj.colour)
            and spec.size in (None, obj.size))


def match_assignment(fragment: Fragment, scene: Scene) -> tuple[int, ...] | None:
    """The first (lexicographic) assignment of distinct scene objects to the fragment's objects
    that realises it, else ``None``."""
    n = len(scene.objects)
    for assign in itertools.permutations(range(n), len(fragment.objects)):
        if all(_agrees(s, scene.objects[a]) for s, a in zip(fragment.objects, assign,
                                                             strict=True)) and \
                all((assign[i], r, assign[j]) in scene.relations
                    for i, r, j in fragment.relations):
            return assign
    return None


def fragment_matches(fragment: Fragment, scene: Scene) -> bool:
    """Whether distinct scene objects realise the fragment (module docstring)."""
    return match_assignment(fragment, scene) is not None


def ground_caption(sentence: str, scene: Scene) -> list[int | None]:
    """For each token of ``tokenize(sentence)``, the index of the scene object whose noun phrase
    it belongs to (``None`` for relation words and fillers): the ground truth for attention
    correctness. Raises :class:`CaptionParseError` if the sentence is outside the grammar and
    ``ValueError`` if it does not match the scene."""
    fragment = parse_caption(sentence)
    assign = match_assignment(fragment, scene)
    if assign is None:
        raise ValueError(f"caption does not match the scene: {sentence!r}")
    out: list[int | None] = [None] * len(tokenize(sentence))
    for (start, end), obj in zip(fragment.spans, assign, strict=True):
        out[start:end] = [obj] * (end - start)
    return out


def box_mask(box: Sequence[int], size: int, grid: int) -> torch.Tensor:
    """``(grid, grid)`` float64 fraction of each cell of a ``grid`` x ``grid`` partition of the
    ``size`` x ``size`` canvas covered by ``box`` (an attention map's mass inside the box is
    ``(attention * box_mask).sum()`` when the grid cells are the attention regions)."""
    size = check_positive_int("size", size)
    grid = check_positive_int("grid", grid)
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
        raise ValueError(f"box {tuple(box)} must lie inside the {size}x{size} canvas")
    edges = torch.arange(grid + 1, dtype=torch.float64) * (size / grid)

    def overlap(lo: int, hi: int) -> torch.Tensor:
        return (torch.minimum(edges[1:], torch.tensor(float(hi)))
                - torch.maximum(edges[:-1], torch.tensor(float(lo)))).clamp(min=0) / (size / grid)

    return overlap(y0, y1)[:, None] * overlap(x0, x1)[None, :]


def semantic_match(sentence: str, scene: Scene) -> bool:
    """Exact semantic accuracy of one caption: it parses and its fragment matches the scene
    (a sentence outside the grammar scores ``False``)."""
    try:
        fragment = parse_caption(sentence)
    except CaptionParseError:
        return False
    return fragment_matches(fragment, scene)
