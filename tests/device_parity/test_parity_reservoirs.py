"""Device parity of the reservoirs: ESNs, deep ESNs, plasticity, readouts, streaming, graphs.

See ``tests/device_parity/__init__.py`` for the method and the tolerances."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from rnnlab.reservoir import (
    GRAPH_KINDS,
    DeepEchoStateNetwork,
    EchoStateNetwork,
    ESNRegressor,
    IntrinsicPlasticity,
    LMSReadout,
    RidgeClassifierReadout,
    RidgeReadout,
    RLSReadout,
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
from tests.device_parity._parity import (
    CPU,
    DEV,
    DEVICE,
    DTYPES,
    F32,
    F64,
    OUT,
    PARITY_MARKS,
    B,
    D,
    N,
    T,
    assert_tensor,
    assert_tree,
    moved,
    on_device,
    probe,
    randn,
    to_dev,
)

pytestmark = PARITY_MARKS


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
    "logistic": {"activation": "logistic", "leak": 0.6, "bias_scaling": 0.2},
}


def _esn(config: str) -> Any:
    return EchoStateNetwork(input_size=D, units=N, seed=100, dtype=F64,
                            **({"density": 0.5} | ESN_CONFIGS[config]))


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
    esn = EchoStateNetwork(input_size=D, units=N, density=0.5, leak=0.7, kernel="numba", seed=114,
                           dtype=F64)
    torch_loop = EchoStateNetwork(input_size=D, units=N, density=0.5, leak=0.7, kernel="torch",
                                  seed=114, dtype=F64)
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
    esn = EchoStateNetwork(input_size=1, units=N, spectral_radius=0.8, density=0.5, leak=0.6,
                           seed=107, dtype=F64)
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
        other.partial_fit(xs[2:], ys[2:])
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
    esn = EchoStateNetwork(input_size=D, units=N, seed=6, density=0.5, bias_scaling=0.2,
                           device=DEV, dtype=dtype)
    ref_esn = EchoStateNetwork(input_size=D, units=N, seed=6, density=0.5, bias_scaling=0.2,
                               dtype=F64)
    for (name, got), want in zip(esn.named_buffers(), ref_esn.buffers(), strict=True):
        assert_tensor(got, want, dtype, name=name)
    # and a user W already on the device is accepted as the topology
    user = EchoStateNetwork(input_size=D, units=N, topology=to_dev(ref_esn.W, dtype), seed=6,
                            dtype=F64)
    assert_tensor(user.W, ref_esn.W, dtype, device=CPU, out_dtype=F64, name="user W")
