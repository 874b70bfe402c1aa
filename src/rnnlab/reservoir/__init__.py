"""Reservoir computing: echo state networks, their topologies and their linear readouts.

Only the readout is trained; the input and recurrent weights are fixed at random (or by a
deterministic recipe) and stored as buffers. See ``docs/reservoir.md`` for the equations and
the package's layout (weights at the bottom, then the one step ``_step`` and its backends, the
networks, readouts and plasticity, and streaming fits on top; ``lint-imports`` checks it).
"""

from rnnlab.reservoir._numba import kernel_threads, numba_available, set_kernel_threads
from rnnlab.reservoir.deep import DeepEchoStateNetwork
from rnnlab.reservoir.esn import EchoStateNetwork, sparse_density_threshold
from rnnlab.reservoir.graphs import (
    GRAPH_KINDS,
    barabasi_albert_reservoir,
    graph_reservoir,
    graph_to_reservoir,
    spatial_growth_beta,
    spatial_growth_graph,
    spatial_growth_reservoir,
    watts_strogatz_reservoir,
    waxman_reservoir,
)
from rnnlab.reservoir.kernels import accumulate_normal_equations  # deprecated
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
from rnnlab.reservoir.streaming import fit_streaming, predict_streaming
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
    "GRAPH_KINDS",
    "DeepEchoStateNetwork",
    "ESNClassifier",
    "ESNForecaster",
    "ESNRegressor",
    "EchoStateNetwork",
    "IntrinsicPlasticity",
    "LMSReadout",
    "LogisticEchoStateNetwork",
    "RLSReadout",
    "RidgeClassifierReadout",
    "RidgeReadout",
    "accumulate_normal_equations",
    "barabasi_albert_reservoir",
    "delay_line",
    "delay_line_feedback",
    "dense_uniform_input",
    "fit_streaming",
    "graph_reservoir",
    "graph_to_reservoir",
    "kernel_threads",
    "numba_available",
    "pi_digits",
    "pool_states",
    "predict_streaming",
    "schrauwen_update",
    "set_kernel_threads",
    "sign_pattern_input",
    "simple_cycle",
    "sparse_density_threshold",
    "sparse_random",
    "spatial_growth_beta",
    "spatial_growth_graph",
    "spatial_growth_reservoir",
    "triesch_update",
    "unit_outputs",
    "watts_strogatz_reservoir",
    "waxman_reservoir",
]

# The scikit-learn estimators import scikit-learn (an optional extra, and slow to import):
# loaded on first use, ``from rnnlab.reservoir import ESNRegressor`` works as before.
_ESTIMATORS = ("ESNRegressor", "ESNClassifier", "ESNForecaster")


def __getattr__(name: str) -> object:
    if name in _ESTIMATORS:
        from rnnlab.reservoir import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'rnnlab.reservoir' has no attribute {name!r}")
