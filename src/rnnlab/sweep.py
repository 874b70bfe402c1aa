"""Sweeps over any experiment's declared options with Optuna (Akiba et al. 2019, KDD).

``rnnlab sweep NAME --param spectral_radius=0.5:1.5 --param leak=0.05:1:log --trials 20
--objective FIGURE`` runs experiment NAME once per trial with the sampled options (the others at
their defaults, or fixed with ``--set NAME=VALUE``) and minimises (or maximises) one number of
its result, ``result.figures[FIGURE]``. Every trial is an ordinary run with its own run folder
(``OUT/trial-NNNN``). A parameter is ``NAME=LOW:HIGH`` (uniform; integers for an integer option),
``NAME=LOW:HIGH:log`` (log-uniform) or ``NAME=A,B,C`` (a choice); each is checked against the
option's declared type, bounds and choices before any trial runs.

Several processes (or machines sharing a file system) work on one study through a journal
file (``--storage study.log``; Optuna's ``JournalFileBackend``, which locks the file) or a
database URL. Trials of experiments that report intermediate values (``RunContext.report``)
are pruned by Optuna's median rule. The study's table (``trials.csv``) and Optuna's plots
(optimisation history, parameter importances) go to the sweep folder.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlab._validation import check_choice, check_positive_int
from rnnlab.experiments.registry import (
    Experiment,
    default_run_dir,
    get_experiment,
    resolve_config,
    run_experiment,
)

DIRECTIONS = ("minimize", "maximize")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - optuna is in the sweep extra
        raise ImportError("sweeps need optuna: pip install 'rnnlab[sweep]'") from exc
    return optuna


@dataclass(frozen=True)
class Param:
    """One swept option: ``kind`` float, int or choice."""

    name: str
    kind: str
    low: float = math.nan
    high: float = math.nan
    log: bool = False
    choices: tuple[str, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def _option_type(experiment: Experiment, name: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(experiment.config_type)}
    if name not in fields:
        raise ValueError(f"experiment {experiment.name!r} has no option {name!r}; its options: "
                         f"{', '.join(sorted(fields))}")
    hints = typing.get_type_hints(experiment.config_type)
    return hints[name]


def parse_param(experiment: Experiment, text: str) -> Param:
    """``NAME=LOW:HIGH[:log]`` or ``NAME=A,B,C`` for one of ``experiment``'s options; each end
    or choice is checked like a command-line value of that option."""
    name, sep, spec = text.partition("=")
    name = name.strip().lstrip("-").replace("-", "_")
    if not sep or not spec.strip():
        raise ValueError(f"--param {text!r}: expected NAME=LOW:HIGH[:log] or NAME=A,B,C")
    tp = _option_type(experiment, name)
    if ":" in spec:
        parts = spec.split(":")
        log = len(parts) == 3 and parts[2].strip().lower() == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise ValueError(f"--param {text!r}: a range is LOW:HIGH or LOW:HIGH:log")
        if tp not in (int, float):
            raise ValueError(f"--param {text!r}: option {name} is not a number ({tp}); list "
                             "its values as A,B,C")
        low, high = (float(p) for p in parts[:2])
        for end in parts[:2]:
            resolve_config(experiment, {name: end.strip()})  # parsed and checked as on the CLI
        if not low < high:
            raise ValueError(f"--param {text!r}: LOW must be below HIGH")
        if log and low <= 0:
            raise ValueError(f"--param {text!r}: a log range needs LOW > 0")
        if tp is int and (low != int(low) or high != int(high)):
            raise ValueError(f"--param {text!r}: option {name} is an integer")
        return Param(name, "int" if tp is int else "float", low, high, log)
    choices = tuple(c.strip() for c in spec.split(",") if c.strip())
    if len(choices) < 2:
        raise ValueError(f"--param {text!r}: give a range LOW:HIGH or at least two values")
    for c in choices:
        resolve_config(experiment, {name: c})
    return Param(name, "choice", choices=choices)


def _storage(storage: str | None, folder: Path) -> Any:
    optuna = _optuna()
    if storage is not None and "://" in storage:
        return storage  # a database URL (sqlite:///..., postgresql://...)
    from optuna.storages.journal import JournalFileBackend

    path = Path(storage) if storage is not None else folder / "study.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _objective_value(result: Any, objective: str) -> float:
    numbers = {k: v for k, v in result.figures.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    if objective not in numbers:
        raise ValueError(f"the experiment's result has no number {objective!r}; its numeric "
                         f"figures: {', '.join(sorted(numbers)) or 'none'}")
    value = float(numbers[objective])
    if not math.isfinite(value):
        raise ValueError(f"objective {objective} is {value}")
    return value


def run_sweep(
    name: str,
    params: list[str],
    *,
    objective: str,
    trials: int = 20,
    direction: str = "minimize",
    fixed: dict[str, str] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    out_dir: Path | str | None = None,
    seed: int | None = None,
    prune: bool = True,
    threads: int | None = None,
    on_trial: Callable[[Any], None] | None = None,
) -> tuple[Any, Path]:
    """Run (or join) a study of ``trials`` more trials of experiment ``name``; return the
    Optuna study and the sweep folder. Everything is checked before the first trial: the
    experiment, every ``params`` spec, the ``fixed`` options, the direction."""
    optuna = _optuna()
    experiment = get_experiment(name)
    check_positive_int("trials", trials)
    check_choice("direction", direction, DIRECTIONS)
    specs = [parse_param(experiment, p) for p in params]
    if not specs:
        raise ValueError("name at least one --param to sweep")
    if len({s.name for s in specs}) != len(specs):
        raise ValueError("an option is swept twice")
    fixed = dict(fixed or {})
    swept_and_fixed = {s.name for s in specs} & {k.replace("-", "_") for k in fixed}
    if swept_and_fixed:
        raise ValueError(f"options {sorted(swept_and_fixed)} are both swept and fixed")
    resolve_config(experiment, fixed)  # the fixed options are valid on their own
    folder = Path(out_dir) if out_dir is not None else default_run_dir(f"sweep-{name}")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name or f"{name}-{objective}", storage=_storage(storage, folder),
        direction=direction, load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=(optuna.pruners.MedianPruner(n_startup_trials=3) if prune
                else optuna.pruners.NopPruner()))

    def run_trial(trial: Any) -> float:
        overrides = {**fixed, **{s.name: str(s.suggest(trial)) for s in specs}}

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (value {value:g})")

        result, run_dir = run_experiment(name, overrides, folder / f"trial-{trial.number:04d}",
                                         threads=threads, reporter=report)
        trial.set_user_attr("run_dir", str(run_dir))
        return _objective_value(result, objective)

    callbacks = [lambda _study, trial: on_trial(trial)] if on_trial is not None else None
    study.optimize(run_trial, n_trials=trials, catch=(ValueError, RuntimeError),
                   callbacks=callbacks)
    write_study(study, folder)
    return study, folder


def write_study(study: Any, folder: Path) -> list[Path]:
    """``trials.csv`` (every trial of the study, all processes'), ``history.png`` and, with
    two or more swept options and completed trials, ``importance.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    optuna = _optuna()

    written = [folder / "trials.csv"]
    study.trials_dataframe().to_csv(written[0], index=False)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    plots = [("history", ovm.plot_optimization_history)]
    if len(complete) >= 2 and len(complete[0].params) >= 2:
        plots.append(("importance", ovm.plot_param_importances))
    if complete:
        for plot_name, plot in plots:
            with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = plot(study)
            path = folder / f"{plot_name}.png"
            ax.figure.savefig(path, dpi=120, bbox_inches="tight")
            plt.close(ax.figure)
            written.append(path)
    return written
