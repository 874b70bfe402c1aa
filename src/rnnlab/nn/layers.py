"""Drop-in replacements for ``torch.nn.RNN``, ``torch.nn.LSTM`` and ``torch.nn.GRU``.

Same constructor, same parameter names (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``, ``weight_hr_l{k}``, ``_reverse`` for the backward direction), same inputs
(``(T, B, D)``, ``(B, T, D)`` with ``batch_first``, unbatched ``(T, D)``, ``PackedSequence``) and
outputs (``(output, h_n)``, ``(output, (h_n, c_n))``, ``h_n`` of shape
``(num_layers * num_directions, B, H_out)``) as torch's modules, plus keyword-only options that
torch lacks, each from the course's cells (:mod:`rnnlab.cells`):

* ``LSTM(peepholes=, variant=, forget_bias=)``: Gers & Schmidhuber's (2000) peepholes and the
  variants of Greff et al. (2017), ":class:`rnnlab.cells.LSTMCell`";
* ``GRU(form="cho")``: Cho et al.'s (2014) GRU, the reset gate applied before the recurrent
  matrix, :class:`rnnlab.cells.GRUCell`;
* ``RNN(transition_depth=, transition_size=, shortcut=)``: the deep-transition RNN of Pascanu et
  al. (2014), :class:`rnnlab.cells.DeepTransitionCell`.

With torch's options each layer and direction computes (torch's equations and gate order)::

    RNN:  h(t) = phi(W_ih x(t) + b_ih + W_hh h(t-1) + b_hh)                 (Elman 1990)
    LSTM: i, f, g, o = sigma, sigma, tanh, sigma of the rows of W_ih x(t) + b_ih + W_hh h(t-1)
          + b_hh;  c(t) = f * c(t-1) + i * g;  h(t) = W_hr (o * tanh(c(t)))  (W_hr = I without
          proj_size; Hochreiter & Schmidhuber 1997, Gers et al. 2000, Sak et al. 2014)
    GRU:  r, z = sigma of the rows of W_ih x(t) + b_ih + W_hh h(t-1) + b_hh;
          n = tanh(W_in x(t) + b_in + r * (W_hn h(t-1) + b_hn));  h(t) = (1 - z) * n + z * h(t-1)

Layer ``l`` reads layer ``l-1``'s outputs (both directions concatenated); in training mode, with
``dropout = p``, each layer's output but the last one's is multiplied by a Bernoulli(1-p)/(1-p)
mask (Zaremba, Sutskever & Vinyals 2014), as torch does. With the options at torch's defaults the
whole stack is one call of torch's fused kernel (``torch.lstm``, ``torch.gru``,
``torch.rnn_tanh``/``rnn_relu``, cuDNN on a GPU), i.e. exactly what ``torch.nn.LSTM`` runs;
otherwise (and under ``torch.compile``, which cannot lower those kernels) every layer and
direction runs its cell with :func:`rnnlab.cells.run_cell`.

(Over 500 lines: the three layers share one stack-of-directions runner, one state-dict
check-then-load and one torch-kernel path, which is why they stay together; each layer class
itself is short.)
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from rnnlab._validation import (
    check_bool,
    check_choice,
    check_finite_option,
    check_number,
    check_positive_int,
    finite_scan_wanted,
    raise_if_not_finite,
)
from rnnlab.cells import DeepTransitionCell, ElmanCell, GRUCell, LSTMCell
from rnnlab.cells.base import flatten_for_cudnn, repack, run_checked, uniform_init_
from rnnlab.cells.gru import FORMS
from rnnlab.cells.lstm import LSTMVariant

_META_KEY = "rnnlab"  # the key of this layer's options in a state dict's _metadata
_TORCH_LSTM = LSTMVariant(peepholes=False)


class _RecurrentLayer(nn.Module):
    """The machinery the three layers share; see the module docstring."""

    mode: str  # "LSTM", "GRU", "RNN_TANH", "RNN_RELU": torch.nn.RNNBase's names
    _gates: int  # rows of weight_ih per hidden unit

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        generator: torch.Generator | None = None,
        check_finite: bool | str | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.dropout = float(check_number("dropout", dropout, low=0.0, high=1.0))
        self.bidirectional = check_bool("bidirectional", bidirectional)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"proj_size must be a non-negative int, got {proj_size!r}")
        if proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size ({proj_size}) must be smaller than hidden_size ({self.hidden_size})"
            )
        self.proj_size = proj_size
        self.check_finite = check_finite_option(check_finite)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={self.dropout} and "
                f"num_layers={self.num_layers}", UserWarning, stacklevel=3,
            )
        self._force_cells = False  # tests: run the cells' path even where torch's kernel fits

    # -- construction (called by the subclasses once their options are set) ---------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _out_size(self) -> int:
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def _make_cell(self, input_size: int) -> nn.Module | None:
        """One layer-direction's cell on the meta device (no memory, no random draw), or None
        where torch's kernel is the only implementation (the LSTM's projection)."""
        raise NotImplementedError

    def _torch_math(self) -> bool:
        """True when the options are torch's: the stack is then torch's fused kernel."""
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        """The non-torch options that change the function (saved in the state dict's metadata)."""
        raise NotImplementedError

    def _build(self, device: torch.device | str | None, dtype: torch.dtype | None,
               generator: torch.Generator | None) -> None:
        factory = {"device": device, "dtype": dtype}
        gates, hs = self._gates * self.hidden_size, self.hidden_size
        cells: list[tuple[nn.Module | None, list[tuple[str, str]]]] = []
        names: list[str] = []
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else self._out_size * self.num_directions
            for direction in range(self.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                cell = self._make_cell(layer_in)
                binding: list[tuple[str, str]] = []
                if cell is None:  # torch's layout, in torch's order
                    shapes = [("weight_ih", (gates, layer_in)),
                              ("weight_hh", (gates, self._out_size))]
                    if self.bias:
                        shapes += [("bias_ih", (gates,)), ("bias_hh", (gates,))]
                    if self.proj_size > 0:
                        shapes.append(("weight_hr", (self.proj_size, hs)))
                else:
                    shapes = [(n, tuple(p.shape)) for n, p in cell.named_parameters()]
                for name, shape in shapes:
                    full = name.replace(".", "_") + suffix
                    self.register_parameter(full, nn.Parameter(torch.empty(shape, **factory)))
                    binding.append((name, full))
                    names.append(full)
                cells.append((cell, binding))
        # plain attributes, not submodules: the parameters are the layer's, under torch's names
        self.__dict__["_cells"] = cells
        self._flat_weights_names = names
        self.reset_parameters(generator)
        self.flatten_parameters()
        self.register_state_dict_post_hook(_save_options)

    def _bound(self, index: int) -> nn.Module:
        """Cell ``index`` (layer * num_directions + direction) computing with this layer's
        parameters as they are now (so ``.to()``, ``load_state_dict(assign=True)`` and
        ``torch.func.functional_call`` on the layer reach it)."""
        cell, binding = self._cells[index]
        for name, full in binding:
            owner, _, leaf = name.rpartition(".")
            target = cell.get_submodule(owner) if owner else cell
            target._parameters[leaf] = getattr(self, full)
        return cell

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """torch.nn's initialization, Uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter drawn in
        ``parameters()`` order from ``generator`` (None: torch's global generator, so that
        ``torch.manual_seed(s)`` gives the weights ``torch.nn.LSTM`` would get); each cell's own
        initialization (forget bias, removed gates, a deep transition's fan-ins) where the
        options are not torch's."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for index, (cell, binding) in enumerate(self._cells):
                if cell is None:
                    for _, full in binding:
                        uniform_init_(getattr(self, full), bound, generator)
                else:
                    self._bound(index).reset_parameters(generator)

    @property
    def _flat_weights(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[torch.Tensor]]:
        """The parameters per layer and direction, as ``torch.nn.RNNBase.all_weights``."""
        return [[getattr(self, full) for _, full in binding] for _, binding in self._cells]

    def flatten_parameters(self) -> None:
        """On CUDA with torch's options, lay the weights out in one cuDNN buffer (as
        ``torch.nn.LSTM.flatten_parameters``); a no-op elsewhere."""
        if not self._torch_math():
            return
        flatten_for_cudnn(self.mode, self._flat_weights,
                          per_layer=(4 if self.bias else 2) + (1 if self.proj_size > 0 else 0),
                          input_size=self.input_size, hidden_size=self.hidden_size,
                          proj_size=self.proj_size, num_layers=self.num_layers,
                          batch_first=self.batch_first, bidirectional=self.bidirectional)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        result = super()._apply(fn, recurse)
        self.flatten_parameters()
        return result

    # -- state dicts -----------------------------------------------------------------------------
    def _expected(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in self._parameters.items() if p is not None}

    def _option_mismatch(self, metadata: dict | None) -> str | None:
        """Why the state dict's function differs from this layer's (same names and shapes,
        other options), or None. A state dict without rnnlab's options (a torch.nn module's)
        holds torch's function."""
        saved = (metadata or {}).get(_META_KEY)
        mine = self._options()
        if saved is None:
            differs = {k: v for k, v in mine.items() if v != _TORCH_OPTIONS.get(k, v)}
            if not differs:
                return None
            torch_values = {k: _TORCH_OPTIONS[k] for k in differs}
            return (
                f"the state dict carries no rnnlab options, so it holds "
                f"torch.nn.{type(self).__name__}'s function ({_spell(torch_values)}), but this "
                f"layer has {_spell(differs)}: the same parameter names and shapes, a different "
                "function. Build the layer with torch's options to reproduce that module, or "
                "pass strict=False to load the numbers into this function anyway")
        differs = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if not differs:
            return None
        return ("the state dict was saved from a layer with other options ("
                + ", ".join(f"{k}={a!r} there, {b!r} here" for k, (a, b) in differs.items())
                + "): a different function; pass strict=False to load the numbers anyway")

    def _check_loadable(self, state_dict: Any, prefix: str, keys: bool) -> list[str]:
        """Every shape (and with ``keys`` every missing or unexpected key) that keeps
        ``state_dict`` from loading into this layer; empty if it loads."""
        errors: list[str] = []
        expected = self._expected()
        own = {k[len(prefix):]: v for k, v in state_dict.items()
               if k.startswith(prefix) and "." not in k[len(prefix):]}
        missing = sorted(set(expected) - set(own))
        unexpected = sorted(set(own) - set(expected))
        if keys and (missing or unexpected):
            hint = _shape_hint(self, own)
            errors.append(
                f"the state dict's parameters are not this {type(self).__name__}'s"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(unexpected)}" if unexpected else "")
                + (f" ({hint})" if hint else ""))
        shapes = [f"{prefix}{name} has shape {tuple(own[name].shape)} in the state dict but "
                  f"{shape} here" for name, shape in expected.items()
                  if isinstance(own.get(name), torch.Tensor)
                  and tuple(own[name].shape) != shape]
        if shapes:
            errors += [*shapes, f"this {type(self).__name__}: {self._describe()}"]
        return errors

    def _describe(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers}, bias={self.bias}, "
                f"bidirectional={self.bidirectional}"
                + (f", proj_size={self.proj_size}" if self.proj_size else ""))

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False
                        ) -> Any:
        """``torch.nn.Module.load_state_dict``, all or nothing: every key, shape and option is
        checked before any parameter is written, and a mismatch raises ``RuntimeError`` naming
        it; nothing is loaded then. An ``nn.RNN``/``nn.LSTM``/``nn.GRU`` state dict loads when
        the shapes and the function are the same. ``strict=False`` loads the keys that are
        there (shapes must still fit) and, where the options differ, warns."""
        metadata = getattr(state_dict, "_metadata", None)
        local = None if metadata is None else metadata.get("", None)
        errors = self._check_loadable(state_dict, "", keys=strict)
        mismatch = self._option_mismatch(local)
        if mismatch is not None and strict:
            errors.insert(0, mismatch)
        if errors:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__} (nothing was "
                "loaded):\n\t" + "\n\t".join(errors))
        self.__dict__["_loading_strict"] = strict
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        finally:
            self.__dict__.pop("_loading_strict", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,  # type: ignore[no-untyped-def]
                              missing_keys, unexpected_keys, error_msgs):
        # Also when this layer is inside another module: nothing of it is written unless every
        # shape and option fits (torch's own loop would copy the parameters that fit).
        strict = self.__dict__.get("_loading_strict", True)
        errors = self._check_loadable(state_dict, prefix, keys=False)
        mismatch = self._option_mismatch(local_metadata)
        if mismatch is not None and strict:
            errors.insert(0, mismatch)
        elif mismatch is not None:
            warnings.warn(f"{type(self).__name__}.load_state_dict(strict=False): {mismatch}",
                          UserWarning, stacklevel=4)
        if errors:
            error_msgs.extend(f"{prefix}: {e}" if prefix else e for e in errors)
            missing_keys.extend(prefix + name for name in self._expected()
                                if prefix + name not in state_dict)
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self.flatten_parameters()

    # -- torch interop -------------------------------------------------------------------------
    def _torch_kwargs(self) -> dict[str, Any]:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                    dropout=self.dropout, bidirectional=self.bidirectional)

    def to_torch(self) -> nn.Module:
        """The equivalent ``torch.nn`` module (same weights, device, dtype, train/eval mode).

        Raises ``ValueError`` where the options have no torch equivalent."""
        if not self._torch_math():
            raise ValueError(
                f"this {type(self).__name__} ({_spell(self._options())}) has no torch.nn "
                "equivalent: torch.nn computes only " + _spell(_TORCH_OPTIONS_BY_MODE[self.mode])
            )
        ref = self._flat_weights[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's dropout/num_layers warning
            module = getattr(nn, type(self).__name__)(
                **self._torch_kwargs(), device=ref.device, dtype=ref.dtype)
        module.load_state_dict({k: v.detach() for k, v in self.state_dict().items()})
        return module.train(self.training)

    @classmethod
    def from_torch(cls, module: nn.Module, **options: Any) -> _RecurrentLayer:
        """This layer from a ``torch.nn.RNN``/``LSTM``/``GRU`` of the same kind: the same
        hyperparameters, weights, device, dtype and train/eval mode. ``options``: rnnlab's
        extra keyword options; one that changes the function (``form="cho"``, a variant) makes
        the strict load of torch's state dict refuse, as it should."""
        kind = getattr(nn, cls.__name__)
        if not isinstance(module, kind):
            raise TypeError(f"{cls.__name__}.from_torch needs a torch.nn.{cls.__name__}, got "
                            f"{type(module).__name__}")
        ref = next(module.parameters())
        kwargs = dict(input_size=module.input_size, hidden_size=module.hidden_size,
                      num_layers=module.num_layers, bias=module.bias,
                      batch_first=module.batch_first, dropout=module.dropout,
                      bidirectional=module.bidirectional, device=ref.device, dtype=ref.dtype)
        if cls is LSTM:
            kwargs["proj_size"] = module.proj_size
        if cls is RNN:
            kwargs["nonlinearity"] = module.nonlinearity
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            layer = cls(**kwargs, generator=torch.Generator().manual_seed(0), **options)
        layer.load_state_dict(module.state_dict())
        return layer.train(module.training)

    # -- forward -------------------------------------------------------------------------------
    def _state_parts(self) -> list[tuple[str, int]]:
        """Names and widths of the parts of ``hx`` in torch's layout."""
        return [("h_0", self._out_size)]

    def forward(self, input: torch.Tensor | PackedSequence, hx: Any = None) -> Any:
        """``(output, h_n)`` (``(output, (h_n, c_n))`` for the LSTM) exactly as torch.nn's."""
        packed = isinstance(input, PackedSequence)
        ref = getattr(self, self._flat_weights_names[0])  # not the list of every weight
        if packed:
            data, batch_sizes = input.data, input.batch_sizes
            self._check_data("input.data", data, 2, "(sum of lengths, features)", ref)
            batch = int(batch_sizes[0])
            is_batched, batch_dim = True, 0
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"input must be a torch.Tensor or a PackedSequence, got "
                                f"{type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{type(self).__name__} expects input of shape (T, D) unbatched, or "
                    f"{'(B, T, D)' if self.batch_first else '(T, B, D)'} batched "
                    f"(batch_first={self.batch_first}); got shape {tuple(input.shape)}")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            self._check_data("input", input, input.dim(),
                             "(B, T, D)" if self.batch_first else "(T, B, D)", ref)
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            batch = input.shape[batch_dim]
        states = self._check_hx(hx, batch, is_batched, ref)
        if packed:
            states = [s.index_select(1, input.sorted_indices) if input.sorted_indices is not None
                      else s for s in states]
        # torch.compile (Inductor) cannot lower torch's fused RNN kernels (torch itself refuses
        # to compile nn.LSTM): there the cells' plain step loop is traced instead
        compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
        if self._torch_math() and not self._force_cells and not compiling:
            output, finals = self._torch_kernel(input, states)
        else:
            output, finals = self._cells_forward(input, states, "loop" if compiling else "auto")
        if packed:
            if input.unsorted_indices is not None:
                finals = [f.index_select(1, input.unsorted_indices) for f in finals]
        elif not is_batched:
            output = output.squeeze(batch_dim)
            finals = [f.squeeze(1) for f in finals]
        return output, self._pack_state(finals)

    def _pack_state(self, finals: list[torch.Tensor]) -> Any:
        return finals[0]

    def _check_data(self, name: str, x: torch.Tensor, ndim: int, layout: str,
                    ref: torch.Tensor) -> None:
        if torch.jit.is_tracing():
            # sizes are traced tensors there (a comparison would be frozen into the trace with a
            # warning); the checks are for eager calls
            return
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name} has {x.shape[-1]} features in its last dimension but this "
                f"{type(self).__name__} has input_size={self.input_size} (shape "
                f"{tuple(x.shape)}, expected {layout}"
                + (", or (T, D) unbatched" if ndim in (2, 3) and "sum" not in layout else "")
                + ")")
        if any(s == 0 for s in x.shape):
            raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
        if x.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but the layer's parameters are "
                            f"{ref.dtype}; convert one with .to()")
        if x.device != ref.device:
            raise ValueError(f"{name} is on {x.device} but the layer is on {ref.device}")
        if finite_scan_wanted(x, self.check_finite):
            raise_if_not_finite(name, x)

    def _check_hx(self, hx: Any, batch: int, is_batched: bool, ref: torch.Tensor
                  ) -> list[torch.Tensor]:
        parts = self._state_parts()
        rows = self.num_layers * self.num_directions
        if hx is None:
            return [ref.new_zeros(rows, batch, width) for _, width in parts]
        given = list(hx) if len(parts) > 1 and isinstance(hx, (tuple, list)) else [hx]
        if len(given) != len(parts):
            raise ValueError(f"hx must be ({', '.join(n for n, _ in parts)}) for this "
                             f"{type(self).__name__}, got {len(given)} tensor(s)")
        out = []
        for (name, width), h in zip(parts, given, strict=True):
            if torch.jit.is_tracing():  # see _check_data
                out.append(h if is_batched else h.unsqueeze(1))
                continue
            if not isinstance(h, torch.Tensor):
                raise TypeError(f"{name} must be a tensor, got {type(h).__name__}")
            want = (rows, batch, width) if is_batched else (rows, width)
            if h.dim() != len(want):
                raise ValueError(
                    f"for {'batched 3-D' if is_batched else 'unbatched 2-D'} input, {name} must "
                    f"be {len(want)}-D (num_layers * num_directions"
                    f"{', batch' if is_batched else ''}, {width}), got shape {tuple(h.shape)}")
            if tuple(h.shape) != want:
                raise ValueError(f"{name} has shape {tuple(h.shape)}, expected {want} "
                                 f"(num_layers * num_directions = {rows}"
                                 + (f", batch {batch}" if is_batched else "") + f", {width})")
            if h.dtype != ref.dtype or h.device != ref.device:
                raise TypeError(f"{name} is {h.dtype} on {h.device} but the layer's parameters "
                                f"are {ref.dtype} on {ref.device}")
            if finite_scan_wanted(h, self.check_finite):
                raise_if_not_finite(name, h)
            out.append(h if is_batched else h.unsqueeze(1))
        return out

    def _kernel_mode(self) -> str:
        return {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh",
                "RNN_RELU": "rnn_relu"}[self.mode]

    def _torch_kernel(self, input: torch.Tensor | PackedSequence, states: list[torch.Tensor]
                      ) -> tuple[Any, list[torch.Tensor]]:
        """The whole stack in one call of torch's fused kernel (what torch.nn.LSTM runs)."""
        fn = getattr(torch, self._kernel_mode())
        hx: Any = tuple(states) if self.mode == "LSTM" else states[0]
        weights = self._flat_weights
        if isinstance(input, PackedSequence):
            result = fn(input.data, input.batch_sizes, hx, weights, self.bias, self.num_layers,
                        self.dropout, self.training, self.bidirectional)
            output: Any = PackedSequence(result[0], input.batch_sizes, input.sorted_indices,
                                         input.unsorted_indices)
        else:
            result = fn(input, hx, weights, self.bias, self.num_layers, self.dropout,
                        self.training, self.bidirectional, self.batch_first)
            output = result[0]
        return output, list(result[1:])

    def _cells_forward(self, input: torch.Tensor | PackedSequence, states: list[torch.Tensor],
                       impl: str = "auto") -> tuple[Any, list[torch.Tensor]]:
        """Every layer and direction with its cell (:func:`rnnlab.cells.run_cell`), batch
        first; the backward direction reads each sequence reversed within its own length."""
        lengths = None
        if isinstance(input, PackedSequence):
            x, lengths = pad_packed_sequence(input, batch_first=True)
            # pad_packed_sequence returns the original order; the states were sorted like the
            # packed data, so bring them back to the original order too
            if input.unsorted_indices is not None:
                states = [s.index_select(1, input.unsorted_indices) for s in states]
            lengths = lengths.to(x.device)
        else:
            x = input if self.batch_first else input.transpose(0, 1)
        finals: list[list[torch.Tensor]] = [[] for _ in states]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                cell = self._bound(index)
                state0 = self._cell_state(cell, [s[index] for s in states])
                seq = x if direction == 0 else _reverse(x, lengths)
                # run_checked, not run_cell: forward() checked the input and hx (shapes, dtype,
                # device, and NaN/inf as this layer's option says) and every later layer's
                # input is this layer's own output; checking again per layer and direction
                # cost more than the fused CPU loop of a small cell (docs/speed.md)
                out, final, _ = run_checked(cell, seq, state0, lengths, impl=impl)
                outputs.append(out if direction == 0 else _reverse(out, lengths))
                for k, part in enumerate(self._flatten_final(final)):
                    finals[k].append(part)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                # time-major, as torch's kernel draws its mask (same seed, same mask)
                x = F.dropout(x.transpose(0, 1).contiguous(), self.dropout, True).transpose(0, 1)
        final_states = [torch.stack(parts, 0) for parts in finals]
        if isinstance(input, PackedSequence):
            order = input.sorted_indices
            final_states = [f if order is None else f.index_select(1, order)
                            for f in final_states]
            return repack(x, input), final_states
        return (x if self.batch_first else x.transpose(0, 1)), final_states

    def _cell_state(self, cell: nn.Module, parts: list[torch.Tensor]) -> Any:
        return parts[0]

    def _flatten_final(self, final: Any) -> list[torch.Tensor]:
        return [final]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        differs = {k: v for k, v in self._options().items() if v != _TORCH_OPTIONS.get(k, v)}
        return s + ("" if not differs else ", " + _spell(differs))


def _reverse(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``x`` (batch, time, features) with each sequence's first ``lengths[b]`` steps reversed
    (the padding stays where it is); its own inverse."""
    if lengths is None:
        return x.flip(1)
    steps = torch.arange(x.shape[1], device=x.device)
    index = torch.where(steps[None, :] < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


def _save_options(module: _RecurrentLayer, state_dict: Any, prefix: str,
                  local_metadata: dict) -> None:
    local_metadata[_META_KEY] = module._options()


def _spell(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def _shape_hint(layer: _RecurrentLayer, own: dict[str, Any]) -> str:
    """What the keys of a state dict say about the layer it came from, for the message."""
    layers = {int(k.split("_l")[-1].split("_")[0]) for k in own
              if "_l" in k and k.split("_l")[-1].split("_")[0].isdigit()}
    notes = []
    if layers and len(layers) != layer.num_layers:
        notes.append(f"it has {len(layers)} layer(s), this layer {layer.num_layers}")
    reverse = any(k.endswith("_reverse") for k in own)
    if own and reverse != layer.bidirectional:
        notes.append(f"it is {'' if reverse else 'not '}bidirectional, this layer "
                     f"{'is' if layer.bidirectional else 'is not'}")
    for tag, what in (("peephole", "peepholes"), ("weight_gg", "variant='FGR'"),
                      ("weight_hr", "proj_size > 0"), ("transition_", "transition_depth > 1")):
        there = any(k.startswith(tag) for k in own)
        here = any(k.startswith(tag) for k in layer._expected())
        if there != here:
            notes.append(f"{what}: {'yes' if there else 'no'} there, {'yes' if here else 'no'} "
                         "here")
    if own and any(k.startswith("bias_") for k in own) != layer.bias:
        notes.append(f"bias={not layer.bias} there, {layer.bias} here")
    return "; ".join(notes)


# torch's values of the options that change the function (what an nn.* state dict means)
_TORCH_OPTIONS: dict[str, Any] = {"peepholes": False, "variant": "vanilla", "form": "torch",
                                  "transition_depth": 1, "shortcut": False}
_TORCH_OPTIONS_BY_MODE = {
    "LSTM": {"peepholes": False, "variant": "vanilla"},
    "GRU": {"form": "torch"},
    "RNN_TANH": {"transition_depth": 1},
    "RNN_RELU": {"transition_depth": 1},
}


class RNN(_RecurrentLayer):
    """Drop-in ``torch.nn.RNN``: ``h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` per layer
    (Elman 1990), phi = tanh or relu.

    Args: as ``torch.nn.RNN`` (``input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None``),
    plus, keyword only:

    * ``transition_depth`` (L >= 1, default 1): each step's transition is an L-layer MLP,
      Pascanu et al. (2014)'s DT-RNN (:class:`rnnlab.cells.DeepTransitionCell`, eq. 6; tanh
      state); ``transition_size`` its intermediate width (default H), ``shortcut`` the DT(S)-RNN
      skip ``W_s h(t-1)``. Parameters: ``weight_ih_l{k}`` (U), ``weight_hh_l{k}`` (W_1),
      ``bias_ih_l{k}`` (b_1; no ``bias_hh``), ``transition_{j}_weight_l{k}``/``_bias_l{k}``,
      ``weight_shortcut_l{k}``. L = 1 is ``torch.nn.RNN``.
    * ``generator``: seeds the initialization (default: torch's global generator, as torch).
    * ``check_finite``: scan inputs for NaN/inf (None: rnnlab's global switch).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        transition_depth: int = 1,
        transition_size: int | None = None,
        shortcut: bool = False,
        generator: torch.Generator | None = None,
        check_finite: bool | str | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, generator=generator,
                         check_finite=check_finite)
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        self._gates = 1
        self.transition_depth = check_positive_int("transition_depth", transition_depth)
        self.transition_size = transition_size
        self.shortcut = check_bool("shortcut", shortcut)
        if self.transition_depth > 1 and nonlinearity != "tanh":
            raise ValueError("transition_depth > 1 needs nonlinearity='tanh': the deep "
                             "transition's last layer is tanh (Pascanu et al. 2014, eq. 6)")
        if self.transition_depth == 1 and (shortcut or transition_size is not None):
            raise ValueError("shortcut and transition_size need transition_depth >= 2")
        self._build(device, dtype, generator)

    def _options(self) -> dict[str, Any]:
        # nonlinearity: checked between rnnlab state dicts; a torch.nn.RNN state dict does not
        # say which it had (not in _TORCH_OPTIONS: no default to assume)
        opts: dict[str, Any] = {"nonlinearity": self.nonlinearity,
                                "transition_depth": self.transition_depth}
        if self.transition_depth > 1:
            opts.update(transition_size=self.transition_size or self.hidden_size,
                        shortcut=self.shortcut)
        return opts

    def _torch_math(self) -> bool:
        return self.transition_depth == 1

    def _make_cell(self, input_size: int) -> nn.Module:
        if self.transition_depth == 1:
            return ElmanCell(input_size, self.hidden_size, bias=self.bias,
                             nonlinearity=self.nonlinearity, device="meta")
        return DeepTransitionCell(input_size, self.hidden_size, bias=self.bias,
                                  layers=self.transition_depth,
                                  transition_size=self.transition_size,
                                  shortcut=self.shortcut, device="meta")

    def _torch_kwargs(self) -> dict[str, Any]:
        return {**super()._torch_kwargs(), "nonlinearity": self.nonlinearity}


class LSTM(_RecurrentLayer):
    """Drop-in ``torch.nn.LSTM`` (Hochreiter & Schmidhuber 1997 with the forget gate of Gers et
    al. 2000, torch's gate order i, f, g, o; projection ``h_t = W_hr (o_t * tanh(c_t))`` with
    ``proj_size``, Sak et al. 2014).

    Args: as ``torch.nn.LSTM`` (``input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None,
    dtype=None``), plus, keyword only:

    * ``peepholes`` (default False): the diagonal peephole weights of Gers & Schmidhuber (2000),
      ``peephole_i_l{k}``, ``peephole_f_l{k}``, ``peephole_o_l{k}`` (H each);
    * ``variant``: ``"vanilla"`` (default: all gates; with ``peepholes=True`` this is Greff et
      al.'s vanilla LSTM), ``"NIG"``, ``"NFG"``, ``"NOG"``, ``"NIAF"``, ``"NOAF"``, ``"NP"``,
      ``"CIFG"``, ``"FGR"`` (Greff et al. 2017, Section III; :class:`rnnlab.cells.LSTMCell`).
      FGR adds ``weight_gg_l{k}`` (3H x 3H) and a third state part, the previous gates: ``hx``
      may be ``(h_0, c_0)`` or ``(h_0, c_0, g_0)``, ``g_0`` of shape ``(L * D, B, 3H)``, and the
      result is ``(output, (h_n, c_n, g_n))``;
    * ``forget_bias`` (default None: torch's initialization): the forget gate's initial total
      bias, e.g. 1.0 (Gers et al. 2000; Jozefowicz et al. 2015);
    * ``generator``, ``check_finite``: as for :class:`RNN`.

    With ``peepholes=False`` and ``variant="vanilla"`` (or ``"NP"``) this is ``torch.nn.LSTM``,
    run by torch's fused kernel. ``proj_size`` needs those options (the cells have no
    projection).
    """

    mode = "LSTM"
    _gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        peepholes: bool = False,
        variant: str = "vanilla",
        forget_bias: float | None = None,
        generator: torch.Generator | None = None,
        check_finite: bool | str | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype, generator=generator,
                         check_finite=check_finite)
        check_bool("peepholes", peepholes)
        probe = LSTMCell(1, 1, peepholes=peepholes, variant=variant, device="meta")
        self.variant = probe.variant
        self.spec = probe.spec
        self.peepholes = self.spec.peepholes
        self.forget_bias = None if forget_bias is None else float(
            check_number("forget_bias", forget_bias))
        if self.proj_size > 0 and not self._torch_math():
            raise ValueError(
                f"proj_size > 0 needs peepholes=False and variant='vanilla' (got "
                f"{_spell(self._options())}): rnnlab's LSTMCell has no projection")
        self._build(device, dtype, generator)

    def _options(self) -> dict[str, Any]:
        variant = "vanilla" if self.variant == "NP" else self.variant
        return {"peepholes": self.peepholes, "variant": variant}

    def _torch_math(self) -> bool:
        return self.spec == _TORCH_LSTM

    def _make_cell(self, input_size: int) -> nn.Module | None:
        if self.proj_size > 0:
            return None
        return LSTMCell(input_size, self.hidden_size, bias=self.bias, peepholes=self.peepholes,
                        variant=self.variant, forget_bias=self.forget_bias, device="meta")

    def _state_parts(self) -> list[tuple[str, int]]:
        parts = [("h_0", self._out_size), ("c_0", self.hidden_size)]
        if self.spec.gate_recurrence:
            parts.append(("g_0", 3 * self.hidden_size))
        return parts

    def _check_hx(self, hx: Any, batch: int, is_batched: bool, ref: torch.Tensor
                  ) -> list[torch.Tensor]:
        if hx is not None and not isinstance(hx, (tuple, list)):
            raise TypeError(f"hx of an LSTM must be a tuple (h_0, c_0), got {type(hx).__name__}")
        if (hx is not None and self.spec.gate_recurrence and len(hx) == 2):
            rows = self.num_layers * self.num_directions
            g0 = ref.new_zeros(*((rows, batch) if is_batched else (rows,)), 3 * self.hidden_size)
            hx = (*hx, g0)
        return super()._check_hx(hx, batch, is_batched, ref)

    def _cell_state(self, cell: nn.Module, parts: list[torch.Tensor]) -> Any:
        return tuple(parts)

    def _flatten_final(self, final: Any) -> list[torch.Tensor]:
        return list(final)

    def _pack_state(self, finals: list[torch.Tensor]) -> Any:
        return tuple(finals)

    def _torch_kwargs(self) -> dict[str, Any]:
        return {**super()._torch_kwargs(), "proj_size": self.proj_size}


class GRU(_RecurrentLayer):
    """Drop-in ``torch.nn.GRU`` (Cho et al. 2014 in cuDNN's form, torch's gate order r, z, n).

    Args: as ``torch.nn.GRU`` (``input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None``), plus,
    keyword only:

    * ``form``: ``"torch"`` (default; ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``) or
      ``"cho"`` (``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``, Cho et al. 2014 eqs. 5-8;
      :class:`rnnlab.cells.GRUCell`). The same parameter names and shapes, a different function:
      a strict ``load_state_dict`` of a ``torch.nn.GRU`` state dict into ``form="cho"`` raises;
    * ``generator``, ``check_finite``: as for :class:`RNN`.
    """

    mode = "GRU"
    _gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        form: str = "torch",
        generator: torch.Generator | None = None,
        check_finite: bool | str | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype, generator=generator,
                         check_finite=check_finite)
        self.form = check_choice("form", form, FORMS)
        self._build(device, dtype, generator)

    def _options(self) -> dict[str, Any]:
        return {"form": self.form}

    def _torch_math(self) -> bool:
        return self.form == "torch"

    def _make_cell(self, input_size: int) -> nn.Module:
        return GRUCell(input_size, self.hidden_size, bias=self.bias, form=self.form, device="meta")


__all__ = ["GRU", "LSTM", "RNN"]
