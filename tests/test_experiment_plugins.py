"""Experiments as one-file plugins (issue 11 item 4): discovery without a registry edit (the
package's modules, and the entry-point group ``rnnlab.experiments``), options declared with
their bounds and checked centrally, the registry's shared pieces (seeds, aggregation, jobs with
progress, metrics and a process pool), ``rnnlab run NAME --help``."""

from __future__ import annotations

import csv
import importlib.metadata
import math
import statistics
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

import rnnlab.experiments as experiments_pkg
from rnnlab.cli import app
from rnnlab.experiments import registry
from rnnlab.experiments.registry import (
    REGISTRY,
    ExperimentResult,
    RunContext,
    aggregate,
    check_config,
    format_mean_std,
    mean_of,
    option,
    register,
    resolve_config,
    std_of,
)

runner = CliRunner()


# --- discovery ----------------------------------------------------------------------------------
def test_every_public_module_of_the_package_is_discovered():
    folder = Path(experiments_pkg.__file__).parent
    on_disk = {p.stem for p in folder.glob("*.py")
               if not p.stem.startswith("_") and p.stem != "registry"}
    assert set(registry.builtin_modules()) == on_disk
    assert "_music_training" not in registry.builtin_modules()   # private helpers are skipped
    assert not hasattr(registry, "BUILTIN_MODULES")              # no list to edit any more
    # (other test modules register probes of their own: only the package's count here)
    ours = [e for e in registry.list_experiments()
            if e.run.__module__.startswith("rnnlab.experiments.")]
    names = {e.name for e in ours}
    modules = {sys.modules[e.run.__module__].__name__.rsplit(".", 1)[1] for e in ours}
    assert modules == on_disk and len(names) == len(on_disk) >= 14


PLUGIN = '''
from dataclasses import dataclass
from rnnlab.experiments.registry import ExperimentResult, option, register


@dataclass
class ToyConfig:
    level: float = option(0.5, "a level", low=0, high=1)


@register("toy-plugin", "an experiment from another package", ToyConfig)
def run(cfg, ctx):
    return ExperimentResult("toy", [{"level": cfg.level}])
'''


@pytest.fixture
def fresh_registry(monkeypatch):
    """Discovery runs again (the once-only flag reset) and plugin names are removed after."""
    registry.list_experiments()
    monkeypatch.setattr(registry, "_loaded", False)
    yield
    for name in ("toy-plugin",):
        REGISTRY.pop(name, None)
    sys.modules.pop("toy_plugin_module", None)
    sys.modules.pop("broken_plugin_module", None)


def test_an_entry_point_plugin_is_discovered(tmp_path, monkeypatch, fresh_registry):
    (tmp_path / "toy_plugin_module.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="toy", value="toy_plugin_module",
                                       group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: [ep])
    exp = registry.get_experiment("toy-plugin")
    assert exp.description == "an experiment from another package"
    with pytest.raises(ValueError, match=r"level \(--level\) must be in \[0, 1\]; got 2.0"):
        resolve_config(exp, {"level": "2"})


def test_a_broken_plugin_names_itself(tmp_path, monkeypatch, fresh_registry):
    (tmp_path / "broken_plugin_module.py").write_text("raise RuntimeError('no numpy here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="broken", value="broken_plugin_module",
                                       group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: [ep])
    with pytest.raises(ImportError, match=r"plugin 'broken'.*no numpy here"):
        registry.list_experiments()


# --- declared options -------------------------------------------------------------------------
@dataclass
class BoundsCfg:
    rate: float = option(0.5, "a rate", low=0, high=1, low_open=True)
    count: int = option(3, "a count", low=1)
    mode: str = option("a", "a mode", choices=("a", "b"))
    sizes: tuple[int, ...] = option((2, 3), "sizes", low=2, unique=True)
    names: tuple[str, ...] = option(("x",), "names", choices=("x", "y"), unique=True,
                                    item="name")
    shift: float = option(0.0, "any finite shift", finite=True)
    width: float | None = option(None, "a width or none", low=0, low_open=True)
    free: tuple[str, ...] = option((), "no constraint: may be empty")

    def validate(self) -> None:
        if self.count > 10 and self.mode == "b":
            raise ValueError("mode b takes at most 10")


@pytest.mark.parametrize(("changes", "error", "match"), [
    ({"rate": 0.0}, ValueError, r"rate \(--rate\) must be in \(0, 1\]; got 0.0"),
    ({"rate": 1.5}, ValueError, r"must be in \(0, 1\]; got 1.5"),
    ({"rate": math.nan}, ValueError, r"rate \(--rate\) must be finite and in \(0, 1\]"),
    ({"count": 0}, ValueError, r"count \(--count\) must be >= 1; got 0"),
    ({"count": True}, TypeError, r"count \(--count\) must be int, got bool"),
    ({"count": "3"}, TypeError, r"must be int, got str"),
    ({"mode": "c"}, ValueError, r"mode \(--mode\) must be one of a, b; got 'c'"),
    ({"sizes": (2, 1)}, ValueError, r"sizes \(--sizes\) must be >= 2; got 1 in \(2, 1\)"),
    ({"sizes": (2, 2)}, ValueError, r"sizes \(--sizes\) must be distinct"),
    ({"sizes": ()}, ValueError, r"sizes \(--sizes\) must list at least one value \(>= 2"),
    ({"names": ("x", "z")}, ValueError, r"unknown name \['z'\]; valid: x, y"),
    ({"names": ("x", "x")}, ValueError, r"duplicates"),
    ({"shift": math.inf}, ValueError, r"shift \(--shift\) must be finite; got inf"),
    ({"width": 0.0}, ValueError, r"width \(--width\) must be > 0"),
    ({"count": 11, "mode": "b"}, ValueError, r"mode b takes at most 10"),   # validate() last
])
def test_declared_bounds_are_checked_centrally(changes, error, match):
    with pytest.raises(error, match=match):
        check_config(BoundsCfg(**changes))


def test_values_inside_the_bounds_pass():
    check_config(BoundsCfg())
    check_config(BoundsCfg(rate=1.0, count=1, sizes=(2,), width=3.0, free=()))


def test_every_experiment_declares_the_bounds_its_validate_used_to_check():
    # spot checks that the per-field rules now live in the declarations (and show in --help)
    exp = registry.get_experiment("esn-forecast")
    allowed = {r["option"]: r["allowed"] for r in exp.option_rows()}
    assert allowed["--density"] == "in (0, 1]"
    assert allowed["--models"] == "one of esn, dlr, dlrb, scr; distinct"
    assert allowed["--washout"] == ">= 0"
    for name in ("memory-capacity", "long-term", "gradient-flow", "reservoir-topologies"):
        rows = registry.get_experiment(name).option_rows()
        assert sum(bool(r["allowed"]) for r in rows) >= len(rows) // 2, name


# --- shared run pieces --------------------------------------------------------------------------
def test_seeds_from_a_count_a_first_seed_or_a_tuple():
    @dataclass
    class Count:
        seeds: int = 3

    @dataclass
    class First:
        seeds: int = 2
        seed: int = 5

    @dataclass
    class Listed:
        seeds: tuple[int, ...] = (4, 1)

    assert RunContext.seeds(Count()) == [0, 1, 2]
    assert RunContext.seeds(First()) == [5, 6]
    assert RunContext.seeds(Listed()) == [4, 1]


def test_aggregate_against_the_statistics_module():
    rows = [{"g": g, "h": h, "v": v, "w": w} for g, h, v, w in [
        ("a", 1, 1.0, 10.0), ("b", 1, 2.0, 20.0), ("a", 1, 4.0, math.nan), ("a", 2, 3.0, 1.0),
        ("a", 1, 7.0, 30.0)]]
    out = aggregate(rows, by=("g", "h"), value=("v", "w"), std=("v",), count="n",
                    columns={"v_max": lambda sel: max(r["v"] for r in sel),
                             "w_sd": std_of("w"), "w_mean": mean_of("w")})
    assert [tuple(r[k] for k in ("g", "h")) for r in out] == [("a", 1), ("b", 1), ("a", 2)]
    assert list(out[0]) == ["g", "h", "n", "v", "v_std", "w", "v_max", "w_sd", "w_mean"]
    a1 = out[0]
    assert a1["n"] == 3 and a1["v_max"] == 7.0
    assert a1["v"] == pytest.approx(statistics.fmean([1, 4, 7]), rel=1e-15)
    assert a1["v_std"] == pytest.approx(statistics.stdev([1, 4, 7]), rel=1e-15)
    assert a1["w"] == a1["w_mean"] == pytest.approx(20.0, rel=1e-15)   # the NaN is left out
    assert a1["w_sd"] == pytest.approx(statistics.stdev([10, 30]), rel=1e-15)
    assert math.isnan(out[1]["v_std"])                                 # one value: undefined
    one = aggregate(rows, by=("g",), value="v", single_std=0.0, groups=[("b",), ("z",)])
    assert one == [{"g": "b", "v": 2.0, "v_std": 0.0}]                 # order given; z: no rows


def test_format_mean_std_and_the_deprecated_fmt():
    assert format_mean_std(1.234, 0.05) == "1.23 ± 0.05"
    assert format_mean_std(1.0, math.nan, 1) == "1.0"
    assert format_mean_std(math.inf, 1.0) == "n/a"
    from rnnlab.experiments.memory_capacity import fmt

    with pytest.warns(DeprecationWarning, match="format_mean_std"):
        assert fmt(1.234, 0.05) == "1.23 ± 0.05"
    from rnnlab.experiments.memory_capacity import check_numbers

    with pytest.warns(DeprecationWarning, match="option"):
        assert check_numbers("x", (1, 2.5), low=0.0) == (1.0, 2.5)
    from rnnlab.experiments.esn_forecast import MODELS, TASKS, EsnForecastConfig, check_common

    with pytest.warns(DeprecationWarning, match="check_options"):
        with pytest.raises(ValueError, match=r"density \(--density\) must be in \(0, 1\]"):
            cfg = EsnForecastConfig(density=2.0)
            check_common(cfg, cfg.models, MODELS, "models", TASKS, cfg.sizes)


def square_row(k: int) -> dict:
    """A job for the pool test: module level, so a spawned worker can unpickle it."""
    import torch

    return {"k": k, "square": k * k, "threads": torch.get_num_threads()}


def _ctx(tmp_path: Path, seen: list) -> RunContext:
    from contextlib import contextmanager

    @contextmanager
    def progress(description, total):
        seen.append(("start", description, total))
        yield lambda advance=1: seen.append(("advance", advance))

    return RunContext(tmp_path, progress)


@pytest.mark.parametrize("workers", [1, 2])
def test_run_jobs_logs_each_row_and_returns_them_in_job_order(tmp_path, workers):
    seen: list = []
    ctx = _ctx(tmp_path, seen)
    rows = ctx.run_jobs("squares", square_row, [(3,), (1,), (2,)], workers=workers, threads=1)
    ctx.close()
    assert [r["square"] for r in rows] == [9, 1, 4]
    assert all(r["threads"] == 1 for r in rows)           # the thread count reached the workers
    assert seen[0] == ("start", "squares", 3) and seen.count(("advance", 1)) == 3
    with open(tmp_path / "metrics.csv") as fh:
        logged = list(csv.DictReader(fh))
    assert sorted(int(r["k"]) for r in logged) == [1, 2, 3]   # any completion order


def test_run_jobs_error_keeps_the_rows_logged_before(tmp_path):
    def job(k: int) -> dict:
        if k == 2:
            raise RuntimeError("job 2 failed")
        return {"k": k}

    ctx = _ctx(tmp_path, [])
    with pytest.raises(RuntimeError, match="job 2 failed"):
        ctx.run_jobs("jobs", job, [(1,), (2,), (3,)])
    ctx.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["k", "1"]


# --- rnnlab run NAME --help ---------------------------------------------------------------------
def test_run_name_help_lists_the_experiments_options():
    result = runner.invoke(app, ["run", "esn-forecast", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Usage: rnnlab run esn-forecast" in out
    for text in ("--input-scalings", "--density", "in (0, 1]", "one of pi, random",
                 "0.1,0.3,1", "grid: input scaling v", "--torch-threads"):
        assert text in out, text


def test_run_help_without_a_name_and_with_an_unknown_name():
    plain = runner.invoke(app, ["run", "--help"])
    assert plain.exit_code == 0 and "NAME --help" in " ".join(plain.output.split())
    unknown = runner.invoke(app, ["run", "no-such-thing", "--help"])
    assert unknown.exit_code == 2 and "no experiment named 'no-such-thing'" in unknown.output
    missing = runner.invoke(app, ["run"])
    assert missing.exit_code == 2 and "missing experiment NAME" in missing.output


def test_help_does_not_run_anything(tmp_path):
    calls = []

    @dataclass
    class Cfg:
        n: int = option(1, "n", low=1)

    def probe(cfg, ctx):
        calls.append(cfg)
        return ExperimentResult("probe", [])

    registry.list_experiments()
    register("_help-probe", "probe", Cfg)(probe)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = runner.invoke(app, ["run", "_help-probe", "--n", "2", "--out",
                                         str(tmp_path / "x"), "--help"])
        assert result.exit_code == 0 and "n" in result.output and ">= 1" in result.output
        assert calls == [] and not (tmp_path / "x").exists()
    finally:
        REGISTRY.pop("_help-probe", None)
