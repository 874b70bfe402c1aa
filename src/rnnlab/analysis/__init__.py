"""Analysis: functions of a model or a run (costs, spectra, gradients)."""

from rnnlab.analysis.cost import fit_power_law, peak_memory_bytes, time_per_call
from rnnlab.analysis.gradients import GradientNormTracker, state_jacobian_norms, state_jacobians
from rnnlab.analysis.spectral import (
    effective_spectral_radius,
    largest_singular_value,
    power_norms,
    scale_to_effective_spectral_radius,
    scale_to_spectral_radius,
    spectral_radius,
)

__all__ = [
    "GradientNormTracker",
    "effective_spectral_radius",
    "fit_power_law",
    "largest_singular_value",
    "peak_memory_bytes",
    "power_norms",
    "scale_to_effective_spectral_radius",
    "scale_to_spectral_radius",
    "spectral_radius",
    "state_jacobian_norms",
    "state_jacobians",
    "time_per_call",
]
