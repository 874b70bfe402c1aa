"""Models: modules that run a recurrence over ``(batch, time, features)`` tensors."""

from rnnlab.models.elman import READOUTS, ElmanRNN
from rnnlab.models.recurrent import RecurrentLayer, RecurrentNetwork

__all__ = ["READOUTS", "ElmanRNN", "RecurrentLayer", "RecurrentNetwork"]
