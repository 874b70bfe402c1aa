"""Forecasting a user's own series: an echo state network with a ridge readout fitted on the
training part of a file, its ridge penalty chosen on the validation part, scored on the test
part beside the persistence forecast, saved, and reloaded to forecast new data.

The model (Jaeger 2001; Lukoševičius 2012, "A practical guide to applying echo state networks"):
standardised inputs u(t) (every feature column; the targets too by default, which makes it
autoregressive) drive one reservoir run over the whole file, x(t) = (1 - a) x(t - 1) +
a tanh(W_in u(t) + W x(t - 1)); the readout y(t + h) ≈ W_out x(t) + c is ridge regression on the
training rows whose target lies in the training part (no look-ahead across the split). The
penalty is the one of ``alphas`` with the lowest validation NRMSE; the readout is then refitted
on the training and validation rows and scored on the test rows. The baseline is persistence,
y(t + h) = y(t). NRMSE is ``sqrt(mean((p - y)^2) / var(y))`` per target column, averaged.

``rnnlab fit`` and ``rnnlab forecast`` are this module on the command line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlab import __version__
from rnnlab._validation import check_choice, check_int, check_number, check_positive_int
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.readout import RidgeReadout
from rnnlab.tasks.tabular import SeriesTable, Standardizer, split_by_time

MODEL_FILE = "model.pt"
FORMAT = "rnnlab-forecaster"
FORMAT_VERSION = 1
KINDS = ("esn",)


@dataclass
class ForecastConfig:
    """What ``rnnlab fit`` fits. ``kind``: the model (``"esn"``: reservoir + ridge readout)."""

    kind: str = "esn"
    horizon: int = 1
    units: int = 300
    spectral_radius: float = 0.9
    leak: float = 1.0
    input_scaling: float = 0.5
    density: float = 0.1
    alphas: tuple[float, ...] = (1e-8, 1e-6, 1e-4, 1e-2, 1.0)
    washout: int = 100
    validation: float = 0.15
    test: float = 0.15
    seed: int = 0

    def check(self) -> ForecastConfig:
        check_choice("kind", self.kind, KINDS)
        check_positive_int("horizon", self.horizon)
        check_positive_int("units", self.units)
        check_number("spectral_radius", self.spectral_radius, low=0.0)
        check_number("leak", self.leak, low=0.0, high=1.0, low_open=True)
        check_number("input_scaling", self.input_scaling, low=0.0, low_open=True)
        check_number("density", self.density, low=0.0, high=1.0, low_open=True)
        if not self.alphas:
            raise ValueError("alphas must list at least one ridge penalty")
        for a in self.alphas:
            check_number("alphas", a, low=0.0)
        check_int("washout", self.washout, low=0)
        check_int("seed", self.seed, low=0)
        return self


def _esn(config: ForecastConfig, n_inputs: int) -> EchoStateNetwork:
    return EchoStateNetwork(input_size=n_inputs, units=config.units,
                            spectral_radius=config.spectral_radius, density=config.density,
                            leak=config.leak, input_scaling=config.input_scaling,
                            seed=config.seed, dtype=torch.float64)


def nrmse_per_column(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    """``mean_k sqrt(mean_t (p_tk - y_tk)^2 / var_t(y_k))``; a constant column is skipped."""
    var = truth.var(dim=0, unbiased=False)
    keep = var > 0
    if not bool(keep.any()):
        raise ValueError("every target column is constant on this part: NRMSE is undefined")
    mse = (prediction - truth).pow(2).mean(dim=0)
    return float((mse[keep] / var[keep]).sqrt().mean())


class ESNForecastModel:
    """A fitted forecaster: the reservoir, the readout and the standardisation of the file's
    training part. :meth:`predict` gives, for every row t of a table, the forecast of the
    targets at ``t + horizon``."""

    def __init__(self, config: ForecastConfig, features: list[str], targets: list[str],
                 x_scale: Standardizer, y_scale: Standardizer, esn: EchoStateNetwork,
                 readout: RidgeReadout) -> None:
        self.config, self.features, self.targets = config, features, targets
        self.x_scale, self.y_scale, self.esn, self.readout = x_scale, y_scale, esn, readout

    def states(self, table: SeriesTable) -> torch.Tensor:
        u = self.x_scale.transform(table.select(self.features))
        with torch.no_grad():
            return self.esn.states(u.unsqueeze(0))[0]

    def predict(self, table: SeriesTable) -> torch.Tensor:
        """``(time, targets)``: row t forecasts the targets at ``t + horizon`` (in the file's
        units). The first ``washout`` rows come from a reservoir still forgetting its zero
        start."""
        with torch.no_grad():
            return self.y_scale.inverse(self.readout.predict(self.states(table)))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION,
                    "rnnlab_version": __version__, "config": dataclasses.asdict(self.config),
                    "features": self.features, "targets": self.targets,
                    "x_scale": self.x_scale.state_dict(), "y_scale": self.y_scale.state_dict(),
                    "esn": self.esn.state_dict(),
                    "readout": {"weight": self.readout.weight, "bias": self.readout.bias,
                                "alpha": self.readout.alpha}}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ESNForecastModel:
        """Read a model saved by :meth:`save` (a run folder or its ``model.pt``)."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no forecaster model at {path}")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path} is not an rnnlab forecaster model ({exc})") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"{path} is not an rnnlab forecaster model")
        if blob.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by rnnlab {blob.get('rnnlab_version')} in model format "
                f"{blob.get('format_version')}; this rnnlab ({__version__}) reads format "
                f"{FORMAT_VERSION}: refit it with `rnnlab fit`")
        config = ForecastConfig(**{**blob["config"], "alphas": tuple(blob["config"]["alphas"])})
        esn = _esn(config, len(blob["features"]))
        esn.load_state_dict(blob["esn"])
        r = blob["readout"]
        readout = RidgeReadout(config.units, len(blob["targets"]), r["alpha"],
                               dtype=torch.float64)
        readout.weight.copy_(r["weight"])
        readout.bias.copy_(r["bias"])
        readout.fitted = True
        return cls(config, blob["features"], blob["targets"], Standardizer(**blob["x_scale"]),
                   Standardizer(**blob["y_scale"]), esn, readout)


@dataclass
class ForecastReport:
    """What a fit measured: NRMSE of the model and of persistence per part, the chosen
    penalty, and every row's forecast (NaN where ``t + horizon`` is past the end)."""

    rows: list[dict[str, Any]]
    alpha: float
    parts: dict[str, slice]
    prediction: torch.Tensor
    persistence: torch.Tensor
    truth: torch.Tensor


def _rows(part: slice, h: int, start: int = 0) -> slice:
    """Rows t of ``part`` (from ``start``) whose target t + h lies in the same part."""
    return slice(max(part.start, start), part.stop - h)


def fit_forecaster(table: SeriesTable, targets: list[str], features: list[str] | None = None,
                   config: ForecastConfig | None = None) -> tuple[ESNForecastModel,
                                                                  ForecastReport]:
    """Fit an :class:`ESNForecastModel` to ``table`` (see the module docstring); ``features``
    default to every column of the table."""
    config = (config or ForecastConfig()).check()
    if not targets:
        raise ValueError("name at least one target column")
    features = list(table.columns) if features is None else list(features)
    y_all, h = table.select(targets), config.horizon
    train, val, test = split_by_time(len(table), config.validation, config.test,
                                     minimum=h + 2)
    if train.stop - h - config.washout < 2:
        raise ValueError(f"the training part ({train.stop} rows) is too short for washout "
                         f"{config.washout} and horizon {h}: lower them or give more data")
    x_scale = Standardizer.fit(table.select(features)[train])
    y_scale = Standardizer.fit(y_all[train])
    model = ESNForecastModel(config, features, targets, x_scale, y_scale,
                             _esn(config, len(features)),
                             RidgeReadout(config.units, len(targets), config.alphas[0],
                                          dtype=torch.float64))
    states = model.states(table)
    y_std = y_scale.transform(y_all)
    readout = model.readout

    def fit_rows(rows: slice) -> None:
        readout.reset().partial_fit(states[rows], y_std[rows.start + h:rows.stop + h])

    def score(rows: slice) -> tuple[float, float]:
        truth = y_all[rows.start + h:rows.stop + h]
        pred = y_scale.inverse(readout.predict(states[rows]))
        return nrmse_per_column(pred, truth), nrmse_per_column(y_all[rows], truth)

    fit_rows(_rows(train, h, config.washout))
    val_rows = _rows(val, h)
    scores = {}
    for a in config.alphas:
        readout.alpha = a
        readout.solve()
        scores[a] = (score(val_rows)[0] if val_rows.stop - val_rows.start >= 2
                     else score(_rows(train, h, config.washout))[0])
    alpha = min(scores, key=lambda a: scores[a])
    readout.alpha = alpha
    rows = []
    readout.solve()
    for name, part in (("training", _rows(train, h, config.washout)), ("validation", val_rows)):
        if part.stop - part.start >= 2:
            ours, persistence = score(part)
            rows.append({"part": name, "rows": part.stop - part.start, "esn_nrmse": ours,
                         "persistence_nrmse": persistence})
    fit_rows(_rows(slice(0, val.stop), h, config.washout))  # refit on training + validation
    readout.solve()
    test_rows = _rows(test, h)
    if test_rows.stop - test_rows.start >= 2:
        ours, persistence = score(test_rows)
        rows.append({"part": "test", "rows": test_rows.stop - test_rows.start,
                     "esn_nrmse": ours, "persistence_nrmse": persistence})
    n = len(table)
    prediction = torch.full_like(y_all, math.nan)
    prediction[h:] = model.predict(table)[:n - h]
    persistence = torch.full_like(y_all, math.nan)
    persistence[h:] = y_all[:n - h]
    return model, ForecastReport(rows, alpha, {"training": train, "validation": val,
                                               "test": test}, prediction, persistence, y_all)


def write_predictions(path: Path, time: list[str] | None, targets: list[str],
                      prediction: torch.Tensor, truth: torch.Tensor | None = None,
                      persistence: torch.Tensor | None = None,
                      parts: dict[str, slice] | None = None) -> Path:
    """A CSV with, per row, the time (or index), the part, and for each target the truth (when
    known), the forecast made ``horizon`` rows earlier, and persistence's."""
    columns: list[tuple[str, torch.Tensor]] = []
    for k, t in enumerate(targets):
        if truth is not None:
            columns.append((t, truth[:, k]))
        columns.append((f"{t}_forecast", prediction[:, k]))
        if persistence is not None:
            columns.append((f"{t}_persistence", persistence[:, k]))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time" if time else "index"] + (["part"] if parts else [])
                   + [name for name, _ in columns])
        for i in range(prediction.shape[0]):
            row: list[Any] = [time[i] if time else i]
            if parts:
                row.append(next(k for k, s in parts.items() if s.start <= i < s.stop))
            w.writerow(row + [float(values[i]) for _, values in columns])
    return path


def plot_forecast(path: Path, report: ForecastReport, targets: list[str],
                  last: int = 500) -> Path:
    """The test part's last ``last`` rows of the first target: truth, forecast, persistence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = report.parts["test"]
    start = max(test.start, test.stop - last)
    steps = range(start, test.stop)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(steps, report.truth[start:test.stop, 0], color="black", lw=1.2, label="truth")
    ax.plot(steps, report.prediction[start:test.stop, 0], lw=1, label="ESN forecast")
    ax.plot(steps, report.persistence[start:test.stop, 0], lw=1, ls="--", alpha=0.7,
            label="persistence")
    ax.set_xlabel("row")
    ax.set_ylabel(targets[0])
    ax.set_title(f"test part: {targets[0]}")
    ax.legend(loc="best")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def save_fit(run_dir: Path, table: SeriesTable, model: ESNForecastModel,
             report: ForecastReport, data: dict[str, Any]) -> list[Path]:
    """Write the run folder of a fit: ``config.json`` (with ``data``: the file and how it was
    read), ``model.pt``, ``result.json``, ``predictions.csv`` and ``forecast.png``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"experiment": "fit", **data, "targets": model.targets,
              "features": model.features, **dataclasses.asdict(model.config)}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    written = [model.save(run_dir / MODEL_FILE)]
    (run_dir / "result.json").write_text(json.dumps({"alpha": report.alpha,
                                                     "rows": report.rows}, indent=2))
    written.append(write_predictions(run_dir / "predictions.csv", table.time, model.targets,
                                     report.prediction, report.truth, report.persistence,
                                     report.parts))
    if report.parts["test"].stop - report.parts["test"].start >= 2:
        written.append(plot_forecast(run_dir / "forecast.png", report, model.targets))
    return written
