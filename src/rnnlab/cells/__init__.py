"""Recurrent cells: one pure step ``state_t = cell(x_t, state_{t-1})`` each (see ``cells.base``).

``ElmanCell`` (tanh/relu), ``LSTMCell`` (Greff et al.'s vanilla LSTM with peepholes and its
variants), ``GRUCell`` (Cho et al.'s form and PyTorch's), ``DeepTransitionCell`` (DT-RNN,
DT(S)-RNN) and ``StackedCell`` (stacked RNN); ``run_cell`` runs any of them over a sequence;
``twice_differentiable()`` makes ``impl="auto"`` run the plain loop, for double backward.
"""

from rnnlab.cells.base import (
    IMPLS,
    RecurrentCell,
    State,
    concat_state,
    flatten_state,
    map_state,
    run_cell,
    split_state,
    twice_differentiable,
)
from rnnlab.cells.deep import DeepTransitionCell, StackedCell
from rnnlab.cells.elman import ElmanCell
from rnnlab.cells.elstm import ELSTMCell
from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lstm import VARIANTS, LSTMCell, LSTMVariant

__all__ = [
    "IMPLS",
    "VARIANTS",
    "DeepTransitionCell",
    "ELSTMCell",
    "ElmanCell",
    "GRUCell",
    "LSTMCell",
    "LSTMVariant",
    "RecurrentCell",
    "StackedCell",
    "State",
    "concat_state",
    "flatten_state",
    "map_state",
    "run_cell",
    "split_state",
    "twice_differentiable",
]
