"""Polyphonic music as 88-key piano rolls (Boulanger-Lewandowski, Bengio & Vincent, ICML 2012).

One concept per module: :mod:`~rnnlab.tasks.piano_roll.roll` the format (a ``(time, 88)`` 0/1
tensor <-> lists of MIDI notes), :mod:`~rnnlab.tasks.piano_roll.files` reading and writing data
sets (JSON or pickle), :mod:`~rnnlab.tasks.piano_roll.batches` padding and batching for
next-step prediction, :mod:`~rnnlab.tasks.piano_roll.metrics` frame NLL, frame accuracy and the
marginal baseline. The built-in data set (Bach chorales from music21) is
:mod:`rnnlab.tasks.music`, which also re-exports everything here.
"""

from rnnlab.tasks.piano_roll.batches import (
    PianoRollBatch,
    next_step_batch,
    pad_rolls,
    piano_roll_batches,
)
from rnnlab.tasks.piano_roll.files import load_piano_rolls, rolls_from_dict, save_piano_rolls
from rnnlab.tasks.piano_roll.metrics import (
    frame_accuracy,
    frame_counts,
    frame_nll,
    key_frequencies,
    marginal_nll,
)
from rnnlab.tasks.piano_roll.roll import (
    HIGHEST_MIDI,
    LOWEST_MIDI,
    NUM_KEYS,
    SPLITS,
    notes_to_roll,
    roll_to_notes,
)

__all__ = [
    "HIGHEST_MIDI",
    "LOWEST_MIDI",
    "NUM_KEYS",
    "SPLITS",
    "PianoRollBatch",
    "frame_accuracy",
    "frame_counts",
    "frame_nll",
    "key_frequencies",
    "load_piano_rolls",
    "marginal_nll",
    "next_step_batch",
    "notes_to_roll",
    "pad_rolls",
    "piano_roll_batches",
    "roll_to_notes",
    "rolls_from_dict",
    "save_piano_rolls",
]
