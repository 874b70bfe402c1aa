"""Built-in polyphonic music: Bach chorales from music21's bundled corpus, as 88-key piano rolls.

Built-in data (:func:`bach_chorales`) samples music21's bundled Bach chorales on a quarter-note
grid in their original keys (Boulanger-Lewandowski's JSB sequences are transposed). See
``docs/tasks_music_text.md`` for the splits, the sampling rules and measured reference numbers.

The piano-roll format, its files, batches and metrics live in :mod:`rnnlab.tasks.piano_roll`
(format and evaluation are described there); this module re-exports them, so
``from rnnlab.tasks.music import frame_nll`` keeps working.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from rnnlab._validation import check_positive_int
from rnnlab.tasks import piano_roll
from rnnlab.tasks.piano_roll import *  # noqa: F403  (the re-export promised above)
from rnnlab.tasks.piano_roll import HIGHEST_MIDI, LOWEST_MIDI, notes_to_roll

# The piano-roll API under this module's name, then the chorale builder's own names.
__all__ = [
    *piano_roll.__all__,
    "bach_chorale_frames",
    "bach_chorales",
    "default_cache_dir",
    "score_to_frames",
]

# Bumped whenever the music21 sampling changes, so stale caches are not reused.
_CACHE_FORMAT = 1
_CACHE_NAME = "bach_chorales_quarter.json"
_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")


def default_cache_dir() -> Path:
    """``$RNNLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/rnnlab``, else ``~/.cache/rnnlab``."""
    env = os.environ.get("RNNLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "rnnlab"


def _import_music21() -> Any:
    try:
        import music21
    except ImportError as err:
        raise ImportError(
            "the built-in Bach chorales need the music21 package (it bundles the corpus): "
            "pip install music21; or load a piano-roll file with load_piano_rolls(path)"
        ) from err
    return music21


def _to_fraction(x: Any) -> Fraction:
    # music21 offsets are floats (exact binary fractions) or Fractions (tuplets).
    return x if isinstance(x, Fraction) else Fraction(x).limit_denominator(1 << 20)


def score_to_frames(score: Any) -> list[list[int]]:
    """Sample a music21 score on a quarter-note grid: one frame per quarter-note beat.

    Each frame is the sorted set of MIDI pitches of every part sounding at the grid time t,
    i.e. of every note or chord with ``onset <= t < onset + duration``. So a tied note is held
    across the frames it covers, a rest adds nothing (an all-rest beat is an empty frame), a note
    shorter than a beat that does not cover a grid time is not seen, grace notes (no duration)
    are ignored. The grid is aligned to the bar lines: with a pickup measure missing ``p``
    quarters the grid times are the offsets ``o`` with ``o + p`` an integer. The grid runs from
    the first beat to the end of the last note. Repeats are not expanded; no transposition.
    """
    spans: list[tuple[Fraction, Fraction, int]] = []
    for part in score.parts:
        for element in part.flatten().notes:
            dur = _to_fraction(element.duration.quarterLength)
            if dur <= 0:
                continue
            start = _to_fraction(element.offset)
            for pitch in element.pitches:
                spans.append((start, start + dur, int(pitch.midi)))
    if not spans:
        raise ValueError("the score has no notes")
    padding = Fraction(0)
    first_measure = score.parts[0].getElementsByClass("Measure").first()
    if first_measure is not None and first_measure.paddingLeft:
        padding = _to_fraction(first_measure.paddingLeft)
    t = (-padding) % 1
    end = max(e for _, e, _ in spans)
    frames: list[list[int]] = []
    while t < end:
        frames.append(sorted({m for s, e, m in spans if s <= t < e}))
        t += 1
    return frames


def _chorale_paths() -> list[Path]:
    """Score files of music21's ``bach`` corpus folder, sorted by file name.

    The analyses in ``bach/choraleAnalyses`` (roman-numeral text, no notes) are excluded.
    """
    music21 = _import_music21()
    paths = [Path(p) for p in music21.corpus.getComposer("bach")]
    keep = [p for p in paths if p.suffix.lower() in _SCORE_SUFFIXES and p.parent.name == "bach"]
    return sorted(keep, key=lambda p: p.name)


def _parse_chorale(path: Path) -> tuple[list[list[int]] | None, str]:
    """Frames of a four-part chorale, or ``None`` with the reason it is skipped."""
    music21 = _import_music21()
    score = music21.converter.parse(str(path))
    if not hasattr(score, "parts"):
        return None, "not a score"
    parts = list(score.parts)
    voiced = [p for p in parts if len(p.flatten().notes) > 0]
    if len(parts) != 4 or len(voiced) != 4:
        return None, f"{len(parts)} parts ({len(voiced)} with notes), not 4"
    frames = score_to_frames(score)
    bad = [m for f in frames for m in f if not LOWEST_MIDI <= m <= HIGHEST_MIDI]
    if bad:
        return None, f"notes outside the piano range: {sorted(set(bad))[:5]}"
    return frames, "ok"


def _load_cache(path: Path, version: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if data.get("format") != _CACHE_FORMAT or data.get("music21") != version:
        return {}
    pieces = data.get("pieces")
    return pieces if isinstance(pieces, dict) else {}


def _save_cache(path: Path, version: str, pieces: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"format": _CACHE_FORMAT, "music21": version, "pieces": pieces})
    # Write then rename, so a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".chorales-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def bach_chorale_frames(
    limit: int | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> dict[str, list[list[int]]]:
    """The four-part chorales of music21's Bach corpus as lists of frames (MIDI notes).

    Files of the corpus' ``bach`` folder are visited in file-name order; a file is kept when it
    parses to exactly four parts that all hold notes (this drops the roman-numeral analyses
    and the chorales with extra instrumental parts); each kept score is sampled by
    :func:`score_to_frames`. ``limit`` stops after the first ``limit`` kept chorales. Parsed
    results (kept and skipped) are cached in ``cache_dir`` (default :func:`default_cache_dir`)
    as ``bach_chorales_quarter.json``, keyed by file name and music21 version.
    Returns ``{file stem: frames}`` in visiting order.
    """
    if limit is not None:
        check_positive_int("limit", limit)
    music21 = _import_music21()
    version = str(music21.__version__)
    cache_path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_path = cache_path / _CACHE_NAME
    pieces = _load_cache(cache_path, version) if use_cache else {}
    fresh: dict[str, Any] = {}

    def flush() -> None:
        # Merge with what another process may have written meanwhile.
        merged = _load_cache(cache_path, version)
        merged.update(fresh)
        try:
            _save_cache(cache_path, version, merged)
        except OSError as err:
            warnings.warn(f"could not write the chorale cache {cache_path}: {err}", stacklevel=3)
        pieces.update(merged)

    out: dict[str, list[list[int]]] = {}
    for path in _chorale_paths():
        if limit is not None and len(out) >= limit:
            break
        entry = pieces.get(path.name)
        if entry is None:
            frames, reason = _parse_chorale(path)
            entry = {"frames": frames} if frames is not None else {"skipped": reason}
            pieces[path.name] = fresh[path.name] = entry
            # Parsing all files takes minutes: save progress now and then.
            if use_cache and len(fresh) % 50 == 0:
                flush()
        if entry.get("frames") is not None:
            out[re.sub(r"\.[^.]*$", "", path.name)] = entry["frames"]
    if use_cache and fresh:
        flush()
    return out


def bach_chorales(
    limit: int | None = None,
    *,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[str, list[torch.Tensor]]:
    """Built-in JSB-like data set from music21's bundled Bach corpus (no file needed).

    The chorales of :func:`bach_chorale_frames` (quarter-note grid, original keys) are shuffled
    by ``torch.randperm`` with a generator seeded by ``seed`` and cut into train/valid/test by
    ``fractions`` (default 60/20/20, close to JSB's 229/76/77): ``n_valid = max(1,
    round(f_valid n))``, ``n_test = max(1, round(f_test n))``, the rest for training. Returns
    ``{split: [roll (time, 88), ...]}`` like :func:`load_piano_rolls`. Same seed, same split.
    """
    if len(fractions) != 3 or any(not math.isfinite(f) or f < 0 for f in fractions):
        raise ValueError(f"fractions must be three numbers >= 0, got {fractions}")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions must sum to 1, got {fractions} (sum {sum(fractions)})")
    if limit is not None and check_positive_int("limit", limit) < 3:
        raise ValueError(f"limit must be at least 3 (one chorale per split), got {limit}")
    chorales = list(bach_chorale_frames(limit, cache_dir=cache_dir, use_cache=use_cache).items())
    n = len(chorales)
    n_valid = max(1, round(fractions[1] * n)) if fractions[1] > 0 else 0
    n_test = max(1, round(fractions[2] * n)) if fractions[2] > 0 else 0
    n_train = n - n_valid - n_test
    if n_train < 1:
        raise ValueError(f"{n} chorales are too few for the fractions {fractions}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid),
              "test": (n_train + n_valid, n)}
    out: dict[str, list[torch.Tensor]] = {}
    for split, (lo, hi) in bounds.items():
        out[split] = [
            notes_to_roll(chorales[i][1], dtype=dtype, device=device, name=chorales[i][0])
            for i in order[lo:hi]
        ]
    return out
