"""W= / W_in= (and topology= / input_weights=) take a matrix or a builder (as ReservoirPy's
initializers). References: the matrices the builders return, drawn independently from a
generator in the same state."""

import numpy as np
import pytest
import torch

from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.topology import sparse_random, weight_from

F64 = torch.float64


def test_w_matrix_is_the_user_topology():
    w = 0.1 * torch.randn(12, 12, generator=torch.Generator().manual_seed(0), dtype=F64)
    w_in = torch.ones(12, 2, dtype=F64)
    a = EchoStateNetwork(input_size=2, units=12, W=w, W_in=w_in, dtype=F64)
    b = EchoStateNetwork(input_size=2, units=12, topology=w, input_weights=w_in, dtype=F64)
    assert torch.equal(a.W, w) and torch.equal(a.W_in, w_in)
    for name, buf in a.named_buffers():
        other = dict(b.named_buffers())[name]
        assert (buf is None and other is None) or torch.equal(buf, other), name
    assert a.topology == "user" and a.input_weights == "user"


def test_builders_draw_from_the_networks_generator_in_order():
    def w_builder(n, m, generator):
        return sparse_random(n, 0.2, generator=generator, dtype=F64)

    def w_in_builder(n, d, generator):
        return 2 * torch.rand(n, d, generator=generator, dtype=F64) - 1

    esn = EchoStateNetwork(input_size=3, units=20, W=w_builder, W_in=w_in_builder,
                           bias_scaling=0.5, seed=7, dtype=F64)
    gen = torch.Generator().manual_seed(7)
    w = sparse_random(20, 0.2, generator=gen, dtype=F64)
    w_in = 2 * torch.rand(20, 3, generator=gen, dtype=F64) - 1
    bias = 0.5 * (2 * torch.rand(20, generator=gen, dtype=F64) - 1)
    # the same draws from the same generator state, unscaled (no spectral_radius): bit for bit
    assert torch.equal(esn.W, w) and torch.equal(esn.W_in, w_in) and torch.equal(esn.bias, bias)


def test_builder_without_generator_and_with_scaling():
    esn = EchoStateNetwork(input_size=1, units=10, W=lambda n, m: np.eye(n, m), W_in=lambda n,
                           d: np.ones((n, d)), spectral_radius=0.5, dtype=F64)
    # rho(I) = 1: scaled to 0.5, within the scaling's round-off
    torch.testing.assert_close(esn.W, 0.5 * torch.eye(10, dtype=F64), rtol=0, atol=1e-12)
    assert torch.equal(esn.W_in, torch.ones(10, 1, dtype=F64))


def test_bad_builders_and_spellings_are_named():
    with pytest.raises(ValueError, match=r"built by <lambda>.*shape \(10, 10\)"):
        EchoStateNetwork(input_size=1, units=10, W=lambda n, m: torch.zeros(n, m + 1))
    with pytest.raises(ValueError, match="non-finite"):
        EchoStateNetwork(input_size=1, units=10, W_in=lambda n, d: torch.full((n, d), float("nan")))
    with pytest.raises(TypeError, match="builder returning one"):
        EchoStateNetwork(input_size=1, units=10, W=lambda n, m: [[0.0] * m] * n)
    with pytest.raises(ValueError, match="not both"):
        EchoStateNetwork(input_size=1, units=10, W=torch.eye(10), topology="scr")
    with pytest.raises(ValueError, match="not both"):
        EchoStateNetwork(input_size=1, units=10, W_in=torch.ones(10, 1), input_weights="sign_pi")


def test_weight_from_accepts_kwargs_builders():
    seen = {}

    def builder(*shape, **kwargs):
        seen.update(kwargs)
        return torch.zeros(*shape)

    gen = torch.Generator()
    assert weight_from(builder, (3, 4), "W_in", gen).shape == (3, 4)
    assert seen["generator"] is gen
