"""The old home of :class:`ESNRegressor`, kept importable: the scikit-learn estimators live in
:mod:`rnnlab.reservoir.estimators` (``ESNRegressor``, ``ESNClassifier``, ``ESNForecaster``)."""

from rnnlab.reservoir.estimators import ESNRegressor

__all__ = ["ESNRegressor"]
