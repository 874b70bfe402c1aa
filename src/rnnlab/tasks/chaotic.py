"""Chaotic benchmark series: the Hénon map and the Lorenz system.

Both are computed in float64 with scalar Python arithmetic (a step costs a few microseconds,
less than one call of a tensor operation) and returned as ``(length, features)`` tensors of
the requested dtype and device. Row ``k`` is the state after ``washout + k`` iterations (Hénon)
or at time ``washout + k * dt * sample_every`` (Lorenz); with ``washout=0`` row 0 is the
initial condition. Without an explicit ``initial`` the initial condition is drawn from a
seeded generator, so the same seed gives the same series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_int, check_number, check_positive_int
from rnnlab.tasks._checks import check_float_dtype


def _check_initial(initial: Sequence[float], size: int) -> list[float]:
    values = [float(v) for v in initial]
    if len(values) != size:
        raise ValueError(f"initial must have {size} values, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"initial must be finite, got {values}")
    return values


def henon_fixed_points(a: float = 1.4, b: float = 0.3) -> list[tuple[float, float]]:
    """The fixed points of the Hénon map: ``x* = (-(1-b) ± sqrt((1-b)^2 + 4a)) / (2a)``,
    ``y* = b x*`` (solutions of ``x = 1 - a x^2 + b x``); empty if ``(1-b)^2 + 4a < 0``."""
    disc = (1.0 - b) ** 2 + 4.0 * a
    if a == 0:
        return [(1.0 / (1.0 - b), b / (1.0 - b))] if b != 1 else []
    if disc < 0:
        return []
    roots = [(-(1.0 - b) + s * math.sqrt(disc)) / (2.0 * a) for s in (1.0, -1.0)]
    return [(x, b * x) for x in roots]


def henon(
    length: int,
    *,
    a: float = 1.4,
    b: float = 0.3,
    washout: int = 100,
    initial: Sequence[float] | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    escape_radius: float = 1e6,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Orbit of the Hénon map (Hénon 1976, "A two-dimensional mapping with a strange
    attractor", Commun. Math. Phys. 50)::

        x(n+1) = 1 - a x(n)^2 + y(n),    y(n+1) = b x(n)

    with the classical chaotic values ``a = 1.4``, ``b = 0.3``. Returns ``(length, 2)`` rows
    ``(x(n), y(n))`` for ``n = washout .. washout + length - 1``. Without ``initial`` the start
    is drawn uniformly from ``[-0.1, 0.1]^2``, inside the attractor's basin. An orbit that
    leaves the disc of radius ``escape_radius`` (it then runs off to infinity) raises
    ``ValueError``.
    """
    check_positive_int("length", length)
    check_float_dtype(dtype)
    a, b = check_number("a", a), check_number("b", b)
    washout = check_int("washout", washout, low=0)
    if not escape_radius > 0:
        raise ValueError(f"escape_radius must be positive, got {escape_radius}")
    if initial is None:
        gen = make_generator(seed, generator)
        x, y = (0.2 * torch.rand(2, generator=gen, dtype=torch.float64) - 0.1).tolist()
    else:
        x, y = _check_initial(initial, 2)
    rows: list[tuple[float, float]] = []
    for n in range(washout + length):
        if n >= washout:
            rows.append((x, y))
        if not (abs(x) <= escape_radius and abs(y) <= escape_radius):
            raise ValueError(
                f"the Henon orbit escaped to infinity at step {n} (|state| > {escape_radius}); "
                "the initial condition is outside the attractor's basin for these a, b"
            )
        x, y = 1.0 - a * x * x + y, b * x
    return torch.tensor(rows, dtype=torch.float64).to(dtype=dtype, device=device)


def lorenz_equilibria(
    sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> list[tuple[float, float, float]]:
    """Equilibria of the Lorenz system: the origin and, for ``rho > 1``,
    ``C± = (±sqrt(beta (rho-1)), ±sqrt(beta (rho-1)), rho - 1)`` (Lorenz 1963)."""
    points = [(0.0, 0.0, 0.0)]
    if rho > 1:
        r = math.sqrt(beta * (rho - 1.0))
        points += [(r, r, rho - 1.0), (-r, -r, rho - 1.0)]
    return points


def lorenz_rhs(
    state: Sequence[float], sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> tuple[float, float, float]:
    """``(dx/dt, dy/dt, dz/dt) = (sigma (y - x), x (rho - z) - y, x y - beta z)``."""
    x, y, z = state
    return sigma * (y - x), x * (rho - z) - y, x * y - beta * z


def lorenz(
    length: int,
    *,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    dt: float = 0.01,
    sample_every: int = 2,
    washout: float = 25.0,
    initial: Sequence[float] | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Trajectory of the Lorenz system (Lorenz 1963, "Deterministic nonperiodic flow",
    J. Atmos. Sci. 20)::

        dx/dt = sigma (y - x),    dy/dt = x (rho - z) - y,    dz/dt = x y - beta z

    with the classical ``sigma = 10, rho = 28, beta = 8/3``, integrated by the classical
    4th-order Runge–Kutta method with step ``dt`` (default 0.01 time units) and sampled every
    ``sample_every`` steps (default 2: one sample every 0.02 time units). The first
    ``washout`` time units (a multiple of ``dt``) are integrated and dropped so the series is
    on the attractor. Returns ``(length, 3)`` rows ``(x, y, z)``. Without ``initial`` the
    start is drawn uniformly from ``[-15, 15] x [-15, 15] x [5, 45]``.
    """
    check_positive_int("length", length)
    check_positive_int("sample_every", sample_every)
    check_float_dtype(dtype)
    sigma = check_number("sigma", sigma)
    rho = check_number("rho", rho)
    beta = check_number("beta", beta)
    dt = check_number("dt", dt, low=0.0, low_open=True)
    washout = check_number("washout", washout, low=0.0)
    skip = washout / dt
    if abs(skip - round(skip)) > 1e-9 * max(1.0, skip):
        raise ValueError(f"washout/dt must be an integer, got washout={washout}, dt={dt}")
    skip = round(skip)
    if initial is None:
        gen = make_generator(seed, generator)
        r = torch.rand(3, generator=gen, dtype=torch.float64).tolist()
        x, y, z = 30.0 * r[0] - 15.0, 30.0 * r[1] - 15.0, 40.0 * r[2] + 5.0
    else:
        x, y, z = _check_initial(initial, 3)
    h, h2, h6 = dt, 0.5 * dt, dt / 6.0
    rows: list[tuple[float, float, float]] = []
    total = skip + (length - 1) * sample_every
    step = 0
    while True:
        if step >= skip and (step - skip) % sample_every == 0:
            rows.append((x, y, z))
        if step == total:
            break
        # RK4, written out on scalars.
        k1x, k1y, k1z = sigma * (y - x), x * (rho - z) - y, x * y - beta * z
        ax, ay, az = x + h2 * k1x, y + h2 * k1y, z + h2 * k1z
        k2x, k2y, k2z = sigma * (ay - ax), ax * (rho - az) - ay, ax * ay - beta * az
        ax, ay, az = x + h2 * k2x, y + h2 * k2y, z + h2 * k2z
        k3x, k3y, k3z = sigma * (ay - ax), ax * (rho - az) - ay, ax * ay - beta * az
        ax, ay, az = x + h * k3x, y + h * k3y, z + h * k3z
        k4x, k4y, k4z = sigma * (ay - ax), ax * (rho - az) - ay, ax * ay - beta * az
        x += h6 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
        y += h6 * (k1y + 2.0 * k2y + 2.0 * k3y + k4y)
        z += h6 * (k1z + 2.0 * k2z + 2.0 * k3z + k4z)
        step += 1
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            raise ValueError(
                f"the Lorenz integration blew up at step {step}; reduce dt (got {dt})"
            )
    return torch.tensor(rows, dtype=torch.float64).to(dtype=dtype, device=device)
