"""Spike trains in and liquid states out (units: ms, Hz).

* :func:`poisson_spike_trains`: exact Poisson counts per bin, count_k ~ Poisson(rate·dt), so the
  count over a window of length T is Poisson(rate·T) (mean = variance = rate·T).
* :func:`spike_times_to_raster` / :func:`raster_to_spike_times`: lists of times <-> counts.
* :func:`liquid_states`: the liquid state of Maass et al. (2002): each neuron's spike train
  filtered by an exponential kernel, x_n(t) = sum_{s in spikes_n, s <= t} exp(-(t - s)/tau)
  (tau = 30 ms in the paper), sampled at given times: the features for a readout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_int, check_number, check_tensor


def steps_for(duration: float, dt: float) -> int:
    """The number of steps of ``duration`` ms at ``dt`` ms (rounded; at least 1)."""
    duration = check_number("duration", duration, low=0.0, low_open=True)
    dt = check_number("dt", dt, low=0.0, low_open=True)
    return max(1, math.floor(duration / dt + 0.5))


def poisson_spike_trains(batch: int, channels: int, rate: float, duration: float, dt: float,
                         *, seed: object = None, generator: torch.Generator | None = None,
                         dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """Homogeneous Poisson spike counts ``(batch, T, channels)``, T = round(duration/dt); bin
    ``k`` covers [k dt, (k+1) dt). Drawn on the CPU (same seed, same trains on every device)."""
    batch = check_int("batch", batch, low=1)
    channels = check_int("channels", channels, low=1)
    rate = check_number("rate", rate, low=0.0)
    dt = check_number("dt", dt, low=0.0, low_open=True)
    steps = steps_for(duration, dt)
    gen = make_generator(seed, generator)
    lam = torch.full((batch, steps, channels), rate * dt * 1e-3, dtype=torch.float64)
    counts = torch.poisson(lam, generator=gen)
    return counts.to(dtype=dtype, device=device)


def spike_times_to_raster(times: Sequence[Sequence[Sequence[float]]], duration: float,
                          dt: float, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Nested lists ``times[trial][channel]`` of spike times (ms) -> counts ``(B, T, C)``; a
    spike at time s falls in bin floor(s/dt + 1e-9) (the 1e-9 keeps s = k·dt in bin k despite
    rounding). Times outside [0, duration) are an error."""
    dt = check_number("dt", dt, low=0.0, low_open=True)
    steps = steps_for(duration, dt)
    if len(times) == 0:
        raise ValueError("times is empty (no trials)")
    channels = len(times[0])
    if channels == 0:
        raise ValueError("times[0] is empty (no channels)")
    out = torch.zeros((len(times), steps, channels), dtype=torch.float64)
    for b, trial in enumerate(times):
        if len(trial) != channels:
            raise ValueError(f"trial {b} has {len(trial)} channels, trial 0 has {channels}")
        for c, train in enumerate(trial):
            s = torch.as_tensor(train, dtype=torch.float64).reshape(-1)
            if s.numel() == 0:
                continue
            if not bool(torch.isfinite(s).all()):
                raise ValueError(f"spike times of trial {b}, channel {c} contain NaN or inf")
            idx = torch.floor(s / dt + 1e-9).long()
            if int(idx.min()) < 0 or int(idx.max()) >= steps:
                raise ValueError(f"spike times of trial {b}, channel {c} fall outside "
                                 f"[0, {duration}) ms")
            out[b, :, c].index_add_(0, idx, torch.ones_like(s))
    return out.to(dtype)


def raster_to_spike_times(raster: torch.Tensor, dt: float, offset: float = 0.0
                          ) -> list[list[torch.Tensor]]:
    """``(B, T, C)`` counts -> ``[trial][channel]`` float64 tensors of times ``k dt + offset``
    (a count of m repeats the time m times). The liquid's output raster needs ``offset=dt``."""
    check_tensor("raster", raster, ndim=3, layout="(batch, time, channels)")
    dt = check_number("dt", dt, low=0.0, low_open=True)
    offset = check_number("offset", offset)
    r = raster.detach().to("cpu")
    counts = r.to(torch.int64)
    out: list[list[torch.Tensor]] = []
    for b in range(r.shape[0]):
        row = []
        for c in range(r.shape[2]):
            k = torch.repeat_interleave(torch.arange(r.shape[1]), counts[b, :, c])
            row.append(k.to(torch.float64) * dt + offset)
        out.append(row)
    return out


def liquid_states(spikes: torch.Tensor, dt: float, times: Sequence[float] | torch.Tensor,
                  tau: float = 30.0, offset: float | None = None) -> torch.Tensor:
    """x_n(t) = sum_{s <= t} exp(-(t - s)/tau) over neuron n's spikes, at each sample time:
    ``(B, S, N)`` in the spikes' floating dtype (float32 for a bool raster).

    ``spikes``: ``(B, T, N)`` raster; its bin ``k`` is taken as time ``k dt + offset``, with
    ``offset = dt`` by default (the liquid's raster: index k holds spikes at (k+1) dt). The sum
    runs over the spikes only (no per-step work), in float64.
    """
    check_tensor("spikes", spikes, ndim=3, layout="(batch, time, neurons)")
    dt = check_number("dt", dt, low=0.0, low_open=True)
    tau = check_number("tau", tau, low=0.0, low_open=True)
    offset = dt if offset is None else check_number("offset", offset)
    t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if t.numel() == 0:
        raise ValueError("times is empty")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("times contains NaN or inf")
    out_dtype = spikes.dtype if spikes.is_floating_point() else torch.get_default_dtype()
    b, _, n = spikes.shape
    bi, ki, ni = spikes.nonzero(as_tuple=True)
    weight = spikes[bi, ki, ni].to(torch.float64)       # counts (1 for a bool raster)
    s_time = ki.to(torch.float64) * dt + offset
    tt = t.to(spikes.device)
    lag = tt[None, :] - s_time[:, None]                 # (spikes, S)
    # 1e-9 ms: a spike at exactly the sample time counts, despite rounding of k·dt.
    contrib = torch.where(lag >= -1e-9, torch.exp(-lag.clamp_min(0.0) / tau),
                          torch.zeros_like(lag)) * weight[:, None]
    out = torch.zeros((b * n, t.numel()), dtype=torch.float64, device=spikes.device)
    out.index_add_(0, bi * n + ni, contrib)
    return out.view(b, n, -1).transpose(1, 2).to(out_dtype).contiguous()
