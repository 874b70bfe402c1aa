"""NARMA-10 and NARMA-20: nonlinear autoregressive moving-average input-output tasks.

Published generators disagree (in the constant term, the input delay, a ``tanh`` wrapper, the
initial conditions); this module implements exactly the two systems of Rodan & Tino (2011,
"Minimum complexity echo state network", IEEE TNN 22(1), section V-A), which follow Atiya &
Parlos (2000) and Jaeger (2003, "Adaptive nonlinear system identification with echo state
networks", NIPS 15)::

    NARMA-10:  y(t+1) = 0.3 y(t) + 0.05 y(t) sum_{i=0}^{9} y(t-i) + 1.5 u(t-9) u(t) + 0.1
    NARMA-20:  y(t+1) = tanh(0.3 y(t) + 0.05 y(t) sum_{i=0}^{19} y(t-i)
                             + 1.5 u(t-19) u(t) + 0.01)

with ``u(t)`` i.i.d. uniform on [0, 0.5]. Conventions fixed here: ``u(t) = y(t) = 0`` for
``t < 0`` and ``y(0) = 0``; the model sees ``u(t)`` at step ``t`` and must output ``y(t+1)``
(which depends only on inputs up to ``t``), so ``inputs[:, t] = u(t)`` and
``targets[:, t] = y(t+1)``. (ReservoirPy's ``narma`` uses other defaults: order 30 with
coefficients 0.2, 0.04, 1.5, 0.001.)

Divergence: NARMA-10 without the ``tanh`` is not bounded; rare input sequences drive it to
infinity. With inputs in [0, 0.5] every term is non-negative, so once ``y(t) > 14 = 0.7/0.05``
we have ``y(t+1) >= y(t) (0.3 + 0.05 y(t)) > y(t)`` and the series grows without bound. The
generator therefore declares a series diverged at the first ``|y| > 14`` or non-finite value,
and either draws a fresh input sequence for that row (``on_divergence="resample"``, the
default, deterministic given the seed) or raises.
"""

from __future__ import annotations

import math

import torch

# make_generator and check_float_dtype were defined here; they stay importable from here.
from rnnlab._random import make_generator
from rnnlab._validation import check_int, check_positive_int, check_tensor
from rnnlab.tasks._checks import check_float_dtype

# order -> (a, b, c, d, tanh wrapper): y(t+1) = g(a y(t) + b y(t) sum y + c u(t-order+1) u(t) + d)
NARMA_COEFFICIENTS: dict[int, tuple[float, float, float, float, bool]] = {
    10: (0.3, 0.05, 1.5, 0.1, False),
    20: (0.3, 0.05, 1.5, 0.01, True),
}

# y(t) > 0.7 / 0.05 makes the NARMA-10 recursion increasing without bound (see module doc).
DIVERGENCE_BOUND = 14.0


def _check_order(order: object) -> int:
    if isinstance(order, bool) or order not in NARMA_COEFFICIENTS:
        raise ValueError(f"order must be one of {sorted(NARMA_COEFFICIENTS)}, got {order!r}")
    return int(order)  # type: ignore[call-overload]


def _run_row(u: list[float], order: int) -> list[float] | None:
    """Targets ``y(1..T)`` for one input sequence, or None if the series diverged."""
    a, b, c, d, squash = NARMA_COEFFICIENTS[order]
    lag = order - 1
    # Zero history: y holds y(t-lag) .. y(t) at the end, u_hist is u shifted right by lag.
    y = [0.0] * order
    u_hist = [0.0] * lag + u
    out: list[float] = []
    for t in range(len(u)):
        y_t = y[-1]
        value = a * y_t + b * y_t * sum(y[-order:]) + c * u_hist[t] * u_hist[t + lag] + d
        if squash:
            value = math.tanh(value)
        # The comparison is False for NaN, hence the explicit finiteness test.
        if not math.isfinite(value) or abs(value) > DIVERGENCE_BOUND:
            return None
        y.append(value)
        out.append(value)
    return out


def _run(u: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets ``y(t+1)`` for float64 inputs ``u`` of shape (batch, T) and a per-row flag that
    is True where the series diverged (those rows are NaN)."""
    # A scalar loop per row: the recursion is sequential and a float loop costs ~2 us a step,
    # far less than the per-call overhead of a chain of small tensor operations.
    rows, diverged = [], []
    for row in u.tolist():
        y = _run_row(row, order)
        diverged.append(y is None)
        rows.append([math.nan] * len(row) if y is None else y)
    return (torch.tensor(rows, dtype=torch.float64).reshape(u.shape),
            torch.tensor(diverged, dtype=torch.bool))


def narma_targets(inputs: torch.Tensor, order: int = 10) -> torch.Tensor:
    """Targets ``y(t+1)`` of NARMA-``order`` driven by given ``inputs`` ``u(t)``.

    ``inputs`` is ``(batch, time, 1)``; the result has the same shape, dtype and device. The
    recursion (module docstring) runs in float64. Raises ``ValueError`` if a row diverges.
    """
    order = _check_order(order)
    check_tensor("inputs", inputs, ndim=3, last_dim=1, layout="(batch, time, 1)")
    if not inputs.dtype.is_floating_point:
        raise TypeError(f"inputs must be a floating-point tensor, got {inputs.dtype}")
    y, diverged = _run(inputs[..., 0].detach().to("cpu", torch.float64), order)
    if bool(diverged.any()):
        rows = diverged.nonzero().flatten().tolist()
        raise ValueError(
            f"NARMA-{order} diverged for batch rows {rows}: |y| exceeded {DIVERGENCE_BOUND} "
            "(beyond it the recursion grows without bound); use inputs in [0, 0.5] or "
            "another input sequence"
        )
    return y.unsqueeze(-1).to(dtype=inputs.dtype, device=inputs.device)


def narma(
    length: int,
    order: int = 10,
    *,
    batch: int = 1,
    washout: int = 0,
    seed: int = 0,
    generator: torch.Generator | None = None,
    on_divergence: str = "resample",
    max_tries: int = 20,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NARMA-10 or NARMA-20 inputs and targets, each ``(batch, length, 1)``.

    ``inputs[:, t] = u(t)`` with ``u ~ U[0, 0.5]`` i.i.d., ``targets[:, t] = y(t+1)`` (module
    docstring: the formulas of Rodan & Tino 2011). The first ``washout`` steps, where the zero
    initial conditions still show, are generated and dropped. A row whose series diverges is
    redrawn from the same generator (``on_divergence="resample"``, at most ``max_tries``
    times) or makes the call raise ``ValueError`` (``"raise"``). Same seed, same result;
    ``generator``, when given, is used instead of ``seed``. Both series are computed in float64
    and then cast to ``dtype`` (in float32 the targets match the rounded inputs to ~1e-7).
    """
    check_positive_int("length", length)
    check_positive_int("batch", batch)
    check_positive_int("max_tries", max_tries)
    order = _check_order(order)
    check_float_dtype(dtype)
    washout = check_int("washout", washout, low=0)
    if on_divergence not in ("resample", "raise"):
        raise ValueError(f"on_divergence must be 'resample' or 'raise', got {on_divergence!r}")
    gen = make_generator(seed, generator)
    steps = length + washout
    u = 0.5 * torch.rand(batch, steps, generator=gen, dtype=torch.float64)
    y, diverged = _run(u, order)
    tries = 1
    while bool(diverged.any()):
        if on_divergence == "raise" or tries >= max_tries:
            rows = diverged.nonzero().flatten().tolist()
            raise ValueError(
                f"NARMA-{order} diverged (|y| > {DIVERGENCE_BOUND}) for batch rows {rows} "
                f"after {tries} draw(s); try another seed or on_divergence='resample'"
            )
        rows = diverged.nonzero().flatten()
        u[rows] = 0.5 * torch.rand(len(rows), steps, generator=gen, dtype=torch.float64)
        y[rows], diverged_rows = _run(u[rows], order)
        diverged = torch.zeros_like(diverged)
        diverged[rows] = diverged_rows
        tries += 1
    out = {"dtype": dtype, "device": device}
    return (u[:, washout:].unsqueeze(-1).to(**out), y[:, washout:].unsqueeze(-1).to(**out))
