"""The one reservoir step (rnnlab.reservoir._step) and EchoStateNetwork(activation=...).

Reference: the update equation written out in numpy, float64,
x(t) = (1 - a) x(t-1) + a f(g (d(t) + W x(t-1)) + s), f = tanh or the logistic function.
"""

import warnings

import numpy as np
import pytest
import torch

from rnnlab.reservoir import _step
from rnnlab.reservoir.esn import EchoStateNetwork, LogisticEchoStateNetwork

F64 = torch.float64
# One step sums N + 1 products of O(1) terms: a gap of at most (N + 1) eps |.| before f and the
# leak (both 1-Lipschitz here); 1e-12 is far above (N = 30: ~7e-15) and far below any wrong term.
TOL = 1e-12


def numpy_step(d, x, w, g, s, a, activation):
    net = d + x @ w.T
    pre = g * net + s
    y = np.tanh(pre) if activation == "tanh" else 1.0 / (1.0 + np.exp(-pre))
    return (1 - a) * x + a * y


@pytest.mark.parametrize("activation", _step.ACTIVATIONS)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("with_out", [False, True])
@pytest.mark.parametrize("plain", [False, True])
@pytest.mark.parametrize("full_leak", [False, True])
def test_step_matches_the_equation(activation, sparse, with_out, plain, full_leak):
    gen = torch.Generator().manual_seed(0)
    n, batch = 30, 3
    w = torch.randn(n, n, generator=gen, dtype=F64) * (torch.rand(n, n, generator=gen) < 0.3)
    d = torch.randn(batch, n, generator=gen, dtype=F64)
    x = torch.randn(batch, n, generator=gen, dtype=F64).tanh()
    g = torch.ones(n, dtype=F64) if plain else torch.rand(n, generator=gen, dtype=F64) + 0.5
    s = torch.zeros(n, dtype=F64) if plain else torch.randn(n, generator=gen, dtype=F64) * 0.1
    a = torch.ones(n, dtype=F64) if full_leak else torch.rand(n, generator=gen, dtype=F64)
    weight = w.to_sparse_csr() if sparse else w.t()
    out = torch.full((batch, n), float("nan"), dtype=F64) if with_out else None
    got = _step.step(d, x, weight, g, s, a, plain, full_leak, out, activation=activation,
                     sparse=sparse)
    want = numpy_step(d.numpy(), x.numpy(), w.numpy(), g.numpy(), s.numpy(), a.numpy(),
                      activation)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=TOL)
    if with_out:
        np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=TOL)


def test_bad_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        EchoStateNetwork(input_size=1, units=10, activation="relu")
    with pytest.raises(ValueError, match="tanh units only"):
        EchoStateNetwork(input_size=1, units=10, activation="logistic", kernel="numba")


@pytest.mark.parametrize("sparse", [False, True])
def test_logistic_network_runs_the_equation(sparse):
    esn = EchoStateNetwork(input_size=2, units=40, activation="logistic", leak=0.6,
                           bias_scaling=0.2, sparse=sparse, dtype=F64, seed=3)
    assert esn.activation == "logistic" and not esn.uses_numba(1)
    u = torch.randn(2, 25, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    states, _ = esn(u)
    w, w_in, b = esn.W.numpy(), esn.W_in.numpy(), esn.bias.numpy()
    x = np.zeros((2, 40))
    one, zero = np.ones(40), np.zeros(40)
    for t in range(25):
        x = numpy_step(u[:, t].numpy() @ w_in.T + b, x, w, one, zero, esn.leak.numpy(),
                       "logistic")
        # 25 steps of a contraction (logistic slope <= 1/4): the step's bound, not grown
        np.testing.assert_allclose(states[:, t].numpy(), x, rtol=0, atol=TOL)


def test_deprecated_logistic_class_warns_and_builds_the_same_network():
    with pytest.warns(DeprecationWarning, match="activation='logistic'"):
        old = LogisticEchoStateNetwork(input_size=2, units=30, leak=0.5, density=0.2, dtype=F64,
                                       seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = EchoStateNetwork(input_size=2, units=30, leak=0.5, density=0.2,
                               activation="logistic", dtype=F64, seed=5)
    assert isinstance(old, EchoStateNetwork) and old.activation == "logistic"
    for name, buf in new.named_buffers():
        other = dict(old.named_buffers())[name]
        assert (buf is None and other is None) or torch.equal(buf, other), name
    u = torch.randn(1, 20, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    # the same module code on the same tensors: bit for bit
    assert torch.equal(old(u)[0], new(u)[0])
    with pytest.raises(ValueError, match="logistic units"), pytest.warns(DeprecationWarning):
        LogisticEchoStateNetwork(input_size=2, units=30, activation="tanh")


def test_plasticity_reexports_the_deprecated_class():
    from rnnlab.reservoir import plasticity

    assert plasticity.LogisticEchoStateNetwork is LogisticEchoStateNetwork


def test_accumulate_normal_equations_is_a_deprecated_partial_fit():
    from rnnlab.reservoir import accumulate_normal_equations
    from rnnlab.reservoir.readout import RidgeReadout

    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 30, 8, generator=g, dtype=F64)
    y = torch.randn(2, 30, 2, generator=g, dtype=F64)
    old, new = RidgeReadout(8, 2, 1e-3, dtype=F64), RidgeReadout(8, 2, 1e-3, dtype=F64)
    with pytest.warns(DeprecationWarning, match="partial_fit"):
        assert accumulate_normal_equations(old, x, y) is old
    new.partial_fit(x, y)
    # the same call on the same tensors: bit for bit
    for key, value in new.statistics().items():
        assert torch.equal(old.statistics()[key], value), key
    with pytest.raises(TypeError, match="RidgeReadout"), pytest.warns(DeprecationWarning):
        accumulate_normal_equations(object(), x, y)


def test_the_old_kernels_module_keeps_its_names():
    from rnnlab.reservoir import _numba, kernels, streaming

    assert kernels.fit_streaming is streaming.fit_streaming
    assert kernels.predict_streaming is streaming.predict_streaming
    assert kernels.recur_numba is _numba.recur_numba
    assert kernels.set_kernel_threads is _numba.set_kernel_threads
    assert kernels._THREADS is _numba._THREADS  # the same switch, not a copy
    for name in ("KERNELS", "NUMBA_DTYPES", "CSRArrays", "csr_arrays", "kernel_threads",
                 "numba_available", "numba_is_faster", "usable_cores", "CUDA_CHUNK_BYTES",
                 "DEFAULT_CHUNK_SAMPLES", "OVERLAP_MIN_BATCH", "PARALLEL_MIN_WORK"):
        assert hasattr(kernels, name), name


@pytest.mark.parametrize("activation", _step.ACTIVATIONS)
@pytest.mark.parametrize("sparse", [False, True])
def test_gain_and_shift_get_their_gradient_at_one_and_zero(activation, sparse):
    # At g = 1, s = 0 the loop may skip the multiply-add, but not when their gradient is
    # wanted (before the fix the states recorded no graph at all: backward raised). Reference:
    # autograd through the loop written out with g and s explicit; the two differ by the
    # order of the N + D + 1 sums per step (round-off ~1e-15 over 6 steps), far below 1e-10.
    esn = EchoStateNetwork(input_size=1, units=15, activation=activation, leak=0.5, kernel="torch",
                           sparse=sparse, dtype=F64, seed=1)
    u = torch.randn(2, 6, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    g = esn.a.clone().requires_grad_(True)
    s = esn.b.clone().requires_grad_(True)
    esn.a, esn.b = g, s
    states, _ = esn(u)
    states.square().sum().backward()
    assert g.grad is not None and s.grad is not None
    g2 = g.detach().clone().requires_grad_(True)
    s2 = s.detach().clone().requires_grad_(True)
    f = torch.tanh if activation == "tanh" else torch.sigmoid
    x = torch.zeros(2, 15, dtype=F64)
    xs = []
    for t in range(6):
        net = u[:, t] @ esn.W_in.t() + esn.bias + x @ esn.W.t()
        x = torch.lerp(x, f(g2 * net + s2), esn.leak)
        xs.append(x)
    torch.stack(xs, 1).square().sum().backward()
    torch.testing.assert_close(g.grad, g2.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(s.grad, s2.grad, rtol=0, atol=1e-10)
