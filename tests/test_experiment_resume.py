"""`rnnlab run NAME --resume RUN_DIR`: a run that stopped keeps its finished jobs' rows and a
resumed run takes them, runs only the rest, and ends with the uninterrupted run's result."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rnnlab.cli import app
from rnnlab.experiments.registry import (
    REGISTRY,
    ExperimentResult,
    RunContext,
    option,
    register,
    run_experiment,
)

CALLS: list[int] = []
FAIL_AT: list[int] = []


@dataclass
class JobsConfig:
    jobs: int = option(5, "jobs", low=1)
    scale: float = option(2.0, "a number every job uses")


def _job(k: int, scale: float) -> dict[str, float]:
    if k in FAIL_AT:
        raise RuntimeError(f"job {k} stopped")
    CALLS.append(k)
    return {"job": k, "value": scale * k * k}


if "_resume-probe" not in REGISTRY:
    @register("_resume-probe", "jobs that may stop", JobsConfig)
    def _probe(cfg: JobsConfig, ctx: RunContext) -> ExperimentResult:
        rows = ctx.run_jobs("jobs", _job, [(k, cfg.scale) for k in range(cfg.jobs)])
        return ExperimentResult(title="probe", rows=rows,
                                figures={"total": sum(r["value"] for r in rows),
                                         "resumed": ctx.resume_dir is not None})


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()
    FAIL_AT.clear()


def test_a_resumed_run_runs_only_the_unfinished_jobs(tmp_path: Path) -> None:
    whole, _ = run_experiment("_resume-probe", {}, tmp_path / "whole")
    assert CALLS == [0, 1, 2, 3, 4]
    CALLS.clear()
    FAIL_AT.append(3)
    with pytest.raises(RuntimeError, match="job 3 stopped"):
        run_experiment("_resume-probe", {}, tmp_path / "run")
    assert CALLS == [0, 1, 2] and (tmp_path / "run" / "error.txt").is_file()
    assert (tmp_path / "run" / "config.json").is_file()  # finished jobs keep the folder a run
    CALLS.clear()
    FAIL_AT.clear()
    result, run_dir = run_experiment("_resume-probe", {}, tmp_path / "run", resume=True)
    assert CALLS == [3, 4]                     # 0..2 came from the run folder
    assert result.rows == whole.rows and result.figures["total"] == whole.figures["total"]
    assert result.figures["resumed"] and not (run_dir / "error.txt").exists()
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["figures"]["total"] == whole.figures["total"]


def test_resume_refuses_other_options_and_other_runs(tmp_path: Path) -> None:
    run_experiment("_resume-probe", {"jobs": "2"}, tmp_path / "run")
    with pytest.raises(ValueError, match="options differ"):
        run_experiment("_resume-probe", {"scale": "3"}, tmp_path / "run", resume=True)
    CALLS.clear()
    run_experiment("_resume-probe", {"jobs": "2"}, tmp_path / "run", resume=True)
    assert CALLS == []                          # everything had finished
    with pytest.raises(ValueError, match="not a run folder"):
        (tmp_path / "empty").mkdir()
        run_experiment("_resume-probe", {}, tmp_path / "empty", resume=True)
    with pytest.raises(ValueError, match="holds a run of"):
        run_experiment("online-prediction", {}, tmp_path / "run", resume=True)


def test_a_changed_job_is_run_again(tmp_path: Path) -> None:
    FAIL_AT.append(1)
    with pytest.raises(RuntimeError):
        run_experiment("_resume-probe", {"jobs": "2"}, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["config"]["scale"] = 5.0             # edited by hand: job 0's arguments now differ
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    CALLS.clear()
    FAIL_AT.clear()
    result, _ = run_experiment("_resume-probe", {}, tmp_path / "run", resume=True)
    assert CALLS == [0, 1] and result.rows[1]["value"] == 5.0


def test_cli_resume(tmp_path: Path) -> None:
    FAIL_AT.append(1)
    runner = CliRunner()
    first = runner.invoke(app, ["run", "_resume-probe", "--jobs", "3", "--out",
                                str(tmp_path / "r")])
    assert first.exit_code == 1
    FAIL_AT.clear()
    CALLS.clear()
    again = runner.invoke(app, ["run", "_resume-probe", "--resume", str(tmp_path / "r")])
    assert again.exit_code == 0, again.output
    assert CALLS == [1, 2]
