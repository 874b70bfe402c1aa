"""Drop-in recurrent layers with torch.nn's interface: :class:`RNN`, :class:`LSTM`, :class:`GRU`.

``rnnlab.nn.LSTM(**kwargs)`` replaces ``torch.nn.LSTM(**kwargs)`` (same arguments, parameter
names, state dicts, input and output layouts, results), and adds keyword options torch lacks:
peepholes and Greff et al.'s LSTM variants, Cho et al.'s GRU, Pascanu et al.'s deep transition.
See docs/nn.md.
"""

from rnnlab.nn.layers import GRU, LSTM, RNN

__all__ = ["GRU", "LSTM", "RNN"]
