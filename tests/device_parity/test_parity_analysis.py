"""Device parity of the analysis functions (spectra, Jacobians, memory, entropy, ESP, cost).

See ``tests/device_parity/__init__.py`` for the method and the tolerances."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

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
from rnnlab.learning import (
    squared_error,
)
from rnnlab.models import ElmanRNN, RecurrentNetwork
from rnnlab.reservoir import (
    EchoStateNetwork,
    delay_line,
    delay_line_feedback,
    simple_cycle,
)
from tests.device_parity._parity import (
    CELLS,
    CPU,
    DEV,
    DTYPES,
    F32,
    F64,
    ONLINE_MODELS,
    OUT,
    PARITY_MARKS,
    B,
    D,
    H,
    T,
    _sequence_data,
    assert_tensor,
    assert_tree,
    gen,
    moved,
    randn,
    to_dev,
)

pytestmark = PARITY_MARKS


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
    return EchoStateNetwork(input_size=1, units=6, **opts)


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
