"""``torch.jit.trace``, ``torch.export.export`` and ``torch.compile(fullgraph=True)`` on every
cell's step and on the layers (issue 12, part 2), with the NaN scan forced on: tracing turns it
off by itself, the shape checks are static, and the graphs equal eager within a round-off bound.

Compiling uses the ``eager`` backend (Dynamo's graph capture, which is what ``fullgraph=True``
tests, without Inductor's code generation) and ``aot_eager`` once for the backward graph.
"""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

import rnnlab
from rnnlab.cells import (
    VARIANTS,
    DeepTransitionCell,
    ElmanCell,
    ELSTMCell,
    GRUCell,
    LSTMCell,
    StackedCell,
    flatten_state,
)
from rnnlab.models import ElmanRNN, RecurrentLayer, RecurrentNetwork
from tests.reference import assert_within, gamma

pytestmark = pytest.mark.filterwarnings(
    # torch 2.13 deprecates jit.trace in favour of export/compile; it still works and is tested
    "ignore:`torch.jit.trace:DeprecationWarning"
)

D, H, B, T = 3, 4, 2, 4
DTYPE = torch.float64
MODES = ("trace", "export", "compile")


@pytest.fixture(autouse=True)
def _scan_forced_on():
    """The switch on: whatever still scans while tracing would fail these tests."""
    previous = rnnlab.set_check_finite(True)
    yield
    rnnlab.set_check_finite(previous)


CELLS = {
    "elman": lambda: ElmanCell(D, H),
    "elman-relu-one-bias": lambda: ElmanCell(D, H, nonlinearity="relu", recurrent_bias=False),
    **{f"lstm-{v}": (lambda v=v: LSTMCell(D, H, variant=v)) for v in VARIANTS},
    "gru-cho": lambda: GRUCell(D, H),
    "gru-torch": lambda: GRUCell(D, H, form="torch"),
    "deep-transition": lambda: DeepTransitionCell(D, H),
    "deep-transition-shortcut": lambda: DeepTransitionCell(D, H, layers=3, shortcut=True),
    "stacked": lambda: StackedCell([LSTMCell(D, H), GRUCell(H, H, form="torch"),
                                    ElmanCell(H, H)]),
    "elstm": lambda: ELSTMCell(D, H),
}


def bound(x: torch.Tensor, steps: int) -> float:
    """Round-off bound between two runs of the same recurrence whose sums may be grouped
    differently (aot_eager decomposes ops; a traced ``impl="auto"`` LSTM runs the step loop
    where eager runs the hand-written sequence).

    One pre-activation is a sum of at most n = D + 4H + 2 terms (the FGR LSTM's widest row:
    input, h, three gates, two biases) each at most c = max(1, |x|max, steps) in size (weights
    are U(-1/sqrt(H), 1/sqrt(H)) or the forget bias 1, states at most 1 except the LSTM's c(t),
    at most t); two groupings differ by at most 2 gamma_n n c (Higham 2002, Lemma 3.1), and the
    squashings are 1-Lipschitz. A step passes the previous gap on with a gain of at most
    g = 1 + 4 sqrt(H) (four recurrent matrices of row sums <= sqrt(H)), so after ``steps`` steps
    the gap is at most delta (g^steps - 1) / (g - 1), plus one readout layer. In float64 this is
    ~1e-10: far above what the runs show (0 to 1e-15), far below any wrong graph (>= 1e-3)."""
    n = D + 4 * H + 2
    c = max(1.0, float(x.abs().max()), float(steps))
    delta = 2 * gamma(n, DTYPE) * n * c
    g = 1 + 4 * H ** 0.5
    return delta * (g ** steps - 1) / (g - 1) + 2 * gamma(H + 1, DTYPE) * (H + 1)


def build(module: torch.nn.Module, mode: str, args: tuple, **kwargs):
    """The traced / exported / compiled module (compile's graph capture is lazy: it runs at the
    first call)."""
    if mode == "trace":
        return torch.jit.trace(module, args, **kwargs)
    if mode == "export":
        return torch.export.export(module, args, **kwargs).module()
    torch._dynamo.reset()
    return torch.compile(module, fullgraph=True, backend=kwargs.get("backend", "eager"))


class Step(torch.nn.Module):
    """One step of a cell with the state's leaves as separate tensors (what tracers take)."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell
        self.spec = torch.utils._pytree.tree_structure(cell.initial_state(1))

    def forward(self, x_t, *leaves):
        state = torch.utils._pytree.tree_unflatten(list(leaves), self.spec)
        return tuple(flatten_state(self.cell(x_t, state)))


def cases(names, fast, *more):
    """(name, *more, mode) for every name and mode; exporting and compiling (a second or more
    each on a shared core) run in the default suite for the ``fast`` names only, every name
    under ``-m slow``; tracing (cheap) always runs for all."""
    params = []
    for name in names:
        for extra in more or [()]:
            for mode in MODES:
                slow = mode != "trace" and (name, *extra) not in fast
                params.append(pytest.param(name, *extra, mode, id="-".join((name, *extra, mode)),
                                           marks=(pytest.mark.slow,) if slow else ()))
    return params


# one of each class of cell (the other LSTM variants are flags of the same step)
FAST_CELLS = {(n,) for n in ("elman", "lstm-vanilla", "lstm-FGR", "gru-cho", "gru-torch",
                             "deep-transition-shortcut", "stacked")}


@pytest.mark.parametrize(("name", "mode"), cases(CELLS, FAST_CELLS))
def test_every_cell_step_traces_exports_and_compiles(name, mode):
    torch.manual_seed(0)
    step = Step(CELLS[name]().to(DTYPE))
    x_t = torch.randn(B, D, dtype=DTYPE)
    leaves = tuple(0.5 * torch.randn_like(s) for s in flatten_state(step.cell.initial_state(B)))
    graph = build(step, mode, (x_t, *leaves))
    with torch.no_grad():
        got, want = graph(x_t, *leaves), step(x_t, *leaves)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_within(g, w, bound(x_t, 1), f"{name} {mode}")


class Outputs(torch.nn.Module):
    """A layer's or network's outputs and final state, flattened."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out, final = self.model(x)
        return (out, *flatten_state(final))


LAYERS = {
    "layer-elman": lambda impl: RecurrentLayer(ElmanCell(D, H), impl=impl),
    "layer-lstm-vanilla": lambda impl: RecurrentLayer(LSTMCell(D, H), impl=impl),
    "layer-lstm-NP": lambda impl: RecurrentLayer(LSTMCell(D, H, variant="NP"), impl=impl),
    "layer-gru-cho": lambda impl: RecurrentLayer(GRUCell(D, H), impl=impl),
    "layer-gru-torch": lambda impl: RecurrentLayer(GRUCell(D, H, form="torch"), impl=impl),
    "layer-stack": lambda impl: RecurrentLayer(
        [LSTMCell(D, H, variant="NP"), DeepTransitionCell(H, H, shortcut=True)], impl=impl),
    "network-lstm-FGR-deep-output": lambda impl: RecurrentNetwork(
        LSTMCell(D, H, variant="FGR"), 2, "tanh", readout_layers=2, impl=impl),
    "network-gru-torch": lambda impl: RecurrentNetwork(GRUCell(D, H, form="torch"), 2,
                                                       impl=impl),
    "elman-rnn": lambda impl: ElmanRNN(D, H, 2, impl=impl),
}


# each entry point (layer, network, the course's Elman) with the default impl and the loop
FAST_LAYERS = {(n, i) for n in ("layer-lstm-vanilla", "network-gru-torch", "elman-rnn")
               for i in ("auto", "loop")}


@pytest.mark.parametrize(("name", "impl", "mode"),
                         cases(LAYERS, FAST_LAYERS, ("auto",), ("loop",)))
def test_layers_trace_export_and_compile(name, impl, mode):
    torch.manual_seed(0)
    model = Outputs(LAYERS[name](impl).to(DTYPE))
    x = torch.randn(B, T, D, dtype=DTYPE)
    graph = build(model, mode, (x,))
    with torch.no_grad():
        got, want = graph(x), model(x)
    for g, w in zip(got, want, strict=True):
        assert_within(g, w, bound(x, T), f"{name} {impl} {mode}")


@pytest.mark.parametrize("impl", ["auto", pytest.param("loop", marks=pytest.mark.slow)])
def test_traced_and_exported_layers_keep_the_batch_dynamic(impl):
    torch.manual_seed(0)
    model = Outputs(RecurrentLayer([LSTMCell(D, H, variant="NP"), GRUCell(H, H)], impl=impl)
                    .to(DTYPE))
    x, x5 = torch.randn(B, T, D, dtype=DTYPE), torch.randn(5, T, D, dtype=DTYPE)
    traced = build(model, "trace", (x,))
    exported = build(model, "export", (x,), dynamic_shapes={"x": {0: Dim("batch")}})
    with torch.no_grad():
        want = model(x5)
        for graph, how in ((traced, "trace"), (exported, "export")):
            for g, w in zip(graph(x5), want, strict=True):
                assert_within(g, w, bound(x5, T), f"{how} at batch 5")


@pytest.mark.slow
def test_compiled_layer_trains_like_eager():
    # aot_eager also captures the backward graph: the gradients must match eager's
    torch.manual_seed(0)
    model = RecurrentNetwork(LSTMCell(D, H), 1, impl="loop").to(DTYPE)
    x = torch.randn(B, T, D, dtype=DTYPE)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    grads = []
    for run in (model, compiled):
        model.zero_grad()
        run(x)[0].pow(2).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for (name, _), g, w in zip(model.named_parameters(), grads[1], grads[0], strict=True):
        # the backward sums T steps of B products per weight: T B more terms than a forward
        assert_within(g, w, T * B * bound(x, T), f"grad {name}")


def test_a_traced_layer_does_not_scan_its_inputs():
    # the scan is gone from the graph: NaN input gives NaN output, not an error
    torch.manual_seed(0)
    model = Outputs(RecurrentLayer(ElmanCell(D, H)).to(DTYPE))
    x = torch.randn(B, T, D, dtype=DTYPE)
    exported = build(model, "export", (x,))
    x[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model(x)
    out = exported(x)[0]
    assert bool(torch.isnan(out[0, 1:]).all()) and bool(torch.isfinite(out[1]).all())
