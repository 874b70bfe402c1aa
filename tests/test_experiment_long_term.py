"""The ``long-term`` experiment: end to end on tiny grids, the table's shape, that the pipeline
can succeed (an easy lag is solved, checked against the inputs directly) and bad options."""

import csv
import json
import math
import re

import pytest
import torch
from typer.testing import CliRunner

from rnnlab.cli import app
from rnnlab.experiments import get_experiment, resolve_config, run_experiment
from rnnlab.experiments import long_term as lt

runner = CliRunner()
CELL = re.compile(r"^(\d+)/(\d+) \[(\d\.\d\d), (\d\.\d\d)\]$")

# A grid that exercises every method once, in seconds.
TINY = {
    "tasks": "delayed_recall,adding_problem", "lags": "10", "methods": "sgd,hf,orthogonal,lstm",
    "seeds": "0", "budget": "48", "eval-every": "3", "batch": "8",
    "hf-batch": "8", "hf-cg-iters": "3", "val-size": "16", "test-size": "40", "workers": "1",
}


def _read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_tiny_grid_end_to_end(tmp_path):
    result, run_dir = run_experiment("long-term", TINY, out_dir=tmp_path)
    for name in ("config.json", "metrics.csv", "table.csv", "result.json", "success_vs_lag.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "success_vs_lag.png").read_bytes()[:4] == b"\x89PNG"

    metrics = _read_metrics(run_dir)
    # one row per (task, method, tau, seed)
    keys = {(m["task"], m["method"], int(m["tau"]), int(m["seed"])) for m in metrics}
    assert keys == {(t, m, 10, 0) for t in ("delayed_recall", "adding_problem")
                    for m in ("sgd", "hf", "orthogonal", "lstm")}
    for m in metrics:
        assert 0.0 <= float(m["success_rate"]) <= 1.0
        # SGD: 48 // 8 = 6 updates of 8 sequences at most; HF: one update costs at least
        # 8 * (1 + 1 CG product + 1 structural product) = 24 > 48 / 2, so at most 2 fit
        assert int(m["updates"]) <= (2 if m["method"] == "hf" else 6)
        assert float(m["cost"]) <= 48 or m["method"] == "hf"

    # the papers' table: per task a chance row then one row per method; one column per lag
    rows = result.rows
    assert [r["method"] for r in rows[:5]] == [
        "chance success rate (ignores the inputs)", "tanh RNN + SGD", "tanh RNN + Hessian-free",
        "tanh RNN + orthogonal init + clipping", "LSTM + Adam + clipping"]
    assert len(rows) == 10 and all(
        list(r) == ["task", "method", "tau=10", lt.LONGEST, lt.COST_USED] for r in rows)
    by_run = {(m["task"], m["method"]): m["solved"] == "True" for m in metrics}
    for row in rows:
        if row["method"].startswith("chance"):
            continue
        solved, runs, lo, hi = CELL.match(row["tau=10"]).groups()
        name = next(k for k in lt.METHODS if lt.method_label(lt.LongTermConfig(), k)
                    == row["method"])
        assert int(solved) == by_run[(row["task"], name)] and int(runs) == 1
        # one run: the Wilson interval of 0/1 or 1/1 at 95%
        assert (float(lo), float(hi)) == pytest.approx(lt.wilson_interval(int(solved), 1),
                                                       abs=0.0051)
        assert row[lt.LONGEST] == ("10" if int(solved) else "none")
    with open(run_dir / "table.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 10

    # chance rows against their closed forms: one fair bit; Pascanu's adding problem 2a - a^2
    assert float(rows[0]["tau=10"]) == pytest.approx(0.5)
    a = 2 * math.sqrt(0.04)
    assert float(rows[5]["tau=10"]) == pytest.approx(2 * a - a * a, abs=1e-3)
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["figures"]["runs_total"] == 8
    assert set(saved["figures"]["success"]) == {"delayed_recall", "adding_problem"}


def test_easy_lag_is_solved_and_checked_against_the_inputs(tmp_path):
    """Delayed recall at tau = 2: the pipeline reaches success 1.0, and a fresh batch scored by
    hand (output > 0.5 exactly when the bit shown tau steps earlier was 1) agrees."""
    cfg = resolve_config(get_experiment("long-term"), {
        "tasks": "delayed_recall", "lags": "2", "methods": "sgd_clip", "seeds": "0",
        "budget": "12800", "batch": "32", "eval-every": "25", "lr": "0.05", "momentum": "0.9",
        "workers": "1",
        "test-size": "500"})
    result, run_dir = run_experiment("long-term", {
        "tasks": "delayed_recall", "lags": "2", "methods": "sgd_clip", "seeds": "0",
        "budget": "12800", "batch": "32", "eval-every": "25", "lr": "0.05", "momentum": "0.9",
        "workers": "1",
        "test-size": "500"}, out_dir=tmp_path)
    (row,) = _read_metrics(run_dir)
    assert float(row["success_rate"]) == 1.0 and row["solved"] == "True"
    assert result.figures["success"]["delayed_recall"]["sgd_clip"][2] == 1.0

    val = lt.make_task(cfg, "delayed_recall", 2, cfg.val_size, torch.Generator().manual_seed(
        lt.derive_seed("validation", "delayed_recall", 2, cfg.test_seed)))
    # The run trained under cfg.torch_threads: so does this copy (another thread count could
    # round its sums otherwise), so the two are the same computation and agree exactly.
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)
    try:
        model, log = lt.train_model(cfg, lt.METHODS["sgd_clip"], "delayed_recall", 2, 0, val)
    finally:
        torch.set_num_threads(threads)
    assert log.solved_at is not None and log.updates == int(row["updates"])
    x = torch.randint(0, 2, (300, 3, 1), generator=torch.Generator().manual_seed(99)).float()
    with torch.no_grad():
        out = model(x)[0]
    # thresholded at 0.5, the outputs sit 0.31 or more from it (measured): no knife edge
    assert torch.equal(out[:, 2, 0] > 0.5, x[:, 0, 0] > 0.5)
    assert float((out[:, 2, 0] - 0.5).abs().min()) > 0.05


def test_cli_runs_the_experiment(tmp_path):
    out = runner.invoke(app, ["run", "long-term", "--tasks", "delayed_recall", "--lags", "3,5",
                              "--methods", "sgd,gru", "--seeds", "0,1", "--budget", "80",
                              "--eval-every", "2", "--test-size", "30", "--val-size", "10",
                              "--workers", "1", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "tau=3" in out.output and "tau=5" in out.output
    assert (tmp_path / "success_vs_lag.png").is_file()
    metrics = _read_metrics(tmp_path)
    assert len(metrics) == 8  # 2 lags x 2 methods x 2 seeds
    for row in csv.DictReader(open(tmp_path / "table.csv")):
        if not row["method"].startswith("chance"):
            for col in ("tau=3", "tau=5"):
                solved, runs, lo, hi = CELL.match(row[col]).groups()
                assert 0.0 <= float(lo) <= float(hi) <= 1.0 and int(solved) <= int(runs) == 2


def test_same_seeds_same_rows_serial_and_parallel(tmp_path):
    grid = {"tasks": "delayed_recall", "lags": "3", "methods": "sgd,orthogonal", "seeds": "0",
            "budget": "100", "eval-every": "5", "test-size": "50", "val-size": "10",
            "dtype": "float64"}
    a, dir_a = run_experiment("long-term", {**grid, "workers": "1"}, out_dir=tmp_path / "a")
    b, dir_b = run_experiment("long-term", {**grid, "workers": "2"}, out_dir=tmp_path / "b")
    assert a.rows == b.rows

    def key(rows):
        return sorted((r["method"], r["test_mse"], r["train_loss"]) for r in rows)

    assert key(_read_metrics(dir_a)) == key(_read_metrics(dir_b))


def test_training_validation_and_test_data_differ():
    cfg = lt.LongTermConfig()
    seeds = {lt.derive_seed(role, "adding_problem", 20, 0) for role in ("train", "model")}
    seeds |= {lt.derive_seed(role, "adding_problem", 20, cfg.test_seed)
              for role in ("validation", "test")}
    assert len(seeds) == 4
    train = lt.make_task(cfg, "adding_problem", 20, 64, torch.Generator().manual_seed(
        lt.derive_seed("train", "adding_problem", 20, 0)))
    test = lt.make_task(cfg, "adding_problem", 20, 64, torch.Generator().manual_seed(
        lt.derive_seed("test", "adding_problem", 20, cfg.test_seed)))
    assert not torch.equal(train.info["values"], test.info["values"])
    assert lt.derive_seed("train", "x", 1, 0) == lt.derive_seed("train", "x", 1, 0)


def test_a_diverging_method_is_a_result_not_a_crash(tmp_path):
    # plain SGD at an absurd learning rate: the weights blow up; the run must still finish, no
    # NaN gradient is ever applied, and the success rate stays a valid number
    _, run_dir = run_experiment("long-term", {
        "tasks": "adding_problem", "lags": "10", "methods": "sgd", "seeds": "0",
        "budget": "600", "lr": "1e30", "momentum": "0", "workers": "1", "test-size": "40"},
        out_dir=tmp_path)
    (row,) = _read_metrics(run_dir)
    assert 0.0 <= float(row["success_rate"]) <= 1.0
    assert int(row["skipped"]) > 0 or row["diverged"] == "True"


def test_a_crash_keeps_the_finished_runs(tmp_path, monkeypatch):
    real = lt.train_run
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(lt, "train_run", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        run_experiment("long-term", {"tasks": "delayed_recall", "lags": "2", "methods": "sgd",
                                     "seeds": "0,1,2", "budget": "40", "workers": "1",
                                     "test-size": "10"}, out_dir=tmp_path)
    assert len(_read_metrics(tmp_path)) == 1


def test_quick_replaces_only_defaults():
    exp = get_experiment("long-term")
    cfg = lt.effective_config(resolve_config(exp, {"quick": "true", "budget": "777"}))
    assert cfg.budget == 777  # given explicitly: kept
    assert cfg.lags == lt.QUICK["lags"] and cfg.seeds == lt.QUICK["seeds"]
    assert cfg.test_size == lt.QUICK["test_size"]
    plain = resolve_config(exp, {})
    assert lt.effective_config(plain) is plain
    # gated units are available: every method but the optional sparse start and Omega
    assert set(plain.methods) == set(lt.METHODS) - {"sparse_init", "sgd_clip_omega",
                                                    "sparse_init_omega"}


@pytest.mark.parametrize(("overrides", "match"), [
    ({"tasks": "parity"}, "unknown tasks"),
    ({"methods": "sgd,adam"}, "unknown methods"),
    ({"methods": "sgd,sgd"}, "duplicates"),
    ({"lags": "0,10"}, "lags"),
    ({"tasks": "adding_problem", "lags": "5,10"}, "adding problem needs T >= 10"),
    ({"tasks": "adding_problem", "lags": "10", "adding-variant": "hochreiter1997"}, "T >= 20"),
    ({"adding-variant": "martens"}, "adding_variant"),
    ({"seeds": "1,1"}, "seeds"),
    ({"lr": "-0.1"}, "lr"),
    ({"lr": "nan"}, "lr"),
    ({"clip": "0"}, "clip"),
    ({"momentum": "1"}, "momentum"),
    ({"budget": "0"}, "budget"),
    ({"workers": "0"}, "workers"),
    ({"hf-structural-damping": "-1"}, "hf_structural_damping"),
    ({"budget": "10", "batch": "20"}, "below one SGD update"),
    ({"methods": "hf", "budget": "10", "hf-batch": "64"}, "below one Hessian-free"),
    ({"preset": "huge"}, "preset"),
    ({"preset": "paper", "quick": "true"}, "exclude each other"),
    ({"confidence": "1"}, "confidence"),
    ({"dtype": "float16"}, "dtype"),
    ({"device": "abacus"}, "device"),
])
def test_bad_options_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(get_experiment("long-term"), overrides)


def test_bad_option_on_the_cli_exits_2():
    out = runner.invoke(app, ["run", "long-term", "--methods", "sgd,nesterov"])
    assert out.exit_code == 2 and "unknown methods" in out.output


def test_gated_methods_say_when_cells_are_missing(monkeypatch):
    def missing():
        raise ImportError("rnnlab.cells is not available yet (simulated)")

    monkeypatch.setattr(lt, "_gated_classes", missing)
    assert not lt.gated_units_available()
    with pytest.raises(ValueError, match=r"rnnlab\.cells is not available yet"):
        resolve_config(get_experiment("long-term"), {"methods": "sgd,lstm"})
    with pytest.raises(ImportError, match=r"rnnlab\.cells is not available yet"):
        lt.build_model(lt.LongTermConfig(methods=("lstm",)), lt.METHODS["lstm"],
                       "delayed_recall", 0)


@pytest.mark.slow
def test_quick_grid_runs(tmp_path):
    result, _ = run_experiment("long-term", {"quick": "true"}, out_dir=tmp_path)
    assert result.figures["runs_total"] == 2 * len(lt._default_methods())
    assert result.figures["wall_seconds"] < 120


def test_gated_optimizer_option_is_validated():
    from rnnlab.experiments import get_experiment, resolve_config

    exp = get_experiment("long-term")
    assert resolve_config(exp, {"gated-optimizer": "sgd"}).gated_optimizer == "sgd"
    with pytest.raises(ValueError, match="gated_optimizer"):
        resolve_config(exp, {"gated-optimizer": "rmsprop"})
    with pytest.raises(ValueError, match="gated_lr"):
        resolve_config(exp, {"gated-lr": "0"})
