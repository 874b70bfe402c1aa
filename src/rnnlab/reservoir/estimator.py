"""A scikit-learn-style face for an echo state network with a ridge readout.

``ESNRegressor(units=..., alpha=..., washout=...).fit(X, y, warmup=...).predict(X)``, with the
conventions of scikit-learn (and of ReservoirPy's ``fit(X, y, warmup=...)``) without needing
scikit-learn: constructor arguments are stored unchanged and validated in ``fit``; ``get_params``
/ ``set_params``; fitted attributes end in ``_`` (``esn_``, ``readout_``, ``n_features_in_``,
``n_outputs_``). Data are numpy arrays or torch tensors, ``(time, features)`` for one sequence or
``(batch, time, features)`` for several of the same length; 1-D targets are one output.
Predictions come back in the container (numpy or torch) and layout of ``X``.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.readout import RidgeReadout


def _as_tensor(x: Any, name: str, dtype: torch.dtype, device: torch.device | str | None
               ) -> tuple[torch.Tensor, bool]:
    """A float tensor of the model's dtype/device, and whether the input was numpy."""
    if isinstance(x, torch.Tensor):
        is_numpy = False
        t = x.detach()
    elif isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        is_numpy = True
        arr = np.asarray(x)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
        t = torch.from_numpy(np.asarray(arr, dtype=np.float64))
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if t.is_complex():
        raise TypeError(f"{name} must be real")
    return t.to(dtype=dtype, device=device), is_numpy


def _as_batch(t: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    """``(time, f)`` -> ``(1, time, f)``; ``(batch, time, f)`` unchanged."""
    if t.dim() == 2:
        return t.unsqueeze(0), True
    if t.dim() == 3:
        return t, False
    raise ValueError(f"{name} must be (time, features) or (batch, time, features), "
                     f"got shape {tuple(t.shape)}")


class ESNRegressor:
    """Echo state network + ridge readout as a scikit-learn-style regressor.

    All :class:`~rnnlab.reservoir.esn.EchoStateNetwork` options except output feedback, plus
    ``alpha`` (ridge penalty), ``fit_intercept`` and ``washout`` (states dropped at the start of
    each training sequence; ``fit(..., warmup=k)`` overrides it). ``predict`` runs each sequence
    from the zero state and returns one output per input step.
    """

    def __init__(
        self,
        units: int = 100,
        *,
        topology: str | Any = "random",
        spectral_radius: float | None = None,
        density: float = 0.1,
        distribution: str = "uniform",
        r: float = 0.5,
        backward_weight: float = 0.05,
        leak: float = 1.0,
        input_scaling: float = 1.0,
        input_weights: str | Any = "uniform",
        bias_scaling: float = 0.0,
        alpha: float = 1e-6,
        washout: int = 0,
        fit_intercept: bool = True,
        sparse: bool | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        self.units = units
        self.topology = topology
        self.spectral_radius = spectral_radius
        self.density = density
        self.distribution = distribution
        self.r = r
        self.backward_weight = backward_weight
        self.leak = leak
        self.input_scaling = input_scaling
        self.input_weights = input_weights
        self.bias_scaling = bias_scaling
        self.alpha = alpha
        self.washout = washout
        self.fit_intercept = fit_intercept
        self.sparse = sparse
        self.seed = seed
        self.dtype = dtype
        self.device = device

    # --------------------------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments (``deep`` is accepted for scikit-learn compatibility)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> ESNRegressor:
        """Set constructor arguments; takes effect at the next ``fit``."""
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"invalid parameter {key!r} for ESNRegressor; "
                                 f"valid: {sorted(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__)
                    .parameters.values() if p.name != "self"}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if not (isinstance(v, type(defaults[k])) and v == defaults[k])]
        return f"ESNRegressor({', '.join(changed)})"

    # --------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "esn_"):
            raise RuntimeError("this ESNRegressor is not fitted yet: call fit(X, y) first")

    def fit(self, X: Any, y: Any, warmup: int | None = None) -> ESNRegressor:
        """Fit the readout on the states driven by ``X``; ``y`` aligned with ``X`` step by step.

        ``warmup`` (default: ``washout``) initial steps of every sequence are left out of the
        regression (their states still depend on the arbitrary zero initial state).
        """
        warmup = self.washout if warmup is None else warmup
        x, _ = _as_tensor(X, "X", self.dtype, self.device)
        x, single = _as_batch(x, "X")
        t, _ = _as_tensor(y, "y", self.dtype, self.device)
        # One output per step: y is (time,) for one sequence, (batch, time) for a batch.
        self._y_1d = t.dim() == (1 if single else 2)
        if self._y_1d:
            t = t.unsqueeze(-1)
        if single:
            if t.dim() != 2:
                raise ValueError(f"for X of shape (time, features), y must be (time,) or "
                                 f"(time, outputs), got shape {tuple(t.shape)}")
            t = t.unsqueeze(0)
        elif t.dim() != 3:
            raise ValueError(f"for X of shape (batch, time, features), y must be (batch, time) "
                             f"or (batch, time, outputs), got shape {tuple(t.shape)}")
        if t.shape[:2] != x.shape[:2]:
            raise ValueError(f"X and y must have the same batch and time sizes, got X "
                             f"{tuple(x.shape)} and y {tuple(t.shape)}")
        esn = EchoStateNetwork(
            input_size=x.shape[-1], units=self.units, topology=self.topology,
            spectral_radius=self.spectral_radius, density=self.density,
            distribution=self.distribution, r=self.r, backward_weight=self.backward_weight,
            leak=self.leak, input_scaling=self.input_scaling, input_weights=self.input_weights,
            bias_scaling=self.bias_scaling, sparse=self.sparse, seed=self.seed,
            device=self.device, dtype=self.dtype)
        readout = RidgeReadout(self.units, t.shape[-1], self.alpha, self.fit_intercept,
                               device=self.device, dtype=self.dtype)
        with torch.no_grad():
            states, _ = esn(x, washout=warmup)
        readout.fit(states, t[:, warmup:])
        self.esn_, self.readout_ = esn, readout
        self.n_features_in_ = x.shape[-1]
        self.n_outputs_ = t.shape[-1]
        return self

    def predict(self, X: Any) -> Any:
        """Outputs for every step of ``X``, in X's container; ``(time,)`` or ``(batch, time)``
        if ``y`` was 1-D per sequence, else ``(..., outputs)``."""
        self._check_fitted()
        x, is_numpy = _as_tensor(X, "X", self.dtype, self.device)
        x, single = _as_batch(x, "X")
        if x.shape[-1] != self.n_features_in_:
            raise ValueError(f"X has {x.shape[-1]} features, the model was fitted with "
                             f"{self.n_features_in_}")
        with torch.no_grad():
            states, _ = self.esn_(x)
            out = self.readout_.predict(states)
        if single:
            out = out[0]
        if self._y_1d:
            out = out[..., 0]
        return out.cpu().numpy() if is_numpy else out

    def score(self, X: Any, y: Any) -> float:
        """Coefficient of determination ``R^2 = 1 - SS_res / SS_tot`` over all outputs' values
        (pooled), as scikit-learn's ``r2_score`` for one output."""
        pred = self.predict(X)
        p = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred,
                            dtype=torch.float64).reshape(-1).cpu()
        t, _ = _as_tensor(y, "y", torch.float64, "cpu")
        t = t.reshape(-1)
        if p.shape != t.shape:
            raise ValueError(f"y has {t.numel()} values, the predictions {p.numel()}")
        ss_tot = float((t - t.mean()).pow(2).sum())
        if ss_tot == 0:
            raise ValueError("y has zero variance: R^2 is undefined")
        return 1.0 - float((t - p).pow(2).sum()) / ss_tot
