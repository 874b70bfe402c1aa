"""Generated time series: sine mixtures and the Mackey–Glass delay differential equation.

Every generator is seeded and deterministic, and has a streaming form that yields one sample
at a time (for true online learning, where the data are never stored).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence

import torch

from rnnlab._validation import check_positive_int


def sine_mixture(
    length: int,
    periods: Sequence[float] = (20.0, 31.0, 53.0),
    amplitudes: Sequence[float] | None = None,
    phases: Sequence[float] | None = None,
    noise: float = 0.0,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``s(t) = sum_k a_k sin(2 pi t / T_k + phi_k) + noise * eps(t)``, ``t = 0..length-1``.

    Periods are in samples. Amplitudes default to ``1/K`` each (so ``|s| <= 1`` without noise);
    phases default to seeded uniform draws in [0, 2 pi); ``eps`` is seeded standard normal.
    Returns a ``(length,)`` tensor.
    """
    check_positive_int("length", length)
    k = len(periods)
    if k == 0:
        raise ValueError("periods must not be empty")
    if any(p <= 0 for p in periods):
        raise ValueError(f"periods must be positive, got {list(periods)}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    gen = torch.Generator().manual_seed(seed)
    amp = torch.full((k,), 1.0 / k, dtype=torch.float64) if amplitudes is None else \
        torch.as_tensor(amplitudes, dtype=torch.float64)
    phi = torch.rand(k, generator=gen, dtype=torch.float64) * 2 * math.pi if phases is None \
        else torch.as_tensor(phases, dtype=torch.float64)
    if amp.shape != (k,) or phi.shape != (k,):
        raise ValueError("periods, amplitudes and phases must have the same length")
    t = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    per = torch.as_tensor(periods, dtype=torch.float64)
    s = (amp * torch.sin(2 * math.pi * t / per + phi)).sum(1)
    if noise > 0:
        s = s + noise * torch.randn(length, generator=gen, dtype=torch.float64)
    return s.to(dtype=dtype, device=device)


class MackeyGlass:
    """Streaming Mackey–Glass series (Mackey & Glass 1977)::

        dx/dt = beta x(t - tau) / (1 + x(t - tau)^n) - gamma x(t)

    with the standard chaotic setting tau = 17, beta = 0.2, gamma = 0.1, n = 10.

    Integrator (documented, since published generators differ): classical 4th-order Runge–Kutta
    with step ``dt`` (``tau/dt`` must be an integer), where the delayed term at the half step
    ``t + dt/2`` is the mean of the stored values at ``t - tau`` and ``t - tau + dt`` (linear
    interpolation). The history for ``t <= 0`` is the constant ``x0``; a seed, when given, adds
    uniform noise of width ``history_noise`` to that history (reproducible variety of series).
    Samples are taken every ``sample_every`` time units, after ``washout`` time units are
    discarded. Only the last ``tau/dt + 1`` values are kept, so the stream has O(tau/dt) memory.
    """

    def __init__(
        self,
        tau: float = 17.0,
        beta: float = 0.2,
        gamma: float = 0.1,
        n: float = 10.0,
        dt: float = 0.1,
        sample_every: float = 1.0,
        x0: float = 1.2,
        washout: float = 0.0,
        seed: int | None = None,
        history_noise: float = 0.2,
    ) -> None:
        for name, value in (("tau", tau), ("dt", dt), ("sample_every", sample_every)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if washout < 0:
            raise ValueError(f"washout must be >= 0, got {washout}")
        delay = tau / dt
        if abs(delay - round(delay)) > 1e-9:
            raise ValueError(f"tau/dt must be an integer, got tau={tau}, dt={dt}")
        every = sample_every / dt
        if abs(every - round(every)) > 1e-9:
            raise ValueError(f"sample_every/dt must be an integer, got {sample_every}/{dt}")
        self.tau, self.beta, self.gamma, self.n, self.dt = tau, beta, gamma, n, dt
        self.sample_every, self.x0, self.washout = sample_every, x0, washout
        self.seed, self.history_noise = seed, history_noise
        self._delay = round(delay)
        self._every = round(every)

    def _rhs(self, x: float, x_tau: float) -> float:
        return self.beta * x_tau / (1.0 + x_tau**self.n) - self.gamma * x

    def __iter__(self) -> Iterator[float]:
        history: deque[float]
        if self.seed is None:
            history = deque([self.x0] * (self._delay + 1), maxlen=self._delay + 1)
        else:
            gen = torch.Generator().manual_seed(self.seed)
            noise = (torch.rand(self._delay + 1, generator=gen, dtype=torch.float64) - 0.5)
            history = deque((self.x0 + self.history_noise * noise).tolist(),
                            maxlen=self._delay + 1)
        # history[0] is x(t - tau), history[-1] is x(t).
        h, skip = self.dt, round(self.washout / self.dt)
        step = 0
        while True:
            x, lag0, lag1 = history[-1], history[0], history[1]
            lag_half = 0.5 * (lag0 + lag1)
            k1 = self._rhs(x, lag0)
            k2 = self._rhs(x + 0.5 * h * k1, lag_half)
            k3 = self._rhs(x + 0.5 * h * k2, lag_half)
            k4 = self._rhs(x + h * k3, lag1)
            history.append(x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4))
            step += 1
            if step > skip and (step - skip) % self._every == 0:
                yield history[-1]


def mackey_glass(
    length: int,
    tau: float = 17.0,
    *,
    washout: float = 500.0,
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    **kwargs: float,
) -> torch.Tensor:
    """``length`` samples of :class:`MackeyGlass` (after ``washout`` time units) as a tensor."""
    check_positive_int("length", length)
    stream = iter(MackeyGlass(tau=tau, washout=washout, seed=seed, **kwargs))
    values = [next(stream) for _ in range(length)]
    return torch.tensor(values, dtype=torch.float64).to(dtype=dtype, device=device)


def mackey_glass_squash(x: torch.Tensor | float) -> torch.Tensor | float:
    """``tanh(x - 1)``: Jaeger's (2001) squashing of Mackey–Glass into (-1, 1) for tanh units."""
    if isinstance(x, torch.Tensor):
        return torch.tanh(x - 1.0)
    return math.tanh(x - 1.0)
