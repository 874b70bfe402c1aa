"""Learning rules: how a gradient is obtained, separate from the model and the optimizer.

Every rule adds to ``param.grad``, so any ``torch.optim`` optimizer plugs in unchanged.
"""

from rnnlab.learning.approx import UORO, SnAp1
from rnnlab.learning.base import LearningRule, squared_error
from rnnlab.learning.bptt import BPTT, SequenceResult
from rnnlab.learning.clipping import ClipResult, GradientClipper, clip_grad_norm_, clip_grad_value_
from rnnlab.learning.elstm_rtrl import ELSTMRTRL
from rnnlab.learning.forward_mode import ForwardModeRTRL
from rnnlab.learning.rtrl import RTRL
from rnnlab.learning.trainers import EpochTrainer, OnlineTrainer, RunningLoss

__all__ = [
    "BPTT",
    "ELSTMRTRL",
    "RTRL",
    "UORO",
    "ClipResult",
    "EpochTrainer",
    "ForwardModeRTRL",
    "GradientClipper",
    "LearningRule",
    "OnlineTrainer",
    "RunningLoss",
    "SequenceResult",
    "SnAp1",
    "clip_grad_norm_",
    "clip_grad_value_",
    "squared_error",
]
