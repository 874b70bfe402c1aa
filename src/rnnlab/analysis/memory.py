"""Short-term memory capacity of a reservoir (Jaeger 2001), measured and, for linear
reservoirs, computed from linear-systems theory.

Protocol of :func:`memory_capacity` (Jaeger 2001, "Short term memory in echo state networks",
GMD Report 152; the same in Rodan & Tino 2011 and Gallicchio, Micheli & Pedrelli 2017):

1. Drive the model with an i.i.d. scalar input ``u(t)``, ``t = 0 .. L - 1``,
   ``L = washout + train_length + test_length`` (``batch`` independent sequences), from the
   model's own initial state, and collect its states ``x(t)``.
2. Discard the first ``washout`` steps (the initial transient). The next ``train_length`` steps
   are the training segment, the last ``test_length`` steps the test segment. The washout must
   be at least the largest delay K so that every target ``u(t - k)`` exists.
3. For every delay ``k = min_delay .. K`` fit one linear readout ``o_k(t) = v_k^T x(t) + c_k``
   to the target ``u(t - k)`` on the training segment by least squares: by default
   unregularised (linear regression, Jaeger 2001), with the pseudo-inverse of the states as in
   the published DeepESN code of Gallicchio et al. (``DeepESN2018a/DeepESN.m``,
   ``train_readout``: ``pinv`` when ``readout_regularization`` is 0), or with a
   ridge penalty ``alpha`` relative to the states' variance (never an absolute one, whose
   effect would depend on the scale of the states). The features are standardised on the
   training segment first, so the result does not depend on how each state feature is
   scaled. The readouts share their features, so all K are one multi-output least-squares
   problem (the same solution as K separate fits), solved through a QR factorisation of the
   states rather than the normal equations (see ``_fit_readouts``: the memory of a linear
   reservoir lives in state directions of tiny variance that ``X^T X`` cannot resolve).
4. On the test segment,
   ``MC_k = r^2(u(t - k), o_k(t)) = cov(u(t - k), o_k(t))^2 / (var(u) var(o_k))``
   (squared correlation coefficient, pooled over the batch), ``MC_k = 0`` where ``o_k`` is
   constant, and ``MC = sum_k MC_k``.

Delays start at ``k = 1`` (Jaeger's definition): ``x(t)`` of an ESN already contains ``u(t)``,
so ``k = 0`` would count the current input, which is not memory. Pass ``min_delay=0`` to include
it.

Linear theory (:func:`linear_memory_capacity`). For a linear reservoir driven by i.i.d. input of
variance ``s^2``, ``x(t) = A x(t-1) + b u(t)`` with ``rho(A) < 1``, the stationary state is
``x(t) = sum_{j>=0} A^j b u(t - j)``, so

    C   = E[x x^T]        = s^2 P,      P = sum_{j>=0} A^j b b^T (A^T)^j = A P A^T + b b^T
    c_k = E[x(t) u(t-k)]  = s^2 A^k b
    MC_k = c_k^T C^+ c_k / s^2 = (A^k b)^T P^+ (A^k b)

(the optimal linear readout's r^2; ``P`` from the discrete Lyapunov equation). Since
``sum_{k>=0} (A^k b)(A^k b)^T = P``, ``sum_{k>=0} MC_k = trace(P^+ P) = rank(P) <= N``: Jaeger's
bound MC <= N, reached when (A, b) is controllable. With delays from 1 the sum is
``rank(P) - MC_0``; a delay line of N units (``x_i(t) = r^(i-1) w u(t - i + 1)``) has
``MC_k = 1`` for ``k = 0 .. N-1`` and 0 after, so ``MC = N - 1`` from ``k = 1`` and ``N`` from
``k = 0``. For the leaky ESN ``x(t) = (1 - a) x(t-1) + a (W x(t-1) + w u(t))`` (its tanh
linearised at 0): ``A = (1 - a) I + a W``, ``b = a w``.

The measured MC_k of a linear reservoir approaches the theory as train and test segments grow
(the readout is fitted on a finite sample, and ``r^2`` on a finite test set has a bias of order
``1/test_length``); the tests check the agreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rnnlab._random import make_generator
from rnnlab._validation import (
    check_choice,
    check_int,
    check_number,
    check_positive_int,
    check_tensor,
)

INPUT_DISTRIBUTIONS = ("uniform", "normal")
# Elements of a (batch, time, delays) target block built at once (bounds the memory).
_TARGET_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class MemoryCapacityResult:
    """``mc`` = sum of ``mc_k``; ``mc_k[i]`` is the capacity for delay ``delays[i]``.

    ``mc_k`` is a float64 CPU tensor, ``delays`` an int64 CPU tensor, ``n_features`` the
    number of state features N of the model (features constant on the training segment are
    left out of the readouts: they carry no information).
    """

    mc: float
    mc_k: torch.Tensor
    delays: torch.Tensor
    n_features: int


# ------------------------------------------------------------------------------------------------
def _model_factory(model: Any) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of a model's floating tensors (buffers first: reservoirs keep their
    fixed weights as buffers)."""
    if isinstance(model, torch.nn.Module):
        for t in list(model.buffers()) + list(model.parameters()):
            if t.is_floating_point():
                return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def _run_states(model: Any, inputs: torch.Tensor) -> torch.Tensor:
    states = model.states(inputs)
    if not isinstance(states, torch.Tensor) or states.dim() != 3 \
            or states.shape[:2] != inputs.shape[:2]:
        shape = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
        raise ValueError(f"model.states(inputs) must return a (batch, time, features) tensor "
                         f"with the inputs' batch and time {tuple(inputs.shape[:2])}, got {shape}")
    check_tensor("model states", states, ndim=3, layout="(batch, time, features)")
    return states


def _delayed_targets(u: torch.Tensor, times: torch.Tensor, delays: torch.Tensor) -> torch.Tensor:
    """``out[b, i, j] = u[b, times[i] - delays[j]]``, shape ``(batch, len(times), len(delays))``."""
    return u[:, times.unsqueeze(1) - delays.unsqueeze(0)]


def _squared_correlation(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """Column-wise r^2 of (M, K) float64 tensors; 0 where either column is constant."""
    yc = y - y.mean(0)
    oc = o - o.mean(0)
    cov = (yc * oc).sum(0)
    vy = (yc * yc).sum(0)
    vo = (oc * oc).sum(0)
    denom = vy * vo
    # A constant prediction carries no information about the target: r^2 = 0, not 0/0.
    ok = denom > 0
    return torch.where(ok, cov * cov / torch.where(ok, denom, torch.ones_like(denom)),
                       torch.zeros_like(denom))


@dataclass(frozen=True)
class _Readouts:
    """The K delay readouts: ``o_k(t) = ((x(t) - mean) / scale)[keep] @ coef[:, k] + c_k``."""

    coef: torch.Tensor   # (n_kept, K), weights on the standardised kept features
    mean: torch.Tensor   # (N,) training mean of every feature
    scale: torch.Tensor  # (n_kept,) training standard deviation of the kept features
    keep: torch.Tensor   # (N,) bool: features that vary on the training segment

    def predict(self, x: torch.Tensor, columns: slice) -> torch.Tensor:
        """Readout outputs of ``columns`` for (M, N) states, without the intercepts ``c_k``
        (``r^2`` does not change when a constant is added to ``o_k``)."""
        return ((x - self.mean)[:, self.keep] / self.scale) @ self.coef[:, columns]


def _fit_readouts(
    x_train: torch.Tensor, u: torch.Tensor, start: int, delays: torch.Tensor, alpha: float,
    rcond: float | None,
) -> _Readouts:
    """The delay readouts fitted on the training states (module docstring, step 3).

    Features are standardised on the training segment, ``z_j = (x_j - mean_j) / sd_j``, and
    ``min ||Z v_k - (y_k - mean(y_k))||^2 + alpha M ||v_k||^2`` is solved through ``Z = Q R``
    and ``R = U S V^T``: ``v = V diag(f(s)) U^T Q^T Y`` with ``f(s) = s / (s^2 + alpha M)``, or,
    for ``alpha = 0``, ``f(s) = 1 / s`` for ``s > rcond * s_max`` and 0 below (the
    pseudo-inverse). Why each step:

    * Standardising makes the readout, hence MC, invariant to the scale of each feature: a
      deep ESN's upper layers have states many orders of magnitude smaller than its first
      layer's, and an absolute penalty (or an absolute cut-off) on raw states would silently
      discard them. ``alpha`` is therefore relative (``Z^T Z / M`` has unit diagonal); with
      ``alpha = 0`` the least-squares readout does not depend on the scaling at all in exact
      arithmetic, and the scaling equilibrates the columns for the QR factorisation.
    * QR rather than the normal equations: ``Z^T Z`` squares the condition number and loses
      the directions of relative singular value below about ``1e-8``, where the memory of a
      linear reservoir lives; QR resolves them down to about ``1e-14``.
    * A feature whose training spread is at the round-off level of its values
      (``sd_j <= max(M, N) eps max_t |x_j(t)|``) is constant to working precision: scaled to
      unit variance it would be pure round-off noise, so it is left out (as a constant
      feature, which the intercept already covers).

    ``Q^T Y`` is accumulated over time chunks, so the (samples, K) targets are never built.
    """
    batch, steps, n = x_train.shape
    eps = torch.finfo(torch.float64).eps
    x = x_train.reshape(batch * steps, n)
    mean = x.mean(0)
    xc = x - mean
    sd = xc.square().mean(0).sqrt()
    keep = sd > max(x.shape) * eps * x.abs().amax(0)
    scale = sd[keep]
    n_k = delays.numel()
    if not bool(keep.any()):
        # Constant states: every readout is its intercept, r^2 = 0 (see _squared_correlation).
        return _Readouts(torch.zeros(0, n_k, dtype=torch.float64), mean, scale, keep)
    z = xc[:, keep] / scale
    q, r = torch.linalg.qr(z)
    uu, s, vh = torch.linalg.svd(r, full_matrices=False)
    # Mean of every target column u(t - k), t in the training segment, from cumulative sums.
    cs = torch.cat([u.new_zeros(batch, 1), u.cumsum(1)], dim=1)
    mu_y = (cs[:, start + steps - delays] - cs[:, start - delays]).sum(0) / (batch * steps)
    rank = q.shape[1]
    q = q.view(batch, steps, rank)
    qty = torch.zeros(rank, n_k, dtype=torch.float64)
    chunk = max(1, _TARGET_CHUNK_ELEMENTS // (batch * n_k))
    for t0 in range(0, steps, chunk):
        t1 = min(t0 + chunk, steps)
        y = _delayed_targets(u, torch.arange(start + t0, start + t1), delays) - mu_y
        qty += q[:, t0:t1].reshape(-1, rank).t() @ y.reshape(-1, n_k)
    if alpha > 0:
        f = s / (s * s + alpha * x.shape[0])
    else:
        cut = max(z.shape) * eps if rcond is None else rcond
        ok = s > cut * s[0]
        f = torch.where(ok, 1.0 / torch.where(ok, s, torch.ones_like(s)), torch.zeros_like(s))
    coef = vh.t() @ (f.unsqueeze(1) * (uu.t() @ qty))
    return _Readouts(coef, mean, scale, keep)


# ------------------------------------------------------------------------------------------------
def memory_capacity(
    model: Any,
    *,
    n_delays: int | None = None,
    train_length: int = 5000,
    test_length: int = 1000,
    washout: int | None = None,
    input_dist: str = "uniform",
    input_scale: float = 1.0,
    alpha: float = 0.0,
    rcond: float | None = None,
    min_delay: int = 1,
    batch: int = 1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> MemoryCapacityResult:
    """Short-term memory capacity ``MC = sum_k r^2(u(t - k), o_k(t))`` (Jaeger 2001).

    The protocol is in the module docstring.

    Args:
        model: anything with ``states(inputs) -> (batch, time, features)`` for scalar inputs
            ``(batch, time, 1)`` (an :class:`~rnnlab.reservoir.EchoStateNetwork` without output
            feedback, a deep ESN whose states are its layers' states side by side, ...). The
            inputs get the dtype and device of the model's first floating buffer or parameter.
        n_delays: the largest delay K; ``None``: twice the number of state features (2N).
        train_length, test_length: steps of the training and test segments (per sequence).
        washout: initial steps discarded; ``None``: ``max(100, K)``. Must be >= K.
        input_dist: ``"uniform"`` (u ~ U[-input_scale, input_scale], Jaeger 2001) or
            ``"normal"`` (u ~ N(0, input_scale^2)).
        input_scale: see ``input_dist`` (e.g. 0.8 for U[-0.8, 0.8]).
        alpha: ridge penalty, relative and scale-free: the readouts are fitted on the states
            standardised on the training segment (each feature to mean 0, variance 1), with
            the penalty ``alpha M ||v_k||^2`` for M training samples, i.e. ``alpha`` is added
            to the eigenvalues of the states' correlation matrix. The default 0 is the
            unregularised least-squares readout by the pseudo-inverse (the protocol of Jaeger
            2001 and of the DeepESN code of Gallicchio et al.). Either way the MC does not
            depend on how each state feature is scaled (e.g. a deep ESN's small upper-layer
            states).
        rcond: for ``alpha = 0``, singular values of the standardised training states below
            ``rcond`` times the largest are dropped; ``None``: ``max(M, N) * eps`` (the default
            tolerance of MATLAB's ``pinv`` and numpy's ``matrix_rank``).
        min_delay: first delay (1: Jaeger's definition; 0 also counts the current input).
        batch: independent input sequences; training and test samples are pooled over them.
        seed, generator: the input sequence (same seed, same result).

    Returns:
        :class:`MemoryCapacityResult` with ``mc``, ``mc_k`` and ``delays``.
    """
    if not callable(getattr(model, "states", None)):
        raise TypeError(f"model must have a states(inputs) method returning "
                        f"(batch, time, features), got {type(model).__name__}")
    if getattr(model, "has_feedback", False):
        raise ValueError("memory capacity is defined for a reservoir driven by the input alone; "
                         "this model feeds its output back (build it without output feedback)")
    input_size = getattr(model, "input_size", 1)
    if input_size != 1:
        raise ValueError(f"memory capacity needs a model with one input feature, this one takes "
                         f"{input_size}")
    if n_delays is not None:
        check_positive_int("n_delays", n_delays)
    train_length = check_int("train_length", train_length, low=2)
    test_length = check_int("test_length", test_length, low=2)
    if washout is not None:
        check_int("washout", washout, low=0)
    min_delay = check_int("min_delay", min_delay, low=0)
    batch = check_positive_int("batch", batch)
    check_choice("input_dist", input_dist, INPUT_DISTRIBUTIONS)
    input_scale = check_number("input_scale", input_scale, low=0.0, low_open=True)
    alpha = check_number("alpha", alpha, low=0.0)
    if rcond is not None:
        rcond = check_number("rcond", rcond, low=0.0)
    gen = make_generator(seed, generator)
    dtype, device = _model_factory(model)

    # The number of state features, from a one-step run (works for any model of the protocol).
    with torch.no_grad():
        n_features = _run_states(model, torch.zeros(1, 1, 1, dtype=dtype, device=device)).shape[-1]
    k_max = 2 * n_features if n_delays is None else n_delays
    if min_delay > k_max:
        raise ValueError(f"min_delay ({min_delay}) must not exceed n_delays ({k_max})")
    washout = max(100, k_max) if washout is None else washout
    if washout < k_max:
        raise ValueError(f"washout ({washout}) must be at least the largest delay n_delays "
                         f"({k_max}): the target u(t - k) of the first training step must exist")

    length = washout + train_length + test_length
    if input_dist == "uniform":
        u = (2.0 * torch.rand(batch, length, generator=gen, dtype=torch.float64) - 1.0)
    else:
        u = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    u = input_scale * u
    with torch.no_grad():
        states = _run_states(model, u.unsqueeze(-1).to(dtype=dtype, device=device))
    states = states.to(device="cpu", dtype=torch.float64)
    delays = torch.arange(min_delay, k_max + 1)
    n_k = delays.numel()

    readouts = _fit_readouts(states[:, washout:washout + train_length], u, washout, delays,
                             alpha, rcond)

    mc_k = torch.zeros(n_k, dtype=torch.float64)
    test_start = washout + train_length
    times = torch.arange(test_start, length)
    x_test = states[:, test_start:].reshape(-1, n_features)
    # Columns in blocks, for the same memory bound as the training targets.
    block = max(1, _TARGET_CHUNK_ELEMENTS // (batch * test_length))
    for j0 in range(0, n_k, block):
        j1 = min(j0 + block, n_k)
        y = _delayed_targets(u, times, delays[j0:j1]).reshape(-1, j1 - j0)
        mc_k[j0:j1] = _squared_correlation(y, readouts.predict(x_test, slice(j0, j1)))
    return MemoryCapacityResult(float(mc_k.sum()), mc_k, delays, int(n_features))


# ------------------------------------------------------------------------------------------------
def _as_float64(name: str, x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.layout != torch.strided:
            x = x.to_dense()
        t = x.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.asarray(x, dtype=np.float64).copy())
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return t


def linear_memory_capacity(
    W: Any,
    w_in: Any,
    n_delays: int,
    *,
    leak: float | Any = 1.0,
    min_delay: int = 1,
    method: str = "auto",
    rcond: float | None = None,
    max_elements: int = 20_000_000,
) -> MemoryCapacityResult:
    """Memory capacity of the linear reservoir ``x(t) = A x(t-1) + b u(t)`` for i.i.d. input,
    from linear-systems theory (module docstring; Jaeger 2001).

    ``A = (1 - a) I + a W`` and ``b = a w_in`` with the leak ``a`` (one number or one per unit;
    1: no leak). The result does not depend on the input's variance or distribution (only on
    its being i.i.d.). Two computations, in float64:

    * ``"krylov"``: the state is ``x(t) = K h(t)`` with the input history
      ``h(t) = (u(t), u(t-1), ...)`` and ``K = [b, A b, A^2 b, ...]`` (truncated where
      ``||A^j b||`` has fallen below ``1e-18`` of its largest value). The optimal readout of
      ``u(t - k)`` projects the unit vector ``e_k`` onto the row space of ``K``, so ``MC_k`` is
      the k-th diagonal entry of that projector: ``MC_k = ||U[k, :r]||^2`` from the thin SVD
      ``K^T = U S V^T`` with the ``r`` singular values above ``rcond * S_max``. This avoids
      forming ``P = K K^T``, whose condition number is the square of K's (the Gramian of a
      random reservoir is very ill-conditioned), so it resolves far more of the memory.
    * ``"lyapunov"``: ``MC_k = (A^k b)^T P^+ (A^k b)`` with ``P = A P A^T + b b^T`` solved by
      ``scipy.linalg.solve_discrete_lyapunov`` (Bartels–Stewart; torch has no Lyapunov solver)
      and eigenvalues of P below ``rcond^2 * max`` treated as zero. Memory O(N^2) whatever the
      decay, but it loses the directions with singular values of K below about ``1e-8``.
    * ``"auto"``: Krylov unless K would have more than ``max_elements`` entries (a slowly
      decaying A with many units), then Lyapunov.

    Directions the input never reaches carry no memory (the pseudo-inverse), so
    ``sum_{k>=0} MC_k = rank <= N``.

    Args:
        W: N x N recurrent matrix (torch dense/sparse or numpy).
        w_in: input weights, shape (N,) or (N, 1).
        n_delays: the largest delay K.
        leak: a in (0, 1].
        min_delay: first delay (1 as in Jaeger 2001; 0 includes the current input).
        method: ``"auto"``, ``"krylov"`` or ``"lyapunov"``.
        rcond: relative singular-value cut-off of K; ``None``: ``max(J, N) * eps`` (as
            ``numpy.linalg.matrix_rank``).
        max_elements: the Krylov matrix size above which ``"auto"`` uses Lyapunov.

    Raises ``ValueError`` if ``rho(A) >= 1 - n eps ||A||_F`` (no stationary state: the memory
    is undefined; within the round-off of the eigenvalue computation, 1 cannot be excluded).
    """
    w = _as_float64("W", W)
    if w.dim() != 2 or w.shape[0] != w.shape[1] or w.shape[0] == 0:
        raise ValueError(f"W must be a non-empty square matrix, got shape {tuple(w.shape)}")
    n = w.shape[0]
    b = _as_float64("w_in", w_in)
    if b.dim() == 2 and b.shape[1] == 1:
        b = b[:, 0]
    if b.shape != (n,):
        raise ValueError(f"w_in must have shape ({n},) or ({n}, 1) (one scalar input), "
                         f"got {tuple(b.shape)}")
    check_positive_int("n_delays", n_delays)
    min_delay = check_int("min_delay", min_delay, low=0)
    if min_delay > n_delays:
        raise ValueError(f"min_delay ({min_delay}) must not exceed n_delays ({n_delays})")
    if method not in ("auto", "krylov", "lyapunov"):
        raise ValueError(f"method must be 'auto', 'krylov' or 'lyapunov', got {method!r}")
    if rcond is not None:
        rcond = check_number("rcond", rcond, low=0.0)
    check_positive_int("max_elements", max_elements)
    a = _as_float64("leak", leak if isinstance(leak, (torch.Tensor, np.ndarray))
                    else torch.as_tensor(leak, dtype=torch.float64))
    if a.dim() == 0:
        a = a.expand(n)
    if a.shape != (n,):
        raise ValueError(f"leak must be one number or one per unit ({n}), got shape "
                         f"{tuple(a.shape)}")
    if not bool(((a > 0) & (a <= 1)).all()):
        raise ValueError("leak must be in (0, 1]")

    A = torch.diag(1.0 - a) + a.unsqueeze(1) * w
    b = a * b
    rho = float(torch.linalg.eigvals(A).abs().max())
    # The computed eigenvalues are those of A + E with ||E|| ~ n eps ||A|| (backward-stable QR
    # algorithm), so a spectral radius within that of 1 cannot be told from 1: a marginal A
    # (e.g. one scaled to rho = 1 exactly) must not pass or fail by the last bit of eigvals.
    margin = n * torch.finfo(torch.float64).eps * float(torch.linalg.matrix_norm(A))
    if rho >= 1.0 - margin:
        raise ValueError(f"the linear reservoir is not stable (spectral radius of (1-a)I + aW "
                         f"is {rho:.17g}, not below 1 by more than its round-off {margin:.2g}): "
                         f"its states have no stationary covariance")
    delays = torch.arange(min_delay, n_delays + 1)
    if not bool((b != 0).any()):
        return MemoryCapacityResult(0.0, torch.zeros(delays.numel(), dtype=torch.float64),
                                    delays, n)
    # Terms until ||A^j b|| <= 1e-18 max: the geometric tail is then below round-off. The
    # estimate from rho is only a guide (a non-normal A can grow first), so the loop checks.
    guess = n_delays + 1 + (math.ceil(math.log(1e-18) / math.log(rho)) if rho > 0 else n)
    use_krylov = method == "krylov" or (method == "auto" and guess * n <= max_elements)
    if use_krylov:
        cols = [b]
        top = float(b.norm())
        while True:
            v = A @ cols[-1]
            norm = float(v.norm())
            top = max(top, norm)
            if len(cols) > n_delays and norm <= 1e-18 * top:
                break
            cols.append(v)
            if method == "auto" and len(cols) * n > 4 * max_elements:
                use_krylov = False  # decays far slower than rho suggested
                break
    if use_krylov:
        kt = torch.stack(cols)  # (J, N), row j = (A^j b)^T
        u, s, _ = torch.linalg.svd(kt, full_matrices=False)
        cut = (max(kt.shape) * torch.finfo(torch.float64).eps) if rcond is None else rcond
        r = int((s > cut * s[0]).sum())
        mc_all = (u[:, :r] ** 2).sum(1)
        mc_k = mc_all[min_delay:n_delays + 1].clone()
        return MemoryCapacityResult(float(mc_k.sum()), mc_k, delays, n)

    from scipy.linalg import solve_discrete_lyapunov

    P = torch.from_numpy(solve_discrete_lyapunov(A.numpy(), torch.outer(b, b).numpy()))
    P = 0.5 * (P + P.t())
    evals, evecs = torch.linalg.eigh(P)
    cut = (n * torch.finfo(torch.float64).eps) if rcond is None else rcond
    keep = evals > cut * cut * float(evals.max())
    inv = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)),
                      torch.zeros_like(evals))
    mc_k = torch.empty(delays.numel(), dtype=torch.float64)
    v = torch.linalg.matrix_power(A, min_delay) @ b
    for i in range(delays.numel()):
        z = evecs.t() @ v
        mc_k[i] = (inv * z * z).sum()
        v = A @ v
    return MemoryCapacityResult(float(mc_k.sum()), mc_k, delays, n)
