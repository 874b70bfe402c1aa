"""Liquid state machines: the spiking column of Maass, Natschläger & Markram (2002).

Leaky integrate-and-fire neurons on a 3-D grid joined by Markram–Tsodyks dynamic synapses,
simulated for a batch of trials at once; the liquid state (exponentially filtered spike trains)
feeds the reservoir readouts (``rnnlab.reservoir.readout``). See ``docs/lsm.md``.
"""

from rnnlab.reservoir.lsm.column import Column, build_column, grid_positions
from rnnlab.reservoir.lsm.params import (
    CONNECTION_TYPES,
    ColumnParameters,
    NeuronParameters,
    SynapseParameters,
)
from rnnlab.reservoir.lsm.simulate import (
    LiquidColumn,
    LiquidOutput,
    LiquidState,
    flush_denormal,
    propagators,
)
from rnnlab.reservoir.lsm.spikes import (
    liquid_states,
    poisson_spike_trains,
    raster_to_spike_times,
    spike_times_to_raster,
    steps_for,
)
from rnnlab.reservoir.lsm.theory import (
    lif_rate,
    tsodyks_markram_efficacies,
    tsodyks_markram_steady_state,
)

__all__ = [
    "CONNECTION_TYPES",
    "Column",
    "ColumnParameters",
    "LiquidColumn",
    "LiquidOutput",
    "LiquidState",
    "NeuronParameters",
    "SynapseParameters",
    "build_column",
    "flush_denormal",
    "grid_positions",
    "lif_rate",
    "liquid_states",
    "poisson_spike_trains",
    "propagators",
    "raster_to_spike_times",
    "spike_times_to_raster",
    "steps_for",
    "tsodyks_markram_efficacies",
    "tsodyks_markram_steady_state",
]
