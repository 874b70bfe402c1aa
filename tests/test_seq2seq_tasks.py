"""Sequence-to-sequence data, vocabulary and metrics against independent references."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
import torch

from rnnlab.tasks.seq2seq import (
    Vocabulary,
    add_end_position,
    bleu,
    bucketed,
    chrf,
    convex_hull,
    date_locale_split,
    date_locales,
    dates,
    exact_match,
    get_tokenizer,
    iterate_batches,
    make_batch,
    number_words,
    pad_ids,
    pointer_sort,
    signatures,
    token_accuracy,
    token_task,
)

pytest.importorskip("babel")
pytest.importorskip("num2words")
pytest.importorskip("sacrebleu")


# ---------------------------------------------------------------------------------- token tasks
@pytest.mark.parametrize("task", ["reverse", "copy", "sort"])
def test_token_tasks_match_python(task):
    p = token_task(task, 50, 3, 9, vocab_size=12, seed=4)
    for s, t in zip(p.sources, p.targets, strict=True):
        ref = {"reverse": s[::-1], "copy": list(s), "sort": sorted(s, key=int)}[task]
        assert t == ref
    assert 3 <= min(p.source_lengths()) and max(p.source_lengths()) <= 9
    assert set(range(3, 10)) == set(p.source_lengths())  # 50 draws cover 7 lengths


def test_token_task_seeded_and_checked():
    a, b = token_task("sort", 5, 2, 4, seed=1), token_task("sort", 5, 2, 4, seed=1)
    assert a.sources == b.sources
    assert token_task("sort", 5, 2, 4, seed=2).sources != a.sources
    with pytest.raises(ValueError, match="max_length"):
        token_task("copy", 5, 4, 2)
    with pytest.raises(ValueError, match="task must be one of"):
        token_task("shuffle", 5, 1, 2)


# ---------------------------------------------------------------------------------- vocabulary
def test_vocabulary_ids_unk_and_round_trip(tmp_path):
    corpus = [["b", "a", "a"], ["c", "a", "b"], ["d"]]
    v = Vocabulary.build(corpus, min_freq=2)
    # specials first, then by frequency: a (3), b (2); c, d dropped (count 1)
    assert v.tokens == ["<pad>", "<s>", "</s>", "<unk>", "a", "b"]
    assert v.encode(["a", "c"], add_bos=True) == [1, 4, 3, 2]
    assert v.decode([1, 4, 5, 2, 4]) == ["a", "b"]
    assert v.decode([4, 0, 5], strip=False) == ["a", "<pad>", "b"]
    w = Vocabulary.load(v.save(tmp_path / "v.json"))
    assert w == v and w.digest() == v.digest()
    assert w.encode(["b", "zz"]) == v.encode(["b", "zz"])
    # non-ASCII tokens survive the JSON round trip
    u = Vocabulary.build([list("März 日")])
    assert Vocabulary.load(u.save(tmp_path / "u.json")).tokens == u.tokens
    assert u.digest() != v.digest()


def test_closed_vocabulary_refuses_unknown_tokens():
    v = Vocabulary.build([["x", "y"]], unk=None)
    assert v.unk_id is None and len(v) == 5
    with pytest.raises(KeyError, match="'q' is not in the vocabulary"):
        v.encode(["x", "q"])
    with pytest.raises(TypeError, match="tokenise it first"):
        v.encode("xy")
    with pytest.raises(ValueError, match="special"):
        Vocabulary(["<pad>"])


def test_tokenizers_and_batches():
    c, w = get_tokenizer("char"), get_tokenizer("word")
    assert c.tokenize("7. März") == ["7", ".", " ", "M", "ä", "r", "z"]
    assert c.detokenize(c.tokenize("7. März")) == "7. März"
    assert w.detokenize(w.tokenize(" a  b c ")) == "a b c"
    ids, lengths = pad_ids([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="sequence 1 of the batch is empty"):
        pad_ids([[1], []], 0)
    v = Vocabulary.build([["a", "b", "c"]])
    b = make_batch([["a", "b"], ["c"]], [["b"], ["a", "c"]], v, v)
    assert v.decode(b.src[0]) == ["a", "b"] and b.src_lengths.tolist() == [2, 1]
    assert b.tgt.tolist() == [[*v.encode(["b"]), 0], v.encode(["a", "c"])]
    assert b.tgt[1, -1] == v.eos_id and b.tgt_lengths.tolist() == [2, 3]
    batches = iterate_batches([["a"]] * 5, [["b"]] * 5, v, v, 2, shuffle=True, seed=0)
    assert sorted(torch.cat([x.index for x in batches]).tolist()) == list(range(5))


# ---------------------------------------------------------------------------------- dates
def test_dates_parse_back_with_strptime():
    # English (US) patterns written out by hand for strptime: an independent parser.
    fmts = {"medium": "%b %d, %Y", "long": "%B %d, %Y", "full": "%A, %B %d, %Y"}
    for f, pattern in fmts.items():
        p = dates(30, ["en_US"], formats=[f], seed=3)
        for info, tgt in zip(p.info, p.targets, strict=True):
            parsed = dt.datetime.strptime(info["text"], pattern).date()
            assert parsed.isoformat() == "".join(tgt) == info["date"]


def test_dates_parse_back_with_babel_across_locales():
    from babel import Locale
    from babel.dates import parse_date

    locs = ["de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "en_GB", "de_CH"]
    p = dates(80, locs, formats=["short"], seed=5)
    for info in p.info:
        got = parse_date(info["text"], locale=info["locale"], format="short")
        want = dt.date.fromisoformat(info["date"])
        # two-digit years: babel puts them in its own century window, so compare modulo 100
        assert (got.year % 100, got.month, got.day) == (want.year % 100, want.month, want.day)
    # long format: the locale's own month name (CLDR data, not the pattern engine), the day and
    # the four-digit year all appear in the text
    p = dates(80, locs, formats=["long"], seed=6)
    for info in p.info:
        d = dt.date.fromisoformat(info["date"])
        month = Locale.parse(info["locale"]).months["format"]["wide"][d.month]
        assert month in info["text"] and str(d.year) in info["text"]
        assert str(d.day) in info["text"]


def test_held_out_locales_never_in_training():
    train, test = date_locale_split(300, 50, languages=["en", "de", "fr"], test_locales=8,
                                    seed=1)
    tr = {i["locale"] for i in train.info}
    te = {i["locale"] for i in test.info}
    assert tr.isdisjoint(te) and 1 <= len(te) <= 8 and len(tr) > 20
    assert all(loc.split("_")[0] in {"en", "de", "fr"} for loc in tr | te)
    assert len(date_locales()) > 1000  # CLDR ships ~1,100 locales
    with pytest.raises(ValueError, match="unknown CLDR locales"):
        dates(3, ["xx_YY"])


# ---------------------------------------------------------------------------------- numbers
_EN = {w: k for k, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_EN.update({w: 10 * k for k, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)})


def _parse_english(text: str) -> int:
    """A hand-written English number parser, independent of num2words."""
    total, part = 0, 0
    for w in text.replace(",", " ").replace("-", " ").split():
        if w == "and":
            continue
        if w == "hundred":
            part *= 100
        elif w == "thousand":
            total, part = total + part * 1000, 0
        else:
            part += _EN[w]
    return total + part


def test_number_words_to_digits():
    from num2words import num2words

    p = number_words(200, source="en", seed=2)
    for info, s, t in zip(p.info, p.sources, p.targets, strict=True):
        assert _parse_english("".join(s)) == int("".join(t)) == info["number"]
    for lang in ("de", "fr", "es", "it", "nl", "pt"):
        q = number_words(20, source=lang, seed=3)
        for s, t in zip(q.sources, q.targets, strict=True):
            assert num2words(int("".join(t)), lang=lang) == "".join(s)   # round trip


def test_number_words_between_languages_not_monotone():
    p = number_words(1, source="de", target="en", low=21, high=21)
    assert "".join(p.sources[0]) == "einundzwanzig" and "".join(p.targets[0]) == "twenty-one"
    with pytest.raises(ValueError, match="no language"):
        number_words(2, source="klingon")


def test_number_split_holds_numbers_out():
    from num2words import num2words

    from rnnlab.tasks.seq2seq.data import number_split

    train, test = number_split(300, 50, low=0, high=99, held_out=0.2, source="de",
                               target="en", seed=4)
    seen = {i["number"] for i in train.info}
    held = {i["number"] for i in test.info}
    assert not seen & held and held <= set(range(100)) and len(held) <= 20
    assert len(seen) > 60  # 300 draws from the 80 training numbers
    for i, s, t in zip(test.info, test.sources, test.targets, strict=True):
        assert "".join(s) == num2words(i["number"], lang="de")
        assert _parse_english("".join(t)) == i["number"]  # independent of num2words
    again = number_split(300, 50, low=0, high=99, held_out=0.2, source="de", target="en",
                         seed=4)
    assert again[1].sources == test.sources and again[0].targets == train.targets
    p = number_words(40, numbers=[7, 21], source="de", seed=1)
    assert {i["number"] for i in p.info} == {7, 21}
    with pytest.raises(ValueError, match="held_out"):
        number_split(5, 5, held_out=1.0)
    with pytest.raises(ValueError, match="numbers is empty"):
        number_words(3, numbers=[])


# ---------------------------------------------------------------------------------- pointers
def _monotone_chain_ccw(pts: np.ndarray) -> list[int]:
    """Andrew's monotone chain, counter-clockwise, as an independent hull reference."""
    order = sorted(range(len(pts)), key=lambda i: (pts[i, 0], pts[i, 1]))

    def cross(o, a, b):
        return (pts[a, 0] - pts[o, 0]) * (pts[b, 1] - pts[o, 1]) - \
            (pts[a, 1] - pts[o, 1]) * (pts[b, 0] - pts[o, 0])

    lower, upper = [], []
    for i in order:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], i) <= 0:
            lower.pop()
        lower.append(i)
    for i in reversed(order):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], i) <= 0:
            upper.pop()
        upper.append(i)
    hull = lower[:-1] + upper[:-1]
    k = hull.index(min(hull))
    return hull[k:] + hull[:k]


def test_convex_hull_against_monotone_chain():
    d = convex_hull(40, 5, 20, seed=0, dtype=torch.float64)
    for b, tgt in enumerate(d.target_lists()):
        pts = d.inputs[b, : int(d.lengths[b])].numpy()
        assert tgt == _monotone_chain_ccw(pts)
        assert tgt[0] == min(tgt)
        poly = pts[tgt]
        area = 0.5 * np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) -
                            np.roll(poly[:, 0], -1) * poly[:, 1])
        assert area > 0  # counter-clockwise
    assert (d.targets[d.targets >= 0] < d.lengths.max()).all()


def test_pointer_sort_is_argsort():
    d = pointer_sort(20, 2, 10, seed=1, dtype=torch.float64)
    for b, tgt in enumerate(d.target_lists()):
        x = d.inputs[b, : int(d.lengths[b]), 0].tolist()
        assert tgt == sorted(range(len(x)), key=x.__getitem__)
    assert (d.targets[:, :][torch.arange(d.targets.shape[1]) >= d.target_lengths[:, None]]
            == -1).all()


# ---------------------------------------------------------------------------------- metrics
def test_exact_match_and_token_accuracy_by_hand():
    hyps = [["a", "b"], ["a", "c", "d"], ["x"]]
    refs = [["a", "b"], ["a", "b", "d"], ["x", "y"]]
    assert exact_match(hyps, refs) == pytest.approx(1 / 3)
    assert token_accuracy(hyps, refs) == pytest.approx(5 / 7)


def test_bleu_and_chrf_hand_computed():
    # 1..4-gram precisions 4/5, 3/4, 2/3, 1/2 and BP = 1: BLEU = 100 * (0.2) ** (1/4)
    assert bleu([list("abcde")], [list("abcdf")]) == pytest.approx(100 * 0.2 ** 0.25, abs=1e-9)
    # chrF("ab" | "ac"): character 1-grams P = R = 1/2, 2-grams 0; sacrebleu averages the
    # orders that occur (n = 1, 2): P = R = 1/4, F_2 = 1/4
    assert chrf(["ab"], ["ac"]) == pytest.approx(25.0, abs=1e-9)
    assert bleu(["a b c d"], ["a b c d"]) == pytest.approx(100.0)
    assert chrf([["x", "y"]], [["q"]]) == 0.0


def test_bleu_chrf_sacrebleu_documented_example():
    # sacrebleu's README example, scored through our wrappers one reference stream at a time
    # matches its two-reference numbers only through sacrebleu itself; here one stream:
    import sacrebleu

    refs = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    sys = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    assert sacrebleu.corpus_bleu(sys, refs).score == pytest.approx(48.53, abs=5e-3)
    assert sacrebleu.corpus_chrf(sys, refs).score == pytest.approx(59.73, abs=5e-3)
    assert bleu(sys, refs[0]) == pytest.approx(sacrebleu.corpus_bleu(sys, refs[:1]).score)
    sig = signatures()
    assert "tok:none" in sig["bleu"] and "nc:6" in sig["chrf"]


def test_bucketed_by_source_length():
    hyps = [["a"], ["b"], ["a", "b"], ["a", "c"]]
    refs = [["a"], ["a"], ["a", "b"], ["a", "b"]]
    rows = bucketed(hyps, refs, [1, 2, 6, 7], buckets=5, metrics=("exact_match",
                                                                  "token_accuracy"))
    assert [(r["lo"], r["hi"], r["n"]) for r in rows] == [(1, 5, 2), (6, 10, 2)]
    assert rows[0]["exact_match"] == 0.5 and rows[1]["token_accuracy"] == 0.75
    assert math.isfinite(bucketed(hyps, refs, [1, 2, 6, 7], buckets=[(1, 7)])[0]["bleu"])
    with pytest.raises(ValueError, match="unknown metrics"):
        bucketed(hyps, refs, [1, 2, 3, 4], metrics=("rouge",))


def test_end_position():
    d = convex_hull(3, 4, 6, seed=2)
    e = add_end_position(d)
    assert e.inputs.shape == (3, d.inputs.shape[1] + 1, 3)
    assert (e.inputs[:, 0] == torch.tensor([0.0, 0.0, 1.0])).all()
    assert torch.equal(e.inputs[:, 1:, :2], d.inputs) and (e.inputs[:, 1:, 2] == 0).all()
    for a, b in zip(d.target_lists(), e.target_lists(), strict=True):
        assert b == [i + 1 for i in a] + [0]
