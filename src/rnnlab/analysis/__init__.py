"""Analysis: functions of a model or a run (costs, spectra, gradients)."""

from rnnlab.analysis.cost import fit_power_law, peak_memory_bytes, time_per_call
from rnnlab.analysis.entropy import layer_state_entropy, state_entropy
from rnnlab.analysis.esp import (
    ContractionResult,
    ESPReport,
    diagonally_scaled_norm,
    esp_check,
    state_contraction,
)
from rnnlab.analysis.gradients import GradientNormTracker, state_jacobian_norms, state_jacobians
from rnnlab.analysis.memory import (
    MemoryCapacityResult,
    linear_memory_capacity,
    memory_capacity,
)
from rnnlab.analysis.spectral import (
    clear_spectral_radius_cache,
    effective_spectral_radius,
    largest_singular_value,
    power_norms,
    scale_to_effective_spectral_radius,
    scale_to_spectral_radius,
    spectral_radius,
)

__all__ = [
    "ContractionResult",
    "ESPReport",
    "GradientNormTracker",
    "MemoryCapacityResult",
    "clear_spectral_radius_cache",
    "diagonally_scaled_norm",
    "effective_spectral_radius",
    "esp_check",
    "fit_power_law",
    "largest_singular_value",
    "layer_state_entropy",
    "linear_memory_capacity",
    "memory_capacity",
    "peak_memory_bytes",
    "power_norms",
    "scale_to_effective_spectral_radius",
    "scale_to_spectral_radius",
    "spectral_radius",
    "state_contraction",
    "state_entropy",
    "state_jacobian_norms",
    "state_jacobians",
    "time_per_call",
]
