"""Polyphonic music as 88-key piano rolls: JSB Chorales and Bach chorales from music21.

Format (Boulanger-Lewandowski, Bengio & Vincent, ICML 2012, "Modeling temporal dependencies in
high-dimensional sequences"): a data set is a dict with the splits ``train``, ``valid`` and
``test``; each split is a list of sequences, each sequence a list of time steps, each time step
the list of MIDI note numbers sounding then. A piano roll is a ``(time, 88)`` 0/1 tensor whose
column ``k`` is MIDI note ``21 + k`` (A0 .. C8, the 88 keys of a piano).

Evaluation (the same paper; also Pascanu et al. 2014, Greff et al. 2017): the model outputs, for
every time step t, independent Bernoulli probabilities ``p_k(t) = sigmoid(s_k(t))`` for the 88
keys of frame t given the frames before it. The frame-level negative log-likelihood is::

    NLL = (1 / F) * sum_{sequences} sum_{t} sum_{k=1}^{88}
              -[ y_k(t) log p_k(t) + (1 - y_k(t)) log(1 - p_k(t)) ]

in nats per time step, where F is the number of frames of all sequences of the set: the average
is per frame over all frames of all sequences (long chorales weigh more), not a mean of
per-sequence means. Accuracy (Bay, Ehmann & Downie, ISMIR 2009, as used by Boulanger-Lewandowski
et al. 2012) sums the counts over all frames before taking the ratio::

    ACC = sum_t TP(t) / sum_t (TP(t) + FP(t) + FN(t)).

Built-in data (:func:`bach_chorales`) samples music21's bundled Bach chorales on a quarter-note
grid in their original keys (Boulanger-Lewandowski's JSB sequences are transposed). See
``docs/tasks_music_text.md`` for the splits, the sampling rules and measured reference numbers.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rnnlab._validation import check_positive_int, check_tensor

LOWEST_MIDI = 21
HIGHEST_MIDI = 108
NUM_KEYS = HIGHEST_MIDI - LOWEST_MIDI + 1  # 88
SPLITS = ("train", "valid", "test")

# Bumped whenever the music21 sampling changes, so stale caches are not reused.
_CACHE_FORMAT = 1
_CACHE_NAME = "bach_chorales_quarter.json"
_SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")


# ------------------------------------------------------------------------------------------------
# Piano rolls <-> lists of MIDI notes
# ------------------------------------------------------------------------------------------------
def _midi_note(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        # numpy scalars are not int/float subclasses for every width; accept anything integral.
        try:
            as_float = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise TypeError(f"{where}: a MIDI note must be a number, got {value!r}") from None
    else:
        as_float = float(value)
    if not math.isfinite(as_float) or as_float != int(as_float):
        raise ValueError(f"{where}: a MIDI note must be an integer, got {value!r}")
    note = int(as_float)
    if not LOWEST_MIDI <= note <= HIGHEST_MIDI:
        raise ValueError(
            f"{where}: MIDI note {note} is outside the piano range "
            f"{LOWEST_MIDI}..{HIGHEST_MIDI} of an 88-key roll"
        )
    return note


def _list_like(x: object) -> bool:
    # Lists, tuples, sets and numpy arrays (old pickles) all qualify; strings and dicts do not.
    if isinstance(x, str | bytes | Mapping):
        return False
    return isinstance(x, Sequence) or (hasattr(x, "__len__") and hasattr(x, "__iter__"))


def notes_to_roll(
    frames: Sequence[Sequence[int]],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    name: str = "sequence",
) -> torch.Tensor:
    """A list of time steps (each a list of MIDI notes 21..108) as a ``(time, 88)`` 0/1 roll.

    Column ``k`` is MIDI note ``21 + k``. A time step may be empty (silence); a note listed
    twice in one step is one key down.
    """
    if not _list_like(frames):
        raise TypeError(f"{name} must be a list of time steps, got {type(frames).__name__}")
    if len(frames) == 0:
        raise ValueError(f"{name} has no time steps")
    rows: list[int] = []
    cols: list[int] = []
    for t, step in enumerate(frames):
        if not _list_like(step):
            raise TypeError(
                f"{name}, step {t}: a time step must be a list of MIDI notes, "
                f"got {type(step).__name__}"
            )
        for value in step:
            rows.append(t)
            cols.append(_midi_note(value, f"{name}, step {t}") - LOWEST_MIDI)
    roll = torch.zeros(len(frames), NUM_KEYS, dtype=dtype, device=device)
    if rows:
        roll[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = 1
    return roll


def roll_to_notes(roll: torch.Tensor) -> list[list[int]]:
    """Inverse of :func:`notes_to_roll`: the sorted MIDI notes of each frame of a 0/1 roll."""
    check_tensor("roll", roll, ndim=2, last_dim=NUM_KEYS, layout="(time, 88)")
    _check_binary("roll", roll)
    on = roll.detach().to("cpu") != 0
    return [(torch.nonzero(row).flatten() + LOWEST_MIDI).tolist() for row in on]


def _check_binary(name: str, x: torch.Tensor) -> None:
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must hold only 0 and 1 (keys up/down)")


# ------------------------------------------------------------------------------------------------
# Loading and saving the Boulanger-Lewandowski format
# ------------------------------------------------------------------------------------------------
def _read_raw(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".json":
        kind = "json"
    elif suffix in (".pickle", ".pkl"):
        kind = "pickle"
    else:
        with path.open("rb") as fh:
            head = fh.read(64).lstrip()
        if head[:1] == b"{":
            kind = "json"
        elif head[:1] == b"\x80" or head[:1] in (b"(", b"}"):
            kind = "pickle"
        else:
            raise ValueError(
                f"{path}: cannot tell whether this is JSON or pickle; name it *.json or *.pickle"
            )
    if kind == "json":
        with path.open("r", encoding="utf-8") as fh:
            try:
                return json.load(fh)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from None
            except UnicodeDecodeError as err:  # a binary file named *.json
                raise ValueError(f"{path} is not valid JSON: not UTF-8 text ({err.reason} at "
                                 f"byte {err.start})") from None
    with path.open("rb") as fh:
        # The original files were written by Python 2; latin1 decodes their byte strings.
        try:
            return pickle.load(fh, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError,
                TypeError, ValueError) as err:
            # What a truncated, corrupt or foreign pickle raises; none names the file.
            raise ValueError(f"{path} is not a readable pickle ({type(err).__name__}: {err}); "
                             "expected the Boulanger-Lewandowski dict of splits") from None


def rolls_from_dict(
    data: Mapping[str, Any],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    source: str = "data",
) -> dict[str, list[torch.Tensor]]:
    """Convert an in-memory Boulanger-Lewandowski dict (split -> sequences -> steps -> notes)."""
    if not isinstance(data, Mapping):
        raise TypeError(
            f"{source}: expected a dict with keys {list(SPLITS)}, got {type(data).__name__}"
        )
    missing = [s for s in SPLITS if s not in data]
    extra = [k for k in data if k not in SPLITS]
    if missing or extra:
        raise ValueError(
            f"{source}: expected exactly the splits {list(SPLITS)}; "
            f"missing {missing}, unexpected {extra}"
        )
    out: dict[str, list[torch.Tensor]] = {}
    for split in SPLITS:
        sequences = data[split]
        if not _list_like(sequences):
            raise TypeError(f"{source}: split {split!r} must be a list of sequences")
        out[split] = [
            notes_to_roll(seq, dtype=dtype, device=device, name=f"{source}: {split}[{i}]")
            for i, seq in enumerate(sequences)
        ]
    return out


def load_piano_rolls(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[str, list[torch.Tensor]]:
    """Read a piano-roll data set in the Boulanger-Lewandowski format from any path.

    The file is JSON or a pickle (chosen by the suffix ``.json`` / ``.pickle`` / ``.pkl``, else
    by its first byte) holding ``{"train": [...], "valid": [...], "test": [...]}``; each split
    is a list of sequences, each a list of time steps, each a list of MIDI notes in 21..108.
    Returns ``{split: [roll (time, 88), ...]}``. Only unpickle files you trust.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no piano-roll file at {p}")
    return rolls_from_dict(_read_raw(p), dtype=dtype, device=device, source=str(p))


def save_piano_rolls(
    data: Mapping[str, Sequence[torch.Tensor]], path: str | os.PathLike[str]
) -> None:
    """Write ``{split: [roll, ...]}`` as Boulanger-Lewandowski JSON (lists of MIDI notes)."""
    out = {}
    for split, rolls in data.items():
        out[split] = [roll_to_notes(r) for r in rolls]
    Path(path).write_text(json.dumps(out), encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# Padding and batching
# ------------------------------------------------------------------------------------------------
class PianoRollBatch(NamedTuple):
    """A padded batch for next-step prediction.

    ``inputs`` and ``targets`` are ``(batch, time, 88)``, ``mask`` is ``(batch, time)`` bool
    (True on real steps), ``lengths`` the ``(batch,)`` int64 number of real steps per sequence,
    kept on the CPU as ``torch.nn.utils.rnn.pack_padded_sequence`` wants. Padding is zeros.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor


def _check_rolls(rolls: Sequence[torch.Tensor], name: str = "rolls") -> None:
    if isinstance(rolls, torch.Tensor) or not isinstance(rolls, Sequence):
        raise TypeError(f"{name} must be a list of (time, 88) tensors")
    if len(rolls) == 0:
        raise ValueError(f"{name} is empty")
    for i, r in enumerate(rolls):
        check_tensor(f"{name}[{i}]", r, ndim=2, last_dim=NUM_KEYS, layout="(time, 88)")


def pad_rolls(
    rolls: Sequence[torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack rolls of different lengths into ``(batch, max_time, 88)`` with zero padding at the
    end; also return the ``(batch,)`` int64 lengths (on the CPU)."""
    _check_rolls(rolls)
    dtype = dtype or rolls[0].dtype
    device = device if device is not None else rolls[0].device
    lengths = torch.tensor([r.shape[0] for r in rolls], dtype=torch.int64)
    out = torch.zeros(len(rolls), int(lengths.max()), NUM_KEYS, dtype=dtype, device=device)
    for i, r in enumerate(rolls):
        out[i, : r.shape[0]] = r.to(device=device, dtype=dtype)
    return out, lengths


def next_step_batch(
    rolls: Sequence[torch.Tensor],
    *,
    prepend_silence: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> PianoRollBatch:
    """Inputs and next-step targets: the model reads frames ``<= t`` and predicts frame ``t+1``.

    With ``prepend_silence=True`` (default) an all-zero frame is put before every sequence, so
    the input at step s is frame s-1 (silence at s=0) and the target is frame s: every frame of
    every sequence is predicted once and the NLL averages over all frames of the set, as in
    the literature. With ``False`` the input is frames ``0..L-2`` and the target ``1..L-1``
    (the first frame is never predicted; sequences need at least 2 frames).
    """
    _check_rolls(rolls)
    dtype = dtype or rolls[0].dtype
    device = device if device is not None else rolls[0].device
    if prepend_silence:
        inputs = [torch.cat([r.new_zeros(1, NUM_KEYS), r[:-1]]) for r in rolls]
        targets = list(rolls)
    else:
        short = [i for i, r in enumerate(rolls) if r.shape[0] < 2]
        if short:
            raise ValueError(
                f"sequences {short[:5]} have fewer than 2 frames: nothing to predict "
                "without prepend_silence"
            )
        inputs = [r[:-1] for r in rolls]
        targets = [r[1:] for r in rolls]
    x, lengths = pad_rolls(inputs, dtype=dtype, device=device)
    y, _ = pad_rolls(targets, dtype=dtype, device=device)
    mask = torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    return PianoRollBatch(x, y, mask.to(device), lengths)


def piano_roll_batches(
    rolls: Sequence[torch.Tensor],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    prepend_silence: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Iterator[PianoRollBatch]:
    """One epoch of :func:`next_step_batch` batches of ``batch_size`` sequences.

    With ``shuffle`` the order is a permutation drawn from ``generator`` (or a new generator
    seeded with ``seed``; with neither, from torch's global generator).
    """
    _check_rolls(rolls)
    check_positive_int("batch_size", batch_size)
    n = len(rolls)
    if shuffle:
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator).tolist()
    else:
        order = list(range(n))
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if drop_last and len(idx) < batch_size:
            return
        yield next_step_batch(
            [rolls[i] for i in idx], prepend_silence=prepend_silence, dtype=dtype, device=device
        )


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------
def _check_mask(mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    if mask is None:
        return None
    check_tensor("mask", mask, ndim=2, layout="(batch, time)")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(shape)}")
    if mask.dtype != torch.bool:
        _check_binary("mask", mask)
        mask = mask != 0
    return mask


def _check_pair(name: str, scores: torch.Tensor, targets: torch.Tensor) -> None:
    check_tensor(name, scores, ndim=3, layout="(batch, time, keys)")
    check_tensor("targets", targets, ndim=3, layout="(batch, time, keys)")
    if scores.shape != targets.shape:
        raise ValueError(
            f"{name} {tuple(scores.shape)} and targets {tuple(targets.shape)} differ in shape"
        )
    _check_binary("targets", targets)


def frame_nll(
    scores: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    logits: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Frame-level negative log-likelihood in nats (Boulanger-Lewandowski et al. 2012).

    Per frame, ``sum_k -[y_k log p_k + (1 - y_k) log(1 - p_k)]`` over the keys (independent
    Bernoulli per key), with ``p = sigmoid(scores)`` when ``logits`` (computed stably as
    ``y softplus(-s) + (1 - y) softplus(s)``), else ``p = scores`` (probabilities in [0, 1],
    each log clamped at -100 like ``torch.nn.functional.binary_cross_entropy``).

    ``reduction``: ``"mean"`` (default) the average over the frames where ``mask`` is True
    (all frames without a mask), i.e. nats per time step; ``"sum"`` the total, to be divided by
    the total number of frames when evaluating a set batch by batch; ``"none"`` the
    ``(batch, time)`` per-frame NLL, zero on masked frames. Differentiable in ``scores``.
    """
    _check_pair("scores" if logits else "probabilities", scores, targets)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    mask = _check_mask(mask, scores.shape[:2])
    y = targets.to(scores.dtype)
    if logits:
        softplus = torch.nn.functional.softplus
        per_key = y * softplus(-scores) + (1 - y) * softplus(scores)
    else:
        if bool(((scores < 0) | (scores > 1)).any()):
            raise ValueError("probabilities must lie in [0, 1]; pass logits=True for raw scores")
        log_p = torch.log(scores).clamp_min(-100.0)
        log_q = torch.log1p(-scores).clamp_min(-100.0)
        per_key = -(y * log_p + (1 - y) * log_q)
    per_frame = per_key.sum(dim=-1)
    if mask is not None:
        per_frame = torch.where(mask, per_frame, per_frame.new_zeros(()))
    if reduction == "none":
        return per_frame
    total = per_frame.sum()
    if reduction == "sum":
        return total
    count = int(mask.sum()) if mask is not None else per_frame.numel()
    if count == 0:
        raise ValueError("mask selects no frames: the mean NLL is undefined")
    return total / count


def frame_counts(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    threshold: float | None = None,
) -> tuple[int, int, int]:
    """True positives, false positives and false negatives summed over all (masked) frames.

    ``predictions`` are 0/1 (or bool) key states, or, with ``threshold``, scores whose keys are
    on where ``predictions > threshold`` (0.5 for probabilities, 0.0 for logits).
    """
    if predictions.dtype == torch.bool:
        predictions = predictions.to(targets.dtype if targets.is_floating_point() else torch.int64)
    check_tensor("predictions", predictions, ndim=3, layout="(batch, time, keys)")
    if threshold is None:
        _check_binary("predictions", predictions)
        on = predictions != 0
    else:
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        on = predictions > threshold
    _check_pair("predictions", predictions, targets)
    truth = targets != 0
    mask = _check_mask(mask, predictions.shape[:2])
    keep = mask.unsqueeze(-1) if mask is not None else torch.ones_like(on)
    tp = int((on & truth & keep).sum())
    fp = int((on & ~truth & keep).sum())
    fn = int((~on & truth & keep).sum())
    return tp, fp, fn


def frame_accuracy(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    threshold: float | None = None,
) -> float:
    """Frame-level accuracy ``sum_t TP(t) / sum_t (TP(t) + FP(t) + FN(t))`` (Bay et al. 2009,
    as reported by Boulanger-Lewandowski et al. 2012): counts summed over all frames, then one
    ratio. Silent frames predicted silent add nothing; when there is nothing at all to count
    (no note in either) the accuracy is 1.0. See :func:`frame_counts` for the arguments.
    """
    tp, fp, fn = frame_counts(predictions, targets, mask, threshold=threshold)
    denom = tp + fp + fn
    return 1.0 if denom == 0 else tp / denom


def key_frequencies(
    rolls: Sequence[torch.Tensor], *, smoothing: float = 1.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Per-key probability of being down over all frames, add-``smoothing`` (Laplace):
    ``p_k = (n_k + a) / (F + 2a)`` with n_k the frames where key k is down, F all frames."""
    _check_rolls(rolls)
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")
    counts = torch.zeros(NUM_KEYS, dtype=dtype)
    frames = 0
    for r in rolls:
        _check_binary("roll", r)
        counts += r.detach().to("cpu", dtype).sum(0)
        frames += r.shape[0]
    return (counts + smoothing) / (frames + 2 * smoothing)


def marginal_nll(
    train_rolls: Sequence[torch.Tensor],
    eval_rolls: Sequence[torch.Tensor],
    *,
    smoothing: float = 1.0,
) -> float:
    """Chance-level reference: the frame NLL (nats per frame, over all frames of ``eval_rolls``)
    of a model that ignores the past and predicts every key with its smoothed frequency in
    ``train_rolls`` (:func:`key_frequencies`). A sequence model must beat this number. With
    ``smoothing=0`` a key never seen in training makes the NLL infinite if it ever sounds."""
    p = key_frequencies(train_rolls, smoothing=smoothing)
    _check_rolls(eval_rolls, "eval_rolls")
    total, frames = 0.0, 0
    for r in eval_rolls:
        y = r.detach().to("cpu", torch.float64)
        # xlogy: a key never down in training (p = 0, only with smoothing 0) costs nothing while
        # it stays up, and an infinite NLL the first time it is down.
        total += float(-(torch.xlogy(y, p) + torch.xlogy(1 - y, 1 - p)).sum())
        frames += r.shape[0]
    return total / frames


# ------------------------------------------------------------------------------------------------
# Built-in data: Bach chorales from music21's bundled corpus
# ------------------------------------------------------------------------------------------------
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
