"""A simulator-neutral description of a LIF column: NEST, brian2 and rnnlab run the SAME one.

Units throughout: ms, mV, nA, MOhm (so R * I is in mV and tau / R is a capacitance in nF).

The column's parameters are those of Maass, Natschläger & Markram (2002), Neural Computation 14,
2531-2560, appendix, as also used by brian2's example
``examples/frompapers/Maass_Natschlaeger_Markram_2002.py``: 15 x 3 x 3 grid, 20 % inhibitory,
tau_m = 30 ms, R = 1 MOhm, threshold 15 mV, reset 13.5 mV, refractory 3 ms (E) / 2 ms (I),
background current 13.5 nA, connection probability C exp(-(D(a, b) / lambda)^2) with lambda = 2
and C = 0.3 (EE), 0.2 (EI), 0.4 (IE), 0.1 (II); synaptic current time constant 3 ms (from E)
and 6 ms (from I); delays 1.5 ms (EE), 0.8 ms (others); mean amplitudes A = 30, 60, -19, -19 nA,
(U, D [s], F [s]) = (0.5, 1.1, 0.05) EE, (0.05, 0.125, 1.2) EI, (0.25, 0.7, 0.02) IE,
(0.32, 0.144, 0.06) II. The heterogeneity drawn here (A from a Gamma distribution with SD = mean,
U, D, F Gaussian with SD 50 % of the mean, redrawn when outside their range) follows the paper's
appendix. When rnnlab's column exists it is exported into this format instead (rnnlab_side.py),
and this builder is only the fallback that keeps the reference side runnable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

# (C, A [nA], U, D [ms], F [ms], delay [ms], tau_syn [ms]) per connection type (pre, post).
MAASS_TYPES = {
    ("E", "E"): (0.3, 30.0, 0.5, 1100.0, 50.0, 1.5, 3.0),
    ("E", "I"): (0.2, 60.0, 0.05, 125.0, 1200.0, 0.8, 3.0),
    ("I", "E"): (0.4, -19.0, 0.25, 700.0, 20.0, 0.8, 6.0),
    ("I", "I"): (0.1, -19.0, 0.32, 144.0, 60.0, 0.8, 6.0),
}


@dataclass
class NeuronCase:
    """One LIF neuron (rest 0 mV): constant current ``i_b`` plus current jumps of
    ``input_weight`` nA decaying with ``tau_syn`` that act from each of ``input_times``."""

    dt: float
    t_stop: float
    tau_m: float = 30.0
    r_in: float = 1.0
    v_th: float = 15.0
    v_reset: float = 13.5
    t_ref: float = 3.0
    i_b: float = 0.0
    v0: float = 0.0
    input_times: np.ndarray | None = None
    input_weight: float = 0.0
    tau_syn: float = 3.0


@dataclass
class ColumnSpec:
    """A column as arrays: neurons (length n), recurrent edges and input edges (length m, k)."""

    tau_m: np.ndarray  # membrane time constant [ms]
    r_in: np.ndarray  # input resistance [MOhm]
    v_th: np.ndarray  # threshold [mV] (rest = 0 mV)
    v_reset: np.ndarray  # reset [mV]
    t_ref: np.ndarray  # absolute refractory period [ms]
    i_b: np.ndarray  # background current [nA]
    v0: np.ndarray  # initial membrane potential [mV]
    excitatory: np.ndarray  # bool
    pre: np.ndarray  # recurrent edges: source neuron
    post: np.ndarray  # target neuron
    weight: np.ndarray  # amplitude A [nA], signed
    U: np.ndarray
    D: np.ndarray  # depression time constant [ms]
    F: np.ndarray  # facilitation time constant [ms]
    delay: np.ndarray  # [ms]
    tau_syn: np.ndarray  # decay of the synaptic current [ms]
    in_channel: np.ndarray  # input edges: input channel
    in_post: np.ndarray  # target neuron
    in_weight: np.ndarray  # current jump [nA] (static synapse)
    in_tau: np.ndarray  # decay of the input current [ms]
    in_delay: np.ndarray  # [ms] (one dt: the earliest a spike can act in every simulator)

    @property
    def n(self) -> int:
        return int(self.tau_m.shape[0])

    def save(self, path: str, **extra: np.ndarray) -> None:
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in fields(self)}, **extra)

    @classmethod
    def load(cls, path: str) -> ColumnSpec:
        with np.load(path) as z:
            return cls(**{f.name: z[f.name] for f in fields(cls)})

    def taus(self) -> np.ndarray:
        """The distinct current time constants: one NEST receptor port per value."""
        return np.unique(np.concatenate([self.tau_syn, self.in_tau]))


def _positive_gauss(rng: np.random.Generator, mean: float, size: int, high: float = np.inf):
    """Gaussian, SD 50 % of the mean; values outside (0, high] redrawn uniformly in (0, 2 mean]."""
    x = rng.normal(mean, 0.5 * mean, size)
    bad = (x <= 0) | (x > high)
    x[bad] = rng.uniform(0, min(2 * mean, high), int(bad.sum()))
    return x


def maass_column(
    shape: tuple[int, int, int] = (15, 3, 3),
    *,
    seed: int = 0,
    dt: float = 0.1,
    input_fraction: float = 1.0,
    input_weight_exc: float = 18.0,
    input_weight_inh: float = 9.0,
) -> ColumnSpec:
    """The paper's column drawn in numpy (the fallback when rnnlab's column is not used)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    pos = np.stack(np.unravel_index(np.arange(n), shape), 1).astype(float)
    exc = np.ones(n, bool)
    exc[rng.choice(n, round(0.2 * n), replace=False)] = False
    kind = np.where(exc, "E", "I")
    d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
    pre, post, par = [], [], []
    for a in range(n):
        for b in range(n):
            if a == b:
                continue
            c, amp, u, d, f, delay, tau = MAASS_TYPES[(kind[a], kind[b])]
            if rng.random() < c * np.exp(-d2[a, b] / 2.0**2):
                pre.append(a)
                post.append(b)
                par.append((amp, u, d, f, delay, tau))
    if not pre:
        raise ValueError("the column drew no recurrent edge: use a larger grid or another seed")
    par = np.array(par)
    amp = np.sign(par[:, 0]) * rng.gamma(1.0, np.abs(par[:, 0]))
    U = np.array([_positive_gauss(rng, u, 1, 1.0)[0] for u in par[:, 1]])
    D = np.array([_positive_gauss(rng, d, 1)[0] for d in par[:, 2]])
    F = np.array([_positive_gauss(rng, f, 1)[0] for f in par[:, 3]])
    targets = np.sort(rng.choice(n, round(input_fraction * n), replace=False))
    return ColumnSpec(
        tau_m=np.full(n, 30.0),
        r_in=np.full(n, 1.0),
        v_th=np.full(n, 15.0),
        v_reset=np.full(n, 13.5),
        t_ref=np.where(exc, 3.0, 2.0),
        i_b=np.full(n, 13.5),
        v0=rng.uniform(13.5, 15.0, n),
        excitatory=exc,
        pre=np.array(pre, np.int64),
        post=np.array(post, np.int64),
        weight=amp,
        U=U,
        D=D,
        F=F,
        delay=par[:, 4].copy(),
        tau_syn=par[:, 5].copy(),
        in_channel=np.zeros(targets.size, np.int64),
        in_post=targets,
        in_weight=np.where(exc[targets], input_weight_exc, input_weight_inh),
        in_tau=np.where(exc[targets], 3.0, 6.0),
        in_delay=np.full(targets.size, dt),
    )


def poisson_train(rate_hz: float, t_stop: float, dt: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson spike times [ms] on the dt grid (at most one spike per step, times k * dt, k >= 1).

    Times on the grid make the input identical in every simulator (NEST's spike_generator and
    brian2's SpikeGeneratorGroup both act at grid times).
    """
    steps = round(t_stop / dt)
    p = rate_hz * dt * 1e-3
    k = np.flatnonzero(rng.random(steps) < p)
    k = k[k >= 1]
    return k * dt


def regular_train(rate_hz: float, n_spikes: int, t0: float = 10.0) -> np.ndarray:
    return t0 + np.arange(n_spikes) * (1000.0 / rate_hz)
