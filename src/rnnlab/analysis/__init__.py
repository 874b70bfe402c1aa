"""Analysis: measuring what the learning rules cost and what the networks learned."""

from rnnlab.analysis.cost import fit_power_law, peak_memory_bytes, time_per_call

__all__ = ["fit_power_law", "peak_memory_bytes", "time_per_call"]
