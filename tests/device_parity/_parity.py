"""What every device-parity module shares: the device under test, the comparison helpers
(float64 to round-off, float32 to what float32 carries) and the cases several modules use.

See the package docstring (``tests/device_parity/__init__.py``) for what is checked.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

from rnnlab.cells import (
    VARIANTS,
    DeepTransitionCell,
    ElmanCell,
    ELSTMCell,
    GRUCell,
    LSTMCell,
    StackedCell,
)
from rnnlab.models import ElmanRNN, RecurrentNetwork
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


# Every module of this folder sets ``pytestmark = PARITY_MARKS``.
PARITY_MARKS = [
    pytest.mark.skipif(not _device_usable(DEVICE),
                       reason=f"RNNLAB_TEST_DEVICE={DEVICE!r} is not usable here"),
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
]

DEV = torch.device(DEVICE) if _device_usable(DEVICE) else torch.device("cpu")
CPU = torch.device("cpu")
F64, F32 = torch.float64, torch.float32
DTYPES = pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])

# Sizes: tiny, so that the whole folder runs in seconds on a CPU.
D, H, OUT, T, B = 3, 5, 2, 7, 3
N = 8  # reservoir units


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
# Cases shared by several modules
def _cells() -> dict[str, Callable[[], Any]]:
    makers: dict[str, Callable[[], Any]] = {
        "elman-tanh": lambda: ElmanCell(D, H, generator=gen(1), dtype=F64),
        "elman-relu": lambda: ElmanCell(D, H, nonlinearity="relu", generator=gen(2), dtype=F64),
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


def _detach(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(_detach(s) for s in state)


def _sequence_data(seed: int, batch: int = B, steps: int = T) -> tuple[torch.Tensor, ...]:
    return (randn(batch, steps, D, seed=seed), randn(batch, steps, OUT, seed=seed + 1, scale=0.5),
            randn(batch, H, seed=seed + 2, scale=0.3))


def _elstm_model() -> torch.nn.Module:
    torch.manual_seed(55)
    cell = ELSTMCell(D, H, dtype=F64)
    cell.reset_parameters(gen(56))
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(3.0)  # away from the nearly linear regime, so that errors would show
    return CellNetwork(cell, OUT)


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
