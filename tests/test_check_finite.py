"""The NaN/inf scan as an option (issue 12, part 2).

* the switch: ``rnnlab.set_check_finite`` (process-wide), ``rnnlab.check_finite(...)`` (this
  thread), ``check_finite=`` of a layer or of ``run_cell``, ``RNNLAB_CHECK_FINITE``;
* with the scan on (the default on the CPU) NaN/inf input fails with the same message as before;
  with it off no tensor value is read on the host (a detector that fails the test otherwise,
  itself shown to fire when the scan is on);
* ``"auto"`` skips per-step scans on an accelerator (shown with meta tensors: reading one raises);
* tracing (``torch.jit.trace``), exporting (``torch.export``) and compiling
  (``torch.compile(fullgraph=True)``) turn the scan off, with the switch forced on: the graphs
  of every cell's step and of the layers are static and equal eager (``test_check_finite_graphs``
  holds those).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext

import pytest
import torch

import rnnlab
from rnnlab import _validation as V
from rnnlab.cells import ElmanCell, GRUCell, LSTMCell, StackedCell, run_cell
from rnnlab.cells.base import check_lengths
from rnnlab.models import ElmanRNN, RecurrentLayer, RecurrentNetwork

pytestmark = pytest.mark.filterwarnings(
    # torch 2.13 deprecates jit.trace in favour of export/compile; it still works and is tested
    "ignore:`torch.jit.trace:DeprecationWarning"
)

D, H, B, T = 3, 4, 2, 5


@pytest.fixture(autouse=True)
def _switch_restored():
    """Every test starts from the default ("auto", whatever RNNLAB_CHECK_FINITE says) and
    leaves the process-wide switch as it found it."""
    previous = rnnlab.set_check_finite("auto")
    yield
    rnnlab.set_check_finite(previous)


# ----------------------------------------------------------------------------------------------
# A detector of host syncs: every Python-level read of a tensor's value raises
SYNC_METHODS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist")


class HostSync(AssertionError):
    pass


@contextmanager
def no_host_sync():
    """Inside, ``bool(t)``, ``int(t)``, ``float(t)``, ``t.item()``, ``t.tolist()`` (and ``if t:``)
    raise :class:`HostSync`: each is a device-to-host copy and a sync on an accelerator."""
    def refuse(self, *args, **kwargs):
        raise HostSync("a tensor's value was read on the host")

    with pytest.MonkeyPatch.context() as mp:
        for name in SYNC_METHODS:
            mp.setattr(torch.Tensor, name, refuse)
        yield


def entry_points():
    """(name, call) for every public whole-sequence entry point of cells/ and models/, each
    given an initial state so that both checks (input and state) are on the path."""
    torch.manual_seed(0)
    lstm, gru, stack = LSTMCell(D, H), GRUCell(D, H), StackedCell([ElmanCell(D, H),
                                                                   LSTMCell(H, H, variant="NP")])
    layer_loop = RecurrentLayer(lstm, impl="loop")
    layer_auto = RecurrentLayer(lstm)
    network = RecurrentNetwork(stack, 2)
    elman = ElmanRNN(D, H, 2)
    elman_loop = ElmanRNN(D, H, 2, impl="loop")
    h0 = torch.zeros(B, H)
    return [
        ("run_cell", lambda x: run_cell(gru, x, h0)),
        ("RecurrentLayer loop", lambda x: layer_loop(x, (h0, h0))),
        ("RecurrentLayer auto", lambda x: layer_auto(x, (h0, h0))),
        ("RecurrentNetwork", lambda x: network(x, (h0, (h0, h0)))),
        ("ElmanRNN", lambda x: elman(x, h0)),
        ("ElmanRNN loop", lambda x: elman_loop(x, h0)),
        ("ElmanRNN.hidden_states", lambda x: elman.hidden_states(x, h0)),
    ]


ENTRY_NAMES = [name for name, _ in entry_points()]


def entry(name):
    return dict(entry_points())[name]


def nan_input():
    x = torch.randn(B, T, D)
    x[1, 2, 0] = float("nan")
    return x


# ----------------------------------------------------------------------------------------------
def test_the_detector_fires_when_the_scan_is_on():
    # the control: without it the no-sync tests below could pass for a detector that sees nothing
    call = entry("RecurrentLayer loop")
    with no_host_sync(), pytest.raises(HostSync):
        call(torch.randn(B, T, D))


@pytest.mark.parametrize("name", ENTRY_NAMES)
def test_nan_input_raises_the_same_error_with_the_scan_on(name):
    call = entry(name)
    with pytest.raises(ValueError, match=r"^x contains non-finite values \(1 NaN, 0 inf\)$"):
        call(nan_input())
    x = torch.randn(B, T, D)
    x[0, 0, 1] = float("inf")
    with rnnlab.check_finite(True), pytest.raises(ValueError, match=r"\(0 NaN, 1 inf\)"):
        call(x)


@pytest.mark.parametrize("how", ["global", "context", "context over global True"])
@pytest.mark.parametrize("name", ENTRY_NAMES)
def test_switched_off_no_value_is_read_and_nan_flows_through(name, how):
    call = entry(name)
    off = rnnlab.check_finite(False)
    if how == "global":
        rnnlab.set_check_finite(False)
        off = nullcontext()
    elif how == "context over global True":
        rnnlab.set_check_finite(True)
    with off, no_host_sync():
        result = call(nan_input())
    out = result if isinstance(result, torch.Tensor) else result[0]
    # the model ran on the NaN: sequence 1 is NaN from step 2 on, sequence 0 is untouched
    assert bool(torch.isnan(out[1, 2:]).all()) and bool(torch.isfinite(out[0]).all())


def test_per_module_and_per_call_settings_override_the_switch():
    x = nan_input()
    cell = ElmanCell(D, H)
    rnnlab.set_check_finite(False)
    with pytest.raises(ValueError, match="non-finite"):
        RecurrentLayer(cell, check_finite=True)(x)
    with pytest.raises(ValueError, match="non-finite"):
        run_cell(cell, x, check_finite=True)
    rnnlab.set_check_finite(True)
    with no_host_sync():
        RecurrentLayer(cell, check_finite=False)(x)
        RecurrentNetwork(cell, 2, check_finite=False)(x)
        ElmanRNN(D, H, 1, check_finite=False)(x)
        run_cell(cell, x, check_finite=False)
    # the module's setting is an attribute: it can be changed after construction
    layer = RecurrentLayer(cell, check_finite=False)
    layer.check_finite = None
    with pytest.raises(ValueError, match="non-finite"):
        layer(x)
    assert "check_finite=False" in repr(RecurrentLayer(cell, check_finite=False))


def test_the_initial_state_is_scanned_under_its_own_name():
    x = torch.randn(B, T, D)
    h0 = torch.zeros(B, H)
    h0[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^state0 contains non-finite values \(1 NaN"):
        RecurrentLayer(ElmanCell(D, H))(x, h0)
    with pytest.raises(ValueError, match=r"^h0 contains non-finite values \(1 NaN"):
        ElmanRNN(D, H, 1)(x, h0)
    with rnnlab.check_finite(False), no_host_sync():
        RecurrentLayer(ElmanCell(D, H))(x, h0)


def test_shape_dtype_and_device_checks_stay_when_the_scan_is_off():
    layer = RecurrentLayer(ElmanCell(D, H), check_finite=False)
    with pytest.raises(ValueError, match="features in its last dimension"):
        layer(torch.randn(B, T, D + 1))
    with pytest.raises(ValueError, match="must have 3 dimensions"):
        layer(torch.randn(T, D))
    with pytest.raises(TypeError, match=r"dtype torch\.float64"):
        layer(torch.randn(B, T, D, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"state0 has shape \(3, 4\)"):
        layer(torch.randn(B, T, D), torch.zeros(3, H))


# ----------------------------------------------------------------------------------------------
def test_the_switch_api():
    assert rnnlab.get_check_finite() == "auto"
    assert rnnlab.set_check_finite(False) == "auto"
    assert rnnlab.get_check_finite() is False
    with rnnlab.check_finite(True):
        assert rnnlab.get_check_finite() is True
        with rnnlab.check_finite("auto"):
            assert rnnlab.get_check_finite() == "auto"
        assert rnnlab.get_check_finite() is True
    assert rnnlab.get_check_finite() is False
    with pytest.raises(RuntimeError), rnnlab.check_finite(True):
        raise RuntimeError  # an exception restores the setting too
    assert rnnlab.get_check_finite() is False

    @rnnlab.check_finite(True)
    def inside():
        return rnnlab.get_check_finite()

    assert inside() is True and rnnlab.get_check_finite() is False
    for bad in ("yes", 1, 0, None, "AUTO"):
        with pytest.raises(ValueError, match="True, False or 'auto'"):
            rnnlab.set_check_finite(bad)
        with pytest.raises(ValueError, match="True, False or 'auto'"):
            rnnlab.check_finite(bad)
    with pytest.raises(ValueError, match="check_finite must be True, False or 'auto'"):
        RecurrentLayer(ElmanCell(D, H), check_finite="off")


def test_the_context_is_per_thread_and_the_global_switch_is_not():
    seen = {}

    def other(key):
        seen[key] = rnnlab.get_check_finite()

    with rnnlab.check_finite(False):
        worker = threading.Thread(target=other, args=("context",))
        worker.start()
        worker.join()
    rnnlab.set_check_finite(True)
    worker = threading.Thread(target=other, args=("global",))
    worker.start()
    worker.join()
    assert seen == {"context": "auto", "global": True}


@pytest.mark.parametrize(("raw", "mode"), [("", "auto"), ("auto", "auto"), ("0", False),
                                           ("off", False), ("False", False), ("1", True),
                                           (" on ", True), ("TRUE", True)])
def test_the_environment_variable(monkeypatch, raw, mode):
    monkeypatch.setenv("RNNLAB_CHECK_FINITE", raw)
    assert V._mode_from_env() is mode or V._mode_from_env() == mode


def test_a_bad_environment_variable_names_itself(monkeypatch):
    monkeypatch.setenv("RNNLAB_CHECK_FINITE", "maybe")
    with pytest.raises(ValueError, match="RNNLAB_CHECK_FINITE='maybe' is not understood"):
        V._mode_from_env()


def test_auto_skips_per_step_scans_off_the_cpu():
    # meta tensors stand for an accelerator's: they have no values, so reading one raises
    meta = torch.empty(B, D, device="meta")
    assert V.finite_scan_wanted(meta) and not V.finite_scan_wanted(meta, per_step=True)
    assert V.finite_scan_wanted(torch.zeros(1), per_step=True)  # the CPU: always
    V.check_tensor("x_t", meta, ndim=2, last_dim=D, per_step=True)  # no value read
    with pytest.raises((RuntimeError, NotImplementedError)):
        V.check_tensor("x_t", meta, ndim=2, last_dim=D)  # whole sequence: it tries to scan
    with rnnlab.check_finite(True):
        assert V.finite_scan_wanted(meta, per_step=True)
    with rnnlab.check_finite(False):
        assert not V.finite_scan_wanted(torch.zeros(1))
        assert V.finite_scan_wanted(torch.zeros(1), True)  # an explicit per-call True wins


def test_explicit_finite_false_of_check_tensor_is_kept():
    x = torch.full((2, 2), float("nan"))
    with rnnlab.check_finite(True), no_host_sync():
        V.check_tensor("x", x, ndim=2, finite=False)


# ----------------------------------------------------------------------------------------------
# Tracing, exporting and compiling see no data: is_tracing() and what it turns off
class _MarksTracing(torch.nn.Module):
    def forward(self, x):
        return x + 1.0 if V.is_tracing() else x


def test_is_tracing_is_true_exactly_inside_trace_export_and_compile():
    x = torch.zeros(2)
    assert not V.is_tracing()
    m = _MarksTracing()
    assert float(m(x).sum()) == 0.0
    assert float(torch.jit.trace(m, (x,), check_trace=False)(x).sum()) == 2.0
    assert float(torch.export.export(m, (x,)).module()(x).sum()) == 2.0
    torch._dynamo.reset()
    assert float(torch.compile(m, fullgraph=True, backend="eager")(x).sum()) == 2.0


def test_lengths_are_range_checked_eagerly_and_not_while_tracing():
    with pytest.raises(ValueError, match="between 1 and the input's 5 time steps"):
        check_lengths([2, 6], 2, 5, torch.device("cpu"))

    class Check(torch.nn.Module):
        def forward(self, lengths):
            return check_lengths(lengths, 2, 5, torch.device("cpu")) * 2

    # exported: no guard on the values (a graph cannot branch on them)
    ep = torch.export.export(Check(), (torch.tensor([2, 5]),))
    assert ep.module()(torch.tensor([3, 4])).tolist() == [6, 8]


def test_handwritten_lstm_is_not_picked_while_tracing_and_refused_when_forced():
    torch.manual_seed(0)
    x = torch.randn(B, T, D)

    class Forced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = RecurrentLayer(LSTMCell(D, H), impl="handwritten")

        def forward(self, x):
            return self.layer(x)[0]

    with pytest.raises(RuntimeError, match="impl='handwritten' of LSTMCell cannot be traced"):
        torch.export.export(Forced(), (x,))
    with pytest.raises(RuntimeError, match="use impl='auto'"):
        torch.jit.trace(Forced(), (x,), check_trace=False)


# ----------------------------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_auto_on_cuda_scans_whole_sequences_and_not_steps():
    x = torch.randn(B, T, D, device="cuda")
    layer = RecurrentLayer(ElmanCell(D, H, device="cuda"))
    with no_host_sync():
        V.check_tensor("x_t", x[:, 0], ndim=2, per_step=True)
        with pytest.raises(HostSync):
            layer(x)
    with no_host_sync(), rnnlab.check_finite(False):
        layer(x)


@needs_cuda
def test_a_cuda_graph_captures_a_layer_with_the_scan_forced_on():
    torch.manual_seed(0)
    rnnlab.set_check_finite(True)
    layer = RecurrentLayer(ElmanCell(D, H), impl="loop").cuda()
    x = torch.randn(B, T, D, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(3):  # warm-up off the capturing stream, as torch's docs ask
            layer(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        out = layer(x)[0]
    x.copy_(torch.randn_like(x))
    graph.replay()
    with torch.no_grad():
        want = layer(x)[0]
    # the replay runs the captured kernels on the new data: the same sums as the eager call, at
    # most grouped differently by another kernel choice: 2 gamma_n per step of n = D + H + 2
    # terms of size <= max(1, |x|max), over T steps (tanh is 1-Lipschitz, the gain <= 1 + sqrt(H))
    n, c = D + H + 2, max(1.0, float(x.abs().max()))
    tol = 2 * n * c * n * float(torch.finfo(torch.float32).eps) * (1 + H ** 0.5) ** T
    assert float((out - want).abs().max()) <= tol
