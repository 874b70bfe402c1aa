"""Models: modules that run a recurrence over ``(batch, time, features)`` tensors."""

from rnnlab.models.elman import READOUTS, ElmanRNN

__all__ = ["READOUTS", "ElmanRNN"]
