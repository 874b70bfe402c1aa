"""Reading and writing piano-roll data sets in the Boulanger-Lewandowski format (JSON or pickle).

See :mod:`rnnlab.tasks.piano_roll.roll` for the format.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rnnlab.tasks.piano_roll.roll import SPLITS, _list_like, notes_to_roll, roll_to_notes


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
