"""scikit-learn estimators over an echo state network with ridge readouts.

* :class:`ESNRegressor`: rows of ``X`` are the time steps of one sequence, in order; ``y(t)`` is
  read out of the reservoir state ``x(t)`` (which has seen rows ``0..t``). Every prediction
  starts from the zero state.
* :class:`ESNClassifier`: rows of ``X`` are whole sequences (``(n_sequences, time)`` for
  univariate ones, or ``(n_sequences, time, features)``); each sequence's states are pooled
  (last state, or mean over time) and a ridge classifier on one-hot codes picks the class.
* :class:`ESNForecaster`: rows are time steps; it keeps the reservoir state where training
  ended, forecasts ``h`` steps ahead directly (one ridge readout per horizon) or free-running
  (its one-step forecasts fed back as the next input), and learns online (``partial_fit``) by
  adding each chunk to the readouts' normal equations.

The ridge readout (Jaeger 2001; Lukosevicius 2012, "A practical guide to applying echo state
networks") minimises ``||Y - X W^T - 1 c^T||^2 + alpha ||W||^2`` through the normal equations
``(C_xx + alpha I) W^T = C_xy`` of :class:`~rnnlab.reservoir.readout.RidgeReadout`, whose sums
``X^T X``, ``X^T Y``, ``X^T 1``, ``Y^T 1`` add up chunk by chunk: that is what makes
``partial_fit`` exact.

The estimators follow scikit-learn's contract: constructor arguments stored unchanged and
validated in ``fit``, fitted attributes ending in ``_``, ``__sklearn_tags__``, inputs checked by
``sklearn.utils.validation.validate_data`` (numpy, lists, pandas, read-only memmaps), errors for
NaN, complex, sparse or empty input. Torch tensors (and 3-D numpy arrays of several sequences
``(batch, time, features)``) take a direct path: they stay on the model's device and
predictions come back as tensors. Because a sequence model's output at a row depends on the
rows before it, two of scikit-learn's checks cannot apply (predicting a subset or a
permutation of the rows changes the answers); :data:`SEQUENCE_CHECKS` lists them with the
reason, for ``parametrize_with_checks(..., expected_failed_checks=expected_failed_checks)``.

(Over 500 lines: the three estimators share one input validation, one set of tags and one
reservoir-and-readout core, which scikit-learn's conventions make verbose; split, each would
repeat them.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_array, column_or_1d, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "rnnlab's scikit-learn estimators (ESNRegressor, ESNClassifier, ESNForecaster) need "
        "scikit-learn >= 1.6: pip install 'rnnlab[sklearn]' (or pip install scikit-learn)"
    ) from exc

from rnnlab._validation import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive_int,
    check_tensor,
    check_washout,
)
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.readout import POOLINGS, RidgeClassifierReadout, RidgeReadout

__all__ = ["SEQUENCE_CHECKS", "ESNClassifier", "ESNForecaster", "ESNRegressor",
           "NotFittedError", "expected_failed_checks"]

# scikit-learn's checks that assume the rows are exchangeable samples; the rows of the
# regressor and the forecaster are the time steps of one sequence, in order.
SEQUENCE_CHECKS = {
    "check_methods_subset_invariance":
        "rows are time steps in order: the output at a row depends on the rows before it, so "
        "predicting a subset of the rows (a shorter or later-starting sequence) changes it",
    "check_methods_sample_order_invariance":
        "rows are time steps in order: permuting them is a different input sequence, so the "
        "outputs are not the permuted outputs",
}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def expected_failed_checks(estimator: Any) -> dict[str, str]:
    """The scikit-learn checks that cannot apply to ``estimator`` with the reason each, for
    ``parametrize_with_checks(..., expected_failed_checks=expected_failed_checks)``: the two
    of :data:`SEQUENCE_CHECKS` for the time-step estimators, none for :class:`ESNClassifier`
    (its rows are whole sequences, exchangeable samples)."""
    if isinstance(estimator, (ESNRegressor, ESNForecaster)):
        return dict(SEQUENCE_CHECKS)
    return {}


class NotFittedError(_SklearnNotFittedError, RuntimeError):
    """scikit-learn's ``NotFittedError`` (a ``ValueError`` and ``AttributeError``); also a
    ``RuntimeError``, which ``ESNRegressor`` raised before it became a scikit-learn estimator."""


# ------------------------------------------------------------------------------------------------
def _resolve_dtype(value: Any) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch/numpy dtype) -> the torch dtype."""
    if isinstance(value, torch.dtype):
        name = str(value).removeprefix("torch.")
    else:
        try:
            name = np.dtype(value).name
        except TypeError:
            name = repr(value)
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64' (or the torch dtype), got "
                         f"{value!r}")
    return _DTYPES[name]


def _is_native(x: Any) -> bool:
    """Inputs that bypass scikit-learn's validation: torch tensors, and 3-D numpy batches."""
    return isinstance(x, torch.Tensor) or (isinstance(x, np.ndarray) and x.ndim == 3)


def _native_tensor(x: Any, name: str, dtype: torch.dtype, device: torch.device,
                   ndims: tuple[int, ...]) -> torch.Tensor:
    """A real, finite tensor of ``dtype`` on ``device`` with one of ``ndims`` dimensions."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise ValueError(f"{name} must be real, got complex dtype {arr.dtype}")
        t = torch.tensor(arr, dtype=torch.float64)  # a copy: read-only arrays are fine
    if t.is_complex():
        raise ValueError(f"{name} must be real, got complex dtype {t.dtype}")
    if t.dtype == torch.bool:
        raise TypeError(f"{name} must be numeric, got dtype {t.dtype}")
    if t.dim() not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got "
                         f"shape {tuple(t.shape)}")
    # empty, NaN and inf are refused always: this is a public entry point
    return check_tensor(name, t.to(dtype=dtype, device=device), ndim=t.dim(), finite=True)


def _check_array_like(name: str, x: Any) -> None:
    """A string is not data (``validate_data`` would try to parse it as a number)."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array-like of numbers or a tensor, got "
                        f"{type(x).__name__} {x[:20]!r}")


def _check_same_rows(X: Any, y: Any) -> None:
    """Rows (time steps) of X and y must match; a clearer message than ``validate_data``'s."""
    _check_array_like("X", X)
    _check_array_like("y", y)
    try:
        nx, ny = (a.shape[0] if getattr(a, "shape", ()) else len(a) for a in (X, y))
    except TypeError:  # not sized: validate_data names the problem
        return
    if nx != ny:
        raise ValueError(f"X and y must have the same batch and time sizes: X has {nx} rows "
                         f"(time steps), y has {ny}")


def _store_params(estimator: Any, params: dict[str, Any]) -> None:
    """Store an ``__init__``'s arguments unchanged (scikit-learn's convention: they are
    checked in ``fit``, so that ``set_params`` and ``clone`` see what was given)."""
    for name, value in params.items():
        if name != "self":
            setattr(estimator, name, value)


class _ESNBase(BaseEstimator):
    """The reservoir's parameters (stored by the subclasses' ``__init__``), building the
    :class:`EchoStateNetwork`, and the conversion of inputs."""

    def set_params(self, **params: Any) -> Any:
        """Set constructor arguments (``name__sub`` for nested ones); used at the next fit."""
        valid = set(self.get_params(deep=False))
        for key in params:
            if key.partition("__")[0] not in valid:
                raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}; "
                                 f"valid: {sorted(valid)}")
        return super().set_params(**params)

    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        return _resolve_dtype(self.dtype), torch.device("cpu" if self.device is None
                                                         else self.device)

    def _check_readout_params(self) -> None:
        check_number("alpha", self.alpha, low=0.0)
        check_bool("fit_intercept", self.fit_intercept)
        check_int("washout", self.washout, low=0)

    def _build_esn(self, input_size: int, dtype: torch.dtype,
                   device: torch.device) -> EchoStateNetwork:
        # every reservoir option is validated by the network itself
        return EchoStateNetwork(
            input_size=input_size, units=self.units, topology=self.topology,
            spectral_radius=self.spectral_radius, density=self.density,
            distribution=self.distribution, r=self.r, backward_weight=self.backward_weight,
            leak=self.leak, input_scaling=self.input_scaling, input_weights=self.input_weights,
            bias_scaling=self.bias_scaling, sparse=self.sparse, seed=self.seed, device=device,
            dtype=dtype)

    def _check_fitted(self) -> None:
        if not hasattr(self, "esn_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def _set_native_features(self, n_features: int, reset: bool) -> None:
        """``n_features_in_`` for inputs that bypass ``validate_data``."""
        if reset:
            self.n_features_in_ = n_features
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")

    def _torch_score(self, X: Any, y: Any) -> float:
        """R^2 (scikit-learn's ``r2_score``, outputs averaged) with every step of every
        sequence of a tensor or 3-D batch one sample."""
        from sklearn.metrics import r2_score  # as RegressorMixin.score: metrics import slowly

        pred = self.predict(X)
        p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        t = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if t.shape != p.shape:
            raise ValueError(f"y has shape {t.shape}, the predictions {p.shape}")
        width = 1 if self._y_1d else p.shape[-1]
        return float(r2_score(t.reshape(-1, width), p.reshape(-1, width)))


# ------------------------------------------------------------------------------------------------
class ESNRegressor(RegressorMixin, _ESNBase):
    """Echo state network + ridge readout as a scikit-learn regressor over time steps.

    ``X`` ``(time, features)`` is one sequence (rows in time order), ``y`` ``(time,)`` or
    ``(time, outputs)`` the target at each step; ``y(t) ~ W x(t) + c`` with the reservoir state
    ``x(t) = (1 - a) x(t-1) + a tanh(W_in u(t) + W x(t-1) + b)`` from ``x(-1) = 0``
    (:class:`~rnnlab.reservoir.esn.EchoStateNetwork`). The first ``washout`` steps (or
    ``fit(..., warmup=k)``) are left out of the ridge regression (they still depend on the
    arbitrary zero initial state). Torch tensors and numpy arrays ``(batch, time, features)``
    of several sequences are accepted too (``y`` ``(batch, time[, outputs])``), and the
    predictions then come back in the container of ``X``, on the model's ``device``.

    Args: the reservoir options of :class:`EchoStateNetwork` (``units``, ``topology``,
    ``spectral_radius``, ``density``, ``distribution``, ``r``, ``backward_weight``, ``leak``,
    ``input_scaling``, ``input_weights``, ``bias_scaling``, ``sparse``, ``seed``), ``alpha``
    (ridge penalty >= 0), ``washout``, ``fit_intercept``, ``dtype`` (``"float64"`` or
    ``"float32"``: of the states and the readout; the normal equations are float64 always)
    and ``device`` (``None``: the CPU).

    Fitted attributes: ``esn_``, ``readout_`` (a :class:`RidgeReadout`), ``n_features_in_``,
    ``feature_names_in_`` (for a DataFrame), ``n_outputs_``.
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
        dtype: str | Any = "float64",
        device: str | Any = None,
    ) -> None:
        _store_params(self, locals())

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (batch, time, features): several sequences
        tags.target_tags.multi_output = True
        tags.non_deterministic = False  # the reservoir is drawn from `seed`
        return tags

    def _xy(self, X: Any, y: Any, reset: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """X as ``(batch, time, D)`` and y as ``(batch, time, O)`` tensors."""
        dtype, device = self._dtype_device()
        if _is_native(X):
            x = _native_tensor(X, "X", dtype, device, (2, 3))
            single = x.dim() == 2
            x = x.unsqueeze(0) if single else x
            self._set_native_features(x.shape[-1], reset)
            if y is None:
                return x, None
            t = _native_tensor(y, "y", dtype, device, (2, 3) if not single else (1, 2))
            if reset:
                self._y_1d = t.dim() == (1 if single else 2)
            t = t.unsqueeze(-1) if t.dim() == (1 if single else 2) else t
            t = t.unsqueeze(0) if single else t
            if t.shape[:2] != x.shape[:2]:
                raise ValueError(f"X and y must have the same batch and time sizes, got X "
                                 f"{tuple(x.shape)} and y {tuple(t.shape)}")
            return x, t
        if y is None:
            _check_array_like("X", X)
            xa = validate_data(self, X, reset=reset, dtype=np.float64)
            return torch.tensor(xa, dtype=dtype, device=device).unsqueeze(0), None
        _check_same_rows(X, y)
        xa, ya = validate_data(self, X, y, reset=reset, dtype=np.float64, multi_output=True,
                               y_numeric=True)
        if reset:
            self._y_1d = ya.ndim == 1
        ya = ya.reshape(ya.shape[0], -1)
        return (torch.tensor(xa, dtype=dtype, device=device).unsqueeze(0),
                torch.tensor(ya, dtype=dtype, device=device).unsqueeze(0))

    def fit(self, X: Any, y: Any, warmup: int | None = None) -> ESNRegressor:
        """Fit the readout on the states driven by ``X``; ``y`` aligned with ``X`` step by step.

        ``warmup`` (default: ``washout``) initial steps of every sequence are left out of the
        regression."""
        self._check_readout_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             f"is None")
        x, t = self._xy(X, y, reset=True)
        warmup = check_washout(self.washout if warmup is None else warmup, x.shape[1])
        dtype, device = self._dtype_device()
        esn = self._build_esn(x.shape[-1], dtype, device)
        readout = RidgeReadout(check_positive_int("units", self.units), t.shape[-1],
                               self.alpha, self.fit_intercept, device=device, dtype=dtype)
        with torch.no_grad():
            states, _ = esn(x, washout=warmup)
        readout.fit(states, t[:, warmup:])
        self.esn_, self.readout_ = esn, readout
        self.n_outputs_ = t.shape[-1]
        return self

    def predict(self, X: Any) -> Any:
        """The output at every step of ``X`` (from the zero state): ``(time,)`` or ``(batch,
        time)`` if ``y`` was one output per step, else ``(..., outputs)``; a tensor for a
        tensor ``X``, else numpy."""
        self._check_fitted()
        native = isinstance(X, torch.Tensor)
        single = not _is_native(X) or X.ndim == 2
        x, _ = self._xy(X, None, reset=False)
        with torch.no_grad():
            out = self.readout_.predict(self.esn_(x)[0])
        out = out[0] if single else out
        out = out[..., 0] if self._y_1d else out
        return out if native else out.cpu().numpy()

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R^2 of the predictions (scikit-learn's ``r2_score``; for tensors and batches every
        step of every sequence is one sample)."""
        if _is_native(X):
            if sample_weight is not None:
                raise ValueError("sample_weight is supported for 2-D array-like X only")
            return self._torch_score(X, y)
        return super().score(X, y, sample_weight=sample_weight)


# ------------------------------------------------------------------------------------------------
class ESNClassifier(ClassifierMixin, _ESNBase):
    """Sequence classification: echo state network, pooled states, ridge on one-hot codes.

    Each row of ``X`` is one sequence: ``(n_sequences, time)`` for univariate sequences (the
    columns are the time steps, in order) or ``(n_sequences, time, features)`` (a 3-D numpy
    array or tensor). The reservoir runs over each sequence from the zero state; its states
    (after the first ``washout`` steps) are pooled into one vector, the ``"last"`` state or the
    ``"mean"`` over time (``pooling``); a ridge regression maps it to one score per class,
    fitted to one-hot codes, and the class with the highest score is predicted (Jaeger's and
    Lukosevicius' ESN classifiers; :class:`~rnnlab.reservoir.readout.RidgeClassifierReadout`).

    There is no ``predict_proba``: ridge scores are not probabilities (they are not even in
    [0, 1]) and a softmax of them would be an uncalibrated guess. ``decision_function`` gives
    the scores, ``(n, n_classes)``, or for two classes ``score_1 - score_0`` (positive means
    ``classes_[1]``), as scikit-learn's ``RidgeClassifier``; wrap the estimator in
    ``CalibratedClassifierCV`` for probabilities.

    Fitted attributes: ``esn_``, ``readout_``, ``classes_``, ``n_features_in_`` (the columns:
    time steps of a 2-D X, features per step of a 3-D one), ``input_size_`` (features per
    step fed to the reservoir).
    """

    def __init__(
        self,
        units: int = 100,
        *,
        pooling: str = "last",
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
        dtype: str | Any = "float64",
        device: str | Any = None,
    ) -> None:
        _store_params(self, locals())

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (n_sequences, time, features)
        tags.non_deterministic = False
        return tags

    def _sequences(self, X: Any, y: Any, reset: bool) -> tuple[torch.Tensor, Any]:
        """X as ``(n_sequences, time, features)``; y validated (numpy) or None."""
        dtype, device = self._dtype_device()
        # n_features_in_ is the number of columns of X as given at fit: the time steps of a
        # 2-D X, the features per step of a 3-D one. Only an X of the same dimensionality is
        # held to it; any X must have the reservoir's features per step (input_size_).
        ndim = X.ndim if _is_native(X) else 2
        same_ndim = reset or ndim == self._fit_ndim
        if _is_native(X):
            x = _native_tensor(X, "X", dtype, device, (2, 3))
            if same_ndim:
                self._set_native_features(x.shape[-1], reset)
            x = x.unsqueeze(-1) if x.dim() == 2 else x
            if y is not None:
                y = column_or_1d(y.detach().cpu().numpy() if isinstance(y, torch.Tensor)
                                 else y, warn=True)
                if y.shape[0] != x.shape[0]:
                    raise ValueError(f"X has {x.shape[0]} sequences, y has {y.shape[0]} labels")
        else:
            _check_array_like("X", X)
            if y is not None:
                xa, y = validate_data(self, X, y, reset=reset, dtype=np.float64)
            elif same_ndim:
                xa = validate_data(self, X, reset=reset, dtype=np.float64)
            else:
                xa = check_array(X, dtype=np.float64)
            x = torch.tensor(xa, dtype=dtype, device=device).unsqueeze(-1)
        if reset:
            self._fit_ndim = ndim
        if not reset and x.shape[-1] != self.input_size_:
            raise ValueError(f"X has {x.shape[-1]} features per step, but {type(self).__name__}"
                             f" is expecting {self.input_size_}")
        return x, y

    def fit(self, X: Any, y: Any) -> ESNClassifier:
        """Fit the ridge classifier on the pooled states of the sequences ``X``, labels ``y``."""
        self._check_readout_params()
        check_choice("pooling", self.pooling, POOLINGS)
        x, labels = self._sequences(X, y, reset=True)
        washout = check_washout(self.washout, x.shape[1])
        check_classification_targets(labels)
        classes, codes = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs sequences of at least 2 classes in "
                             f"y; got 1 class ({classes[0]!r})")
        dtype, device = self._dtype_device()
        esn = self._build_esn(x.shape[-1], dtype, device)
        readout = RidgeClassifierReadout(check_positive_int("units", self.units), len(classes),
                                         self.alpha, self.pooling, self.fit_intercept,
                                         device=device, dtype=dtype)
        with torch.no_grad():
            states, _ = esn(x, washout=washout)
        readout.fit(states, torch.as_tensor(codes.reshape(-1), device=device))
        self.esn_, self.readout_ = esn, readout
        self.classes_ = classes
        self.input_size_ = x.shape[-1]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Ridge scores ``(n_sequences, n_classes)``; for two classes ``(n_sequences,)``, the
        score of ``classes_[1]`` minus that of ``classes_[0]``."""
        self._check_fitted()
        x, _ = self._sequences(X, None, reset=False)
        with torch.no_grad():
            states, _ = self.esn_(x, washout=self.washout)
            scores = self.readout_.decision_function(states).cpu().numpy()
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X: Any) -> np.ndarray:
        """The class with the highest ridge score, one per sequence (labels from ``classes_``)."""
        scores = self.decision_function(X)
        index = (scores > 0).astype(np.int64) if scores.ndim == 1 else scores.argmax(1)
        return self.classes_[index]


# ------------------------------------------------------------------------------------------------
class ESNForecaster(RegressorMixin, _ESNBase):
    """Forecasting with an echo state network that continues from where training ended.

    Rows of ``X`` ``(time, features)`` are time steps in order. Two ways to give the series:

    * ``fit(X)`` (``y=None``, autoregressive): ``X`` is the series ``s``; readout ``k``
      (``k = 1..horizon``) maps the state after row ``t`` to ``s(t + k)``.
    * ``fit(X, y)``: ``y(t)`` is the one-step-ahead target of row ``t`` (``fit(s[:-1], s[1:])``
      for a series ``s``, or ``X`` with exogenous inputs); readout ``k`` maps the state after
      row ``t`` to ``y(t + k - 1)``.

    The state after the last row seen is kept (``state_``): ``predict(X)`` continues from it
    with ``X`` the rows that follow (readout 1 at every row: the one-step-ahead forecast; the
    state is not changed), and :meth:`forecast` gives the next ``steps`` values

    * ``method="direct"``: ``y_hat(k) = W_k x + c_k`` for ``k = 1..steps`` (``steps <=
      horizon``), every horizon its own ridge readout on the same state;
    * ``method="free"``: the one-step readout's forecast fed back as the next input, ``x(k) =
      F(x(k-1), y_hat(k-1))``, ``y_hat(k) = W_1 x(k) + c_1``
      (:meth:`EchoStateNetwork.generate`); this needs the inputs to be the series (as many
      features as outputs).

    With ``fit(X, y)`` the last target is the next input, so a forecast first feeds it to the
    reservoir. ``partial_fit`` adds a chunk that continues the series to every readout's
    normal equations and solves again: chunks give the readouts of one fit on the whole series
    (to round-off). ``washout`` steps at the start of the series are left out.

    Fitted attributes: ``esn_``, ``readouts_`` (one :class:`RidgeReadout` per horizon),
    ``state_`` (the reservoir state after the last row, ``(units,)``), ``autoregressive_``,
    ``n_steps_seen_``, ``n_features_in_``, ``n_outputs_``.
    """

    def __init__(
        self,
        units: int = 100,
        *,
        horizon: int = 1,
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
        dtype: str | Any = "float64",
        device: str | Any = None,
    ) -> None:
        _store_params(self, locals())

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False  # y=None: the series forecasts itself
        tags.target_tags.multi_output = True
        tags.non_deterministic = False
        return tags

    # --------------------------------------------------------------------------------------------
    def _rows(self, X: Any, y: Any, reset: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """X ``(time, D)`` and y ``(time, O)`` (or None) as tensors."""
        dtype, device = self._dtype_device()
        if isinstance(X, torch.Tensor):
            x = _native_tensor(X, "X", dtype, device, (2,))
            self._set_native_features(x.shape[-1], reset)
            t = None if y is None else _native_tensor(y, "y", dtype, device, (1, 2))
            if t is not None and t.shape[0] != x.shape[0]:
                raise ValueError(f"X has {x.shape[0]} rows, y has {t.shape[0]}")
            y_1d = t is not None and t.dim() == 1
        elif y is None:
            _check_array_like("X", X)
            xa = validate_data(self, X, reset=reset, dtype=np.float64)
            x, t, y_1d = torch.tensor(xa, dtype=dtype, device=device), None, False
        else:
            _check_same_rows(X, y)
            xa, ya = validate_data(self, X, y, reset=reset, dtype=np.float64,
                                   multi_output=True, y_numeric=True)
            x = torch.tensor(xa, dtype=dtype, device=device)
            t = torch.tensor(ya, dtype=dtype, device=device)
            y_1d = ya.ndim == 1
        if t is not None and t.dim() == 1:
            t = t.unsqueeze(-1)
        if reset:
            self._y_1d = y_1d
        return x, t

    def _start(self, x: torch.Tensor, t: torch.Tensor | None) -> None:
        """Build the network and empty readouts for a new series."""
        self._check_readout_params()
        horizon = check_positive_int("horizon", self.horizon)
        dtype, device = self._dtype_device()
        units = check_positive_int("units", self.units)
        self.esn_ = self._build_esn(x.shape[-1], dtype, device)
        self.autoregressive_ = t is None
        self.n_outputs_ = x.shape[-1] if t is None else t.shape[-1]
        self.readouts_ = torch.nn.ModuleList(
            RidgeReadout(units, self.n_outputs_, self.alpha, self.fit_intercept, device=device,
                         dtype=dtype) for _ in range(horizon))
        self.state_ = torch.zeros(units, dtype=dtype, device=device)
        self.n_steps_seen_ = 0
        # states of the last steps whose targets (later rows) have not all arrived yet
        self._tail = torch.zeros(0, units, dtype=dtype, device=device)
        self._last_target = None

    def _learn(self, x: torch.Tensor, t: torch.Tensor | None) -> None:
        """Run the reservoir over the rows ``x`` from ``state_`` and add every (state, target)
        pair whose target is in this chunk to the readout of its horizon."""
        if (t is None) != self.autoregressive_:
            raise ValueError("this ESNForecaster was fitted "
                             + ("without y (autoregressive): call partial_fit(X)"
                                if self.autoregressive_ else "with y: call partial_fit(X, y)"))
        if t is not None and t.shape[-1] != self.n_outputs_:
            raise ValueError(f"y has {t.shape[-1]} outputs, the model {self.n_outputs_}")
        targets = x if t is None else t
        with torch.no_grad():
            s = self.esn_.states(x.unsqueeze(0), self.state_.unsqueeze(0))[0]
        states = torch.cat([self._tail, s])
        m, steps = self._tail.shape[0], x.shape[0]
        first = self.n_steps_seen_ - m  # the step of states[0]
        lag0 = 1 if self.autoregressive_ else 0  # state t -> target row t + k - 1 + lag0
        washout = int(self.washout)
        # horizon k takes the pairs (states[j], targets[j + lag - m]), j in [lo_k, hi_k): those
        # whose target row is in this chunk. The ranges of all horizons share a core, whose
        # X^T X (the costly sum) is formed once, with every horizon's targets side by side.
        lags = [k - 1 + lag0 for k in range(1, len(self.readouts_) + 1)]
        ranges = [(max(m - lag, 0, washout - first), m + steps - lag) for lag in lags]
        core_lo, core_hi = max(lo for lo, _ in ranges), min(hi for _, hi in ranges)
        if core_hi - core_lo > 1 and len(lags) > 1:
            out = self.n_outputs_
            core = RidgeReadout(states.shape[1], out * len(lags), device=states.device,
                                dtype=states.dtype)
            core.partial_fit(states[core_lo:core_hi], torch.cat(
                [targets[core_lo + lag - m:core_hi + lag - m] for lag in lags], dim=1))
            shared = core.statistics()
            for k, readout in enumerate(self.readouts_):
                stats = readout.statistics()
                for key in ("xtx", "sum_x", "count"):
                    stats[key].add_(shared[key])
                stats["xty"].add_(shared["xty"][:, k * out:(k + 1) * out])
                stats["sum_y"].add_(shared["sum_y"][k * out:(k + 1) * out])
        else:
            core_lo = core_hi = m + steps
        for readout, lag, (lo, hi) in zip(self.readouts_, lags, ranges, strict=True):
            for a, b in ((lo, min(hi, core_lo)), (max(lo, core_hi), hi)):  # the edges
                if b > a:
                    readout.partial_fit(states[a:b], targets[a + lag - m:b + lag - m])
        keep = len(self.readouts_) - 1 + lag0
        self._tail = states[states.shape[0] - min(keep, states.shape[0]):].clone()
        self.state_ = s[-1].clone()
        self.n_steps_seen_ += steps
        if t is not None:
            self._last_target = t[-1].clone()
        for readout in self.readouts_:
            if float(readout.statistics()["count"]) > 0:
                readout.solve()

    def fit(self, X: Any, y: Any = None) -> ESNForecaster:
        """Fit every horizon's readout on the series ``X`` (``y=None``) or on ``(X, y)``."""
        x, t = self._rows(X, y, reset=True)
        self._start(x, t)
        self._learn(x, t)
        unfitted = [k for k, ro in enumerate(self.readouts_, 1) if not ro.fitted]
        if unfitted:
            need = int(self.washout) + len(self.readouts_) + int(self.autoregressive_)
            raise ValueError(f"n_samples = {x.shape[0]} rows leave no training pair for horizon "
                             f"{unfitted[0]}: need at least washout + horizon"
                             f"{' + 1' if self.autoregressive_ else ''} = {need} rows")
        return self

    def partial_fit(self, X: Any, y: Any = None) -> ESNForecaster:
        """Continue the series with the rows ``X`` (and ``y``): their states start from
        ``state_``; their pairs are added to the readouts' normal equations, which are solved
        again. The first call starts a new series."""
        first = not hasattr(self, "esn_")
        x, t = self._rows(X, y, reset=first)
        if first:
            self._start(x, t)
        self._learn(x, t)
        return self

    def _readout(self, k: int) -> RidgeReadout:
        readout = self.readouts_[k - 1]
        if not readout.fitted:
            raise ValueError(f"the readout of horizon {k} has no training pair yet (the rows "
                             f"seen so far are within the washout): add data with partial_fit")
        return readout

    def _out(self, out: torch.Tensor) -> np.ndarray:
        out = out.cpu().numpy()
        return out[..., 0] if self._y_1d else out

    def predict(self, X: Any) -> Any:
        """One-step-ahead forecasts for the rows ``X`` that continue the series, from
        ``state_`` (which is left as it is): readout 1 at the state after each row."""
        self._check_fitted()
        native = isinstance(X, torch.Tensor)
        x, _ = self._rows(X, None, reset=False)
        readout = self._readout(1)
        with torch.no_grad():
            s = self.esn_.states(x.unsqueeze(0), self.state_.unsqueeze(0))[0]
            out = readout.predict(s)
        if native:
            return out[..., 0] if self._y_1d else out
        return self._out(out)

    def forecast(self, steps: int | None = None, method: str = "direct") -> np.ndarray:
        """The next ``steps`` (default ``horizon``) values after the series seen, ``(steps,)``
        or ``(steps, outputs)`` (numpy): ``"direct"`` (one readout per horizon) or ``"free"``
        (one-step forecasts fed back as inputs)."""
        self._check_fitted()
        check_choice("method", method, ("direct", "free"))
        steps = check_positive_int("steps", self.horizon if steps is None else steps)
        if method == "direct" and steps > len(self.readouts_):
            raise ValueError(f"a direct forecast of {steps} steps needs horizon >= {steps}, "
                             f"this model has horizon={len(self.readouts_)}")
        if self.esn_.input_size != self.n_outputs_:
            raise ValueError(f"forecast feeds the outputs back as inputs: X must have as many "
                             f"features as y has outputs, got {self.esn_.input_size} and "
                             f"{self.n_outputs_} (use predict with the future inputs)")
        state = self.state_.unsqueeze(0)
        with torch.no_grad():
            if not self.autoregressive_:
                # y(T-1), the last target, is the input that follows the last row of X
                state = self.esn_.step(self._last_target.unsqueeze(0), state)
            first = self._readout(1).predict(state)
            if method == "direct":
                out = torch.cat([first] + [self._readout(k).predict(state)
                                           for k in range(2, steps + 1)])
            elif steps == 1:
                out = first
            else:
                rest, _ = self.esn_.generate(steps - 1, self._readout(1), state=state,
                                             last_output=first)
                out = torch.cat([first, rest[0]])
        return self._out(out)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R^2 of :meth:`predict` (one-step-ahead, continuing from ``state_``) against ``y``."""
        if isinstance(X, torch.Tensor):
            if sample_weight is not None:
                raise ValueError("sample_weight is supported for array-like X only")
            return self._torch_score(X, y)
        return super().score(X, y, sample_weight=sample_weight)
