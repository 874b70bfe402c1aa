"""The command line as a user meets it: one thread count, clear errors, honest run folders.

Issue 10, items 5 and 6. Most tests drive ``rnnlab run`` through typer's CliRunner with small
probe experiments registered for the test (they record what the run really saw: the torch thread
count inside the run, how often they ran); the music loader and rtrl-vs-bptt run for real with
tiny settings.
"""

from __future__ import annotations

import csv
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rnnlab.cli import app
from rnnlab.experiments.registry import (
    REGISTRY,
    ExperimentResult,
    option,
    register,
    thread_count,
)

runner = CliRunner()
CALLS: list[str] = []  # one entry per probe run that started (to check "before any work")


@dataclass
class ThreadsCfg:
    rows: int = option(1, "metrics rows to log")
    fail: bool = option(False, "raise after logging the rows")
    plot: str = option("probe", "name of the PNG to write")
    threads: int = option(1, "torch threads")


@dataclass
class TorchThreadsCfg:
    torch_threads: int = option(1, "torch threads (the reservoir experiments' name)")


@dataclass
class NoThreadsCfg:
    steps: int = option(1, "unused")


def _probe(cfg: ThreadsCfg, ctx) -> ExperimentResult:
    import matplotlib.pyplot as plt

    CALLS.append("threads")
    with thread_count(cfg.threads):  # what a real experiment does with its option
        seen = torch.get_num_threads()
        for i in range(cfg.rows):
            ctx.log_metrics({"row": i, "threads": seen})
        if cfg.fail:
            raise ValueError("probe failed on purpose")
        fig = plt.figure()
        ctx.save_figure(fig, cfg.plot)
    return ExperimentResult("probe", [{"threads": seen}], figures={"threads": seen})


def _probe_torch_threads(cfg: TorchThreadsCfg, ctx) -> ExperimentResult:
    CALLS.append("torch_threads")
    with thread_count(cfg.torch_threads):
        seen = torch.get_num_threads()
    return ExperimentResult("probe", [{"threads": seen}], figures={"threads": seen})


def _probe_no_threads(cfg: NoThreadsCfg, ctx) -> ExperimentResult:
    CALLS.append("none")
    seen = torch.get_num_threads()
    return ExperimentResult("probe", [{"threads": seen}], figures={"threads": seen})


@pytest.fixture(autouse=True)
def probes():
    names = {"_probe": (ThreadsCfg, _probe), "_probe-torch-threads":
             (TorchThreadsCfg, _probe_torch_threads), "_probe-no-threads":
             (NoThreadsCfg, _probe_no_threads)}
    from rnnlab.experiments.registry import list_experiments

    list_experiments()  # load the built-in experiments first
    for name, (cfg, fn) in names.items():
        register(name, "a probe for tests/test_cli.py", cfg)(fn)
    CALLS.clear()
    threads_before = torch.get_num_threads()
    try:
        yield
    finally:
        for name in [*names, "_clash"]:
            REGISTRY.pop(name, None)
        torch.set_num_threads(threads_before)


def _run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["run", *args], env=env)


def _config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())


def _seen(run_dir: Path) -> int:
    return json.loads((run_dir / "result.json").read_text())["figures"]["threads"]


def _clean_failure(result) -> None:
    """Exited with a code, printed no traceback (the CLI caught the error itself)."""
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------
# item 5: one thread count, recorded as used
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("probe", ["_probe", "_probe-torch-threads", "_probe-no-threads"])
def test_cli_threads_is_the_count_the_run_uses_and_records(tmp_path, probe):
    before = torch.get_num_threads()
    other = 3 if before != 3 else 2
    out = _run(probe, "--threads", str(other), "--out", str(tmp_path / "run"))
    assert out.exit_code == 0, out.output
    config = _config(tmp_path / "run")
    assert config["threads"] == other == _seen(tmp_path / "run")
    assert torch.get_num_threads() == before  # the CLI leaves the process as it found it


@pytest.mark.parametrize("option_name", ["--threads", "--torch-threads"])
def test_experiment_thread_option_alone_is_recorded(tmp_path, option_name):
    probe = "_probe" if option_name == "--threads" else "_probe-torch-threads"
    out = _run(probe, option_name, "2", "--out", str(tmp_path / "run"))
    assert out.exit_code == 0, out.output
    assert _config(tmp_path / "run")["threads"] == 2 == _seen(tmp_path / "run")


def test_cli_threads_and_experiment_option_must_agree(tmp_path):
    out = _run("_probe-torch-threads", "--threads", "2", "--torch-threads", "3",
               "--out", str(tmp_path / "run"))
    assert out.exit_code == 2, out.output
    assert "--threads" in out.stderr and "--torch-threads" in out.stderr
    assert CALLS == [] and not (tmp_path / "run").exists()
    out = _run("_probe-torch-threads", "--threads", "2", "--torch-threads", "2",
               "--out", str(tmp_path / "run"))
    assert out.exit_code == 0, out.output
    assert _config(tmp_path / "run")["threads"] == 2 == _seen(tmp_path / "run")


def test_rtrl_vs_bptt_measures_on_the_threads_config_json_records(tmp_path):
    tiny = ["--rtrl-hidden-sizes", "2,3", "--bptt-hidden-sizes", "2,3", "--lengths", "2,3",
            "--fixed-length", "2", "--fixed-hidden", "2", "--repeats", "1",
            "--grad-hidden", "2", "--grad-length", "3"]
    out = _run("rtrl-vs-bptt", "--threads", "2", *tiny, "--out", str(tmp_path / "run"))
    assert out.exit_code == 0, out.output
    config = _config(tmp_path / "run")
    # the count torch reported inside the measurement loop
    assert config["threads"] == config["config"]["threads"] == 2 == _seen(tmp_path / "run")


def test_an_experiment_cannot_declare_an_option_the_cli_owns():
    @dataclass
    class Clash:
        out: str = "x"

    with pytest.raises(TypeError, match="--out"):
        register("_clash", "an option named like the CLI's --out", Clash)(_probe_no_threads)
    assert "_clash" not in REGISTRY


# ------------------------------------------------------------------------------------------------
# item 6: --out checked before any work; no silent reuse
# ------------------------------------------------------------------------------------------------
def test_out_that_is_a_file_is_refused_before_any_work(tmp_path):
    somefile = tmp_path / "somefile"
    somefile.write_text("keep me")
    for target in (somefile, somefile / "sub"):  # a file; a path under a file (unwritable)
        out = _run("_probe", "--out", str(target))
        assert out.exit_code == 2, out.output
        _clean_failure(out)
        assert str(somefile) in out.stderr and "is a file" in out.stderr
    assert CALLS == [] and somefile.read_text() == "keep me"


def test_reusing_a_run_folder_needs_overwrite_which_removes_the_old_run(tmp_path):
    run_dir = tmp_path / "run"
    assert _run("_probe", "--plot", "old", "--rows", "3", "--out", str(run_dir)).exit_code == 0
    (run_dir / "notes.txt").write_text("mine")
    out = _run("_probe", "--plot", "new", "--out", str(run_dir))
    assert out.exit_code == 2 and "--overwrite" in out.stderr and str(run_dir) in out.stderr
    assert CALLS == ["threads"] and (run_dir / "old.png").is_file()
    out = _run("_probe", "--plot", "new", "--out", str(run_dir), "--overwrite")
    assert out.exit_code == 0, out.output
    assert not (run_dir / "old.png").exists() and (run_dir / "new.png").is_file()
    with open(run_dir / "metrics.csv") as fh:  # the new run's single row, not the old three
        assert len(list(csv.DictReader(fh))) == 1
    assert (run_dir / "notes.txt").read_text() == "mine"  # not a file rnnlab writes: kept


def test_overwrite_refuses_a_folder_that_is_not_a_run_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "photo.png").write_bytes(b"not ours")
    out = _run("_probe", "--out", str(folder), "--overwrite")
    assert out.exit_code == 2, out.output
    assert str(folder) in out.stderr and CALLS == []
    assert (folder / "photo.png").read_bytes() == b"not ours"


# ------------------------------------------------------------------------------------------------
# item 6: a run that fails
# ------------------------------------------------------------------------------------------------
def test_a_failed_run_keeps_finished_rows_and_says_it_failed(tmp_path):
    run_dir = tmp_path / "run"
    out = _run("_probe", "--rows", "3", "--fail", "true", "--out", str(run_dir))
    assert out.exit_code == 1
    _clean_failure(out)
    assert "probe failed on purpose" in out.stderr and str(run_dir) in out.stderr
    with open(run_dir / "metrics.csv") as fh:
        assert [int(r["row"]) for r in csv.DictReader(fh)] == [0, 1, 2]
    assert "probe failed on purpose" in (run_dir / "error.txt").read_text()
    assert not (run_dir / "result.json").exists()


def test_a_run_that_finished_nothing_leaves_no_folder(tmp_path):
    run_dir = tmp_path / "new" / "run"
    out = _run("_probe", "--rows", "0", "--fail", "true", "--out", str(run_dir))
    assert out.exit_code == 1
    _clean_failure(out)
    assert not (tmp_path / "new").exists()  # every folder it made is gone again
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _run("_probe", "--rows", "0", "--fail", "true", "--out", str(empty))
    assert out.exit_code == 1 and empty.is_dir() and list(empty.iterdir()) == []


@pytest.mark.parametrize("how", ["--debug", "RNNLAB_DEBUG"])
def test_debug_shows_the_traceback(tmp_path, how):
    run_dir = tmp_path / "run"
    args = ["_probe", "--rows", "2", "--fail", "true", "--out", str(run_dir)]
    if how == "--debug":
        out = _run(*args, "--debug")
    else:
        out = _run(*args, env={"RNNLAB_DEBUG": "1"})
    assert isinstance(out.exception, ValueError), repr(out.exception)
    assert (run_dir / "error.txt").is_file()  # the folder is marked failed all the same


# ------------------------------------------------------------------------------------------------
# item 6: a bad --data file for the JSB experiments
# ------------------------------------------------------------------------------------------------
BAD_DATA = {
    "not-json.json": (b"{ this is not json", "not valid JSON"),
    "binary.json": (b"\xff\xfe\x00garbage", "not valid JSON"),
    "a-list.json": (b"[1, 2, 3]", "expected a dict"),
    "missing-splits.json": (json.dumps({"train": []}).encode(), "missing ['valid', 'test']"),
    "bad-note.json": (json.dumps({"train": [[[200]]], "valid": [[[60]]], "test": [[[60]]]})
                      .encode(), "MIDI note 200"),
    "broken.pickle": (pickle.dumps({"train": []})[:-5], "not a readable pickle"),
}


@pytest.mark.parametrize("filename", sorted(BAD_DATA))
def test_a_malformed_data_file_is_named_with_its_problem(tmp_path, filename):
    content, problem = BAD_DATA[filename]
    path = tmp_path / filename
    path.write_bytes(content)
    run_dir = tmp_path / "run"
    out = _run("lstm-variants", "--data", str(path), "--quick", "true", "--out", str(run_dir))
    assert out.exit_code == 1, out.output
    _clean_failure(out)
    assert str(path) in out.stderr and problem in out.stderr, out.stderr
    assert not run_dir.exists()  # nothing was finished: no folder holding only config.json


def test_deep_rnn_names_a_malformed_data_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{]")
    out = _run("deep-rnn", "--data", str(path), "--quick", "true", "--out", str(tmp_path / "r"))
    assert out.exit_code == 1
    _clean_failure(out)
    assert str(path) in out.stderr and "not valid JSON" in out.stderr
