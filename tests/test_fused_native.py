"""The fused C++ CPU loops (rnnlab.cells._fused, issue 12 part 5) equal the Python loops.

The hand-written LSTM and Cho-GRU sequences (:class:`rnnlab.cells.lstm._LSTMSequence`,
:class:`rnnlab.cells.gru._ChoGRUSequence`) run their two time loops either in torch ops or, on
the CPU in float32/float64, in the C++ extension built on first use. Both evaluate the same
equations; they differ in rounding only: the element-wise functions (the extension's vectorised
exp/tanh against torch's kernels, each within about one ulp), the order in which the products
sum their H terms (oneDNN's micro-kernel against MKL) and in which the gate math's few terms
are added. Each is a relative error of a few units of roundoff u per operation, and a short
sequence (T = 6 steps, H <= 9) chains a few dozen of them, so the paths agree to about 10-100 u
times the result's scale: 1e-6 (float32, u = 6e-8) and 1e-12 (float64, u = 1.1e-16) relative
to the largest magnitude are a margin of several times over the measured differences (4e-7 and
8e-16 at most), and far below the O(1) change any wrong formula makes. ``gradcheck`` checks the
C++ backward against finite differences on its own.

Tests that need the compiler skip when the extension cannot be built here.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import rnnlab.cells._fused as fused
import rnnlab.nn as rnn
from rnnlab.cells import GRUCell, LSTMCell, run_cell
from rnnlab.cells.gru import _ChoGRUSequence
from rnnlab.cells.lstm import VARIANTS, _flag_bits, _LSTMSequence

F32, F64 = torch.float32, torch.float64
B, T, D, H = 3, 6, 4, 7
TOL = {F32: 1e-6, F64: 1e-12}
NATIVE_VARIANTS = list(VARIANTS)  # FGR too: its fallback is the plain step loop


@pytest.fixture(scope="module")
def ops():
    """The built extension, or a skip (no compiler, RNNLAB_FUSED=0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        built = fused.fused_ops()
    if built is None:
        pytest.skip("the fused C++ loops are not available here (no compiler or RNNLAB_FUSED=0)")
    return built


def _cell(variant: str, dtype: torch.dtype, hidden: int = H, seed: int = 0) -> LSTMCell:
    cell = LSTMCell(D, hidden, variant=variant, dtype=dtype,
                    generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():  # peepholes and biases away from their initial pattern
        gen = torch.Generator().manual_seed(seed + 1)
        for p in cell.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return cell


def _results(cell, x, state0, lengths, monkeypatch, native: bool):
    """Outputs, the final state, every step's state (c, and FGR's gates) and the gradients of a
    fixed random projection of all of them with respect to x, the initial state and every
    parameter, on one path."""
    monkeypatch.setenv("RNNLAB_FUSED", "1" if native else "0")
    y, final, states = run_cell(cell, x, state0, lengths=lengths, impl=_impl(cell, native),
                                return_states=True)
    parts = [y, *final, *states[1:]]
    gen = torch.Generator().manual_seed(5)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in parts)
    grads = torch.autograd.grad(loss, [x, *state0, *cell.parameters()])
    return [*parts, *grads]


def _impl(cell, native: bool) -> str:
    """The hand-written sequence; switched off, FGR's Python path is the plain step loop."""
    return "loop" if cell.spec.gate_recurrence and not native else "handwritten"


def _assert_close(got, want, dtype):
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        scale = max(1.0, b.abs().max().item())
        err = (a - b).abs().max().item()
        assert err <= TOL[dtype] * scale, (k, err, scale)


def _inputs(dtype, hidden=H, seed=2, gates=False):
    """x and an initial state (h0, c0), with FGR's gates state (3H, in (0, 1)) if ``gates``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=gen, dtype=dtype).requires_grad_()
    h0 = (0.5 * torch.randn(B, hidden, generator=gen, dtype=dtype)).requires_grad_()
    c0 = (0.5 * torch.randn(B, hidden, generator=gen, dtype=dtype)).requires_grad_()
    if not gates:
        return x, (h0, c0)
    g0 = torch.rand(B, 3 * hidden, generator=gen, dtype=dtype).requires_grad_()
    return x, (h0, c0, g0)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", NATIVE_VARIANTS)
def test_native_equals_python_loops(ops, variant, dtype, monkeypatch):
    cell = _cell(variant, dtype)
    x, state0 = _inputs(dtype, gates=variant == "FGR")
    lengths = torch.tensor([6, 2, 4])
    got = _results(cell, x, state0, lengths, monkeypatch, native=True)
    want = _results(cell, x, state0, lengths, monkeypatch, native=False)
    _assert_close(got, want, dtype)
    # the two paths really are different code (else this test could not fail)
    assert any(not torch.equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("variant", ["vanilla", "FGR"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("hidden", [9, 256, 300], ids=["small", "blocked", "blocked-tail"])
def test_native_product_paths_equal_python(ops, hidden, threads, variant, monkeypatch):
    # one thread, float32: oneDNN's micro-kernel (brgemm) per step, from 4H >= 1024 columns
    # over a copy of the weight in column blocks of 64 (300: 4H = 1200, a last block of 48);
    # two threads: addmm, and from 4H x H >= 2^18 (256) the prepacked weight
    # (rnnlab.cells.base.StepMatmul)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cell = _cell(variant, F32, hidden=hidden)
        x, state0 = _inputs(F32, hidden=hidden, gates=variant == "FGR")
        got = _results(cell, x, state0, None, monkeypatch, native=True)
        want = _results(cell, x, state0, None, monkeypatch, native=False)
    finally:
        torch.set_num_threads(before)
    # a product sums H terms (FGR's gate product 3H): the tolerance of H <= 9 grows in
    # proportion (n u scale)
    terms = hidden / H * (3 if variant == "FGR" else 1)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        err = (a - b).abs().max().item()
        assert err <= TOL[F32] * max(1.0, terms) * max(1.0, b.abs().max().item()), (k, err)


@pytest.mark.parametrize(("batch", "steps"), [(1, 1), (2, 1), (1, 3)])
def test_native_equals_python_on_degenerate_shapes(ops, batch, steps, monkeypatch):
    cell = _cell("vanilla", F64)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(batch, steps, D, generator=gen, dtype=F64, requires_grad=True)
    state0 = tuple(torch.randn(batch, H, generator=gen, dtype=F64, requires_grad=True)
                   for _ in range(2))
    got = _results(cell, x, state0, None, monkeypatch, native=True)
    want = _results(cell, x, state0, None, monkeypatch, native=False)
    _assert_close(got, want, F64)


@pytest.mark.parametrize("variant", NATIVE_VARIANTS)
def test_native_gradcheck(ops, variant):
    cell = _cell(variant, F64, hidden=3)
    spec = cell.spec
    fgr = spec.gate_recurrence
    flags = (spec.input_gate, spec.forget_gate, spec.output_gate, spec.input_activation,
             spec.output_activation, spec.peepholes, spec.coupled)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, D, generator=gen, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    c0 = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    g0 = torch.rand(2, 9, generator=gen, dtype=F64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    last = torch.tensor([3, 1])

    def fn(x, h0, c0, g0, w_ih, w_hh, b_ih, b_hh, *rest):
        peep = rest[:3] if spec.peepholes else [None, None, None]
        w_gg = rest[-1] if fgr else None
        out = _LSTMSequence.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, *peep, last, flags, True,
                                  g0 if fgr else None, w_gg)
        return tuple(o for o in out if o is not None)  # the gates states: FGR only

    assert torch.autograd.gradcheck(fn, (x, h0, c0, g0, *params))


def test_fgr_falls_back_to_the_plain_loop(monkeypatch):
    """FGR's hand-written sequence is C++ only: switched off, FGR offers the loop alone (as
    before); with a failed build its "handwritten" runs the step loop itself, unchanged."""
    cell = _cell("FGR", F64, hidden=4)
    x, state0 = _inputs(F64, hidden=4, gates=True)
    want = run_cell(cell, x, state0, impl="loop", return_states=True)
    monkeypatch.setenv("RNNLAB_FUSED", "0")
    assert cell.available_impls() == ("loop",)
    with pytest.raises(ValueError, match="impl='handwritten' is not available"):
        run_cell(cell, x, state0, impl="handwritten")
    monkeypatch.setenv("RNNLAB_FUSED", "1")
    assert cell.available_impls() == ("handwritten", "loop")
    monkeypatch.setattr(fused.NATIVE, "_tried", True)
    monkeypatch.setattr(fused.NATIVE, "_ops", None)  # as after a failed build
    got = run_cell(cell, x, state0, impl="handwritten", return_states=True)
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want),
                    strict=True):
        assert torch.equal(a, b)  # the same ops in the same order


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_forward_without_gradient_stores_nothing_else(ops, dtype):
    """The no-gradient forward (flag bit 7) writes the same c(t), h(t) and no activations."""
    from rnnlab.cells.lstm import _NO_STORE

    cell = _cell("vanilla", dtype)
    gen = torch.Generator().manual_seed(1)
    pre = torch.randn(T, B, 4 * H, generator=gen, dtype=dtype)
    h0, c0 = (torch.randn(B, H, generator=gen, dtype=dtype) for _ in range(2))
    bits = _flag_bits((True,) * 6 + (False,))
    args = (h0, c0, cell.weight_hh.detach(), *(p.detach() for p in cell.parameters()
                                                if p.dim() == 1 and p.shape[0] == H), None)
    stored = pre.clone()
    cells, squashed, hs = ops.lstm_forward(stored, *args, bits)
    kept = pre.clone()
    cells2, squashed2, hs2 = ops.lstm_forward(kept, *args, bits | _NO_STORE)
    # the same instructions on the same numbers, minus some stores: equal up to how the
    # compiler contracts the two branches (a few roundings per step at most)
    tight = dict(rtol=16 * torch.finfo(dtype).eps, atol=16 * torch.finfo(dtype).eps)
    torch.testing.assert_close(cells, cells2, **tight)
    torch.testing.assert_close(hs, hs2, **tight)
    # the input gate's columns: sigmoid values when stored, else still pre-activations
    assert ((stored[..., :H] > 0) & (stored[..., :H] < 1)).all()
    assert not ((kept[..., :H] > 0) & (kept[..., :H] < 1)).all()
    assert squashed2.numel() == 0 and squashed.shape == cells.shape
    # through a layer: the forward under no_grad (no store) and with a graph (stores)
    layer = rnn.LSTM(D, H, peepholes=True, batch_first=True, dtype=dtype,
                     generator=torch.Generator().manual_seed(2))
    x = torch.randn(B, T, D, generator=gen, dtype=dtype)
    with torch.no_grad():
        y_free, (h_free, c_free) = layer(x)
    y, (h, c) = layer(x.requires_grad_())
    assert y.requires_grad
    for a, b in ((y_free, y), (h_free, h), (c_free, c)):
        torch.testing.assert_close(a, b.detach(), **tight)


@pytest.mark.parametrize("kwargs", [
    {"num_layers": 2, "bidirectional": True},
    {"num_layers": 1, "bidirectional": True, "batch_first": True},
], ids=["2-layer-bidir", "bidir-batch-first"])
def test_layers_with_native_loops_equal_python(ops, kwargs, monkeypatch):
    layer = rnn.LSTM(D, H, peepholes=True, generator=torch.Generator().manual_seed(4),
                     dtype=F64, **kwargs)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(B, T, D, generator=gen, dtype=F64)
    if not kwargs.get("batch_first"):
        x = x.transpose(0, 1)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.tensor([6, 3, 5]), batch_first=kwargs.get("batch_first", False),
        enforce_sorted=False)
    results = []
    for native in (True, False):
        monkeypatch.setenv("RNNLAB_FUSED", "1" if native else "0")
        for inp in (x, packed):
            out, (h, c) = layer(inp)
            data = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
            grads = torch.autograd.grad((data.sin()).sum() + h.sum() + c.pow(2).sum(),
                                        list(layer.parameters()))
            results.append([data, h, c, *grads])
    half = len(results) // 2
    for got, want in zip(results[:half], results[half:], strict=True):
        _assert_close(got, want, F64)


@pytest.mark.parametrize("variant", ["vanilla", "FGR"])
def test_double_backward_through_the_native_path(ops, variant, monkeypatch):
    cell = _cell(variant, F64, hidden=4)
    x, state0 = _inputs(F64, hidden=4, gates=variant == "FGR")
    values = []
    for native in (True, False):
        monkeypatch.setenv("RNNLAB_FUSED", "1" if native else "0")
        y, final, _ = run_cell(cell, x, state0, impl=_impl(cell, native))
        (gx,) = torch.autograd.grad(y.pow(2).sum() + final[-1].sum(), [x], create_graph=True)
        weights = [cell.weight_hh] + ([cell.weight_gg] if variant == "FGR" else [])
        values.append(torch.autograd.grad(gx.sum(), weights))
    _assert_close(values[0], values[1], F64)


def test_usable_only_for_cpu_float32_and_float64(ops):
    assert fused.usable(torch.zeros(2, dtype=F32), torch.zeros(2, dtype=F64))
    assert not fused.usable(torch.zeros(2, dtype=torch.bfloat16))
    assert not fused.usable(torch.zeros(2, device="meta"))
    assert ops.lstm_forward is not None and ops.lstm_backward is not None
    assert _flag_bits((True, False, True)) == 0b101


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("RNNLAB_FUSED", "0")
    assert not fused.enabled()
    assert fused.fused_ops() is None
    assert not fused.usable(torch.zeros(2))


def test_a_failed_build_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setenv("RNNLAB_FUSED", "1")
    monkeypatch.setattr(fused.NATIVE, "_tried", False)
    monkeypatch.setattr(fused.NATIVE, "_ops", None)

    def broken():
        raise RuntimeError("Error building extension 'rnnlab_fused': no compiler")

    monkeypatch.setattr(fused.NATIVE, "build", broken)
    cell = _cell("vanilla", F64, hidden=4)
    x, state0 = _inputs(F64, hidden=4)
    with pytest.warns(RuntimeWarning, match="could not be built.*no compiler"):
        y, _, _ = run_cell(cell, x, state0, impl="handwritten")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        y2, _, _ = run_cell(cell, x, state0, impl="handwritten")
    monkeypatch.setenv("RNNLAB_FUSED", "0")
    y_ref, _, _ = run_cell(cell, x, state0, impl="handwritten")
    assert torch.equal(y, y_ref) and torch.equal(y2, y_ref)  # the same Python loop


def _gru_results(cell, x, h0, lengths, monkeypatch, native: bool):
    monkeypatch.setenv("RNNLAB_FUSED", "1" if native else "0")
    y, h, _ = run_cell(cell, x, h0, lengths=lengths, impl="handwritten")
    gen = torch.Generator().manual_seed(5)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in (y, h))
    return [y, h, *torch.autograd.grad(loss, [x, h0, *cell.parameters()])]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False])
def test_native_cho_gru_equals_python(ops, dtype, bias, threads, monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cell = GRUCell(D, H, bias=bias, dtype=dtype, generator=torch.Generator().manual_seed(8))
        x, (h0, _) = _inputs(dtype)
        lengths = torch.tensor([6, 2, 4])
        got = _gru_results(cell, x, h0, lengths, monkeypatch, native=True)
        want = _gru_results(cell, x, h0, lengths, monkeypatch, native=False)
    finally:
        torch.set_num_threads(before)
    _assert_close(got, want, dtype)
    assert any(not torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_native_cho_gru_gradcheck(ops):
    cell = GRUCell(D, 3, dtype=F64, generator=torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, D, generator=gen, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    last = torch.tensor([3, 1])

    def fn(x, h0, w_ih, w_hh, b_ih, b_hh):
        return _ChoGRUSequence.apply(x, h0, w_ih, w_hh, b_ih, b_hh, last, True)

    assert torch.autograd.gradcheck(fn, (x, h0, *params))


def test_gru_layer_with_native_loops_equals_python(ops, monkeypatch):
    layer = rnn.GRU(D, H, num_layers=2, bidirectional=True, form="cho", dtype=F64,
                    generator=torch.Generator().manual_seed(4))
    x = torch.randn(T, B, D, generator=torch.Generator().manual_seed(6), dtype=F64)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([6, 3, 5]),
                                                     enforce_sorted=False)
    results = []
    for native in (True, False):
        monkeypatch.setenv("RNNLAB_FUSED", "1" if native else "0")
        out, h = layer(packed)
        grads = torch.autograd.grad(out.data.sin().sum() + h.sum(), list(layer.parameters()))
        results.append([out.data, h, *grads])
    _assert_close(results[0], results[1], F64)


def test_backward_uses_the_loop_its_forward_ran(monkeypatch):
    """RNNLAB_FUSED switched off between forward and backward: the backward still runs the
    fused loop the forward used (it must not look the ops up again and find None)."""
    torch.manual_seed(0)
    layer = rnn.LSTM(4, 5, batch_first=True, peepholes=True).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    monkeypatch.setenv("RNNLAB_FUSED", "1")
    out = layer(x)[0]
    monkeypatch.setenv("RNNLAB_FUSED", "0")
    out.sum().backward()
    grad_fused = x.grad.clone()
    x.grad = None
    layer(x)[0].sum().backward()  # the Python loop now
    # float64 sums of a few dozen O(1) products: reordering costs ~1e-15
    torch.testing.assert_close(grad_fused, x.grad, rtol=1e-12, atol=1e-12)
