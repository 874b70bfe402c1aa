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
from rnnlab._files import atomic_save, load_versioned
from rnnlab._validation import check_choice, check_int, check_number, check_positive_int
from rnnlab.cells import GRUCell, LSTMCell
from rnnlab.models.recurrent import RecurrentNetwork
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.readout import RidgeReadout
from rnnlab.tasks.tabular import SeriesTable, Standardizer, split_by_time

MODEL_FILE = "model.pt"
FORMAT = "rnnlab-forecaster"
FORMAT_VERSION = 1
KINDS = ("esn", "lstm", "gru")


@dataclass
class ForecastConfig:
    """What ``rnnlab fit`` fits. ``kind``: ``"esn"`` (reservoir + ridge readout), ``"lstm"``
    or ``"gru"`` (torch's forms, a linear readout, trained with :class:`rnnlab.train.Trainer`)."""

    kind: str = "esn"
    horizon: int = 1
    # esn
    units: int = 300
    spectral_radius: float = 0.9
    leak: float = 1.0
    input_scaling: float = 0.5
    density: float = 0.1
    alphas: tuple[float, ...] = (1e-8, 1e-6, 1e-4, 1e-2, 1.0)
    washout: int = 100
    # lstm, gru: trained by BPTT with Adam on windows of the training rows
    hidden_size: int = 64
    epochs: int = 60
    lr: float = 3e-3
    window: int = 60
    context: int = 20
    batch_size: int = 16
    patience: int = 10
    # all
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
        check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("epochs", self.epochs)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_int("context", self.context, low=0)
        if check_positive_int("window", self.window) <= self.context:
            raise ValueError(f"window ({self.window}) must be longer than context "
                             f"({self.context}): the first context steps are not scored")
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("patience", self.patience)
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


class ForecastModel:
    """A fitted forecaster and the standardisation of the file's training part.
    :meth:`predict` gives, for every row t of a table, the forecast of the targets at
    ``t + horizon`` (in the file's units)."""

    def __init__(self, config: ForecastConfig, features: list[str], targets: list[str],
                 x_scale: Standardizer, y_scale: Standardizer) -> None:
        self.config, self.features, self.targets = config, features, targets
        self.x_scale, self.y_scale = x_scale, y_scale

    def inputs(self, table: SeriesTable) -> torch.Tensor:
        return self.x_scale.transform(table.select(self.features))

    def predict(self, table: SeriesTable) -> torch.Tensor:
        """``(time, targets)``: row t forecasts the targets at ``t + horizon``. The first rows
        come from a network still forgetting its zero start (``washout``/``context``)."""
        with torch.no_grad():
            return self.y_scale.inverse(self._predict_standardised(self.inputs(table)))

    def _predict_standardised(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _weights(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        return atomic_save(
            {"format": FORMAT, "format_version": FORMAT_VERSION, "rnnlab_version": __version__,
             "config": dataclasses.asdict(self.config), "features": self.features,
             "targets": self.targets, "x_scale": self.x_scale.state_dict(),
             "y_scale": self.y_scale.state_dict(), **self._weights()}, path)

    @staticmethod
    def load(path: str | Path) -> ForecastModel:
        """Read a model saved by :meth:`save` (a run folder or its ``model.pt``)."""
        blob = load_versioned(path, name=MODEL_FILE, format_name=FORMAT,
                              version=FORMAT_VERSION, what="rnnlab forecaster model",
                              hint=": refit it with `rnnlab fit`")
        config = ForecastConfig(**{**blob["config"], "alphas": tuple(blob["config"]["alphas"])})
        args = (config, blob["features"], blob["targets"], Standardizer(**blob["x_scale"]),
                Standardizer(**blob["y_scale"]))
        if config.kind == "esn":
            esn = _esn(config, len(blob["features"]))
            esn.load_state_dict(blob["esn"])
            r = blob["readout"]
            readout = RidgeReadout(config.units, len(blob["targets"]), r["alpha"],
                                   dtype=torch.float64)
            readout.weight.copy_(r["weight"])
            readout.bias.copy_(r["bias"])
            readout.fitted = True
            return ESNForecastModel(*args, esn, readout)
        network = _gated(config, len(blob["features"]), len(blob["targets"]))
        network.load_state_dict(blob["network"])
        return GatedForecastModel(*args, network)


class ESNForecastModel(ForecastModel):
    """The reservoir and its ridge readout."""

    def __init__(self, config: ForecastConfig, features: list[str], targets: list[str],
                 x_scale: Standardizer, y_scale: Standardizer, esn: EchoStateNetwork,
                 readout: RidgeReadout) -> None:
        super().__init__(config, features, targets, x_scale, y_scale)
        self.esn, self.readout = esn, readout

    def states(self, table: SeriesTable) -> torch.Tensor:
        with torch.no_grad():
            return self.esn.states(self.inputs(table).unsqueeze(0))[0]

    def _predict_standardised(self, u: torch.Tensor) -> torch.Tensor:
        return self.readout.predict(self.esn.states(u.unsqueeze(0))[0])

    def _weights(self) -> dict[str, Any]:
        return {"esn": self.esn.state_dict(),
                "readout": {"weight": self.readout.weight, "bias": self.readout.bias,
                            "alpha": self.readout.alpha}}


class GatedForecastModel(ForecastModel):
    """An LSTM or GRU network with a linear readout, run over the whole series at once."""

    def __init__(self, config: ForecastConfig, features: list[str], targets: list[str],
                 x_scale: Standardizer, y_scale: Standardizer, network: RecurrentNetwork
                 ) -> None:
        super().__init__(config, features, targets, x_scale, y_scale)
        self.network = network

    def _predict_standardised(self, u: torch.Tensor) -> torch.Tensor:
        self.network.eval()
        return self.network(u.unsqueeze(0).to(torch.float32))[0][0].to(torch.float64)

    def _weights(self) -> dict[str, Any]:
        return {"network": self.network.state_dict()}


def world_size() -> int:
    """The number of processes of the default ``torch.distributed`` group (1 without one):
    under ``torchrun`` the LSTM/GRU forecasters train data-parallel (``Trainer(distributed=
    True)``: every rank gets a shard of each minibatch of windows, the gradients are averaged,
    the same weights result as in one process up to summation order)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gated(config: ForecastConfig, n_inputs: int, n_outputs: int) -> RecurrentNetwork:
    gen = torch.Generator().manual_seed(config.seed)
    if config.kind == "lstm":
        cell: Any = LSTMCell(n_inputs, config.hidden_size, peepholes=False, generator=gen)
    else:
        cell = GRUCell(n_inputs, config.hidden_size, form="torch", generator=gen)
    return RecurrentNetwork(cell, n_outputs, generator=gen)


@dataclass
class ForecastReport:
    """What a fit measured: NRMSE of the model and of persistence per part, the chosen ridge
    penalty (ESN; NaN otherwise), and every row's forecast (NaN for the first ``horizon``
    rows, whose forecast would have been made before the file starts)."""

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
                   config: ForecastConfig | None = None) -> tuple[ForecastModel,
                                                                  ForecastReport]:
    """Fit a forecaster of ``config.kind`` to ``table`` (see the module docstring);
    ``features`` default to every column of the table."""
    config = (config or ForecastConfig()).check()
    if not targets:
        raise ValueError("name at least one target column")
    features = list(table.columns) if features is None else list(features)
    y_all, h = table.select(targets), config.horizon
    train, val, test = split_by_time(len(table), config.validation, config.test,
                                     minimum=h + 2)
    skip = config.washout if config.kind == "esn" else config.context
    if train.stop - h - skip < 2:
        raise ValueError(f"the training part ({train.stop} rows) is too short for "
                         f"{'washout' if config.kind == 'esn' else 'context'} {skip} and "
                         f"horizon {h}: lower them or give more data")
    scales = (Standardizer.fit(table.select(features)[train]), Standardizer.fit(y_all[train]))
    parts = {"training": train, "validation": val, "test": test}
    if config.kind == "esn":
        model, rows, alpha, forecast = _fit_esn(table, targets, features, config, scales, parts)
    else:
        model, rows, alpha, forecast = _fit_gated(table, targets, features, config, scales,
                                                  parts)
    n = len(table)
    prediction = torch.full_like(y_all, math.nan)
    prediction[h:] = forecast[:n - h]  # the fit's own run over the file, not a second one
    persistence = torch.full_like(y_all, math.nan)
    persistence[h:] = y_all[:n - h]
    return model, ForecastReport(rows, alpha, parts, prediction, persistence, y_all)


def _score_row(part: str, rows: slice, pred: torch.Tensor, y_all: torch.Tensor, h: int
               ) -> dict[str, Any]:
    """NRMSE of ``pred`` (row t: the forecast of t + h) and of persistence on ``rows``."""
    truth = y_all[rows.start + h:rows.stop + h]
    return {"part": part, "rows": rows.stop - rows.start,
            "model_nrmse": nrmse_per_column(pred, truth),
            "persistence_nrmse": nrmse_per_column(y_all[rows], truth)}


def _fit_esn(table: SeriesTable, targets: list[str], features: list[str],
             config: ForecastConfig, scales: tuple[Standardizer, Standardizer],
             parts: dict[str, slice]
             ) -> tuple[ESNForecastModel, list[dict[str, Any]], float, torch.Tensor]:
    h, (train, val, test) = config.horizon, parts.values()
    model = ESNForecastModel(config, features, targets, *scales, _esn(config, len(features)),
                             RidgeReadout(config.units, len(targets), config.alphas[0],
                                          dtype=torch.float64))
    y_all = table.select(targets)
    states, y_std = model.states(table), model.y_scale.transform(y_all)
    readout = model.readout

    def fit_rows(rows: slice) -> None:
        readout.reset().partial_fit(states[rows], y_std[rows.start + h:rows.stop + h])

    def score(part: str, rows: slice) -> dict[str, Any]:
        pred = model.y_scale.inverse(readout.predict(states[rows]))
        return _score_row(part, rows, pred, y_all, h)

    train_rows, val_rows, test_rows = (_rows(train, h, config.washout), _rows(val, h),
                                       _rows(test, h))
    select = val_rows if val_rows.stop - val_rows.start >= 2 else train_rows
    fit_rows(train_rows)
    errors = {}
    for a in config.alphas:
        readout.alpha = a
        readout.solve()
        errors[a] = score("select", select)["model_nrmse"]
    readout.alpha = min(errors, key=lambda a: errors[a])
    readout.solve()
    rows = [score(name, r) for name, r in (("training", train_rows), ("validation", val_rows))
            if r.stop - r.start >= 2]
    fit_rows(_rows(slice(0, val.stop), h, config.washout))  # refit on training + validation
    readout.solve()
    if test_rows.stop - test_rows.start >= 2:
        rows.append(score("test", test_rows))
    with torch.no_grad():
        forecast = model.y_scale.inverse(readout.predict(states))  # the states computed above
    return model, rows, readout.alpha, forecast


def _windows(u: torch.Tensor, y: torch.Tensor, rows: slice, config: ForecastConfig
             ) -> tuple[torch.Tensor, ...] | None:
    """Windows of ``config.window`` rows t of ``rows`` (half-overlapping) with targets y(t + h);
    the first ``context`` steps of each are not scored (mask 0): the network is still
    building its state there."""
    h, n = config.horizon, rows.stop - rows.start
    length = min(config.window, n)
    if length <= config.context + 1:
        return None
    starts = range(rows.start, rows.stop - length + 1, max(1, (length - config.context) // 2))
    x = torch.stack([u[s:s + length] for s in starts])
    t = torch.stack([y[s + h:s + h + length] for s in starts])
    mask = torch.ones(x.shape[0], length, dtype=torch.bool)
    mask[:, :config.context] = False
    return x.to(torch.float32), t.to(torch.float32), mask


def _fit_gated(table: SeriesTable, targets: list[str], features: list[str],
               config: ForecastConfig, scales: tuple[Standardizer, Standardizer],
               parts: dict[str, slice]
               ) -> tuple[GatedForecastModel, list[dict[str, Any]], float, torch.Tensor]:
    from rnnlab.learning import BPTT
    from rnnlab.train import Trainer

    h, (train, val, test) = config.horizon, parts.values()
    model = GatedForecastModel(config, features, targets, *scales,
                               _gated(config, len(features), len(targets)))
    y_all = table.select(targets)
    u, y_std = model.inputs(table), model.y_scale.transform(y_all)
    train_rows, val_rows, test_rows = _rows(train, h), _rows(val, h), _rows(test, h)
    data = _windows(u, y_std, train_rows, config)
    if data is None:
        raise ValueError(f"the training part ({train.stop} rows) is too short for one window "
                         f"longer than context {config.context} at horizon {h}")
    net = model.network
    trainer = Trainer(net, torch.optim.Adam(net.parameters(), lr=config.lr),
                      BPTT(net, reduction="mean"), batch_size=config.batch_size,
                      seed=config.seed, patience=config.patience, clip=1.0, progress=False,
                      distributed=world_size() > 1)
    torch.manual_seed(config.seed)
    trainer.fit(data, epochs=config.epochs, val=_windows(u, y_std, val_rows, config))
    with torch.no_grad():
        pred = model.predict(table)
    rows = [_score_row(name, r, pred[r], y_all, h)
            for name, r in (("training", _rows(train, h, config.context)),
                            ("validation", val_rows), ("test", test_rows))
            if r.stop - r.start >= 2]
    return model, rows, math.nan, pred


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
    ax.plot(steps, report.prediction[start:test.stop, 0], lw=1, label="forecast")
    ax.plot(steps, report.persistence[start:test.stop, 0], lw=1, ls="--", alpha=0.7,
            label="persistence")
    ax.set_xlabel("row")
    ax.set_ylabel(targets[0])
    ax.set_title(f"test part: {targets[0]}")
    ax.legend(loc="best")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def save_fit(run_dir: Path, table: SeriesTable, model: ForecastModel,
             report: ForecastReport, data: dict[str, Any]) -> list[Path]:
    """Write the run folder of a fit: ``config.json`` (with ``data``: the file and how it was
    read), ``model.pt``, ``result.json``, ``predictions.csv`` and ``forecast.png``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"experiment": "fit", **data, "targets": model.targets,
              "features": model.features, **dataclasses.asdict(model.config)}
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    written = [model.save(run_dir / MODEL_FILE)]
    alpha = None if math.isnan(report.alpha) else report.alpha
    (run_dir / "result.json").write_text(json.dumps({"alpha": alpha, "rows": report.rows},
                                                    indent=2))
    written.append(write_predictions(run_dir / "predictions.csv", table.time, model.targets,
                                     report.prediction, report.truth, report.persistence,
                                     report.parts))
    if report.parts["test"].stop - report.parts["test"].start >= 2:
        written.append(plot_forecast(run_dir / "forecast.png", report, model.targets))
    return written
