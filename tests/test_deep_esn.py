"""Deep echo state networks (Gallicchio, Micheli & Pedrelli 2017) against the equations written out
independently, a peer library (ReservoirPy) run side by side, and a readout fitted end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlab.reservoir.deep import VARIANTS, DeepEchoStateNetwork
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.plasticity import LogisticEchoStateNetwork
from rnnlab.reservoir.readout import RidgeReadout
from rnnlab.tasks.prediction import nrmse
from rnnlab.tasks.series import mackey_glass

F64 = torch.float64
SIZES = [6, 5, 4]


def small(variant: str, **kw) -> DeepEchoStateNetwork:
    opts = {"variant": variant, "leak": [0.5, 1.0, 0.3], "bias_scaling": 0.2, "density": 0.5,
            "spectral_radius": [0.5, 0.9, 1.1], "input_scaling": 0.8, "inter_scaling": 0.6,
            "dtype": F64, "seed": 3}
    opts.update(kw)
    return DeepEchoStateNetwork(2, SIZES, **opts)


def randomise_gains(model: DeepEchoStateNetwork, seed: int = 0) -> None:
    """Non-trivial IP gains and shifts, so the reference also checks where a and b enter."""
    g = torch.Generator().manual_seed(seed)
    for layer in model.layers:
        layer.a.copy_(0.5 + torch.rand(layer.units, generator=g, dtype=F64))
        layer.b.copy_(0.2 * torch.randn(layer.units, generator=g, dtype=F64))


def reference_states(model: DeepEchoStateNetwork, u: torch.Tensor, x0=None,
                     act=np.tanh) -> list[np.ndarray]:
    """The deep update of Gallicchio et al. (2017), a plain loop over steps, layers and samples:

    x_l(t) = (1 - a_l) x_l(t-1) + a_l f(g_l (Win_l v_l(t) + bias_l + W_l x_l(t-1)) + s_l),
    v_1 = u; v_l = x_{l-1}(t) (deepESN), [u; x_{l-1}(t)] (deepESN-IA), u (groupedESN).
    """
    p = [{k: getattr(layer, k).detach().numpy() for k in ("W", "W_in", "bias", "leak", "a", "b")}
         for layer in model.layers]
    un = u.detach().numpy()
    batch, steps, _ = un.shape
    out = [np.zeros((batch, steps, n)) for n in model.sizes]
    for s in range(batch):
        x = [np.zeros(n) for n in model.sizes]
        if x0 is not None:
            x = list(np.split(x0[s].numpy(), np.cumsum(model.sizes)[:-1]))
        for t in range(steps):
            for layer in range(len(model.sizes)):
                if layer == 0 or model.variant == "groupedESN":
                    v = un[s, t]
                elif model.variant == "deepESN":
                    v = x[layer - 1]
                else:
                    v = np.concatenate([un[s, t], x[layer - 1]])
                q = p[layer]
                net = q["W_in"] @ v + q["bias"] + q["W"] @ x[layer]
                y = act(q["a"] * net + q["b"])
                x[layer] = (1 - q["leak"]) * x[layer] + q["leak"] * y
                out[layer][s, t] = x[layer]
    return out


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_states_match_the_equations(variant):
    model = small(variant)
    randomise_gains(model)
    u = torch.randn(3, 25, 2, dtype=F64)
    x0 = 0.3 * torch.randn(3, sum(SIZES), dtype=F64)
    for start in (None, x0):
        ours = model.layer_states(u, start)
        ref = reference_states(model, u, start)
        for layer, (a, b) in enumerate(zip(ours, ref, strict=True)):
            np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=1e-12,
                                       err_msg=f"{variant} layer {layer}")
        np.testing.assert_allclose(model.states(u, start).numpy(), np.concatenate(ref, -1),
                                   atol=1e-12)


def test_logistic_layers_match_the_equations():
    model = small("deepESN-IA", activation="logistic")
    assert all(isinstance(layer, LogisticEchoStateNetwork) for layer in model.layers)
    randomise_gains(model, 1)
    u = torch.randn(2, 15, 2, dtype=F64)
    ref = reference_states(model, u, act=lambda z: 1.0 / (1.0 + np.exp(-z)))
    for a, b in zip(model.layer_states(u), ref, strict=True):
        np.testing.assert_allclose(a.numpy(), b, atol=1e-12)


def test_deep_esn_matches_reservoirpy_chain():
    """ReservoirPy's ``r1 >> r2 >> r3`` feeds each reservoir the current state of the one below:
    the same weights copied across must give the same top-layer states."""
    rpy = pytest.importorskip("reservoirpy.nodes")
    model = small("deepESN")
    nodes = [rpy.Reservoir(W=layer.W.numpy().copy(), Win=layer.W_in.numpy().copy(),
                           bias=layer.bias.numpy().copy(), lr=float(layer.leak[0]))
             for layer in model.layers]
    chain = nodes[0] >> nodes[1] >> nodes[2]
    u = torch.rand(1, 40, 2, dtype=F64) * 2 - 1
    theirs = chain.run(u[0].numpy())
    np.testing.assert_allclose(model.layer_states(u)[2][0].numpy(), theirs, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_and_chunks_agree_with_whole_sequence(variant):
    model = small(variant)
    u = torch.randn(2, 12, 2, dtype=F64)
    whole, final = model(u)
    x = model.initial_state(2)
    for t in range(12):
        x = model.step(u[:, t], x)
        np.testing.assert_allclose(x.numpy(), whole[:, t].numpy(), atol=1e-13)
    first, mid = model(u[:, :5])
    second, last = model(u[:, 5:], mid)
    np.testing.assert_allclose(torch.cat([first, second], 1).numpy(), whole.numpy(), atol=1e-13)
    np.testing.assert_allclose(last.numpy(), final.numpy(), atol=1e-13)
    washed, _ = model(u, washout=4)
    assert torch.equal(washed, whole[:, 4:])


# ------------------------------------------------------------------------------------------------
def test_variant_structure_and_scalings():
    d = 2
    deep, ia, grouped = (small(v, input_scaling=0.8, inter_scaling=0.3) for v in VARIANTS)
    assert [tuple(la.W_in.shape) for la in deep.layers] == [(6, d), (5, 6), (4, 5)]
    assert [tuple(la.W_in.shape) for la in ia.layers] == [(6, d), (5, d + 6), (4, d + 5)]
    assert [tuple(la.W_in.shape) for la in grouped.layers] == [(6, d), (5, d), (4, d)]
    # Every weight within its scaling; the bounds are reached closely enough to tell them apart.
    for layer in deep.layers[1:]:
        assert float(layer.W_in.abs().max()) <= 0.3
    for layer in grouped.layers:
        assert float(layer.W_in.abs().max()) <= 0.8
    for layer in ia.layers[1:]:
        u_part, x_part = layer.W_in[:, :d].abs(), layer.W_in[:, d:].abs()
        assert float(u_part.max()) <= 0.8 and float(u_part.max()) > 0.3
        assert float(x_part.max()) <= 0.3
    big = DeepEchoStateNetwork(1, 200, 2, variant="deepESN-IA", input_scaling=0.8,
                               inter_scaling=0.3, dtype=F64)
    np.testing.assert_allclose(float(big.layers[1].W_in[:, :1].abs().max()), 0.8, rtol=0.05)
    np.testing.assert_allclose(float(big.layers[1].W_in[:, 1:].abs().max()), 0.3, rtol=0.01)


def test_per_layer_spectral_radius_and_leak():
    model = small("deepESN")
    for layer, rho, leak in zip(model.layers, [0.5, 0.9, 1.1], [0.5, 1.0, 0.3], strict=True):
        assert np.abs(np.linalg.eigvals(layer.W.numpy())).max() == pytest.approx(rho, rel=1e-9)
        assert torch.all(layer.leak == leak)
    per_unit = torch.linspace(0.2, 0.9, 5, dtype=F64)
    mixed = DeepEchoStateNetwork(1, [6, 5], leak=[0.4, per_unit], density=0.5, dtype=F64)
    assert torch.equal(mixed.layers[1].leak, per_unit)
    assert mixed.total_units == 11 and mixed.num_layers == 2


def test_grouped_layers_are_independent():
    """Perturbing layer 1 (its initial state or its weights) leaves layer 2 of a groupedESN
    unchanged, but not of a deepESN or deepESN-IA."""
    u = torch.randn(2, 20, 2, dtype=F64)
    bump = torch.zeros(2, sum(SIZES), dtype=F64)
    bump[:, :SIZES[0]] = 0.5
    for variant in VARIANTS:
        model = small(variant)
        base = model.layer_states(u)
        bumped = model.layer_states(u, bump)
        assert not torch.allclose(bumped[0], base[0])
        with torch.no_grad():
            model.layers[0].W_in.mul_(-1.0)
        flipped = model.layer_states(u)
        for later in (1, 2):
            if variant == "groupedESN":
                assert torch.equal(bumped[later], base[later])
                assert torch.equal(flipped[later], base[later])
            else:
                assert (bumped[later] - base[later]).abs().max() > 1e-3
                assert (flipped[later] - base[later]).abs().max() > 1e-3
    # A groupedESN layer is exactly a shallow ESN with its weights, driven by u.
    grouped = small("groupedESN")
    shallow = EchoStateNetwork(5, 2, density=0.5, dtype=F64)
    shallow.load_state_dict(grouped.layers[1].state_dict())
    assert torch.equal(shallow.states(u), grouped.layer_states(u)[1])


# ------------------------------------------------------------------------------------------------
def test_seeds_dtypes_and_generator():
    def buffers(m):
        return [t.clone() for t in m.buffers()]

    a, b, c = small("deepESN-IA", seed=5), small("deepESN-IA", seed=5), small("deepESN-IA", seed=6)
    assert all(torch.equal(x, y) for x, y in zip(buffers(a), buffers(b), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(buffers(a), buffers(c), strict=True))
    g = torch.Generator().manual_seed(5)
    d = small("deepESN-IA", seed=None, generator=g)
    assert all(torch.equal(x, y) for x, y in zip(buffers(a), buffers(d), strict=True))
    f32 = small("deepESN-IA", seed=5, dtype=torch.float32)
    for x, y in zip(buffers(a), buffers(f32), strict=True):
        assert y.dtype == torch.float32
        np.testing.assert_allclose(y.double().numpy(), x.numpy(), rtol=1e-6, atol=1e-7)
    # Layers draw from one generator in turn: layer 2 differs from layer 1 of the same size.
    same = DeepEchoStateNetwork(1, 8, 2, variant="groupedESN", density=0.5, dtype=F64)
    assert not torch.equal(same.layers[0].W, same.layers[1].W)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_moving(dtype):
    model = small("deepESN", dtype=dtype)
    u = torch.randn(2, 10, 2, dtype=dtype)
    states, final = model(u)
    assert states.dtype == dtype and states.shape == (2, 10, sum(SIZES))
    assert final.shape == (2, sum(SIZES))
    other = torch.float64 if dtype == torch.float32 else torch.float32
    moved = model.to(other)
    assert all(t.dtype == other for t in moved.buffers())
    again, _ = moved(u.to(other))
    np.testing.assert_allclose(again.double().numpy(), states.double().numpy(), atol=1e-4)
    if torch.cuda.is_available():
        on_gpu = small("deepESN-IA", dtype=dtype).cuda()
        ref = small("deepESN-IA", dtype=dtype)(u)[0]
        np.testing.assert_allclose(on_gpu(u.cuda())[0].cpu().double().numpy(),
                                   ref.double().numpy(), atol=1e-4)


def test_state_dict_round_trip():
    model = small("deepESN-IA", seed=1)
    randomise_gains(model, 2)
    sd = model.state_dict()
    for key in ("layers.0.W", "layers.1.W_in", "layers.2.bias", "layers.2.leak", "layers.1.a",
                "layers.0.b"):
        assert key in sd
    other = small("deepESN-IA", seed=99)
    u = torch.randn(2, 15, 2, dtype=F64)
    assert not torch.allclose(other.states(u), model.states(u))
    other.load_state_dict(sd)
    assert torch.equal(other.states(u), model.states(u))
    # Through a file-like buffer, as torch.save/torch.load would.
    import io
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    third = small("deepESN-IA", seed=7)
    third.load_state_dict(torch.load(buf))
    assert torch.equal(third.states(u), model.states(u))


def test_readout_on_all_layers_mackey_glass():
    """One-step-ahead Mackey–Glass (tau = 17) with a ridge readout on the concatenated states of
    every layer: far better than persistence (predict x(t+1) = x(t), NRMSE 0.146). Measured
    here (3 x 60 units, 1200 training and 500 test steps): NRMSE 1.04e-3 (deepESN), 1.08e-3
    (deepESN-IA), 1.25e-3 (groupedESN); a shallow ESN of 180 units gives 1.00e-3."""
    s = mackey_glass(1801, seed=0, dtype=F64)
    u, y = (s[:-1] - 0.9).view(1, -1, 1), s[1:].view(1, -1, 1)
    persistence = nrmse(s[1300:-1], s[1301:])
    for variant in VARIANTS:
        model = DeepEchoStateNetwork(1, 60, 3, variant=variant, leak=0.3, inter_scaling=0.5,
                                     bias_scaling=0.2, dtype=F64)
        x = model.states(u)
        assert x.shape == (1, 1800, 180)
        readout = RidgeReadout(180, 1, alpha=1e-8, dtype=F64).fit(x[:, 100:1300], y[:, 100:1300])
        err = nrmse(readout(x[:, 1300:]), y[:, 1300:])
        assert err < 0.01 and err < 0.05 * persistence, (variant, err, persistence)


# ------------------------------------------------------------------------------------------------
def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        DeepEchoStateNetwork(1, 5, 2, variant="deep")
    with pytest.raises(ValueError, match="layers"):
        DeepEchoStateNetwork(1, 5)
    with pytest.raises(ValueError, match="layers=3"):
        DeepEchoStateNetwork(1, [5, 5], 3)
    with pytest.raises(ValueError, match="units"):
        DeepEchoStateNetwork(1, [5, 0])
    with pytest.raises(ValueError, match="at least one"):
        DeepEchoStateNetwork(1, [])
    with pytest.raises(TypeError, match="units"):
        DeepEchoStateNetwork(1, 5.0, 2)
    with pytest.raises(ValueError, match="spectral_radius must be one value or one per layer"):
        DeepEchoStateNetwork(1, 5, 3, spectral_radius=[0.9, 0.8])
    with pytest.raises(ValueError, match=r"layer 1: .*spectral_radius"):
        DeepEchoStateNetwork(1, 8, 2, spectral_radius=[0.9, 0.0], density=0.5)
    with pytest.raises(ValueError, match=r"layer 0: .*leak"):
        DeepEchoStateNetwork(1, 8, 2, leak=[1.5, 0.5], density=0.5)
    with pytest.raises(ValueError, match=r"layer 1: .*scaling"):
        DeepEchoStateNetwork(1, 8, 2, inter_scaling=[1.0, -1.0], density=0.5)
    with pytest.raises(ValueError, match="activation"):
        DeepEchoStateNetwork(1, 8, 2, activation="relu")


def test_bad_inputs():
    model = small("deepESN")
    u = torch.randn(2, 10, 2, dtype=F64)
    with pytest.raises(ValueError, match="3 dimensions"):
        model.states(u[0])
    with pytest.raises(ValueError, match="features"):
        model.states(torch.randn(2, 10, 3, dtype=F64))
    with pytest.raises(TypeError, match="dtype"):
        model.states(u.float())
    bad = u.clone()
    bad[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model.states(bad)
    with pytest.raises(ValueError, match="washout"):
        model(u, washout=10)
    with pytest.raises(ValueError, match="washout"):
        model(u, washout=-1)
    with pytest.raises(ValueError, match="state0"):
        model.states(u, torch.zeros(2, 7, dtype=F64))
    with pytest.raises(ValueError, match="batch size"):
        model.states(u, torch.zeros(3, sum(SIZES), dtype=F64))
    with pytest.raises(ValueError, match="features"):
        model.step(u[:, 0], torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match="sum N_l"):
        model.split_state(torch.zeros(2, 3, dtype=F64))
