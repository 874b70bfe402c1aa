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

Plugins: an experiment is one file. Every public module (name not starting with ``_``) of the
:mod:`rnnlab.experiments` package is imported when the registry is first asked (its
``@register`` runs then), found by :func:`pkgutil.iter_modules`; adding a file is all it takes.
Third-party packages add experiments through the entry-point group ``rnnlab.experiments``
(``[project.entry-points."rnnlab.experiments"] my-exp = "my_package.my_experiment"``): the
module named by each entry point is imported the same way. A plugin that fails to import is
reported with the entry point's name, not silently skipped.

Options are declared once, with their bounds and choices (:func:`option`): ``low``/``high``
(``low_open``/``high_open`` for a strict bound), ``choices`` and ``unique``; for a tuple option
they apply to every item. :func:`check_options` checks them all, with a message naming the
option, its value and what is allowed, before the config's own ``validate()`` (which keeps
only the rules between options) runs; :func:`check_config` does both.

What every run needs is here, not in each experiment: :meth:`RunContext.seeds` (the seeds of a
config), :attr:`RunContext.progress`, :meth:`RunContext.log_metrics`,
:meth:`RunContext.run_jobs` (one metrics row per job with progress, optionally in a process
pool), :func:`aggregate` (the mean/std table over seeds), :func:`format_mean_std`; the thread
count is set around the whole run (above).

(A little over 500 lines: the registry, its run context and the run plan are one protocol
between the CLI and the experiments; options, run folders, tables, pools and resume are in their
own private modules.)
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib
import importlib.metadata
import json
import pkgutil
import typing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from rnnlab.experiments._options import (
    SeededOptions,
    _parse_value,
    _type_name,
    check_choices,
    check_config,
    check_option,
    check_options,
    describe_bounds,
    option,
)
from rnnlab.experiments._pool import _run_pool, thread_count
from rnnlab.experiments._resume import JOBS, JobStore, saved_config
from rnnlab.experiments._run_folder import (
    RUN_FILES,
    RunFolderError,
    _finish_failed_run,
    _make_run_dir,
    check_run_dir,
    default_run_dir,
)
from rnnlab.experiments._tables import (
    Column,
    aggregate,
    format_mean_std,
    mean_of,
    mean_std,
    std_of,
)

__all__ = [
    "CLI_OPTIONS", "ENTRY_POINT_GROUP", "REGISTRY", "RUN_FILES", "THREAD_OPTIONS", "Column",
    "Experiment", "ExperimentResult", "ProgressFactory", "RunContext", "RunFolderError", "RunPlan",
    "SeededOptions", "aggregate", "builtin_modules", "check_choices", "check_config",
    "check_option", "check_options", "check_run_dir", "default_run_dir", "describe_bounds",
    "format_mean_std", "get_experiment", "list_experiments", "mean_of", "mean_std", "no_progress",
    "option", "plan_run", "register", "resolve_config", "run_experiment", "std_of", "thread_count",
    "thread_option",
]


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

    def __init__(self, run_dir: Path, progress: ProgressFactory = no_progress,
                 reporter: Callable[[int, float], None] | None = None,
                 resume: bool = False, options_new_since_start: frozenset[str] = frozenset()
                 ) -> None:
        self.run_dir = run_dir
        self.progress = progress
        self._reporter = reporter
        self.jobs = JobStore(run_dir, resume)
        #: the run folder when this run resumes a stopped one (``--resume``), else None
        self.resume_dir: Path | None = run_dir if resume else None
        #: when resuming: the options the stopped run's config.json did not have (added to the
        #: experiment since it started; they took their defaults), so that an experiment whose
        #: results would change can refuse to mix the two
        self.options_new_since_start = options_new_since_start
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

    def job_dir(self, name: str) -> Path:
        """A folder of the run for one job's own files (e.g. a :class:`rnnlab.train.Trainer`
        ``run_dir`` with its checkpoints, from which a resumed run continues the job)."""
        path = self.run_dir / JOBS / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def report(self, step: int, value: float) -> None:
        """An intermediate value of the run's objective at ``step`` (e.g. a validation error
        during training): a sweep prunes unpromising trials on it (it may raise
        ``optuna.TrialPruned``, which stops the run like an error, keeping what was logged).
        Nothing happens outside a sweep."""
        if self._reporter is not None:
            self._reporter(int(step), float(value))

    @staticmethod
    def seeds(config: Any) -> list[int]:
        """The seeds of a run, from the config's ``seeds`` option: a count (seeds ``seed ..
        seed + seeds - 1``, ``seed`` the config's first seed, 0 without one) or a tuple of
        seeds (as given)."""
        seeds = config.seeds
        if isinstance(seeds, tuple | list):
            return [int(s) for s in seeds]
        first = int(getattr(config, "seed", 0))
        return list(range(first, first + int(seeds)))

    def run_jobs(self, description: str, fn: Callable[..., dict[str, Any]],
                 jobs: Iterable[tuple[Any, ...]], *, workers: int = 1,
                 threads: int | None = None, log: bool = True) -> list[dict[str, Any]]:
        """``[fn(*job) for job in jobs]``, one metrics row per job, with a progress bar: each
        row is logged to ``metrics.csv`` (``log``) as soon as it is finished, and the rows come
        back in the order of ``jobs``.

        ``threads``: torch's thread count inside (and in each worker), the previous count
        restored after. ``workers > 1``: the jobs run in a pool of that many processes (spawned,
        not forked: forking a process that has started torch's thread pools can deadlock; so
        ``fn`` and the jobs must be picklable, e.g. a module-level function of plain values).
        An error (or Ctrl-C) cancels the queued jobs; the rows logged so far stay, and each
        finished job's row is kept in the run folder, so a resumed run (``--resume``) takes
        them and runs only the rest.
        """
        jobs = list(jobs)
        done: dict[int, dict[str, Any]] = {}
        call = self.jobs.next_call()
        with contextlib.ExitStack() as stack:
            if threads is not None:
                stack.enter_context(thread_count(threads))
            advance = stack.enter_context(self.progress(description, len(jobs)))

            def finish(k: int, row: dict[str, Any], new: bool = True) -> None:
                done[k] = row
                if new:
                    self.jobs.save(call, k, jobs[k], row)
                if log:
                    self.log_metrics(row)
                advance(1)

            todo = []
            for k, job in enumerate(jobs):
                row = self.jobs.load(call, k, job)
                if row is None:
                    todo.append(k)
                else:
                    finish(k, row, new=False)
            if workers <= 1 or len(todo) <= 1:
                for k in todo:
                    finish(k, fn(*jobs[k]))
            else:
                _run_pool(fn, [jobs[k] for k in todo], min(workers, len(todo)),
                          torch.get_num_threads() if threads is None else threads,
                          lambda i, row: finish(todo[i], row))
        return [done[k] for k in range(len(jobs))]

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

    def option_rows(self) -> list[dict[str, Any]]:
        """Every option as ``{"option", "type", "default", "allowed", "help"}`` (``allowed``:
        the declared bounds and choices in words, :func:`describe_bounds`)."""
        hints = typing.get_type_hints(self.config_type)
        return [{"option": "--" + f.name.replace("_", "-"), "type": _type_name(hints[f.name]),
                 "default": f.default, "allowed": describe_bounds(f),
                 "help": f.metadata.get("help", "")}
                for f in dataclasses.fields(self.config_type)]


REGISTRY: dict[str, Experiment] = {}
# The entry-point group through which other packages add experiments (module docstring).
ENTRY_POINT_GROUP = "rnnlab.experiments"


# Options the CLI itself takes: an experiment option of the same name would never reach the
# experiment (the CLI consumes it first), so registering one is an error.
CLI_OPTIONS = ("out", "overwrite", "debug", "resume")
# The names under which an experiment declares its torch thread count (see the module docstring).
THREAD_OPTIONS = ("threads", "torch_threads")


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


def builtin_modules() -> list[str]:
    """The experiment modules of :mod:`rnnlab.experiments`: every public module (not ``_x``)
    other than the registry itself, found on disk by :func:`pkgutil.iter_modules` (a public
    module that registers nothing is imported and does no harm)."""
    import rnnlab.experiments as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_") and not m.ispkg and m.name != "registry")


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


_loaded = False


def _load_builtin() -> None:
    # Importing the modules registers them; done lazily so the registry has no import cycle.
    global _loaded
    if _loaded:
        return
    for module in builtin_modules():
        importlib.import_module(f"rnnlab.experiments.{module}")
    for ep in _entry_points():
        try:
            ep.load()
        except Exception as exc:  # a broken plugin names itself rather than vanishing
            raise ImportError(f"experiment plugin {ep.name!r} (entry point {ep.value!r} in "
                              f"group {ENTRY_POINT_GROUP!r}) failed to import: "
                              f"{type(exc).__name__}: {exc}") from exc
    _loaded = True


# ------------------------------------------------------------------------------------------


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
    check_config(config)
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


def plan_run(
    name: str,
    overrides: dict[str, str] | None = None,
    out_dir: Path | str | None = None,
    *,
    threads: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> RunPlan:
    """Everything :func:`run_experiment` checks before it starts, without doing any of it:
    the experiment, its options (``threads`` merged into its thread option), the run folder.
    Raises ``KeyError`` (no such experiment), ``ValueError`` (a bad option) or
    :class:`RunFolderError` (a bad ``out_dir``)."""
    experiment = get_experiment(name)
    merged = _merge_threads(experiment, overrides or {}, threads)
    if resume:
        if out_dir is None or not Path(out_dir).is_dir():
            raise RunFolderError(f"--resume needs the folder of the stopped run, got {out_dir}")
        config = saved_config(experiment, Path(out_dir), merged)
    else:
        config = resolve_config(experiment, merged)
    option_name = thread_option(experiment)
    if option_name is not None:
        run_threads = int(getattr(config, option_name))
    else:
        run_threads = threads if threads is not None else torch.get_num_threads()
    if resume:
        return RunPlan(experiment, config, Path(out_dir), run_threads)  # type: ignore[arg-type]
    run_dir = check_run_dir(default_run_dir(name) if out_dir is None else out_dir, overwrite)
    return RunPlan(experiment, config, run_dir, run_threads)


def run_experiment(
    name: str,
    overrides: dict[str, str] | None = None,
    out_dir: Path | str | None = None,
    progress: ProgressFactory = no_progress,
    *,
    threads: int | None = None,
    overwrite: bool = False,
    reporter: Callable[[int, float], None] | None = None,
    resume: bool = False,
) -> tuple[ExperimentResult, Path]:
    """Run experiment ``name``; return its result and the run folder.

    ``threads``: torch's thread count for the run (given to the experiment's ``threads`` /
    ``torch_threads`` option when it has one; see the module docstring), ``overwrite``: reuse
    a folder that holds a previous run, ``reporter``: receives :meth:`RunContext.report`'s
    intermediate values (a sweep's pruner), ``resume``: continue the stopped run in ``out_dir``
    with its saved options (see :mod:`rnnlab.experiments._resume`). Everything is checked
    (:func:`plan_run`) before any work starts; a run that raises keeps its finished files and
    ``error.txt``, or leaves nothing.
    """
    plan = plan_run(name, overrides, out_dir, threads=threads, overwrite=overwrite,
                    resume=resume)
    run_dir = plan.run_dir
    new_options: frozenset[str] = frozenset()
    if resume:
        created: list[Path] = []
        (run_dir / "error.txt").unlink(missing_ok=True)
        saved = json.loads((run_dir / "config.json").read_text()).get("config", {})
        new_options = frozenset(f.name for f in dataclasses.fields(plan.config)
                                if f.name not in saved)
    else:
        created = _make_run_dir(run_dir, overwrite)
    ctx = RunContext(run_dir, progress, reporter, resume=resume,
                     options_new_since_start=new_options)
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
