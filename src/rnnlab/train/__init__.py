"""Training with checkpoints: :class:`Trainer` runs any learning rule and optimizer over epochs or
a stream, validates, stops early, logs metrics and resumes killed runs bit-identically (on the
same machine). See ``docs/train.md``."""

from rnnlab.train.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    load_checkpoint,
)
from rnnlab.train.metrics import COLUMNS as METRIC_COLUMNS
from rnnlab.train.trainer import Position, Trainer
from rnnlab.train.weight_noise import WeightNoise

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "METRIC_COLUMNS",
    "CheckpointError",
    "Position",
    "Trainer",
    "WeightNoise",
    "atomic_save",
    "load_checkpoint",
]
