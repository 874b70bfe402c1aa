"""The LSTM of Greff et al. (2017), with peepholes, and the eight variants that paper studies.

Vanilla LSTM (Greff, Srivastava, Koutník, Steunebrink & Schmidhuber, "LSTM: A Search Space
Odyssey", IEEE TNNLS 2017, eqs. 1-6; peepholes from Gers & Schmidhuber 2000), written in
torch.nn's gate order i, f, g (block input, Greff's z), o and with h for Greff's block output y::

    i(t) = sigma(W_i x(t) + R_i h(t-1) + p_i * c(t-1) + b_i)        input gate
    f(t) = sigma(W_f x(t) + R_f h(t-1) + p_f * c(t-1) + b_f)        forget gate
    g(t) = tanh (W_g x(t) + R_g h(t-1) + b_g)                       block input
    c(t) = f(t) * c(t-1) + i(t) * g(t)                              cell state
    o(t) = sigma(W_o x(t) + R_o h(t-1) + p_o * c(t) + b_o)          output gate (peeks at c(t))
    h(t) = o(t) * tanh(c(t))                                        block output

Variants (Greff et al. 2017, Section III): NIG i = 1; NFG f = 1; NOG o = 1; NIAF g = a_g (no
tanh); NOAF h = o * c; NP no peepholes (then this is exactly ``torch.nn.LSTM``); CIFG
f = 1 - i; FGR every gate also gets the previous step's gate activations,
``a_k(t) += R_ki i(t-1) + R_kf f(t-1) + R_ko o(t-1)`` for k in {i, f, o} (nine extra H x H
matrices, Greff et al.'s appendix), so the state carries the previous gates.

Parameters follow torch.nn: ``weight_ih`` (4H x D) = [W_i; W_f; W_g; W_o], ``weight_hh`` (4H x H),
``bias_ih``, ``bias_hh`` (4H; b = bias_ih + bias_hh); then ``peephole_i``, ``peephole_f``,
``peephole_o`` (H, diagonal) and, for FGR, ``weight_gg`` (3H x 3H, rows = receiving gate i, f, o,
columns = sending gate i, f, o).

(About 670 lines: the variants are options of one step, and the hand-written whole-sequence
forward and backward loops that make them fast have to know each of them; on the CPU those loops
run in C++, :mod:`rnnlab.cells._fused`, whose dispatch and weight gradients live here.)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab._validation import check_bool, check_number
from rnnlab.cells._fused import built_ops, fused_ops
from rnnlab.cells._fused import enabled as fused_enabled
from rnnlab.cells._fused import usable as fused_usable
from rnnlab.cells.base import (
    State,
    StepMatmul,
    TorchLayoutCell,
    _loop,
    add_affine_parameters,
    affine_weights,
    fused_rnn,
    init_sizes,
    input_projection_grads,
    native_packed_weight,
    recomputed_vjp,
    torch_shaped,
)

# The derivatives from the stored activations in one kernel each, written into a buffer slice:
# sigmoid: grad * y * (1 - y); tanh: grad * (1 - y^2).
_sigmoid_backward_into = torch.ops.aten.sigmoid_backward.grad_input
_tanh_backward = torch.ops.aten.tanh_backward
_tanh_backward_into = torch.ops.aten.tanh_backward.grad_input


@dataclass(frozen=True)
class LSTMVariant:
    """Which parts of the vanilla LSTM a variant keeps."""

    input_gate: bool = True
    forget_gate: bool = True
    output_gate: bool = True
    input_activation: bool = True
    output_activation: bool = True
    peepholes: bool = True
    coupled: bool = False  # CIFG: f = 1 - i
    gate_recurrence: bool = False  # FGR


VARIANTS: dict[str, LSTMVariant] = {
    "vanilla": LSTMVariant(),
    "NIG": LSTMVariant(input_gate=False),
    "NFG": LSTMVariant(forget_gate=False),
    "NOG": LSTMVariant(output_gate=False),
    "NIAF": LSTMVariant(input_activation=False),
    "NOAF": LSTMVariant(output_activation=False),
    "NP": LSTMVariant(peepholes=False),
    "CIFG": LSTMVariant(forget_gate=False, coupled=True),
    "FGR": LSTMVariant(gate_recurrence=True),
}
_BY_LOWER = {name.lower(): name for name in VARIANTS}


def _lstm_step(
    s: LSTMVariant,
    u_t: torch.Tensor,
    state: State,
    w_hh: torch.Tensor,
    p_i: torch.Tensor | None,
    p_f: torch.Tensor | None,
    p_o: torch.Tensor | None,
    w_gg: torch.Tensor | None,
) -> State:
    """One step of the module docstring's equations from ``u_t = W x(t) + b``, in plain
    differentiable torch ops: :meth:`LSTMCell.step`, and what the hand-written sequence's double
    backward differentiates."""
    h, c = state[0], state[1]  # type: ignore[index]
    a_i, a_f, a_g, a_o = (u_t + F.linear(h, w_hh)).chunk(4, -1)
    if s.gate_recurrence:
        r_i, r_f, r_o = F.linear(state[2], w_gg).chunk(3, -1)  # type: ignore[index, arg-type]
        a_i, a_f, a_o = a_i + r_i, a_f + r_f, a_o + r_o
    if s.peepholes:
        a_i = a_i + p_i * c
        a_f = a_f + p_f * c
    i = torch.sigmoid(a_i) if s.input_gate else None
    if s.coupled:
        f = 1.0 - i  # type: ignore[operator]
    else:
        f = torch.sigmoid(a_f) if s.forget_gate else None
    g = torch.tanh(a_g) if s.input_activation else a_g
    c_new = (c if f is None else f * c) + (g if i is None else i * g)
    if s.output_gate:
        o = torch.sigmoid(a_o + p_o * c_new if s.peepholes else a_o)
    else:
        o = None
    squashed = torch.tanh(c_new) if s.output_activation else c_new
    h_new = squashed if o is None else o * squashed
    if not s.gate_recurrence:
        return (h_new, c_new)
    ones = torch.ones_like(c_new)
    gates = torch.cat([ones if k is None else k for k in (i, f, o)], -1)
    return (h_new, c_new, gates)


class LSTMCell(TorchLayoutCell):
    """LSTM step with peepholes and Greff et al.'s variants; state (h, c), for FGR (h, c, gates).

    Args:
        input_size: D.
        hidden_size: H.
        bias: whether ``bias_ih``/``bias_hh`` exist (as ``torch.nn.LSTMCell``).
        peepholes: add the diagonal peephole weights (Gers & Schmidhuber 2000). The variant
            ``"NP"`` has none whatever this says.
        variant: ``"vanilla"``, ``"NIG"``, ``"NFG"``, ``"NOG"``, ``"NIAF"``, ``"NOAF"``, ``"NP"``,
            ``"CIFG"`` or ``"FGR"`` (Greff et al. 2017; case-insensitive).
        forget_bias: initial value of the forget gate's total bias ``b_f`` (``bias_ih`` rows set to
            it, ``bias_hh`` rows to 0); 1.0 keeps the memory open at the start of training
            (Gers, Schmidhuber & Cummins 2000; Jozefowicz et al. 2015). ``None`` keeps torch's
            uniform initialization; ignored when ``bias=False``.
        generator: seeds the initialization.
        device, dtype: as for any ``torch.nn`` module.

    Rows and peepholes of a gate that the variant removes are kept (so weights copy to and from
    ``nn.LSTM`` whatever the variant), set to zero and never used: their gradient is zero.
    With ``variant="NP"`` (or ``peepholes=False`` on the vanilla cell) the cell is exactly
    ``torch.nn.LSTMCell`` and layers run torch's fused kernel.

    The options after ``bias`` are keyword-only. Before, the third positional argument was
    ``peepholes``: ``LSTMCell(3, 4, False)`` now means ``bias=False``, as in torch, and warns
    (``FutureWarning``) for one release; the old order with more positional arguments keeps its
    old meaning for one release with a ``DeprecationWarning``.

    Example::

        cell = LSTMCell(3, 8, peepholes=False)          # exactly torch.nn.LSTMCell(3, 8)
        h, c = cell(torch.randn(5, 3), cell.initial_state(5))
    """

    @torch_shaped("peepholes", "variant", "forget_bias", "bias", old_third_is_bool=True)
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        peepholes: bool = True,
        variant: str = "vanilla",
        forget_bias: float | None = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        bias = init_sizes(self, input_size, hidden_size, bias)
        if not isinstance(variant, str) or variant.lower() not in _BY_LOWER:
            raise ValueError(
                f"unknown LSTM variant {variant!r}; valid variants: {', '.join(VARIANTS)}"
            )
        check_bool("peepholes", peepholes)
        self.variant = _BY_LOWER[variant.lower()]
        spec = VARIANTS[self.variant]
        self.spec = LSTMVariant(**{**spec.__dict__, "peepholes": spec.peepholes and peepholes})
        self.forget_bias = None if forget_bias is None else check_number(
            "forget_bias", forget_bias
        )
        self.state_names = ("h", "c", "gates") if self.spec.gate_recurrence else ("h", "c")
        factory = {"device": device, "dtype": dtype}
        h = self.hidden_size
        add_affine_parameters(self, 4 * h, bias, **factory)
        if self.spec.peepholes:
            self.peephole_i = nn.Parameter(torch.empty(h, **factory))
            self.peephole_f = nn.Parameter(torch.empty(h, **factory))
            self.peephole_o = nn.Parameter(torch.empty(h, **factory))
        else:
            for name in ("peephole_i", "peephole_f", "peephole_o"):
                self.register_parameter(name, None)
        if self.spec.gate_recurrence:
            self.weight_gg = nn.Parameter(torch.empty(3 * h, 3 * h, **factory))
        else:
            self.register_parameter("weight_gg", None)
        self.reset_parameters(generator)
        self.layout_for_cudnn()

    # -- parameters ----------------------------------------------------------------------------
    def _unused_gates(self) -> list[int]:
        """Indices (0 i, 1 f, 2 g, 3 o) of the gates the variant removes."""
        s = self.spec
        return [k for k, used in ((0, s.input_gate), (1, s.forget_gate and not s.coupled),
                                  (3, s.output_gate)) if not used]

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter (as torch.nn.LSTM), then the
        forget bias, then zeros for the parts of removed gates."""
        h = self.hidden_size
        super().reset_parameters(generator)
        with torch.no_grad():
            if self.bias_ih is not None and self.forget_bias is not None:
                self.bias_ih[h:2 * h] = self.forget_bias
                self.bias_hh[h:2 * h] = 0.0
            for k in self._unused_gates():
                rows = slice(k * h, (k + 1) * h)
                self.weight_ih[rows] = 0.0
                self.weight_hh[rows] = 0.0
                if self.bias_ih is not None:
                    self.bias_ih[rows] = 0.0
                    self.bias_hh[rows] = 0.0
                if self.spec.peepholes:
                    {0: self.peephole_i, 1: self.peephole_f, 3: self.peephole_o}[k].zero_()
            if self.spec.peepholes and self.spec.coupled:
                self.peephole_f.zero_()

    # -- the step ------------------------------------------------------------------------------
    def state_sizes(self) -> object:
        h = self.hidden_size
        return (h, h, 3 * h) if self.spec.gate_recurrence else (h, h)

    def _bias(self) -> torch.Tensor | None:
        return None if self.bias_ih is None else self.bias_ih + self.bias_hh

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        """``W x + b`` for the four gates at once (b = bias_ih + bias_hh)."""
        return F.linear(x, self.weight_ih, self._bias())

    def step(self, u_t: torch.Tensor, state: State) -> State:
        return _lstm_step(self.spec, u_t, state, self.weight_hh, self.peephole_i,
                          self.peephole_f, self.peephole_o, self.weight_gg)

    # -- whole sequences -----------------------------------------------------------------------
    @property
    def is_torch_lstm(self) -> bool:
        """True when the math is exactly ``torch.nn.LSTM``'s (no peepholes, vanilla gates)."""
        return self.spec == LSTMVariant(peepholes=False)

    def fused_weights(self) -> tuple[str, list[torch.Tensor]] | None:
        if not self.is_torch_lstm:
            return None
        return "lstm", affine_weights(self)

    def available_impls(self, return_states: bool = False) -> tuple[str, ...]:
        impls: list[str] = []
        if self.is_torch_lstm and not return_states:  # the kernel does not return c(t)
            impls.append("fused")
        # FGR's hand-written sequence is the C++ loop only: offered while native code is on
        # (RNNLAB_FUSED); where it cannot run (CUDA, a failed build) _sequence runs the loop
        if not self.spec.gate_recurrence or fused_enabled():
            impls.append("handwritten")
        return (*impls, "loop")

    def _sequence(self, impl, x, state0, lengths, return_states):
        if impl == "fused":
            kind, weights = self.fused_weights()  # type: ignore[misc]
            outputs, final = fused_rnn(kind, x, state0, weights, lengths)
            return outputs, final, None
        s = self.spec
        last = None if lengths is None else lengths - 1
        flags = (s.input_gate, s.forget_gate, s.output_gate, s.input_activation,
                 s.output_activation, s.peepholes, s.coupled)
        # the tensors the loop reads (not parameters(): its generator costs more than the
        # check)
        fgr = s.gate_recurrence
        native = fused_usable(x, state0[0], state0[1], self.weight_ih, self.weight_hh,
                              self.bias_ih, self.bias_hh, self.peephole_i, self.peephole_f,
                              self.peephole_o, state0[2] if fgr else None, self.weight_gg)
        if fgr and not native:
            # FGR's hand-written sequence exists only in C++: elsewhere the plain loop
            return _loop(self, x, state0, lengths, return_states)
        outputs, cells, h_last, c_last, g_states, g_last = _LSTMSequence.apply(
            x, state0[0], state0[1], self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
            self.peephole_i, self.peephole_f, self.peephole_o, last, flags, native,
            state0[2] if fgr else None, self.weight_gg,
            # the forward's own grad mode (inside an autograd.Function it is always off)
            torch.is_grad_enabled(),
        )
        if lengths is not None:
            steps = torch.arange(x.shape[1], device=x.device)
            keep = (steps[None, :] < lengths[:, None]).unsqueeze(-1)
            outputs = torch.where(keep, outputs, 0.0)
            if return_states:
                cells = torch.where(keep, cells, 0.0)
                if fgr:
                    g_states = torch.where(keep, g_states, 0.0)
        if fgr:
            return (outputs, (h_last, c_last, g_last),
                    (outputs, cells, g_states) if return_states else None)
        return outputs, (h_last, c_last), ((outputs, cells) if return_states else None)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, variant={self.variant!r}, "
            f"peepholes={self.spec.peepholes}, forget_bias={self.forget_bias}, "
            f"bias={self.bias_ih is not None}"
        )


#: flag bit of the C++ forward: store only c(t) and h(t) (no backward will follow)
_NO_STORE = 1 << 7


@functools.lru_cache(maxsize=64)  # one entry per variant; called once per sequence
def _flag_bits(flags: tuple[bool, ...]) -> int:
    """The variant flags as the C++ loop's bit set (bit k = ``flags[k]``)."""
    return sum(int(bool(f)) << k for k, f in enumerate(flags))


class _LSTMSequence(torch.autograd.Function):
    """A whole LSTM sequence (any variant) with a hand-written backward pass.

    Forward: the input projection of all steps is one matrix product; each step is one
    ``addmm`` and the gate math, written straight into preallocated (time, batch, ...) buffers.
    Backward: one reverse loop computes the gradient of every gate's pre-activation (the
    sigmoid/tanh derivatives from the stored activations, the same chain rule autograd would
    apply), then all weight gradients are single matrix products over the whole sequence. With
    ``last`` (each sequence's last step) the recurrence runs through the padding; padded steps
    are cut off by starting each sequence's backward at its own last step, which is exact
    because nothing after it reaches any output.

    The two time loops exist twice: in torch ops (:func:`_forward_loop`,
    :func:`_backward_loop`; a few in-place element-wise kernels per step) and, with ``native``,
    as one C++ pass per step (``rnnlab/cells/_fused/fused_cells.cpp``, the same equations;
    CPU, float32/float64). Everything around the loops is shared. A forward that no backward
    will follow (no input needs a gradient) has the C++ loop store only c(t) and h(t).

    FGR (``w_gg`` given, ``gs0`` the initial gates state): C++ only (the Python fallback of FGR
    is the plain step loop); per step one more product, ``gs(t-1) W_gg^T`` into the i, f, o
    pre-activations, and backward ``d_ifo(t+1) W_gg`` into the gradient of gs(t);
    ``dW_gg = sum_t d_ifo(t)^T gs(t-1)`` over the whole sequence. The outputs then include
    every step's gates state (time-major i, f, o of the gates buffer) and the final one, else
    None.

    Double backward (``create_graph=True``): the hand-written pass works on stored activations
    that carry no graph, so its result could not be differentiated again (torch's
    ``once_differentiable`` would even drop that dependence silently, as seen through a
    Gauss-Newton product by double vjp). Then :func:`_differentiable_backward` recomputes the
    sequence with :func:`_lstm_step` under autograd and returns autograd's gradient of it, which
    is differentiable to any order; the first-order result is the same chain rule.
    """

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, p_i, p_f, p_o, last, flags,
                native=False, gs0=None, w_gg=None, grad_mode=True):
        batch = x.shape[0]
        fgr = w_gg is not None
        # called under no_grad, or no input needs a gradient: no backward will follow, so the
        # C++ loop stores only c(t) and h(t) (not FGR: its gates are its state)
        store = (grad_mode and any(ctx.needs_input_grad)) or fgr or not native
        bias = None if b_ih is None else b_ih + b_hh
        # (time, batch, 4H): pre-activations, then overwritten in place by the activations
        # (x made time-major first: a strided input sends linear to a slower batched product)
        x_tm = x.transpose(0, 1).contiguous()
        ops = fused_ops() if native else None  # once: each call reads the environment
        if native:
            gates = ops.linear(x_tm.view(-1, x.shape[2]), w_ih, bias).view(
                x.shape[1], batch, -1)
        else:
            gates = F.linear(x_tm, w_ih, bias)
        if native:
            # h W_hh^T, one per step: oneDNN's micro-kernel in the extension with one thread
            # (faster than the prepacked weight, whose reorder costs too), else as StepMatmul
            packed = native_packed_weight(w_hh, batch)
            cells, squashed, hs = ops.lstm_forward(
                gates, h0, c0, w_hh, p_i, p_f, p_o, packed,
                _flag_bits(flags) | (0 if store else _NO_STORE), w_gg, gs0)
            squashed = squashed if flags[4] and store else cells
        else:
            rec = StepMatmul(w_hh, batch)  # h W_hh^T, one per step
            cells, squashed, hs = _forward_loop(gates, h0, c0, rec, p_i, p_f, p_o, flags)
        rows = None if last is None else torch.arange(batch, device=x.device)
        if last is None:
            h_last, c_last = hs[-1].clone(), cells[-1].clone()
        else:
            h_last, c_last = hs[last, rows], cells[last, rows]
        g_states = g_last = None
        if fgr:
            hidden = w_hh.shape[1]
            # gs(t) = (i, f, o)(t): the gates buffer without g's columns
            g_tm = torch.cat([gates[..., :2 * hidden], gates[..., 3 * hidden:]], -1)
            g_last = g_tm[-1] if last is None else g_tm[last, rows]
            g_states = g_tm.transpose(0, 1)
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, p_i, p_f, p_o, gates, cells,
                              squashed, hs, last, gs0, w_gg)
        ctx.flags = flags
        ctx.native = native
        ctx.has_bias = b_ih is not None
        ctx.set_materialize_grads(False)
        return hs.transpose(0, 1), cells.transpose(0, 1), h_last, c_last, g_states, g_last

    @staticmethod
    def backward(ctx, d_out, d_cells, d_h_last, d_c_last, d_g_states=None, d_g_last=None):
        # autograd runs a backward with grad mode on exactly when it was asked for create_graph
        if torch.is_grad_enabled():
            return _differentiable_backward(
                ctx, (d_out, d_cells, d_h_last, d_c_last, d_g_states, d_g_last))
        (x, h0, c0, w_ih, w_hh, _, _, p_i, p_f, p_o, gates, cells, squashed, hs,
         last, gs0, w_gg) = ctx.saved_tensors
        peep = ctx.flags[5]
        steps, batch, hidden = cells.shape
        # the gradient reaching h(t) from outside the recurrence: d_out, plus d_h_last at each
        # sequence's own last step (likewise for c(t)); summed over the whole sequence at once
        d_h_ext = None if d_out is None else d_out.transpose(0, 1)
        d_c_ext = None if d_cells is None else d_cells.transpose(0, 1)
        d_g_ext = None if d_g_states is None else d_g_states.transpose(0, 1)
        if d_h_last is not None or d_c_last is not None or d_g_last is not None:
            at_last = torch.zeros(steps, batch, 1, dtype=x.dtype, device=x.device)
            if last is None:
                at_last[-1] = 1.0
            else:
                at_last[last, torch.arange(batch, device=x.device)] = 1.0
            if d_h_last is not None:
                d_h_ext = (torch.mul(at_last, d_h_last) if d_h_ext is None
                           else torch.addcmul(d_h_ext, at_last, d_h_last))
            if d_c_last is not None:
                d_c_ext = (torch.mul(at_last, d_c_last) if d_c_ext is None
                           else torch.addcmul(d_c_ext, at_last, d_c_last))
            if d_g_last is not None:
                d_g_ext = (torch.mul(at_last, d_g_last) if d_g_ext is None
                           else torch.addcmul(d_g_ext, at_last, d_g_last))
        d_gs0 = None
        if ctx.native:
            # d_pre W_hh, one per step (see forward for the product's form)
            packed = native_packed_weight(w_hh.t(), batch)
            d_pre, dh, dc, d_gs0 = built_ops().lstm_backward(
                gates, cells, squashed, c0, w_hh, p_i, p_f, p_o, packed, d_h_ext, d_c_ext,
                _flag_bits(ctx.flags), w_gg, d_g_ext)
        else:
            rec = StepMatmul(w_hh.t(), batch)  # d_pre W_hh, one per step
            d_pre, dh, dc = _backward_loop(gates, cells, squashed, c0, w_hh, rec, p_i, p_f,
                                           p_o, d_h_ext, d_c_ext, ctx.flags)
        needs = ctx.needs_input_grad
        flat = d_pre.view(steps * batch, 4 * hidden)
        if ctx.native:  # the same products, by the extension's kernel (faster here)
            dx, dw_ih, db, dw_hh = _native_weight_grads(d_pre, x, h0, hs, w_ih, needs,
                                                        ctx.has_bias)
        else:
            dx, dw_ih, db = input_projection_grads(d_pre, x, w_ih, needs[0], needs[3],
                                                   ctx.has_bias and (needs[5] or needs[6]))
            dw_hh = None
            if needs[4]:
                h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]]).view(steps * batch, hidden)
                dw_hh = flat.t() @ h_prev
        dp_i = dp_f = dp_o = None
        if peep:
            c_prev_all = torch.cat([c0.unsqueeze(0), cells[:-1]])
            if needs[7]:
                dp_i = (d_pre[..., :hidden] * c_prev_all).sum((0, 1))
            if needs[8]:
                dp_f = (d_pre[..., hidden:2 * hidden] * c_prev_all).sum((0, 1))
            if needs[9]:
                dp_o = (d_pre[..., 3 * hidden:] * cells).sum((0, 1))
        dw_gg = None
        if w_gg is not None and needs[14]:
            # dW_gg = sum_t d_ifo(t)^T gs(t-1), rows receiving, columns sending gate
            d_ifo = torch.cat([d_pre[..., :2 * hidden], d_pre[..., 3 * hidden:]], -1)
            gs_prev = torch.cat([gs0.unsqueeze(0), torch.cat(
                [gates[:-1, :, :2 * hidden], gates[:-1, :, 3 * hidden:]], -1)])
            dw_gg = built_ops().linear(d_ifo.view(steps * batch, -1).t(),
                                       gs_prev.view(steps * batch, -1).t(), None)
        return (dx, dh if needs[1] else None, dc if needs[2] else None, dw_ih, dw_hh, db, db,
                dp_i, dp_f, dp_o, None, None, None,
                d_gs0 if w_gg is not None and needs[13] else None, dw_gg, None)


def _native_weight_grads(d_pre, x, h0, hs, w_ih, needs, has_bias):  # type: ignore[no-untyped-def]
    """``dX = dA W_ih``, ``dW_ih = dA^T X``, ``db = sum dA`` and ``dW_hh = dA^T H_prev`` over the
    whole sequence (None where not needed) with the extension's ``linear`` (``a @ b^T``), as
    :func:`rnnlab.cells.base.input_projection_grads` computes them with torch's."""
    steps, batch, rows = d_pre.shape
    linear = built_ops().linear
    flat = d_pre.view(steps * batch, rows)
    x_tm = x.transpose(0, 1).reshape(steps * batch, -1)
    dx = (linear(flat, w_ih.t(), None).view(steps, batch, -1).transpose(0, 1)
          if needs[0] else None)
    dw_ih = linear(flat.t(), x_tm.t(), None) if needs[3] else None
    db = flat.sum(0) if has_bias and (needs[5] or needs[6]) else None
    dw_hh = None
    if needs[4]:
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]]).view(steps * batch, -1)
        dw_hh = linear(flat.t(), h_prev.t(), None)
    return dx, dw_ih, db, dw_hh


def _forward_loop(gates, h0, c0, rec, p_i, p_f, p_o, flags):  # type: ignore[no-untyped-def]
    """The forward time loop of :class:`_LSTMSequence` in torch ops. ``gates`` (time, batch,
    4H) holds ``W x + b`` on entry and the activations i, f, g, o on exit; returns every step's
    cell, its squashed value (the cell itself without an output activation) and h."""
    use_i, use_f, use_o, act_g, act_s, peep, coupled = flags
    steps, batch, hidden = gates.shape[0], gates.shape[1], gates.shape[2] // 4
    cells = gates.new_empty(steps, batch, hidden)
    squashed = gates.new_empty(steps, batch, hidden) if act_s else cells
    hs = gates.new_empty(steps, batch, hidden)
    p_if = torch.stack([p_i, p_f]).unsqueeze(0) if peep else None
    # Every step's views are made once, before the loop (one unbind per buffer): at small
    # sizes each tensor op costs about as much as the arithmetic, and views are ops too.
    v4 = gates.view(steps, batch, 4, hidden)
    g4_t = gates.unbind(0)
    if_t = v4[:, :, :2].unbind(0)
    i_t, f_t, g_t, o_t = (part.unbind(0) for part in v4.unbind(2))
    c_t = cells.unbind(0)
    cu_t = cells.unsqueeze(2).unbind(0)  # (batch, 1, H): broadcast over the i, f pair
    s_t, h_t = squashed.unbind(0), hs.unbind(0)
    h, c, cu = h0, c0, c0.unsqueeze(1)
    for t in range(steps):
        rec.add_(g4_t[t], h)
        i, f, g, o = i_t[t], f_t[t], g_t[t], o_t[t]
        if peep:
            if_t[t].addcmul_(cu, p_if)
        if use_i and use_f and not coupled:
            if_t[t].sigmoid_()
        else:
            if use_i:
                i.sigmoid_()
            else:
                i.fill_(1.0)
            if coupled:
                torch.neg(i, out=f).add_(1.0)
            elif use_f:
                f.sigmoid_()
            else:
                f.fill_(1.0)
        if act_g:
            g.tanh_()
        torch.mul(f, c, out=c_t[t]).addcmul_(i, g)
        if use_o:
            if peep:
                o.addcmul_(c_t[t], p_o)
            o.sigmoid_()
        if act_s:
            torch.tanh(c_t[t], out=s_t[t])
        if use_o:
            torch.mul(o, s_t[t], out=h_t[t])
        else:
            h_t[t].copy_(s_t[t])
        h, c, cu = h_t[t], c_t[t], cu_t[t]
    return cells, squashed, hs


def _backward_loop(gates, cells, squashed, c0, w_hh, rec, p_i, p_f, p_o, d_h_ext, d_c_ext,
                   flags):  # type: ignore[no-untyped-def]
    """The reverse time loop of :class:`_LSTMSequence` in torch ops: every step's gate
    pre-activation gradient ``d_pre`` (time, batch, 4H; rows of removed or coupled gates zero)
    and the gradients of h0 and c0, from the gradients ``d_h_ext``/``d_c_ext`` (time, batch, H
    or None) reaching h(t), c(t) from outside the recurrence."""
    use_i, use_f, use_o, act_g, act_s, peep, coupled = flags
    steps, batch, hidden = cells.shape
    unwritten = not (use_i and use_f and use_o) or coupled
    d_pre = (torch.zeros_like if unwritten else torch.empty_like)(gates)
    zeros = gates.new_zeros(batch, hidden)
    if d_h_ext is None:
        d_h_ext = zeros.expand(steps, batch, hidden)
    # every step's views, made once (see _forward_loop)
    v4 = gates.view(steps, batch, 4, hidden)
    i_t, f_t, g_t, o_t = (part.unbind(0) for part in v4.unbind(2))
    d4 = d_pre.view(steps, batch, 4, hidden)
    di_t, df_t, dg_t, do_t = (part.unbind(0) for part in d4.unbind(2))
    dpre_t = d_pre.unbind(0)
    c_prev_t = (c0, *cells.unbind(0)[:-1])
    s_t = squashed.unbind(0)
    dh_ext_t = d_h_ext.unbind(0)
    dc_ext_t = None if d_c_ext is None else d_c_ext.unbind(0)
    dc = zeros
    for t in range(steps - 1, -1, -1):
        # dh(t) = external + the recurrence's d_pre(t+1) W_hh, one addmm
        dh = dh_ext_t[t] if t == steps - 1 else rec.add(dh_ext_t[t], dpre_t[t + 1])
        if dc_ext_t is not None:
            dc = dc + dc_ext_t[t]
        i, f, g, o = i_t[t], f_t[t], g_t[t], o_t[t]
        c_prev, s = c_prev_t[t], s_t[t]
        # h = o * s
        if use_o:
            _sigmoid_backward_into(dh * s, o, grad_input=do_t[t])
            ds = dh * o
        else:
            ds = dh
        dc = dc + _tanh_backward(ds, s) if act_s else dc + ds
        if use_o and peep:
            dc = dc.addcmul_(do_t[t], p_o)
        # c = f * c_prev + i * g
        if use_i:
            di = dc * g
            if coupled:  # f = 1 - i
                di.addcmul_(dc, c_prev, value=-1.0)
            _sigmoid_backward_into(di, i, grad_input=di_t[t])
            dg = dc * i
        else:
            dg = dc
        if act_g:
            _tanh_backward_into(dg, g, grad_input=dg_t[t])
        else:
            dg_t[t].copy_(dg)
        if use_f and not coupled:
            _sigmoid_backward_into(dc * c_prev, f, grad_input=df_t[t])
        dc_prev = dc * f if (use_f or coupled) else dc.clone()
        if peep:
            if use_i:
                dc_prev.addcmul_(di_t[t], p_i)
            if use_f and not coupled:
                dc_prev.addcmul_(df_t[t], p_f)
        dc = dc_prev
    return d_pre, torch.mm(dpre_t[0], w_hh), dc


def _differentiable_backward(ctx, grads):  # type: ignore[no-untyped-def]
    """The vector-Jacobian product of :class:`_LSTMSequence` as a differentiable graph: the
    forward recomputed from the saved inputs with :func:`_lstm_step` (the cell's own step, so the
    same equations) and differentiated with ``create_graph=True``
    (:func:`rnnlab.cells.base.recomputed_vjp`)."""
    (x, h0, c0, w_ih, w_hh, b_ih, b_hh, p_i, p_f, p_o, _, _, _, _, last, gs0,
     w_gg) = ctx.saved_tensors
    inputs = [x, h0, c0, w_ih, w_hh, b_ih, b_hh, p_i, p_f, p_o, gs0, w_gg]
    fgr = w_gg is not None
    spec = LSTMVariant(*ctx.flags, gate_recurrence=fgr)
    needs = ctx.needs_input_grad
    needs = (*needs[:10], *(needs[13:15] if len(needs) > 13 else (False, False)))

    def recompute(ax, ah0, ac0, aw_ih, aw_hh, ab_ih, ab_hh, ap_i, ap_f, ap_o, ags0,
                  aw_gg):  # type: ignore[no-untyped-def]
        bias = None if ab_ih is None else ab_ih + ab_hh
        state: State = (ah0, ac0, ags0) if fgr else (ah0, ac0)
        hs, cs, gs = [], [], []
        for u_t in F.linear(ax, aw_ih, bias).unbind(1):
            state = _lstm_step(spec, u_t, state, aw_hh, ap_i, ap_f, ap_o, aw_gg)
            hs.append(state[0])  # type: ignore[index]
            cs.append(state[1])  # type: ignore[index]
            if fgr:
                gs.append(state[2])  # type: ignore[index]
        out, cells = torch.stack(hs, 1), torch.stack(cs, 1)
        g_all = torch.stack(gs, 1) if fgr else None
        if last is None:
            return out, cells, hs[-1], cs[-1], g_all, (gs[-1] if fgr else None)
        rows = torch.arange(x.shape[0], device=x.device)
        return (out, cells, out[rows, last], cells[rows, last], g_all,
                g_all[rows, last] if fgr else None)

    result = recomputed_vjp(inputs, needs, recompute, grads)
    return (*result[:10], None, None, None, *result[10:], None)


__all__ = ["VARIANTS", "LSTMCell", "LSTMVariant"]
