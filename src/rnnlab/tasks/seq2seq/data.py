"""Sequence-to-sequence data sets with known answers, generated offline and seeded.

Every generator returns :class:`Pairs`: tokenised sources and targets and one ``info`` dict
per example (the task's parameters for that example: its locale, its number, ...). Lengths are
controlled so that a model trained on lengths up to L can be tested beyond L.

* :func:`token_task` -- reversal, copy and sorting of random token sequences (Sutskever et al.
  2014 use reversal as the case where reversing the source makes the problem trivial).
* :func:`dates` -- date-format normalisation: a date written by CLDR's patterns in one of
  ~1,100 locales (``babel.dates.format_date``), target ISO 8601 ``YYYY-MM-DD``; a held-out
  locale split (:func:`date_locale_split`).
* :func:`number_words` -- number words in one language to digits, or to the words of another
  language (``num2words``); German/Dutch say the units before the tens ("einundzwanzig"), so
  the alignment with English or digits is not monotone; :func:`number_split` holds numbers out
  of training (a test of composition: "dreiundfünfzig" after "drei", "fünfzig" and their
  other combinations).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_int, check_number, check_positive_int
from rnnlab.tasks.seq2seq.vocab import get_tokenizer

TOKEN_TASKS = ("reverse", "copy", "sort")
DATE_FORMATS = ("short", "medium", "long", "full")
NUMBER_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt")


@dataclass
class Pairs:
    """Tokenised pairs: ``sources[i]`` maps to ``targets[i]``; ``info[i]`` describes example i."""

    sources: list[list[str]]
    targets: list[list[str]]
    info: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.targets):
            raise ValueError(f"{len(self.sources)} sources but {len(self.targets)} targets")
        if not self.info:
            self.info = [{} for _ in self.sources]

    def __len__(self) -> int:
        return len(self.sources)

    def __add__(self, other: Pairs) -> Pairs:
        return Pairs(self.sources + other.sources, self.targets + other.targets,
                     self.info + other.info)

    def source_lengths(self) -> list[int]:
        return [len(s) for s in self.sources]


def _lengths(min_length: int, max_length: int) -> tuple[int, int]:
    lo = check_positive_int("min_length", min_length)
    hi = check_positive_int("max_length", max_length)
    if hi < lo:
        raise ValueError(f"max_length ({hi}) must be >= min_length ({lo})")
    return lo, hi


# -----------------------------------------------------------------------------------------------
def token_task(task: str, n: int, min_length: int, max_length: int, *, vocab_size: int = 10,
               seed: int | None = None, generator: torch.Generator | None = None) -> Pairs:
    """``n`` random token sequences, lengths uniform on ``[min_length, max_length]``, tokens
    uniform over ``vocab_size`` symbols (``"0"``, ``"1"``, ...); target the reversed
    (``"reverse"``), identical (``"copy"``) or sorted (``"sort"``, by symbol id) sequence."""
    if task not in TOKEN_TASKS:
        raise ValueError(f"task must be one of {TOKEN_TASKS}, got {task!r}")
    n = check_positive_int("n", n)
    lo, hi = _lengths(min_length, max_length)
    vocab_size = check_int("vocab_size", vocab_size, low=2)
    g = make_generator(seed, generator)
    lengths = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    symbols = [str(k) for k in range(vocab_size)]
    srcs, tgts = [], []
    for L in lengths:
        ids = torch.randint(0, vocab_size, (L,), generator=g).tolist()
        tgt = ids[::-1] if task == "reverse" else sorted(ids) if task == "sort" else list(ids)
        srcs.append([symbols[i] for i in ids])
        tgts.append([symbols[i] for i in tgt])
    return Pairs(srcs, tgts, [{"task": task} for _ in srcs])


# -----------------------------------------------------------------------------------------------
def _babel():
    try:
        import babel.dates
        import babel.localedata
    except ImportError as e:  # pragma: no cover - babel is a dependency of the seq2seq tasks
        raise ImportError("the date task needs 'babel' (CLDR data, offline): pip install babel"
                          ) from e
    return babel


def date_locales(languages: Sequence[str] | None = None) -> list[str]:
    """CLDR locale identifiers known to babel (sorted), optionally only those of the given
    languages (``["de"]`` gives ``de``, ``de_AT``, ``de_CH``, ...)."""
    ids = sorted(_babel().localedata.locale_identifiers())
    if languages is None:
        return ids
    langs = set(languages)
    out = [i for i in ids if i.split("_")[0] in langs]
    if not out:
        raise ValueError(f"no CLDR locale for the languages {sorted(langs)}")
    return out


def dates(n: int, locales: Sequence[str], *, formats: Sequence[str] = DATE_FORMATS,
          start: _dt.date = _dt.date(2000, 1, 1), end: _dt.date = _dt.date(2099, 12, 31),
          tokenizer: str = "char", seed: int | None = None,
          generator: torch.Generator | None = None) -> Pairs:
    """``n`` dates, uniform on ``[start, end]``, each written with a random CLDR pattern
    (``formats``) of a random locale (``locales``) by ``babel.dates.format_date``; target
    ``date.isoformat()``. Source and target tokenised by ``tokenizer`` (characters by default).

    The default range is one century because CLDR's ``short`` patterns of many locales write
    two-digit years ("3/7/21"): inside one century the source determines the date.
    """
    babel = _babel()
    n = check_positive_int("n", n)
    locales = list(locales)
    if not locales:
        raise ValueError("locales must not be empty")
    known = set(babel.localedata.locale_identifiers())
    bad = [loc for loc in locales if loc not in known]
    if bad:
        raise ValueError(f"unknown CLDR locales {bad[:5]} (see date_locales())")
    formats = list(formats)
    bad = [f for f in formats if f not in DATE_FORMATS]
    if bad or not formats:
        raise ValueError(f"formats must be a non-empty subset of {DATE_FORMATS}, got {formats}")
    if not (isinstance(start, _dt.date) and isinstance(end, _dt.date)) or end < start:
        raise ValueError(f"need dates start <= end, got {start!r}, {end!r}")
    tok = get_tokenizer(tokenizer)
    g = make_generator(seed, generator)
    span = (end - start).days + 1
    days = torch.randint(0, span, (n,), generator=g).tolist()
    li = torch.randint(0, len(locales), (n,), generator=g).tolist()
    fi = torch.randint(0, len(formats), (n,), generator=g).tolist()
    srcs, tgts, info = [], [], []
    for d, a, b in zip(days, li, fi, strict=True):
        date = start + _dt.timedelta(days=d)
        text = babel.dates.format_date(date, format=formats[b], locale=locales[a])
        srcs.append(tok.tokenize(text))
        tgts.append(tok.tokenize(date.isoformat()))
        info.append({"locale": locales[a], "format": formats[b], "date": date.isoformat(),
                     "text": text})
    return Pairs(srcs, tgts, info)


def date_locale_split(n_train: int, n_test: int, *, languages: Sequence[str] | None = None,
                      test_locales: int | Sequence[str] = 10, seed: int | None = None,
                      **kwargs) -> tuple[Pairs, Pairs]:
    """Train and test date sets on disjoint locales: ``test_locales`` (a count drawn at random,
    or the identifiers) are held out of training. ``kwargs`` go to :func:`dates`."""
    pool = date_locales(languages)
    g = make_generator(seed)
    if isinstance(test_locales, int) and not isinstance(test_locales, bool):
        k = check_int("test_locales", test_locales, low=1, high=len(pool) - 1)
        perm = torch.randperm(len(pool), generator=g).tolist()
        held = sorted(pool[i] for i in perm[:k])
    else:
        held = sorted(test_locales)
        bad = [h for h in held if h not in pool]
        if bad or not held:
            raise ValueError(f"test_locales must be a non-empty subset of the locale pool, "
                             f"got {bad or held}")
    train_locs = [p for p in pool if p not in set(held)]
    if not train_locs:
        raise ValueError("no locale left for training")
    return (dates(n_train, train_locs, generator=g, **kwargs),
            dates(n_test, held, generator=g, **kwargs))


# -----------------------------------------------------------------------------------------------
def _num2words():
    try:
        from num2words import num2words
    except ImportError as e:  # pragma: no cover
        raise ImportError("the number-word task needs 'num2words': pip install num2words") from e
    return num2words


def number_words(n: int, *, source: str = "en", target: str = "digits", low: int = 0,
                 high: int = 9999, numbers: Sequence[int] | None = None,
                 tokenizer: str = "char", seed: int | None = None,
                 generator: torch.Generator | None = None) -> Pairs:
    """``n`` integers uniform on ``[low, high]`` (or drawn uniformly from ``numbers`` when
    given); source ``num2words(k, lang=source)``, target the digits ``str(k)``
    (``target="digits"``) or ``num2words(k, lang=target)``. Languages: any num2words knows;
    :data:`NUMBER_LANGUAGES` are the ones tested."""
    num2words = _num2words()
    n = check_positive_int("n", n)
    low = check_int("low", low, low=0)
    high = check_int("high", high, low=low)
    if numbers is not None:
        numbers = [check_int("numbers[i]", k, low=0) for k in numbers]
        if not numbers:
            raise ValueError("numbers is empty")
    for name, lang in (("source", source), ("target", target)):
        if lang == "digits" and name == "target":
            continue
        try:
            num2words(1, lang=lang)
        except NotImplementedError as e:
            raise ValueError(f"num2words has no language {lang!r} ({name})") from e
    tok = get_tokenizer(tokenizer)
    g = make_generator(seed, generator)
    if numbers is None:
        ks = torch.randint(low, high + 1, (n,), generator=g).tolist()
    else:
        ks = [numbers[i] for i in torch.randint(0, len(numbers), (n,), generator=g).tolist()]
    srcs, tgts, info = [], [], []
    for k in ks:
        s = num2words(k, lang=source)
        t = str(k) if target == "digits" else num2words(k, lang=target)
        srcs.append(tok.tokenize(s))
        tgts.append(tok.tokenize(t))
        info.append({"number": k, "source": source, "target": target, "text": s})
    return Pairs(srcs, tgts, info)


def number_split(n_train: int, n_test: int, *, low: int = 0, high: int = 999,
                 held_out: float = 0.2, seed: int | None = None, **kwargs
                 ) -> tuple[Pairs, Pairs]:
    """Train and test number-word sets on disjoint numbers: a fraction ``held_out`` of
    ``[low, high]`` (drawn at random) is never seen in training, the test set draws only from
    it. ``kwargs`` (``source``, ``target``, ``tokenizer``) go to :func:`number_words`."""
    low = check_int("low", low, low=0)
    high = check_int("high", high, low=low + 1)
    frac = check_number("held_out", held_out, low=0.0, high=1.0, low_open=True, high_open=True)
    pool = list(range(low, high + 1))
    k = min(len(pool) - 1, max(1, round(frac * len(pool))))
    g = make_generator(seed)
    perm = torch.randperm(len(pool), generator=g).tolist()
    held = sorted(pool[i] for i in perm[:k])
    train = sorted(pool[i] for i in perm[k:])
    return (number_words(n_train, numbers=train, generator=g, **kwargs),
            number_words(n_test, numbers=held, generator=g, **kwargs))
