"""rnnlab: recurrent neural networks made real and measured, on PyTorch."""

from rnnlab.models import ElmanRNN

__version__ = "0.1.0"

__all__ = ["ElmanRNN", "__version__"]
