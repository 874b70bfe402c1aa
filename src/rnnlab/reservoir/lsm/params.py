"""Parameters of the liquid of Maass, Natschläger & Markram (2002), with the paper's values.

Units: time in ms, potential in mV, current in nA, resistance in MΩ (so R·I is in mV).

Sources (see ``docs/lsm.md`` for the table):

* Maass, Natschläger & Markram (2002), Neural Computation 14:2531, appendix ("the paper"):
  tau_m = 30 ms, R = 1 MΩ, threshold 15 mV, reset 13.5 mV, refractory 3 ms (E) / 2 ms (I);
  C = 0.3 (EE), 0.2 (EI), 0.4 (IE), 0.1 (II), lambda = 2; means of U, D, F and A per type;
  SD of U, D, F 50 % of the mean, SD of A 100 % of the mean (gamma distributed); tau_s = 3 ms
  (excitatory) / 6 ms (inhibitory) synapses; delays 1.5 ms (EE), 0.8 ms (others); input
  synapses 18 nA onto excitatory and 9 nA onto inhibitory neurons.
* The brian2 example ``examples/frompapers/Maass_Natschlaeger_Markram_2002.py`` (Schmitt 2022)
  uses the same values (initial V uniform between reset and threshold, I_b = 13.5 nA, input to
  every neuron).
* The LSM circuit tool's default parameters (Natschläger et al.): background current drawn
  uniformly from [13.5, 14.5] nA per neuron.

Names of connection types read pre→post: ``"EI"`` is excitatory → inhibitory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from rnnlab._validation import check_int, check_number

#: A value, or a ``(low, high)`` interval from which each neuron draws uniformly.
Range = float | tuple[float, float]

CONNECTION_TYPES = ("EE", "EI", "IE", "II")


def check_range(name: str, value: object, *, low: float | None = None,
                low_open: bool = False) -> tuple[float, float]:
    """``(low, high)`` of a value or interval, each end checked with :func:`check_number`."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}")
        a = check_number(f"{name}[0]", value[0], low=low, low_open=low_open)
        b = check_number(f"{name}[1]", value[1], low=low, low_open=low_open)
        if b < a:
            raise ValueError(f"{name} must be an interval with low <= high, got {value!r}")
        return a, b
    a = check_number(name, value, low=low, low_open=low_open)
    return a, a


@dataclass(frozen=True)
class NeuronParameters:
    """One population's leaky integrate-and-fire parameters (paper defaults, excitatory).

    tau_m dV/dt = -V + R (I_b + I_syn(t) + I_in(t)); V >= threshold: spike, V <- reset, held
    for the refractory period. Each field may be a ``(low, high)`` interval where marked
    :data:`Range`; each neuron then draws its own value uniformly (heterogeneity).
    """

    tau_m: Range = 30.0               # ms, membrane time constant
    resistance: Range = 1.0           # MΩ, input resistance
    threshold: Range = 15.0           # mV (resting potential 0)
    reset: Range = 13.5               # mV
    refractory: float = 3.0           # ms, absolute refractory period
    background: Range = (13.5, 14.5)  # nA, constant background current, drawn per neuron
    v_init: Range = (13.5, 15.0)      # mV, initial potential, drawn per neuron and trial

    def validate(self) -> NeuronParameters:
        check_range("tau_m", self.tau_m, low=0.0, low_open=True)
        check_range("resistance", self.resistance, low=0.0, low_open=True)
        check_range("threshold", self.threshold)
        check_range("reset", self.reset)
        check_number("refractory", self.refractory, low=0.0, low_open=True)
        check_range("background", self.background)
        check_range("v_init", self.v_init)
        if check_range("reset", self.reset)[1] >= check_range("threshold", self.threshold)[0]:
            raise ValueError(f"reset ({self.reset}) must lie below threshold ({self.threshold})")
        return self


@dataclass(frozen=True)
class SynapseParameters:
    """One connection type: connection scale C, mean amplitude A (nA, negative = inhibitory),
    the means of U (use), D (depression) and F (facilitation, ms), the delay (ms) and the
    decay time constant tau_s of the postsynaptic current (ms)."""

    C: float
    A: float
    U: float
    D: float
    F: float
    delay: float
    tau_s: float

    def validate(self, name: str = "synapse") -> SynapseParameters:
        check_number(f"{name}.C", self.C, low=0.0, high=1.0)
        check_number(f"{name}.A", self.A)
        check_number(f"{name}.U", self.U, low=0.0, high=1.0, low_open=True)
        check_number(f"{name}.D", self.D, low=0.0, low_open=True)
        check_number(f"{name}.F", self.F, low=0.0, low_open=True)
        check_number(f"{name}.delay", self.delay, low=0.0, low_open=True)
        check_number(f"{name}.tau_s", self.tau_s, low=0.0, low_open=True)
        return self


def _paper_synapses() -> dict[str, SynapseParameters]:
    # Maass et al. 2002 appendix (D, F given there in seconds; here ms).
    return {
        "EE": SynapseParameters(C=0.3, A=30.0, U=0.5, D=1100.0, F=50.0, delay=1.5, tau_s=3.0),
        "EI": SynapseParameters(C=0.2, A=60.0, U=0.05, D=125.0, F=1200.0, delay=0.8, tau_s=3.0),
        "IE": SynapseParameters(C=0.4, A=-19.0, U=0.25, D=700.0, F=20.0, delay=0.8, tau_s=6.0),
        "II": SynapseParameters(C=0.1, A=-19.0, U=0.32, D=144.0, F=60.0, delay=0.8, tau_s=6.0),
    }


@dataclass(frozen=True)
class ColumnParameters:
    """The column: a ``shape`` grid of neurons (one per integer point), a fraction of them
    inhibitory (chosen at random), connection probability C·exp(-(D(a, b)/lam)^2) between
    distinct neurons a != b (Euclidean grid distance D), per-type synapses, and the input
    synapses (each input channel reaches each neuron with ``input_probability``; amplitudes
    ``input_amplitude`` = (onto E, onto I) nA, gamma distributed like the recurrent ones)."""

    shape: tuple[int, int, int] = (15, 3, 3)
    inhibitory_fraction: float = 0.2
    lam: float = 2.0
    excitatory: NeuronParameters = NeuronParameters(refractory=3.0)
    inhibitory: NeuronParameters = NeuronParameters(refractory=2.0)
    synapses: Mapping[str, SynapseParameters] = field(default_factory=_paper_synapses)
    udf_cv: float = 0.5          # SD of U, D, F as a fraction of the mean (paper: 50 %)
    amplitude_cv: float = 1.0    # SD of |A| as a fraction of the mean, gamma (paper: 100 %)
    amplitude_scale: float = 1.0  # multiplies every recurrent A (the LSM tool's "Wscale")
    input_probability: float = 1.0
    input_amplitude: tuple[float, float] = (18.0, 9.0)
    input_tau: tuple[float, float] = (3.0, 3.0)  # ms; input synapses are excitatory (tau_s 3)

    def validate(self) -> ColumnParameters:
        if not isinstance(self.shape, tuple) or len(self.shape) != 3:
            raise ValueError(f"shape must be a tuple of 3 ints, got {self.shape!r}")
        for i, s in enumerate(self.shape):
            check_int(f"shape[{i}]", s, low=0)
        if math.prod(self.shape) == 0:
            raise ValueError(f"the grid {self.shape} has no neurons")
        check_number("inhibitory_fraction", self.inhibitory_fraction, low=0.0, high=1.0)
        check_number("lam", self.lam, low=0.0, low_open=True)
        self.excitatory.validate()
        self.inhibitory.validate()
        if set(self.synapses) != set(CONNECTION_TYPES):
            raise ValueError(f"synapses must have the keys {list(CONNECTION_TYPES)}, "
                             f"got {sorted(self.synapses)}")
        for name in CONNECTION_TYPES:
            self.synapses[name].validate(name)
        check_number("udf_cv", self.udf_cv, low=0.0)
        check_number("amplitude_cv", self.amplitude_cv, low=0.0)
        check_number("amplitude_scale", self.amplitude_scale, low=0.0)
        check_number("input_probability", self.input_probability, low=0.0, high=1.0)
        for i in range(2):
            check_number(f"input_amplitude[{i}]", self.input_amplitude[i])
            check_number(f"input_tau[{i}]", self.input_tau[i], low=0.0, low_open=True)
        return self

    @property
    def n_neurons(self) -> int:
        return math.prod(self.shape)
