import pytest
import torch

from rnnlab import ElmanRNN
from tests.reference import elman_forward


def test_parameters_are_the_course_five():
    m = ElmanRNN(3, 5, 2)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {"U": (5, 3), "W": (5, 5), "b": (5,), "V": (2, 5), "c": (2,)}


@pytest.mark.parametrize("readout", ["tanh", "identity", "sigmoid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_equations(readout, dtype):
    m = ElmanRNN(3, 6, 2, readout=readout, dtype=dtype)
    x = torch.randn(4, 9, 3, dtype=dtype)
    out, h_last = m(x)
    ref_o, ref_h = elman_forward(m.U, m.W, m.b, m.V, m.c, x, readout)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert out.shape == (4, 9, 2) and h_last.shape == (4, 6)
    assert torch.allclose(out, ref_o, atol=tol)
    assert torch.allclose(h_last, ref_h[:, -1], atol=tol)
    assert out.dtype == dtype


def test_initial_state_is_used():
    m = ElmanRNN(2, 4, 1, dtype=torch.float64)
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    h0 = torch.randn(3, 4, dtype=torch.float64)
    out, _ = m(x, h0)
    ref_o, _ = elman_forward(m.U, m.W, m.b, m.V, m.c, x, "tanh", h0=h0)
    assert torch.allclose(out, ref_o, atol=1e-12)


def test_reset_parameters_seeded_and_bounded():
    a = ElmanRNN(2, 8, 1)
    b = ElmanRNN(2, 8, 1)
    a.reset_parameters(torch.Generator().manual_seed(3))
    b.reset_parameters(torch.Generator().manual_seed(3))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert pa.abs().max() <= 8**-0.5


def test_dtype_and_device_constructor_and_to():
    m = ElmanRNN(2, 3, 1, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())
    m = m.to(torch.float32)
    out, _ = m(torch.randn(1, 2, 2))
    assert out.dtype == torch.float32


def test_repr_names_sizes_and_parameters():
    text = repr(ElmanRNN(3, 5, 2, readout="identity"))
    for piece in ("input_size=3", "hidden_size=5", "output_size=2", "'identity'", "W(5, 5)"):
        assert piece in text


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0, 3, 1), {}, ValueError, "input_size"),
        ((2, -1, 1), {}, ValueError, "hidden_size"),
        ((2, 3, 1.5), {}, TypeError, "output_size"),
        ((2, 3, 1), {"readout": "relu"}, ValueError, "readout"),
    ],
)
def test_bad_constructor_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        ElmanRNN(*args, **kwargs)


def test_bad_inputs_are_named():
    m = ElmanRNN(2, 3, 1)
    with pytest.raises(ValueError, match="3 dimensions"):
        m(torch.randn(5, 2))
    with pytest.raises(ValueError, match="expected 2"):
        m(torch.randn(1, 5, 4))
    with pytest.raises(TypeError, match="dtype"):
        m(torch.randn(1, 5, 2, dtype=torch.float64))
    x = torch.randn(1, 5, 2)
    x[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="1 NaN"):
        m(x)
    x[0, 3, 1] = float("inf")
    with pytest.raises(ValueError, match="1 inf"):
        m(x)
    with pytest.raises(ValueError, match="batch size"):
        m(torch.randn(2, 5, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="empty"):
        m(torch.randn(1, 0, 2))
