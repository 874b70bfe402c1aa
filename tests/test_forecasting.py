"""The user-data forecaster (`rnnlab fit` / `rnnlab forecast`): its readout against an
independent ridge solve, no look-ahead across the split, save/load, the CLI end to end on a real
series bundled with a PyPI package (aeon's airline passengers)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnlab.cli import app
from rnnlab.forecasting import (
    FORMAT_VERSION,
    ESNForecastModel,
    ForecastConfig,
    fit_forecaster,
    nrmse_per_column,
)
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.tasks.tabular import SeriesTable, Standardizer

CONFIG = ForecastConfig(units=40, washout=20, alphas=(1e-6, 1e-3, 1.0), horizon=2)


def _table(n: int = 400) -> SeriesTable:
    t = torch.arange(n, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    a = torch.sin(0.21 * t) + 0.5 * torch.sin(0.037 * t) + 0.01 * torch.randn(n, generator=gen,
                                                                              dtype=torch.float64)
    b = torch.cos(0.13 * t)
    return SeriesTable(torch.stack([a, b], dim=1), ["a", "b"])


def _ridge_numpy(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """min ||Y - X W^T - 1 c^T||^2 + alpha ||W||^2 through the augmented least-squares
    system [X 1; sqrt(alpha) I 0] (the intercept unpenalised): independent of the readout's
    centred normal equations."""
    n, f = x.shape
    a = np.vstack([np.hstack([x, np.ones((n, 1))]),
                   np.hstack([math.sqrt(alpha) * np.eye(f), np.zeros((f, 1))])])
    b = np.vstack([y, np.zeros((f, y.shape[1]))])
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    return sol[:f].T, sol[f]


def test_readout_equals_an_independent_ridge_on_the_same_rows() -> None:
    table = _table()
    model, report = fit_forecaster(table, ["a"], config=CONFIG)
    h, val_end = CONFIG.horizon, report.parts["validation"].stop
    train = report.parts["training"]
    # the same reservoir, run independently, and the rows the docstring promises
    esn = EchoStateNetwork(input_size=2, units=40, spectral_radius=0.9, density=0.1, leak=1.0,
                           input_scaling=0.5, seed=0, dtype=torch.float64)
    xs = Standardizer.fit(table.values[train])
    ys = Standardizer.fit(table.values[train, :1])
    states = esn.states(xs.transform(table.values).unsqueeze(0))[0].numpy()
    y = ys.transform(table.values[:, :1]).numpy()
    rows = np.arange(CONFIG.washout, val_end - h)  # refit on training + validation
    w, c = _ridge_numpy(states[rows], y[rows + h], report.alpha)
    # both solve the same well-posed problem (alpha > 0) in float64: agreement to ~cond * eps
    scale = np.abs(w).max()
    assert np.allclose(model.readout.weight.numpy(), w, rtol=0, atol=1e-7 * scale)
    assert np.allclose(model.readout.bias.numpy(), c, rtol=0, atol=1e-7 * max(1.0, scale))


def test_no_look_ahead_and_beats_persistence() -> None:
    table = _table()
    model, report = fit_forecaster(table, ["a"], config=CONFIG)
    changed = SeriesTable(table.values.clone(), table.columns)
    test = report.parts["test"]
    changed.values[test.start:, 0] += 100.0  # the test part's future, wildly different
    model2, _ = fit_forecaster(changed, ["a"], config=CONFIG)
    # nothing of the test part may reach the fitted model: the same computation, bit for bit
    assert torch.equal(model.readout.weight, model2.readout.weight)
    assert torch.equal(model.x_scale.mean, model2.x_scale.mean)
    test_row = next(r for r in report.rows if r["part"] == "test")
    # a smooth two-tone series two steps ahead: the ESN is far better than persistence
    assert test_row["model_nrmse"] < 0.5 * test_row["persistence_nrmse"]
    h = CONFIG.horizon
    assert torch.isnan(report.prediction[:h]).all() and not torch.isnan(report.prediction[h:]).any()


def test_nrmse_per_column_closed_form() -> None:
    truth = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 3.0]], dtype=torch.float64)
    pred = truth + torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    # column 0: mse 1, var 8/3 -> sqrt(3/8); column 1: 0
    assert nrmse_per_column(pred, truth) == pytest.approx((math.sqrt(3 / 8) + 0.0) / 2)
    with pytest.raises(ValueError, match="constant"):
        nrmse_per_column(pred[:, 1:], torch.ones(3, 1, dtype=torch.float64))


def test_save_load_and_bad_model_files(tmp_path: Path) -> None:
    table = _table(300)
    model, _ = fit_forecaster(table, ["a", "b"], ["a"], CONFIG)
    model.save(tmp_path / "model.pt")
    again = ESNForecastModel.load(tmp_path)
    assert torch.equal(again.predict(table), model.predict(table))  # same weights, same path
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    blob["format_version"] = FORMAT_VERSION + 1
    torch.save(blob, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="reads version"):
        ESNForecastModel.load(tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable rnnlab forecaster"):
        ESNForecastModel.load(tmp_path / "junk.pt")


def test_config_and_data_errors() -> None:
    with pytest.raises(ValueError, match="leak"):
        ForecastConfig(leak=0.0).check()
    with pytest.raises(ValueError, match="kind"):
        ForecastConfig(kind="transformer").check()
    with pytest.raises(ValueError, match="no column"):
        fit_forecaster(_table(), ["c"], config=CONFIG)
    with pytest.raises(ValueError, match=r"too short|too few"):
        fit_forecaster(_table(30), ["a"], config=CONFIG)


AIRLINE = Path(__import__("aeon").__file__).parent / "datasets" / "data" / "Airline" / \
    "Airline.csv"


def test_cli_fit_and_forecast_on_a_bundled_real_series(tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["fit", str(AIRLINE), "--target", "Passengers",
                                 "--time-column", "Date", "--units", "50", "--washout", "12",
                                 "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "persistence_nrmse" in result.output
    for name in ("model.pt", "predictions.csv", "forecast.png", "config.json", "result.json"):
        assert (run / name).is_file()
    with open(run / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 144 and rows[0]["time"].startswith("1949-01")
    assert float(rows[5]["Passengers_persistence"]) == float(rows[4]["Passengers"])
    out = tmp_path / "f.csv"
    result = runner.invoke(app, ["forecast", str(AIRLINE), "--model", str(run), "--out",
                                 str(out)])
    assert result.exit_code == 0, result.output
    with open(out) as f:
        again = list(csv.DictReader(f))
    # the reloaded model forecasts the same file as the fit did: the forecast made at row t
    # (forecast CSV) is the fit's forecast of row t + 1 (predictions CSV, aligned to the truth)
    made_at = [r["Passengers+1_forecast"] for r in again]
    assert len(made_at) == 144 and made_at[:-1] == [r["Passengers_forecast"] for r in rows[1:]]
    bad = runner.invoke(app, ["fit", str(AIRLINE), "--target", "Nope", "--time-column", "Date",
                              "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "no column" in bad.output


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gated_forecasters_learn_and_reload(tmp_path: Path, kind: str) -> None:
    table = _table(400)
    config = ForecastConfig(kind=kind, horizon=2, hidden_size=16, epochs=30, window=40,
                            context=10, lr=1e-2, patience=30, batch_size=4)
    model, report = fit_forecaster(table, ["a"], config=config)
    test_row = next(r for r in report.rows if r["part"] == "test")
    # two tones two steps ahead: persistence's NRMSE is ~0.5; a trained network is well below
    assert test_row["model_nrmse"] < 0.6 * test_row["persistence_nrmse"], report.rows
    assert math.isnan(report.alpha)
    model.save(tmp_path / "model.pt")
    again = ESNForecastModel.load(tmp_path)  # any forecaster loads through the base loader
    assert type(again).__name__ == "GatedForecastModel"
    assert torch.equal(again.predict(table), model.predict(table))
    # the same seed trains the same network (the trainer's shuffling and the init are seeded)
    model2, _ = fit_forecaster(table, ["a"], config=config)
    assert torch.equal(model2.predict(table), model.predict(table))


def test_the_same_fit_command_runs_on_two_processes(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node=2 -m rnnlab.cli fit ... --kind gru` trains data-parallel
    (gloo on loopback) and writes one run folder whose forecasts equal the one-process run's."""
    import os
    import subprocess
    import sys

    import pandas as pd

    t = np.arange(300)
    pd.DataFrame({"a": np.sin(0.21 * t) + 0.5 * np.sin(0.037 * t)}).to_csv(
        tmp_path / "tones.csv", index=False)
    args = ["fit", str(tmp_path / "tones.csv"), "--target", "a", "--kind", "gru",
            "--hidden-size", "6", "--epochs", "2", "--window", "30", "--context", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "-m", "rnnlab.cli", *args, "--out",
                          str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    one = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output

    def forecasts(run: str) -> np.ndarray:
        with open(tmp_path / run / "predictions.csv") as f:
            return np.array([float(r["a_forecast"]) for r in csv.DictReader(f)][1:])

    # float32 training: the two runs differ only in the order of the gradient sums (each rank's
    # shard summed, then averaged), ~1e-7 per update over a few dozen Adam updates: 1e-4 on
    # forecasts of size ~1 is far above that and far below any real difference
    assert np.allclose(forecasts("two"), forecasts("one"), rtol=0, atol=1e-4)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())
