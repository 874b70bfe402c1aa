"""rnnlab side: the same single neuron, single synapse and column through ``LiquidColumn``.

Everything goes through the simulator itself (not the closed forms of ``lsm.theory``): a single
neuron is a hand-written one-neuron :class:`Column`; a single synapse is a two-neuron column
whose first neuron is made to fire at the wanted times (an injected current pulse over one step
lifts it from 0 mV past threshold) and whose second neuron, with an unreachable threshold,
records the current jumps A u_n R_n (``record_current``). The column is exported to spec.py's
format so that NEST and brian2 simulate the very same edges, amplitudes, U, D, F, delays and
initial potentials.

Time conventions match nest_sim.py: input raster bin k acts from k dt; output raster index k is
the spike at (k + 1) dt (NEST's stamp).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lsm_reference.spec import ColumnSpec, NeuronCase
from rnnlab.reservoir.lsm import Column, LiquidColumn, build_column, spike_times_to_raster

VERSION = "rnnlab"


def _t(x, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _hand_column(n: int, *, tau_m, r_in, v_th, v_reset, t_ref, i_b, input_w, input_tau,
                 pre=(), post=(), amp=(), U=(), D=(), F=(), delay=(), tau_s=()) -> Column:
    def vec(x):
        return _t(np.broadcast_to(np.asarray(x, float), (n,)).copy())

    e = len(pre)
    return Column(
        positions=torch.zeros((n, 3), dtype=torch.int64),
        inhibitory=torch.zeros(n, dtype=torch.bool),
        tau_m=vec(tau_m), resistance=vec(r_in), threshold=vec(v_th), reset=vec(v_reset),
        refractory=vec(t_ref), background=vec(i_b), v_init_low=vec(0.0), v_init_high=vec(0.0),
        input_tau=vec(input_tau),
        pre=torch.as_tensor(np.asarray(pre, np.int64).reshape(e)),
        post=torch.as_tensor(np.asarray(post, np.int64).reshape(e)),
        amplitude=_t(amp).reshape(e), U=_t(U).reshape(e), D=_t(D).reshape(e),
        F=_t(F).reshape(e), delay=_t(delay).reshape(e), tau_s=_t(tau_s).reshape(e),
        input_weights=_t(input_w).reshape(1, n),
    ).validate()


def _raster(times_per_trial: list[np.ndarray], steps: int, dt: float) -> torch.Tensor:
    """One input channel's times per trial (on the grid, acting from t) -> counts (B, T, 1)."""
    return spike_times_to_raster([[np.asarray(t, float).tolist()] for t in times_per_trial],
                                 steps * dt, dt)


def single_neuron(case: NeuronCase, dtype: torch.dtype = torch.float64
                  ) -> dict[str, np.ndarray]:
    c = case
    dt = c.dt
    col = _hand_column(1, tau_m=c.tau_m, r_in=c.r_in, v_th=c.v_th, v_reset=c.v_reset,
                       t_ref=c.t_ref, i_b=c.i_b, input_w=[c.input_weight], input_tau=c.tau_syn)
    liquid = LiquidColumn(col, dt=dt).to(dtype)
    steps = round(c.t_stop / dt)
    x = _raster([np.asarray([] if c.input_times is None else c.input_times)], steps, dt)
    state = liquid.initial_state(1, v0=torch.tensor([c.v0]))
    out = liquid(x.to(dtype), state=state, record_voltage=True)
    k = out.spikes[0, :, 0].nonzero().flatten().numpy()
    return {"t": (np.arange(steps) + 1) * dt, "v": out.voltage[0, :, 0].double().numpy(),
            "spikes": (k + 1) * dt}


def synapse_efficacies(spike_times: np.ndarray, *, U: float, D: float, F: float,
                       dt: float = 0.1, tau_s: float = 3.0,
                       dtype: torch.dtype = torch.float64) -> np.ndarray:
    """u_n R_n at each presynaptic spike (times on the grid, >= dt), through LiquidColumn."""
    times = np.asarray(spike_times, float)
    k_spike = np.rint(times / dt).astype(np.int64)  # spike at k dt = raster index k - 1
    delay = 2 * dt
    col = _hand_column(2, tau_m=30.0, r_in=1.0, v_th=[15.0, 1e12], v_reset=0.0,
                       t_ref=1.5 * dt, i_b=0.0, input_w=[0.0, 0.0], input_tau=tau_s,
                       pre=[0], post=[1], amp=[1.0], U=[U], D=[D], F=[F], delay=[delay],
                       tau_s=[tau_s])
    liquid = LiquidColumn(col, dt=dt).to(dtype)
    steps = int(k_spike.max()) + round(delay / dt) + 2
    # one step of I = 2 * theta / (R (1 - e^{-dt/tau_m})) takes neuron 0 from 0 mV past threshold
    pulse = 2 * 15.0 / (1 - np.exp(-dt / 30.0))
    inj = torch.zeros((1, steps, 2), dtype=dtype)
    inj[0, k_spike - 1, 0] = pulse
    out = liquid(injection=inj, state=liquid.initial_state(1, v0=torch.zeros(2)),
                 record_current=True)
    fired = (out.spikes[0, :, 0].nonzero().flatten().numpy() + 1) * dt
    if not np.allclose(fired, times):
        raise RuntimeError("the driver neuron did not fire at the requested times")
    cur = out.current[0, :, 1].double().numpy()
    arrive = k_spike + round(delay / dt)
    decay = np.exp(-dt / tau_s)
    return cur[arrive] - cur[arrive - 1] * decay


def export(column: Column, v0: np.ndarray, dt: float) -> ColumnSpec:
    """rnnlab's column (and one trial's initial potentials) as spec.py's arrays."""
    w = column.input_weights.numpy()
    ch, post = np.nonzero(w)
    return ColumnSpec(
        tau_m=column.tau_m.numpy(), r_in=column.resistance.numpy(),
        v_th=column.threshold.numpy(), v_reset=column.reset.numpy(),
        t_ref=column.refractory.numpy(), i_b=column.background.numpy(), v0=np.asarray(v0),
        excitatory=~column.inhibitory.numpy(), pre=column.pre.numpy(), post=column.post.numpy(),
        weight=column.amplitude.numpy(), U=column.U.numpy(), D=column.D.numpy(),
        F=column.F.numpy(), delay=column.delay.numpy(), tau_syn=column.tau_s.numpy(),
        in_channel=ch.astype(np.int64), in_post=post.astype(np.int64), in_weight=w[ch, post],
        in_tau=column.input_tau.numpy()[post], in_delay=np.full(post.size, dt),
    )


def to_column(spec: ColumnSpec) -> Column:
    """spec.py's arrays as an rnnlab Column (the inverse of :func:`export`; the input delay of
    one step is rnnlab's convention and not stored). The input current's decay is per target
    neuron in rnnlab, so every input edge into a neuron must share one tau."""
    n = spec.n
    in_tau = np.full(n, 3.0)
    in_tau[spec.in_post] = spec.in_tau
    if not np.allclose(in_tau[spec.in_post], spec.in_tau):
        raise ValueError("input edges into one neuron have different time constants")
    k = int(spec.in_channel.max()) + 1 if spec.in_channel.size else 1
    w = np.zeros((k, n))
    np.add.at(w, (spec.in_channel, spec.in_post), spec.in_weight)
    return Column(
        positions=torch.zeros((n, 3), dtype=torch.int64),
        inhibitory=torch.as_tensor(~np.asarray(spec.excitatory, bool)),
        tau_m=_t(spec.tau_m), resistance=_t(spec.r_in), threshold=_t(spec.v_th),
        reset=_t(spec.v_reset), refractory=_t(spec.t_ref), background=_t(spec.i_b),
        v_init_low=_t(spec.v0), v_init_high=_t(spec.v0), input_tau=_t(in_tau),
        pre=torch.as_tensor(np.asarray(spec.pre, np.int64)),
        post=torch.as_tensor(np.asarray(spec.post, np.int64)),
        amplitude=_t(spec.weight), U=_t(spec.U), D=_t(spec.D), F=_t(spec.F),
        delay=_t(spec.delay), tau_s=_t(spec.tau_syn), input_weights=_t(w),
    ).validate()


def maass_column(seed: int = 0, dt: float = 0.1, trial_seed: int = 1) -> tuple[Column, ColumnSpec]:
    """rnnlab's default (paper) column with one input channel, and its export."""
    col = build_column(seed=seed, n_inputs=1)
    v0 = LiquidColumn(col, dt=dt).initial_state(1, seed=trial_seed).v[0].numpy()
    return col, export(col, v0, dt)


def column(col: Column, spec: ColumnSpec, input_times: np.ndarray, t_stop: float, *,
           dt: float = 0.1, dtype: torch.dtype = torch.float64, record_v: bool = False,
           backend: str = "auto") -> dict[str, np.ndarray]:
    liquid = LiquidColumn(col, dt=dt, backend=backend).to(dtype)
    steps = round(t_stop / dt)
    x = _raster([input_times], steps, dt).to(dtype)
    out = liquid(x, state=liquid.initial_state(1, v0=torch.as_tensor(spec.v0)),
                 record_voltage=record_v)
    k, idx = out.spikes[0].nonzero(as_tuple=True)
    t = (k.numpy() + 1) * dt
    idx = idx.numpy()
    order = np.lexsort((idx, t))
    res = {"neuron": idx[order], "time": t[order]}
    if record_v:
        res["v"] = out.voltage[0].double().numpy()
    return res


def column_throughput(col: Column, inputs: list[np.ndarray], t_stop: float, *, batch: int,
                      dt: float = 0.1, dtype: torch.dtype = torch.float32,
                      device: str = "cpu", backend: str = "auto") -> tuple[float, int]:
    """Seconds for ``len(inputs)`` stimuli run ``batch`` at a time (column set-up included)."""
    t0 = time.perf_counter()
    liquid = LiquidColumn(col, dt=dt, backend=backend).to(device=device, dtype=dtype)
    steps = round(t_stop / dt)
    total = 0
    for s in range(0, len(inputs), batch):
        chunk = inputs[s : s + batch]
        x = _raster(chunk, steps, dt).to(device=device, dtype=dtype)
        out = liquid(x, seed=s)
        total += int(out.spikes.sum())
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, total
