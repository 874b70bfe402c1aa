"""The piano-roll format: a ``(time, 88)`` 0/1 tensor <-> lists of MIDI notes per time step.

Format (Boulanger-Lewandowski, Bengio & Vincent, ICML 2012, "Modeling temporal dependencies in
high-dimensional sequences"): a data set is a dict with the splits ``train``, ``valid`` and
``test``; each split is a list of sequences, each sequence a list of time steps, each time step
the list of MIDI note numbers sounding then. A piano roll is a ``(time, 88)`` 0/1 tensor whose
column ``k`` is MIDI note ``21 + k`` (A0 .. C8, the 88 keys of a piano).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from rnnlab._validation import check_tensor

LOWEST_MIDI = 21
HIGHEST_MIDI = 108
NUM_KEYS = HIGHEST_MIDI - LOWEST_MIDI + 1  # 88
SPLITS = ("train", "valid", "test")


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


def _check_rolls(rolls: Sequence[torch.Tensor], name: str = "rolls") -> None:
    if isinstance(rolls, torch.Tensor) or not isinstance(rolls, Sequence):
        raise TypeError(f"{name} must be a list of (time, 88) tensors")
    if len(rolls) == 0:
        raise ValueError(f"{name} is empty")
    for i, r in enumerate(rolls):
        check_tensor(f"{name}[{i}]", r, ndim=2, last_dim=NUM_KEYS, layout="(time, 88)")
