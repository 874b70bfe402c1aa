"""One-step-ahead prediction: the target at time t is the series' value at t + 1."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


def one_step_ahead(series: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``s(0..T-2)`` and targets ``s(1..T-1)``, each ``(1, T-1, 1)`` (a batch of one).

    A ``(T, F)`` multivariate series gives ``(1, T-1, F)`` tensors.
    """
    if series.dim() == 1:
        series = series.unsqueeze(1)
    if series.dim() != 2 or series.shape[0] < 2:
        raise ValueError(
            f"series must be (time,) or (time, features) with time >= 2, got {tuple(series.shape)}"
        )
    return series[:-1].unsqueeze(0), series[1:].unsqueeze(0)


def stream_one_step_ahead(
    samples: Iterable[float],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Turn a stream of scalars into ``(x_t, y_t)`` pairs of shape ``(1, 1)`` with
    ``y_t = x_{t+1}``, holding only the previous sample (nothing else is stored)."""
    it = iter(samples)
    try:
        previous = float(next(it))
    except StopIteration:
        return
    for value in it:
        value = float(value)
        yield (torch.tensor([[previous]], dtype=dtype, device=device),
               torch.tensor([[value]], dtype=dtype, device=device))
        previous = value


def nmse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Normalised mean squared error ``mean((p - y)^2) / var(y)``."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ"
        )
    var = float(target.double().var(unbiased=False))
    if var == 0:
        raise ValueError("target has zero variance: NMSE is undefined")
    return float((prediction.double() - target.double()).pow(2).mean()) / var


def nrmse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Normalised root mean squared error ``sqrt(NMSE)``."""
    return nmse(prediction, target) ** 0.5
