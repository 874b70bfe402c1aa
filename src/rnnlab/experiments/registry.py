"""The experiment registry: named, seeded, reproducible runs that return a table and a plot.

An experiment is a function ``run(config, ctx) -> ExperimentResult`` registered under a name
with a dataclass of its options. :func:`run_experiment` resolves the options, makes the run
folder (``config.json``, ``metrics.csv`` written row by row as the run goes, ``table.csv``, the
PNG plots, ``result.json``) and calls it. The CLI is a thin shell over this module.

Thread count: one number per run. An experiment that declares a ``threads`` (or, in the reservoir
experiments, ``torch_threads``) option owns it; the caller's ``threads=`` (the CLI's
``--threads``) sets that option, and the run executes under it. Without such an option the run
executes under ``threads=`` (default: the process's current count). ``config.json`` records the
count in force inside the run, and the process's own count is restored afterwards.

The run folder: checked before any work (a file, a path under a file or an unwritable place is
refused with :class:`RunFolderError`); a folder that already holds files is refused unless
``overwrite=True``, which first deletes the files rnnlab writes (:data:`RUN_FILES` and the
top-level ``*.png``) from a folder that is a run folder (its ``config.json`` names an experiment),
leaving any other file alone. A run that fails after writing something (metrics rows, a plot)
keeps it and gets ``error.txt`` (the error and its traceback), so a long run loses no finished
work; a run that fails before writing anything removes its ``config.json`` and the folders it
created, so no folder is left that looks like a run.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import traceback
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch


class ProgressFactory(Protocol):
    def __call__(
        self, description: str, total: int
    ) -> typing.ContextManager[Callable[[int], None]]: ...


@contextmanager
def no_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress reporter that reports nothing (tests, library use)."""
    yield lambda advance=1: None


@dataclass
class ExperimentResult:
    """A finished run: the result table (rows of dicts with the same keys), a one-paragraph
    summary, the plots written, and any scalar figures worth keeping in ``result.json``."""

    title: str
    rows: list[dict[str, Any]]
    summary: str = ""
    plots: list[Path] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


class RunContext:
    """What an experiment gets besides its config: the run folder, a metrics log, progress."""

    def __init__(self, run_dir: Path, progress: ProgressFactory = no_progress) -> None:
        self.run_dir = run_dir
        self.progress = progress
        self._metrics_file: Any = None
        self._metrics_writer: csv.DictWriter | None = None

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.csv`` at once (flushed: a crash loses nothing logged)."""
        if self._metrics_writer is None:
            self._metrics_file = open(self.run_dir / "metrics.csv", "w", newline="")
            self._metrics_writer = csv.DictWriter(self._metrics_file, fieldnames=list(row))
            self._metrics_writer.writeheader()
        self._metrics_writer.writerow(row)
        self._metrics_file.flush()

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as ``NAME.png`` in the run folder and close it."""
        import matplotlib.pyplot as plt

        path = self.run_dir / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
            self._metrics_writer = None


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    config_type: type
    run: Callable[[Any, RunContext], ExperimentResult]

    def options(self) -> list[tuple[str, str, Any, str]]:
        """``(option, type, default, help)`` for every field of the config dataclass."""
        hints = typing.get_type_hints(self.config_type)
        out = []
        for f in dataclasses.fields(self.config_type):
            out.append((f.name.replace("_", "-"), _type_name(hints[f.name]), f.default,
                        f.metadata.get("help", "")))
        return out


REGISTRY: dict[str, Experiment] = {}
BUILTIN_MODULES = (
    "online_prediction", "rtrl_vs_bptt", "long_term", "gradient_flow", "gradient_decay",
    "lstm_variants", "deep_rnn", "esn_forecast", "reservoir_topologies", "memory_capacity",
    "intrinsic_plasticity", "deep_esn_entropy",
)


# Options the CLI itself takes: an experiment option of the same name would never reach the
# experiment (the CLI consumes it first), so registering one is an error.
CLI_OPTIONS = ("out", "overwrite", "debug")
# The names under which an experiment declares its torch thread count (see the module docstring).
THREAD_OPTIONS = ("threads", "torch_threads")
# The files a run writes besides its ``NAME.png`` plots (what ``overwrite`` deletes).
RUN_FILES = ("config.json", "metrics.csv", "table.csv", "result.json", "error.txt")


def register(name: str, description: str, config_type: type):
    """Decorator: register ``run(config, ctx)`` as experiment ``name``."""
    if not dataclasses.is_dataclass(config_type):
        raise TypeError("config_type must be a dataclass")
    fields = {f.name for f in dataclasses.fields(config_type)}
    clash = sorted(fields & set(CLI_OPTIONS))
    if clash:
        raise TypeError(f"experiment {name!r}: option(s) {', '.join('--' + c for c in clash)} "
                        "would be taken by the CLI's own option of that name; rename them")
    if len(fields & set(THREAD_OPTIONS)) > 1:
        raise TypeError(f"experiment {name!r} declares both {' and '.join(THREAD_OPTIONS)}; "
                        "one thread count per run")

    def wrap(fn: Callable[[Any, RunContext], ExperimentResult]):
        if name in REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        REGISTRY[name] = Experiment(name, description, config_type, fn)
        return fn

    return wrap


def option(default: Any, help: str) -> Any:
    """A config field with its help text (shown by ``rnnlab list --options``)."""
    return field(default=default, metadata={"help": help})


def check_choices(name: str, values: Any, valid: tuple[str, ...], item: str | None = None,
                  unique: bool = True) -> None:
    """The option ``name`` lists at least one of ``valid`` (each ``item``, default ``name``),
    nothing else, and (``unique``) nothing twice; ``ValueError`` naming the problem otherwise."""
    item = name if item is None else item
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must name at least one of {', '.join(valid)}")
    bad = [v for v in values if v not in valid]
    if bad:
        raise ValueError(f"unknown {item} {bad}; valid: {', '.join(valid)}")
    if unique and len(set(values)) != len(values):
        raise ValueError(f"{name} has duplicates (an entry named twice): {list(values)}")


class thread_count:
    """Context manager: ``torch.set_num_threads(n)`` inside, the previous count restored after."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.before = torch.get_num_threads()

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)


def mean_std(values: Iterable[float | None], single_std: float = math.nan
             ) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of the finite values (None and NaN left out):
    NaN, NaN without any, and std ``single_std`` (NaN: undefined) for one."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, single_std
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


def thread_option(experiment: Experiment) -> str | None:
    """The config field through which ``experiment`` sets torch's thread count, or None."""
    fields = {f.name for f in dataclasses.fields(experiment.config_type)}
    return next((n for n in THREAD_OPTIONS if n in fields), None)


def get_experiment(name: str) -> Experiment:
    _load_builtin()
    if name not in REGISTRY:
        raise KeyError(f"no experiment named {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def list_experiments() -> list[Experiment]:
    _load_builtin()
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def _load_builtin() -> None:
    # Importing the modules registers them; done lazily so the registry has no import cycle.
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(f"rnnlab.experiments.{module}")


# ------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"{_type_name(typing.get_args(tp)[0])},..."
    if origin in (typing.Union, types.UnionType):
        return "|".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _parse_value(name: str, text: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(name, text, arg)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_parse_value(name, part.strip(), inner) for part in text.split(",") if part)
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"option --{name} expects true/false, got {text!r}")
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError:
            raise ValueError(f"option --{name} expects {tp.__name__}, got {text!r}") from None
    raise TypeError(f"option --{name} has an unsupported type {tp}")


def resolve_config(experiment: Experiment, overrides: dict[str, str]) -> Any:
    """Build the config dataclass from ``{"option-name": "text"}`` overrides."""
    hints = typing.get_type_hints(experiment.config_type)
    fields = {f.name for f in dataclasses.fields(experiment.config_type)}
    values = {}
    for key, text in overrides.items():
        name = key.lstrip("-").replace("-", "_")
        if name not in fields:
            known = ", ".join("--" + f.replace("_", "-") for f in sorted(fields))
            raise ValueError(f"{experiment.name} has no option --{key.lstrip('-')}; "
                             f"its options are: {known}")
        values[name] = _parse_value(key.lstrip("-"), text, hints[name])
    config = experiment.config_type(**values)
    check = getattr(config, "validate", None)
    if check is not None:
        check()
    return config


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


class RunFolderError(ValueError):
    """The run folder (``--out``) cannot be used: a file, unwritable, or holding another run."""


@dataclass(frozen=True)
class RunPlan:
    """A checked run, nothing done yet: the experiment, its resolved config, the run folder
    and the torch thread count the run executes under."""

    experiment: Experiment
    config: Any
    run_dir: Path
    threads: int


def _option_key(key: str) -> str:
    return key.lstrip("-").replace("-", "_")


def _merge_threads(experiment: Experiment, overrides: dict[str, str],
                   threads: int | None) -> dict[str, str]:
    """``overrides`` with the caller's thread count given to the experiment's thread option."""
    if threads is None:
        return dict(overrides)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {threads!r}")
    name = thread_option(experiment)
    if name is None:
        return dict(overrides)
    merged = {k: v for k, v in overrides.items() if _option_key(k) != name}
    for key, text in overrides.items():
        try:
            same = int(text) == threads
        except ValueError:
            same = False
        if _option_key(key) == name and not same:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"--threads {threads} and {flag} {text} disagree: both set the "
                             f"thread count of {experiment.name}; give one of them")
    merged[name.replace("_", "-")] = str(threads)
    return merged


def _is_run_folder(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "experiment" in config


def _run_outputs(path: Path) -> list[Path]:
    """The files of ``path`` that rnnlab writes (what ``overwrite`` deletes)."""
    return sorted(p for p in path.iterdir() if p.is_file()
                  and (p.name in RUN_FILES or p.suffix.lower() == ".png"))


def check_run_dir(path: Path | str, overwrite: bool = False) -> Path:
    """Check that ``path`` can take a new run, changing nothing; return it.

    :class:`RunFolderError` naming the problem when ``path`` is a file, lies under a file, cannot
    be written, or already holds files (unless ``overwrite``; even then it must be a run folder:
    rnnlab does not delete files of a folder it did not write).
    """
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise RunFolderError(f"--out {path} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise RunFolderError(f"--out {path}: no permission to write in this folder")
        content = sorted(p.name for p in path.iterdir())
        if content and not overwrite:
            shown = ", ".join(content[:5]) + (", ..." if len(content) > 5 else "")
            raise RunFolderError(
                f"--out {path} is not empty (it holds {shown}); choose a new folder, or pass "
                "--overwrite to delete the previous run's files there first")
        if content and not _is_run_folder(path):
            raise RunFolderError(
                f"--out {path} holds files but is not an rnnlab run folder (no config.json "
                "naming an experiment); --overwrite deletes only a previous run's files, so "
                "choose a new or empty folder")
        return path
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunFolderError(f"--out {path}: {ancestor} is a file, so no folder can be made "
                             "under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunFolderError(f"--out {path}: no permission to create a folder in {ancestor}")
    return path


def default_run_dir(name: str) -> Path:
    """``runs/NAME-YYYYmmdd-HHMMSS`` (``-2``, ``-3``, ... when that folder exists already)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def plan_run(
    name: str,
    overrides: dict[str, str] | None = None,
    out_dir: Path | str | None = None,
    *,
    threads: int | None = None,
    overwrite: bool = False,
) -> RunPlan:
    """Everything :func:`run_experiment` checks before it starts, without doing any of it:
    the experiment, its options (``threads`` merged into its thread option), the run folder.
    Raises ``KeyError`` (no such experiment), ``ValueError`` (a bad option) or
    :class:`RunFolderError` (a bad ``out_dir``)."""
    experiment = get_experiment(name)
    config = resolve_config(experiment, _merge_threads(experiment, overrides or {}, threads))
    option_name = thread_option(experiment)
    if option_name is not None:
        run_threads = int(getattr(config, option_name))
    else:
        run_threads = threads if threads is not None else torch.get_num_threads()
    run_dir = check_run_dir(default_run_dir(name) if out_dir is None else out_dir, overwrite)
    return RunPlan(experiment, config, run_dir, run_threads)


def _make_run_dir(path: Path, overwrite: bool) -> list[Path]:
    """Create ``path`` (or clear a previous run's files from it); return the folders created."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"--out {path}: cannot create the folder ({exc.strerror})") from None
    if overwrite:
        for old in _run_outputs(path):
            old.unlink()
    return created


def _finish_failed_run(run_dir: Path, created: list[Path], exc: BaseException) -> None:
    """Keep what a failed run finished and mark it failed, or remove it if it finished nothing."""
    try:
        finished = [p for p in _run_outputs(run_dir) if p.name != "config.json"]
        if not finished:
            (run_dir / "config.json").unlink(missing_ok=True)
            for folder in created:  # deepest first; a folder someone else filled meanwhile stays
                folder.rmdir()
            return
        text = "".join(traceback.format_exception(exc))
        (run_dir / "error.txt").write_text(
            f"run failed: {type(exc).__name__}: {exc}\n"
            f"finished and kept: {', '.join(p.name for p in finished)}\n\n{text}")
    except OSError:  # the folder itself is failing (disk full, removed): the run's error matters
        pass


def run_experiment(
    name: str,
    overrides: dict[str, str] | None = None,
    out_dir: Path | str | None = None,
    progress: ProgressFactory = no_progress,
    *,
    threads: int | None = None,
    overwrite: bool = False,
) -> tuple[ExperimentResult, Path]:
    """Run experiment ``name``; return its result and the run folder.

    ``threads``: torch's thread count for the run (given to the experiment's ``threads`` /
    ``torch_threads`` option when it has one; see the module docstring), ``overwrite``: reuse
    a folder that holds a previous run. Everything is checked (:func:`plan_run`) before any work
    starts; a run that raises keeps its finished files and ``error.txt``, or leaves nothing.
    """
    plan = plan_run(name, overrides, out_dir, threads=threads, overwrite=overwrite)
    run_dir = plan.run_dir
    created = _make_run_dir(run_dir, overwrite)
    ctx = RunContext(run_dir, progress)
    try:
        (run_dir / "config.json").write_text(
            json.dumps({"experiment": name, "config": _jsonable(plan.config),
                        "torch": torch.__version__, "threads": plan.threads}, indent=2)
        )
        with thread_count(plan.threads):
            result = plan.experiment.run(plan.config, ctx)
        ctx.close()
        if result.rows:
            with open(run_dir / "table.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(result.rows[0]))
                writer.writeheader()
                writer.writerows(result.rows)
        (run_dir / "result.json").write_text(json.dumps(
            {"title": result.title, "summary": result.summary, "rows": _jsonable(result.rows),
             "figures": _jsonable(result.figures), "plots": [p.name for p in result.plots]},
            indent=2,
        ))
    except BaseException as exc:  # KeyboardInterrupt too: a stopped long run keeps its rows
        ctx.close()
        _finish_failed_run(run_dir, created, exc)
        raise
    return result, run_dir
