"""The cell protocol and the machinery that runs any cell over a sequence.

A *cell* is one step of a recurrence, ``state_t = cell(x_t, state_{t-1})``:

* ``cell.input_size``, ``cell.hidden_size``;
* ``cell(x_t, state) -> new_state`` with ``x_t`` of shape ``(..., input_size)`` (usually
  ``(batch, input_size)``); the step is *pure*: it neither mutates the state nor the parameters and
  keeps no Python-side cache, so ``torch.func.jvp``/``vmap``/``functional_call`` work through it;
* ``cell.initial_state(batch) -> state`` (zeros on the cell's device and dtype);
* ``cell.hidden(state) -> h`` of shape ``(batch, hidden_size)``, the part a readout sees;
* a state is a tensor or a (nested) tuple of tensors, e.g. ``(h, c)`` for the LSTM.

Internally a step is split in two so that layers can hoist work out of the time loop:
``cell(x_t, s) == cell.step(cell.project_input(x_t), s)``, where ``project_input`` is the part
of the step that depends on the input only (an affine map for every cell here) and is applied to
the whole ``(batch, time, features)`` sequence in one matrix product.

:func:`run_cell` runs a cell over a sequence, with variable lengths and, when asked, every step's
state. Cells may offer faster implementations of the whole sequence (torch's fused kernel when the
math is identical, a hand-written sequence gradient); ``impl="loop"`` always runs the plain step in
a Python loop under autograd, which supports everything autograd does: double backward,
forward-mode AD and every ``torch.func`` transform.

Higher-order differentiation picks its path by itself: ``impl="auto"`` runs the loop whenever a
``torch.func`` transform is active (``jvp``, ``vjp``, ``grad``, ``jacrev``, ``vmap``...), an input,
state or parameter is a forward-mode dual tensor, or the caller is inside
:func:`twice_differentiable` (what the Hessian-free optimizer wraps its forward pass in, since
whether a graph will be differentiated twice is only known at backward time). An explicit
``"fused"`` or ``"handwritten"`` under a transform or forward-mode AD raises an error naming
``impl="loop"``: neither has a forward-mode rule.

(Over 500 lines: the cell protocol, the one sequence runner with its implementations (loop,
torch's fused kernels and their cuDNN layout, the helpers of the hand-written backward passes)
and the constructor pieces every cell shares. The kernel helpers and the constructor pieces are
the next candidates to move into modules of their own.)
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Union

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnlab._tree import tree_concat, tree_leaves, tree_map, tree_split
from rnnlab._validation import (  # noqa: F401 (check_finite_float: its old import path)
    check_bool,
    check_choice,
    check_finite_float,
    check_positive_int,
    check_tensor,
    functorch_active,
    is_tracing,
    static_checks,
)

State = Union[torch.Tensor, tuple["State", ...]]  # noqa: UP007 (a recursive alias needs Union)

IMPLS = ("auto", "fused", "handwritten", "loop")


# --------------------------------------------------------------------------------------------
# Which autograd a sequence runs under: the fast impls support first-order reverse mode only
_higher_order = threading.local()


@contextmanager
def twice_differentiable() -> Iterator[None]:
    """Within this context ``impl="auto"`` runs every cell as the plain step in a loop.

    For code that will differentiate the graph it builds twice (``create_graph=True`` backward,
    e.g. a Gauss-Newton or Hessian-vector product by the double-vjp identity
    ``J v = d/du (J^T u) . v``): the loop's graph is made of torch's own differentiable ops. The
    fused and hand-written impls are only faster at first order (the hand-written LSTM's double
    backward recomputes the sequence with the loop, and cuDNN has no double backward at all).
    Explicit ``impl`` choices are left alone. Thread-local and re-entrant.
    """
    depth = getattr(_higher_order, "depth", 0)
    _higher_order.depth = depth + 1
    try:
        yield
    finally:
        _higher_order.depth = depth


def higher_order_reason(tensors: Iterable[torch.Tensor]) -> str | None:
    """Why a sequence must run as the plain loop, or None: a ``torch.func`` transform is active,
    one of ``tensors`` carries a forward-mode tangent, or :func:`twice_differentiable` is on."""
    if functorch_active():
        return "under a torch.func transform (jvp, vjp, grad, jacrev, vmap, ...)"
    # a dual tensor exists only inside a dual_level (its counter starts at -1; should torch
    # rename it, every tensor is looked at, which is only slower)
    open_level = getattr(fwAD, "_current_level", 0) >= 0
    if open_level and any(fwAD.unpack_dual(t).tangent is not None for t in tensors):
        return "under forward-mode AD (a dual tensor among the inputs, state or parameters)"
    if getattr(_higher_order, "depth", 0) > 0:
        return "inside twice_differentiable()"
    return None


# --------------------------------------------------------------------------------------------
# States as trees of tensors
def uniform_init_(p: torch.Tensor, bound: float, generator: torch.Generator | None) -> None:
    """``p`` ~ Uniform(-bound, bound) in place, drawn from ``generator``.

    A generator lives on one device (a ``torch.Generator()`` on the CPU), and an in-place draw on
    a parameter of another device is refused by torch; such a draw is made on the generator's
    device in ``p``'s dtype and copied over, so a seed gives a module on the GPU the same
    weights as on the CPU (in the same dtype). ``generator=None``: torch's default generator of
    ``p``'s device."""
    if generator is None or generator.device == p.device:
        p.uniform_(-bound, bound, generator=generator)
    else:
        p.copy_(torch.empty(p.shape, dtype=p.dtype, device=generator.device)
                .uniform_(-bound, bound, generator=generator))


# The state-tree helpers live in rnnlab._tree (one set for the whole package); these are their
# public spellings.
map_state = tree_map
flatten_state = tree_leaves
concat_state = tree_concat
split_state = tree_split


def _check_structure(name: str, state: object, template: object) -> None:
    """Raise if ``state`` does not have the nesting of ``template`` (leaf vs tuple, arity)."""
    if not isinstance(template, tuple):
        if not isinstance(state, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(state).__name__}")
        return
    if not isinstance(state, (tuple, list)):
        raise TypeError(
            f"{name} must be a tuple of {len(template)} states, got {type(state).__name__}"
        )
    if len(state) != len(template):
        raise ValueError(f"{name} must have {len(template)} parts, got {len(state)}")
    for k, (part, ref) in enumerate(zip(state, template, strict=True)):
        _check_structure(f"{name}[{k}]", part, ref)


def _flatten_sizes(sizes: object) -> list[int]:
    if isinstance(sizes, tuple):
        return [leaf for part in sizes for leaf in _flatten_sizes(part)]
    return [sizes]  # type: ignore[list-item]


def _leaf_names(name: str, sizes: object, part_names: tuple[str, ...]) -> list[str]:
    """Human names of the state's leaves, depth first: ``state0[1] (c)``, ``state0[1][0]``."""
    if not isinstance(sizes, tuple):
        return [name]
    names = []
    for k, part in enumerate(sizes):
        label = f"{name}[{k}]"
        if not isinstance(part, tuple) and k < len(part_names):
            label += f" ({part_names[k]})"
        names.extend(_leaf_names(label, part, ()) if isinstance(part, tuple) else [label])
    return names


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` as a positive int. A symbolic size passes through unchecked, so that a
    traced graph keeps its batch dimension dynamic: while ``torch.jit.trace`` runs,
    ``x.shape[0]`` is a 0-d tensor the tracer follows, and under ``torch.export``/``compile``
    with a dynamic batch it is a ``torch.SymInt``."""
    if isinstance(batch_size, torch.SymInt) or (
        isinstance(batch_size, torch.Tensor) and batch_size.dim() == 0 and torch.jit.is_tracing()
    ):
        return batch_size  # type: ignore[return-value]
    return check_positive_int("batch_size", batch_size)


# --------------------------------------------------------------------------------------------
class RecurrentCell(nn.Module):
    """Base class of the cells: see the module docstring for the protocol.

    Subclasses set ``input_size``/``hidden_size`` and implement :meth:`step` and
    :meth:`initial_state`; they override :meth:`project_input` to hoist the input's affine map out
    of the time loop, :meth:`hidden` when the state is not ``h`` itself or a tuple starting with
    ``h``, and :meth:`available_impls`/:meth:`_sequence` when they have faster whole-sequence code.
    """

    input_size: int
    hidden_size: int
    #: names of the state's parts, for messages and documentation ("h",) or ("h", "c")
    state_names: tuple[str, ...] = ("h",)

    def fused_weights(self) -> tuple[str, list[torch.Tensor]] | None:
        """``(kind, [weight_ih, weight_hh(, bias_ih, bias_hh)])`` when the cell runs torch's
        fused kernel (:func:`fused_rnn`), else None."""
        return None

    def layout_for_cudnn(self) -> None:
        """On CUDA, lay the fused kernel's weights out in one cuDNN buffer
        (:func:`flatten_for_cudnn`); a no-op elsewhere. Called when the cell is built and
        after it is moved or cast, as torch's RNN modules do."""
        spec = self.fused_weights()
        if spec is not None:
            flatten_for_cudnn(*spec)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        result = super()._apply(fn, recurse)
        self.layout_for_cudnn()
        return result

    def __setstate__(self, state: dict) -> None:
        # copy.deepcopy and unpickling clone each parameter on its own
        super().__setstate__(state)
        self.layout_for_cudnn()

    # -- the step ------------------------------------------------------------------------------
    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input-only part of a step, for inputs of any leading shape (default: ``x``)."""
        return x

    def step(self, u_t: torch.Tensor, state: State) -> State:
        """One step from the projected input ``u_t = project_input(x_t)``."""
        raise NotImplementedError

    def forward(self, x_t: torch.Tensor, state: State) -> State:
        """``new_state = cell(x_t, state)``: one pure step of the recurrence.

        Only the sizes of the last dimensions are checked here (that also works under
        ``torch.func.vmap``); the data checks (NaN/inf, dtype, batch) are done by the layers.
        """
        if not isinstance(x_t, torch.Tensor):
            raise TypeError(f"x_t must be a torch.Tensor, got {type(x_t).__name__}")
        with static_checks():
            if x_t.dim() == 0 or x_t.shape[-1] != self.input_size:
                raise ValueError(
                    f"x_t must have {self.input_size} features in its last dimension "
                    f"(batch, input_size), got shape {tuple(x_t.shape)}"
                )
            self._check_state_sizes(state)
        return self.step(self.project_input(x_t), state)

    def state_sizes(self) -> object:
        """The width of every part of the state, nested like the state: ``H`` or ``(H, H)``."""
        return self.hidden_size

    def initial_state(self, batch_size: int) -> State:
        """The zero state for ``batch_size`` sequences, on the cell's device and dtype."""
        batch_size = check_batch_size(batch_size)
        ref = self._reference_parameter()

        def zeros(sizes: object) -> State:
            if isinstance(sizes, tuple):
                return tuple(zeros(part) for part in sizes)
            return ref.new_zeros(batch_size, sizes)

        return zeros(self.state_sizes())

    def hidden(self, state: State) -> torch.Tensor:
        """The ``(batch, hidden_size)`` part of the state a readout sees."""
        while not isinstance(state, torch.Tensor):
            state = state[0]
        return state

    # -- helpers -------------------------------------------------------------------------------
    def _reference_parameter(self) -> torch.Tensor:
        for p in self.parameters():
            return p
        raise RuntimeError(f"{type(self).__name__} has no parameters")

    @property
    def dtype(self) -> torch.dtype:
        return self._reference_parameter().dtype

    @property
    def device(self) -> torch.device:
        return self._reference_parameter().device

    def _check_state_sizes(self, state: State) -> None:
        template = self.state_sizes()
        _check_structure("state", state, template)
        for leaf, width, label in zip(
            flatten_state(state), _flatten_sizes(template),
            _leaf_names("state", template, self.state_names), strict=True,
        ):
            if leaf.dim() == 0 or leaf.shape[-1] != width:
                raise ValueError(
                    f"{label} of {type(self).__name__} must have {width} features in its last "
                    f"dimension, got shape {tuple(leaf.shape)}"
                )

    def check_input(
        self, x: torch.Tensor, name: str = "x", *, check_finite: bool | str | None = None
    ) -> torch.Tensor:
        """Validate a ``(batch, time, input_size)`` sequence against this cell: shape, dtype and
        device, and NaN/inf as ``check_finite`` says (``None``: the global switch,
        :func:`rnnlab.set_check_finite`; never while tracing or compiling)."""
        return check_tensor(
            name, x, ndim=3, last_dim=self.input_size, dtype=self.dtype, device=self.device,
            finite=check_finite, layout="(batch, time, features)",
        )

    def check_state(
        self, state: object, batch_size: int, name: str = "state0", *,
        check_finite: bool | str | None = None,
    ) -> State:
        """Check a full state for ``batch_size`` sequences: nesting, shape, dtype, device, and
        NaN/inf as ``check_finite`` says (see :meth:`check_input`)."""
        template = self.initial_state(batch_size)
        sizes = self.state_sizes()
        _check_structure(name, state, sizes)
        for leaf, ref, part in zip(
            flatten_state(state), flatten_state(template),  # type: ignore[arg-type]
            _leaf_names(name, sizes, self.state_names), strict=True,
        ):
            check_tensor(part, leaf, ndim=2, dtype=ref.dtype, device=ref.device,
                         finite=check_finite, layout="(batch, features)")
            if leaf.shape != ref.shape:
                raise ValueError(
                    f"{part} has shape {tuple(leaf.shape)}, expected {tuple(ref.shape)} "
                    f"(batch {batch_size}, {ref.shape[1]} features) for {type(self).__name__}"
                )
        return state  # type: ignore[return-value]

    # -- whole sequences -----------------------------------------------------------------------
    def available_impls(self, return_states: bool = False) -> tuple[str, ...]:
        """Implementations of a whole sequence this cell offers, the preferred first."""
        return ("loop",)

    def _sequence(
        self,
        impl: str,
        x: torch.Tensor,
        state0: State,
        lengths: torch.Tensor | None,
        return_states: bool,
    ) -> tuple[torch.Tensor, State, State | None]:
        """Run a whole (validated) sequence with ``impl`` (one of :meth:`available_impls`)."""
        raise NotImplementedError(f"{type(self).__name__} has no implementation {impl!r}")

    def _run(
        self,
        x: torch.Tensor,
        state0: State,
        lengths: torch.Tensor | None,
        return_states: bool,
        impl: str,
    ) -> tuple[torch.Tensor, State, State | None]:
        available = self.available_impls(return_states)
        if impl == "auto" and is_tracing():
            # the hand-written sequence writes into preallocated buffers in place inside an
            # autograd.Function: jit.trace and export cannot replay it, and a compiler does better
            # with the plain step (torch's fused kernel traces fine)
            available = tuple(i for i in available if i != "handwritten") or ("loop",)
        chosen = available[0] if impl == "auto" else impl
        if chosen not in available and chosen != "loop":
            raise ValueError(
                f"impl={impl!r} is not available for {self!r}"
                + (" with return_states=True" if return_states else "")
                + f"; available: {', '.join(dict.fromkeys((*available, 'loop')))}"
            )
        if chosen == "handwritten" and (torch.jit.is_tracing() or torch.compiler.is_exporting()):
            raise RuntimeError(
                f"impl='handwritten' of {type(self).__name__} cannot be traced by torch.jit.trace "
                "or torch.export (it writes into buffers in place inside an autograd.Function); "
                "use impl='auto' (which picks another impl while tracing) or impl='loop'"
            )
        if chosen != "loop":
            # lazily: the tensors are only looked at inside a forward-AD dual_level
            reason = higher_order_reason(
                itertools.chain((x,), flatten_state(state0), self.parameters())
            )
            if reason is not None and impl == "auto":
                chosen = "loop"  # the only impl whose graph every autograd mode can traverse
            elif reason is not None and reason != "inside twice_differentiable()":
                # an explicit fused/handwritten impl under forward mode: neither has a jvp rule
                # (torch's own message about setup_context or packing would not say what to do)
                raise RuntimeError(
                    f"impl={impl!r} of {type(self).__name__} cannot run {reason}: it has no "
                    "forward-mode rule; use impl='loop' (or impl='auto', which picks the loop "
                    "there by itself)"
                )
        if chosen == "loop":
            return _loop(self, x, state0, lengths, return_states)
        return self._sequence(chosen, x, state0, lengths, return_states)


# --------------------------------------------------------------------------------------------
def _loop(
    cell: RecurrentCell,
    x: torch.Tensor,
    state: State,
    lengths: torch.Tensor | None,
    return_states: bool,
) -> tuple[torch.Tensor, State, State | None]:
    """The step in a Python loop under autograd; masks keep finished sequences' states fixed."""
    steps = x.shape[1]
    projected = cell.project_input(x)
    masks = None
    if lengths is not None:
        # (time, batch, 1) booleans: step t is real for sequence b iff t < lengths[b]
        masks = (torch.arange(steps, device=x.device)[:, None] < lengths[None, :]).unsqueeze(-1)
    outputs: list[torch.Tensor] = []
    history: list[State] = []
    for t, u_t in enumerate(projected.unbind(1)):
        new = cell.step(u_t, state)
        if masks is not None:
            keep = masks[t]
            # torch.where (not a blend): a padded step's values never reach the state or a grad
            new = map_state(lambda n, o, m=keep: torch.where(m, n, o), new, state)
        state = new
        h = cell.hidden(state)
        if masks is not None:
            h = torch.where(masks[t], h, 0.0)
        outputs.append(h)
        if return_states:
            if masks is not None:
                history.append(
                    map_state(lambda s, m=masks[t]: torch.where(m, s, 0.0), state)
                )
            else:
                history.append(state)
    states = map_state(lambda *s: torch.stack(s, 1), *history) if return_states else None
    return torch.stack(outputs, 1), state, states


def check_lengths(
    lengths: object, batch_size: int, steps: int, device: torch.device
) -> torch.Tensor:
    """Validate sequence lengths: one integer per sequence in ``1..steps``; an int64 tensor."""
    if isinstance(lengths, torch.Tensor):
        if lengths.dim() != 1:
            raise ValueError(
                f"lengths must be 1-D (one per sequence), got shape {tuple(lengths.shape)}"
            )
        dt = lengths.dtype
        if dt.is_floating_point or dt.is_complex or dt == torch.bool:
            raise TypeError(f"lengths must hold integers, got dtype {dt}")
        values = lengths.to(device=device, dtype=torch.int64)
    elif isinstance(lengths, Sequence) and not isinstance(lengths, str):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in lengths):
            raise TypeError("lengths must be a sequence of ints or an integer tensor")
        values = torch.tensor(list(lengths), dtype=torch.int64, device=device)
    else:
        raise TypeError(
            f"lengths must be an integer tensor or a list of ints, got {type(lengths).__name__}"
        )
    if values.numel() != batch_size:
        raise ValueError(
            f"lengths has {values.numel()} entries but the input has {batch_size} sequences"
        )
    if is_tracing():
        # the range is data: a traced graph cannot branch on it (the caller's promise)
        return values
    low, high = int(values.min()), int(values.max())
    if low < 1 or high > steps:
        raise ValueError(
            f"every length must be between 1 and the input's {steps} time steps, "
            f"got min {low}, max {high}"
        )
    return values


def run_cell(
    cell: RecurrentCell,
    x: torch.Tensor | PackedSequence,
    state0: State | None = None,
    lengths: torch.Tensor | Sequence[int] | None = None,
    return_states: bool = False,
    impl: str = "auto",
    *,
    check_finite: bool | str | None = None,
) -> tuple[torch.Tensor | PackedSequence, State, State | None]:
    """Run ``cell`` over ``x`` ``(batch, time, input_size)``: ``(outputs, final_state, states)``.

    * ``outputs``: ``cell.hidden(state_t)`` for every step, ``(batch, time, hidden_size)``;
    * ``final_state``: the state after each sequence's own last step;
    * ``states``: with ``return_states``, every step's full state, each leaf stacked on dim 1
      (``(batch, time, width)``), else ``None``.

    Variable lengths: either ``lengths`` (one int per sequence, ``1..time``) with a padded ``x``, or
    a :class:`~torch.nn.utils.rnn.PackedSequence` (then ``outputs`` is packed the same way, like
    ``torch.nn.LSTM``). Outputs and recorded states at padded steps are zero; padded input values
    never influence any output, final state or gradient.

    ``impl``: ``"auto"`` (the fastest the cell offers; the loop under a ``torch.func`` transform,
    forward-mode AD or :func:`twice_differentiable`), ``"fused"`` (torch's kernel, only when its
    math is the cell's), ``"handwritten"`` (a hand-written sequence gradient), ``"loop"`` (the pure
    step under autograd: every autograd mode, any order).

    ``check_finite``: scan ``x`` and ``state0`` for NaN/inf (``True``/``False``/``"auto"``;
    ``None``, the default, follows :func:`rnnlab.set_check_finite`, whose ``"auto"`` scans here,
    a whole-sequence entry point, on every device). Shapes, dtypes and devices are always
    checked; nothing data-dependent runs while tracing, exporting or compiling, so
    ``torch.jit.trace``, ``torch.export`` and ``torch.compile(fullgraph=True)`` see a static
    graph.
    """
    if not isinstance(cell, RecurrentCell):
        raise TypeError(f"cell must be a RecurrentCell, got {type(cell).__name__}")
    check_choice("impl", impl, IMPLS)
    packed = None
    if isinstance(x, PackedSequence):
        if lengths is not None:
            raise ValueError("give lengths or a PackedSequence, not both")
        packed = x
        x, lengths = pad_packed_sequence(packed, batch_first=True)
    x = cell.check_input(x, check_finite=check_finite)
    batch, steps, _ = x.shape
    if lengths is not None:
        lengths = check_lengths(lengths, batch, steps, x.device)
    state0 = (cell.initial_state(batch) if state0 is None
              else cell.check_state(state0, batch, check_finite=check_finite))
    outputs, final, states = run_checked(cell, x, state0, lengths, return_states, impl)
    if packed is not None:
        outputs = repack(outputs, packed)
    return outputs, final, states


def run_checked(
    cell: RecurrentCell,
    x: torch.Tensor,
    state0: State,
    lengths: torch.Tensor | None,
    return_states: bool = False,
    impl: str = "auto",
) -> tuple[torch.Tensor, State, State | None]:
    """:func:`run_cell` past its checks, for callers that made them already (the ``rnnlab.nn``
    layers check their input and ``hx`` once per call, not once per layer and direction): ``x``
    a padded ``(batch, time, input_size)`` tensor on the cell's device and dtype, ``state0`` a
    full state of the cell's nesting and shapes, ``lengths`` None or an int64 tensor on ``x``'s
    device with every entry in ``1..time``, ``impl`` one of :data:`IMPLS`. Nothing is checked
    here: a wrong argument gives whatever error the kernel raises, if any."""
    if lengths is not None and not is_tracing() and bool((lengths == x.shape[1]).all()):
        lengths = None  # nothing is padded: the plain path is exact and faster
    return cell._run(x, state0, lengths, return_states, impl)


def repack(padded: torch.Tensor, like: PackedSequence) -> PackedSequence:
    """Pack ``padded`` (batch first, original order) with the batch sizes and order of ``like``."""
    _, lengths = pad_packed_sequence(like, batch_first=True)
    order = like.sorted_indices
    if order is None:
        data = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=True).data
    else:
        sorted_padded = padded.index_select(0, order.to(padded.device))
        data = pack_padded_sequence(
            sorted_padded, lengths[order.cpu()], batch_first=True, enforce_sorted=True
        ).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


# --------------------------------------------------------------------------------------------
def flatten_for_cudnn(mode: str, weights: list[torch.Tensor], *, per_layer: int | None = None,
                      input_size: int | None = None, hidden_size: int | None = None,
                      proj_size: int = 0, num_layers: int = 1, batch_first: bool = True,
                      bidirectional: bool = False) -> None:
    """Lay the weights out in one contiguous buffer as cuDNN wants them (what
    ``nn.LSTM.flatten_parameters`` does): otherwise cuDNN copies them into one at every call
    and warns "RNN module weights are not part of single contiguous chunk of memory". The
    parameters stay the same objects (their storage is re-pointed, in place, under no_grad),
    so optimisers and state_dict are unaffected. Called, as in torch's RNN modules, only when a
    module is built or moved (:meth:`RecurrentCell.layout_for_cudnn`, the ``rnnlab.nn``
    layers' ``flatten_parameters``), never from the forward pass: storage that other code
    re-points later (a sharded optimiser's bucket views, say) and tensors substituted by
    ``torch.func.functional_call`` are left alone, and cuDNN then compacts per call, which is
    correct.

    ``mode``: ``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ``"rnn_relu"`` (any case). The sizes default
    to one layer, one direction, read off the weights (a cell's ``weight_ih``, ``weight_hh``
    and biases); a stack gives its own."""
    first = weights[0]
    if (len({w.data_ptr() for w in weights}) != len(weights)
            or any(w.dtype != first.dtype or not w.is_cuda
                   or not torch.backends.cudnn.is_acceptable(w) for w in weights)
            or not torch._use_cudnn_rnn_flatten_weight()):
        return
    from torch.backends.cudnn import rnn as cudnn_rnn

    try:
        with torch.no_grad(), torch.cuda.device_of(first):
            torch._cudnn_rnn_flatten_weight(
                weights, len(weights) if per_layer is None else per_layer,
                first.shape[1] if input_size is None else input_size,
                cudnn_rnn.get_cudnn_mode(mode.upper()),
                weights[1].shape[1] if hidden_size is None else hidden_size,
                proj_size, num_layers, batch_first, bidirectional)
    except RuntimeError:  # pragma: no cover - cuDNN refused: it compacts per call instead
        return


def input_projection_grads(
    d_pre: torch.Tensor, x: torch.Tensor, w_ih: torch.Tensor, needs_x: bool, needs_w: bool,
    needs_b: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The gradients through ``A = X W_ih^T + b`` of a whole sequence, each one product over all
    steps: ``dX = dA W_ih``, ``dW_ih = dA^T X``, ``db = sum dA`` (None where not needed), with
    ``d_pre`` time-major ``(time, batch, rows)`` and ``x`` batch-first ``(batch, time, D)``."""
    steps, batch, rows = d_pre.shape
    flat = d_pre.reshape(steps * batch, rows)
    dx = (d_pre @ w_ih).transpose(0, 1) if needs_x else None
    dw = flat.t() @ x.transpose(0, 1).reshape(steps * batch, -1) if needs_w else None
    db = flat.sum(0) if needs_b else None
    return dx, dw, db


def recomputed_vjp(
    inputs: Sequence[torch.Tensor | None],
    needs: Sequence[bool],
    recompute: Callable[..., Sequence[torch.Tensor]],
    grads: Sequence[torch.Tensor | None],
) -> list[torch.Tensor | None]:
    """The vector-Jacobian product of a hand-written sequence as a differentiable graph (its
    double backward): ``recompute(*aliases)`` runs the sequence again in plain differentiable
    ops and returns its outputs, and ``torch.autograd.grad(..., create_graph=True)`` gives the
    gradient with respect to each input that ``needs`` it (None for the others) as a function of
    the inputs and of ``grads`` (one per output, None where no gradient arrived).

    The inputs enter through aliases (``view_as``): a gradient with respect to the alias is the
    partial derivative through this sequence only, even when one input is computed from another
    (e.g. ``x`` from ``w_ih``), while the alias keeps the link to the input's history for the
    next order. Inputs that do not reach an output get None (autograd reads zero)."""
    with torch.enable_grad():
        aliases = [t.view_as(t) if (t is not None and need) else t
                   for t, need in zip(inputs, needs, strict=True)]
        outputs = recompute(*aliases)
        pairs = [(o, g) for o, g in zip(outputs, grads, strict=True) if g is not None]
        wanted = [a for a, need in zip(aliases, needs, strict=True) if need and a is not None]
        found = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                    create_graph=True, allow_unused=True) if pairs else ()
    it = iter(found)
    return [next(it) if (need and a is not None) else None
            for a, need in zip(aliases, needs, strict=True)]


#: the smallest weight (rows x columns) for which :class:`StepMatmul` uses oneDNN's prepacked
#: weights; below it one BLAS call per step is faster (measured at batch 16, docs/speed.md)
PACKED_MIN_NUMEL = 1 << 18


class StepMatmul:
    """``a @ weight.T`` for the many small products of a recurrence (one per time step with the
    same ``weight``), for use inside a hand-written sequence (no autograd through it):
    ``sm.add(c, a) = c + a @ weight.T`` and ``sm.add_(c, a)`` (in place).

    On the CPU in float32 with oneDNN (``torch.backends.mkldnn``) and a ``weight`` of at least
    :data:`PACKED_MIN_NUMEL` entries (e.g. the LSTM's 4H x H from H = 256), the weight is
    reordered once into oneDNN's blocked layout and every step reuses it (as torch's own CPU
    LSTM does through oneDNN's RNN primitive); elsewhere (GPU, float64, small sizes, a torch
    without the op) one ``addmm`` per step.
    """

    def __init__(self, weight: torch.Tensor, batch_size: int) -> None:
        self.weight_t = weight.t()
        self.packed = None
        if (weight.device.type == "cpu" and weight.dtype == torch.float32
                and weight.numel() >= PACKED_MIN_NUMEL
                and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
                and not is_tracing()):
            try:
                ops = torch.ops.mkldnn
                self._linear = ops._linear_pointwise
                with torch.no_grad():
                    self.packed = ops._reorder_linear_weight(weight.detach().contiguous(),
                                                             batch_size)
            except (AttributeError, RuntimeError):  # pragma: no cover - no such op here
                self.packed = None

    def add(self, c: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return torch.addmm(c, a, self.weight_t)
        return self._linear(a, self.packed, None, "none", [], "").add_(c)

    def add_(self, c: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return c.addmm_(a, self.weight_t)
        return c.add_(self._linear(a, self.packed, None, "none", [], ""))


def native_packed_weight(weight: torch.Tensor, batch_size: int) -> torch.Tensor | None:
    """The prepacked ``weight`` (:class:`StepMatmul`'s oneDNN layout, or None) to hand to the
    C++ loops of :mod:`rnnlab.cells._fused`: None with one thread, where the extension runs
    oneDNN's micro-kernel on a copy of its own, so a reorder would be wasted (docs/speed.md)."""
    if torch.get_num_threads() == 1:
        return None
    return StepMatmul(weight, batch_size).packed


def fused_rnn(
    kind: str,
    x: torch.Tensor,
    state0: State,
    weights: list[torch.Tensor],
    lengths: torch.Tensor | None,
) -> tuple[torch.Tensor, State]:
    """One layer of torch's fused RNN kernel (``torch.lstm``/``gru``/``rnn_tanh``/``rnn_relu``).

    ``weights`` is ``[weight_ih, weight_hh(, bias_ih, bias_hh)]`` in torch.nn's layout; the state
    is ``h`` or ``(h, c)`` of shape ``(batch, hidden)``. With ``lengths`` the sequence is packed, so
    the kernel itself stops each sequence at its end (the final state is the one at its last step).
    """
    fn = {"lstm": torch.lstm, "gru": torch.gru, "rnn_tanh": torch.rnn_tanh,
          "rnn_relu": torch.rnn_relu}[kind]
    has_biases = len(weights) == 4
    # train: cuDNN keeps what backward needs only in training mode (else backward raises);
    # dropout is 0, so this changes nothing else
    # (while jit-tracing always True, so that the trace does not depend on the grad mode: its
    # check re-runs it under no_grad)
    train = torch.is_grad_enabled() or torch.jit.is_tracing()
    hx: State = (
        (state0[0].unsqueeze(0), state0[1].unsqueeze(0)) if kind == "lstm"  # type: ignore[index]
        else state0.unsqueeze(0)  # type: ignore[union-attr]
    )
    if lengths is None:
        result = fn(x, hx, weights, has_biases, 1, 0.0, train, False, True)
        out = result[0]
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        order = packed.sorted_indices
        hx = map_state(lambda s: s.index_select(1, order.to(s.device)), hx)
        result = fn(packed.data, packed.batch_sizes, hx, weights, has_biases, 1, 0.0, train,
                    False)
        out, _ = pad_packed_sequence(
            PackedSequence(result[0], packed.batch_sizes, order, packed.unsorted_indices),
            batch_first=True, total_length=x.shape[1],
        )
        unsort = packed.unsorted_indices.to(x.device)
        result = (result[0], *(r.index_select(1, unsort) for r in result[1:]))
    if kind == "lstm":
        return out, (result[1][0], result[2][0])
    return out, result[1][0]


def torch_shaped(
    *old_order: str, old_third_is_bool: bool = False
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a cell's ``__init__(self, input_size, hidden_size, bias=True, *, ...)`` (torch's
    order) so that callers of the order before it, ``(input_size, hidden_size, *old_order)`` with
    the options positional, are never silently misread:

    * one positional bool after ``hidden_size`` is ``bias``, as in torch; where the old third
      argument was a bool too (``old_third_is_bool``: the LSTM's ``peepholes``) a
      ``FutureWarning`` says that its meaning changed;
    * anything else positional after ``hidden_size`` (a str, a number, several values) can only
      be the old order: it keeps its old meaning for this release, with a ``DeprecationWarning``
      that spells the call to write now.
    """
    def decorate(init: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(init)
        def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> None:
            if len(args) > 2:
                args, kwargs = _legacy_positional(
                    type(self).__name__, old_order, old_third_is_bool, args, kwargs
                )
            init(self, *args, **kwargs)

        return wrapper

    return decorate


def _legacy_positional(
    cls: str, old_order: tuple[str, ...], old_third_is_bool: bool, args: tuple,
    kwargs: dict[str, Any],
) -> tuple[tuple, dict[str, Any]]:
    extra = args[2:]
    if len(extra) == 1 and isinstance(extra[0], bool):
        if old_third_is_bool:
            warnings.warn(
                f"{cls}({args[0]!r}, {args[1]!r}, {extra[0]!r}): the third positional argument "
                f"is bias, as in torch; before it was {old_order[0]}. Pass "
                f"bias={extra[0]!r} or {old_order[0]}={extra[0]!r} by keyword to say which",
                FutureWarning, stacklevel=3,
            )
        return args, kwargs
    if len(extra) > len(old_order):
        raise TypeError(
            f"{cls} takes input_size, hidden_size and bias positionally, the options by keyword; "
            f"got {len(args)} positional arguments"
        )
    named = dict(zip(old_order, extra, strict=False))
    twice = sorted(set(named) & set(kwargs))
    if twice:
        raise TypeError(f"{cls} got multiple values for {', '.join(twice)}")
    call = ", ".join([repr(args[0]), repr(args[1])] + [f"{k}={v!r}" for k, v in named.items()])
    warnings.warn(
        f"{cls}'s options after hidden_size are keyword-only now (torch's order: input_size, "
        f"hidden_size, bias=True, *, ...); positional, {', '.join(named)} "
        f"{'keeps its' if len(named) == 1 else 'keep their'} old meaning for this release only: "
        f"write {cls}({call})",
        DeprecationWarning, stacklevel=3,
    )
    return args[:2], {**kwargs, **named}


# --------------------------------------------------------------------------------------------
# Constructor pieces the torch-shaped cells share: sizes, torch.nn's affine parameters, the
# uniform initialization and the fused kernel over a state that is h itself.
def init_sizes(cell: nn.Module, input_size: object, hidden_size: object, bias: object) -> bool:
    """Set ``cell.input_size``/``cell.hidden_size`` (positive ints) and return ``bias`` (a bool),
    each checked with a message naming it."""
    cell.input_size = check_positive_int("input_size", input_size)
    cell.hidden_size = check_positive_int("hidden_size", hidden_size)
    return check_bool("bias", bias)


def add_affine_parameters(
    cell: nn.Module,
    rows: int,
    bias: bool,
    *,
    recurrent_bias: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Register torch.nn's ``weight_ih`` (rows x D), ``weight_hh`` (rows x H), ``bias_ih`` and
    ``bias_hh`` (rows), in that order (the order the initialization draws them in); an absent
    bias (``bias=False``, or ``recurrent_bias=False`` for ``bias_hh``) is registered as None."""
    factory = {"device": device, "dtype": dtype}
    cell.weight_ih = nn.Parameter(torch.empty(rows, cell.input_size, **factory))
    cell.weight_hh = nn.Parameter(torch.empty(rows, cell.hidden_size, **factory))
    for name, present in (("bias_ih", bias), ("bias_hh", bias and recurrent_bias)):
        if present:
            cell.register_parameter(name, nn.Parameter(torch.empty(rows, **factory)))
        else:
            cell.register_parameter(name, None)


def uniform_reset_(cell: nn.Module, generator: torch.Generator | None = None) -> None:
    """Every parameter ~ Uniform(-1/sqrt(H), 1/sqrt(H)) (torch.nn.RNN/GRU/LSTM's initialization),
    drawn in ``parameters()`` order from ``generator``."""
    bound = 1.0 / math.sqrt(cell.hidden_size)
    with torch.no_grad():
        for p in cell.parameters():
            uniform_init_(p, bound, generator)


def affine_weights(cell: nn.Module) -> list[torch.Tensor]:
    """``[weight_ih, weight_hh(, bias_ih, bias_hh)]`` for :func:`fused_rnn`. The kernel takes both
    biases or none: a cell with ``bias_ih`` only passes its zero ``_zero_bias_hh`` buffer."""
    weights = [cell.weight_ih, cell.weight_hh]
    if cell.bias_ih is not None:
        weights += [cell.bias_ih, cell.bias_hh if cell.bias_hh is not None else cell._zero_bias_hh]
    return weights


class TorchLayoutCell(RecurrentCell):
    """A cell whose input enters through torch.nn's ``weight_ih`` and ``bias_ih`` (registered by
    :func:`add_affine_parameters`), as ``torch.nn.RNNCellBase``: ``project_input`` is
    ``W_ih x + b_ih``, ``reset_parameters`` torch's Uniform(-1/sqrt(H), 1/sqrt(H)) for every
    parameter, and ``_sequence`` the fused kernel of :meth:`fused_weights` for a cell whose
    state is ``h`` itself (the kernel's outputs are then every step's state). Cells override
    what differs (the LSTM its input bias, initialization and hand-written sequence)."""

    weight_ih: torch.Tensor
    bias_ih: torch.Tensor | None

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, as ``torch.nn.RNN``/``GRU``/
        ``LSTM``."""
        uniform_reset_(self, generator)

    def _sequence(self, impl, x, state0, lengths, return_states):  # type: ignore[no-untyped-def]
        spec = self.fused_weights()
        if impl != "fused" or spec is None:
            return super()._sequence(impl, x, state0, lengths, return_states)
        kind, weights = spec
        outputs, final = fused_rnn(kind, x, state0, weights, lengths)
        return outputs, final, (outputs if return_states else None)


__all__ = [
    "IMPLS",
    "RecurrentCell",
    "State",
    "StepMatmul",
    "TorchLayoutCell",
    "check_batch_size",
    "check_lengths",
    "concat_state",
    "flatten_state",
    "fused_rnn",
    "higher_order_reason",
    "input_projection_grads",
    "map_state",
    "recomputed_vjp",
    "run_cell",
    "run_checked",
    "split_state",
    "twice_differentiable",
]
