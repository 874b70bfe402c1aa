"""Nonlinear channel equalization (Jaeger & Haas 2004, Science 304: 78–80, supplementary
material), and its metric, the symbol error rate.

A sequence of i.i.d. symbols ``d(n)`` drawn uniformly from {-3, -1, 1, 3} goes through a
linear channel with intersymbol interference from two future and seven past symbols, then a
memoryless cubic nonlinearity, then additive white Gaussian noise::

    q(n) = 0.08 d(n+2) - 0.12 d(n+1) + d(n) + 0.18 d(n-1) - 0.1 d(n-2) + 0.091 d(n-3)
           - 0.05 d(n-4) + 0.04 d(n-5) + 0.03 d(n-6) + 0.01 d(n-7)
    u(n) = q(n) + 0.036 q(n)^2 - 0.011 q(n)^3 + v(n)

The equalizer reads ``u`` and must output ``d(n - 2)`` (a decision delay of 2); its score is
the symbol error rate after each output is rounded to the nearest symbol. Jaeger & Haas
report it for signal-to-noise ratios from 12 to 32 dB.

SNR convention (stated since papers differ): ``SNR = 10 log10(P_s / sigma^2)`` in dB, where
``P_s`` is the mean square of the noiseless received signal ``x(n) = q + 0.036 q^2 -
0.011 q^3`` of the generated row (its empirical power, not the mean-removed variance), and
``v(n) ~ N(0, sigma^2)`` i.i.d.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_int, check_positive_int, check_tensor
from rnnlab.tasks._checks import check_float_dtype

SYMBOLS: tuple[float, ...] = (-3.0, -1.0, 1.0, 3.0)
# Channel taps for d(n+2), d(n+1), d(n), d(n-1), ..., d(n-7) (Jaeger & Haas 2004).
CHANNEL_TAPS: tuple[float, ...] = (0.08, -0.12, 1.0, 0.18, -0.1, 0.091, -0.05, 0.04, 0.03, 0.01)
# Memoryless distortion x = q + 0.036 q^2 - 0.011 q^3.
NONLINEARITY: tuple[float, float] = (0.036, -0.011)
LEAD, LAG = 2, 7  # taps reach two symbols ahead and seven back


class ChannelData(NamedTuple):
    """Output of :func:`channel_equalization`; all tensors share the batch dimension.

    ``symbols[:, k]`` is ``d(k - 7)``, ``k = 0 .. length + 8`` (symbols ``d(-7) ..
    d(length + 1)``), so ``d(n)`` is ``symbols[:, n + 7]``.
    """

    inputs: torch.Tensor  # (batch, length, 1): received u(n), n = 0 .. length-1
    targets: torch.Tensor  # (batch, length, 1): d(n - delay)
    symbols: torch.Tensor  # (batch, length + 9): d(-7) .. d(length + 1)
    noiseless: torch.Tensor  # (batch, length, 1): x(n), u(n) without noise


def channel_equalization(
    length: int,
    snr_db: float | None = 24.0,
    *,
    delay: int = 2,
    batch: int = 1,
    seed: int = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> ChannelData:
    """Generate the nonlinear channel-equalization task (module docstring for the formulas).

    Args:
        length: time steps ``n = 0 .. length - 1``.
        snr_db: signal-to-noise ratio in dB of the added Gaussian noise; ``None`` for none.
        delay: the target is ``d(n - delay)``; 2 in Jaeger & Haas, allowed 0 .. 7 (the
            symbols the received sample depends on).
        batch: independent rows.
        seed, generator: randomness (symbols first, then noise); same seed, same data.
    """
    check_positive_int("length", length)
    check_positive_int("batch", batch)
    check_float_dtype(dtype)
    delay = check_int("delay", delay, low=0, high=LAG)
    if snr_db is not None and (
        isinstance(snr_db, bool) or not isinstance(snr_db, int | float)
        or not math.isfinite(snr_db)
    ):
        raise ValueError(f"snr_db must be a finite number of dB or None, got {snr_db!r}")
    gen = make_generator(seed, generator)
    symbol_set = torch.tensor(SYMBOLS, dtype=torch.float64)
    index = torch.randint(len(SYMBOLS), (batch, length + LEAD + LAG), generator=gen)
    d = symbol_set[index]
    # Column j of d is d(j - LAG); q(n) takes d(n+2) .. d(n-7), i.e. columns n+9 .. n.
    taps = torch.tensor(CHANNEL_TAPS, dtype=torch.float64)
    windows = d.unfold(1, LEAD + LAG + 1, 1)  # (batch, length, 10): d(n-7) .. d(n+2)
    q = windows @ taps.flip(0)
    c2, c3 = NONLINEARITY
    x = q + c2 * q**2 + c3 * q**3
    u = x
    if snr_db is not None:
        power = x.pow(2).mean(dim=1, keepdim=True)
        sigma = torch.sqrt(power / 10.0 ** (snr_db / 10.0))
        u = x + sigma * torch.randn(batch, length, generator=gen, dtype=torch.float64)
    target = d[:, LAG - delay : LAG - delay + length]
    out = {"dtype": dtype, "device": device}
    return ChannelData(
        inputs=u.unsqueeze(-1).to(**out),
        targets=target.unsqueeze(-1).to(**out),
        symbols=d.to(**out),
        noiseless=x.unsqueeze(-1).to(**out),
    )


def nearest_symbol(values: torch.Tensor, symbols: Sequence[float] = SYMBOLS) -> torch.Tensor:
    """Each value replaced by the nearest of ``symbols`` (ties go to the earlier symbol)."""
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
    check_tensor("values", values, ndim=values.dim())
    alphabet = torch.as_tensor(symbols, dtype=values.dtype, device=values.device)
    if alphabet.dim() != 1 or alphabet.numel() == 0:
        raise ValueError(f"symbols must be a non-empty sequence, got {symbols!r}")
    distance = (values.unsqueeze(-1) - alphabet).abs()
    return alphabet[distance.argmin(dim=-1)]


def symbol_error_rate(
    prediction: torch.Tensor, target: torch.Tensor, symbols: Sequence[float] = SYMBOLS
) -> float:
    """Fraction of outputs that, rounded to the nearest symbol, differ from the target
    symbol (Jaeger & Haas 2004). ``target`` must contain only values of ``symbols``."""
    if not isinstance(prediction, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("prediction and target must be torch.Tensors")
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ"
        )
    check_tensor("prediction", prediction, ndim=prediction.dim())
    check_tensor("target", target, ndim=target.dim())
    alphabet = torch.as_tensor(symbols, dtype=torch.float64, device=target.device)
    target64 = target.double()
    if not bool((target64.unsqueeze(-1) == alphabet).any(dim=-1).all()):
        raise ValueError(f"target contains values that are not symbols {list(symbols)}")
    decided = nearest_symbol(prediction.double(), symbols)
    return float((decided != target64).double().mean())
