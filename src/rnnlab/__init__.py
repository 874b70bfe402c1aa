"""rnnlab: recurrent neural networks made real and measured, on PyTorch."""

from rnnlab._validation import check_finite, get_check_finite, set_check_finite
from rnnlab.cells import (
    DeepTransitionCell,
    ElmanCell,
    ELSTMCell,
    GRUCell,
    LSTMCell,
    StackedCell,
)
from rnnlab.models import ElmanRNN, RecurrentLayer, RecurrentNetwork

__version__ = "0.1.0"

__all__ = [
    "DeepTransitionCell",
    "ELSTMCell",
    "ElmanCell",
    "ElmanRNN",
    "GRUCell",
    "LSTMCell",
    "RecurrentLayer",
    "RecurrentNetwork",
    "StackedCell",
    "__version__",
    "check_finite",
    "get_check_finite",
    "set_check_finite",
]
