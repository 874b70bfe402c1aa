"""Reservoir hyperparameter search and free runs: build a reservoir by name, fit one ridge
readout per penalty from one set of statistics, search radius x input scaling x ridge on a
validation segment, and run a trained network on its own outputs.

These were the library parts of the ``esn-forecast`` experiment; experiments and users share
them from here.

* :func:`build_reservoir`: the ESN of a named model: ``esn``/``random`` (sparse random W scaled
  to spectral radius rho, dense inputs U[-v, v]; Jaeger 2001), ``dlr`` (``W[i+1, i] = r``),
  ``dlrb`` (plus ``W[i, i+1] = b``), ``scr`` (simple cycle) with input weights of one absolute
  value and signs from the digits of pi or a seeded coin (Rodan, A. & Tino, P. (2011), "Minimum
  complexity echo state network", IEEE TNN 22(1)).
* :func:`grid_states`: the states of every input scaling v as one batch. An ESN without bias
  has drive ``v W_in u(t)``, linear in v, so the network built with v = 1 gives every v's
  states from the drives ``v (W_in u)``.
* :func:`ridge_fits`: ridge readouts ``(C_xx + alpha I) W^T = C_xy``, ``c = mu_y - W mu_x``
  (:class:`~rnnlab.reservoir.RidgeReadout`) for several alpha from statistics accumulated once.
* :func:`grid_search`: the lowest validation score over radius x scaling x ridge.
* :func:`free_run`: from start ``t0`` the network gets the true ``s(t0)`` and its state after
  ``s(t0 - 1)``, then feeds back its outputs, ``u(t) = y(t - 1)``, for H steps
  (:meth:`EchoStateNetwork.generate`), for several readouts and starts as one batch;
  :func:`freerun_scores` gives NRMSE at the horizon over trials (Jaeger & Haas 2004, Science
  304: NRMSE84) and over all horizon steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab.reservoir import EchoStateNetwork, RidgeReadout

__all__ = [
    "Scorer",
    "Series",
    "build_reservoir",
    "free_run",
    "freerun_scores",
    "grid_search",
    "grid_states",
    "one_step_score",
    "ridge_fits",
    "trial_starts",
]


@dataclass
class Series:
    """One series: inputs and targets ``(1, L, F)`` and the segments ``train``, ``validation``,
    ``test`` (slices of the time axis; the steps before ``train`` are the washout)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    train: slice
    validation: slice
    test: slice


def build_reservoir(model: str, n: int, radius: float, *, seed: int, density: float,
                    dlrb_feedback: float, input_signs: str, input_scaling: float = 1.0,
                    topology: Any = None, dtype: torch.dtype = torch.float64
                    ) -> EchoStateNetwork:
    """The one-input ESN of ``model`` (``esn``/``random``, ``dlr``, ``dlrb``, ``scr``, or a
    given W as ``topology`` with dense uniform inputs) with weight ``radius`` (rho of the random
    W, r of the deterministic ones), ``input_signs`` ``pi`` or ``random`` for dlr/dlrb/scr."""
    if input_signs not in ("pi", "random"):
        raise ValueError(f"input_signs must be 'pi' or 'random', got {input_signs!r}")
    common = {"input_size": 1, "units": n, "seed": seed, "dtype": dtype,
              "input_scaling": input_scaling}
    if topology is not None:
        return EchoStateNetwork(topology=topology, **common)
    if model in ("esn", "random"):
        return EchoStateNetwork(topology="random", spectral_radius=radius, density=density,
                                **common)
    if model not in ("dlr", "dlrb", "scr"):
        raise ValueError(f"unknown reservoir model {model!r}; valid: esn, random, dlr, dlrb, "
                         "scr (or a topology=)")
    signs = "sign_pi" if input_signs == "pi" else "sign_random"
    return EchoStateNetwork(topology=model, r=radius, backward_weight=dlrb_feedback,
                            input_weights=signs, **common)


def grid_states(esn: EchoStateNetwork, inputs: torch.Tensor,
                scalings: tuple[float, ...]) -> torch.Tensor:
    """States ``(len(scalings), L, N)`` of ``esn`` (built with input scaling 1, no bias) driven
    by ``inputs`` ``(1, L, F)`` with input weights ``v W_in`` for each v, as one batch."""
    base = esn.input_drive(inputs)                                     # W_in u (+ bias = 0)
    v = torch.tensor(scalings, dtype=base.dtype, device=base.device).view(-1, 1, 1)
    drive = v * base                                                   # (G, L, N)
    return esn.recur(drive, esn.initial_state(drive.shape[0]), out=drive)


def ridge_fits(states: torch.Tensor, targets: torch.Tensor,
               ridges: tuple[float, ...]) -> list[RidgeReadout]:
    """One ridge readout per alpha in ``ridges`` on ``states`` ``(..., N)`` and ``targets``
    ``(..., O)``, from statistics accumulated once (a singular system: the pseudo-inverse)."""
    n = states.shape[-1]
    stats = RidgeReadout(n, targets.shape[-1], dtype=states.dtype).partial_fit(states, targets)
    out = []
    for alpha in ridges:
        ro = RidgeReadout(n, targets.shape[-1], alpha=alpha, on_singular="pinv",
                          dtype=states.dtype)
        out.append(ro.load_statistics(stats.statistics()).solve())
    return out


Scorer = Callable[[EchoStateNetwork, torch.Tensor, list[RidgeReadout]], list[float]]


def one_step_score(series: Series, metric: Callable[[torch.Tensor, torch.Tensor], float]
                   ) -> Scorer:
    """Scorer: ``metric`` (e.g. NMSE) of each readout's one-step predictions on validation."""
    target = series.targets[0, series.validation]

    def score(esn: EchoStateNetwork, xs: torch.Tensor,
              readouts: list[RidgeReadout]) -> list[float]:
        return [metric(ro(xs[series.validation]), target) for ro in readouts]

    return score


def grid_search(make_esn: Callable[[float], EchoStateNetwork], series: Series,
                radii: tuple[float, ...], scalings: tuple[float, ...],
                ridges: tuple[float, ...], score: Scorer) -> dict[str, Any]:
    """Lowest validation ``score`` over radius x input scaling x ridge (the first on ties; a
    non-finite score counts as +inf).

    ``make_esn(radius)`` builds the network with input scaling 1 (no bias); for each scaling v
    its states come from :func:`grid_states` and its ``W_in`` is set to ``v W_in`` before
    ``score(esn, states (L, N), readouts)`` is called (a free run needs the network of that v).
    Readouts are fitted on ``series.train``. Returns ``score``, ``radius``, ``v``, ``alpha``,
    ``readout``, ``states`` and ``esn`` (with the chosen v's input weights) of the best.
    """
    best: dict[str, Any] | None = None
    for radius in radii:
        esn = make_esn(radius)
        w_in = esn.W_in.clone()
        with torch.no_grad():
            states = grid_states(esn, series.inputs, scalings)
        for g, v in enumerate(scalings):
            xs = states[g]
            esn.W_in = v * w_in
            readouts = ridge_fits(xs[series.train], series.targets[0, series.train], ridges)
            for j, value in enumerate(score(esn, xs, readouts)):
                value = value if math.isfinite(value) else math.inf
                if best is None or value < best["score"]:
                    best = {"score": value, "radius": radius, "v": v, "alpha": ridges[j],
                            "readout": readouts[j], "states": xs, "esn": esn, "w_in": w_in}
    if best is None:
        raise ValueError("the grid is empty")
    best["esn"].W_in = best["v"] * best["w_in"]
    return best


class _StackedReadouts:
    """A readouts for A blocks of K rows: rows ``a K .. (a + 1) K - 1`` use readout a (so that a
    batch of free runs evaluates several ridge penalties at once)."""

    def __init__(self, readouts: list[RidgeReadout], block: int) -> None:
        self.weight = torch.stack([r.weight for r in readouts])               # (A, O, N)
        self.bias = torch.stack([r.bias for r in readouts]).unsqueeze(1)       # (A, 1, O)
        self.block = block

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = self.weight.shape[0]
        xs = x.view(a, self.block, -1)
        return (torch.bmm(xs, self.weight.transpose(1, 2)) + self.bias).reshape(x.shape[0], -1)


def trial_starts(segment: slice, horizon: int, every: int) -> list[int]:
    """Free-run start times ``t0`` whose targets ``s(t0+1 .. t0+H)`` lie in ``segment``."""
    return list(range(segment.start, segment.stop - horizon + 1, every))


def free_run(esn: EchoStateNetwork, readouts: list[RidgeReadout], states: torch.Tensor,
             series: Series, starts: list[int], horizon: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Free runs from every start for every readout: predictions ``(A, K, H)`` and the true
    targets ``(K, H)``. ``states`` ``(L, N)`` are the teacher-forced states; a run starts from
    the state after ``s(t0 - 1)`` with input ``s(t0)`` and then feeds its outputs back."""
    a, k = len(readouts), len(starts)
    idx = torch.tensor(starts)
    x0 = states[idx - 1].repeat(a, 1)                                  # x(t0 - 1), (A K, N)
    last = series.inputs[0, idx].repeat(a, 1)                          # s(t0), (A K, 1)
    out, _ = esn.generate(horizon, _StackedReadouts(readouts, k), state=x0, last_output=last)
    true = torch.stack([series.targets[0, t:t + horizon, 0] for t in starts])
    return out[..., 0].view(a, k, horizon), true


def freerun_scores(pred: torch.Tensor, true: torch.Tensor,
                   var: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(NRMSE at the horizon over trials, NRMSE over all horizon steps) of ``(..., K, H)``:
    ``sqrt(mean_k (y_H - s_H)^2 / var)`` and ``sqrt(mean_{k,h} (y_h - s_h)^2 / var)``."""
    err = (pred.double() - true.double()).pow(2)
    at_h = err[..., -1].mean(-1) / var
    over = err.mean((-1, -2)) / var
    return at_h.sqrt(), over.sqrt()
