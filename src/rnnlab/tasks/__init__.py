"""Tasks: data sets and generators that yield ``(inputs, targets)`` tensors, with their metrics."""

from rnnlab.tasks.prediction import nmse, nrmse, one_step_ahead, stream_one_step_ahead
from rnnlab.tasks.series import MackeyGlass, mackey_glass, mackey_glass_squash, sine_mixture

__all__ = [
    "MackeyGlass",
    "mackey_glass",
    "mackey_glass_squash",
    "nmse",
    "nrmse",
    "one_step_ahead",
    "sine_mixture",
    "stream_one_step_ahead",
]
