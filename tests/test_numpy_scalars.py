"""numpy integers where an int is asked for (issue 10, item 7).

scikit-learn's grids and ``np.arange`` hand numpy integers to constructors and methods; they must
be taken as the Python ints they equal (and give the same model), while bools and non-integral
numbers are still refused with a message that names the argument.
"""

import numpy as np
import pytest
import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_int, check_positive_int, check_washout
from rnnlab.reservoir import (
    DeepEchoStateNetwork,
    EchoStateNetwork,
    ESNRegressor,
    RidgeReadout,
    kernels,
)
from rnnlab.reservoir.topology import dense_uniform_input, simple_cycle, sparse_random
from rnnlab.tasks.narma import narma

F64 = torch.float64


@pytest.mark.parametrize("kind", [np.int8, np.int32, np.int64, np.uint16])
def test_check_int_takes_numpy_integers(kind):
    assert check_int("n", kind(7)) == 7
    assert type(check_int("n", kind(7))) is int
    assert check_positive_int("n", kind(3)) == 3
    assert check_washout(kind(2), 5) == 2


@pytest.mark.parametrize("bad", [True, np.bool_(True), 3.0, np.float64(3.0), "3", None])
def test_check_int_refuses_what_is_not_an_integer(bad):
    with pytest.raises(TypeError, match="n must be an int"):
        check_int("n", bad)


def test_check_int_bounds_and_washout_messages():
    with pytest.raises(ValueError, match="n must be an int >= 0, got -1"):
        check_int("n", np.int64(-1), low=0)
    with pytest.raises(ValueError, match="n must be an int <= 4, got 5"):
        check_int("n", 5, high=4)
    with pytest.raises(ValueError, match=r"washout \(5\) must be smaller than the number of time "
                                         r"steps \(5\)"):
        check_washout(np.int64(5), 5)


def test_seed_as_numpy_integer_gives_the_same_draws():
    a = torch.rand(5, generator=make_generator(np.int64(11)))
    b = torch.rand(5, generator=make_generator(11))
    assert torch.equal(a, b)  # the same generator state, the same draws: exact


def test_echo_state_network_from_numpy_integers_equals_the_int_one():
    u = torch.randn(2, 40, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    ref = EchoStateNetwork(input_size=1, units=50, seed=3, dtype=F64)
    esn = EchoStateNetwork(input_size=np.int32(1), units=np.int64(50), seed=np.int64(3), dtype=F64)
    # the same seed and sizes build the same weights by the same code: exact
    assert torch.equal(esn.W, ref.W) and torch.equal(esn.W_in, ref.W_in)
    states, _ = esn(u, washout=np.int64(10))
    expected, _ = ref(u, washout=10)
    assert states.shape == (2, 30, 50)
    assert torch.equal(states, expected)
    readout = RidgeReadout(50, 1, 1e-6, dtype=F64)
    kernels.fit_streaming(esn, readout, u, u, washout=np.int64(10))


def test_deep_esn_and_builders_from_numpy_integers():
    deep = DeepEchoStateNetwork(np.int64(1), np.int64(20), np.int64(2), seed=np.int64(1),
                                dtype=F64)
    assert len(deep.layers) == 2
    u = torch.randn(1, 30, 1, dtype=F64, generator=torch.Generator().manual_seed(1))
    states, _ = deep(u, washout=np.int64(5))
    assert states.shape[1] == 25
    assert sparse_random(np.int64(10), density=0.5, seed=np.int64(2)).shape == (10, 10)
    assert simple_cycle(np.int64(6), r=0.5).shape == (6, 6)
    assert dense_uniform_input(np.int64(6), np.int64(2), seed=np.int64(0)).shape == (6, 2)
    assert narma(np.int64(50), washout=np.int64(10), seed=np.int64(0))[0].shape[-2] == 50


def test_regressor_over_a_numpy_grid_of_sizes():
    # what GridSearchCV(param_grid={"units": np.arange(...)}) does: set_params, then fit
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(300, 1))
    y = np.roll(x, 2, axis=0)
    for units in np.arange(20, 61, 20):
        model = ESNRegressor(seed=0).set_params(units=units, washout=np.int64(20))
        ref = ESNRegressor(units=int(units), washout=20, seed=0)
        got = model.fit(x, y).predict(x)
        # the same model built from equal ints by the same code path: exact
        np.testing.assert_array_equal(got, ref.fit(x, y).predict(x))
        assert model.score(x, y) > 0.5  # a 2-step delay is easy for 20+ units


def test_bad_sizes_still_refused():
    with pytest.raises(TypeError, match="units must be an int"):
        EchoStateNetwork(input_size=1, units=np.float64(50))
    with pytest.raises(TypeError, match="units must be an int"):
        EchoStateNetwork(input_size=1, units=True)
    with pytest.raises(TypeError, match="washout must be an int"):
        EchoStateNetwork(input_size=1, units=10)(torch.zeros(1, 5, 1), washout=2.0)
