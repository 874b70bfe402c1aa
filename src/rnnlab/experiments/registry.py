"""The experiment registry: named, seeded, reproducible runs that return a table and a plot.

An experiment is a function ``run(config, ctx) -> ExperimentResult`` registered under a name
with a dataclass of its options. :func:`run_experiment` resolves the options, makes the run
folder (``config.json``, ``metrics.csv`` written row by row as the run goes, so a run that
fails keeps what it finished, ``table.csv``, the PNG plots, ``result.json``) and calls it.
The CLI is a thin shell over this module.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import math
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


def register(name: str, description: str, config_type: type):
    """Decorator: register ``run(config, ctx)`` as experiment ``name``."""
    if not dataclasses.is_dataclass(config_type):
        raise TypeError("config_type must be a dataclass")

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


def run_experiment(
    name: str,
    overrides: dict[str, str] | None = None,
    out_dir: Path | str | None = None,
    progress: ProgressFactory = no_progress,
) -> tuple[ExperimentResult, Path]:
    """Run experiment ``name``; return its result and the run folder."""
    experiment = get_experiment(name)
    config = resolve_config(experiment, overrides or {})
    if out_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = Path("runs") / f"{name}-{stamp}"
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(
        json.dumps({"experiment": name, "config": _jsonable(config),
                    "torch": torch.__version__, "threads": torch.get_num_threads()}, indent=2)
    )
    ctx = RunContext(run_dir, progress)
    try:
        result = experiment.run(config, ctx)
    finally:
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
    return result, run_dir
