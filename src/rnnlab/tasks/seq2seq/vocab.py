"""Vocabularies, tokenisers and padded batches for sequence-to-sequence tasks.

A :class:`Vocabulary` maps tokens to ids. The special tokens come first, in the order
``pad, bos, eos, unk`` (ids 0, 1, 2, 3 when all four are present), then the corpus tokens by
falling frequency, ties broken alphabetically, so the same corpus always gives the same ids.
A token outside the vocabulary maps to ``unk``; a vocabulary built without ``unk`` raises a
``KeyError`` naming the token instead (the user asked for a closed vocabulary).

Batches are ``(batch, time)`` id tensors padded with the ``pad`` id, and a ``(batch,)`` tensor
of true lengths, the layout every model in :mod:`rnnlab.seq2seq` takes.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_bool, check_int, check_positive_int

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
_FORMAT = "rnnlab.vocabulary/1"


class Vocabulary:
    """A token <-> id map with special tokens.

    ``tokens``: the ordinary tokens, in id order after the specials. ``pad``, ``bos``, ``eos``,
    ``unk``: the special tokens' spellings; ``unk=None`` makes a closed vocabulary (encoding
    an unknown token raises). ``pad``, ``bos`` and ``eos`` are required: batching and decoding
    rely on them.

    Example::

        >>> v = Vocabulary.build([["a", "b"], ["a"]])
        >>> v.encode(["a", "z"])
        [4, 3, 2]
        >>> v.decode([1, 4, 5, 2, 4])
        ['a', 'b']
    """

    def __init__(self, tokens: Iterable[str], *, pad: str = PAD, bos: str = BOS, eos: str = EOS,
                 unk: str | None = UNK) -> None:
        specials = [pad, bos, eos] + ([] if unk is None else [unk])
        for name, s in zip(("pad", "bos", "eos", "unk"), specials, strict=False):
            if not isinstance(s, str) or not s:
                raise ValueError(f"the {name} token must be a non-empty string, got {s!r}")
        if len(set(specials)) != len(specials):
            raise ValueError(f"the special tokens must differ, got {specials}")
        self._itos: list[str] = list(specials)
        for t in tokens:
            if not isinstance(t, str) or not t:
                raise ValueError(f"every token must be a non-empty string, got {t!r}")
            if t in specials:
                raise ValueError(f"token {t!r} is one of the special tokens {specials}")
            self._itos.append(t)
        self._stoi = {t: i for i, t in enumerate(self._itos)}
        if len(self._stoi) != len(self._itos):
            dup = [t for t, c in Counter(self._itos).items() if c > 1]
            raise ValueError(f"duplicate tokens in the vocabulary: {dup[:10]}")
        self.pad, self.bos, self.eos, self.unk = pad, bos, eos, unk

    # -------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, corpus: Iterable[Sequence[str]], *, min_freq: int = 1,
              max_size: int | None = None, **specials: str | None) -> Vocabulary:
        """The vocabulary of a tokenised corpus (an iterable of token sequences): every token
        seen at least ``min_freq`` times, most frequent first (ties alphabetically), at most
        ``max_size`` ordinary tokens. ``specials``: ``pad=``, ``bos=``, ``eos=``, ``unk=``."""
        min_freq = check_positive_int("min_freq", min_freq)
        if max_size is not None:
            max_size = check_int("max_size", max_size, low=0)
        counts: Counter[str] = Counter()
        for seq in corpus:
            if isinstance(seq, str):
                raise TypeError("corpus must hold token sequences (lists of strings), got a "
                                "string: tokenise it first (CharTokenizer / WordTokenizer)")
            counts.update(seq)
        skip = {specials.get("pad", PAD), specials.get("bos", BOS), specials.get("eos", EOS),
                specials.get("unk", UNK)}
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in skip),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max_size]
        return cls(kept, **specials)

    # -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, unk={self.unk!r})"

    @property
    def pad_id(self) -> int:
        return self._stoi[self.pad]

    @property
    def bos_id(self) -> int:
        return self._stoi[self.bos]

    @property
    def eos_id(self) -> int:
        return self._stoi[self.eos]

    @property
    def unk_id(self) -> int | None:
        return None if self.unk is None else self._stoi[self.unk]

    @property
    def specials(self) -> list[str]:
        return [t for t in (self.pad, self.bos, self.eos, self.unk) if t is not None]

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order, specials first."""
        return list(self._itos)

    def index(self, token: str) -> int:
        """The id of ``token``: ``unk``'s id for an unknown token, or a ``KeyError`` naming the
        token when the vocabulary has no ``unk``."""
        i = self._stoi.get(token)
        if i is not None:
            return i
        if self.unk is None:
            raise KeyError(f"token {token!r} is not in the vocabulary and the vocabulary has no "
                           "unk token (build it with unk='<unk>' to map unknown tokens)")
        return self._stoi[self.unk]

    def token(self, i: int) -> str:
        i = check_int("token id", i)
        if not 0 <= i < len(self._itos):
            raise IndexError(f"token id {i} is outside the vocabulary of size {len(self)}")
        return self._itos[i]

    def encode(self, tokens: Sequence[str], *, add_bos: bool = False,
               add_eos: bool = True) -> list[int]:
        """Ids of ``tokens``, with ``bos`` in front and ``eos`` at the end on request."""
        if isinstance(tokens, str):
            raise TypeError("encode takes a token sequence, got a string: tokenise it first")
        ids = [self.index(t) for t in tokens]
        return ([self.bos_id] if check_bool("add_bos", add_bos) else []) + ids + (
            [self.eos_id] if check_bool("add_eos", add_eos) else [])

    def decode(self, ids: Iterable[int] | torch.Tensor, *, strip: bool = True) -> list[str]:
        """Tokens of ``ids``. With ``strip`` (default) a leading ``bos`` is dropped, decoding
        stops at the first ``eos`` and ``pad`` ids are skipped."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one sequence of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        out: list[str] = []
        for k, i in enumerate(ids):
            if strip:
                if i == self.eos_id:
                    break
                if i == self.pad_id or (k == 0 and i == self.bos_id):
                    continue
            out.append(self.token(i))
        return out

    def digest(self) -> str:
        """SHA-256 of the token list and specials: two vocabularies with the same digest give
        the same ids (used to refuse a checkpoint trained with a different vocabulary)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    # -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        n = len(self.specials)
        return {"format": _FORMAT, "pad": self.pad, "bos": self.bos, "eos": self.eos,
                "unk": self.unk, "tokens": self._itos[n:]}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a saved vocabulary (expected format {_FORMAT!r})")
        return cls(data["tokens"], pad=data["pad"], bos=data["bos"], eos=data["eos"],
                   unk=data["unk"])

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON (UTF-8, non-ASCII kept readable)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n",
                        encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# -----------------------------------------------------------------------------------------------
class CharTokenizer:
    """Characters as tokens: ``"7. März" -> ["7", ".", " ", "M", "ä", "r", "z"]``."""

    name = "char"

    def tokenize(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        return list(text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)


class WordTokenizer:
    """Whitespace-separated words as tokens; detokenising joins them with one space."""

    name = "word"

    def tokenize(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        return text.split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)


TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer}


def get_tokenizer(name: str) -> CharTokenizer | WordTokenizer:
    """``"char"`` or ``"word"``."""
    if name not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {sorted(TOKENIZERS)}, got {name!r}")
    return TOKENIZERS[name]()


# -----------------------------------------------------------------------------------------------
def pad_ids(sequences: Sequence[Sequence[int]], pad_id: int, *,
            device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id sequences to a ``(batch, time)`` long tensor; returns ``(ids, lengths)``.
    Empty sequences are refused (a model cannot encode nothing)."""
    if len(sequences) == 0:
        raise ValueError("cannot pad an empty batch")
    lengths = [len(s) for s in sequences]
    if min(lengths) == 0:
        raise ValueError(f"sequence {lengths.index(0)} of the batch is empty")
    out = torch.full((len(sequences), max(lengths)), check_int("pad_id", pad_id),
                     dtype=torch.long)
    for b, s in enumerate(sequences):
        out[b, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out.to(device), torch.tensor(lengths, dtype=torch.long, device=device)


@dataclass
class Batch:
    """One padded batch in the layout of :mod:`rnnlab.seq2seq` (``docs/seq2seq.md``):
    ``src`` ``(B, S)`` source ids (no ``bos``/``eos``), ``tgt`` ``(B, T)`` the target ids
    followed by ``eos`` (the model puts ``bos`` in front itself), both padded with ``pad``;
    ``src_lengths``, ``tgt_lengths`` ``(B,)`` (the latter counting ``eos``); ``index``: the
    examples' positions in the data set."""

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt: torch.Tensor
    tgt_lengths: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in (self.src, self.src_lengths, self.tgt,
                                              self.tgt_lengths, self.index)))


def make_batch(sources: Sequence[Sequence[str]], targets: Sequence[Sequence[str]],
               src_vocab: Vocabulary, tgt_vocab: Vocabulary, *,
               index: Sequence[int] | None = None) -> Batch:
    """Encode and pad token sequences into a :class:`Batch` (see there for the layout)."""
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    src = [src_vocab.encode(s, add_eos=False) for s in sources]
    tgt = [tgt_vocab.encode(t) for t in targets]
    s, sl = pad_ids(src, src_vocab.pad_id)
    t, tl = pad_ids(tgt, tgt_vocab.pad_id)
    idx = torch.arange(len(src)) if index is None else torch.as_tensor(list(index))
    return Batch(s, sl, t, tl, idx)


def iterate_batches(sources: Sequence[Sequence[str]], targets: Sequence[Sequence[str]],
                    src_vocab: Vocabulary, tgt_vocab: Vocabulary, batch_size: int, *,
                    shuffle: bool = False, seed: int | None = None,
                    generator: torch.Generator | None = None) -> list[Batch]:
    """All batches of a data set, in order or shuffled (seeded)."""
    batch_size = check_positive_int("batch_size", batch_size)
    n = len(sources)
    if n == 0:
        raise ValueError("the data set is empty")
    order = (torch.randperm(n, generator=make_generator(seed, generator)).tolist()
             if check_bool("shuffle", shuffle) else list(range(n)))
    out = []
    for k in range(0, n, batch_size):
        idx = order[k:k + batch_size]
        out.append(make_batch([sources[i] for i in idx], [targets[i] for i in idx], src_vocab,
                              tgt_vocab, index=idx))
    return out
