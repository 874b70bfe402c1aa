"""``spoken-digits`` experiment: a tiny run end to end, its static baseline re-computed."""

import csv

import numpy as np
import pytest

pytest.importorskip("espeakng_loader", reason="the espeakng-loader wheel is not installed "
                    "(pip install espeakng-loader); it carries the eSpeak NG library")

from rnnlab.experiments import run_experiment
from rnnlab.experiments.spoken_digits import SpokenDigitsConfig, _data
from rnnlab.tasks.speech import static_features

TINY = {"voices": "5", "test-voices": "2", "repeats": "1", "seeds": "1", "units": "20"}


def test_tiny_run_and_static_baseline_by_lstsq(tmp_path):
    result, run_dir = run_experiment("spoken-digits", TINY, out_dir=tmp_path)
    assert [r["model"] for r in result.rows] == ["static", "ESN", "LSM"]
    for r in result.rows:
        assert 0.0 <= r["wer"] <= 1.0 and r["test_words"] == 20 and r["train_words"] == 30
    with open(run_dir / "metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    assert all(p.is_file() for p in result.plots)

    # The static baseline again by numpy: standardised features, ridge with an unpenalised
    # intercept by lstsq on the centred, augmented system; argmax.
    cfg = SpokenDigitsConfig(voices=5, test_voices=2, repeats=1, seeds=1, units=20)
    train, test = _data(cfg, 0)
    x = static_features(train.inputs, train.lengths, segments=3, bands=16).numpy()
    xt = static_features(test.inputs, test.lengths, segments=3, bands=16).numpy()
    mean, std = x.mean(0), x.std(0, ddof=1)
    x, xt = (x - mean) / std, (xt - mean) / std
    y = np.eye(10)[train.labels.numpy()]
    mx, my = x.mean(0), y.mean(0)
    a = np.vstack([x - mx, np.sqrt(cfg.static_ridge) * np.eye(x.shape[1])])
    b = np.vstack([y - my, np.zeros((x.shape[1], 10))])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    predicted = ((xt - mx) @ w + my).argmax(1)
    wer = float(np.mean(predicted != test.labels.numpy()))
    assert result.rows[0]["wer"] == pytest.approx(wer, abs=1e-12)


def test_bad_options():
    with pytest.raises(ValueError, match="test-voices"):
        run_experiment("spoken-digits", {**TINY, "test-voices": "5"})
    # 1 ms spike steps (8 kHz, decimation 80, 10 per frame) on a 0.3 ms grid: refused.
    with pytest.raises(ValueError, match="must divide the spike step"):
        run_experiment("spoken-digits", {**TINY, "lsm-dt": "0.3"})
