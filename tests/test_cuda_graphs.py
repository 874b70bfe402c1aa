"""The ESN time loop replayed as CUDA graphs against the eager torch loop, the CPU and a numpy
loop written out from the update equation; the recording cache; the errors of a forced
``kernel="cuda_graph"``. The CUDA tests run on a machine with a GPU (CI has none)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from rnnlab.reservoir import cuda_graphs, kernels, streaming
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.readout import RidgeReadout
from tests.reference import deep_esn_state_gaps, esn_state_gap
from tests.test_esn_kernels import numpy_states

F64, F32 = torch.float64, torch.float32
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
# whole graph blocks and a remainder that runs eagerly
STEPS = 2 * cuda_graphs.GRAPH_STEPS + 17


def _esn(n=60, dtype=F64, leak=0.3, **kw):
    return EchoStateNetwork(input_size=2, units=n, density=0.2, leak=leak, bias_scaling=0.2,
                            seed=3, dtype=dtype, **kw)


def _inputs(batch, steps, d=2, seed=0):
    return torch.randn(batch, steps, d, generator=torch.Generator().manual_seed(seed),
                       dtype=F64)


def test_recur_checks_out():
    esn = _esn(kernel="torch")
    drive = esn.input_drive(_inputs(2, 6))
    with pytest.raises(ValueError, match=r"out must be a torch\.float64 tensor of shape"):
        esn.recur(drive, esn.initial_state(2), out=torch.empty(2, 6, esn.units + 1, dtype=F64))
    with pytest.raises(ValueError, match="out must be"):
        esn.recur(drive, esn.initial_state(2), out=torch.empty(2, 6, esn.units))


def test_cuda_chunks_are_whole_graph_blocks(monkeypatch):
    esn = _esn(n=1000)
    monkeypatch.setattr(esn, "uses_cuda_graph", lambda batch=1, steps=0: True)
    for batch in (1, 3, 32, 500):
        steps = streaming._cuda_chunk(esn, batch)
        assert steps % cuda_graphs.GRAPH_STEPS == 0 and steps >= cuda_graphs.GRAPH_MIN_STEPS
        assert steps * batch * 1000 * 8 <= max(streaming.CUDA_CHUNK_BYTES,
                                                 cuda_graphs.GRAPH_MIN_STEPS * batch * 8000)
        assert (steps + cuda_graphs.GRAPH_STEPS) * batch * 8000 > streaming.CUDA_CHUNK_BYTES \
            or steps == cuda_graphs.GRAPH_MIN_STEPS
    monkeypatch.setattr(esn, "uses_cuda_graph", lambda batch=1, steps=0: False)
    assert streaming._cuda_chunk(esn, 3) == streaming.CUDA_CHUNK_BYTES // (3 * 8000)


def test_logistic_units_run_the_torch_loop():
    esn = EchoStateNetwork(input_size=1, units=500, density=0.05, activation="logistic", dtype=F64)
    assert not esn.uses_numba(1) and not esn.uses_cuda_graph(1, 10_000)


def test_graph_kernel_is_for_cuda_only():
    esn = _esn(kernel="cuda_graph")
    assert not esn.uses_cuda_graph(1, 1000) and not esn.uses_numba(1)
    with pytest.raises(ValueError, match="kernel='cuda_graph' runs on CUDA"):
        esn(_inputs(1, 5))
    assert not _esn().uses_cuda_graph(1, 1000)  # auto on the CPU: numba or the torch loop


def test_eager_dense_step_matches_the_update_equation():
    # the step the graphs record, run eagerly on the CPU (kernel="torch", dense W), with a gain
    # and shift as intrinsic plasticity leaves them, and full leak
    for leak in (0.3, 1.0):
        esn = _esn(kernel="torch", sparse=False, leak=leak)
        with torch.no_grad():
            esn.a.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(1))
            esn.b.uniform_(-0.2, 0.2, generator=torch.Generator().manual_seed(2))
        u = _inputs(2, 30)
        with torch.no_grad():
            got = esn(u)[0]
        # numpy sums in other orders: the update's round-off bound (tests.reference)
        np.testing.assert_allclose(got.numpy(), numpy_states(esn, u), rtol=0,
                                   atol=esn_state_gap(esn, 30, float(u.abs().max())))


@needs_cuda
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("leak", [0.3, 1.0])
@pytest.mark.parametrize("plain", [True, False])
def test_graph_replay_equals_eager_loop_and_numpy(batch, leak, plain):
    esn = _esn(leak=leak).cuda()
    if not plain:
        with torch.no_grad():
            esn.a.uniform_(0.5, 1.5)
            esn.b.uniform_(-0.2, 0.2)
    eager = copy.deepcopy(esn)
    eager.kernel = "torch"
    assert esn.uses_cuda_graph(batch, STEPS) and not eager.uses_cuda_graph(batch, STEPS)
    u = _inputs(batch, STEPS).cuda()
    x0 = torch.randn(batch, esn.units, dtype=F64, device="cuda") * 0.1
    with torch.no_grad():
        got, last = esn(u, x0)
        want, _ = eager(u, x0)
    assert cuda_graphs.recorded_graphs(esn) == 1 and cuda_graphs.recorded_graphs(eager) == 0
    # cuBLAS may pick other kernels inside a graph, numpy sums in its own order: the update's
    # round-off bound (tests.reference.esn_state_gap), not bit equality
    tol = esn_state_gap(esn, STEPS, float(u.abs().max()), state_max=max(1.0, float(x0.abs().max())))
    torch.testing.assert_close(got, want, rtol=0, atol=tol)
    torch.testing.assert_close(last, got[:, -1], rtol=0, atol=0)  # the same tensor's last step
    np.testing.assert_allclose(got.cpu().numpy(), numpy_states(esn.cpu(), u.cpu(), x0=x0.cpu()),
                               rtol=0, atol=tol)


@needs_cuda
def test_graph_float32_and_cache():
    esn = _esn(dtype=F32).cuda()
    ref = copy.deepcopy(esn).double()
    u = _inputs(2, STEPS)
    with torch.no_grad():
        got = esn(u.float().cuda())[0]
        first = list(cuda_graphs._LOOPS[esn].values())
        esn(u.float().cuda())
        assert list(cuda_graphs._LOOPS[esn].values()) == first  # replayed, not recorded again
        esn(u[:1].float().cuda())  # another batch size: recorded beside the first
        assert cuda_graphs.recorded_graphs(esn) == 2
        assert first[0] in cuda_graphs._LOOPS[esn].values()
        for b in range(3, 3 + cuda_graphs.LOOPS_PER_MODULE):
            esn(_inputs(b, STEPS).float().cuda())
        assert cuda_graphs.recorded_graphs(esn) == cuda_graphs.LOOPS_PER_MODULE
    assert got.dtype == F32 and got.is_cuda
    # float64 on the same (float32) weights: the float32 run's round-off bound
    torch.testing.assert_close(got.double().cpu(), ref.cpu()(u)[0], rtol=0,
                               atol=esn_state_gap(esn, STEPS, float(u.abs().max())))


@needs_cuda
def test_graph_after_inference_mode_on_two_streams_and_replaced_buffers():
    esn = _esn().cuda()
    eager = copy.deepcopy(esn)
    eager.kernel = "torch"
    u = _inputs(2, STEPS).cuda()
    # graph against eager: other kernels maybe, the update's round-off bound (both inputs)
    tol = esn_state_gap(esn, STEPS, float(torch.cat([u, _inputs(2, STEPS, seed=1).cuda()])
                                          .abs().max()))
    with torch.inference_mode():
        first = esn(u)[0]  # recorded here: its buffers must still work outside
    with torch.no_grad():
        want = eager(u)[0]
        torch.testing.assert_close(first, want, rtol=0, atol=tol)
        torch.testing.assert_close(esn(u)[0], want, rtol=0, atol=tol)
        # one module, two streams one after the other: the second waits for the first
        s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
        u2 = _inputs(2, STEPS, seed=1).cuda()
        torch.cuda.synchronize()
        with torch.cuda.stream(s1):
            a = esn(u)[0]
        with torch.cuda.stream(s2):
            b = esn(u2)[0]
        torch.cuda.synchronize()
        torch.testing.assert_close(a, want, rtol=0, atol=tol)
        torch.testing.assert_close(b, eager(u2)[0], rtol=0, atol=tol)
        # a buffer replaced by a view of another layout (same address): recorded again
        esn.W = esn.W.t().contiguous().t()
        eager.W = esn.W.clone()
        torch.testing.assert_close(esn(u)[0], eager(u)[0], rtol=0, atol=tol)
        # the float32 matmul settings pick cuBLAS's kernel: a change records again
        n = cuda_graphs.recorded_graphs(esn)
        previous = torch.backends.cuda.matmul.allow_tf32
        try:
            torch.backends.cuda.matmul.allow_tf32 = not previous
            esn(u)
            assert cuda_graphs.recorded_graphs(esn) == n + 1
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous


@needs_cuda
def test_no_graph_under_autocast():
    esn = _esn(leak=1.0).cuda()
    u = _inputs(2, STEPS).cuda()
    with torch.no_grad(), torch.autocast("cuda"):
        esn(u)
    assert cuda_graphs.recorded_graphs(esn) == 0


@needs_cuda
def test_graph_follows_weights_changed_in_place_and_moves():
    esn = _esn().cuda()
    u = _inputs(2, STEPS).cuda()
    with torch.no_grad():
        esn(u)
        esn.W.mul_(0.5)  # in place: same address, the graph must be recorded again
        esn.leak.fill_(0.7)
        got = esn(u)[0]
    eager = copy.deepcopy(esn)
    eager.kernel = "torch"
    # graph against eager, GPU against CPU: the update's round-off bound (tests.reference)
    tol = esn_state_gap(esn, STEPS, float(u.abs().max()))
    with torch.no_grad():
        torch.testing.assert_close(got, eager(u)[0], rtol=0, atol=tol)
        # a deep copy (the graphs are not module attributes) and a state_dict round trip
        twin = copy.deepcopy(esn)
        twin.load_state_dict(esn.state_dict())
        torch.testing.assert_close(twin(u)[0], got, rtol=0, atol=tol)
        cpu = esn.cpu()
        assert cpu.W.device.type == "cpu"
        torch.testing.assert_close(cpu(u.cpu())[0], got.cpu(), rtol=0, atol=tol)


@needs_cuda
def test_autograd_on_cuda_uses_the_eager_loop():
    esn = _esn().cuda()
    u = _inputs(1, STEPS).cuda().requires_grad_(True)
    xs = esn(u)[0]
    xs.square().sum().backward()
    cpu = _esn()
    uc = u.detach().cpu().requires_grad_(True)
    cpu(uc)[0].square().sum().backward()
    torch.testing.assert_close(u.grad.cpu(), uc.grad, rtol=1e-9, atol=1e-11)
    forced = _esn(kernel="cuda_graph").cuda()
    with pytest.raises(ValueError, match="records no autograd graph"):
        forced(u)
    with pytest.raises(ValueError, match="sparse=True"):
        _esn(kernel="cuda_graph", sparse=True).cuda()(u.detach())


@needs_cuda
@pytest.mark.parametrize("batch", [1, 4])
def test_fit_streaming_on_cuda_equals_cpu(batch):
    esn = _esn(n=80, output_size=1, feedback_scaling=0.3)
    u = _inputs(batch, 600)
    y = torch.tanh(u[..., :1].roll(1, dims=1))
    cpu = RidgeReadout(80, 1, 1e-6, dtype=F64)
    kernels.fit_streaming(esn, cpu, u, y, washout=50, chunk=250)
    gpu_esn = copy.deepcopy(esn).cuda()
    gpu = RidgeReadout(80, 1, 1e-6, dtype=F64, device="cuda")
    final = kernels.fit_streaming(gpu_esn, gpu, u.cuda(), y.cuda(), washout=50)
    assert final.is_cuda and cuda_graphs.recorded_graphs(gpu_esn) == 1
    # A solve with kappa(X^T X + alpha I) ~ 1.5e5 (measured on the CPU for both batches) on
    # statistics whose relative gap is ~1e-12 (the states' round-off bound, ~5e-13, and the
    # sums' 2 gamma_600): relative gaps up to kappa * 1e-12 ~ 1.5e-7 in the weights (|W| ~ 7).
    torch.testing.assert_close(gpu.weight.cpu(), cpu.weight, rtol=1e-6, atol=1e-8)
    pred, _ = kernels.predict_streaming(gpu_esn, gpu, u.cuda(), teacher=y.cuda())
    want, _ = kernels.predict_streaming(esn, cpu, u, teacher=y)
    # Fitted values X W are far better conditioned than W: the weights' gap lies along the
    # small singular directions of X, so the predictions' relative gap is ~ kappa(X) * 1e-12
    # = sqrt(1.5e5) * 1e-12 ~ 4e-10 of |y| <= 1
    torch.testing.assert_close(pred.cpu(), want, rtol=0, atol=1e-8)


@needs_cuda
def test_failed_recording_warns_and_runs_eagerly(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graphs, "_GraphLoop", broken)
    esn = _esn().cuda()
    u = _inputs(2, STEPS).cuda()
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="eager torch loop"):
        got = esn(u)[0]
    assert cuda_graphs.recorded_graphs(esn) == 0
    eager = copy.deepcopy(esn)
    eager.kernel = "torch"
    with torch.no_grad():
        # both eager, on the same device: the same calls, yet keep to the derived bound
        torch.testing.assert_close(got, eager(u)[0], rtol=0,
                                   atol=esn_state_gap(esn, STEPS, float(u.abs().max())))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second attempt, so no second warning
            esn(u)


@needs_cuda
@pytest.mark.parametrize("variant", ["deepESN", "deepESN-IA", "groupedESN"])
def test_deep_esn_layers_replay_graphs(variant):
    from tests.test_deep_esn import randomise_gains, reference_states, small

    model = small(variant)
    randomise_gains(model)
    gpu = copy.deepcopy(model).cuda()
    u = torch.randn(2, STEPS, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = gpu.layer_states(u.cuda())
    layers = [m for m in gpu.modules() if isinstance(m, EchoStateNetwork)]
    assert layers and all(cuda_graphs.recorded_graphs(m) == 1 for m in layers)
    gaps = deep_esn_state_gaps(model, STEPS, float(u.abs().max()))  # tests.reference
    for layer, (a, b) in enumerate(zip(got, reference_states(model, u), strict=True)):
        np.testing.assert_allclose(a.cpu().numpy(), b, rtol=0, atol=gaps[layer],
                                   err_msg=f"{variant} layer {layer}")
