"""Closed forms for the liquid's parts, used as references (tests, benchmarks).

* LIF under a constant current I (Gerstner & Kistler 2002, ch. 4.1): starting from the reset
  potential V_r, V(t) = RI + (V_r - RI) e^{-t/tau_m} reaches the threshold theta after
  T = tau_m ln((RI - V_r)/(RI - theta)) when RI > theta (rheobase: RI = theta), so the rate is
  1/(t_ref + T); below rheobase the neuron never fires.
* Markram–Tsodyks synapse (Markram, Wang & Tsodyks 1998; Maass et al. 2002, appendix):
  u_1 = U, R_1 = 1, u_{n+1} = U + u_n (1 - U) e^{-Delta/F},
  R_{n+1} = 1 + (R_n - R_n u_n - 1) e^{-Delta/D}; efficacy A R_n u_n.
  Under a regular train of period Delta the fixed point is
  u* = U / (1 - (1 - U) e^{-Delta/F}),  R* = (1 - e^{-Delta/D}) / (1 - (1 - u*) e^{-Delta/D}).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rnnlab._validation import check_number


def lif_rate(current: float, *, tau_m: float, resistance: float, threshold: float,
             reset: float, refractory: float) -> float:
    """Firing rate (Hz) of a LIF neuron (resting potential 0) under a constant current (nA)."""
    current = check_number("current", current)
    tau_m = check_number("tau_m", tau_m, low=0.0, low_open=True)
    resistance = check_number("resistance", resistance, low=0.0, low_open=True)
    refractory = check_number("refractory", refractory, low=0.0)
    threshold = check_number("threshold", threshold)
    reset = check_number("reset", reset)
    if reset >= threshold:
        raise ValueError(f"reset ({reset}) must lie below threshold ({threshold})")
    ri = resistance * current
    if ri <= threshold:
        return 0.0
    period = refractory + tau_m * math.log((ri - reset) / (ri - threshold))
    return 1000.0 / period


def tsodyks_markram_efficacies(times: Sequence[float] | torch.Tensor, U: float, D: float,
                               F: float) -> torch.Tensor:
    """``R_n u_n`` for each spike of one synapse (times in ms, increasing), float64."""
    U = check_number("U", U, low=0.0, high=1.0, low_open=True)
    D = check_number("D", D, low=0.0, low_open=True)
    F = check_number("F", F, low=0.0, low_open=True)
    t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if t.numel() and bool((t[1:] < t[:-1]).any()):
        raise ValueError("times must be increasing")
    out = torch.empty_like(t)
    u, r = U, 1.0
    for i in range(t.numel()):
        if i:
            gap = float(t[i] - t[i - 1])
            u, r = U + u * (1 - U) * math.exp(-gap / F), 1 + (r - r * u - 1) * math.exp(-gap / D)
        out[i] = r * u
    return out


def tsodyks_markram_steady_state(period: float, U: float, D: float, F: float
                                 ) -> tuple[float, float]:
    """``(u*, R*)`` under a regular train of the given period (ms)."""
    period = check_number("period", period, low=0.0, low_open=True)
    ef, ed = math.exp(-period / F), math.exp(-period / D)
    u = U / (1 - (1 - U) * ef)
    return u, (1 - ed) / (1 - (1 - u) * ed)
