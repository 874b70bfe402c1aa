"""Experiments: named, seeded, reproducible runs; the CLI ``rnnlab run NAME`` is a shell."""

from rnnlab.experiments.registry import (
    REGISTRY,
    Experiment,
    ExperimentResult,
    RunContext,
    get_experiment,
    list_experiments,
    register,
    resolve_config,
    run_experiment,
)

__all__ = [
    "REGISTRY",
    "Experiment",
    "ExperimentResult",
    "RunContext",
    "get_experiment",
    "list_experiments",
    "register",
    "resolve_config",
    "run_experiment",
]
