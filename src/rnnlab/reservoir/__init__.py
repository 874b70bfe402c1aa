"""Reservoir computing: echo state networks, their topologies and their linear readouts.

Only the readout is trained; the input and recurrent weights are fixed at random (or by a
deterministic recipe) and stored as buffers. See ``docs/reservoir.md`` for the equations.
"""

from rnnlab.reservoir.deep import DeepEchoStateNetwork
from rnnlab.reservoir.esn import EchoStateNetwork, sparse_density_threshold
from rnnlab.reservoir.estimator import ESNRegressor
from rnnlab.reservoir.plasticity import (
    IntrinsicPlasticity,
    LogisticEchoStateNetwork,
    schrauwen_update,
    triesch_update,
    unit_outputs,
)
from rnnlab.reservoir.readout import (
    LMSReadout,
    RidgeClassifierReadout,
    RidgeReadout,
    RLSReadout,
    pool_states,
)
from rnnlab.reservoir.topology import (
    delay_line,
    delay_line_feedback,
    dense_uniform_input,
    pi_digits,
    sign_pattern_input,
    simple_cycle,
    sparse_random,
)

__all__ = [
    "DeepEchoStateNetwork",
    "ESNRegressor",
    "EchoStateNetwork",
    "IntrinsicPlasticity",
    "LMSReadout",
    "LogisticEchoStateNetwork",
    "RLSReadout",
    "RidgeClassifierReadout",
    "RidgeReadout",
    "delay_line",
    "delay_line_feedback",
    "dense_uniform_input",
    "pi_digits",
    "pool_states",
    "schrauwen_update",
    "sign_pattern_input",
    "simple_cycle",
    "sparse_density_threshold",
    "sparse_random",
    "triesch_update",
    "unit_outputs",
]
