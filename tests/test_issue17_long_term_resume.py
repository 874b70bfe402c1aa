"""Issue 17, ``long-term``: a run stopped mid-training continues from its saved state bit for bit
(SGD with clipping, Adam on a GRU, Hessian-free), the state of another run is refused, and the
two plots show exactly the numbers of ``metrics.csv`` and the logged gradient-norm traces."""

import csv
import json
import math
import statistics

import pytest
import torch

from rnnlab.experiments import get_experiment, resolve_config, run_experiment
from rnnlab.experiments import long_term as lt


def _tiny(**kw):
    base = {"lags": (4,), "seeds": (0,), "hidden_size": 4, "budget": 400, "batch": 5,
            "hf_batch": 8, "hf_cg_iters": 3, "val_size": 8, "test_size": 16, "eval_every": 2,
            "workers": 1, "checkpoint_seconds": 1e-9}  # a state after every update
    base.update(kw)
    return lt.LongTermConfig(**base)


class _Killed(Exception):
    pass


def _train(cfg, name, folder, task="delayed_recall"):
    val = lt.make_task(cfg, task, 4, cfg.val_size, torch.Generator().manual_seed(7))
    state = lt.RunState(str(folder), repr((cfg, task, 4, name, 0)), cfg.checkpoint_seconds)
    return lt.train_model(cfg, lt.METHODS[name], task, 4, 0, val, state)


@pytest.mark.parametrize(("name", "task"), [("sgd_clip", "delayed_recall"),
                                            ("gru", "adding_problem"),
                                            ("hf", "delayed_recall")])
def test_a_stopped_run_resumes_bit_for_bit(tmp_path, monkeypatch, name, task):
    # solving would end the runs early; an unreachable validation target keeps them going
    monkeypatch.setattr(lt, "evaluate", lambda model, t: (0.0, False, 0.0, 1.0, False))
    cfg = _tiny(tasks=(task,), lags=(10,) if task == "adding_problem" else (4,))
    ref_model, ref_log = _train(cfg, name, tmp_path / "ref")
    assert ref_log.updates >= 4

    saves = {"n": 0}
    real_save = lt.RunState.save

    def save_then_die(self, **state):
        real_save(self, **state)
        saves["n"] += 1
        if saves["n"] == 3:  # killed right after the third state was written
            raise _Killed

    monkeypatch.setattr(lt.RunState, "save", save_then_die)
    with pytest.raises(_Killed):
        _train(cfg, name, tmp_path / "run")
    monkeypatch.setattr(lt.RunState, "save", real_save)
    model, log = _train(cfg, name, tmp_path / "run")  # a fresh process would do the same
    # the same operations on the same values in the same order: equal bits, not a tolerance
    for (k, a), (_, b) in zip(ref_model.state_dict().items(), model.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    assert log == ref_log


def test_the_state_of_another_run_is_refused(tmp_path):
    cfg = _tiny(budget=20)
    _train(cfg, "sgd", tmp_path)
    other = lt.RunState(str(tmp_path), "another run", 1.0)
    with pytest.raises(ValueError, match="another run"):
        other.load()


def test_experiment_keeps_each_runs_state_in_its_job_folder(tmp_path):
    args = {"lags": "4", "methods": "sgd_clip,hf", "seeds": "0", "hidden-size": "4",
            "budget": "60", "batch": "5", "hf-batch": "8", "hf-cg-iters": "2", "val-size": "8",
            "test-size": "16", "workers": "1", "tasks": "delayed_recall",
            "checkpoint-seconds": "1e-9"}
    _, run_dir = run_experiment("long-term", args, out_dir=tmp_path)
    states = sorted(p.parent.name for p in (run_dir / "jobs").rglob(lt.RunState.NAME))
    assert states == ["delayed_recall_hf_tau4_seed0", "delayed_recall_sgd_clip_tau4_seed0"]


def test_paper_preset_checkpoints_every_five_minutes():
    cfg = lt.effective_config(resolve_config(get_experiment("long-term"), {"preset": "paper"}))
    assert cfg.checkpoint_seconds == 300.0
    default = lt.effective_config(resolve_config(get_experiment("long-term"), {}))
    assert default.checkpoint_seconds == 0 and default.tasks == lt.TASKS


def test_plots_show_the_logged_numbers(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    figures = {}
    real_success, real_norms = lt._plot_success, lt._plot_grad_norms

    def keep(name, fn):
        def wrapped(*a):
            figures[name] = fig = fn(*a)
            return fig
        return wrapped

    monkeypatch.setattr(lt, "_plot_success", keep("success", real_success))
    monkeypatch.setattr(lt, "_plot_grad_norms", keep("norms", real_norms))
    monkeypatch.setattr("matplotlib.pyplot.close", lambda fig=None: None)
    _, run_dir = run_experiment("long-term", {
        "lags": "3,6", "methods": "sgd,sgd_clip", "seeds": "0,1", "budget": "100",
        "batch": "10", "eval-every": "5", "val-size": "8", "test-size": "16", "workers": "1",
        "tasks": "delayed_recall"}, out_dir=tmp_path)
    for png in ("success_vs_lag.png", "gradient_norms.png"):
        assert (run_dir / png).read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))

    # success rate against lag: one line per method, y = solved runs / runs in metrics.csv
    ax = figures["success"].axes[0]
    labels = [lt.method_label(lt.LongTermConfig(), m) for m in ("sgd", "sgd_clip")]
    # each method is an errorbar container: its label, and lines[0] the data line
    lines = {c.get_label(): c.lines[0] for c in ax.containers}
    for name, label in zip(("sgd", "sgd_clip"), labels, strict=True):
        want = []
        for tau in (3, 6):
            rs = [r for r in rows if r["method"] == name and int(r["tau"]) == tau]
            want.append(sum(r["solved"] == "True" for r in rs) / len(rs))
        assert list(lines[label].get_ydata()) == want

    # gradient norms: each curve is the logged trace of seed 0, whose median is in metrics.csv
    ax = figures["norms"].axes[0]
    curves = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    for name, word in (("sgd", "plain"), ("sgd_clip", "clipped")):
        for tau in (3, 6):
            trace = json.loads((run_dir / "grad_norms" /
                                f"delayed_recall_{name}_{tau}.json").read_text())
            assert curves[f"tau={tau}, {word}"] == trace
            row = next(r for r in rows if r["method"] == name and int(r["tau"]) == tau
                       and r["seed"] == "0")
            assert math.isclose(float(row["grad_norm_median"]), statistics.median(trace),
                                rel_tol=1e-12)
            assert int(row["updates"]) == len(trace)
