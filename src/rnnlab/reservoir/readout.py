"""Linear readouts for reservoirs: ridge regression (batch, streamed, sharded), LMS, RLS/FORCE,
and a ridge classifier on pooled states. (A little over 500 lines: the four readouts share the
sample checks and the ridge statistics, which is why they stay in one module.)

Ridge regression (Tikhonov regularisation; for ESNs, Jaeger 2001 and Lukosevicius 2012, "A
practical guide to applying echo state networks"). With features ``X`` (M x F), targets ``Y``
(M x O), ``y = W x + c``::

    minimise  ||Y - X W^T - 1 c^T||^2 + alpha ||W||^2          (the intercept c is not penalised)

    mu_x = X^T 1 / M,  mu_y = Y^T 1 / M
    C_xx = X^T X - M mu_x mu_x^T,   C_xy = X^T Y - M mu_x mu_y^T       (centred through the sums)
    (C_xx + alpha I) W^T = C_xy,    c = mu_y - W mu_x

Only the sums ``X^T X``, ``X^T Y``, ``X^T 1``, ``Y^T 1`` and ``M`` are kept, so the data can be
streamed (:meth:`RidgeReadout.partial_fit` any number of times, memory O(F^2) whatever M is) and
sharded: statistics of disjoint shards add up (:meth:`RidgeReadout.merge`, or
``torch.distributed.all_reduce`` on the tensors of :meth:`RidgeReadout.statistics`). They are
accumulated and solved in float64 whatever the data's dtype.

Singular systems: with ``alpha > 0`` the system matrix is positive definite and is solved by a
Cholesky factorisation. If the factorisation fails (``alpha = 0`` and rank-deficient features,
or ``alpha`` too small for the round-off), ``solve`` raises ``ValueError`` by default
(``on_singular="raise"``); with ``on_singular="pinv"`` it returns the minimum-norm least-squares
solution through the eigendecomposition of ``C_xx + alpha I`` with eigenvalues below
``rcond * max eigenvalue`` treated as zero (what ``numpy.linalg.lstsq`` returns for a
rank-deficient problem when the rank gap is clear). A result is never NaN: a non-finite solution
raises.

Online readouts (one sample, or a few, at a time):

* :class:`LMSReadout`: least mean squares (Widrow & Hoff 1960), ``W <- W + lr e x^T``.
* :class:`RLSReadout`: recursive least squares with forgetting factor ``lambda``; with
  ``lambda = 1`` and ``P(0) = I / delta`` it is FORCE learning (Sussillo & Abbott 2009), and
  after any number of samples it equals ridge regression with penalty ``delta`` on all weights
  (the intercept too), discounted by ``lambda``.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import numpy as np
import torch
from torch import nn

from rnnlab._validation import check_number, check_positive_int, check_tensor

SINGULAR_MODES = ("raise", "pinv")


def _flatten_pair(x: torch.Tensor, y: torch.Tensor, n_features: int, n_outputs: int,
                  xname: str = "states", yname: str = "targets"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., F) and (..., O) with the same leading shape -> (M, F) and (M, O)."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{xname} and {yname} must be torch.Tensors")
    if x.dim() < 1 or x.shape[-1] != n_features:
        raise ValueError(f"{xname} must have {n_features} features in the last dimension, "
                         f"got shape {tuple(x.shape)}")
    if y.dim() < 1 or y.shape[-1] != n_outputs:
        raise ValueError(f"{yname} must have {n_outputs} outputs in the last dimension, "
                         f"got shape {tuple(y.shape)}")
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"{xname} {tuple(x.shape)} and {yname} {tuple(y.shape)} must have the "
                         f"same leading (batch, time) shape")
    x2 = x.reshape(-1, n_features)
    y2 = y.reshape(-1, n_outputs)
    check_tensor(xname, x2, ndim=2, layout="(samples, features)")
    check_tensor(yname, y2, ndim=2, layout="(samples, outputs)")
    if not (x2.is_floating_point() and y2.is_floating_point()):
        raise TypeError(f"{xname} and {yname} must be floating point")
    return x2, y2


def _gram(a: np.ndarray) -> np.ndarray:
    return a.T @ a


def accumulate_statistics(stats: dict[str, torch.Tensor], x: torch.Tensor,
                          y: torch.Tensor, *, pool: Executor | None = None,
                          parts: int = 1) -> None:
    """Add checked samples ``x`` ``(M, F)``, ``y`` ``(M, O)`` to float64 ridge statistics
    (``xtx``, ``xty``, ``sum_x``, ``sum_y``, ``count``) in place.

    On the CPU, ``X^T X`` may be built as ``parts`` syrk calls on consecutive slices of the
    samples, slices 2.. on ``pool`` (numpy releases the GIL in BLAS), added in slice order: the
    same sums up to the order of addition."""
    dev = stats["xtx"].device
    x = x.detach().to(device=dev, dtype=torch.float64)
    y = y.detach().to(device=dev, dtype=torch.float64)
    if dev.type == "cpu":
        # numpy recognises a.T @ a and calls BLAS syrk (half the multiply-adds of a general mm;
        # measured 0.54 s vs 0.94 s for 15000 x 1000 here); the result is full symmetric.
        xn = x.contiguous().numpy()
        parts = 1 if pool is None else max(1, min(parts, xn.shape[0]))
        edges = np.linspace(0, xn.shape[0], parts + 1).astype(np.int64)
        slices = [xn[edges[p]:edges[p + 1]] for p in range(parts)]
        futures = [pool.submit(_gram, a) for a in slices[1:]] if pool is not None else []
        for g in [_gram(slices[0])] + [f.result() for f in futures]:
            stats["xtx"].add_(torch.from_numpy(g))
    else:
        stats["xtx"].addmm_(x.t(), x)
    stats["xty"].addmm_(x.t(), y)
    stats["sum_x"].add_(x.sum(0))
    stats["sum_y"].add_(y.sum(0))
    stats["count"].add_(x.shape[0])


class RidgeReadout(nn.Module):
    """Ridge regression readout ``y = W x + c`` accumulated as normal equations.

    Args:
        n_features: F (e.g. reservoir units).
        n_outputs: O.
        alpha: Tikhonov penalty (>= 0) on W (not on the intercept).
        fit_intercept: learn c (through centring); if False, c = 0 and the sums for it are not
            used.
        on_singular: ``"raise"`` or ``"pinv"`` (see the module docstring).
        rcond: relative eigenvalue cut-off for ``"pinv"``.
        device, dtype: of the fitted ``weight`` (O x F) and ``bias`` (O) buffers; the
            statistics are float64 on ``device``.

    ``readout(states)`` is :meth:`predict`.
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        alpha: float = 1e-6,
        fit_intercept: bool = True,
        *,
        on_singular: str = "raise",
        rcond: float = 1e-12,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.n_features = check_positive_int("n_features", n_features)
        self.n_outputs = check_positive_int("n_outputs", n_outputs)
        self.alpha = check_number("alpha", alpha, low=0.0)
        self.fit_intercept = bool(fit_intercept)
        if on_singular not in SINGULAR_MODES:
            raise ValueError(f"on_singular must be one of {SINGULAR_MODES}, got {on_singular!r}")
        self.on_singular = on_singular
        self.rcond = check_number("rcond", rcond, low=0.0)
        factory = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        self.register_buffer("weight", torch.zeros(n_outputs, n_features, **factory))
        self.register_buffer("bias", torch.zeros(n_outputs, **factory))
        self.fitted = False
        self.reset()

    # --------------------------------------------------------------------------------------------
    def reset(self) -> RidgeReadout:
        """Forget the accumulated statistics (the fitted weights are kept)."""
        f, o = self.n_features, self.n_outputs
        opts = {"dtype": torch.float64, "device": self.weight.device}
        self._stats = {
            "xtx": torch.zeros(f, f, **opts),
            "xty": torch.zeros(f, o, **opts),
            "sum_x": torch.zeros(f, **opts),
            "sum_y": torch.zeros(o, **opts),
            "count": torch.zeros((), **opts),
        }
        return self

    def statistics(self) -> dict[str, torch.Tensor]:
        """The live float64 sums ``xtx`` (X^T X), ``xty`` (X^T Y), ``sum_x``, ``sum_y``,
        ``count``.

        These are the readout's own tensors (not copies), so across processes::

            for t in readout.statistics().values():
                torch.distributed.all_reduce(t)       # SUM: the statistics of all shards
            readout.solve()
        """
        return self._stats

    def load_statistics(self, stats: dict[str, torch.Tensor]) -> RidgeReadout:
        """Replace the statistics (e.g. ones saved with ``torch.save(readout.statistics())``)."""
        for key, ref in self._stats.items():
            if key not in stats:
                raise ValueError(f"statistics lack {key!r}")
            value = torch.as_tensor(stats[key])
            if value.shape != ref.shape:
                raise ValueError(f"statistics {key!r} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(ref.shape)}")
            self._stats[key] = value.to(dtype=torch.float64, device=ref.device).clone()
        return self

    def partial_fit(self, states: torch.Tensor, targets: torch.Tensor) -> RidgeReadout:
        """Add a chunk: ``states`` ``(..., F)`` and ``targets`` ``(..., O)`` with the same leading
        shape (e.g. ``(batch, time)``); every leading position is one sample."""
        x, y = _flatten_pair(states, targets, self.n_features, self.n_outputs)
        accumulate_statistics(self._stats, x, y)
        return self

    def merge(self, other: RidgeReadout) -> RidgeReadout:
        """Add another readout's statistics (a shard of the same problem) into this one."""
        if not isinstance(other, RidgeReadout):
            raise TypeError(f"can only merge a RidgeReadout, got {type(other).__name__}")
        if (other.n_features, other.n_outputs) != (self.n_features, self.n_outputs):
            raise ValueError(
                f"cannot merge a {other.n_features} -> {other.n_outputs} readout into a "
                f"{self.n_features} -> {self.n_outputs} one")
        for key, t in self._stats.items():
            t.add_(other._stats[key].to(t.device))
        return self

    def _system(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self._stats
        m = float(s["count"])
        if m == 0:
            raise ValueError("no data: call partial_fit (or fit) before solve")
        if self.fit_intercept:
            mu_x = s["sum_x"] / m
            mu_y = s["sum_y"] / m
            cxx = s["xtx"] - m * torch.outer(mu_x, mu_x)
            cxy = s["xty"] - m * torch.outer(mu_x, mu_y)
        else:
            mu_x = torch.zeros_like(s["sum_x"])
            mu_y = torch.zeros_like(s["sum_y"])
            cxx, cxy = s["xtx"], s["xty"]
        # Symmetrise: the subtraction of the mean term breaks exact symmetry by round-off.
        cxx = 0.5 * (cxx + cxx.t())
        return cxx, cxy, mu_x, mu_y

    def solve(self) -> RidgeReadout:
        """Solve the normal equations (float64) and store ``weight`` and ``bias``."""
        cxx, cxy, mu_x, mu_y = self._system()
        a = cxx + self.alpha * torch.eye(self.n_features, dtype=cxx.dtype, device=cxx.device)
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            w_t = torch.cholesky_solve(cxy, chol)
        elif self.on_singular == "pinv":
            w_t = self._pinv_solve(a, cxy)
        else:
            raise ValueError(
                f"the ridge system (X^T X + alpha I, alpha={self.alpha}) is singular or not "
                f"positive definite to working precision (Cholesky failed at column "
                f"{int(info)}): increase alpha, or use on_singular='pinv' for the minimum-norm "
                f"least-squares solution")
        if not bool(torch.isfinite(w_t).all()):
            raise ValueError("the ridge solution is not finite: the system is too ill-"
                             "conditioned; increase alpha")
        bias = mu_y - mu_x @ w_t
        self.weight.copy_(w_t.t().to(self.weight))
        self.bias.copy_(bias.to(self.bias))
        self.fitted = True
        return self

    def _pinv_solve(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        evals, evecs = torch.linalg.eigh(a)
        top = float(evals.abs().max())
        keep = evals > self.rcond * top if top > 0 else torch.zeros_like(evals, dtype=torch.bool)
        inv = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)),
                          torch.zeros_like(evals))
        return evecs @ (inv.unsqueeze(1) * (evecs.t() @ b))

    def fit(self, states: torch.Tensor, targets: torch.Tensor) -> RidgeReadout:
        """``reset``, ``partial_fit`` on all the data, ``solve``."""
        return self.reset().partial_fit(states, targets).solve()

    def predict(self, states: torch.Tensor) -> torch.Tensor:
        """``W x + c`` for states ``(..., F)``, returning ``(..., O)``."""
        if not isinstance(states, torch.Tensor):
            raise TypeError(f"states must be a torch.Tensor, got {type(states).__name__}")
        if states.dim() < 1 or states.shape[-1] != self.n_features:
            raise ValueError(f"states must have {self.n_features} features in the last "
                             f"dimension, got shape {tuple(states.shape)}")
        if states.dtype != self.weight.dtype:
            raise TypeError(f"states have dtype {states.dtype} but the readout is "
                            f"{self.weight.dtype}; convert one of them")
        if not self.fitted:
            raise RuntimeError("the readout is not fitted: call fit or solve first")
        return torch.nn.functional.linear(states, self.weight, self.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.predict(states)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> RidgeReadout:
        # Keep the statistics in float64, but on the buffers' (possibly new) device.
        super()._apply(fn, *args, **kwargs)
        dev = self.weight.device
        self._stats = {k: v.to(device=dev) for k, v in self._stats.items()}
        return self

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super()._load_from_state_dict(*args, **kwargs)
        self.fitted = True

    def extra_repr(self) -> str:
        return (f"n_features={self.n_features}, n_outputs={self.n_outputs}, alpha={self.alpha}, "
                f"fit_intercept={self.fit_intercept}, samples={int(self._stats['count'])}")


# ------------------------------------------------------------------------------------------------
def _check_step(x_t: torch.Tensor, y_t: torch.Tensor, f: int, o: int
                ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    single = isinstance(x_t, torch.Tensor) and x_t.dim() == 1
    if single:
        x_t = x_t.unsqueeze(0)
        y_t = y_t.unsqueeze(0) if isinstance(y_t, torch.Tensor) and y_t.dim() == 1 else y_t
    check_tensor("x_t", x_t, ndim=2, last_dim=f, layout="(batch, features) or (features,)")
    check_tensor("y_t", y_t, ndim=2, last_dim=o, layout="(batch, outputs) or (outputs,)")
    if x_t.shape[0] != y_t.shape[0]:
        raise ValueError(f"x_t has {x_t.shape[0]} samples, y_t has {y_t.shape[0]}")
    return x_t, y_t, single


class _OnlineReadout(nn.Module):
    """The linear map ``y = W x + c`` that an online readout updates sample by sample: the
    buffers ``weight`` (O x F) and ``bias`` (O), zero at the start; ``step`` is the subclass's."""

    def __init__(self, n_features: int, n_outputs: int, fit_intercept: bool,
                 device: torch.device | str | None, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.n_features = check_positive_int("n_features", n_features)
        self.n_outputs = check_positive_int("n_outputs", n_outputs)
        self.fit_intercept = bool(fit_intercept)
        factory = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        self.register_buffer("weight", torch.zeros(n_outputs, n_features, **factory))
        self.register_buffer("bias", torch.zeros(n_outputs, **factory))

    def predict(self, states: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(states, self.weight, self.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.predict(states)


class LMSReadout(_OnlineReadout):
    """Least-mean-squares online readout (Widrow & Hoff 1960), ``y = W x + c``.

    Each :meth:`step` with samples ``x`` ``(B, F)`` and targets ``y`` ``(B, O)`` first predicts
    ``o = W x + c`` (returned), then, with ``e = y - o``, updates (mean over the B samples)::

        W <- W + lr * mean_b e_b x_b^T,        c <- c + lr * mean_b e_b

    (stochastic gradient descent on ``||e||^2 / 2``). Stable for ``0 < lr < 2 / lambda_max`` of
    the input correlation matrix.
    """

    def __init__(self, n_features: int, n_outputs: int, lr: float = 1e-2,
                 fit_intercept: bool = True, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(n_features, n_outputs, fit_intercept, device, dtype)
        self.lr = check_number("lr", lr, low=0.0, low_open=True)

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        """Predict, then update; returns the prediction made before the update."""
        x, y, single = _check_step(x_t, y_t, self.n_features, self.n_outputs)
        x, y = x.to(self.weight), y.to(self.weight)
        pred = self.predict(x)
        err = y - pred
        self.weight.add_(err.t() @ x, alpha=self.lr / x.shape[0])
        if self.fit_intercept:
            self.bias.add_(err.mean(0), alpha=self.lr)
        return pred[0] if single else pred


class RLSReadout(_OnlineReadout):
    """Recursive least squares online readout; FORCE learning when ``forgetting = 1``.

    With features ``z = [x; 1]`` (``fit_intercept``) or ``z = x``, ``P(0) = I / delta``, ``W(0) =
    0``, per sample (Haykin, Adaptive Filter Theory, RLS; Sussillo & Abbott 2009, FORCE)::

        o = W z                                  (returned: the prediction before the update)
        k = P z / (lambda + z^T P z)
        e = y - o
        W <- W + e k^T
        P <- (P - k z^T P) / lambda

    After samples ``1..M`` with ``lambda = 1``, ``W`` minimises
    ``sum_m ||y_m - W z_m||^2 + delta ||W||^2`` exactly (ridge with penalty ``delta`` on all
    weights, the intercept included). A batch ``(B, F)`` is processed sample by sample. The
    state (``W``, ``P``) is kept in float64.
    """

    def __init__(self, n_features: int, n_outputs: int, forgetting: float = 1.0,
                 delta: float = 1.0, fit_intercept: bool = True, *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(n_features, n_outputs, fit_intercept, device, dtype)
        forgetting = check_number("forgetting", forgetting, low=0.0, low_open=True, high=1.0)
        delta = check_number("delta", delta, low=0.0, low_open=True)  # P(0) = I / delta
        self.forgetting, self.delta = forgetting, delta
        k = n_features + int(self.fit_intercept)
        dev = self.weight.device
        self._w = torch.zeros(n_outputs, k, dtype=torch.float64, device=dev)
        self._p = torch.eye(k, dtype=torch.float64, device=dev) / delta

    @property
    def P(self) -> torch.Tensor:
        """The inverse-correlation estimate P (float64), over ``[x; 1]`` with an intercept."""
        return self._p

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
        """Predict, then update, sample by sample; returns the predictions before each update."""
        x, y, single = _check_step(x_t, y_t, self.n_features, self.n_outputs)
        dev = self._w.device
        x = x.to(device=dev, dtype=torch.float64)
        y = y.to(device=dev, dtype=torch.float64)
        if self.fit_intercept:
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=dev)], dim=1)
        preds = []
        lam = self.forgetting
        for z, target in zip(x, y, strict=True):
            o = self._w @ z
            pz = self._p @ z
            k = pz / (lam + z @ pz)
            self._w.add_(torch.outer(target - o, k))
            self._p.sub_(torch.outer(k, pz)).div_(lam)
            # Keep P symmetric: round-off in the rank-one downdate drifts it otherwise.
            self._p.copy_(0.5 * (self._p + self._p.t()))
            preds.append(o)
        f = self.n_features
        self.weight.copy_(self._w[:, :f].to(self.weight))
        if self.fit_intercept:
            self.bias.copy_(self._w[:, f].to(self.bias))
        pred = torch.stack(preds).to(self.weight)
        return pred[0] if single else pred

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> RLSReadout:
        super()._apply(fn, *args, **kwargs)
        self._w = self._w.to(self.weight.device)
        self._p = self._p.to(self.weight.device)
        return self

    # W and P travel in the state dict (as its ``_extra_state``), in float64 whatever the
    # module's dtype, so that a saved readout continues learning exactly where it stopped.
    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return {"W": self._w.clone(), "P": self._p.clone()}

    def set_extra_state(self, state: Any) -> None:
        shapes = {"W": tuple(self._w.shape), "P": tuple(self._p.shape)}
        if not isinstance(state, dict) or any(
                not isinstance(state.get(k), torch.Tensor) or tuple(state[k].shape) != shape
                for k, shape in shapes.items()):
            raise ValueError(f"RLSReadout state must hold W and P of shapes {shapes}")
        self._w = state["W"].to(dtype=torch.float64, device=self.weight.device).clone()
        self._p = state["P"].to(dtype=torch.float64, device=self.weight.device).clone()


# ------------------------------------------------------------------------------------------------
POOLINGS = ("last", "mean")


def pool_states(states: torch.Tensor, pooling: str = "last",
                lengths: torch.Tensor | None = None) -> torch.Tensor:
    """One feature vector per sequence from states ``(batch, time, F)``: the last state or the
    mean over time, taking only the first ``lengths[i]`` steps of sequence i if given."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    check_tensor("states", states, ndim=3, layout="(batch, time, features)")
    batch, steps, _ = states.shape
    if lengths is None:
        return states[:, -1] if pooling == "last" else states.mean(1)
    lengths = torch.as_tensor(lengths, device=states.device)
    if lengths.shape != (batch,) or lengths.is_floating_point():
        raise ValueError(f"lengths must be {batch} integers, got {tuple(lengths.shape)} "
                         f"{lengths.dtype}")
    if bool((lengths < 1).any()) or bool((lengths > steps).any()):
        raise ValueError(f"lengths must be in [1, {steps}], got {lengths.tolist()}")
    if pooling == "last":
        return states[torch.arange(batch, device=states.device), lengths - 1]
    mask = (torch.arange(steps, device=states.device) < lengths.unsqueeze(1)).to(states.dtype)
    return (states * mask.unsqueeze(2)).sum(1) / lengths.to(states.dtype).unsqueeze(1)


class RidgeClassifierReadout(nn.Module):
    """Sequence classifier: ridge regression onto one-hot class codes of pooled states, argmax.

    Each sequence's states ``(time, F)`` are pooled (:func:`pool_states`: last or mean state)
    into one feature vector; a :class:`RidgeReadout` maps it to ``n_classes`` scores fitted to
    one-hot targets (1 for the class, 0 elsewhere); the predicted class is the argmax (as in
    Jaeger's and Lukosevicius' ESN classifiers).
    """

    def __init__(self, n_features: int, n_classes: int, alpha: float = 1e-6,
                 pooling: str = "last", fit_intercept: bool = True, *,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.n_classes = check_positive_int("n_classes", n_classes)
        if n_classes < 2:
            raise ValueError("n_classes must be at least 2")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.ridge = RidgeReadout(n_features, n_classes, alpha, fit_intercept,
                                  device=device, dtype=dtype)

    def _targets(self, labels: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=device)
        if labels.shape != (batch,) or labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be {batch} integers, got shape {tuple(labels.shape)} "
                             f"dtype {labels.dtype}")
        if bool((labels < 0).any()) or bool((labels >= self.n_classes).any()):
            raise ValueError(f"labels must be in [0, {self.n_classes}), got "
                             f"{sorted(set(labels.tolist()))}")
        return torch.nn.functional.one_hot(labels.long(), self.n_classes).to(torch.float64)

    def partial_fit(self, states: torch.Tensor, labels: torch.Tensor,
                    lengths: torch.Tensor | None = None) -> RidgeClassifierReadout:
        feats = pool_states(states, self.pooling, lengths)
        self.ridge.partial_fit(feats, self._targets(labels, feats.shape[0], feats.device))
        return self

    def solve(self) -> RidgeClassifierReadout:
        self.ridge.solve()
        return self

    def fit(self, states: torch.Tensor, labels: torch.Tensor,
            lengths: torch.Tensor | None = None) -> RidgeClassifierReadout:
        self.ridge.reset()
        return self.partial_fit(states, labels, lengths).solve()

    def decision_function(self, states: torch.Tensor,
                          lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Class scores ``(batch, n_classes)``."""
        return self.ridge.predict(pool_states(states, self.pooling, lengths))

    def predict(self, states: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted class per sequence, ``(batch,)`` int64."""
        return self.decision_function(states, lengths).argmax(-1)

    def forward(self, states: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict(states, lengths)
