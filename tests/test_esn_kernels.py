"""The fused numba ESN kernel against the torch loop and a numpy loop written out from the update
equation; the streamed fit against the one-shot ridge fit; the fallback without numba."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys

import numpy as np
import pytest
import torch

from rnnlab.reservoir import _numba, kernels
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.readout import RidgeReadout

F64, F32 = torch.float64, torch.float32
needs_numba = pytest.mark.skipif(not kernels.numba_available(), reason="numba not installed")


def numpy_states(esn, u, teacher=None, x0=None):
    """x(t) = (1 - a) x(t-1) + a tanh(g (W_in u(t) + bias + W x(t-1) + W_fb y(t-1)) + s), one
    sequence and one step at a time, float64 numpy (y(-1) = 0)."""
    w, w_in, bias = (t.double().numpy() for t in (esn.W, esn.W_in, esn.bias))
    leak, g, s = (t.double().numpy() for t in (esn.leak, esn.a, esn.b))
    w_fb = None if esn.W_fb is None else esn.W_fb.double().numpy()
    u = u.double().numpy()
    batch, steps, _ = u.shape
    out = np.zeros((batch, steps, w.shape[0]))
    for i in range(batch):
        x = np.zeros(w.shape[0]) if x0 is None else x0[i].double().numpy()
        y_prev = None if w_fb is None else np.zeros(w_fb.shape[1])
        for t in range(steps):
            net = w_in @ u[i, t] + bias + w @ x
            if w_fb is not None:
                net = net + w_fb @ y_prev
                y_prev = teacher[i, t].double().numpy()
            x = (1 - leak) * x + leak * np.tanh(g * net + s)
            out[i, t] = x
    return out


def _pair(units, dtype, *, gain_shift=True, **kw):
    """The same ESN twice: numba kernel and torch loop, with random gains and shifts."""
    opts = {"input_size": 2, "seed": 5, "dtype": dtype, "bias_scaling": 0.3,
            "input_scaling": 0.7} | kw
    fast = EchoStateNetwork(units=units, kernel="numba", **opts)
    slow = EchoStateNetwork(units=units, kernel="torch", **opts)
    if gain_shift:
        g = torch.Generator().manual_seed(11)
        fast.a.copy_(0.5 + torch.rand(units, generator=g, dtype=F64))
        fast.b.copy_(0.4 * torch.rand(units, generator=g, dtype=F64) - 0.2)
        slow.a.copy_(fast.a)
        slow.b.copy_(fast.b)
    return fast, slow


def _inputs(batch, steps, d=2, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, steps, d, generator=g, dtype=F64).to(dtype)


# ------------------------------------------------------------------------------------------------
@needs_numba
def test_vectorised_tanh_against_math_tanh():
    xs = np.concatenate([np.linspace(-25.0, 25.0, 200_001), np.geomspace(1e-300, 1.0, 2000),
                         -np.geomspace(1e-300, 1.0, 2000), [0.0, 0.6249999, 0.625, 19.9, 20.5]])
    got = np.array([_numba._tanh_jit(float(x)) for x in xs[::50]])
    ref = np.array([math.tanh(float(x)) for x in xs[::50]])
    assert np.abs(got - ref).max() <= 3e-16
    # relative accuracy down to tiny arguments (no cancellation near 0)
    tiny = np.geomspace(1e-300, 1.0, 300)
    ref_tiny = np.array([math.tanh(float(x)) for x in tiny])
    rel = np.abs(np.array([_numba._tanh_jit(float(x)) for x in tiny]) - ref_tiny) / ref_tiny
    assert rel.max() <= 4.5e-16  # 2 ulp
    assert _numba._tanh_jit(math.inf) == 1.0 and _numba._tanh_jit(-math.inf) == -1.0


def test_csr_arrays_match_scipy():
    sp = pytest.importorskip("scipy.sparse")
    esn = EchoStateNetwork(input_size=1, units=60, density=0.1, seed=2, dtype=F64)
    csr = kernels.csr_arrays(esn.W)
    ref = sp.csr_matrix(esn.W.numpy())
    ref.sort_indices()
    np.testing.assert_array_equal(csr.indptr, ref.indptr)
    np.testing.assert_array_equal(csr.indices, ref.indices)
    np.testing.assert_array_equal(csr.data, ref.data)
    assert csr.indptr.dtype == np.uint64 and csr.indices.dtype == np.uint32
    assert csr.nnz == ref.nnz == round(0.1 * 60 * 60)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.csr_arrays(esn.W.to(torch.bfloat16))
    with pytest.raises(ValueError, match="square"):
        kernels.csr_arrays(esn.W[:3])


# ------------------------------------------------------------------------------------------------
@needs_numba
@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (F32, 1e-5)])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("shape", ["dense", "sparse", "scr"])
def test_numba_kernel_equals_torch_loop(dtype, tol, batch, shape):
    if shape == "dense":  # every entry stored
        kw = {"density": 1.0, "spectral_radius": 0.95}
        units = 40
    elif shape == "sparse":
        kw = {"density": 0.05, "spectral_radius": 0.9}
        units = 300
    else:  # a simple cycle: one weight per row
        kw = {"topology": "scr", "r": 0.8}
        units = 50
    leak = torch.linspace(0.1, 1.0, units)  # per unit, both sides of torch.lerp's 0.5 switch
    fast, slow = _pair(units, dtype, leak=leak, **kw)
    u = _inputs(batch, 120, dtype=dtype)
    x0 = 0.3 * torch.randn(batch, units, dtype=F64).to(dtype)
    assert fast.uses_numba(batch) and not slow.uses_numba(batch)
    got, got_last = fast(u, x0)
    want, want_last = slow(u, x0)
    assert got.dtype == dtype
    torch.testing.assert_close(got, want, rtol=0, atol=tol)
    torch.testing.assert_close(got_last, want_last, rtol=0, atol=tol)
    # the torch loop through its CSR kernel as well
    slow.sparse = True
    torch.testing.assert_close(got, slow(u, x0)[0], rtol=0, atol=tol)
    # and the update equation written out
    ref = numpy_states(fast, u, x0=x0)
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=0, atol=10 * tol)


@needs_numba
@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (F32, 1e-5)])
def test_plain_units_full_leak_and_default_hooks(dtype, tol):
    """Gain 1, shift 0 and leak 1 take the kernel's short cuts; the result must not change."""
    fast, slow = _pair(200, dtype, gain_shift=False, density=0.1, leak=1.0)
    u = _inputs(2, 80, dtype=dtype, seed=3)
    torch.testing.assert_close(fast(u)[0], slow(u)[0], rtol=0, atol=tol)
    fast.leak.fill_(0.6)
    slow.leak.fill_(0.6)
    torch.testing.assert_close(fast(u)[0], slow(u)[0], rtol=0, atol=tol)


@needs_numba
@pytest.mark.parametrize("batch", [1, 2])
def test_feedback_teacher_forcing_and_generation(batch):
    fast, slow = _pair(150, F64, output_size=2, feedback_scaling=0.5, density=0.1, leak=0.4)
    u = _inputs(batch, 60, seed=4)
    y = torch.tanh(_inputs(batch, 60, seed=5))
    got = fast(u, teacher=y)[0]
    torch.testing.assert_close(got, slow(u, teacher=y)[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.numpy(), numpy_states(fast, u, teacher=y), rtol=0, atol=1e-11)
    # generation: one kernel call per step, feeding the readout's output back
    # a strongly regularised readout keeps the closed loop contractive (round-off not amplified)
    readout = RidgeReadout(150, 2, 1.0, dtype=F64).fit(got, y)
    out_f, st_f = fast.generate(25, readout, state=got[:, -1], last_output=y[:, -1],
                                inputs=u[:, :25])
    out_s, st_s = slow.generate(25, readout, state=got[:, -1], last_output=y[:, -1],
                                inputs=u[:, :25])
    torch.testing.assert_close(out_f, out_s, rtol=0, atol=1e-12)
    torch.testing.assert_close(st_f, st_s, rtol=0, atol=1e-12)


@needs_numba
def test_recur_in_place_and_non_contiguous_buffers():
    fast, slow = _pair(120, F64, density=0.1, leak=0.5)
    u = _inputs(2, 40, seed=6)
    want = slow(u)[0]
    drive = fast.input_drive(u)
    x0 = fast.initial_state(2)
    assert fast.recur(drive, x0, out=drive) is drive  # in place, as states() does
    torch.testing.assert_close(drive, want, rtol=0, atol=1e-12)
    # a time-major buffer seen batch first: non-contiguous drive and out
    drive_t = fast.input_drive(u).transpose(0, 1).contiguous().transpose(0, 1)
    out_t = torch.empty(40, 2, 120, dtype=F64).transpose(0, 1)
    assert not drive_t.is_contiguous() and not out_t.is_contiguous()
    assert fast.recur(drive_t, x0, out=out_t) is out_t
    torch.testing.assert_close(out_t, want, rtol=0, atol=1e-12)


@needs_numba
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_parallel_rows_equal_serial(batch, dtype):
    fast, slow = _pair(300, dtype, density=0.05, leak=0.3)
    drive = fast.input_drive(_inputs(batch, 50, seed=7, dtype=dtype))
    x0 = torch.randn(batch, 300, generator=torch.Generator().manual_seed(3), dtype=dtype)
    csr = fast.kernel_operator()
    serial = kernels.recur_numba(csr, drive, x0, None, fast.leak, fast.a, fast.b, parallel=False)
    # three threads on two cores as well: the spin-wait must yield, not stall
    for threads in (2, 3):
        flat = drive.clone()
        try:
            _numba._THREADS["n"] = threads  # set_kernel_threads refuses more than the cores
            par = kernels.recur_numba(csr, drive, x0, None, fast.leak, fast.a, fast.b,
                                      parallel=True)
            # in place (out is drive), as states() does
            kernels.recur_numba(csr, flat, x0, flat, fast.leak, fast.a, fast.b, parallel=True)
        finally:
            kernels.set_kernel_threads(1)
        # each row is summed by one thread in the serial order: identical results
        torch.testing.assert_close(par, serial, rtol=0, atol=0)
        torch.testing.assert_close(flat, serial, rtol=0, atol=0)
    tol = 1e-12 if dtype == F64 else 2e-5
    torch.testing.assert_close(serial, slow.recur(drive, x0), rtol=0, atol=tol)


@needs_numba
def test_parallel_rows_stop_when_a_thread_fails():
    fast, _ = _pair(100, F64, density=0.1)
    csr = fast.kernel_operator()
    drive = fast.input_drive(_inputs(1, 20, seed=1)).numpy()
    x0 = np.zeros((1, 100))
    out = np.empty_like(drive)
    ones, zeros = np.ones(100), np.zeros(100)
    calls = []
    real = _numba._run_one_part_jit

    def failing(part, *rest):
        calls.append(part)
        if part == 1:
            raise RuntimeError("thread 1 failed")
        return real(part, *rest)

    _numba._run_one_part_jit = failing
    try:
        # thread 0 would wait for thread 1 forever without the abort slot
        with pytest.raises(RuntimeError, match="thread 1 failed"):
            _numba._run_parallel(csr, drive, x0, out, ones, ones, zeros, True, True, 2)
    finally:
        _numba._run_one_part_jit = real
    assert sorted(calls) == [0, 1]


@needs_numba
def test_parallel_rows_release_started_threads_when_a_start_fails(monkeypatch):
    import threading

    fast, _ = _pair(100, F64, density=0.1)
    csr = fast.kernel_operator()
    drive = fast.input_drive(_inputs(1, 20, seed=1)).numpy()
    out = np.empty_like(drive)
    ones, zeros = np.ones(100), np.zeros(100)
    real_start = threading.Thread.start
    started = []

    def start(self):
        if started:
            raise RuntimeError("can't start new thread")
        started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        _numba._run_parallel(csr, drive, np.zeros((1, 100)), out, ones, ones, zeros, True,
                              True, 3)
    monkeypatch.undo()
    # the thread that did start saw the abort slot and returned instead of waiting for ever
    assert len(started) == 1
    started[0].join(timeout=10)
    assert not started[0].is_alive()


@needs_numba
def test_kernel_threads_bad_input():
    with pytest.raises(ValueError, match="positive"):
        kernels.set_kernel_threads(0)
    with pytest.raises(ValueError, match="cores"):
        kernels.set_kernel_threads(kernels.usable_cores() + 1)
    assert kernels.kernel_threads() == 1


def test_row_blocks_split_the_stored_weights_evenly():
    indptr = np.concatenate([[0], np.cumsum(np.arange(1, 101))]).astype(np.uint64)
    for blocks in (1, 2, 3, 7):
        b = _numba._row_blocks(indptr, blocks)
        assert b[0] == 0 and b[-1] == 100 and len(b) == blocks + 1
        assert np.all(np.diff(b) >= 0)
        per_block = np.diff(indptr.astype(np.int64)[b])
        assert per_block.sum() == int(indptr[-1])
        assert per_block.max() - per_block.min() <= 2 * 100  # within about two rows


# ------------------------------------------------------------------------------------------------
@needs_numba
def test_autograd_runs_the_torch_loop():
    fast, slow = _pair(80, F64, density=0.2, leak=0.5)
    fast.kernel = "auto"
    assert fast.uses_numba()
    u = _inputs(1, 30, seed=8).requires_grad_(True)
    states = fast(u)[0]
    assert states.requires_grad
    torch.testing.assert_close(states, slow(u)[0], rtol=0, atol=1e-12)
    states.sum().backward()
    assert u.grad is not None and bool(torch.isfinite(u.grad).all())
    # no graph needed: the kernel runs, and gives the same states
    with torch.no_grad():
        torch.testing.assert_close(fast(u)[0], states.detach(), rtol=0, atol=1e-12)


@needs_numba
def test_forced_numba_where_it_cannot_run_is_an_error():
    fast, _ = _pair(30, F64, density=0.3)
    u = _inputs(1, 5).requires_grad_(True)
    with pytest.raises(ValueError, match="autograd"):
        fast(u)
    half = EchoStateNetwork(input_size=1, units=30, kernel="numba", dtype=torch.bfloat16)
    assert not half.uses_numba()
    with pytest.raises(ValueError, match="float32/float64 tensors on the CPU"):
        half(torch.zeros(1, 3, 1, dtype=torch.bfloat16))
    auto = EchoStateNetwork(input_size=1, units=30, dtype=torch.bfloat16)
    assert not auto.uses_numba()
    with pytest.raises(ValueError, match="kernel must be one of"):
        EchoStateNetwork(input_size=1, units=30, kernel="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_runs_the_torch_loop():
    esn = EchoStateNetwork(input_size=1, units=50, dtype=F64).cuda()
    assert not esn.uses_numba()
    cpu = EchoStateNetwork(input_size=1, units=50, dtype=F64)
    u = _inputs(2, 20, d=1)
    torch.testing.assert_close(esn(u.cuda())[0].cpu(), cpu(u)[0], rtol=0, atol=1e-12)


@needs_numba
def test_auto_rule_and_weight_changes():
    sparse = EchoStateNetwork(input_size=1, units=500, density=0.1, dtype=F64)
    assert sparse.uses_numba(1) and sparse.uses_numba(32)
    assert not sparse.float().uses_numba(32)  # MKL's CSR addmm wins for float32 batches
    assert not EchoStateNetwork(input_size=1, units=500, density=0.8, dtype=F64).uses_numba()
    assert EchoStateNetwork(input_size=1, units=100, density=1.0, dtype=F64).uses_numba()
    assert not EchoStateNetwork(input_size=1, units=100, kernel="torch").uses_numba()
    # the kernel's CSR copy of W follows in-place changes and load_state_dict
    fast, slow = _pair(100, F64, density=0.1, leak=0.5)
    u = _inputs(1, 20, seed=9)
    fast(u)
    with torch.no_grad():
        fast.W.mul_(0.5)
        slow.W.mul_(0.5)
    torch.testing.assert_close(fast(u)[0], slow(u)[0], rtol=0, atol=1e-12)
    other = EchoStateNetwork(input_size=2, units=100, kernel="numba", seed=99, density=0.1,
                             dtype=F64)
    fast.load_state_dict(other.state_dict())
    slow.load_state_dict(other.state_dict())
    torch.testing.assert_close(fast(u)[0], slow(u)[0], rtol=0, atol=1e-12)


def test_fallback_without_numba(monkeypatch):
    """With numba unimportable, "auto" runs the torch loop and "numba" is a clear error."""
    try:
        monkeypatch.setitem(sys.modules, "numba", None)  # import numba -> ImportError
        importlib.reload(_numba)
        importlib.reload(kernels)
        assert not kernels.numba_available()
        esn = EchoStateNetwork(input_size=2, units=120, density=0.1, leak=0.4, bias_scaling=0.2,
                               seed=3, dtype=F64)
        assert esn.kernel == "auto" and not esn.uses_numba()
        u = _inputs(2, 30, seed=10)
        np.testing.assert_allclose(esn(u)[0].numpy(), numpy_states(esn, u), rtol=0, atol=1e-12)
        with pytest.raises(ImportError, match="numba"):
            EchoStateNetwork(input_size=1, units=20, kernel="numba")
        with pytest.raises(ImportError, match="numba"):
            kernels.recur_numba(None, esn.input_drive(u), esn.initial_state(2))
        # the streaming helpers do not need numba
        ro = RidgeReadout(120, 1, 1e-4, dtype=F64)
        kernels.fit_streaming(esn, ro, u, u[..., :1], chunk=7)
        assert ro.fitted
    finally:
        monkeypatch.undo()
        importlib.reload(_numba)
        importlib.reload(kernels)
    assert kernels.numba_available() == (importlib.util.find_spec("numba") is not None)


# ------------------------------------------------------------------------------------------------
def _task(batch, steps, seed=0, dtype=F64):
    u = _inputs(batch, steps + 1, d=1, dtype=dtype, seed=seed)
    u = torch.sin(torch.cumsum(0.3 * u, dim=1))
    return u[:, :-1], u[:, 1:]  # one step ahead


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("batch,chunk", [(1, 37), (3, 16), (2, None)])
def test_fit_streaming_equals_one_shot_fit(dtype, batch, chunk):
    esn = EchoStateNetwork(input_size=1, units=150, density=0.1, leak=0.3, bias_scaling=0.2,
                           seed=4, dtype=dtype)
    u, y = _task(batch, 300, dtype=dtype)
    washout = 50  # ends inside a chunk
    states, last = esn(u, washout=washout)
    one_shot = RidgeReadout(150, 1, 1e-3, dtype=dtype).fit(states, y[:, washout:])
    streamed = RidgeReadout(150, 1, 1e-3, dtype=dtype)
    final = kernels.fit_streaming(esn, streamed, u, y, chunk=chunk, washout=washout)
    assert streamed.fitted and final.shape == (batch, 150)
    torch.testing.assert_close(final, last, rtol=0, atol=1e-12 if dtype == F64 else 1e-6)
    for key, value in one_shot.statistics().items():
        torch.testing.assert_close(streamed.statistics()[key], value, rtol=1e-12,
                                   atol=1e-9 if dtype == F64 else 1e-3)
    if dtype == F64:
        # the same normal equations up to summation order; the solve's condition number (about
        # 2e7 here) scales that round-off
        dw = (streamed.weight - one_shot.weight).norm() / one_shot.weight.norm()
        assert float(dw) < 1e-7
        pred = streamed(states)
        torch.testing.assert_close(pred, one_shot(states), rtol=0, atol=1e-8)


def _summation_bound(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on the difference of two float64 evaluations of ``a^T b`` that add the
    same n products in different orders (other BLAS blockings, thread splits, syrk vs gemm):
    each is within gamma_n |a|^T |b| of the exact sum, gamma_n = n u / (1 - n u), u = 2^-53
    (Higham, Accuracy and Stability of Numerical Algorithms, 2002, eq. 3.5); twice that for two."""
    n, u = a.shape[0], 2.0**-53
    gamma = n * u / (1 - n * u)
    return 2 * gamma * (a.abs().t() @ b.abs())


@needs_numba
@pytest.mark.parametrize("batch", [1, 3, kernels.OVERLAP_MIN_BATCH])
@pytest.mark.parametrize("overlap", [True, False, None])
def test_fit_streaming_on_two_threads_gives_the_serial_fit(batch, overlap):
    esn = EchoStateNetwork(input_size=1, units=120, density=0.1, leak=0.3, bias_scaling=0.2,
                           seed=5, dtype=F64, kernel="numba")
    assert esn.uses_numba(batch)
    u, y = _task(batch, 260, seed=4)
    serial = RidgeReadout(120, 1, 1e-4, dtype=F64)
    last = kernels.fit_streaming(esn, serial, u, y, chunk=37, washout=20)
    parallel = RidgeReadout(120, 1, 1e-4, dtype=F64)
    try:
        _numba._THREADS["n"] = 2  # also where the machine has one core: the waits yield
        final = kernels.fit_streaming(esn, parallel, u, y, chunk=37, washout=20,
                                      overlap=overlap)
    finally:
        kernels.set_kernel_threads(1)
    assert not getattr(_numba._LOCAL, "serial", False)  # the per-thread switch is restored
    # The serial fit computes each chunk's input drive W_in u + b with the machine's BLAS
    # threads, the parallel one with one thread: a BLAS may round those products differently
    # (FMA or not) by an ulp of |drive| <= 1.2. The leaky reservoir (leak 0.3, spectral radius
    # 0.9) forgets such a perturbation geometrically: the accumulated difference stays below
    # ulp / (leak (1 - rho)) ~ 1e-14; 1e-12 leaves room for W's non-normal transients.
    state_tol = 1e-12
    torch.testing.assert_close(final, last, rtol=0, atol=state_tol)
    # The statistics: the same sums of n products added in another order (the serial fit's
    # BLAS may split them over threads; the parallel fit splits X^T X over the kernel threads),
    # plus the states' difference (|x| <= 1: at most 2 state_tol per product and row).
    states, _ = esn(u, washout=20)
    x = states.reshape(-1, 120)
    t = y[:, 20:].reshape(-1, 1)
    ones = torch.ones(x.shape[0], 1, dtype=F64)
    bounds = {"xtx": _summation_bound(x, x), "xty": _summation_bound(x, t),
              "sum_x": _summation_bound(ones, x)[0], "sum_y": _summation_bound(ones, t)[0]}
    reference = serial.statistics()
    for key, value in parallel.statistics().items():
        if key == "count":
            assert torch.equal(value, reference[key])  # an integer count
            continue
        slack = 2 * state_tol * x.shape[0] * (2 if key == "xtx" else 1)
        excess = (value - reference[key]).abs() - bounds[key] - slack
        assert float(excess.max()) <= 0, key
    # the solve's condition number (about 1e7 here) scales the round-off of the statistics
    torch.testing.assert_close(parallel.weight, serial.weight, rtol=1e-6, atol=1e-8)


def test_fit_pool_threads_run_one_thread_pools():
    # the pool's threads must not split their BLAS calls over the cores, whatever the
    # caller's settings: run a probe on a pool made while torch uses two threads
    pool = _numba.fit_pool(2)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = pool.submit(torch.get_num_threads).result()
    finally:
        pool.shutdown(wait=True)
        torch.set_num_threads(previous)
    assert seen == 1
    assert _numba.fit_pool(1) is None


def test_fit_streaming_with_feedback_and_carried_state():
    esn = EchoStateNetwork(input_size=1, units=100, output_size=1, feedback_scaling=0.3,
                           density=0.1, leak=0.5, seed=6, dtype=F64)
    u, y = _task(2, 200, seed=1)
    x0 = 0.1 * torch.ones(2, 100, dtype=F64)
    y0 = 0.2 * torch.ones(2, 1, dtype=F64)
    states, last = esn(u, x0, washout=10, teacher=y, feedback0=y0)
    one_shot = RidgeReadout(100, 1, 1e-4, dtype=F64).fit(states, y[:, 10:])
    streamed = RidgeReadout(100, 1, 1e-4, dtype=F64)
    final = kernels.fit_streaming(esn, streamed, u, y, chunk=23, washout=10, state0=x0,
                                  feedback0=y0)
    torch.testing.assert_close(final, last, rtol=0, atol=1e-12)
    torch.testing.assert_close(streamed.weight, one_shot.weight, rtol=1e-7, atol=1e-9)
    # prediction with teacher forcing, chunked, against the one-shot states
    out, fin = kernels.predict_streaming(esn, streamed, u, chunk=31, state0=x0, teacher=y,
                                         feedback0=y0)
    full, full_last = esn(u, x0, teacher=y, feedback0=y0)
    torch.testing.assert_close(out, streamed(full), rtol=0, atol=1e-12)
    torch.testing.assert_close(fin, full_last, rtol=0, atol=1e-12)


def test_predict_streaming_continues_from_a_state():
    esn = EchoStateNetwork(input_size=1, units=80, density=0.2, leak=0.6, seed=7, dtype=F64)
    u, y = _task(2, 120, seed=2)
    ro = RidgeReadout(80, 1, 1e-4, dtype=F64).fit(esn(u)[0], y)
    x0 = esn(u[:, :60])[1]
    out, last = kernels.predict_streaming(esn, ro, u[:, 60:], chunk=13, state0=x0)
    torch.testing.assert_close(out, ro(esn(u)[0])[:, 60:], rtol=0, atol=1e-12)
    torch.testing.assert_close(last, esn(u)[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_partial_fit_normal_equations_against_numpy(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 70, 40, generator=g, dtype=F64).to(dtype)
    y = torch.randn(2, 70, 3, generator=g, dtype=F64).to(dtype)
    ro = RidgeReadout(40, 3, 1e-3, dtype=F64)
    ro.partial_fit(x[:, :30], y[:, :30])
    ro.partial_fit(x[:, 30:], y[:, 30:])
    xn = x.double().reshape(-1, 40).numpy()
    yn = y.double().reshape(-1, 3).numpy()
    s = ro.statistics()
    # two chunks' sums against numpy's one: the same products added in another order
    xt, yt = torch.from_numpy(xn), torch.from_numpy(yn)
    ones = torch.ones(xt.shape[0], 1, dtype=F64)
    for key, want, bound in (("xtx", xn.T @ xn, _summation_bound(xt, xt)),
                             ("xty", xn.T @ yn, _summation_bound(xt, yt)),
                             ("sum_x", xn.sum(0), _summation_bound(ones, xt)[0]),
                             ("sum_y", yn.sum(0), _summation_bound(ones, yt)[0])):
        assert np.all(np.abs(s[key].numpy() - want) <= bound.numpy()), key
    assert float(s["count"]) == 140
    # numpy builds a.T @ a by syrk and copies one triangle to the other, and sums of such
    # matrices add (i, j) and (j, i) alike: exactly symmetric
    assert torch.equal(s["xtx"], s["xtx"].t())
    ref = RidgeReadout(40, 3, 1e-3, dtype=F64).partial_fit(x, y).solve()
    ro.solve()
    torch.testing.assert_close(ro.weight, ref.weight, rtol=1e-10, atol=1e-12)


def test_streaming_bad_input():
    esn = EchoStateNetwork(input_size=1, units=50, density=0.2, seed=1, dtype=F64)
    u, y = _task(1, 40)
    ro = RidgeReadout(50, 1, dtype=F64)
    with pytest.raises(ValueError, match="chunk"):
        kernels.fit_streaming(esn, ro, u, y, chunk=0)
    with pytest.raises(TypeError, match="chunk"):
        kernels.fit_streaming(esn, ro, u, y, chunk=2.5)
    with pytest.raises(ValueError, match="washout"):
        kernels.fit_streaming(esn, ro, u, y, washout=40)
    with pytest.raises(ValueError, match="washout"):
        kernels.fit_streaming(esn, ro, u, y, washout=-1)
    with pytest.raises(ValueError, match="batch and time"):
        kernels.fit_streaming(esn, ro, u, y[:, :30])
    with pytest.raises(ValueError, match="features"):
        kernels.fit_streaming(esn, RidgeReadout(40, 1, dtype=F64), u, y)
    with pytest.raises(TypeError, match="RidgeReadout"):
        kernels.fit_streaming(esn, object(), u, y)
    with pytest.raises(ValueError, match="non-finite"):
        kernels.fit_streaming(esn, ro, u.clone().index_fill_(1, torch.tensor([3]), math.nan), y)
    with pytest.raises(ValueError, match="non-finite"):
        kernels.fit_streaming(esn, ro, u, y.clone().index_fill_(1, torch.tensor([3]), math.inf))
    with pytest.raises(TypeError, match="dtype"):
        kernels.fit_streaming(esn, ro, u.float(), y)
    with pytest.raises(ValueError, match="no output feedback"):
        kernels.fit_streaming(esn, ro, u, y, feedback0=torch.zeros(1, 1, dtype=F64))
    with pytest.raises(ValueError, match="no output feedback"):
        kernels.predict_streaming(esn, ro, u, teacher=y)
    fb = EchoStateNetwork(input_size=1, units=50, output_size=1, feedback_scaling=0.2, seed=1,
                          dtype=F64)
    with pytest.raises(ValueError, match="teacher"):
        kernels.predict_streaming(fb, ro, u)
    with pytest.raises(ValueError, match="same leading"):
        ro.partial_fit(torch.zeros(5, 50, dtype=F64), torch.zeros(4, 1, dtype=F64))
    with pytest.raises(ValueError, match="features"):
        ro.partial_fit(torch.zeros(5, 49, dtype=F64), torch.zeros(5, 1, dtype=F64))
    # nothing was added by the failed calls
    assert float(ro.statistics()["count"]) == 0


def test_single_threaded_pools_limit_and_restore():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with _numba.single_threaded_pools(True):
            assert torch.get_num_threads() == 1
            blas = [p["num_threads"] for p in threadpoolctl.threadpool_info()
                    if p["user_api"] == "blas"]
            assert blas and all(n == 1 for n in blas)
        assert torch.get_num_threads() == 2
        with _numba.single_threaded_pools(False):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_fit_streaming_on_two_threads_with_the_torch_loop():
    # no split rows for the torch loop: the Gram matrix is overlapped, the sums are the serial ones
    esn = EchoStateNetwork(input_size=1, units=60, density=0.2, leak=0.5, seed=8, dtype=F64,
                           kernel="torch")
    u, y = _task(2, 120, seed=5)
    serial = RidgeReadout(60, 1, 1e-4, dtype=F64)
    last = kernels.fit_streaming(esn, serial, u, y, chunk=25, washout=10)
    parallel = RidgeReadout(60, 1, 1e-4, dtype=F64)
    try:
        _numba._THREADS["n"] = 2
        final = kernels.fit_streaming(esn, parallel, u, y, chunk=25, washout=10, overlap=False)
    finally:
        kernels.set_kernel_threads(1)
    # (torch's own pool is held to one thread here: equal up to its summation order)
    torch.testing.assert_close(final, last, rtol=0, atol=1e-13)
    for key, value in serial.statistics().items():
        torch.testing.assert_close(parallel.statistics()[key], value, rtol=1e-12, atol=1e-11)
