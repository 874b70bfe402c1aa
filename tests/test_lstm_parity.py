"""LSTMCell against torch.nn.LSTM, against Greff et al.'s equations written out by hand, and its
hand-written sequence gradient against autograd and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.cells import VARIANTS, LSTMCell, StackedCell
from rnnlab.models.recurrent import RecurrentLayer

# Across impls (torch's kernel, the hand-written sequence, the loop, nn.LSTM) the op order
# differs: h = o * tanh(c) is in (-1, 1), each step's pre-activations are sums of D + H + 1 <= 15
# terms and the recurrence is contractive here, so the outputs differ by a few ulps of 1
# (measured worst over 30 seeds and 1, 2, 4 threads: 1 eps in float32, 1 eps in float64).
# 1e-6 is ~8 float32 eps, 1e-12 ~4500 float64 eps: room for other BLAS splits, no knife edge.
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float64]


def _from_torch(ref: nn.LSTM, layer: int = 0, **kwargs) -> LSTMCell:
    cell = LSTMCell(ref.input_size if layer == 0 else ref.hidden_size, ref.hidden_size,
                    variant="NP", dtype=ref.weight_hh_l0.dtype, **kwargs)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(ref, f"{name}_l{layer}"))
    return cell


# ---------------------------------------------------------------------------------------------
# Parity with torch.nn (no peepholes)
@pytest.mark.parametrize("dtype", DTYPES)
def test_np_step_equals_nn_lstmcell(dtype):
    ref = nn.LSTMCell(5, 7, dtype=dtype)
    cell = LSTMCell(5, 7, variant="NP", dtype=dtype)
    cell.load_state_dict(ref.state_dict())  # same names, same gate order
    x = torch.randn(4, 5, dtype=dtype)
    h, c = torch.randn(4, 7, dtype=dtype), torch.randn(4, 7, dtype=dtype)
    h_ref, c_ref = ref(x, (h, c))
    h_new, c_new = cell(x, (h, c))
    torch.testing.assert_close(h_new, h_ref, atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(c_new, c_ref, atol=TOL[dtype], rtol=0)


def test_vanilla_without_peepholes_is_np():
    a = LSTMCell(3, 4, peepholes=False, dtype=torch.float64)
    b = LSTMCell(3, 4, variant="NP", dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    assert a.is_torch_lstm and b.is_torch_lstm
    assert a.peephole_i is None
    x, s = torch.randn(2, 3, dtype=torch.float64), b.initial_state(2)
    for u, v in zip(a(x, s), b(x, s), strict=True):
        torch.testing.assert_close(u, v, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["auto", "fused", "handwritten", "loop"])
def test_np_layer_equals_nn_lstm(dtype, impl):
    ref = nn.LSTM(6, 8, batch_first=True, dtype=dtype)
    cell = _from_torch(ref)
    layer = RecurrentLayer(cell, impl=impl)
    x = torch.randn(3, 11, 6, dtype=dtype)
    h0, c0 = torch.randn(3, 8, dtype=dtype), torch.randn(3, 8, dtype=dtype)
    y_ref, (h_ref, c_ref) = ref(x, (h0[None], c0[None]))
    y, (h, c) = layer(x, (h0, c0))
    torch.testing.assert_close(y, y_ref, atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(h, h_ref[0], atol=TOL[dtype], rtol=0)
    torch.testing.assert_close(c, c_ref[0], atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("impl", ["fused", "handwritten", "loop"])
def test_np_layer_gradients_equal_nn_lstm(impl):
    dtype = torch.float64
    ref = nn.LSTM(4, 5, batch_first=True, dtype=dtype)
    cell = _from_torch(ref)
    x = torch.randn(2, 9, 4, dtype=dtype)
    w = torch.randn(2, 9, 5, dtype=dtype)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, (h_ref, c_ref) = ref(x_ref)
    ((y_ref * w).sum() + h_ref.sum() + 2 * c_ref.sum()).backward()
    y, (h, c) = RecurrentLayer(cell, impl=impl)(x_ours)
    ((y * w).sum() + h.sum() + 2 * c.sum()).backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-12, rtol=0)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        torch.testing.assert_close(
            getattr(cell, name).grad, getattr(ref, f"{name}_l0").grad, atol=1e-12, rtol=0
        )


def test_weights_copy_back_to_nn_lstm():
    cell = LSTMCell(3, 4, variant="NP", dtype=torch.float64)
    ref = nn.LSTM(3, 4, batch_first=True, dtype=torch.float64)
    ref.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    torch.testing.assert_close(RecurrentLayer(cell)(x)[0], ref(x)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["auto", "handwritten", "loop"])
def test_stacked_np_equals_multilayer_nn_lstm(dtype, impl):
    ref = nn.LSTM(5, 6, num_layers=3, batch_first=True, dtype=dtype)
    stack = StackedCell([_from_torch(ref, k) for k in range(3)])
    x = torch.randn(2, 8, 5, dtype=dtype)
    h0, c0 = torch.randn(3, 2, 6, dtype=dtype), torch.randn(3, 2, 6, dtype=dtype)
    y_ref, (h_ref, c_ref) = ref(x, (h0, c0))
    y, final = RecurrentLayer(stack, impl=impl)(x, tuple((h0[k], c0[k]) for k in range(3)))
    torch.testing.assert_close(y, y_ref, atol=TOL[dtype], rtol=0)
    for k in range(3):
        torch.testing.assert_close(final[k][0], h_ref[k], atol=TOL[dtype], rtol=0)
        torch.testing.assert_close(final[k][1], c_ref[k], atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("impl", ["fused", "handwritten", "loop"])
def test_np_lengths_equal_nn_lstm_packed(impl):
    dtype = torch.float64
    ref = nn.LSTM(3, 4, batch_first=True, dtype=dtype)
    cell = _from_torch(ref)
    x = torch.randn(4, 7, 3, dtype=dtype)
    lengths = torch.tensor([7, 2, 5, 1])
    y_ref_packed, (h_ref, c_ref) = ref(
        pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    )
    y_ref, _ = pad_packed_sequence(y_ref_packed, batch_first=True, total_length=7)
    y, (h, c) = RecurrentLayer(cell, impl=impl)(x, lengths=lengths)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(h, h_ref[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(c, c_ref[0], atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# Greff et al. (2017) written out by hand, in the paper's notation, in numpy float64
def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def greff_reference(variant, cell, x, y0, c0):
    """Every variant of Greff et al. 2017 (Section II and III), one step at a time.

    z: block input, i/f/o: gates, c: cell, y: block output; torch's row blocks are i, f, g(=z), o.
    """
    P = {k: v.detach().numpy() for k, v in cell.named_parameters()}
    H = cell.hidden_size
    blk = lambda m, k: m[k * H:(k + 1) * H]  # noqa: E731
    W_i, W_f, W_z, W_o = (blk(P["weight_ih"], k) for k in range(4))
    R_i, R_f, R_z, R_o = (blk(P["weight_hh"], k) for k in range(4))
    b = P["bias_ih"] + P["bias_hh"]
    b_i, b_f, b_z, b_o = (blk(b, k) for k in range(4))
    zero = np.zeros(H)
    p_i, p_f, p_o = (P.get(f"peephole_{g}", zero) for g in "ifo")
    if variant == "NP":
        p_i = p_f = p_o = zero
    x = x.numpy()
    y, c = y0.numpy(), c0.numpy()
    prev_i = prev_f = prev_o = np.zeros_like(y)
    ys, cs = [], []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z_bar = xt @ W_z.T + y @ R_z.T + b_z
        i_bar = xt @ W_i.T + y @ R_i.T + p_i * c + b_i
        f_bar = xt @ W_f.T + y @ R_f.T + p_f * c + b_f
        if variant == "FGR":  # R_{gate <- source} from weight_gg, rows receive, columns send
            G = P["weight_gg"]
            R = {(r, s): G[r * H:(r + 1) * H, s * H:(s + 1) * H]
                 for r in range(3) for s in range(3)}
            srcs = (prev_i, prev_f, prev_o)
            i_bar = i_bar + sum(srcs[s] @ R[(0, s)].T for s in range(3))
            f_bar = f_bar + sum(srcs[s] @ R[(1, s)].T for s in range(3))
        z = z_bar if variant == "NIAF" else np.tanh(z_bar)
        i = np.ones_like(i_bar) if variant == "NIG" else _sig(i_bar)
        if variant == "NFG":
            f = np.ones_like(f_bar)
        elif variant == "CIFG":
            f = 1.0 - i
        else:
            f = _sig(f_bar)
        c = z * i + c * f
        o_bar = xt @ W_o.T + y @ R_o.T + p_o * c + b_o
        if variant == "FGR":
            o_bar = o_bar + sum(srcs[s] @ R[(2, s)].T for s in range(3))
        o = np.ones_like(o_bar) if variant == "NOG" else _sig(o_bar)
        y = (c if variant == "NOAF" else np.tanh(c)) * o
        prev_i, prev_f, prev_o = i, f, o
        ys.append(y)
        cs.append(c)
    return np.stack(ys, 1), np.stack(cs, 1)


def _randomize(cell: LSTMCell) -> None:
    """Nonzero values everywhere a variant reads, so every term of its equation is exercised."""
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_equals_hand_computed_greff(variant):
    cell = LSTMCell(3, 4, variant=variant, dtype=torch.float64)
    _randomize(cell)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    y0, c0 = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    y_ref, c_ref = greff_reference(variant, cell, x, y0, c0)
    state0 = (y0, c0) if variant != "FGR" else (y0, c0, torch.zeros(2, 12, dtype=torch.float64))
    impls = ["loop"] if variant == "FGR" else ["loop", "handwritten", "auto"]
    for impl in impls:
        y, final, states = RecurrentLayer(cell, impl=impl)(x, state0, return_states=True)
        np.testing.assert_allclose(y.detach().numpy(), y_ref, atol=1e-12, rtol=0)
        np.testing.assert_allclose(states[1].detach().numpy(), c_ref, atol=1e-12, rtol=0)
        np.testing.assert_allclose(final[1].detach().numpy(), c_ref[:, -1], atol=1e-12, rtol=0)
    # one step of the cell itself
    new = cell(x[:, 0], state0)
    np.testing.assert_allclose(new[0].detach().numpy(), y_ref[:, 0], atol=1e-12, rtol=0)


def test_variants_differ_from_vanilla():
    """Each variant changes the function (a guard against a flag that silently does nothing)."""
    base = LSTMCell(3, 4, dtype=torch.float64)
    _randomize(base)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    y_base = RecurrentLayer(base)(x)[0]
    for variant in VARIANTS:
        if variant == "vanilla":
            continue
        cell = LSTMCell(3, 4, variant=variant, dtype=torch.float64)
        own = dict(base.named_parameters())
        with torch.no_grad():
            for name, p in cell.named_parameters():
                p.copy_(own[name] if name in own else torch.randn_like(p))
        assert (RecurrentLayer(cell)(x)[0] - y_base).abs().max() > 1e-3, variant


def test_fgr_state_carries_previous_gates():
    cell = LSTMCell(3, 4, variant="FGR", dtype=torch.float64)
    h, c, gates = cell(torch.randn(2, 3, dtype=torch.float64), cell.initial_state(2))
    assert h.shape == c.shape == (2, 4) and gates.shape == (2, 12)
    assert cell.state_names == ("h", "c", "gates")
    assert ((gates > 0) & (gates < 1)).all()


# ---------------------------------------------------------------------------------------------
# Gradients: hand-written backward vs autograd vs finite differences
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "FGR"])
def test_handwritten_gradient_equals_autograd_loop(variant):
    dtype = torch.float64
    cell = LSTMCell(3, 4, variant=variant, dtype=dtype)
    _randomize(cell)
    x = torch.randn(3, 7, 3, dtype=dtype)
    state0 = (torch.randn(3, 4, dtype=dtype), torch.randn(3, 4, dtype=dtype))
    weights = [torch.randn(3, 7, 4, dtype=dtype) for _ in range(2)]
    grads = []
    for impl in ("handwritten", "loop"):
        inputs = [x.clone().requires_grad_(), *(s.clone().requires_grad_() for s in state0)]
        y, (h, c), (_, cs) = RecurrentLayer(cell, impl=impl)(
            inputs[0], tuple(inputs[1:]), return_states=True
        )
        loss = (y * weights[0]).sum() + (cs * weights[1]).sum() + (h * c).sum()
        params = list(cell.parameters())
        g = torch.autograd.grad(loss, inputs + params, allow_unused=True)
        grads.append([torch.zeros_like(t) if gi is None else gi
                      for gi, t in zip(g, inputs + params, strict=True)])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def _gradcheck_layer(cell, impl, lengths=None, return_states=True):
    names = [n for n, _ in cell.named_parameters()]
    values = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    layer = RecurrentLayer(cell, impl=impl)
    x = torch.randn(2, 4, cell.input_size, dtype=torch.float64, requires_grad=True)
    s0 = tuple(s.clone().normal_().requires_grad_() for s in cell.initial_state(2))

    def f(x, *rest):
        k = len(s0)
        params = {f"cell.{n}": v for n, v in zip(names, rest[k:], strict=True)}
        y, final, *states = functional_call(
            layer, params, (x, tuple(rest[:k])), {"lengths": lengths,
                                                  "return_states": return_states}
        )
        return (y, *final, *(states[0] if states else ()))

    assert torch.autograd.gradcheck(f, (x, *s0, *values), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", ["vanilla", "CIFG", "NOAF", "NIG"])
def test_handwritten_gradcheck(variant):
    cell = LSTMCell(2, 3, variant=variant, dtype=torch.float64)
    _randomize(cell)
    _gradcheck_layer(cell, "handwritten")


def test_handwritten_gradcheck_with_lengths():
    cell = LSTMCell(2, 3, dtype=torch.float64)
    _randomize(cell)
    _gradcheck_layer(cell, "handwritten", lengths=torch.tensor([4, 2]))


def test_fgr_loop_gradcheck():
    cell = LSTMCell(2, 2, variant="FGR", dtype=torch.float64)
    _randomize(cell)
    _gradcheck_layer(cell, "loop", return_states=False)


def test_removed_gate_parameters_get_zero_gradient():
    cell = LSTMCell(3, 4, variant="NIG", dtype=torch.float64)
    assert cell.weight_ih[:4].abs().sum() == 0 and cell.peephole_i.abs().sum() == 0
    for impl in ("handwritten", "loop"):
        cell.zero_grad(set_to_none=False)
        y, _ = RecurrentLayer(cell, impl=impl)(torch.randn(2, 5, 3, dtype=torch.float64))
        y.sum().backward()
        assert cell.weight_ih.grad[:4].abs().sum() == 0
        assert cell.weight_ih.grad[4:].abs().sum() > 0
        assert cell.peephole_i.grad.abs().sum() == 0
        assert cell.peephole_f.grad.abs().sum() > 0


# Double backward and forward mode through the hand-written sequence: tests/test_double_backward.py


# ---------------------------------------------------------------------------------------------
# Initialization and bad input
def test_forget_bias_initialization():
    cell = LSTMCell(3, 4, forget_bias=2.5)
    torch.testing.assert_close(cell.bias_ih[4:8], torch.full((4,), 2.5))
    torch.testing.assert_close(cell.bias_hh[4:8], torch.zeros(4))
    plain = LSTMCell(3, 4, forget_bias=None, generator=torch.Generator().manual_seed(0))
    assert plain.bias_ih[4:8].abs().max() <= 0.5 and plain.bias_ih[4:8].std() > 0
    with pytest.raises(ValueError, match="finite"):
        LSTMCell(3, 4, forget_bias=float("nan"))


def test_same_seed_same_parameters():
    a = LSTMCell(3, 4, generator=torch.Generator().manual_seed(7))
    b = LSTMCell(3, 4, generator=torch.Generator().manual_seed(7))
    c = LSTMCell(3, 4, generator=torch.Generator().manual_seed(8))
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q), n
        assert n.startswith("bias") or not torch.equal(p, r), n


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown LSTM variant 'NXG'.*vanilla.*NIG.*CIFG.*FGR"):
        LSTMCell(3, 4, variant="NXG")
    assert LSTMCell(3, 4, variant="cifg").variant == "CIFG"


def test_bad_state_and_impl():
    cell = LSTMCell(3, 4)
    layer = RecurrentLayer(cell)
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError,
                       match=r"state0\[1\] \(c\) has shape \(2, 5\), expected \(2, 4\)"):
        layer(x, (torch.zeros(2, 4), torch.zeros(2, 5)))
    with pytest.raises(ValueError, match="must have 2 parts"):
        layer(x, (torch.zeros(2, 4),))
    with pytest.raises(TypeError, match="tuple"):
        layer(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="impl='fused' is not available"):
        RecurrentLayer(cell, impl="fused")(x)
    # FGR's hand-written sequence is the C++ loop: refused only while native code is off
    with pytest.MonkeyPatch.context() as mp, pytest.raises(
            ValueError, match="impl='handwritten' is not available"):
        mp.setenv("RNNLAB_FUSED", "0")
        RecurrentLayer(LSTMCell(3, 4, variant="FGR"), impl="handwritten")(x)
    with pytest.raises(ValueError, match=r"state\[1\] \(c\) of LSTMCell must have 4 features"):
        cell(x[:, 0], (torch.zeros(2, 4), torch.zeros(2, 3)))


@pytest.mark.parametrize("impl", ["fused", "handwritten", "loop"])
def test_np_without_bias_equals_nn_lstm_without_bias(impl):
    ref = nn.LSTM(3, 4, bias=False, batch_first=True, dtype=torch.float64)
    cell = LSTMCell(3, 4, variant="NP", bias=False, dtype=torch.float64)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in ref.state_dict().items()})
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    y_ref, (h_ref, c_ref) = ref(x)
    y, (h, c) = RecurrentLayer(cell, impl=impl)(x)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(h, h_ref[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(c, c_ref[0], atol=1e-12, rtol=0)
    (g_ref,) = torch.autograd.grad(y_ref.sum(), x)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=0)
