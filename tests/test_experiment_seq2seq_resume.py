"""The seq2seq experiments train through ``rnnlab.train.Trainer``: a stopped run resumed with
``--resume`` ends bit for bit like an uninterrupted one, and ``--average-last K`` uses the mean
of the last K epoch-end weights, which ``rnnlab translate`` then runs."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import rnnlab.experiments._seq2seq_common as common
from rnnlab.cli import app
from rnnlab.experiments.registry import run_experiment
from rnnlab.seq2seq import average_checkpoints

pytest.importorskip("sacrebleu")
pytest.importorskip("babel")

# 96 examples in batches of 32: 3 updates per epoch, 6 per model, 12 in all
OPTS = {"tasks": "reverse", "models": "bahdanau,luong", "epochs": "2", "batch-size": "32",
        "train-size": "96", "test-size": "12", "hidden-size": "12", "embed-size": "4",
        "train-length": "4", "test-length": "6", "min-length": "1", "checkpoint-every": "2"}


def _states(run_dir):
    return {p.name: torch.load(p / "model.pt", weights_only=True)
            for p in sorted((run_dir / "models").iterdir())}


@pytest.mark.parametrize("stop_at", [4, 8])  # in the first model's 2nd epoch; the second's 1st
def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch, stop_at):
    full, full_dir = run_experiment("seq2seq", OPTS, out_dir=tmp_path / "full")

    count = {"steps": 0}

    def stop(trainer, event):
        if event == "step":
            count["steps"] += 1
            if count["steps"] == stop_at:
                raise KeyboardInterrupt  # the trainer writes a checkpoint first

    monkeypatch.setattr(common, "trainer_callbacks", lambda: [stop])
    with pytest.raises(KeyboardInterrupt):
        run_experiment("seq2seq", OPTS, out_dir=tmp_path / "stopped")
    assert count["steps"] == stop_at
    monkeypatch.setattr(common, "trainer_callbacks", lambda: [])
    resumed, run_dir = run_experiment("seq2seq", {}, out_dir=tmp_path / "stopped", resume=True)
    # the same operations on the same values in the same order (one machine, one thread
    # count): bit-identical, as docs/train.md states for the trainer
    assert resumed.rows == full.rows
    a, b = _states(full_dir), _states(run_dir)
    assert a.keys() == b.keys() == {"reverse-bahdanau-seed0", "reverse-luong-seed0"}
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    for job in a:
        for f in ("metrics.csv", "metrics.jsonl"):
            assert (full_dir / "jobs" / job / f).read_bytes() == \
                (run_dir / "jobs" / job / f).read_bytes()


def test_average_last_is_the_mean_of_the_last_epochs(tmp_path):
    opts = {**OPTS, "models": "luong", "epochs": "3", "average-last": "2"}
    _, run_dir = run_experiment("seq2seq", opts, out_dir=tmp_path / "avg")
    job = "reverse-luong-seed0"
    snaps = sorted((run_dir / "jobs" / job / "snapshots").glob("epoch_*.pt"))
    assert [p.name for p in snaps] == ["epoch_0002.pt", "epoch_0003.pt"]  # the last 2 kept
    states = [torch.load(p, weights_only=True) for p in snaps]
    saved = torch.load(run_dir / "models" / job / "model.pt", weights_only=True)
    # the two epochs differ, so the mean is a third model
    assert any(not torch.equal(states[0][k], states[1][k]) for k in saved)
    for k, v in saved.items():
        mean = (states[0][k].double() + states[1][k].double()) / 2
        # averaged in float64, rounded once to float32: within half a float32 ulp
        assert torch.all((v.double() - mean).abs() <= mean.abs() * 2.0 ** -24), k
    # in float64 the average is the mean to rounding (1e-12)
    for i, s in enumerate(states):
        torch.save({k: t.double() for k, t in s.items()}, tmp_path / f"s{i}.pt")
    avg64 = average_checkpoints([tmp_path / "s0.pt", tmp_path / "s1.pt"])
    for k in saved:
        mean = (states[0][k].double() + states[1][k].double()) / 2
        torch.testing.assert_close(avg64[k], mean, atol=1e-12, rtol=0)
    # the translator is the averaged model
    from rnnlab.experiments._seq2seq_common import decode_pairs, load_translator

    model, sv, tv, _tok, _ = load_translator(run_dir / "models" / job)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k])
    greedy, _ = decode_pairs(model, [list("1234")], sv, tv)
    res = CliRunner().invoke(app, ["translate", "--model", str(run_dir), "--beam", "1",
                                   "1234"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == ["".join(greedy[0][0])]


def test_training_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        run_experiment("seq2seq", {**OPTS, "patience": "2"}, out_dir=tmp_path / "a")


def test_early_stopping_restores_the_best_epoch(tmp_path):
    opts = {**OPTS, "models": "luong", "epochs": "3", "patience": "1", "average-last": "0"}
    _, run_dir = run_experiment("seq2seq", opts, out_dir=tmp_path / "es")
    import json

    rows = [json.loads(x) for x in
            (run_dir / "jobs" / "reverse-luong-seed0" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert all(r["val_loss"] is not None for r in epochs)
    best = min(epochs, key=lambda r: r["val_loss"])
    assert best["best"]


def test_paper_readout_for_bahdanau(tmp_path):
    opts = {**OPTS, "models": "bahdanau,cho", "epochs": "1", "bahdanau-readout": "maxout"}
    result, run_dir = run_experiment("seq2seq", opts, out_dir=tmp_path / "paper")
    from rnnlab.experiments._seq2seq_common import load_translator, translate

    model, *_, meta = load_translator(run_dir / "models" / "reverse-bahdanau-seed0")
    assert meta["kwargs"]["readout"] == "maxout" and model.maxout_size == 6
    assert hasattr(model, "deep_output")
    # the other models are matched to the maxout model's parameter count
    params = {r["model"]: r["params"] for r in result.rows}
    assert abs(params["cho"] - params["bahdanau"]) / params["bahdanau"] < 0.15
    assert len(translate(run_dir / "models" / "reverse-bahdanau-seed0", ["123"])) == 1


def test_paper_readout_for_cho(tmp_path):
    opts = {**OPTS, "models": "bahdanau,cho", "epochs": "1", "cho-readout": "maxout"}
    result, run_dir = run_experiment("seq2seq", opts, out_dir=tmp_path / "cho")
    from rnnlab.experiments._seq2seq_common import count_parameters, load_translator

    cho, *_, meta = load_translator(run_dir / "models" / "reverse-cho-seed0")
    assert meta["kwargs"]["readout"] == "maxout" and hasattr(cho, "deep_output")
    bahdanau, *_, meta = load_translator(run_dir / "models" / "reverse-bahdanau-seed0")
    assert meta["kwargs"].get("readout", "linear") == "linear"
    # matched to the (linear) bahdanau model's parameter count, at its own (maxout) width
    params = {r["model"]: r["params"] for r in result.rows}
    assert params["cho"] == count_parameters(cho) and params["bahdanau"] == count_parameters(
        bahdanau)
    assert abs(params["cho"] - params["bahdanau"]) / params["bahdanau"] < 0.15
