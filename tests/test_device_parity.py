"""Device and dtype parity: every public model, learner and analysis of rnnlab, moved to a second
device (``RNNLAB_TEST_DEVICE``, default ``cuda``) in float64 and float32, against the same
computation on the CPU in float64.

Each test builds its object seeded on the CPU in float64, runs it there as the reference, then
runs ``copy.deepcopy(obj).to(DEVICE, dtype)`` (or the object built with ``device=``/``dtype=``)
on the inputs moved alike, and checks that every output, gradient and state is on ``DEVICE``
with the expected dtype and equals the reference: float64 to round-off, float32 to the
precision float32 can carry through a few recurrent steps. A tensor created inside the library
without ``device=``/``dtype=`` shows up here as a device or dtype failure.

The whole module is skipped when ``DEVICE`` is not usable, so a CI without a GPU skips it; with
``RNNLAB_TEST_DEVICE=cpu`` it runs on the CPU, where device bugs are invisible but the float32
runs still catch dtype bugs.
"""

from __future__ import annotations

import copy
import io
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from rnnlab.analysis import (
    GradientNormTracker,
    diagonally_scaled_norm,
    effective_spectral_radius,
    esp_check,
    largest_singular_value,
    layer_state_entropy,
    linear_memory_capacity,
    memory_capacity,
    peak_memory_bytes,
    power_norms,
    scale_to_effective_spectral_radius,
    scale_to_spectral_radius,
    spectral_radius,
    state_contraction,
    state_entropy,
    state_jacobian_norms,
    state_jacobians,
    time_per_call,
)
from rnnlab.cells import (
    IMPLS,
    VARIANTS,
    DeepTransitionCell,
    ElmanCell,
    ELSTMCell,
    GRUCell,
    LSTMCell,
    StackedCell,
    run_cell,
)
from rnnlab.learning import (
    BPTT,
    ELSTMRTRL,
    RTRL,
    UORO,
    EpochTrainer,
    ForwardModeRTRL,
    GradientClipper,
    OnlineTrainer,
    SnAp1,
    clip_grad_norm_,
    clip_grad_value_,
    squared_error,
)
from rnnlab.models import READOUTS, ElmanRNN, RecurrentLayer, RecurrentNetwork
from rnnlab.optim import HessianFree, conjugate_gradient
from rnnlab.reservoir import (
    GRAPH_KINDS,
    DeepEchoStateNetwork,
    EchoStateNetwork,
    ESNRegressor,
    IntrinsicPlasticity,
    LMSReadout,
    LogisticEchoStateNetwork,
    RidgeClassifierReadout,
    RidgeReadout,
    RLSReadout,
    accumulate_normal_equations,
    delay_line,
    delay_line_feedback,
    dense_uniform_input,
    fit_streaming,
    graph_reservoir,
    numba_available,
    pool_states,
    predict_streaming,
    sign_pattern_input,
    simple_cycle,
    sparse_random,
    unit_outputs,
)
from rnnlab.reservoir.deep import VARIANTS as DEEP_VARIANTS
from rnnlab.tasks import (
    LONG_TERM_TASKS,
    channel_equalization,
    henon,
    lorenz,
    mackey_glass,
    narma,
    narma_targets,
    nearest_symbol,
    nmse,
    nrmse,
    one_step_ahead,
    sine_mixture,
    stream_one_step_ahead,
    symbol_error_rate,
)
from rnnlab.tasks.music import frame_accuracy, frame_nll, next_step_batch, notes_to_roll, pad_rolls
from rnnlab.tasks.text import CharVocabulary, bits_per_character, char_batches
from rnnlab.tasks.vowels import classification_accuracy
from tests.reference import CellNetwork

DEVICE = os.environ.get("RNNLAB_TEST_DEVICE", "cuda")


def _device_usable(name: str) -> bool:
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        return False
    if dev.type == "cpu":
        return True
    if dev.type == "cuda":
        return torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    backend = getattr(torch.backends, dev.type, None)
    return bool(backend is not None and getattr(backend, "is_available", lambda: False)())


pytestmark = [
    pytest.mark.skipif(not _device_usable(DEVICE),
                       reason=f"RNNLAB_TEST_DEVICE={DEVICE!r} is not usable here"),
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
]

DEV = torch.device(DEVICE) if _device_usable(DEVICE) else torch.device("cpu")
CPU = torch.device("cpu")
F64, F32 = torch.float64, torch.float32
DTYPES = pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])

# Sizes: tiny, so that the whole module runs in seconds on a CPU.
D, H, OUT, T, B = 3, 5, 2, 7, 3


@pytest.fixture(autouse=True, scope="module")
def _ieee_float32():
    # On Ampere and later GPUs torch lets cuDNN (the fused RNN kernels) compute float32 in
    # TF32 by default: a 10-bit mantissa, i.e. ~1e-3 relative error. That is a precision
    # setting of the user's, not a device bug of the library; the float32 parity checked here
    # is that of IEEE float32 arithmetic, so TF32 is off for this module (restored after).
    if DEV.type != "cuda":
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch prefers its fp32_precision settings
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(autouse=True)
def _dtype_supported(request):
    dtype = request.node.callspec.params.get("dtype") if hasattr(request.node, "callspec") \
        else None
    if dtype == F64 and DEV.type == "mps":
        pytest.skip("MPS has no float64")


# ------------------------------------------------------------------------------------------------
# Comparison helpers
def on_device(t: torch.Tensor, device: torch.device = DEV) -> bool:
    """``t`` lives on ``device`` (``cuda`` matches ``cuda:0`` when no index was asked for)."""
    return t.device.type == device.type and (device.index is None
                                             or t.device.index == device.index)


def tolerances(dtype: torch.dtype, scale: float = 1.0, loose: float = 1.0) -> dict[str, float]:
    # float64: both runs are exact to round-off (different kernels sum in different orders), so
    # 1e-9 relative is far above any reordering error of these few-step computations. float32:
    # eps is 1.2e-7 and the inputs and weights are themselves rounded; a handful of recurrent
    # steps amplify that by at most ~100 here, so 1e-4 of the quantity's scale. ``loose`` widens
    # it for the few cases that say why (ill-conditioned solves).
    if dtype == F64:
        return {"rtol": 1e-9 * loose, "atol": 1e-10 * scale * loose}
    return {"rtol": 1e-4 * loose, "atol": 1e-4 * scale * loose}


def assert_tensor(got: Any, ref: torch.Tensor, dtype: torch.dtype, *,
                  out_dtype: torch.dtype | None = None, device: torch.device | None = DEV,
                  scale: float | None = None, loose: float = 1.0, name: str = "") -> None:
    """``got`` is a tensor on ``device`` (None: don't care) of ``out_dtype`` (default ``dtype``)
    whose values match the CPU float64 reference ``ref``; tolerances from ``dtype``."""
    assert isinstance(got, torch.Tensor), f"{name}: expected a tensor, got {type(got).__name__}"
    if device is not None:
        assert on_device(got, device), f"{name}: on {got.device}, expected {device}"
    want = dtype if out_dtype is None else out_dtype
    if not ref.is_floating_point():
        want = ref.dtype  # integer and boolean results keep their own dtype
    assert got.dtype == want, f"{name}: dtype {got.dtype}, expected {want}"
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
    if ref.dtype == torch.bool or not (ref.is_floating_point() or ref.is_complex()):
        assert torch.equal(got.cpu(), ref), name
        return
    if scale is None:
        scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
    torch.testing.assert_close(got.detach().to(CPU, F64), ref.detach().to(F64),
                               **tolerances(dtype, scale, loose), msg=lambda m: f"{name}: {m}")


def assert_tree(got: Any, ref: Any, dtype: torch.dtype, name: str = "", **kw: Any) -> None:
    """``assert_tensor`` leaf by leaf through tuples, lists and dicts (every element of a tuple
    state checked); floats compared with the same tolerances, ints and bools exactly."""
    if isinstance(ref, torch.Tensor):
        assert_tensor(got, ref, dtype, name=name, **kw)
    elif isinstance(ref, dict):
        assert set(got) == set(ref), f"{name}: keys {sorted(got)} vs {sorted(ref)}"
        for key in ref:
            assert_tree(got[key], ref[key], dtype, f"{name}[{key!r}]", **kw)
    elif isinstance(ref, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(ref), name
        for i, (g, r) in enumerate(zip(got, ref, strict=True)):
            assert_tree(g, r, dtype, f"{name}[{i}]", **kw)
    elif isinstance(ref, bool) or ref is None or isinstance(ref, (int, str)):
        assert got == ref, f"{name}: {got!r} vs {ref!r}"
    elif isinstance(ref, float):
        assert isinstance(got, float), f"{name}: {type(got).__name__}"
        if math.isnan(ref):
            assert math.isnan(got), name
            return
        scale = kw.get("scale") or max(1.0, abs(ref))
        tol = tolerances(dtype, scale, kw.get("loose", 1.0))
        assert abs(got - ref) <= tol["atol"] + tol["rtol"] * abs(ref), f"{name}: {got} vs {ref}"
    else:  # pragma: no cover - a helper misuse
        raise TypeError(f"{name}: cannot compare {type(ref).__name__}")


def to_dev(tree: Any, dtype: torch.dtype) -> Any:
    """Move the floating tensors of a tree to DEVICE/``dtype`` (integer tensors: DEVICE only)."""
    if isinstance(tree, torch.Tensor):
        return tree.to(DEV, dtype) if tree.is_floating_point() else tree.to(DEV)
    if isinstance(tree, (tuple, list)):
        return type(tree)(to_dev(t, dtype) for t in tree)
    if isinstance(tree, dict):
        return {k: to_dev(v, dtype) for k, v in tree.items()}
    return tree


def moved(module: Any, dtype: torch.dtype) -> Any:
    return copy.deepcopy(module).to(DEV, dtype)


def grads_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen(seed), dtype=F64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def leaves(state: Any) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    return [leaf for part in state for leaf in leaves(part)]


def probe(*trees: Any) -> torch.Tensor:
    """A scalar that depends non-linearly on every leaf (so that gradients are not trivial)."""
    total = 0.0
    for k, leaf in enumerate(t for tree in trees for t in leaves(tree)):
        total = total + (leaf * leaf).sum() + (k + 1) * leaf.sum()
    return total


# ------------------------------------------------------------------------------------------------
# Cells through RecurrentLayer / run_cell, every implementation that applies
def _cells() -> dict[str, Callable[[], Any]]:
    makers: dict[str, Callable[[], Any]] = {
        "elman-tanh": lambda: ElmanCell(D, H, generator=gen(1), dtype=F64),
        "elman-relu": lambda: ElmanCell(D, H, "relu", generator=gen(2), dtype=F64),
        "lstm-vanilla-nopeep": lambda: LSTMCell(D, H, peepholes=False, generator=gen(3),
                                                dtype=F64),
        "lstm-nobias": lambda: LSTMCell(D, H, bias=False, generator=gen(4), dtype=F64),
        "gru-cho": lambda: GRUCell(D, H, generator=gen(5), dtype=F64),
        "gru-torch": lambda: GRUCell(D, H, form="torch", generator=gen(6), dtype=F64),
        "dt-1": lambda: DeepTransitionCell(D, H, layers=1, generator=gen(7), dtype=F64),
        "dts-3": lambda: DeepTransitionCell(D, H, layers=3, transition_size=4, shortcut=True,
                                            nonlinearity="sigmoid", generator=gen(8),
                                            dtype=F64),
        "stacked-np": lambda: StackedCell([
            LSTMCell(D, 4, variant="NP", generator=gen(9), dtype=F64),
            LSTMCell(4, H, variant="NP", generator=gen(10), dtype=F64)]),
        "stacked-mixed": lambda: StackedCell([
            LSTMCell(D, 4, generator=gen(11), dtype=F64),
            GRUCell(4, 4, form="torch", generator=gen(12), dtype=F64),
            ElmanCell(4, H, generator=gen(13), dtype=F64)]),
    }
    for k, variant in enumerate(VARIANTS):
        makers[f"lstm-{variant}"] = (
            lambda v=variant, s=20 + k: LSTMCell(D, H, variant=v, generator=gen(s), dtype=F64))
    return makers


CELLS = _cells()


def _layer_cases() -> list[tuple[str, str]]:
    cases = []
    for name, make in CELLS.items():
        cell = make()
        for impl in IMPLS:
            if impl in ("auto", "loop") or impl in cell.available_impls(False):
                cases.append((name, impl))
    return cases


def _run_layer(layer: RecurrentLayer, x: torch.Tensor, state0: Any, lengths: Any,
               return_states: bool, train: bool) -> dict[str, Any]:
    """The layer's outputs, and with ``train`` the gradients of a probe of all of them with
    respect to the parameters, the input and the initial state; without, under no_grad (the
    inference path, which the fused kernels run differently)."""
    if not train:
        with torch.no_grad():
            out = layer(x, state0=state0, lengths=lengths, return_states=return_states)
        return {"outputs": out[0], "final": out[1], "states": out[2] if return_states else None}
    x = x.clone().requires_grad_(True)
    if state0 is not None:
        state0 = tuple(s.clone().requires_grad_(True) for s in leaves(state0))
        state0 = _restructure(state0, layer.initial_state(1))
    out = layer(x, state0=state0, lengths=lengths, return_states=return_states)
    probe(*out).backward()
    result = {"outputs": out[0].detach(), "final": _detach(out[1]), "x.grad": x.grad,
              "grads": grads_of(layer)}
    if return_states:
        result["states"] = _detach(out[2])
    if state0 is not None:
        result["state0.grad"] = [s.grad for s in leaves(state0)]
    return result


def _detach(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(_detach(s) for s in state)


def _restructure(flat: tuple[torch.Tensor, ...], like: Any) -> Any:
    it = iter(flat)

    def build(template: Any) -> Any:
        if isinstance(template, torch.Tensor):
            return next(it)
        return tuple(build(t) for t in template)

    return build(like)


def _random_state(cell: Any, batch: int, seed: int) -> Any:
    return _restructure(tuple(randn(*leaf.shape, seed=seed + i, scale=0.5)
                              for i, leaf in enumerate(leaves(cell.initial_state(batch)))),
                        cell.initial_state(batch))


@pytest.mark.parametrize(("cell_name", "impl"), _layer_cases())
@DTYPES
def test_recurrent_layer_every_cell_and_impl(cell_name, impl, dtype):
    cell = CELLS[cell_name]()
    layer = RecurrentLayer(cell, impl=impl)
    x = randn(B, T, D, seed=30)
    state0 = _random_state(cell, B, seed=31)
    lengths = torch.tensor([T, T - 2, 3])
    # Full sequences from the zero state, then padded ones from a given state with every step's
    # state when the implementation can return them.
    with_states = impl in ("auto", "loop") or impl in cell.available_impls(True)
    runs = [(None, None, False), (state0, lengths, with_states)]
    # no_grad changes the path of torch's fused kernels only (an inference mode of their own)
    modes = (False, True) if impl in ("auto", "fused") else (True,)
    for s0, lens, ret in runs:
        for train in modes:
            ref = _run_layer(copy.deepcopy(layer), x, s0, lens, ret, train)
            got = _run_layer(moved(layer, dtype), to_dev(x, dtype), to_dev(s0, dtype),
                             to_dev(lens, dtype), ret, train)
            assert_tree(got, ref, dtype,
                        f"{cell_name}/{impl}/lengths={lens is not None}/train={train}")


@pytest.mark.parametrize("cell_name", ["elman-tanh", "lstm-NP", "lstm-vanilla", "gru-torch",
                                       "stacked-mixed"])
@DTYPES
def test_run_cell_packed_sequence(cell_name, dtype):
    cell = CELLS[cell_name]()
    x = randn(B, T, D, seed=32)
    lengths = torch.tensor([4, T, 2])

    def run(c: Any, xs: torch.Tensor, train: bool) -> dict[str, Any]:
        xs = xs.clone().requires_grad_(train)
        packed = pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False)
        with torch.set_grad_enabled(train):
            out, final, _ = run_cell(c, packed)
        if not train:
            return {"data": out.data, "final": final}
        probe(out.data, final).backward()
        return {"data": out.data.detach(), "final": _detach(final), "x.grad": xs.grad,
                "grads": grads_of(c)}

    for train in (False, True):  # inference first: it runs even where backward cannot
        ref = run(copy.deepcopy(cell), x, train)
        assert_tree(run(moved(cell, dtype), to_dev(x, dtype), train), ref, dtype, cell_name)


@DTYPES
def test_cell_step_and_initial_state(dtype):
    # The bare step protocol: initial_state on the cell's device/dtype, one step, hidden().
    for name, make in CELLS.items():
        cell = make()
        x_t = randn(B, D, seed=33)

        def step(c: Any, xt: torch.Tensor) -> dict[str, Any]:
            s0 = c.initial_state(B)
            s1 = c(xt, s0)
            s2 = c(xt, s1)
            return {"s0": s0, "s2": _detach(s2), "h": c.hidden(s2).detach()}

        assert_tree(step(moved(cell, dtype), to_dev(x_t, dtype)), step(cell, x_t), dtype, name)


@DTYPES
def test_elstm_cell(dtype):
    cell = ELSTMCell(D, H, dtype=F64)
    cell.reset_parameters(gen(34))
    x = randn(B, T, D, seed=35)

    def run(c: ELSTMCell, xs: torch.Tensor) -> dict[str, Any]:
        state = c.initial_state(B)
        outs = []
        for t in range(T):
            state = c(xs[:, t], state)
            outs.append(c.hidden(state))
        probe(torch.stack(outs, 1), state).backward()
        return {"h": torch.stack(outs, 1).detach(), "state": _detach(state), "grads": grads_of(c)}

    assert_tree(run(moved(cell, dtype), to_dev(x, dtype)), run(copy.deepcopy(cell), x), dtype)


# ------------------------------------------------------------------------------------------------
# Models
@pytest.mark.parametrize("readout", list(READOUTS))
@DTYPES
def test_elman_rnn(readout, dtype):
    torch.manual_seed(40)
    model = ElmanRNN(D, H, OUT, readout=readout, dtype=F64)
    x, h0 = randn(B, T, D, seed=41), randn(B, H, seed=42, scale=0.5)

    def run(m: ElmanRNN, xs: torch.Tensor, h: torch.Tensor) -> dict[str, Any]:
        h = h.clone().requires_grad_(True)
        out, h_t = m(xs, h)
        probe(out, h_t).backward()
        zero = m.initial_state(B)
        return {"out": out.detach(), "h_T": h_t.detach(), "h0.grad": h.grad, "zero": zero,
                "grads": grads_of(m), "states": m.hidden_states(xs).detach(),
                "cell": m.cell(xs[:, 0], zero).detach(), "output": m.output(zero).detach()}

    ref = run(copy.deepcopy(model), x, h0)
    assert_tree(run(moved(model, dtype), to_dev(x, dtype), to_dev(h0, dtype)), ref, dtype)


def _network_cases() -> list[tuple[str, str, int]]:
    cases = [(cell, readout, 1) for readout in READOUTS
             for cell in ("lstm-vanilla", "gru-torch", "stacked-np")]
    cases += [("dts-3", "tanh", 3), ("lstm-NP", "sigmoid", 2)]
    return cases


@pytest.mark.parametrize(("cell_name", "readout", "layers"), _network_cases())
@DTYPES
def test_recurrent_network(cell_name, readout, layers, dtype):
    net = RecurrentNetwork(CELLS[cell_name](), OUT, readout, readout_layers=layers,
                           readout_hidden_size=4, readout_activation="relu", generator=gen(43))
    x = randn(B, T, D, seed=44)
    lengths = torch.tensor([T, 5, 1])

    def run(n: RecurrentNetwork, xs: torch.Tensor, lens: Any) -> dict[str, Any]:
        out, final, states = n(xs, lengths=lens, return_states=True)
        packed, _ = n(pack_padded_sequence(xs, lengths, batch_first=True, enforce_sorted=False))
        probe(out, final, packed.data).backward()
        return {"out": out.detach(), "final": _detach(final), "states": _detach(states),
                "packed": packed.data.detach(), "grads": grads_of(n),
                "output": n.output(_detach(final)).detach(), "zero": n.initial_state(B)}

    with torch.no_grad():  # inference first: it runs even where backward cannot
        ref = _detach(net(x, lengths=lengths, return_states=True))
        got = moved(net, dtype)(to_dev(x, dtype), lengths=to_dev(lengths, dtype),
                                return_states=True)
    assert_tree(got, ref, dtype, "no_grad")
    ref = run(copy.deepcopy(net), x, lengths)
    assert_tree(run(moved(net, dtype), to_dev(x, dtype), to_dev(lengths, dtype)), ref, dtype)


CONSTRUCTORS: dict[str, Callable[..., torch.nn.Module]] = {
    "ElmanCell": lambda **f: ElmanCell(D, H, **f),
    "LSTMCell": lambda **f: LSTMCell(D, H, variant="FGR", **f),
    "GRUCell": lambda **f: GRUCell(D, H, **f),
    "DeepTransitionCell": lambda **f: DeepTransitionCell(D, H, shortcut=True, **f),
    "ELSTMCell": lambda **f: ELSTMCell(D, H, **f),
    "ElmanRNN": lambda **f: ElmanRNN(D, H, OUT, **f),
}


@pytest.mark.parametrize("name", list(CONSTRUCTORS))
@DTYPES
def test_modules_built_on_the_device(name, dtype):
    # device=/dtype= at construction: the parameters are born there, and with the reference's
    # weights loaded the forward there matches the CPU float64 one.
    torch.manual_seed(45)
    ref = CONSTRUCTORS[name](dtype=F64)
    module = CONSTRUCTORS[name](device=DEV, dtype=dtype)
    for pname, p in module.named_parameters():
        assert on_device(p) and p.dtype == dtype, pname
    module.load_state_dict(ref.state_dict())
    x = randn(B, T, D, seed=46)
    if name == "ElmanRNN":
        got, want = module(to_dev(x, dtype))[0], ref(x)[0]
    elif name == "ELSTMCell":
        got = module(to_dev(x[:, 0], dtype), module.initial_state(B))[1]
        want = ref(x[:, 0], ref.initial_state(B))[1]
    else:
        got = run_cell(module, to_dev(x, dtype))[0]
        want = run_cell(ref, x)[0]
    assert_tensor(got.detach(), want.detach(), dtype, name=name)


@pytest.mark.parametrize("name", [*CONSTRUCTORS, "RecurrentNetwork"])
@DTYPES
def test_seeded_initialization_on_the_device(name, dtype):
    # ``generator`` seeds the initialization (constructor argument of the cells and of
    # RecurrentNetwork, reset_parameters(generator) of every module); torch.Generator() is a
    # CPU generator, the usual one (rnnlab's reservoirs even require it). A module that lives
    # on the device must accept it, whether it is built there or re-initialised there.
    if name == "RecurrentNetwork":
        cell = ElmanCell(D, H, device=DEV, dtype=dtype)
        module = RecurrentNetwork(cell, OUT, readout_layers=2, generator=gen(47))
    elif name in ("ElmanRNN", "ELSTMCell"):  # no generator argument: reset_parameters has it
        module = CONSTRUCTORS[name](device=DEV, dtype=dtype)
        module.reset_parameters(gen(47))
    else:
        module = CONSTRUCTORS[name](generator=gen(47), device=DEV, dtype=dtype)
        module.reset_parameters(gen(48))
    for pname, p in module.named_parameters():
        assert on_device(p) and p.dtype == dtype and bool(torch.isfinite(p).all()), pname


# ------------------------------------------------------------------------------------------------
# Learning rules and trainers
def _sequence_data(seed: int, batch: int = B, steps: int = T) -> tuple[torch.Tensor, ...]:
    return (randn(batch, steps, D, seed=seed), randn(batch, steps, OUT, seed=seed + 1, scale=0.5),
            randn(batch, H, seed=seed + 2, scale=0.3))


@pytest.mark.parametrize("truncation", [None, 3])
@DTYPES
def test_bptt(truncation, dtype):
    torch.manual_seed(50)
    model = ElmanRNN(D, H, OUT, dtype=F64)
    x, y, h0 = _sequence_data(51)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor, h: torch.Tensor) -> dict[str, Any]:
        rule = BPTT(m, truncation=truncation, reduction="mean")
        res = rule.accumulate(xs, ys, h)
        out = {"outputs": res.outputs, "loss": res.loss, "final": res.final_state,
               "grads": {k: g.clone() for k, g in grads_of(m).items()}}
        m.zero_grad(set_to_none=True)
        rule.reset(B, h)
        online = [rule.step(xs[:, t], ys[:, t]) for t in range(T)]
        rule.flush()
        out.update(online=torch.stack(online, 1), online_grads=grads_of(m), state=rule.state,
                   last_loss=rule.last_loss)
        return out

    ref = run(copy.deepcopy(model), x, y, h0)
    assert_tree(run(moved(model, dtype), *to_dev((x, y, h0), dtype)), ref, dtype)


@DTYPES
def test_rtrl(dtype):
    torch.manual_seed(53)
    model = ElmanRNN(D, H, OUT, readout="sigmoid", dtype=F64)
    x, y, h0 = _sequence_data(54)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor, h: torch.Tensor) -> dict[str, Any]:
        rule = RTRL(m, reduction="mean")
        rule.reset(B, h)
        # step 2 advances without a target: the influence still moves, no gradient is added
        outs = [rule.step(xs[:, t], None if t == 2 else ys[:, t]) for t in range(T)]
        return {"outputs": torch.stack(outs, 1), "grads": grads_of(m), "state": rule.state,
                "influence": {k: v.clone() for k, v in rule.influence.items()},
                "loss": rule.last_loss}

    ref = run(copy.deepcopy(model), x, y, h0)
    assert_tree(run(moved(model, dtype), *to_dev((x, y, h0), dtype)), ref, dtype)


def _elstm_model() -> torch.nn.Module:
    torch.manual_seed(55)
    cell = ELSTMCell(D, H, dtype=F64)
    cell.reset_parameters(gen(56))
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(3.0)  # away from the nearly linear regime, so that errors would show
    return CellNetwork(cell, OUT)


def _run_online(rule: Any, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
    rule.reset(xs.shape[0])
    outs = [rule.step(xs[:, t], ys[:, t]) for t in range(xs.shape[1])]
    return {"outputs": torch.stack(outs, 1), "grads": grads_of(rule.model),
            "state": _detach(rule.state), "loss": rule.last_loss}


@DTYPES
def test_elstm_rtrl(dtype):
    model = _elstm_model()
    x, y, _ = _sequence_data(57)

    def run(m: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        rule = ELSTMRTRL(m)
        return _run_online(rule, xs, ys) | {"influence": rule.influence}

    ref = run(copy.deepcopy(model), x, y)
    assert_tree(run(moved(model, dtype), *to_dev((x, y), dtype)), ref, dtype)


def _online_models() -> dict[str, Callable[[], torch.nn.Module]]:
    def elman() -> torch.nn.Module:
        torch.manual_seed(58)
        return ElmanRNN(D, H, OUT, readout="tanh", dtype=F64)

    return {
        "elman": elman,
        "lstm": lambda: RecurrentNetwork(CELLS["lstm-vanilla"](), OUT, generator=gen(59)),
        "gru": lambda: RecurrentNetwork(CELLS["gru-cho"](), OUT, "tanh", generator=gen(60)),
        "elstm": _elstm_model,
    }


ONLINE_MODELS = _online_models()


@pytest.mark.parametrize("model_name", list(ONLINE_MODELS))
@pytest.mark.parametrize("rule_cls", [ForwardModeRTRL, SnAp1], ids=["forward", "snap1"])
@DTYPES
def test_forward_mode_rules(model_name, rule_cls, dtype):
    model = ONLINE_MODELS[model_name]()
    x, y, _ = _sequence_data(61, steps=5)

    def run(m: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        rule = rule_cls(m)
        out = _run_online(rule, xs, ys)
        out["influence"] = rule.influence if rule_cls is ForwardModeRTRL else rule.values
        return out

    ref = run(copy.deepcopy(model), x, y)
    assert_tree(run(moved(model, dtype), *to_dev((x, y), dtype)), ref, dtype)


def _uoro_reference(model: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor, seed: int,
                    eps: float) -> dict[str, Any]:
    """UORO (Tallec & Ollivier 2018) written out on the CPU in float64 with explicit Jacobians,
    drawing the signs nu exactly as the rule does on DEVICE: one generator on DEVICE seeded
    with ``seed``, one ``randint(0, 2, (batch, S))`` per step. A device's generator gives the
    same numbers to the same calls whatever the dtype, so this is the rule's own noise."""
    noise = torch.Generator(device=DEV).manual_seed(seed)
    params = {"U": model.U.detach(), "W": model.W.detach(), "b": model.b.detach()}
    sizes = [p.numel() for p in params.values()]
    batch = xs.shape[0]
    s = torch.zeros(batch, H, dtype=F64)
    s_tilde = torch.zeros(batch, H, dtype=F64)
    theta_tilde = torch.zeros(batch, sum(sizes), dtype=F64)
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    outs = []
    for t in range(xs.shape[1]):
        nu = torch.randint(0, 2, (batch, H), generator=noise, device=DEV).to(CPU, F64) * 2 - 1
        for k in range(batch):
            def step(flat_theta: torch.Tensor, prev: torch.Tensor, k: int = k,
                     t: int = t) -> torch.Tensor:
                u, w, b = torch.split(flat_theta, sizes)
                return torch.tanh(u.view(H, D) @ xs[k, t] + w.view(H, H) @ prev + b)

            theta = torch.cat([p.reshape(-1) for p in params.values()])
            j_theta, j_s = torch.autograd.functional.jacobian(step, (theta, s[k]))
            js_s = j_s @ s_tilde[k]
            nu_j = nu[k] @ j_theta
            rho0 = math.sqrt(float(theta_tilde[k].norm()) / (float(js_s.norm()) + eps)) + eps
            rho1 = math.sqrt(float(nu_j.norm()) / (float(nu[k].norm()) + eps)) + eps
            s_tilde[k] = rho0 * js_s + rho1 * nu[k]
            theta_tilde[k] = theta_tilde[k] / rho0 + nu_j / rho1
            s[k] = step(theta, s[k])
        leaf = s.clone().requires_grad_(True)
        o = model.output(leaf)
        loss = (o - ys[:, t]).pow(2).sum()
        g_s, g_v, g_c = torch.autograd.grad(loss, [leaf, model.V, model.c])
        grads["V"] += g_v
        grads["c"] += g_c
        total = ((g_s * s_tilde).sum(1, keepdim=True) * theta_tilde).sum(0)
        for name, part in zip(params, torch.split(total, sizes), strict=True):
            grads[name] += part.view_as(params[name])
        outs.append(o.detach())
    return {"outputs": torch.stack(outs, 1), "grads": grads, "state": s,
            "state_tilde": s_tilde, "theta_tilde": theta_tilde}


@DTYPES
def test_uoro_against_explicit_jacobians_with_the_device_noise(dtype):
    torch.manual_seed(62)
    model = ElmanRNN(D, H, OUT, readout="tanh", dtype=F64)
    x, y, _ = _sequence_data(63, steps=5)
    seed, eps = 7, 1e-7
    ref = _uoro_reference(model, x, y, seed, eps)
    m = moved(model, dtype)
    rule = UORO(m, seed=seed, eps=eps)
    assert rule.parameter_names == ["U", "W", "b"]
    got = _run_online(rule, *to_dev((x, y), dtype))
    got = {"outputs": got["outputs"], "grads": got["grads"], "state": got["state"],
           "state_tilde": rule.state_tilde, "theta_tilde": rule.theta_tilde}
    # float32: the rank-one estimate divides by rho0, rho1 (square roots of norm ratios), so a
    # relative error of the Jacobian products grows by a few more factors than a plain forward
    # pass; 10x the usual float32 tolerance.
    assert_tree(got, ref, dtype, loose=10.0 if dtype == F32 else 1.0)


@pytest.mark.parametrize("rule_name", ["rtrl", "bptt3", "forward"])
@DTYPES
def test_online_trainer(rule_name, dtype):
    torch.manual_seed(64)
    model = ElmanRNN(D, H, OUT, dtype=F64)
    x, y, _ = _sequence_data(65, batch=2)
    make = {"rtrl": RTRL, "bptt3": lambda m: BPTT(m, truncation=3),
            "forward": ForwardModeRTRL}[rule_name]

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        rule = make(m)
        rule.reset(2)
        trainer = OnlineTrainer(rule, torch.optim.SGD(m.parameters(), lr=0.05), clip_norm=0.5)
        outs = [trainer.step(xs[:, t], ys[:, t]) for t in range(T)]
        # one sample given as (D,) / (O,): the trainer adds the batch dimension
        rule.reset(1)
        single = trainer.step(xs[0, 0], ys[0, 0])
        return {"outputs": torch.stack(outs, 1), "single": single, "params": params_of(m),
                "running": trainer.running.value, "clipped": trainer.clipper.clipped,
                "skipped": trainer.clipper.skipped}

    ref = run(copy.deepcopy(model), x, y)
    assert ref["clipped"] > 0  # the threshold is low enough to act
    assert_tree(run(moved(model, dtype), *to_dev((x, y), dtype)), ref, dtype)


@DTYPES
def test_epoch_trainer(dtype):
    torch.manual_seed(66)
    model = ElmanRNN(D, H, OUT, dtype=F64)
    x, y = randn(6, T, D, seed=67), randn(6, T, OUT, seed=68, scale=0.5)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        trainer = EpochTrainer(BPTT(m, truncation=4, reduction="mean"),
                               torch.optim.Adam(m.parameters(), lr=0.01), clip_norm=1.0)
        history = trainer.fit(xs, ys, epochs=2, batch_size=4, seed=3)
        return {"history": history, "params": params_of(m)}

    ref = run(copy.deepcopy(model), x, y)
    assert_tree(run(moved(model, dtype), *to_dev((x, y), dtype)), ref, dtype)


@DTYPES
def test_gradient_clipping(dtype):
    torch.manual_seed(69)
    model = ElmanRNN(D, H, OUT, dtype=F64)
    x, y, _ = _sequence_data(70)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def backward() -> None:
            m.zero_grad(set_to_none=True)
            squared_error(m(xs)[0], ys).backward()

        backward()
        out["norm"] = clip_grad_norm_(m.parameters(), 0.1)
        out["after_norm"] = {k: g.clone() for k, g in grads_of(m).items()}
        backward()
        out["value_norm"] = clip_grad_value_(m, 0.01, norm_type=1.0)
        out["after_value"] = {k: g.clone() for k, g in grads_of(m).items()}
        backward()
        res = GradientClipper("norm", 0.2, norm_type=math.inf)(m)
        out["clipper"] = (res.norm, res.clipped, res.finite)
        out["after_clipper"] = {k: g.clone() for k, g in grads_of(m).items()}
        backward()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        res = GradientClipper("value", 0.05).step(opt)
        out["step"] = (res.norm, res.clipped, res.finite, res.stepped)
        out["params"] = params_of(m)
        backward()
        m.W.grad[0, 0] = math.nan
        with pytest.warns(RuntimeWarning, match="non-finite"):
            res = GradientClipper("norm", 1.0).step(opt)
        out["nonfinite"] = (res.finite, res.stepped, [p.grad for p in m.parameters()])
        return out

    ref = run(copy.deepcopy(model), x, y)
    got = run(moved(model, dtype), *to_dev((x, y), dtype))
    # The norms are accumulated in float64 on the gradients' device, whatever their dtype.
    for key in ("norm", "value_norm"):
        assert_tensor(got.pop(key), ref.pop(key), dtype, out_dtype=F64, name=key)
    assert_tree(got, ref, dtype)


# ------------------------------------------------------------------------------------------------
# Optimizers
@pytest.mark.parametrize("backend", ["func", "autograd"])
@DTYPES
def test_hessian_free_steps(backend, dtype):
    torch.manual_seed(80)
    model = ElmanRNN(D, H, OUT, readout="tanh", dtype=F64)
    x, y, _ = _sequence_data(81)
    v = randn(sum(p.numel() for p in model.parameters()), seed=82)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor, vec: torch.Tensor) -> dict:
        # autograd backend: also the preconditioner and structural damping (Martens &
        # Sutskever 2011), so that every curvature product runs on the device.
        extras = backend == "autograd"
        opt = HessianFree(m.parameters(), damping=1.0, model=None if extras else m,
                          max_cg_iters=6, preconditioner=extras,
                          structural_damping=0.1 if extras else 0.0)
        hidden = (lambda: m.hidden_states(xs)) if extras else None

        def forward() -> torch.Tensor:
            return m(xs)[0]

        def loss(out: torch.Tensor) -> torch.Tensor:
            return (out - ys).pow(2).sum()

        # two steps: the second starts CG from the decayed first solution
        values = [opt.step(forward, loss, hidden) for _ in range(2)]
        last = opt.last_step
        gn = opt.gauss_newton(forward, loss)
        return {"values": values, "params": params_of(m), "damping": opt.damping,
                "cg": (last["cg_iterations"], last["cg_stop"], last["backtrack_iteration"]),
                "alpha": last["alpha"], "new_loss": last["new_loss"],
                "cg_init": opt.state["cg_init"], "gn_v": gn.matvec(vec),
                "gradient": gn.gradient, "square_gradients": gn.per_sample_square_gradients(),
                "damped_v": opt.curvature_operator(forward, loss, hidden)(vec)}

    ref = run(copy.deepcopy(model), x, y, v)
    got = run(moved(model, dtype), *to_dev((x, y, v), dtype))
    # The step is the output of a CG solve (a few iterations) and of comparisons between
    # losses; in float32 its round-off is that of a linear solve, 10x the plain tolerance.
    assert_tree(got, ref, dtype, loose=10.0 if dtype == F32 else 1.0)


@DTYPES
def test_hessian_free_skipped_step_returns_on_the_device(dtype):
    # A step refused for a bad damping must answer like the others: the loss slot holds a NaN
    # of the parameters' dtype on their device (the other skips return the loss there).
    model = moved(ElmanRNN(D, H, OUT, dtype=F64), dtype)
    x, y, _ = to_dev(_sequence_data(83), dtype)
    opt = HessianFree(model.parameters(), model=model)
    opt.param_groups[0]["damping"] = -1.0
    with pytest.warns(RuntimeWarning, match="skipped"):
        value = opt.step(lambda: model(x)[0], lambda out: (out - y).pow(2).sum())
    assert on_device(value) and value.dtype == dtype and bool(torch.isnan(value))


@DTYPES
def test_conjugate_gradient(dtype):
    m = randn(8, 8, seed=84)
    a = m @ m.t() / 8 + torch.eye(8, dtype=F64)
    b, x0 = randn(8, seed=85), randn(8, seed=86, scale=0.1)
    precond = a.diagonal().clone()

    def run(mat: torch.Tensor, rhs: torch.Tensor, start: torch.Tensor, pre: torch.Tensor):
        res = conjugate_gradient(lambda vec: mat @ vec, rhs, start, max_iters=5,
                                 preconditioner=pre)
        return {"x": res.x, "iterations": res.iterations, "stop": res.stop_reason,
                "phi": res.phi, "saved": res.saved, "restarted": res.restarted}

    ref = run(a, b, x0, precond)
    assert_tree(run(*to_dev((a, b, x0, precond), dtype)), ref, dtype)


# ------------------------------------------------------------------------------------------------
# Analysis
def _general_matrix() -> torch.Tensor:
    # no special structure, so that spectral_radius takes the eigenvalue route
    return randn(6, 6, seed=90, scale=0.4)


def _structured_matrices() -> dict[str, torch.Tensor]:
    # each takes one of spectral_radius' exact routes (triangular, monomial, tridiagonal)
    return {"delay_line": delay_line(6, 0.7, dtype=F64),
            "simple_cycle": simple_cycle(6, 0.8, dtype=F64),
            "delay_line_feedback": delay_line_feedback(6, 0.5, 0.2, dtype=F64),
            "general": _general_matrix()}


@pytest.mark.parametrize("layout", ["dense", "csr", "coo"])
@DTYPES
def test_spectral_functions(layout, dtype):
    def as_layout(w: torch.Tensor) -> torch.Tensor:
        return {"dense": w, "csr": w.to_sparse_csr(), "coo": w.to_sparse()}[layout]

    def run(w: torch.Tensor) -> dict[str, Any]:
        return {"rho": spectral_radius(w), "sigma": largest_singular_value(w),
                "eff": effective_spectral_radius(w, 0.3), "powers": power_norms(w, 4),
                "powers_fro": power_norms(w, 3, ord="fro")}

    for name, w in _structured_matrices().items():
        ref = run(w)
        got = run(as_layout(to_dev(w, dtype)))
        # computed on the host in float64 by design (LAPACK/scipy): only the values matter;
        # the float32 run starts from the float32-rounded matrix
        got["powers"], got["powers_fro"] = got["powers"].to(DEV), got["powers_fro"].to(DEV)
        assert_tree(got, ref, dtype, name, out_dtype=F64)


@DTYPES
def test_spectral_scaling_keeps_device_and_dtype(dtype):
    w = _general_matrix()
    for fn, args in ((scale_to_spectral_radius, (0.8,)),
                     (scale_to_effective_spectral_radius, (0.95, 0.5))):
        ref = fn(w, *args)
        got = fn(to_dev(w, dtype), *args)
        assert_tensor(got, ref, dtype, name=fn.__name__)
        sparse = fn(to_dev(w, dtype).to_sparse_csr(), *args) if fn is scale_to_spectral_radius \
            else None
        if sparse is not None:
            assert sparse.layout == torch.sparse_csr
            assert_tensor(sparse.to_dense(), ref, dtype, name="csr")


@pytest.mark.parametrize("model_name", ["elman", "lstm", "stacked"])
@DTYPES
def test_state_jacobians(model_name, dtype):
    model = {"elman": ONLINE_MODELS["elman"],
             "lstm": ONLINE_MODELS["lstm"],
             "stacked": lambda: RecurrentNetwork(CELLS["stacked-mixed"](), OUT,
                                                 generator=gen(91))}[model_name]()
    x = randn(B, T, D, seed=92)

    def run(m: torch.nn.Module, xs: torch.Tensor) -> dict[str, Any]:
        return {"jac": state_jacobians(m, xs, [0, 2, 5], t=6),
                "norms": state_jacobian_norms(m, xs, [1, 3], ord=2),
                "block": state_jacobian_norms(m, xs, [2], component=0, vectorize=False),
                # a bare cell module is a model too
                "cell": (state_jacobians(m.cell, xs, [1]) if isinstance(m, RecurrentNetwork)
                         else None)}

    ref = run(copy.deepcopy(model), x)
    assert_tree(run(moved(model, dtype), to_dev(x, dtype)), ref, dtype)


@DTYPES
def test_gradient_norm_tracker(dtype):
    torch.manual_seed(93)
    model = ElmanRNN(D, H, OUT, dtype=F64)
    x, y, _ = _sequence_data(94)

    def run(m: ElmanRNN, xs: torch.Tensor, ys: torch.Tensor) -> dict[str, Any]:
        tracker = GradientNormTracker(m, groups={"rec": ["U", "W", "b"], "out": ["V", "c"]})
        squared_error(m(xs)[0], ys).backward()
        norms = tracker.norms()
        tracker.record()
        return {"norms": norms, "rows": tracker.to_rows()}

    ref = run(copy.deepcopy(model), x, y)
    got = run(moved(model, dtype), *to_dev((x, y), dtype))
    # norms accumulate in float64 on the gradients' device
    assert_tensor(got.pop("norms"), ref.pop("norms"), dtype, out_dtype=F64, name="norms")
    assert_tree(got, ref, dtype)


def _small_esn(**kw: Any) -> Any:
    opts = {"spectral_radius": 0.9, "density": 0.5, "bias_scaling": 0.1, "seed": 95,
            "dtype": F64} | kw
    return EchoStateNetwork(6, 1, **opts)


@DTYPES
def test_memory_capacity(dtype):
    esn = _small_esn(leak=0.7, input_scaling=0.5)

    def run(model: Any) -> dict[str, Any]:
        res = memory_capacity(model, n_delays=8, train_length=300, test_length=150, washout=20,
                              alpha=1e-6, batch=2, seed=3)
        return {"mc": res.mc, "mc_k": res.mc_k, "delays": res.delays, "n": res.n_features}

    ref = run(esn)
    got = run(moved(esn, dtype))
    # MemoryCapacityResult holds host tensors by design (float64 mc_k, int64 delays); the
    # float32 states carry float32 noise into the regression: 10x the float32 tolerance.
    assert_tree(got, ref, dtype, device=CPU, out_dtype=F64, loose=10.0 if dtype == F32 else 1.0)


@pytest.mark.parametrize("method", ["krylov", "lyapunov"])
@DTYPES
def test_linear_memory_capacity(method, dtype):
    w = _general_matrix() * 0.5
    w_in, leak = randn(6, 1, seed=96), torch.linspace(0.3, 1.0, 6, dtype=F64)

    def run(mat: torch.Tensor, inp: torch.Tensor, a: torch.Tensor) -> dict[str, Any]:
        res = linear_memory_capacity(mat, inp, 8, leak=a, method=method)
        return {"mc": res.mc, "mc_k": res.mc_k}

    ref = run(w, w_in, leak)
    got = run(*to_dev((w, w_in, leak), dtype))
    assert_tree(got, ref, dtype, device=CPU, out_dtype=F64)


@DTYPES
def test_state_entropy(dtype):
    states = torch.tanh(randn(B, T, 8, seed=97))

    def run(s: torch.Tensor) -> dict[str, Any]:
        return {"silverman": state_entropy(s),
                "fixed": state_entropy(s, 0.3, reduction="none"),
                "layers": layer_state_entropy(s, [3, 5]),
                "layer_list": layer_state_entropy([s[..., :4], s[..., 4:]], kernel_size=0.2,
                                                  reduction="none")}

    # documented: float64 on the states' device
    assert_tree(run(to_dev(states, dtype)), run(states), dtype, out_dtype=F64)


@DTYPES
def test_esp_check_and_contraction(dtype):
    esn = _small_esn(leak=torch.linspace(0.4, 1.0, 6).tolist())
    with torch.no_grad():
        esn.a.copy_(torch.linspace(0.8, 1.2, 6))  # gains as intrinsic plasticity leaves them
    u = randn(2, 12, 1, seed=98)

    def run(model: Any, inputs: torch.Tensor) -> dict[str, Any]:
        rep = esp_check(model, scaled=True, max_iter=50)
        plain = esp_check(model.W, leak=0.5)
        con = state_contraction(model, inputs, n_initial=3, seed=4)
        value, d = diagonally_scaled_norm(model.W, max_iter=50)
        return {"report": (rep.sigma_max, rep.spectral_radius, rep.effective_spectral_radius,
                           rep.leak_min, rep.leak_max, rep.contraction_bound,
                           rep.scaled_sigma_max, rep.verdict),
                "plain": (plain.sigma_max, plain.spectral_radius,
                          plain.effective_spectral_radius, plain.contraction_bound),
                "distances": con.distances, "initial": con.initial_distances,
                "ratio": con.ratio, "scaled": value, "d": d}

    ref = run(esn, u)
    got = run(moved(esn, dtype), to_dev(u, dtype))
    # host float64 results by design (dense LAPACK on the CPU); the float32 network's gains and
    # leaks are the float32-rounded ones, and the scaled norm is a minimisation stopped after
    # 50 iterations, whose iterates move with those roundings: 10x the float32 tolerance.
    assert_tree(got, ref, dtype, device=CPU, out_dtype=F64, loose=10.0 if dtype == F32 else 1.0)


def test_cost_measures_on_the_device():
    nbytes = 1 << 20
    peak = peak_memory_bytes(lambda: torch.empty(nbytes // 4, dtype=F32, device=DEV), DEV)
    # what the allocator hands out for one 1 MiB tensor: the tensor, rounded to its blocks
    assert nbytes <= peak <= nbytes + 4096
    calls = []
    ticks = iter(range(100))
    t = time_per_call(lambda: calls.append(torch.ones(3, device=DEV).sum()), repeats=3,
                      warmup=2, device=DEV, timer=lambda: float(next(ticks)) ** 2)
    # timer t^2 at ticks (0,1), (2,3), (4,5): durations 1, 5, 9, median 5
    assert len(calls) == 5 and t == 5.0


# ------------------------------------------------------------------------------------------------
# Reservoirs
N = 8  # reservoir units

ESN_CONFIGS: dict[str, dict[str, Any]] = {
    # the torch loop with a dense W (the only loop on a GPU), leaky, with a bias
    "dense": {"sparse": False, "kernel": "torch", "leak": 0.5, "bias_scaling": 0.2},
    # torch's sparse CSR matmul in the loop (sparse=True forces it on every device)
    "sparse": {"sparse": True, "kernel": "torch", "density": 0.3, "bias_scaling": 0.1},
    # kernel="auto": numba's fused CPU kernel where it applies, the torch loop elsewhere
    "auto": {"density": 0.3, "leak": 0.7},
    "scr-sign-pi": {"topology": "scr", "input_weights": "sign_pi", "input_scaling": 0.5,
                    "leak": torch.linspace(0.3, 1.0, N).tolist()},
    "dlrb-sign-random": {"topology": "dlrb", "input_weights": "sign_random", "r": 0.6},
    "feedback": {"output_size": OUT, "feedback_scaling": 0.3, "leak": 0.8, "bias_scaling": 0.1},
    "feedback-sparse": {"output_size": OUT, "feedback_scaling": 0.3, "sparse": True},
    "logistic": {"cls": "logistic", "leak": 0.6, "bias_scaling": 0.2},
}


def _esn(config: str) -> Any:
    opts = dict(ESN_CONFIGS[config])
    cls = LogisticEchoStateNetwork if opts.pop("cls", None) == "logistic" else EchoStateNetwork
    return cls(N, D, seed=100, dtype=F64, **({"density": 0.5} | opts))


@pytest.mark.parametrize("config", list(ESN_CONFIGS))
@DTYPES
def test_echo_state_network(config, dtype):
    esn = _esn(config)
    u, x0 = randn(B, T, D, seed=101), randn(B, N, seed=102, scale=0.3)
    y = randn(B, T, OUT, seed=103, scale=0.5)

    def run(m: Any, inputs: torch.Tensor, state0: torch.Tensor, ys: torch.Tensor) -> dict:
        fb = {"teacher": ys, "feedback0": ys[:, 0]} if m.has_feedback else {}
        states, final = m(inputs, state0=state0, washout=2, **fb)
        out = {"states": states, "final": final, "zero": m.initial_state(B),
               "drive": m.input_drive(inputs, **fb),
               "step": m.step(inputs[:, 0], state0, ys[:, 0] if m.has_feedback else None),
               "from_zero": m.states(inputs, **fb)}
        # an input that requires grad: the autograd loop instead of the in-place one
        u_g, x_g = inputs.clone().requires_grad_(True), state0.clone().requires_grad_(True)
        probe(m.states(u_g, x_g, **fb)).backward()
        out.update(u_grad=u_g.grad, x0_grad=x_g.grad)
        return out

    ref = run(copy.deepcopy(esn), u, x0, y)
    assert_tree(run(moved(esn, dtype), *to_dev((u, x0, y), dtype)), ref, dtype, config)


@DTYPES
def test_numba_kernel_is_cpu_only_by_design(dtype):
    # The fused numba loop runs CPU tensors only. kernel="auto" falls back to the torch loop
    # elsewhere (test_echo_state_network["auto"]); kernel="numba" asks for the kernel itself,
    # so on another device it must refuse with a message that names the choice, and on the CPU
    # it must give the torch loop's states.
    if not numba_available():
        pytest.skip("numba is not installed: there is no kernel to test")
    esn = EchoStateNetwork(N, D, density=0.5, leak=0.7, kernel="numba", seed=114, dtype=F64)
    torch_loop = EchoStateNetwork(N, D, density=0.5, leak=0.7, kernel="torch", seed=114,
                                  dtype=F64)
    u = randn(B, T, D, seed=115)
    on_dev = moved(esn, dtype)
    if DEV.type != "cpu":
        with pytest.raises(ValueError, match="kernel='numba'"):
            on_dev.states(to_dev(u, dtype))
        return
    assert on_dev.uses_numba(B)
    assert_tensor(on_dev.states(to_dev(u, dtype)), torch_loop.states(u), dtype)


@pytest.mark.parametrize("config", ["dense", "feedback", "feedback-sparse", "logistic"])
@DTYPES
def test_echo_state_network_generate(config, dtype):
    esn = _esn(config)
    u, y = randn(B, T, D, seed=104), randn(B, T, OUT, seed=105, scale=0.5)
    future = randn(B, 4, D, seed=106)

    def run(m: Any, inputs: torch.Tensor, ys: torch.Tensor, ahead: torch.Tensor) -> dict:
        fb = {"teacher": ys} if m.has_feedback else {}
        states, final = m(inputs, **fb)
        readout = RidgeReadout(N, OUT, alpha=1e-3, device=m.W.device, dtype=m.W.dtype)
        readout.fit(states, ys)
        outs, gen_states = m.generate(4, readout, state=final, last_output=ys[:, -1],
                                      inputs=ahead)
        return {"outputs": outs, "states": gen_states, "weight": readout.weight}

    ref = run(copy.deepcopy(esn), u, y, future)
    assert_tree(run(moved(esn, dtype), *to_dev((u, y, future), dtype)), ref, dtype, config)


@DTYPES
def test_echo_state_network_autoregressive_generation(dtype):
    # one input, one output: generation feeds the prediction back as the next input
    esn = EchoStateNetwork(N, 1, spectral_radius=0.8, density=0.5, leak=0.6, seed=107,
                           dtype=F64)
    series = torch.sin(torch.arange(40, dtype=F64) / 3).reshape(1, 40, 1) * 0.8

    def run(m: EchoStateNetwork, s: torch.Tensor) -> dict:
        states, final = m(s[:, :-1])
        readout = RidgeReadout(N, 1, alpha=1e-6, device=s.device, dtype=s.dtype)
        readout.fit(states[:, 5:], s[:, 6:])
        outs, gen_states = m.generate(6, readout, state=final, last_output=s[:, -1])
        return {"outputs": outs, "states": gen_states}

    ref = run(copy.deepcopy(esn), series)
    # the ridge fit is a solve with alpha 1e-6 on strongly correlated states: its float32
    # round-off is that of an ill-conditioned solve, and six closed-loop steps carry it on
    assert_tree(run(moved(esn, dtype), to_dev(series, dtype)), ref, dtype,
                loose=100.0 if dtype == F32 else 1.0)


DEEP_CONFIGS: dict[str, dict[str, Any]] = {
    **{variant: {"variant": variant, "leak": 0.7} for variant in DEEP_VARIANTS},
    "deepESN-feedback-all": {"variant": "deepESN", "output_size": OUT, "feedback_scaling": 0.2,
                             "bias_scaling": 0.1},
    "deepESN-IA-feedback-first-logistic": {
        "variant": "deepESN-IA", "output_size": OUT, "feedback_scaling": 0.3,
        "feedback_layers": "first", "activation": "logistic", "leak": [0.5, 0.9]},
    "groupedESN-sparse": {"variant": "groupedESN", "sparse": True, "density": 0.4},
}


def _deep(config: str) -> DeepEchoStateNetwork:
    return DeepEchoStateNetwork(D, [5, 4], seed=108, dtype=F64,
                                **({"density": 0.6} | DEEP_CONFIGS[config]))


@pytest.mark.parametrize("config", list(DEEP_CONFIGS))
@DTYPES
def test_deep_echo_state_network(config, dtype):
    deep = _deep(config)
    u, y = randn(B, T, D, seed=109), randn(B, T, OUT, seed=110, scale=0.5)
    x0, future = randn(B, 9, seed=111, scale=0.3), randn(B, 3, D, seed=112)

    def run(m: DeepEchoStateNetwork, inputs: torch.Tensor, ys: torch.Tensor,
            state0: torch.Tensor, ahead: torch.Tensor) -> dict:
        fb = {"teacher": ys} if m.has_feedback else {}
        states, final = m(inputs, state0=state0, washout=1, **fb)
        readout = RidgeReadout(9, OUT, alpha=1e-3, device=state0.device, dtype=state0.dtype)
        readout.fit(states, ys[:, 1:])
        outs, gen_states = m.generate(3, readout, state=final, last_output=ys[:, -1],
                                      inputs=ahead)
        return {"states": states, "final": final, "layers": m.layer_states(inputs, **fb),
                "drives": m.input_drive(inputs, **fb), "zero": m.initial_state(B),
                "step": m.step(inputs[:, 0], state0, ys[:, 0] if m.has_feedback else None),
                "generated": outs, "generated_states": gen_states}

    ref = run(copy.deepcopy(deep), u, y, x0, future)
    assert_tree(run(moved(deep, dtype), *to_dev((u, y, x0, future), dtype)), ref, dtype,
                config)


IP_CASES: dict[str, Callable[[], tuple[Any, IntrinsicPlasticity]]] = {
    "schrauwen-esn": lambda: (_esn("dense"),
                              IntrinsicPlasticity("schrauwen", lr=5e-3, epochs=2)),
    "triesch-logistic": lambda: (_esn("logistic"),
                                 IntrinsicPlasticity("triesch", lr=5e-3, mu=0.3)),
    "schrauwen-deep": lambda: (_deep("deepESN-IA"),
                               IntrinsicPlasticity("schrauwen", lr=5e-3, sigma=0.3)),
}


@pytest.mark.parametrize("case", list(IP_CASES))
@DTYPES
def test_intrinsic_plasticity(case, dtype):
    model, ip = IP_CASES[case]()
    u = randn(2, 20, D, seed=113)

    def run(m: Any, inputs: torch.Tensor) -> dict:
        hist = ip.fit(m, inputs, washout=3, frozen_stats=True)
        layers = list(m.layers) if isinstance(m, DeepEchoStateNetwork) else [m]
        return {"a": [esn.a for esn in layers], "b": [esn.b for esn in layers],
                "hist": hist, "outputs": unit_outputs(m, inputs, washout=3),
                "kl": ip.kl_divergence(unit_outputs(m, inputs)[0])}

    ref = run(copy.deepcopy(model), u)
    got = run(moved(model, dtype), to_dev(u, dtype))
    # KL estimates are histograms: a float32 output that rounds across a bin edge moves one of
    # the 2 x 17 samples of a unit to the next bin, which can shift the estimate by up to
    # (1/34) log(1/q) with q the target mass of a tail bin; float64 is exact to round-off.
    kl_tol = 0.0 if dtype == F64 else 0.05
    for key in ("kl", "frozen_kl"):
        for g, r in zip(got["hist"].pop(key), ref["hist"].pop(key), strict=True):
            assert abs(g - r) <= kl_tol + 1e-9 * abs(r), (key, g, r)
    kl_got, kl_ref = got.pop("kl"), ref.pop("kl")
    assert on_device(kl_got) and kl_got.dtype == F64
    assert float((kl_got.cpu() - kl_ref).abs().max()) <= kl_tol + 1e-9
    assert_tree(got, ref, dtype, case)


@DTYPES
def test_ridge_readout(dtype):
    x, y = randn(B, T, 6, seed=120), randn(B, T, OUT, seed=121)
    x_zero = x.clone()
    x_zero[..., 2] = 0.0  # a feature that never varies: C_xx is exactly singular

    def run(xs: torch.Tensor, ys: torch.Tensor, xz: torch.Tensor, device: torch.device,
            dt: torch.dtype) -> dict:
        full = RidgeReadout(6, OUT, alpha=1e-2, device=device, dtype=dt).fit(xs, ys)
        part = RidgeReadout(6, OUT, alpha=1e-2, device=device, dtype=dt)
        part.partial_fit(xs[:2], ys[:2])
        other = RidgeReadout(6, OUT, alpha=1e-2, device=device, dtype=dt)
        accumulate_normal_equations(other, xs[2:], ys[2:])
        part.merge(other).solve()
        pinv = RidgeReadout(6, OUT, alpha=0.0, on_singular="pinv", device=device, dtype=dt)
        pinv.fit(xz, ys)
        no_c = RidgeReadout(6, OUT, alpha=1e-2, fit_intercept=False, device=device, dtype=dt)
        return {"weight": full.weight, "bias": full.bias, "predict": full(xs),
                "merged": (part.weight, part.bias), "pinv": (pinv.weight, pinv.bias),
                "no_intercept": no_c.fit(xs, ys).weight, "stats": full.statistics()}

    ref = run(x, y, x_zero, CPU, F64)
    got = run(*to_dev((x, y, x_zero), dtype), DEV, dtype)
    # the normal equations are accumulated and solved in float64 whatever the data's dtype
    assert_tree(got.pop("stats"), ref.pop("stats"), dtype, out_dtype=F64)
    assert_tree(got, ref, dtype)
    # .to() moves the statistics to the new device and keeps them float64
    moved_readout = RidgeReadout(6, OUT, alpha=1e-2, dtype=F64).fit(x, y).to(DEV, dtype)
    assert all(on_device(t) and t.dtype == F64 for t in moved_readout.statistics().values())
    assert_tensor(moved_readout.predict(to_dev(x, dtype)), ref["predict"], dtype)


@pytest.mark.parametrize("pooling", ["last", "mean"])
@DTYPES
def test_ridge_classifier_readout(pooling, dtype):
    states = randn(6, T, 5, seed=122)
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    lengths = torch.tensor([T, 3, 5, T, 2, 6])

    def run(s: torch.Tensor, lab: torch.Tensor, lens: torch.Tensor, clf: Any) -> dict:
        clf.fit(s, lab, lens)
        return {"scores": clf.decision_function(s, lens), "classes": clf.predict(s, lens),
                "pooled": pool_states(s, pooling, lens), "unpadded": clf(s)}

    ref = run(states, labels, lengths, RidgeClassifierReadout(5, 3, 1e-3, pooling, dtype=F64))
    got = run(*to_dev((states, labels, lengths), dtype),
              RidgeClassifierReadout(5, 3, 1e-3, pooling, device=DEV, dtype=dtype))
    assert_tree(got, ref, dtype)


@pytest.mark.parametrize("kind", ["lms", "rls", "rls-forgetting"])
@DTYPES
def test_online_readouts(kind, dtype):
    x, y = randn(T, B, 5, seed=123), randn(T, B, OUT, seed=124)
    make = {"lms": lambda **f: LMSReadout(5, OUT, lr=0.05, **f),
            "rls": lambda **f: RLSReadout(5, OUT, delta=0.5, **f),
            "rls-forgetting": lambda **f: RLSReadout(5, OUT, forgetting=0.9,
                                                     fit_intercept=False, **f)}[kind]

    def run(readout: Any, xs: torch.Tensor, ys: torch.Tensor) -> dict:
        preds = [readout.step(xs[t], ys[t]) for t in range(T)]
        single = readout.step(xs[0, 0], ys[0, 0])  # one sample as (F,), (O,)
        out = {"preds": torch.stack(preds), "single": single, "weight": readout.weight,
               "bias": readout.bias, "predict": readout(xs[0])}
        if kind != "lms":
            out["P"] = readout.P
        return out

    ref = run(make(dtype=F64), x, y)
    built = run(make(device=DEV, dtype=dtype), *to_dev((x, y), dtype))
    moved_ = run(make(dtype=F64).to(DEV, dtype), *to_dev((x, y), dtype))
    for got in (built, moved_):
        if "P" in got:
            # RLS keeps P (and its weights) in float64 whatever the readout's dtype
            assert_tensor(got.pop("P"), ref["P"], dtype, out_dtype=F64, name="P")
        assert_tree(got, {k: v for k, v in ref.items() if k != "P"}, dtype, kind)


@DTYPES
def test_esn_regressor(dtype):
    x, y = randn(2, 30, D, seed=125), randn(2, 30, seed=126)
    opts = {"units": N, "spectral_radius": 0.8, "leak": 0.6, "alpha": 1e-4, "washout": 3,
            "seed": 127}

    def run(est: ESNRegressor, xs: Any, ys: Any) -> dict:
        est.fit(xs, ys)
        as_numpy = est.predict(np.asarray(x[0]))  # numpy in: numpy out, on the host
        return {"predict": est.predict(xs), "numpy": torch.from_numpy(as_numpy),
                "score": est.score(xs, ys), "weight": est.readout_.weight}

    ref = run(ESNRegressor(**opts), x, y)
    got = run(ESNRegressor(**opts, dtype=dtype, device=DEVICE), *to_dev((x, y), dtype))
    assert_tensor(got.pop("numpy"), ref.pop("numpy"), dtype, device=CPU, name="numpy")
    assert_tree(got, ref, dtype)
    # CPU data given to a device regressor is moved there
    est = ESNRegressor(**opts, dtype=dtype, device=DEVICE).fit(x, y)
    assert on_device(est.esn_.W) and on_device(est.predict(x))


@pytest.mark.parametrize("config", ["dense", "auto", "feedback"])
@DTYPES
def test_streaming_fit_and_predict(config, dtype):
    esn = _esn(config)
    u, y = randn(B, 11, D, seed=128), randn(B, 11, OUT, seed=129)
    x0 = randn(B, N, seed=130, scale=0.3)

    def run(m: Any, inputs: torch.Tensor, ys: torch.Tensor, state0: torch.Tensor,
            readout: RidgeReadout) -> dict:
        fb = {"feedback0": ys[:, 0]} if m.has_feedback else {}
        final = fit_streaming(m, readout, inputs, ys, chunk=3, washout=2, state0=state0, **fb)
        teach = {"teacher": ys, **fb} if m.has_feedback else {}
        outs, last = predict_streaming(m, readout, inputs, chunk=4, state0=state0, **teach)
        return {"final": final, "weight": readout.weight, "bias": readout.bias,
                "outputs": outs, "last": last}

    ref = run(copy.deepcopy(esn), u, y, x0, RidgeReadout(N, OUT, alpha=1e-3, dtype=F64))
    got = run(moved(esn, dtype), *to_dev((u, y, x0), dtype),
              RidgeReadout(N, OUT, alpha=1e-3, device=DEV, dtype=dtype))
    assert_tree(got, ref, dtype, config)


@DTYPES
def test_topology_and_graph_constructors(dtype):
    builders: dict[str, Callable[..., torch.Tensor]] = {
        "sparse_random": lambda **f: sparse_random(N, 0.3, "normal", seed=3, **f),
        "delay_line": lambda **f: delay_line(N, 0.4, **f),
        "delay_line_feedback": lambda **f: delay_line_feedback(N, 0.4, 0.1, **f),
        "simple_cycle": lambda **f: simple_cycle(N, 0.7, **f),
        "dense_uniform_input": lambda **f: dense_uniform_input(N, D, [0.1, 0.5, 1.0], seed=4,
                                                               **f),
        "sign_pattern_input": lambda **f: sign_pattern_input(N, D, 0.3, "pi", digit_offset=2,
                                                             **f),
        **{kind: (lambda k=kind, **f: graph_reservoir(
            k, N, 2, spectral_radius=0.9, seed=5, waxman_alpha=0.6, **f)) for kind in GRAPH_KINDS},
    }
    for name, build in builders.items():
        ref = build(dtype=F64)
        assert_tensor(build(dtype=dtype, device=DEV), ref, dtype, name=name)
        if name not in ("dense_uniform_input", "sign_pattern_input"):
            csr = build(dtype=dtype, device=DEV, layout="csr")
            assert csr.layout == torch.sparse_csr, name
            assert_tensor(csr.to_dense(), ref, dtype, name=f"{name} csr")
    # A reservoir built directly on the device from a seed is the CPU one, cast.
    esn = EchoStateNetwork(N, D, seed=6, density=0.5, bias_scaling=0.2, device=DEV, dtype=dtype)
    ref_esn = EchoStateNetwork(N, D, seed=6, density=0.5, bias_scaling=0.2, dtype=F64)
    for (name, got), want in zip(esn.named_buffers(), ref_esn.buffers(), strict=True):
        assert_tensor(got, want, dtype, name=name)
    # and a user W already on the device is accepted as the topology
    user = EchoStateNetwork(N, D, topology=to_dev(ref_esn.W, dtype), seed=6, dtype=F64)
    assert_tensor(user.W, ref_esn.W, dtype, device=CPU, out_dtype=F64, name="user W")


# ------------------------------------------------------------------------------------------------
# Tasks that take device= / dtype=
LONG_TERM_ARGS: dict[str, dict[str, Any]] = {
    "delayed_recall": {"batch": B, "length": 9, "tau": 3, "distribution": "uniform"},
    "adding_problem": {"batch": B, "length": 20},
    "multiplication_problem": {"batch": B, "length": 12, "variant": "pascanu2013"},
    "temporal_order": {"batch": B, "length": 20},
    "random_permutation": {"batch": B, "length": 10},
    "noiseless_memorization": {"batch": B, "delay": 5},
}


@pytest.mark.parametrize("name", list(LONG_TERM_TASKS))
@DTYPES
def test_long_term_tasks(name, dtype):
    spec = LONG_TERM_TASKS[name]
    args = LONG_TERM_ARGS[name]
    ref = spec.generate(**args, seed=140, dtype=dtype)
    task = spec.generate(**args, seed=140, dtype=dtype, device=DEV)
    # drawn on the CPU in float64 and cast: the same numbers on every device
    for field in ("inputs", "targets", "mask", "lengths"):
        got, want = getattr(task, field), getattr(ref, field)
        assert on_device(got) and got.dtype == want.dtype, field
        assert torch.equal(got.cpu(), want), field
    for key, value in task.info.items():
        assert on_device(value), key
    # losses and scores on the device against the CPU float64 ones
    ref64 = spec.generate(**args, seed=140, dtype=F64)
    outputs = randn(*ref64.targets.shape, seed=141, scale=0.5) + ref64.targets

    def run(t: Any, out: torch.Tensor) -> dict:
        score = t.score(out)
        return {"loss": spec.loss(out, t), "success": score.success_rate,
                "step_accuracy": score.step_accuracy, "mse": score.mse,
                "correct": score.correct, "final": t.final_outputs(out), "valid": t.valid}

    # LongTermTask.to(): the float64 task itself moved, so that both runs score the same data
    got = run(ref64.to(DEV, dtype), to_dev(outputs, dtype))
    assert_tree(got, run(ref64, outputs), dtype, name)


@DTYPES
def test_series_tasks(dtype):
    makers: dict[str, Callable[..., Any]] = {
        "channel_equalization": lambda **f: channel_equalization(30, 20.0, batch=2, seed=1, **f),
        "narma": lambda **f: narma(30, batch=2, washout=5, seed=2, **f),
        "henon": lambda **f: henon(25, seed=3, **f),
        "lorenz": lambda **f: lorenz(20, seed=4, **f),
        "sine_mixture": lambda **f: sine_mixture(40, noise=0.1, seed=5, **f),
        "mackey_glass": lambda **f: mackey_glass(20, washout=50.0, seed=6, **f),
    }
    for name, make in makers.items():
        ref, got = make(dtype=F64), make(dtype=dtype, device=DEV)
        # each is computed in float64 on the CPU, then cast
        assert_tree(got, ref, dtype, name)
    pairs = list(stream_one_step_ahead([0.1, 0.4, -0.2], dtype=dtype, device=DEV))
    assert [(float(x), float(y)) for x, y in pairs] == [
        (float(torch.tensor(0.1, dtype=dtype)), float(torch.tensor(0.4, dtype=dtype))),
        (float(torch.tensor(0.4, dtype=dtype)), float(torch.tensor(-0.2, dtype=dtype)))]
    assert all(on_device(t) and t.dtype == dtype for pair in pairs for t in pair)

    u, _ = narma(25, batch=2, seed=7, dtype=F64)
    prediction = randn(2, 25, 1, seed=142)
    channel = channel_equalization(30, 20.0, seed=8, dtype=F64)

    def run(inputs: torch.Tensor, pred: torch.Tensor, received: torch.Tensor,
            symbols: torch.Tensor) -> dict:
        x, y = one_step_ahead(inputs[0, :, 0])
        return {"narma_targets": narma_targets(inputs), "x": x, "y": y,
                "nmse": nmse(pred, inputs), "nrmse": nrmse(pred, inputs),
                "nearest": nearest_symbol(received),
                "ser": symbol_error_rate(received, symbols)}

    ref = run(u, prediction, channel.inputs, channel.targets)
    got = run(*to_dev((u, prediction, channel.inputs, channel.targets), dtype))
    assert_tree(got, ref, dtype)


@DTYPES
def test_music_tasks(dtype):
    frames = [[[60, 64], [], [62]], [[21], [108, 60]], [[70], [71], [72], [73]]]
    rolls = [notes_to_roll(f, dtype=F64) for f in frames]
    scores = randn(3, 4, 88, seed=143)

    def run(rs: list[torch.Tensor], sc: torch.Tensor, **factory: Any) -> dict:
        batch = next_step_batch(rs, **factory)
        padded, lengths = pad_rolls(rs, **factory)
        return {"roll": notes_to_roll(frames[0], **factory), "inputs": batch.inputs,
                "targets": batch.targets, "mask": batch.mask, "padded": padded,
                "nll": frame_nll(sc, batch.targets, batch.mask),
                "nll_none": frame_nll(torch.sigmoid(sc), batch.targets, logits=False,
                                      reduction="none"),
                "accuracy": frame_accuracy(sc, batch.targets, batch.mask, threshold=0.0),
                "lengths": lengths, "batch_lengths": batch.lengths}

    ref = run(rolls, scores)
    got = run(rolls, to_dev(scores, dtype), dtype=dtype, device=DEV)
    # lengths stay on the CPU by design (pack_padded_sequence wants them there)
    for key in ("lengths", "batch_lengths"):
        assert torch.equal(got.pop(key), ref.pop(key))
    assert_tree(got, ref, dtype)


@DTYPES
def test_text_and_classification_tasks(dtype):
    text = "the cat sat on the mat; the dog sat on the log. " * 3
    vocab = CharVocabulary.from_text(text)

    def batches(**factory: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(char_batches(text, 6, 4, seed=3, vocabulary=vocab, one_hot=True,
                                 **factory))

    ref, got = batches(dtype=F64), batches(dtype=dtype, device=DEV)
    assert len(got) == len(ref)
    for (x, y), (x_ref, y_ref) in zip(got, ref, strict=True):
        assert_tensor(x, x_ref, dtype, name="one-hot inputs")
        assert_tensor(y, y_ref, dtype, name="targets")  # int64, on the device
    logits, targets = randn(2, 5, len(vocab), seed=144), ref[0][1][:2, :5]
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    scores, labels = randn(6, 3, seed=145), torch.tensor([0, 2, 1, 1, 0, 2])

    def run(lg: torch.Tensor, tg: torch.Tensor, m: torch.Tensor, sc: torch.Tensor,
            lab: torch.Tensor) -> dict:
        return {"bpc": bits_per_character(lg, tg), "bpc_masked": bits_per_character(lg, tg, m),
                "accuracy": classification_accuracy(sc, lab),
                "accuracy_indices": classification_accuracy(sc.argmax(1), lab)}

    assert_tree(run(*to_dev((logits, targets, mask, scores, labels), dtype)),
                run(logits, targets, mask, scores, labels), dtype)


# ------------------------------------------------------------------------------------------------
# state_dict round trips: saved from the device, loaded into a fresh CPU module
def _round_trip(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    # no map_location: the tensors come back on the device they were saved from, and
    # load_state_dict copies them into the CPU module's own tensors
    return torch.load(buf, weights_only=True)


@DTYPES
def test_state_dict_round_trip_echo_state_network(dtype):
    def build(seed: int) -> EchoStateNetwork:
        return EchoStateNetwork(N, D, OUT, feedback_scaling=0.2, density=0.5, leak=0.7,
                                bias_scaling=0.1, seed=seed, dtype=F64)

    original = build(150)
    on_dev = moved(original, dtype)
    fresh = build(151)  # other weights, so that the load is what makes them equal
    assert not torch.equal(fresh.W, original.W)
    fresh.load_state_dict(_round_trip(on_dev))
    for name, t in fresh.named_buffers():
        assert t.device == CPU and t.dtype == F64, name
    u, y = randn(B, T, D, seed=152), randn(B, T, OUT, seed=153)
    got_cpu = fresh(u, teacher=y)[0]
    got_dev = on_dev(*to_dev((u,), dtype), teacher=to_dev(y, dtype))[0]
    # the fresh module holds the device module's (possibly float32-rounded) weights in float64
    assert_tensor(got_cpu, original(u, teacher=y)[0], dtype, device=CPU, out_dtype=F64)
    assert_tensor(got_dev, got_cpu, dtype)


@pytest.mark.parametrize("cell_name", ["lstm-vanilla", "gru-torch"])
@DTYPES
def test_state_dict_round_trip_gated_network(cell_name, dtype):
    original = RecurrentNetwork(CELLS[cell_name](), OUT, readout_layers=2, generator=gen(154))
    on_dev = moved(original, dtype)
    fresh = RecurrentNetwork(CELLS[cell_name](), OUT, readout_layers=2, generator=gen(155))
    with torch.no_grad():
        for p in fresh.parameters():
            p.mul_(-1.0)  # not the original's weights
    fresh.load_state_dict(_round_trip(on_dev))
    for name, p in fresh.named_parameters():
        assert p.device == CPU and p.dtype == F64, name
    x = randn(B, T, D, seed=156)
    got_cpu = fresh(x)
    assert_tree(_detach(got_cpu), _detach(original(x)), dtype, device=CPU, out_dtype=F64)
    assert_tree(_detach(on_dev(to_dev(x, dtype))), _detach(got_cpu), dtype)
    # a fitted ridge readout saved on the device predicts the same on the CPU
    states = randn(B, T, H, seed=157)
    readout = RidgeReadout(H, OUT, dtype=F64).fit(states, randn(B, T, OUT, seed=158))
    fresh_readout = RidgeReadout(H, OUT, dtype=F64)
    fresh_readout.load_state_dict(_round_trip(moved(readout, dtype)))
    assert_tensor(fresh_readout(states), readout(states), dtype, device=CPU, out_dtype=F64)
