"""Caption metrics: BLEU and CIDEr-D by hand and against sacrebleu, semantic accuracy, retrieval
recall against a brute-force sort, attention correctness on hand-made maps."""

import math
import random

import pytest
import torch

from rnnlab.tasks.captions import COLOURS, SceneObject, generate_scenes
from rnnlab.tasks.captions.metrics import (
    attention_correctness,
    bleu_scores,
    cider_d,
    retrieval_recall,
    semantic_accuracy,
)
from rnnlab.tasks.captions.scenes import Scene, scene_relations

# Pure-Python float64 sums of a handful of terms: 1e-12 is far above their rounding error.
TOL = 1e-12


def test_bleu_by_hand():
    cands = ["a b a c", "x y"]
    refs = [["a b c d e", "a a d"], ["x y z w", "x y z w v"]]
    # Image 1: lengths 5 and 3 tie at distance 1, the shorter (3) counts; image 2: 4.
    # p1 = 6/6, p2 = (1 + 1)/(3 + 1), p3 = 0/2; c = 6, r = 7, BP = exp(1 - 7/6).
    bp = math.exp(-1 / 6)
    s = bleu_scores(cands, refs)
    assert s["bleu1"] == pytest.approx(bp, abs=TOL)
    assert s["bleu2"] == pytest.approx(bp * math.sqrt(0.5), abs=TOL)
    assert s["bleu3"] == 0.0 and s["bleu4"] == 0.0


def _random_corpus(rng, n, n_refs):
    vocab = list("abc")  # small, so that 4-grams match too

    def sent():
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 12)))
    return [sent() for _ in range(n)], [[sent() for _ in range(n_refs)] for _ in range(n)]


@pytest.mark.parametrize("n_refs", [1, 3])
def test_bleu_matches_sacrebleu(n_refs):
    sacrebleu = pytest.importorskip("sacrebleu.metrics")
    cands, refs = _random_corpus(random.Random(n_refs), 30, n_refs)
    ours = bleu_scores(cands, refs)
    for n in range(1, 5):
        m = sacrebleu.BLEU(tokenize="none", smooth_method="none", max_ngram_order=n)
        theirs = m.corpus_score(cands, [list(r) for r in zip(*refs, strict=True)]).score / 100
        # Both sum the same integer counts; only the final exp/log differ in rounding.
        assert ours[f"bleu{n}"] == pytest.approx(theirs, rel=1e-9, abs=1e-12)
        assert theirs > 0.01  # the comparison is not between zeros


def test_cider_by_hand():
    refs = [["a b", "a c"], ["a d"]]
    # df: a 2 (idf 0), b c d 1 (idf log 2); every bigram of the refs df 1.
    # Image 1 "a b": ref "a b" cosine 1 at n = 1, 2 (n = 3, 4 empty), ref "a c" 0.
    # Image 2 "d d d a": unigram clipped dot min(3L, L) L / (3L * L) = 1/3, its bigrams are
    # unseen (df taken as 1), hence orthogonal to the reference's; length penalty
    # exp(-(4 - 2)^2 / 72).
    s1 = 10 * (2 / 4) / 2
    s2 = 10 * math.exp(-4 / 72) * (1 / 3) / 4
    corpus, per = cider_d(["a b", "d d d a"], refs)
    assert per == pytest.approx([s1, s2], abs=TOL)
    assert corpus == pytest.approx((s1 + s2) / 2, abs=TOL)
    # An unseen word weighs log 2 (df taken as 1): "a b zz" against "a b" has cosine 1/sqrt(2)
    # at n = 1 and 2, 0 at n = 3 (the reference has no trigram); penalty exp(-1/72).
    s3 = 10 * math.exp(-1 / 72) * (2 / math.sqrt(2)) / 4 / 2
    assert cider_d(["a b zz", "d d d a"], refs)[1][0] == pytest.approx(s3, abs=TOL)


def _shape_refs(n=12):
    return [list(s.captions) for s in generate_scenes(n, seed=3).scenes]


def test_cider_identical_candidate_scores_highest():
    refs = _shape_refs()
    target = refs[0][0]
    same = [[target] * 5, *refs[1:]]
    best = cider_d([target] + [r[0] for r in refs[1:]], same)[1][0]
    # Every clipped cosine is <= 1, so 10 is the ceiling, reached here (target has >= 4 words).
    assert best == pytest.approx(10.0, abs=1e-9)
    for other in [r[1] for r in refs[1:]] + [target + " " + target.split()[-1]]:
        score = cider_d([other] + [r[0] for r in refs[1:]], same)[1][0]
        assert score < best - 0.1


def test_cider_clipping_and_length_penalty():
    refs = _shape_refs()
    ref = refs[0][0]
    last = ref.split()[-1]
    one = [[ref], *refs[1:]]
    others = [r[0] for r in refs[1:]]
    base = cider_d([ref, *others], one, sigma=1e9)[1][0]
    # Repeating a word: without clipping its unigram weight would grow; with clipping and no
    # length penalty (sigma huge) the score still falls.
    repeated = cider_d([ref + (" " + last) * 6, *others], one, sigma=1e9)[1][0]
    assert repeated < base - 0.5
    # Three extra words: sigma only enters the Gaussian factor exp(-(3)^2 / (2 sigma^2)), so the
    # ratio of the scores with sigma = 6 and with no penalty is exp(-9 / 72).
    long = [ref + " " + " ".join(ref.split()[:3]), *others]
    penalised = cider_d(long, one)[1][0]
    free = cider_d(long, one, sigma=1e9)[1][0]
    assert penalised == pytest.approx(free * math.exp(-9 / 72), rel=1e-12)
    assert penalised < cider_d([ref, *others], one)[1][0] - 0.5


def test_semantic_accuracy():
    scenes = generate_scenes(6, seed=1).scenes
    good = [s.captions[0] for s in scenes]
    assert semantic_accuracy(good, scenes) == {"accuracy": 1.0, "unparsable": 0.0,
                                               "wrong": 0.0}
    colours = {o.colour for o in scenes[1].objects}
    absent = next(c for c in COLOURS if c not in colours)
    noun = scenes[1].objects[0].noun
    mixed = [good[0], f"a {absent} {noun}", "colourless green ideas sleep", *good[3:]]
    out = semantic_accuracy(mixed, scenes)
    assert out == pytest.approx({"accuracy": 4 / 6, "unparsable": 1 / 6, "wrong": 1 / 6})


def _brute_rank(row, correct):
    # Sort by score descending, ties broken against the model (wrong items first).
    order = sorted(range(len(row)), key=lambda k: (-row[k], correct[k]))
    return next(p for p, k in enumerate(order) if correct[k])


def test_retrieval_recall_brute_force():
    g = torch.Generator().manual_seed(0)
    n_img = 9
    image_of = [i for i in range(n_img) for _ in range(1 + i % 3)]
    scores = torch.randint(0, 4, (n_img, len(image_of)), generator=g).double()  # many ties
    out = retrieval_recall(scores, image_of, ks=(1, 2, 5))
    s = scores.tolist()
    for k in (1, 2, 5):
        i2s = sum(_brute_rank(s[i], [image_of[j] == i for j in range(len(image_of))]) < k
                  for i in range(n_img)) / n_img
        col = [[s[i][j] for i in range(n_img)] for j in range(len(image_of))]
        s2i = sum(_brute_rank(col[j], [image_of[j] == i for i in range(n_img)]) < k
                  for j in range(len(image_of))) / len(image_of)
        assert out[f"i2s@{k}"] == pytest.approx(i2s, abs=TOL)
        assert out[f"s2i@{k}"] == pytest.approx(s2i, abs=TOL)
    constant = retrieval_recall(torch.zeros(3, 3), [0, 1, 2], ks=(1,))
    assert constant == {"i2s@1": 0.0, "s2i@1": 0.0}
    perfect = retrieval_recall(torch.eye(3), [0, 1, 2], ks=(1,))
    assert perfect == {"i2s@1": 1.0, "s2i@1": 1.0}


def test_retrieval_recall_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        retrieval_recall(torch.tensor([[float("nan")]]), [0])
    with pytest.raises(ValueError, match="entries"):
        retrieval_recall(torch.zeros(2, 3), [0, 1])
    with pytest.raises(ValueError, match="at least one sentence"):
        retrieval_recall(torch.zeros(2, 2), [0, 0])


def _two_object_scene():
    objs = (SceneObject("circle", "red", "small", (0, 0, 16, 16)),
            SceneObject("square", "blue", "large", (40, 16, 64, 40)))
    return Scene("shapes", 64, objs, scene_relations(objs, 64))


def test_attention_correctness_by_hand():
    scene = _two_object_scene()
    sentence = "a red circle left of a blue square"
    a = torch.full((8, 4, 4), 1 / 16)  # uniform for the relation words
    for t in (0, 1, 2):
        a[t] = 0
        a[t, 0, 0] = 1  # cell (0, 0) is the circle's box exactly
    a[5] = 0
    a[5, 1, 3] = 1  # inside the square's box: coverage 1
    a[6] = 0
    a[6, 2, 2] = 1  # square covers half the rows and half the columns of this cell: 0.25
    # Square's mask: rows (1, 0.5), columns (0.5, 1): total 2.25 of 16 cells.
    sq = 2.25 / 16
    ac, chance = attention_correctness(a, sentence, scene, size=64)
    assert ac == pytest.approx((4 + 0.25 + sq) / 6, abs=TOL)
    assert chance == pytest.approx((3 / 16 + 3 * sq) / 6, abs=TOL)
    ac, chance = attention_correctness(a, sentence, scene, size=64, nouns_only=True)
    assert ac == pytest.approx((1 + sq) / 2, abs=TOL)
    assert chance == pytest.approx((1 / 16 + sq) / 2, abs=TOL)
    with pytest.raises(ValueError, match="sum to one"):
        attention_correctness(a * 2, sentence, scene, size=64)
    with pytest.raises(ValueError, match="rows"):
        attention_correctness(a[:5], sentence, scene, size=64)


def test_bad_input():
    with pytest.raises(ValueError, match="candidates"):
        bleu_scores(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="non-empty"):
        cider_d(["a"], [[]])
    with pytest.raises(ValueError, match="sigma"):
        cider_d(["a"], [["a"]], sigma=0)
