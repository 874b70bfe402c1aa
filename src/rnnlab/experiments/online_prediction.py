"""``online-prediction``: an Elman RNN learns one-step-ahead prediction of a stream, online,
with exact RTRL: one weight update per arriving sample, nothing of the stream stored."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from itertools import islice

import torch

from rnnlab.experiments.registry import ExperimentResult, RunContext, option, register
from rnnlab.learning import RTRL, OnlineTrainer, RunningLoss
from rnnlab.models import ElmanRNN
from rnnlab.tasks import MackeyGlass, mackey_glass_squash, sine_mixture, stream_one_step_ahead

SERIES = ("mackey-glass", "sine")


@dataclass
class OnlinePredictionConfig:
    series: str = option("mackey-glass", "the stream: mackey-glass (tau=17, tanh(x-1)) or sine",
                         choices=SERIES)
    steps: int = option(6000, "samples in the stream (one weight update each)", low=1)
    hidden_size: int = option(16, "N, hidden units", low=1)
    readout: str = option("tanh", "readout activation: tanh (the course), identity, sigmoid")
    optimizer: str = option("sgd", "sgd or adam", choices=("sgd", "adam"))
    lr: float = option(0.05, "learning rate", low=0, low_open=True)
    clip_norm: float | None = option(1.0, "gradient-norm clipping threshold (none: off)")
    report_every: int = option(500, "samples per row of the result table", low=1)
    plot_last: int = option(300, "samples shown in the prediction-vs-target plot", low=1)
    seed: int = option(0, "seed of the weights and of the series")
    dtype: str = option("float32", "float32 or float64", choices=("float32", "float64"))


def _stream(cfg: OnlinePredictionConfig):
    """The raw samples, generated lazily one at a time."""
    if cfg.series == "mackey-glass":
        return (mackey_glass_squash(v) for v in MackeyGlass(washout=500.0, seed=cfg.seed))
    # A sine mixture has no natural end: generate it in blocks of 1000 samples on demand.
    def sines():
        block = 0
        while True:
            s = sine_mixture(1000 * (block + 1), seed=cfg.seed, noise=0.0, dtype=torch.float64)
            yield from (0.9 * v for v in s[1000 * block :].tolist())
            block += 1
    return sines()


@register("online-prediction",
          "Elman RNN learns one-step-ahead prediction of a stream online with exact RTRL",
          OnlinePredictionConfig)
def run(cfg: OnlinePredictionConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt

    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(cfg.seed)
    model = ElmanRNN(1, cfg.hidden_size, 1, readout=cfg.readout, dtype=dtype)
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
    trainer = OnlineTrainer(RTRL(model), opt_cls(model.parameters(), lr=cfg.lr),
                            clip_norm=cfg.clip_norm, running=RunningLoss(beta=0.99))

    rows: list[dict] = []
    window_err = window_naive = window_sq = window_sum = 0.0
    window_n = 0
    last_pred: deque[float] = deque(maxlen=cfg.plot_last)
    last_target: deque[float] = deque(maxlen=cfg.plot_last)
    curve_t, curve_loss = [], []
    stream = stream_one_step_ahead(islice(_stream(cfg), cfg.steps + 1), dtype=dtype)
    with ctx.progress("online RTRL", cfg.steps) as advance:
        for t, (x_t, y_t) in enumerate(stream, start=1):
            o = trainer.step(x_t, y_t)
            pred, target, prev = float(o), float(y_t), float(x_t)
            err = (pred - target) ** 2
            window_err += err
            window_naive += (prev - target) ** 2  # the "tomorrow = today" predictor
            window_sq += target * target
            window_sum += target
            window_n += 1
            last_pred.append(pred)
            last_target.append(target)
            if t % 10 == 0:
                curve_t.append(t)
                curve_loss.append(trainer.running.value)
            if not math.isfinite(pred):
                raise FloatingPointError(f"the prediction diverged at step {t}; lower --lr")
            ctx.log_metrics({"step": t, "target": target, "prediction": pred,
                             "squared_error": err, "running_loss": trainer.running.value})
            if t % cfg.report_every == 0 or t == cfg.steps:
                var = window_sq / window_n - (window_sum / window_n) ** 2
                rows.append({
                    "samples": t,
                    "running_mse": trainer.running.value,
                    "window_mse": window_err / window_n,
                    "window_nrmse": math.sqrt(window_err / window_n / var) if var > 0 else math.nan,
                    "persistence_nrmse": math.sqrt(window_naive / window_n / var)
                    if var > 0 else math.nan,
                })
                window_err = window_naive = window_sq = window_sum = 0.0
                window_n = 0
                if math.isfinite(rows[-1]["window_nrmse"]):
                    ctx.report(t, rows[-1]["window_nrmse"])  # what a sweep may prune on
            advance(1)

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5))
    start = cfg.steps - len(last_target) + 1
    ts = range(start, start + len(last_target))
    ax1.plot(ts, list(last_target), label="target y(t) = s(t+1)", lw=1.5)
    ax1.plot(ts, list(last_pred), label="prediction o(t)", lw=1.2, ls="--")
    ax1.set_title(f"{cfg.series}: last {len(ts)} samples of online RTRL (N={cfg.hidden_size})")
    ax1.set_xlabel("sample")
    ax1.legend()
    ax2.semilogy(curve_t, curve_loss)
    ax2.set_xlabel("sample")
    ax2.set_ylabel("running squared error (EMA, beta=0.99)")
    ax2.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    plot = ctx.save_figure(fig, "prediction")

    first, last = rows[0], rows[-1]
    summary = (
        f"Online RTRL on {cfg.series}: window NRMSE {first['window_nrmse']:.3f} in the first "
        f"{cfg.report_every} samples -> {last['window_nrmse']:.3f} in the last "
        f"(persistence predictor: {last['persistence_nrmse']:.3f})."
    )
    return ExperimentResult(
        title=f"online-prediction ({cfg.series}, N={cfg.hidden_size}, {cfg.optimizer} "
              f"lr={cfg.lr})",
        rows=rows, summary=summary, plots=[plot],
        figures={"final_window_nrmse": last["window_nrmse"],
                 "first_window_nrmse": first["window_nrmse"],
                 "persistence_nrmse": last["persistence_nrmse"]},
    )
