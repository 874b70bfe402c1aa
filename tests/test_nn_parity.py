"""rnnlab.nn.RNN/LSTM/GRU against torch.nn.RNN/LSTM/GRU with the same state dict (CPU).

Reference: torch's own modules, run side by side, forward and gradients by autograd on both.
Tolerances: float64 1e-12, float32 1e-6. With torch's options the layer runs torch's kernel (the
same sums in the same order: the results agree to the last bit, far inside the tolerance); the
cells' path (``_force_cells``, each layer and direction separately, reversed sequences gathered
in rnnlab) rounds in another order: the largest difference seen is one ulp of a gradient of size
~8 (9.5e-7 absolute in float32, 3.6e-15 in float64), against a tolerance of 1e-6 + 1e-6 * |value|
(about 9e-6 there) and 1e-12.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab.nn as rnn

TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
KINDS = {"LSTM": (rnn.LSTM, nn.LSTM), "GRU": (rnn.GRU, nn.GRU), "RNN": (rnn.RNN, nn.RNN)}


def _pair(kind: str, dtype: torch.dtype, seed: int = 0, **kw):
    ours_cls, torch_cls = KINDS[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dropout with one layer
        ours = ours_cls(3, 4, **kw, dtype=dtype, generator=torch.Generator().manual_seed(seed))
        ref = torch_cls(3, 4, **kw, dtype=dtype)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "batch_sizes"):  # PackedSequence
        return [out.data]
    return [t for part in out for t in _flat(part)]


def _compare(ours, ref, inputs, dtype, *, grads: bool = True, seed: int | None = None,
             wrt: tuple[torch.Tensor, ...] = ()):
    """Forward both on the same inputs; compare every output tensor and (with ``grads``) the
    gradients of a random linear functional of them w.r.t. the input tensors and parameters."""
    tol = TOL[dtype]
    make = inputs if callable(inputs) else (lambda: inputs)  # a fresh pack per forward
    if seed is not None:
        torch.manual_seed(seed)
    out_ours = _flat(ours(*make()))
    if seed is not None:
        torch.manual_seed(seed)
    out_ref = _flat(ref(*make()))
    assert len(out_ours) == len(out_ref)
    for a, b in zip(out_ours, out_ref, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    if not grads:
        return
    g = torch.Generator().manual_seed(7)
    weights = [torch.randn(o.shape, generator=g, dtype=dtype) for o in out_ref]
    leaves_in = [t for t in _flat(make()) if t.requires_grad and t.is_leaf] + list(wrt)
    for model, outs in ((ours, out_ours), (ref, out_ref)):
        loss = sum((o * w).sum() for o, w in zip(outs, weights, strict=True))
        model.zero_grad()
        for t in leaves_in:
            t.grad = None
        loss.backward()
        model._grads = [p.grad.clone() for p in model.parameters()] + [
            t.grad.clone() for t in leaves_in]
    for name, a, b in zip([n for n, _ in ours.named_parameters()] + ["inputs"] * len(leaves_in),
                          ours._grads, ref._grads, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m, n=name: f"{n}: {m}")


def _inputs(kind, dtype, batch_first, *, unbatched=False, with_hx=False, proj=0, layers=1,
            bidirectional=False):
    g = torch.Generator().manual_seed(3)
    steps, batch = 5, 3
    shape = (steps, 3) if unbatched else ((batch, steps, 3) if batch_first else (steps, batch, 3))
    x = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    if not with_hx:
        return (x,)
    rows = layers * (2 if bidirectional else 1)
    lead = (rows,) if unbatched else (rows, batch)
    h0 = torch.randn(*lead, proj or 4, generator=g, dtype=dtype).requires_grad_()
    if kind == "LSTM":
        c0 = torch.randn(*lead, 4, generator=g, dtype=dtype).requires_grad_()
        return (x, (h0, c0))
    return (x, h0)


GRID = list(itertools.product(("LSTM", "GRU", "RNN"), (1, 2, 3), (False, True)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("kind", "layers", "bidirectional"), GRID)
@pytest.mark.parametrize("cells", [False, True], ids=["kernel", "cells"])
def test_dense_forward_and_gradients_equal_torch(kind, layers, bidirectional, dtype, cells):
    ours, ref = _pair(kind, dtype, num_layers=layers, bidirectional=bidirectional)
    ours._force_cells = cells
    # each of batch_first, unbatched input and a given hx both ways, in four runs
    for batch_first, unbatched, with_hx in ((False, False, False), (True, False, True),
                                            (False, True, True), (True, True, False)):
        ours.batch_first = ref.batch_first = batch_first
        inputs = _inputs(kind, dtype, batch_first, unbatched=unbatched, with_hx=with_hx,
                         layers=layers, bidirectional=bidirectional)
        _compare(ours, ref, inputs, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("kind", "layers", "bidirectional"), GRID)
@pytest.mark.parametrize("cells", [False, True], ids=["kernel", "cells"])
def test_packed_variable_lengths_equal_torch(kind, layers, bidirectional, dtype, cells):
    ours, ref = _pair(kind, dtype, num_layers=layers, bidirectional=bidirectional)
    ours._force_cells = cells
    g = torch.Generator().manual_seed(5)
    lengths = torch.tensor([3, 6, 1, 6])  # unsorted, with ties and a length-1 sequence
    for batch_first, enforce_sorted in ((False, False), (True, False), (False, True)):
        ours.batch_first = ref.batch_first = batch_first
        lens = lengths.sort(descending=True).values if enforce_sorted else lengths
        x = torch.randn(4, 6, 3, generator=g, dtype=dtype)
        x = (x if batch_first else x.transpose(0, 1)).requires_grad_()

        def pack(x=x, lens=lens, batch_first=batch_first, enforce_sorted=enforce_sorted):
            return pack_padded_sequence(x, lens, batch_first=batch_first,
                                        enforce_sorted=enforce_sorted)

        _compare(ours, ref, lambda: (pack(),), dtype, wrt=(x,))
        rows = layers * (2 if bidirectional else 1)
        h0 = torch.randn(rows, 4, 4, generator=g, dtype=dtype)
        hx = (h0, torch.randn(rows, 4, 4, generator=g, dtype=dtype)) if kind == "LSTM" else h0
        out, _ = ours(pack(), hx)
        assert torch.equal(out.batch_sizes, pack().batch_sizes)
        theirs = ref(pack(), hx)[0]
        for mine, their in ((out.sorted_indices, theirs.sorted_indices),
                            (out.unsorted_indices, theirs.unsorted_indices)):
            assert (mine is None and their is None) or torch.equal(mine, their)
        _compare(ours, ref, lambda hx=hx: (pack(), hx), dtype, wrt=(x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, True), (3, False)])
def test_lstm_projection_equals_torch(layers, bidirectional, dtype):
    ours, ref = _pair("LSTM", dtype, num_layers=layers, bidirectional=bidirectional, proj_size=2)
    assert [k for k in ours.state_dict()] == [k for k in ref.state_dict()]
    for batch_first, unbatched in itertools.product((False, True), repeat=2):
        ours.batch_first = ref.batch_first = batch_first
        inputs = _inputs("LSTM", dtype, batch_first, unbatched=unbatched, with_hx=True, proj=2,
                         layers=layers, bidirectional=bidirectional)
        _compare(ours, ref, inputs, dtype)
    lengths = [4, 2, 5]
    x = torch.randn(5, 3, 3, dtype=dtype, requires_grad=True)
    ours.batch_first = ref.batch_first = False
    _compare(ours, ref, lambda: (pack_padded_sequence(x, lengths, enforce_sorted=False),),
             dtype, wrt=(x,))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bias", [False, True])
def test_no_bias_and_relu_equal_torch(kind, bias):
    kw = {"nonlinearity": "relu"} if kind == "RNN" else {}
    for cells in (False, True):
        ours, ref = _pair(kind, torch.float64, num_layers=2, bias=bias, bidirectional=True, **kw)
        ours._force_cells = cells
        _compare(ours, ref, _inputs(kind, torch.float64, False), torch.float64)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_dropout_eval_mode_is_identity_and_equals_torch(kind):
    ours, ref = _pair(kind, torch.float64, num_layers=3, dropout=0.5, bidirectional=True)
    ours.eval()
    ref.eval()
    for cells in (False, True):
        ours._force_cells = cells
        _compare(ours, ref, _inputs(kind, torch.float64, False), torch.float64)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("cells", [False, True], ids=["kernel", "cells"])
def test_dropout_training_masks_equal_torchs_with_the_same_seed(kind, cells):
    # torch draws one Bernoulli mask per layer output but the last one, from the global RNG, in
    # the (time, batch, features) layout; the same seed must give the same masks, hence the
    # same outputs and gradients. A mask after the last layer or a missing one would differ.
    ours, ref = _pair(kind, torch.float64, num_layers=3, dropout=0.4, bidirectional=True)
    ours._force_cells = cells
    for batch_first in (False, True):
        ours.batch_first = ref.batch_first = batch_first
        _compare(ours, ref, _inputs(kind, torch.float64, batch_first), torch.float64, seed=11)
    # and dropout really acts: two draws differ, eval mode differs from training
    x = _inputs(kind, torch.float64, False)[0]
    a, b = ours(x)[0], ours(x)[0]
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("cells", [False, True], ids=["kernel", "cells"])
def test_no_dropout_after_the_last_layer(kind, cells):
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        ours = KINDS[kind][0](3, 4, dropout=0.9)
    ours._force_cells = cells
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(ours.train()(x)[0], ours.eval()(x)[0], atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_initialization_matches_torch_under_the_same_global_seed(kind):
    ours_cls, torch_cls = KINDS[kind]
    for kw in ({}, {"num_layers": 2, "bidirectional": True, "bias": False}):
        torch.manual_seed(123)
        ours = ours_cls(3, 5, **kw)
        after_ours = torch.rand(1)
        torch.manual_seed(123)
        ref = torch_cls(3, 5, **kw)
        after_ref = torch.rand(1)
        assert list(ours.state_dict()) == list(ref.state_dict())
        for key, value in ref.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), key
        assert torch.equal(after_ours, after_ref)  # the same number of draws
        bound = 1 / 5 ** 0.5
        assert all(p.abs().max() <= bound for p in ours.parameters())


def test_generator_seeds_without_touching_the_global_rng():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a = rnn.LSTM(3, 4, num_layers=2, generator=torch.Generator().manual_seed(9))
    assert torch.equal(before, torch.random.get_rng_state())
    b = rnn.LSTM(3, 4, num_layers=2, generator=torch.Generator().manual_seed(9))
    c = rnn.LSTM(3, 4, num_layers=2, generator=torch.Generator().manual_seed(10))
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q)
        assert not torch.equal(p, r)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_to_torch_and_from_torch_round_trip(kind):
    ours_cls, torch_cls = KINDS[kind]
    kw = {"proj_size": 2} if kind == "LSTM" else {"nonlinearity": "relu"} if kind == "RNN" else {}
    torch.manual_seed(1)
    ref = torch_cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, dropout=0.25,
                    dtype=torch.float64, **kw).eval()
    ours = ours_cls.from_torch(ref)
    assert ours.batch_first and ours.dropout == 0.25 and ours.num_layers == 2
    assert not ours.training and ours.weight_ih_l0.dtype == torch.float64
    _compare(ours, ref, (torch.randn(2, 5, 3, dtype=torch.float64),), torch.float64)
    back = ours.train().to_torch()
    assert type(back) is torch_cls and back.training
    for key, value in ref.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    # weights are copies, not shared
    with torch.no_grad():
        back.weight_ih_l0.add_(1.0)
    assert not torch.equal(back.weight_ih_l0, ours.weight_ih_l0)
    with pytest.raises(TypeError, match=f"needs a torch.nn.{kind}"):
        ours_cls.from_torch(nn.Linear(2, 2))


def test_module_api_like_torch():
    ours, ref = _pair("LSTM", torch.float32, num_layers=2, bidirectional=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [[tuple(w.shape) for w in ws] for ws in ours.all_weights] == [
        [tuple(w.shape) for w in ws] for ws in ref.all_weights]
    assert repr(ours) == repr(ref)
    ours.flatten_parameters()  # a no-op on the CPU, as torch's
    # the optimizer sees exactly torch's parameters
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_functional_call_reaches_the_cells_path():
    # parameters substituted on the layer are the ones the cells compute with
    ours = rnn.LSTM(3, 4, peepholes=True)
    params = {k: torch.zeros_like(v) for k, v in ours.named_parameters()}
    out, (_h, c) = torch.func.functional_call(ours, params, (torch.randn(5, 2, 3),))
    assert out.abs().max() == 0 and c.abs().max() == 0
    assert ours(torch.randn(5, 2, 3))[0].abs().max() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_cuda_equals_torch_on_cuda(kind):
    # cuDNN on both sides: the same kernel, float64 to 1e-12 (cuDNN's float32 RNNs may use
    # TF32 or another summation order than the CPU, so the CUDA comparison is made in float64)
    ours, ref = _pair(kind, torch.float64, num_layers=2, bidirectional=True)
    ours, ref = ours.cuda(), ref.cuda()
    x = torch.randn(5, 3, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    _compare(ours, ref, (x,), torch.float64)
    lengths = [5, 2, 4]
    _compare(ours, ref, lambda: (pack_padded_sequence(x, lengths, enforce_sorted=False),),
             torch.float64, wrt=(x,))
    ours._force_cells = True
    _compare(ours, ref, (x,), torch.float64)
