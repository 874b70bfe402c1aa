"""The fast whole-sequence paths of the cells (issue 12, part 5) equal the plain step loop.

* the Cho-form GRU's hand-written sequence (:class:`rnnlab.cells.gru._ChoGRUSequence`): forward,
  gradients, padding, double backward, torch.func, against the loop under autograd and gradcheck;
* :class:`rnnlab.cells.base.StepMatmul` (oneDNN's prepacked weights on the CPU in float32)
  against ``torch.mm``, and the hand-written LSTM/GRU in float32 at a size that uses it against
  a float64 loop.

Tolerances: the paths compute the same sums in another order (biases folded before the time
loop, oneDNN's blocked products), so each result differs from the reference by a rounding error
of at most about ``n * u * scale`` (Higham's gamma_n bound for a sum of n terms, u the unit
roundoff), where n counts the terms that meet in one output: a pre-activation sums D + H + 2
terms, a step adds a few more, T steps chain them, and a weight gradient sums over B * T
steps. The tests use ``C * n * u * scale`` with a constant C of a few units and ``scale`` the
reference's largest magnitude (or 1); a wrong formula is off by O(scale), far above it.
"""

from __future__ import annotations

import pytest
import torch

from rnnlab.cells import GRUCell, LSTMCell, twice_differentiable
from rnnlab.cells.base import PACKED_MIN_NUMEL, StepMatmul, run_cell
from rnnlab.cells.gru import _ChoGRUSequence

F64 = torch.float64
B, T, D, H = 3, 6, 4, 5


def _tol(ref: torch.Tensor, terms: int, dtype: torch.dtype, c: float = 8.0) -> float:
    """C * n * u * scale (see the module docstring)."""
    return c * terms * torch.finfo(dtype).eps * max(1.0, ref.abs().max().item())


def _run_and_grads(cell, x, h0, impl, lengths=None, seed=1):
    """Outputs, final state and the gradients of a fixed random projection of both with respect
    to x, h0 and every parameter."""
    y, final, states = run_cell(cell, x, h0, lengths=lengths, impl=impl, return_states=True)
    gen = torch.Generator().manual_seed(seed)
    # drawn by shape (not randn_like, which would follow each impl's strides)
    w_y = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    w_h = torch.randn(final.shape, generator=gen, dtype=y.dtype)
    loss = (y * w_y).sum() + (final * w_h).sum()
    grads = torch.autograd.grad(loss, [x, h0, *cell.parameters()])
    return y, final, states, grads


def _gru(hidden=H, dtype=F64, bias=True, seed=0):
    return GRUCell(D, hidden, bias=bias, generator=torch.Generator().manual_seed(seed),
                   dtype=dtype)


def _inputs(hidden=H, dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=gen, dtype=dtype).requires_grad_()
    h0 = (0.5 * torch.randn(B, hidden, generator=gen, dtype=dtype)).requires_grad_()
    return x, h0


def test_cho_gru_offers_the_handwritten_sequence_and_torch_form_does_not():
    assert _gru().available_impls()[0] == "handwritten"
    assert "handwritten" not in GRUCell(D, H, form="torch").available_impls()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lengths", [None, [6, 2, 4], [1, 6, 3]])
def test_cho_gru_handwritten_equals_loop(bias, lengths):
    cell = _gru(bias=bias)
    x, h0 = _inputs()
    lens = None if lengths is None else torch.tensor(lengths)
    ref = _run_and_grads(cell, x, h0, "loop", lens)
    got = _run_and_grads(cell, x, h0, "handwritten", lens)
    terms = T * (D + H + 6)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=_tol(ref[0], terms, F64))
    torch.testing.assert_close(got[1], ref[1], rtol=0, atol=_tol(ref[1], terms, F64))
    torch.testing.assert_close(got[2], ref[2], rtol=0, atol=_tol(ref[2], terms, F64))
    for g, r in zip(got[3], ref[3], strict=True):
        torch.testing.assert_close(g, r, rtol=0, atol=_tol(r, B * terms, F64))


@pytest.mark.parametrize("last", [None, [3, 1]])
def test_cho_gru_handwritten_gradcheck(last):
    # every input of the sequence function perturbed, on tiny sizes (finite differences)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 2, generator=gen, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    weights = [(0.6 * torch.randn(*shape, generator=gen, dtype=F64)).requires_grad_()
               for shape in ((9, 2), (9, 3), (9,), (9,))]
    idx = None if last is None else torch.tensor(last)
    assert torch.autograd.gradcheck(
        lambda *args: _ChoGRUSequence.apply(*args, idx), (x, h0, *weights))
    assert torch.autograd.gradgradcheck(
        lambda *args: _ChoGRUSequence.apply(*args, idx), (x, h0, *weights))


def test_cho_gru_double_backward_equals_loop():
    # create_graph through the hand-written sequence recomputes it with the step under autograd
    cell = _gru()
    x, h0 = _inputs()
    v = torch.randn(B, T, H, generator=torch.Generator().manual_seed(5), dtype=F64)
    results = []
    for impl in ("handwritten", "loop"):
        y, _, _ = run_cell(cell, x, h0, impl=impl)
        (gx,) = torch.autograd.grad((y * v).sum(), [x], create_graph=True)
        second = torch.autograd.grad((gx ** 2).sum(), [x, cell.weight_hh])
        results.append((gx, *second))
    for got, ref in zip(*results, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=_tol(ref, B * T * (D + H + 6), F64))


def test_cho_gru_torch_func_and_twice_differentiable_run_the_loop():
    cell = _gru()
    x, h0 = _inputs()
    x = x.detach()

    def last(inp):
        return run_cell(cell, inp, h0.detach())[1].sum()

    jac = torch.func.grad(last)(x)  # a transform: impl="auto" must pick the loop
    ref = torch.autograd.grad(run_cell(cell, x.requires_grad_(), h0, impl="loop")[1].sum(), x)[0]
    torch.testing.assert_close(jac, ref, rtol=0, atol=_tol(ref, B * T * (D + H + 6), F64))
    with twice_differentiable():
        y, _, _ = run_cell(cell, x, h0)
    assert "ChoGRU" not in type(y.grad_fn).__name__
    y, _, _ = run_cell(cell, x, h0)
    assert type(y.grad_fn).__name__ == "_ChoGRUSequenceBackward"


def test_handwritten_backward_leaves_the_incoming_gradient_alone():
    cell = _gru()
    x, h0 = _inputs()
    y, final, _ = run_cell(cell, x, h0, impl="handwritten")
    g_y = torch.ones(T, B, H, dtype=F64).transpose(0, 1)  # time-major memory, like the output
    g_h = torch.ones(B, H, dtype=F64)
    torch.autograd.backward([y, final], [g_y, g_h])
    assert bool((g_y == 1).all()) and bool((g_h == 1).all())


def test_gru_bad_lengths_still_refused():
    cell = _gru()
    x, h0 = _inputs()
    with pytest.raises(ValueError, match="length"):
        run_cell(cell, x, h0, lengths=[0, 2, 3], impl="handwritten")


# ---------------------------------------------------------------------------------------------
def _has_packed() -> bool:
    try:
        return (torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))
    except (AttributeError, RuntimeError):
        return False


@pytest.mark.skipif(not _has_packed(), reason="this torch has no oneDNN prepacked linear")
def test_step_matmul_packed_equals_mm():
    gen = torch.Generator().manual_seed(6)
    n = 512
    assert n * n >= PACKED_MIN_NUMEL
    w = torch.randn(n, n, generator=gen)
    a = torch.randn(7, n, generator=gen)
    c = torch.randn(7, n, generator=gen)
    sm = StepMatmul(w, 7)
    assert sm.packed is not None  # the path this test is about is taken
    ref = (c.double() + a.double() @ w.double().t())
    bound = n * torch.finfo(torch.float32).eps * (c.abs().double() + a.abs().double()
                                                  @ w.abs().double().t())
    assert bool(((sm.add(c, a).double() - ref).abs() <= 2 * bound).all())
    c2 = c.clone()
    assert sm.add_(c2, a) is c2
    assert bool(((c2.double() - ref).abs() <= 2 * bound).all())
    # below the width, and in float64, the plain product
    assert StepMatmul(w[: PACKED_MIN_NUMEL // n - 1], 7).packed is None
    assert StepMatmul(w.double(), 7).packed is None


@pytest.mark.parametrize(("make", "hidden"), [
    (lambda h: LSTMCell(D, h, generator=torch.Generator().manual_seed(7)), 256),
    (lambda h: LSTMCell(D, h, variant="CIFG", generator=torch.Generator().manual_seed(8)), 256),
    (lambda h: GRUCell(D, h, generator=torch.Generator().manual_seed(9)), 512),
], ids=["lstm-vanilla", "lstm-cifg", "gru-cho"])
def test_float32_handwritten_at_packed_size_equals_float64_loop(make, hidden):
    cell = make(hidden)
    if _has_packed():  # the sizes are chosen so that the recurrent products are prepacked
        rows = cell.weight_hh.shape[0] * 2 // 3 if isinstance(cell, GRUCell) else None
        assert StepMatmul(cell.weight_hh[:rows], B).packed is not None
    ref_cell = make(hidden).double()
    ref_cell.load_state_dict({k: v.double() for k, v in cell.state_dict().items()})
    x, _ = _inputs(hidden, torch.float32, seed=10)
    x = x.detach().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    lengths = torch.tensor([6, 3, 5])
    y, _, _ = run_cell(cell, x, lengths=lengths, impl="handwritten")
    y64, _, _ = run_cell(ref_cell, x64, lengths=lengths, impl="loop")
    v = torch.randn(y.shape, generator=torch.Generator().manual_seed(11))
    # allow_unused: a coupled variant's forget peephole is not in the loop's graph (zero grad)
    grads = torch.autograd.grad((y * v).sum(), [x, *cell.parameters()], allow_unused=True)
    refs = torch.autograd.grad((y64 * v.double()).sum(), [x64, *ref_cell.parameters()],
                               allow_unused=True)
    refs = [torch.zeros_like(g, dtype=F64) if r is None else r
            for g, r in zip(grads, refs, strict=True)]
    terms = T * (D + hidden + 6)
    f32 = torch.float32
    assert (y.double() - y64).abs().max().item() <= _tol(y64, terms, f32)
    for g, r in zip(grads, refs, strict=True):
        assert (g.double() - r).abs().max().item() <= _tol(r, B * terms, f32)
