"""The gated recurrent unit in Cho et al.'s form and in PyTorch's form.

Gates in torch.nn's order r (reset), z (update), n (candidate); ``weight_ih`` (3H x D),
``weight_hh`` (3H x H), ``bias_ih``, ``bias_hh`` (3H)::

    r(t) = sigma(W_ir x(t) + b_ir + W_hr h(t-1) + b_hr)
    z(t) = sigma(W_iz x(t) + b_iz + W_hz h(t-1) + b_hz)
    form "cho":   n(t) = tanh(W_in x(t) + b_in + W_hn (r(t) * h(t-1)) + b_hn)
    form "torch": n(t) = tanh(W_in x(t) + b_in + r(t) * (W_hn h(t-1) + b_hn))
    h(t) = z(t) * h(t-1) + (1 - z(t)) * n(t)

"cho" is Cho et al. 2014 ("Learning phrase representations using RNN encoder-decoder for
statistical machine translation", eqs. 5-8; the course's form: the reset gate acts on h(t-1)
*before* the recurrent matrix). "torch" applies it after the matrix product, which lets all three
recurrent products be one matmul (``torch.nn.GRU``, following cuDNN); with form="torch" this cell
is exactly ``nn.GRU``/``nn.GRUCell``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rnnlab._validation import check_choice
from rnnlab.cells._fused import built_ops, fused_ops
from rnnlab.cells._fused import usable as fused_usable
from rnnlab.cells.base import (
    State,
    StepMatmul,
    TorchLayoutCell,
    add_affine_parameters,
    affine_weights,
    init_sizes,
    input_projection_grads,
    native_packed_weight,
    recomputed_vjp,
    torch_shaped,
)

FORMS = ("cho", "torch")

# The derivatives from the stored activations in one kernel each, written into a buffer slice:
# sigmoid: grad * y * (1 - y); tanh: grad * (1 - y^2).
_sigmoid_backward_into = torch.ops.aten.sigmoid_backward.grad_input
_tanh_backward_into = torch.ops.aten.tanh_backward.grad_input


def _cho_step(u_t: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor,
              b_hh: torch.Tensor | None) -> torch.Tensor:
    """One step of the Cho form from ``u_t = W_ih x(t) + b_ih`` in plain differentiable torch
    ops: :meth:`GRUCell.step`, and what the hand-written sequence's double backward
    differentiates."""
    hs = h.shape[-1]
    x_r, x_z, x_n = u_t.chunk(3, -1)
    b_rz = None if b_hh is None else b_hh[: 2 * hs]
    b_n = None if b_hh is None else b_hh[2 * hs:]
    h_r, h_z = F.linear(h, w_hh[: 2 * hs], b_rz).chunk(2, -1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + F.linear(r * h, w_hh[2 * hs:], b_n))
    # z * h + (1 - z) * n, with one multiply fewer
    return n + z * (h - n)


class GRUCell(TorchLayoutCell):
    """GRU step; state ``h`` ``(batch, H)``.

    Args:
        input_size: D.
        hidden_size: H.
        bias: whether ``bias_ih``/``bias_hh`` exist (as ``torch.nn.GRUCell``).
        form: ``"cho"`` (reset before the recurrent matrix, Cho et al. 2014) or ``"torch"``
            (reset after it, as ``torch.nn.GRU``); keyword only.
        generator: seeds the initialization (uniform(-1/sqrt(H), 1/sqrt(H)), as torch.nn.GRU).
        device, dtype: as for any ``torch.nn`` module.

    The order before (``form``, ``bias`` positional) still works for one release, with a
    ``DeprecationWarning``. Example: ``GRUCell(3, 8, form="torch")`` is ``torch.nn.GRUCell(3, 8)``.
    """

    @torch_shaped("form", "bias")
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        form: str = "cho",
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        bias = init_sizes(self, input_size, hidden_size, bias)
        self.form = check_choice("form", form, FORMS)
        add_affine_parameters(self, 3 * self.hidden_size, bias, device=device, dtype=dtype)
        self.reset_parameters(generator)
        self.layout_for_cudnn()

    def step(self, u_t: torch.Tensor, state: State) -> torch.Tensor:
        h: torch.Tensor = state  # type: ignore[assignment]
        if self.form == "torch":
            x_r, x_z, x_n = u_t.chunk(3, -1)
            h_r, h_z, h_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, -1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            # z * h + (1 - z) * n, with one multiply fewer
            return n + z * (h - n)
        return _cho_step(u_t, h, self.weight_hh, self.bias_hh)

    def available_impls(self, return_states: bool = False) -> tuple[str, ...]:
        return ("fused", "loop") if self.form == "torch" else ("handwritten", "loop")

    def _sequence(self, impl, x, state0, lengths, return_states):  # type: ignore[no-untyped-def]
        if impl != "handwritten":
            return super()._sequence(impl, x, state0, lengths, return_states)
        last = None if lengths is None else lengths - 1
        # the tensors the loop reads (not parameters(): its generator costs more than the
        # check)
        native = fused_usable(x, state0, self.weight_ih, self.weight_hh, self.bias_ih,
                              self.bias_hh)
        outputs, h_last = _ChoGRUSequence.apply(
            x, state0, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, last, native)
        if lengths is not None:
            steps = torch.arange(x.shape[1], device=x.device)
            outputs = torch.where((steps[None, :] < lengths[:, None]).unsqueeze(-1), outputs, 0.0)
        return outputs, h_last, (outputs if return_states else None)

    def fused_weights(self) -> tuple[str, list[torch.Tensor]] | None:
        if self.form != "torch":
            return None
        return "gru", affine_weights(self)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, form={self.form!r}, "
            f"bias={self.bias_ih is not None}"
        )


class _ChoGRUSequence(torch.autograd.Function):
    """A whole Cho-form GRU sequence with a hand-written backward pass.

    Forward: both biases and the input projection of all steps are one matrix product (b_hn
    adds to the candidate's pre-activation like b_in); each step is two products (r, z from
    h(t-1); n from r * h(t-1)), one sigmoid, one tanh, one multiply and one ``lerp``
    (``n + z * (h - n)``), written into preallocated (time, batch, ...) buffers. Backward: one
    reverse loop for the pre-activation gradients (the chain rule of the module docstring's
    equations from the stored activations), then the weight gradients as single products over
    all steps. Padding (``last``) and double backward as in the hand-written LSTM
    (:class:`rnnlab.cells.lstm._LSTMSequence`): each sequence's backward starts at its own last
    step, and ``create_graph=True`` recomputes the sequence with :func:`_cho_step` under
    autograd.
    """

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, last,  # type: ignore[no-untyped-def]
                native=False):
        batch, steps, _ = x.shape
        hidden = w_hh.shape[1]
        bias = b_ih if (b_ih is None or b_hh is None) else b_ih + b_hh
        # (time, batch, 3H): pre-activations, overwritten in place by r, z, n
        pre = F.linear(x.transpose(0, 1).contiguous(), w_ih, bias)
        if native:  # the C++ loop (rnnlab.cells._fused): the same equations, two passes a step
            # rh: r * h(t-1), what W_hn multiplies; the prepacked weights only where the
            # extension uses them (more than one thread: with one, oneDNN's micro-kernel)
            rz_packed, n_packed = _packed_pair(w_hh, hidden, batch, transpose=False)
            rh, hs = fused_ops().gru_cho_forward(pre, h0, w_hh, rz_packed, n_packed)
        else:
            rec_rz = StepMatmul(w_hh[: 2 * hidden], batch)
            rec_n = StepMatmul(w_hh[2 * hidden:], batch)
            rh = x.new_empty(steps, batch, hidden)
            hs = x.new_empty(steps, batch, hidden)
            _cho_forward_loop(pre, h0, rec_rz, rec_n, rh, hs)
        if last is None:
            h_last = hs[-1].clone()
        else:
            h_last = hs[last, torch.arange(batch, device=x.device)]
        ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, pre, rh, hs, last)
        ctx.native = native
        ctx.set_materialize_grads(False)
        return hs.transpose(0, 1), h_last

    @staticmethod
    def backward(ctx, d_out, d_h_last):  # type: ignore[no-untyped-def]
        if torch.is_grad_enabled():  # create_graph=True: a differentiable recomputation
            return _cho_differentiable_backward(ctx, (d_out, d_h_last))
        x, h0, w_ih, w_hh, _, _, acts, rh, hs, last = ctx.saved_tensors
        steps, batch, hidden = hs.shape
        d_pre = torch.empty_like(acts)
        # the gradient reaching h(t) from outside the recurrence (d_out, and d_h_last at each
        # sequence's own last step), for the whole sequence at once
        d_ext = (x.new_zeros(steps, batch, hidden) if d_out is None
                 # a copy always: the incoming gradient must not be written to
                 else d_out.transpose(0, 1).clone(memory_format=torch.contiguous_format))
        if d_h_last is not None:
            if last is None:
                d_ext[-1] += d_h_last
            else:
                d_ext[last, torch.arange(batch, device=x.device)] += d_h_last
        if ctx.native:
            rz_packed, n_packed = _packed_pair(w_hh, hidden, batch, transpose=True)
            d_pre, dh = built_ops().gru_cho_backward(acts, hs, h0, w_hh, rz_packed, n_packed,
                                                     d_ext)
        else:
            rec_rz = StepMatmul(w_hh[: 2 * hidden].t(), batch)  # d_rz W_hr,z
            rec_n = StepMatmul(w_hh[2 * hidden:].t(), batch)  # d_n W_hn
            dh = _cho_backward_loop(acts, hs, h0, rec_rz, rec_n, d_ext, d_pre)
        needs = ctx.needs_input_grad
        flat = d_pre.view(steps * batch, 3 * hidden)
        dx, dw_ih, db = input_projection_grads(d_pre, x, w_ih, needs[0], needs[2],
                                               needs[4] or needs[5])
        dw_hh = None
        if needs[3]:
            h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]]).view(steps * batch, hidden)
            dw_hh = torch.cat([flat[:, : 2 * hidden].t() @ h_prev,
                               flat[:, 2 * hidden:].t() @ rh.view(steps * batch, hidden)])
        return (dx, dh if needs[1] else None, dw_ih, dw_hh,
                db if needs[4] else None, db if needs[5] else None, None, None)


def _packed_pair(w_hh, hidden, batch, transpose):  # type: ignore[no-untyped-def]
    """:func:`~rnnlab.cells.base.native_packed_weight` of ``W_hrz`` and ``W_hn`` (transposed
    for the backward)."""
    rz, n = w_hh[: 2 * hidden], w_hh[2 * hidden:]
    if transpose:
        rz, n = rz.t(), n.t()
    return native_packed_weight(rz, batch), native_packed_weight(n, batch)


def _cho_forward_loop(pre, h0, rec_rz, rec_n, rh, hs):  # type: ignore[no-untyped-def]
    """The forward time loop of :class:`_ChoGRUSequence` in torch ops: ``pre`` (time, batch,
    3H) holds the input projection on entry and r, z, n on exit; fills ``rh`` (r * h(t-1)) and
    ``hs`` (h(t))."""
    hidden = hs.shape[2]
    # every step's views, made once (at small sizes a view costs as much as arithmetic)
    rz_t = pre[:, :, : 2 * hidden].unbind(0)
    r_t = pre[:, :, :hidden].unbind(0)
    z_t = pre[:, :, hidden: 2 * hidden].unbind(0)
    n_t = pre[:, :, 2 * hidden:].unbind(0)
    rh_t, h_t = rh.unbind(0), hs.unbind(0)
    h = h0
    for t in range(hs.shape[0]):
        rec_rz.add_(rz_t[t], h).sigmoid_()
        torch.mul(r_t[t], h, out=rh_t[t])
        rec_n.add_(n_t[t], rh_t[t]).tanh_()
        torch.lerp(n_t[t], h, z_t[t], out=h_t[t])
        h = h_t[t]


def _cho_backward_loop(acts, hs, h0, rec_rz, rec_n, d_ext, d_pre):  # type: ignore[no-untyped-def]
    """The reverse time loop of :class:`_ChoGRUSequence` in torch ops: fills ``d_pre`` (time,
    batch, 3H), the pre-activation gradients, from ``d_ext`` (the gradient reaching each h(t)
    from outside the recurrence); returns the gradient of h0."""
    steps, batch, hidden = hs.shape
    r_t = acts[:, :, :hidden].unbind(0)
    z_t = acts[:, :, hidden: 2 * hidden].unbind(0)
    n_t = acts[:, :, 2 * hidden:].unbind(0)
    dr_t = d_pre[:, :, :hidden].unbind(0)
    dz_t = d_pre[:, :, hidden: 2 * hidden].unbind(0)
    drz_t = d_pre[:, :, : 2 * hidden].unbind(0)
    dn_t = d_pre[:, :, 2 * hidden:].unbind(0)
    h_prev_t = (h0, *hs.unbind(0)[:-1])
    ext_t = d_ext.unbind(0)
    zeros = hs.new_zeros(batch, hidden)
    dh = ext_t[-1]
    for t in range(steps - 1, -1, -1):
        r, z, n, h_prev = r_t[t], z_t[t], n_t[t], h_prev_t[t]
        # h = n + z * (h_prev - n)
        _sigmoid_backward_into(dh * (h_prev - n), z, grad_input=dz_t[t])
        _tanh_backward_into(torch.addcmul(dh, dh, z, value=-1.0), n, grad_input=dn_t[t])
        # a_n = ... + W_hn (r * h_prev)
        d_rh = rec_n.add(zeros, dn_t[t])
        _sigmoid_backward_into(d_rh * h_prev, r, grad_input=dr_t[t])
        # dh(t-1) = external + dh z + d_rh r + d_rz W_hrz
        carry = torch.addcmul(ext_t[t - 1] if t > 0 else zeros, dh, z)
        dh = rec_rz.add_(carry.addcmul_(d_rh, r), drz_t[t])
    return dh


def _cho_differentiable_backward(ctx, grads):  # type: ignore[no-untyped-def]
    """The vector-Jacobian product of :class:`_ChoGRUSequence` as a differentiable graph: the
    sequence recomputed with :func:`_cho_step` and differentiated with ``create_graph=True``
    (:func:`rnnlab.cells.base.recomputed_vjp`)."""
    x, h0, w_ih, w_hh, b_ih, b_hh, _, _, _, last = ctx.saved_tensors
    inputs = [x, h0, w_ih, w_hh, b_ih, b_hh]

    def recompute(ax, ah0, aw_ih, aw_hh, ab_ih, ab_hh):  # type: ignore[no-untyped-def]
        h, hs = ah0, []
        for u_t in F.linear(ax, aw_ih, ab_ih).unbind(1):
            h = _cho_step(u_t, h, aw_hh, ab_hh)
            hs.append(h)
        out = torch.stack(hs, 1)
        if last is None:
            return out, hs[-1]
        return out, out[torch.arange(x.shape[0], device=x.device), last]

    result = recomputed_vjp(inputs, ctx.needs_input_grad[:len(inputs)], recompute, grads)
    return (*result, None, None)


__all__ = ["FORMS", "GRUCell"]
