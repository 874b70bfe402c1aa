"""Echo state property (ESP) diagnostics: algebraic conditions on W and an empirical test.

A reservoir ``x(t) = (1 - a) x(t-1) + a tanh(g (W x(t-1) + W_in u(t) + bias) + s)`` has the
echo state property if its state is asymptotically determined by the input alone: trajectories
started from different states under the same input converge (Jaeger 2001, GMD Report 148).

Conditions (:func:`esp_check`), with ``G = diag(g)`` (the per-unit gain of intrinsic
plasticity; 1 without it) and leak ``a`` (one number or one per unit):

* **Sufficient** (Jaeger 2001, Proposition 3, for tanh units): the update is a contraction.
  ``|tanh'| <= 1`` gives ``||x(t) - y(t)|| <= ((1 - a_min) + a_max ||G W||_2) ||x(t-1) - y(t-1)||``
  for any inputs, so ``L = (1 - a_min) + a_max sigma_max(G W) < 1`` guarantees the ESP (for one
  leak, ``L < 1`` iff ``sigma_max(G W) < 1``, as in Jaeger, Lukosevicius, Popovici & Siewert
  2007). Buehner & Young (2006), "A tighter bound for the echo state property", IEEE TNN 17(3):
  the same argument in the norm ``||D x||`` for any positive diagonal D (which commutes with the
  diagonal ``tanh'``, ``G`` and the leaks) replaces ``sigma_max(G W)`` by
  ``sigma_max(D G W D^-1)``, whose infimum over D can be far smaller for a non-normal W and is
  never below ``rho(G W)``. :func:`diagonally_scaled_norm` minimises it (``scaled=True``); any D
  it returns is a valid certificate, optimal or not.
* **Necessary** (Jaeger 2001; Jaeger et al. 2007 for leaky units): for the zero input with zero
  bias and shift the origin is a fixed point whose Jacobian is ``J = (I - A) + A G W``,
  ``A = diag(a)``; if ``rho(J) > 1`` (the *effective spectral radius*) it is unstable and the
  network has no echo states for that input.

Between the two (``rho(J) < 1 <= L``) the algebra decides nothing; :func:`state_contraction`
then measures, for a given input, whether and how fast trajectories from different initial
states converge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rnnlab._validation import check_int, check_number, check_positive_int, check_tensor
from rnnlab.analysis.spectral import (
    _check_matrix,
    _to_dense_torch,
    effective_spectral_radius,
    largest_singular_value,
    spectral_radius,
)


@dataclass(frozen=True)
class ESPReport:
    """Result of :func:`esp_check` (module docstring for the conditions).

    ``sigma_max`` = ``||G W||_2``, ``spectral_radius`` = ``rho(G W)``,
    ``effective_spectral_radius`` = ``rho((I - A) + A G W)``, ``leak_min``/``leak_max`` the
    range of the leaks, ``scaled_sigma_max`` the Buehner–Young bound
    ``sigma_max(D G W D^-1)`` (``None`` unless asked for) with its ``scaling`` D,
    ``contraction_bound`` = ``(1 - a_min) + a_max min(sigma_max, scaled_sigma_max)``.
    """

    sigma_max: float
    spectral_radius: float
    effective_spectral_radius: float
    leak_min: float
    leak_max: float
    contraction_bound: float
    scaled_sigma_max: float | None = None
    scaling: torch.Tensor | None = None

    @property
    def sufficient(self) -> bool:
        """The contraction bound holds: the ESP is guaranteed for every input."""
        return self.contraction_bound < 1.0

    @property
    def necessary(self) -> bool:
        """The zero-input fixed point is stable (``rho(J) < 1``); if False, no ESP."""
        return self.effective_spectral_radius < 1.0

    @property
    def verdict(self) -> str:
        if self.sufficient:
            return "echo state property guaranteed (contraction bound < 1)"
        if not self.necessary:
            return "no echo state property for the zero input (effective spectral radius > 1)"
        return ("undetermined: necessary condition holds, sufficient does not; "
                "test the input of interest with state_contraction")


# ------------------------------------------------------------------------------------------------
def _top_singular(m: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """sigma_max with its left and right singular vectors (dense float64)."""
    u, s, vh = torch.linalg.svd(m)
    return float(s[0]), u[:, 0], vh[0]


def diagonally_scaled_norm(
    W: Any,
    *,
    max_iter: int = 500,
    tol: float = 1e-10,
) -> tuple[float, torch.Tensor]:
    """``min over positive diagonal D of sigma_max(D W D^-1)`` (Buehner & Young 2006).

    With ``D = diag(exp(lambda))``, ``f(lambda) = sigma_max(D W D^-1)`` is convex in
    ``lambda`` (Sezginer & Overton 1990, "The largest singular value of e^X A e^-X is convex on
    convex sets of commuting matrices", IEEE TAC 35(2)), and where the top singular value is
    simple its gradient is ``df/dlambda_i = f (u_i^2 - v_i^2)`` (u, v the top singular
    vectors; ``M_ij = e^(lambda_i - lambda_j) W_ij``). It is minimised by gradient descent
    with backtracking, from ``D = I``, keeping the best D. ``f`` is not smooth where the top
    singular value is repeated (e.g. at the optimum of a scaled orthogonal W), so the result is
    an upper bound of the infimum, close to it in the tests; it is always ``<= sigma_max(W)``
    and ``>= rho(W)``, and it is a valid certificate (the D is returned).

    Cost: one dense SVD (O(N^3)) per iteration, in float64; meant for N up to a few hundred.

    Returns ``(value, d)`` with ``d`` the diagonal of D (float64, largest entry 1).
    """
    _check_matrix(W)
    check_positive_int("max_iter", max_iter)
    check_number("tol", tol, low=0.0, allow_inf=True)
    w = _to_dense_torch(W)
    n = w.shape[0]
    lam = torch.zeros(n, dtype=torch.float64)

    def scaled(lam_: torch.Tensor) -> torch.Tensor:
        return torch.exp(lam_).unsqueeze(1) * w * torch.exp(-lam_).unsqueeze(0)

    best, u, v = _top_singular(w)
    step = 1.0
    for _ in range(max_iter):
        if best == 0.0:
            break
        trial = lam - step * (u * u - v * v)
        # D only matters up to a scalar; keep the exponents bounded (a reducible W can push
        # them to infinity while the norm creeps down).
        trial = (trial - trial.mean()).clamp(-100.0, 100.0)
        value, u_t, v_t = _top_singular(scaled(trial))
        if value < best * (1.0 - 1e-15):
            improvement = best - value
            lam, best, u, v = trial, value, u_t, v_t
            step = min(step * 1.5, 1e3)
            if improvement <= tol * best:
                break
        else:
            step *= 0.5
            if step < 1e-12:
                break
    d = torch.exp(lam - lam.max())
    return best, d


def _as_leak_vector(leak: Any, n: int) -> torch.Tensor | float:
    if isinstance(leak, torch.Tensor) or isinstance(leak, np.ndarray):
        a = torch.as_tensor(leak).detach().to(device="cpu", dtype=torch.float64)
        if a.dim() != 0 and a.shape != (n,):
            raise ValueError(f"leak must be one number or one per unit ({n}), got shape "
                             f"{tuple(a.shape)}")
        if a.dim() == 0 or bool((a == a[0]).all()):
            # One leak for all units: the cheaper (and sparse-capable) scalar path.
            return check_number("leak", float(a.reshape(-1)[0]), low=0.0, high=1.0, low_open=True)
        if not bool(((a > 0) & (a <= 1)).all()):
            raise ValueError("leak must be in (0, 1]")
        return a
    return check_number("leak", leak, low=0.0, high=1.0, low_open=True)


def esp_check(
    W: Any,
    leak: float | Any = 1.0,
    *,
    gain: Any = None,
    scaled: bool = False,
    max_iter: int = 500,
) -> ESPReport:
    """Sufficient and necessary echo-state-property conditions of a reservoir (module doc).

    Args:
        W: the recurrent matrix (torch dense/sparse, numpy, scipy), or a reservoir module with
            attributes ``W``, ``leak`` and ``a`` (gain), e.g. an
            :class:`~rnnlab.reservoir.EchoStateNetwork`; then ``leak`` and ``gain`` come from it.
        leak: a in (0, 1], one number or one per unit.
        gain: per-unit gain g of the tanh argument (intrinsic plasticity), ``None``: 1.
        scaled: also compute the Buehner–Young bound (:func:`diagonally_scaled_norm`, dense).
        max_iter: iterations of that minimisation.

    Large sparse W with one leak and no gain use the iterative (ARPACK) paths of
    :mod:`rnnlab.analysis.spectral`; per-unit leaks or a gain build the dense float64 matrix.
    """
    if hasattr(W, "W") and hasattr(W, "leak"):
        if not (isinstance(leak, (int, float)) and leak == 1.0) or gain is not None:
            raise ValueError("pass either a reservoir module alone (its leak and gain are "
                             "used) or a matrix with leak= and gain=")
        model = W
        W, leak = model.W, model.leak
        gain = getattr(model, "a", None)
    n = _check_matrix(W)
    a = _as_leak_vector(leak, n)
    g = None
    if gain is not None:
        g = torch.as_tensor(gain).detach().to(device="cpu", dtype=torch.float64)
        if g.dim() == 0:
            g = g.expand(n)
        if g.shape != (n,):
            raise ValueError(f"gain must be one number or one per unit ({n}), got shape "
                             f"{tuple(g.shape)}")
        if not bool(torch.isfinite(g).all()):
            raise ValueError("gain contains non-finite values")
        if bool((g == 1).all()):
            g = None
    if isinstance(a, float) and g is None:
        sigma = largest_singular_value(W)
        rho = spectral_radius(W)
        eff = effective_spectral_radius(W, a)
        gw: Any = W
        a_min = a_max = a
    else:
        gw = _to_dense_torch(W)
        if g is not None:
            gw = g.unsqueeze(1) * gw
        a_vec = a if isinstance(a, torch.Tensor) else torch.full((n,), a, dtype=torch.float64)
        sigma = largest_singular_value(gw)
        rho = spectral_radius(gw)
        eff = spectral_radius(torch.diag(1.0 - a_vec) + a_vec.unsqueeze(1) * gw)
        a_min, a_max = float(a_vec.min()), float(a_vec.max())
    scaled_sigma = scaling = None
    best = sigma
    if scaled:
        scaled_sigma, scaling = diagonally_scaled_norm(gw, max_iter=max_iter)
        best = min(sigma, scaled_sigma)
    bound = (1.0 - a_min) + a_max * best
    return ESPReport(sigma, rho, eff, a_min, a_max, bound, scaled_sigma, scaling)


# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ContractionResult:
    """Result of :func:`state_contraction`.

    ``distances[i, b, t] = ||x_i(t) - x_ref(t)||`` between the trajectory from the i-th random
    initial state and the one from the model's own initial state (zero), for sequence ``b``;
    ``initial_distances[i, b]`` the same at t = -1; ``ratio[t]`` the largest
    ``distances / initial_distances`` over i and b (the fraction of the initial difference left
    after t + 1 steps); ``rate`` the geometric decay per step fitted to ``ratio`` (least squares
    on ``log ratio`` over the steps where the distance is above round-off; ``nan`` if fewer than
    two such steps); ``steps_to_tol`` the first step from which ``ratio <= tol`` stays true
    (``None`` if never); ``forgets`` whether the last ratio is ``<= tol``.
    """

    distances: torch.Tensor
    initial_distances: torch.Tensor
    ratio: torch.Tensor
    rate: float
    steps_to_tol: int | None
    forgets: bool
    tol: float


def state_contraction(
    model: Any,
    inputs: torch.Tensor,
    n_initial: int = 8,
    *,
    init_scale: float = 1.0,
    tol: float = 1e-6,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> ContractionResult:
    """Empirical echo-state test: do trajectories from different initial states converge?

    The model is run on ``inputs`` ``(batch, time, D)`` from its default initial state and
    from ``n_initial`` initial states drawn uniformly in ``[-init_scale, init_scale]^N``
    (all in one batched call of ``model.states(inputs, state0)``), and the distances between
    the trajectories are measured (:class:`ContractionResult`). Echo states forget their
    initial condition: ``ratio`` falls to round-off, geometrically at ``rate`` (at most
    ``sigma_max`` of W for tanh units without leak, near the effective spectral radius for
    small states). Without the ESP, ``ratio`` stays away from 0 (``rate`` near 1 or above).

    Args:
        model: anything with ``states(inputs, state0) -> (batch, time, N)``, ``state0`` of
            shape ``(batch, N)`` (an :class:`~rnnlab.reservoir.EchoStateNetwork` without
            output feedback).
        inputs: ``(batch, time, D)``, on the model's device and dtype.
        n_initial: number of random initial states.
        init_scale: half-width of the initial-state distribution (> 0).
        tol: threshold of ``ratio`` for ``forgets`` and ``steps_to_tol``.
        seed, generator: the initial states (drawn in float64 on the CPU).
    """
    if not callable(getattr(model, "states", None)):
        raise TypeError(f"model must have a states(inputs, state0) method, "
                        f"got {type(model).__name__}")
    check_tensor("inputs", inputs, ndim=3, layout="(batch, time, features)")
    check_positive_int("n_initial", n_initial)
    check_number("init_scale", init_scale, low=0.0, low_open=True)
    check_number("tol", tol, low=0.0, low_open=True)
    if generator is None:
        if seed is None:
            seed = 0
        generator = torch.Generator().manual_seed(check_int("seed", seed))
    elif not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError("generator must be a CPU torch.Generator")
    batch, steps, _ = inputs.shape
    with torch.no_grad():
        n = model.states(inputs[:1, :1]).shape[-1]
        x_init = init_scale * (2.0 * torch.rand(n_initial * batch, n, generator=generator,
                                                dtype=torch.float64) - 1.0)
        state0 = torch.cat([torch.zeros(batch, n, dtype=torch.float64), x_init]).to(
            dtype=inputs.dtype, device=inputs.device)
        reps = inputs.repeat(n_initial + 1, 1, 1)
        xs = model.states(reps, state0)
    if not isinstance(xs, torch.Tensor) or xs.shape != (batch * (n_initial + 1), steps, n):
        raise ValueError("model.states(inputs, state0) must return (batch, time, N) states")
    xs = xs.to(device="cpu", dtype=torch.float64).view(n_initial + 1, batch, steps, n)
    x0 = state0.to(device="cpu", dtype=torch.float64).view(n_initial + 1, batch, n)
    dist = (xs[1:] - xs[:1]).norm(dim=-1)                     # (n_initial, batch, time)
    d_init = (x0[1:] - x0[:1]).norm(dim=-1)                   # (n_initial, batch)
    if bool((d_init == 0).any()):
        raise ValueError("a random initial state equals the reference state; use another seed")
    ratio = (dist / d_init.unsqueeze(-1)).amax(dim=(0, 1))    # (time,)

    # Round-off floor of a distance: the states' own precision.
    eps = torch.finfo(inputs.dtype).eps
    floor = 100.0 * eps * math.sqrt(n) * max(1.0, float(xs.abs().max()))
    above = dist.amax(dim=(0, 1)) > floor
    t_idx = torch.nonzero(above).flatten()
    if t_idx.numel() >= 2:
        t = t_idx.to(torch.float64)
        y = torch.log(ratio[t_idx])
        slope = float(((t - t.mean()) * (y - y.mean())).sum() / ((t - t.mean()) ** 2).sum())
        rate = math.exp(slope)
    else:
        rate = float("nan")
    small = ratio <= tol
    # The first step from which ratio stays <= tol: a suffix of True values.
    suffix_ok = torch.flip(torch.cumprod(torch.flip(small, [0]).to(torch.int64), 0), [0])
    steps_to_tol = int(torch.nonzero(suffix_ok).flatten()[0]) if bool(suffix_ok.any()) else None
    return ContractionResult(dist, d_init, ratio, rate, steps_to_tol, bool(small[-1]), float(tol))
