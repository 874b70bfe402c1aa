"""scikit-learn's own estimator checks on ESNRegressor, ESNClassifier and ESNForecaster, with
only the checks that cannot apply to a sequence model declared (strictly), and their tags."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from rnnlab.reservoir.estimator import ESNRegressor as OldPathRegressor
from rnnlab.reservoir.estimators import (
    SEQUENCE_CHECKS,
    ESNClassifier,
    ESNForecaster,
    ESNRegressor,
    expected_failed_checks,
)

UNITS = 20  # small: the checks fit each estimator many times


# scikit-learn's estimator checks: only the two sequence-order checks are declared (and strict:
# a declared check that passes fails the run, so the declaration cannot go stale).
@parametrize_with_checks(
    [ESNRegressor(units=UNITS), ESNClassifier(units=UNITS),
     ESNForecaster(units=UNITS, horizon=3)],
    expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_declared_checks_and_tags():
    assert expected_failed_checks(ESNRegressor()) == SEQUENCE_CHECKS
    assert expected_failed_checks(ESNForecaster()) == SEQUENCE_CHECKS
    assert expected_failed_checks(ESNClassifier()) == {}
    assert all(len(reason) > 40 for reason in SEQUENCE_CHECKS.values())
    reg, clf, fc = (e.__sklearn_tags__() for e in (ESNRegressor(), ESNClassifier(),
                                                    ESNForecaster()))
    assert reg.estimator_type == "regressor" and clf.estimator_type == "classifier"
    assert reg.requires_fit and not reg.non_deterministic and reg.target_tags.multi_output
    assert reg.input_tags.three_d_array and clf.input_tags.three_d_array
    assert not reg.input_tags.sparse and not reg.input_tags.allow_nan
    assert fc.target_tags.required is False  # fit(series) forecasts the series itself
    assert reg.target_tags.required and clf.target_tags.required
    assert OldPathRegressor is ESNRegressor
