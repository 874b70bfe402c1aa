"""Learning rules: how a gradient is obtained, separate from the model and the optimizer.

Every rule adds to ``param.grad``, so any ``torch.optim`` optimizer plugs in unchanged.
"""

from rnnlab.learning.base import LearningRule, squared_error
from rnnlab.learning.bptt import BPTT, SequenceResult
from rnnlab.learning.rtrl import RTRL
from rnnlab.learning.trainers import EpochTrainer, OnlineTrainer, RunningLoss

__all__ = [
    "BPTT",
    "RTRL",
    "EpochTrainer",
    "LearningRule",
    "OnlineTrainer",
    "RunningLoss",
    "SequenceResult",
    "squared_error",
]
