"""The per-call shortcuts of the ``rnnlab.nn`` layers' forward path (docs/speed.md) keep the
results and the errors: the finiteness pre-scan (a sum) decides exactly as the full scan
(``raise_if_not_finite``), and :func:`run_checked` (what the layers call, past the checks they
made themselves) returns what :func:`run_cell` returns."""

from __future__ import annotations

import pytest
import torch

from rnnlab import nn as rnn
from rnnlab._validation import raise_if_not_finite
from rnnlab.cells import GRUCell, LSTMCell, run_cell
from rnnlab.cells.base import run_checked


def _message(name: str, x: torch.Tensor) -> str:
    """The full scan's error for ``x`` (the reference the layer's message must equal)."""
    with pytest.raises(ValueError) as info:
        raise_if_not_finite(name, x)
    return str(info.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_entries_whose_sum_overflows_pass(dtype: torch.dtype) -> None:
    # every entry finite, their sum +inf: the pre-scan fails and the full scan must let it pass
    big = torch.finfo(dtype).max / 2
    layer = rnn.LSTM(3, 4, batch_first=True, peepholes=True, dtype=dtype)
    x = torch.full((2, 5, 3), big, dtype=dtype)
    assert not torch.isfinite(x.sum())  # the case this test is about
    h0 = torch.full((1, 2, 4), big, dtype=dtype)
    out, (h_n, _) = layer(x, (h0, torch.zeros(1, 2, 4, dtype=dtype)))
    assert out.shape == (2, 5, 4) and h_n.shape == (1, 2, 4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("make", [
    lambda: rnn.LSTM(3, 4, batch_first=True, peepholes=True),
    lambda: rnn.GRU(3, 4, batch_first=True, form="cho"),
])
def test_non_finite_input_and_state_raise_as_the_full_scan(bad: float, make) -> None:
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(2, 5, 3)
    x[1, 2, 0] = bad
    with pytest.raises(ValueError) as info:
        layer(x)
    assert str(info.value) == _message("input", x)
    # one bad entry among large finite ones (the sum overflows to inf before the NaN/-inf
    # arrives, or inf + -inf gives NaN): still exactly the full scan's verdict and counts
    x = torch.full((2, 5, 3), torch.finfo(torch.float32).max)
    x[0, 4, 2] = bad
    with pytest.raises(ValueError) as info:
        layer(x)
    assert str(info.value) == _message("input", x)
    h0 = torch.zeros(1, 2, 4)
    h0[0, 1, 3] = bad
    hx = (h0, torch.zeros(1, 2, 4)) if isinstance(layer, rnn.LSTM) else h0
    with pytest.raises(ValueError) as info:
        layer(torch.randn(2, 5, 3), hx)
    assert str(info.value) == _message("h_0", h0)


@pytest.mark.parametrize("cell_cls", [LSTMCell, GRUCell])
@pytest.mark.parametrize("lengths", [None, [5, 3, 1], [5, 5, 5]])
def test_run_checked_equals_run_cell(cell_cls, lengths) -> None:
    torch.manual_seed(1)
    cell = cell_cls(3, 4, dtype=torch.float64)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    state0 = cell.initial_state(3)
    ref = run_cell(cell, x, state0, lengths=lengths, return_states=True)
    lens = None if lengths is None else torch.tensor(lengths)
    got = run_checked(cell, x, state0, lens, return_states=True)
    # the same code path on the same data after the checks: equal to float64 rounding at most
    for a, b in zip(torch.utils._pytree.tree_leaves(ref), torch.utils._pytree.tree_leaves(got),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
