"""Issue 11, part 5: ``EchoStateNetwork``'s sizes are keywords; the positional ``(units,
input_size, output_size)`` keeps working for one release with a ``DeprecationWarning`` (the
order will become torch's ``(input_size, units)``)."""

from __future__ import annotations

import warnings

import pytest
import torch

from rnnlab.reservoir.esn import EchoStateNetwork


def test_positional_sizes_warn_and_build_the_same_network():
    with pytest.warns(DeprecationWarning, match=r"EchoStateNetwork\(input_size=\.\.\., units="):
        old = EchoStateNetwork(30, 2, 1, feedback_scaling=0.5, seed=4)
    new = EchoStateNetwork(input_size=2, units=30, output_size=1, feedback_scaling=0.5, seed=4)
    assert (old.units, old.input_size, old.output_size) == (30, 2, 1)
    for name, buf in new.state_dict().items():
        assert torch.equal(old.state_dict()[name], buf), name
    with pytest.warns(DeprecationWarning, match=r"\(input_size, units\)"):
        EchoStateNetwork(30, input_size=2)


def test_keyword_sizes_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        esn = EchoStateNetwork(units=10, input_size=3, output_size=2, feedback_scaling=0.1)
    assert (esn.units, esn.input_size, esn.output_size) == (10, 3, 2)


def test_missing_or_doubled_sizes_say_what_to_write():
    with pytest.raises(TypeError, match=r"needs units=.*input_size=\.\.\., units="):
        EchoStateNetwork(input_size=3)
    with pytest.raises(TypeError, match="needs input_size="):
        EchoStateNetwork(units=3)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="multiple values"):
        EchoStateNetwork(10, units=10, input_size=1)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="multiple values"):
        EchoStateNetwork(10, 1, 2, output_size=2)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="multiple values"):
        EchoStateNetwork(10, 1, 2, output_size=0)
    with pytest.raises(TypeError, match="at most 3"):
        EchoStateNetwork(10, 1, 0, 5)


def test_the_library_builds_its_networks_by_keyword():
    from rnnlab.reservoir.deep import DeepEchoStateNetwork
    from rnnlab.reservoir.estimator import ESNRegressor
    from rnnlab.reservoir.tuning import build_reservoir

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        DeepEchoStateNetwork(2, 30, layers=2)
        for model in ("esn", "dlr", "dlrb", "scr"):
            build_reservoir(model, 30, 0.5, seed=0, density=0.2, dlrb_feedback=0.05,
                            input_signs="pi")
        ESNRegressor(units=30).fit(torch.randn(20, 2), torch.randn(20))


def test_the_warning_names_the_callers_line():
    # the warning points at the user's call, also through the deprecated logistic subclass that
    # passes the sizes on (its own DeprecationWarning comes first)
    from rnnlab.reservoir.esn import LogisticEchoStateNetwork

    with pytest.warns(DeprecationWarning, match="positional sizes") as rec:
        EchoStateNetwork(30, 1, seed=4)
    assert [w.filename for w in rec] == [__file__]
    with pytest.warns(DeprecationWarning) as rec:
        old = LogisticEchoStateNetwork(30, 2, seed=4)
    assert [w.filename for w in rec] == [__file__, __file__]
    assert "positional sizes" in str(rec[1].message)
    assert (old.units, old.input_size, old.activation) == (30, 2, "logistic")
