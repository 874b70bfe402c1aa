"""The polyphonic-music experiments ``lstm-variants`` and ``deep-rnn`` and their training loop.

References: the frame NLL against ``binary_cross_entropy_with_logits`` on each sequence alone
(no padding, no batching), Welch's t-test against its closed form with scipy's t distribution,
parameter counts against closed forms and ``torch.nn.LSTM``, and the experiments' tables against
their own per-seed ``metrics.csv`` recomputed with scipy.

Tolerances: means and sums of a handful of float64 numbers (<= 10 terms of O(1), read back
from CSV files written with repr, i.e. exactly): 2 gamma_10 ~ 2e-15 relative, held to 1e-12;
scipy's t distribution tail against the closed form, to 1e-10 (its own accuracy).
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from rnnlab.experiments import _music_training as mt
from rnnlab.experiments import get_experiment, list_experiments, resolve_config, run_experiment
from rnnlab.experiments.deep_rnn import (
    MODELS,
    PUBLISHED,
    build_network,
    canonical_model,
    matched_width,
)
from rnnlab.experiments.lstm_variants import build_lstm_network
from rnnlab.experiments.registry import mean_std
from rnnlab.tasks.music import LOWEST_MIDI, NUM_KEYS, marginal_nll, notes_to_roll

COIN_FLIP = 88 * math.log(2.0)


def _synthetic_split(n: int, gen: torch.Generator) -> list[list[list[int]]]:
    """Chorale-like sequences: the progression I-IV-V-I (each chord held 2 frames), transposed
    by -3..3 semitones, 12..20 frames long; a network can learn it within a few updates."""
    chords = [(48, 60, 64, 67), (53, 60, 65, 69), (55, 59, 62, 67), (48, 60, 64, 67)]
    out = []
    for _ in range(n):
        shift = int(torch.randint(-3, 4, (1,), generator=gen))
        length = int(torch.randint(12, 21, (1,), generator=gen))
        seq = [[m + shift for m in chords[(t // 2) % 4]] for t in range(length)]
        out.append(seq)
    return out


@pytest.fixture
def tiny_json(tmp_path):
    gen = torch.Generator().manual_seed(1234)
    data = {"train": _synthetic_split(8, gen), "valid": _synthetic_split(4, gen),
            "test": _synthetic_split(4, gen)}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data))
    return path


def _rolls(path, dtype=torch.float32):
    raw = json.loads(path.read_text())
    return {k: [notes_to_roll(s, dtype=dtype) for s in v] for k, v in raw.items()}


def _read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------------
def test_registered():
    names = {e.name for e in list_experiments()}
    assert {"lstm-variants", "deep-rnn"} <= names


def test_evaluate_nll_equals_per_sequence_bce(tiny_json):
    """Batched, padded, length-sorted evaluation == BCE of each sequence alone / all frames."""
    data = _rolls(tiny_json, torch.float64)
    rolls = data["train"] + data["test"]
    model = build_lstm_network("vanilla", 6, seed=3, dtype=torch.float64)
    got = mt.evaluate_nll(model, rolls, batch_size=3)
    total, frames = 0.0, 0
    with torch.no_grad():
        for r in rolls:
            x = torch.cat([torch.zeros(1, NUM_KEYS, dtype=torch.float64), r[:-1]])[None]
            logits, _ = model(x)
            total += float(F.binary_cross_entropy_with_logits(logits[0], r, reduction="sum"))
            frames += r.shape[0]
    assert got == pytest.approx(total / frames, rel=1e-12)


def test_training_restores_best_epoch_and_is_reproducible(tiny_json):
    data = _rolls(tiny_json)
    cfg = mt.TrainConfig(epochs=4, batch_size=3, lr=0.05, patience=None)
    model = build_lstm_network("vanilla", 8, seed=0)
    res = mt.train_music_model(model, data, cfg, seed=0)
    assert res.epochs_run == 4 and len(res.valid_curve) == 4 and not res.diverged
    best = min(range(4), key=lambda e: res.valid_curve[e])
    assert res.best_epoch == best + 1 and res.valid_nll == res.valid_curve[best]
    # the model handed back holds the best epoch's weights
    assert mt.evaluate_nll(model, data["valid"]) == pytest.approx(res.valid_nll, rel=1e-6)
    assert mt.evaluate_nll(model, data["test"]) == pytest.approx(res.test_nll, rel=1e-6)
    assert math.isfinite(res.test_nll) and res.test_nll < COIN_FLIP
    # same seed, fresh model: the same numbers
    again = mt.train_music_model(build_lstm_network("vanilla", 8, seed=0), data, cfg, seed=0)
    assert again.valid_curve == res.valid_curve and again.test_nll == res.test_nll
    # early stopping stops `patience` epochs after the best one (a step of 0.5 overshoots at
    # once: the valid NLL is best after epoch 1 and worse after epoch 2)
    stop = mt.train_music_model(build_lstm_network("NP", 8, seed=1), data,
                                mt.TrainConfig(epochs=6, batch_size=3, lr=0.5, patience=1),
                                seed=1)
    assert stop.epochs_run < 6 and stop.epochs_run - stop.best_epoch == 1
    assert stop.valid_curve[stop.best_epoch - 1] == min(stop.valid_curve)


def test_marginal_bias_starts_at_the_key_frequency_model(tiny_json):
    data = _rolls(tiny_json, torch.float64)
    net = build_network("GRU", 5, seed=0, dtype=torch.float64)
    mt.set_marginal_bias(net, data["train"])
    with torch.no_grad():
        net.readout.weight.zero_()  # the output is then the bias alone
    assert mt.evaluate_nll(net, data["test"]) == pytest.approx(
        marginal_nll(data["train"], data["test"]), rel=1e-12)


def test_welch_t_test_against_closed_form():
    a, b = [8.9, 9.3, 9.1, 9.6], [8.7, 8.8, 8.75]
    t, p = mt.welch_t_test(a, b)
    ma, mb = sum(a) / 4, sum(b) / 3
    va = sum((x - ma) ** 2 for x in a) / 3
    vb = sum((x - mb) ** 2 for x in b) / 2
    se2 = va / 4 + vb / 3
    t_ref = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / 4) ** 2 / 3 + (vb / 3) ** 2 / 2)  # Welch-Satterthwaite
    assert t == pytest.approx(t_ref, rel=1e-12)
    assert p == pytest.approx(2 * stats.t.sf(abs(t_ref), df), rel=1e-10)
    assert all(math.isnan(v) for v in mt.welch_t_test([1.0], b))
    mean, std = mean_std(a)
    assert mean == pytest.approx(ma) and std == pytest.approx(math.sqrt(va))
    # None and NaN are left out; one value has no sample std unless the caller fixes one
    assert mean_std([*a, None, math.nan]) == (mean, std)
    one = mean_std([2.5])
    assert one[0] == 2.5 and math.isnan(one[1])
    assert mean_std([2.5], single_std=0.0) == (2.5, 0.0)


def test_lstm_variants_end_to_end(tiny_json, tmp_path):
    result, run_dir = run_experiment(
        "lstm-variants",
        {"data": str(tiny_json), "variants": "vanilla,NFG,NOAF", "hidden-size": "8",
         "epochs": "2", "seeds": "0,1", "batch-size": "3", "lr": "0.05"},
        out_dir=tmp_path / "run",
    )
    for name in ("config.json", "metrics.csv", "table.csv", "result.json", "lstm_variants.png"):
        assert (run_dir / name).is_file(), name
    metrics = _read_csv(run_dir / "metrics.csv")
    assert len(metrics) == 6
    assert {(m["variant"], m["seed"]) for m in metrics} == {
        (v, s) for v in ("vanilla", "NFG", "NOAF") for s in ("0", "1")}
    for m in metrics:
        assert math.isfinite(float(m["test_nll"])) and float(m["test_nll"]) < COIN_FLIP
    table = _read_csv(run_dir / "table.csv")
    assert [r["variant"] for r in table] == [r["variant"] for r in result.rows]
    assert set(table[0]) >= {"rank", "variant", "mean_test_nll", "std_test_nll", "seeds",
                             "diff_vs_vanilla", "welch_t", "p_value", "verdict",
                             "greff_2017", "agrees_with_greff"}
    assert [int(r["rank"]) for r in table] == [1, 2, 3]
    means = [float(r["mean_test_nll"]) for r in table]
    assert means == sorted(means)
    # every number of the table comes from the per-seed rows of metrics.csv
    per = {v: [float(m["test_nll"]) for m in metrics if m["variant"] == v]
           for v in ("vanilla", "NFG", "NOAF")}
    rows = {r["variant"]: r for r in result.rows}
    for v in ("NFG", "NOAF"):
        ref = stats.ttest_ind(per[v], per["vanilla"], equal_var=False)
        assert rows[v]["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-9)
        assert rows[v]["welch_t"] == pytest.approx(float(ref.statistic), rel=1e-9)
        assert rows[v]["mean_test_nll"] == pytest.approx(sum(per[v]) / 2, rel=1e-12)
        assert rows[v]["diff_vs_vanilla"] == pytest.approx(
            (sum(per[v]) - sum(per["vanilla"])) / 2, rel=1e-9, abs=1e-12)
        expect = ("no significant difference" if rows[v]["p_value"] >= 0.05
                  else ("hurts" if rows[v]["diff_vs_vanilla"] > 0 else "helps"))
        assert rows[v]["verdict"] == expect
    assert rows["vanilla"]["verdict"] == "reference"
    assert rows["NFG"]["greff_2017"] == "hurts"
    # NFG leaves the forget gate's rows of W, R, both biases and its peephole unused (zero)
    h, d = 8, NUM_KEYS
    vanilla_used = 4 * h * (d + h) + 8 * h + 3 * h + (d * h + d)
    assert rows["vanilla"]["parameters_in_use"] == vanilla_used
    assert rows["NOAF"]["parameters_in_use"] == vanilla_used
    assert rows["NFG"]["parameters_in_use"] == vanilla_used - (h * d + h * h + 3 * h)


def test_deep_rnn_end_to_end_and_matched_sizes(tiny_json, tmp_path):
    result, run_dir = run_experiment(
        "deep-rnn",
        {"data": str(tiny_json), "hidden-size": "8", "epochs": "2", "seeds": "0",
         "batch-size": "3", "lr": "0.05"},
        out_dir=tmp_path / "run",
    )
    assert (run_dir / "deep_rnn.png").is_file()
    metrics = _read_csv(run_dir / "metrics.csv")
    assert [m["model"] for m in metrics] == list(MODELS)
    table = _read_csv(run_dir / "table.csv")
    assert list(table[0]) == ["row", *MODELS]
    ours = result.rows[0]
    for name in MODELS:
        assert math.isfinite(ours[name]) and ours[name] < COIN_FLIP
    # only verified published figures are printed (issue 17), each with where it was read
    published = {r["row"]: r for r in result.rows if r["row"].startswith("published")}
    assert set(published) == {src for src, _ in PUBLISHED}
    for src, values in PUBLISHED:
        assert {k: v for k, v in published[src].items() if v is not None and k != "row"} == values
    assert "recalled" not in result.summary and "unverified" not in result.summary
    # parameter counts matched to the LSTM: each width is the closest one
    widths = result.figures["widths"]
    target = result.figures["parameters"]["LSTM"]
    for name in MODELS:
        if name == "LSTM":
            continue
        w = widths[name]
        here = abs(mt.count_parameters(build_network(name, w, seed=0)) - target)
        for other in (w - 1, w + 1):
            if other >= 1:
                assert here <= abs(mt.count_parameters(build_network(name, other, seed=0))
                                   - target)


def test_parameter_counts_against_closed_forms():
    d, w = NUM_KEYS, 10
    rnn = mt.count_parameters(build_network("RNN", w, seed=0))
    assert rnn == w * d + w * w + 2 * w + d * w + d
    lstm = mt.count_parameters(build_network("LSTM", w, seed=0))
    peer = sum(p.numel() for p in torch.nn.LSTM(d, w).parameters())
    assert lstm == peer + d * w + d
    srnn = mt.count_parameters(build_network("sRNN", w, seed=0))
    assert srnn == (w * d + w * w + 2 * w) + (w * w + w * w + 2 * w) + d * w + d
    dts = mt.count_parameters(build_network("DT(S)-RNN", w, seed=0))
    # U, W_1, b_1 | W_2, b_2 | W_s | readout
    assert dts == (w * d + w * w + w) + (w * w + w) + w * w + (d * w + d)
    dots = mt.count_parameters(build_network("DOT(S)-RNN", w, seed=0))
    assert dots == dts + (w * w + w)
    assert matched_width("RNN", rnn) == w
    assert canonical_model("dts") == "DT(S)-RNN"


@pytest.mark.parametrize("name", MODELS)
def test_networks_run_in_float64(name):
    net = build_network(name, 5, seed=0, dtype=torch.float64)
    x = torch.zeros(2, 7, NUM_KEYS, dtype=torch.float64)
    out, _ = net(x, lengths=[7, 3])
    assert out.shape == (2, 7, NUM_KEYS) and out.dtype == torch.float64
    assert bool((out[1, 3:] == 0).all())


def test_quick_preset_and_explicit_override():
    exp = get_experiment("lstm-variants")
    s = resolve_config(exp, {"quick": "true", "hidden-size": "12"}).settings()
    quick = mt.PRESETS["quick"]
    assert s.hidden_size == 12 and s.epochs == quick["epochs"] and s.seeds == quick["seeds"]
    full = resolve_config(exp, {}).settings()
    assert full.hidden_size == mt.PRESETS["full"]["hidden_size"]
    assert full.train_sequences is None


@pytest.mark.parametrize(("experiment", "overrides", "match"), [
    ("lstm-variants", {"variants": "vanilla,XYZ"}, "unknown LSTM variant"),
    ("lstm-variants", {"variants": "NFG,NOAF"}, "must include 'vanilla'"),
    ("lstm-variants", {"variants": "vanilla,NFG,nfg"}, "twice"),
    ("lstm-variants", {"alpha": "1.5"}, "alpha"),
    ("lstm-variants", {"hidden-size": "0"}, "hidden_size"),
    ("lstm-variants", {"lr": "-0.1"}, "lr"),
    ("lstm-variants", {"seeds": "0,0"}, "distinct"),
    ("lstm-variants", {"patience": "0"}, "patience"),
    ("lstm-variants", {"threads": "0"}, "threads"),
    ("lstm-variants", {"dtype": "float16"}, "dtype"),
    ("lstm-variants", {"data": "/nonexistent/jsb.json"}, "no piano-roll file"),
    ("deep-rnn", {"models": "RNN,FOO"}, "unknown model"),
    ("deep-rnn", {"clip-norm": "0"}, "clip_norm"),
    ("deep-rnn", {"epochs": "ten"}, "expects int"),
])
def test_bad_options_raise(experiment, overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(get_experiment(experiment), overrides)


def test_default_data_falls_back_to_builtin(tmp_path, monkeypatch, tiny_json):
    notes: list[str] = []
    monkeypatch.setattr(mt, "project_data_candidates", lambda: [tmp_path / "missing.json"])
    monkeypatch.setattr(mt, "bach_chorales", lambda dtype=torch.float32: _rolls(tiny_json, dtype))
    data, source = mt.load_music_data("default", log=notes.append, train_sequences=3)
    assert source.startswith("builtin") and len(notes) == 1 and "not found" in notes[0]
    assert len(data["train"]) == 3 and len(data["test"]) == 4  # test split always whole
    # with the file present, the default is the file and nothing is printed
    monkeypatch.setattr(mt, "project_data_candidates", lambda: [tiny_json])
    notes.clear()
    data, source = mt.load_music_data("default", log=notes.append)
    assert str(tiny_json) in source and not notes and len(data["train"]) == 8
    first = data["train"][0]
    assert first.shape[1] == NUM_KEYS and int(first[0].nonzero()[0]) + LOWEST_MIDI >= 45


def test_standard_split_if_present(tmp_path):
    """Through the CLI defaults: the standard JSB file, a few chorales, learns below chance."""
    if not any(p.is_file() for p in mt.project_data_candidates()):
        pytest.skip("../shared/data/jsb-chorales-quarter.json is absent")
    result, _ = run_experiment(
        "deep-rnn",
        {"models": "RNN,LSTM", "hidden-size": "8", "epochs": "1", "seeds": "0",
         "train-sequences": "24", "valid-sequences": "6", "batch-size": "4", "lr": "0.05"},
        out_dir=tmp_path / "run",
    )
    assert result.figures["data"].startswith("JSB Chorales")
    assert result.figures["marginal_nll_test"] < COIN_FLIP
    for name in ("RNN", "LSTM"):
        assert result.rows[0][name] < COIN_FLIP
