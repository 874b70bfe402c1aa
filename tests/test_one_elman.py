"""One Elman (issue 11): ``ElmanRNN`` is the network over ``ElmanCell`` with the course's names.

References: the parameters' identity (the same objects under two names), the documented draw
order of the weights (U, W, b, V, c from torch's global generator, as before the redesign), the
plain Python loop over the cell's equation, and the definitions of the initializers.
"""

import math

import pytest
import torch

from rnnlab import ElmanRNN
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell, StackedCell
from rnnlab.init import initialize, orthogonal_, pretrain_sequence_autoencoder
from rnnlab.models import RecurrentNetwork
from tests.reference import gamma

F64 = torch.float64
COURSE = {"U": "cell.weight_ih", "W": "cell.weight_hh", "b": "cell.bias_ih",
          "V": "readout.weight", "c": "readout.bias"}


def test_elman_rnn_is_the_network_over_the_elman_cell():
    m = ElmanRNN(3, 5, 2, dtype=F64)
    assert isinstance(m, RecurrentNetwork)
    assert isinstance(m.cell, ElmanCell)
    for short, path in COURSE.items():
        assert getattr(m, short) is m.get_parameter(path), short
    assert m.cell.bias_hh is None  # the course's Elman has one bias b
    assert [n for n, _ in m.named_parameters()] == list(COURSE)
    assert len(list(m.parameters())) == 5
    assert m.readout_name == "tanh"


def test_same_seed_gives_the_weights_and_the_random_stream_of_before():
    # before the redesign: U, W, b, V, c drawn in this order, uniform(+-1/sqrt(N)), from the
    # global generator, and nothing else drawn
    n, d, o = 5, 3, 2
    bound = 1.0 / math.sqrt(n)
    torch.manual_seed(7)
    expected = [torch.empty(s, dtype=F64).uniform_(-bound, bound)
                for s in ((n, d), (n, n), (n,), (o, n), (o,))]
    after = torch.rand(4)
    torch.manual_seed(7)
    m = ElmanRNN(d, n, o, dtype=F64)
    assert torch.equal(torch.rand(4), after)
    for p, e in zip(m.parameters(), expected, strict=True):
        assert torch.equal(p, e)


def _old_checkpoint(m: ElmanRNN) -> dict:
    return {k: torch.randn_like(getattr(m, k)) for k in COURSE}


def test_state_dict_has_the_course_keys_and_old_checkpoints_load():
    m = ElmanRNN(3, 4, 2, dtype=F64)
    assert list(m.state_dict()) == list(COURSE)
    old = _old_checkpoint(m)
    m.load_state_dict(old)  # strict
    for short, path in COURSE.items():
        assert torch.equal(m.get_parameter(path), old[short])
        assert getattr(m, short) is m.get_parameter(path)
    # the cell's spelling loads too (a dict built from the cell's and readout's names)
    m.load_state_dict({path: old[short] * 2 for short, path in COURSE.items()})
    assert torch.equal(m.W, old["W"] * 2)


def test_assign_load_and_overwrite_on_conversion_keep_the_names_tied():
    m = ElmanRNN(3, 4, 2, dtype=F64)
    m.load_state_dict(_old_checkpoint(m), assign=True)
    assert all(getattr(m, s) is m.get_parameter(p) for s, p in COURSE.items())
    flag = torch.__future__.get_overwrite_module_params_on_conversion()
    try:
        torch.__future__.set_overwrite_module_params_on_conversion(True)
        m = m.to(torch.float32)
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(flag)
    assert all(getattr(m, s) is m.get_parameter(p) for s, p in COURSE.items())
    assert m.W.dtype == torch.float32 and len(list(m.parameters())) == 5


@pytest.mark.parametrize("impl", ["auto", "fused", "loop"])
def test_forward_is_the_course_equation_with_lengths(impl):
    torch.manual_seed(0)
    m = ElmanRNN(2, 4, 3, readout="sigmoid", impl=impl, dtype=F64)
    x = torch.randn(3, 6, 2, dtype=F64)
    lengths = [6, 2, 4]
    out, h_last = m(x, lengths=lengths)
    for k, steps in enumerate(lengths):
        h = torch.zeros(4, dtype=F64)
        for t in range(steps):
            h = torch.tanh(m.U @ x[k, t] + m.W @ h + m.b)
            o = torch.sigmoid(m.V @ h + m.c)
            # a few dot products of length <= N + D per step: gamma of that, times T, is ~1e-14
            assert torch.allclose(out[k, t], o, atol=50 * gamma(6 * 6), rtol=0), (k, t)
        assert torch.allclose(h_last[k], h, atol=50 * gamma(6 * 6), rtol=0)
        assert torch.equal(out[k, steps:], torch.zeros_like(out[k, steps:]))


def test_old_h0_keyword_and_messages_still_work():
    m = ElmanRNN(2, 3, 1, dtype=F64)
    x = torch.randn(2, 4, 2, dtype=F64)
    h0 = torch.randn(2, 3, dtype=F64)
    a, _ = m(x, h0=h0)
    b, _ = m(x, h0)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="h0 has batch size 1"):
        m(x, torch.zeros(1, 3, dtype=F64))
    states = m.hidden_states(x, h0)
    assert torch.allclose(m.output(states), a, atol=1e-14, rtol=0)


# ------------------------------------------------------------------------------------------
# init on any network of the cell protocol
def test_initialize_orthogonal_on_networks_over_any_cell():
    elman = RecurrentNetwork(ElmanCell(2, 6, dtype=F64), 1)
    initialize(elman, "orthogonal", seed=0)
    w = elman.cell.weight_hh
    eye = torch.eye(6, dtype=F64)
    assert torch.allclose(w.T @ w, eye, atol=1e-12)
    assert not elman.cell.bias_ih.any() and not elman.cell.bias_hh.any()
    lstm = RecurrentNetwork(LSTMCell(2, 5, peepholes=False, dtype=F64), 1)
    initialize(lstm, "orthogonal", seed=0, gain=2.0)
    w = lstm.cell.weight_hh  # (4N, N): orthonormal columns, times the gain
    assert torch.allclose(w.T @ w, 4.0 * torch.eye(5, dtype=F64), atol=1e-12)
    with pytest.raises(ValueError, match="square"):
        initialize(lstm, "identity")
    # the same seed gives the same model; the readout keeps the default draw
    again = RecurrentNetwork(LSTMCell(2, 5, peepholes=False, dtype=F64), 1)
    initialize(again, "orthogonal", seed=0, gain=2.0)
    for p, q in zip(lstm.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(TypeError, match="one per layer"):
        orthogonal_(RecurrentNetwork(StackedCell([ElmanCell(2, 3), ElmanCell(3, 3)]), 1))


def test_initialize_on_elman_rnn_is_unchanged():
    a, b = ElmanRNN(2, 6, 1, dtype=F64), ElmanRNN(2, 6, 1, dtype=F64)
    initialize(a, "sparse_spectral", seed=3, k=3)
    gen = torch.Generator().manual_seed(3)
    b.reset_parameters(gen)
    from rnnlab.init import sparse_spectral_
    sparse_spectral_(b.W, 3, generator=gen)
    with torch.no_grad():
        b.b.zero_()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_pretraining_works_on_a_gru_network():
    torch.manual_seed(0)
    net = RecurrentNetwork(GRUCell(2, 8, dtype=F64), 1)
    t = torch.arange(6, dtype=F64)
    x = torch.sin(torch.rand(32, 1, 2, dtype=F64) * t[None, :, None] + torch.rand(32, 1, 2,
                                                                                  dtype=F64))
    readout = [p.detach().clone() for p in net.readout.parameters()]
    report = pretrain_sequence_autoencoder(net, x, epochs=40, lr=2e-2,
                                           generator=torch.Generator().manual_seed(1))
    assert report.final_error < 0.5 * report.initial_error
    for p, q in zip(net.readout.parameters(), readout, strict=True):
        assert torch.equal(p, q)
