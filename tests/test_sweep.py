"""Sweeps with Optuna over an experiment's declared options: parameter specs checked against
the options, the objective read from the result, pruning through RunContext.report, two
processes sharing one study through a journal file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from rnnlab.experiments.registry import get_experiment  # noqa: E402
from rnnlab.sweep import parse_param, run_sweep  # noqa: E402

FAST = {"steps": "60", "report_every": "20", "plot_last": "10", "hidden_size": "3"}


def test_param_specs_follow_the_options_declarations() -> None:
    exp = get_experiment("online-prediction")
    p = parse_param(exp, "lr=0.001:0.1:log")
    assert (p.kind, p.low, p.high, p.log) == ("float", 0.001, 0.1, True)
    assert parse_param(exp, "hidden-size=2:8").kind == "int"
    assert parse_param(exp, "optimizer=sgd,adam").choices == ("sgd", "adam")
    for bad, message in [("nope=1:2", "has no option 'nope'"),
                         ("lr=0.1:0.01", "LOW must be below HIGH"),
                         ("lr=0:1:log", "must be|LOW > 0"),
                         ("optimizer=sgd,rmsprop", "rmsprop"),
                         ("hidden_size=2.5:8", "expects int"),
                         ("series=0:1", "not a number"),
                         ("lr", "expected NAME=")]:
        with pytest.raises(ValueError, match=message):
            parse_param(exp, bad)


def test_sweep_records_every_trial_and_prunes_on_reported_values(tmp_path: Path) -> None:
    seen = []
    study, folder = run_sweep("online-prediction", ["lr=0.001:0.5:log"],
                              objective="final_window_nrmse", trials=5, fixed=FAST,
                              out_dir=tmp_path / "sw", seed=0, on_trial=seen.append)
    assert len(study.trials) == 5 and [t.number for t in seen] == list(range(5))
    for t in study.trials:
        if t.state.name == "COMPLETE":
            # the objective is the run's own figure, read back from its run folder
            import json
            result = json.loads((Path(t.user_attrs["run_dir"]) / "result.json").read_text())
            assert t.value == result["figures"]["final_window_nrmse"]
            assert 0.001 <= t.params["lr"] <= 0.5
        # every trial reported its window NRMSE at steps 20, 40, 60 (or until pruned)
        assert set(t.intermediate_values) <= {20, 40, 60} and t.intermediate_values
    assert (folder / "trials.csv").is_file() and (folder / "history.png").is_file()
    with pytest.raises(ValueError, match="no number 'nope'"):
        from rnnlab.sweep import _objective_value
        _objective_value(type("R", (), {"figures": {"a": 1.0, "b": "text"}})(), "nope")


def test_bad_sweeps_fail_before_any_trial(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both swept and fixed"):
        run_sweep("online-prediction", ["lr=0.01:0.1"], objective="x", fixed={"lr": "0.1"},
                  out_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="direction"):
        run_sweep("online-prediction", ["lr=0.01:0.1"], objective="x", direction="up",
                  out_dir=tmp_path / "b")
    with pytest.raises(KeyError):
        run_sweep("no-such-experiment", ["lr=0.01:0.1"], objective="x", out_dir=tmp_path)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_two_processes_share_one_study_through_a_journal_file(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    cmd = [sys.executable, "-m", "rnnlab.cli", "sweep", "online-prediction",
           "--param", "lr=0.001:0.5:log", "--objective", "final_window_nrmse",
           "--trials", "2", "--storage", str(journal), "--study", "shared",
           "--out", str(tmp_path / "sweep"), "--no-prune"]
    for k, v in FAST.items():
        cmd += ["--set", f"{k}={v}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*cmd, "--seed", str(s)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for s in (1, 2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    from optuna.storages.journal import JournalFileBackend
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="shared", storage=storage)
    # both processes' trials are in the one study, numbered without a clash
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert len({t.user_attrs["run_dir"] for t in study.trials}) == 4
