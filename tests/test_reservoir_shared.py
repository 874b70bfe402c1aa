"""The pieces the reservoir modules now share (issue 11, part 3): one validator per check, the
graph builders' one option path, the shallow and deep networks' one run interface, the online
readouts' one linear map, the delay chain of DLR/DLRB/SCR.

References are independent of the shared code: closed forms (the DLR/DLRB/SCR matrices), networkx
graphs converted by ``graph_to_reservoir``, and the per-layer shallow networks of a deep one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnlab.reservoir.deep import DeepEchoStateNetwork
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.graphs import (
    barabasi_albert_reservoir,
    graph_to_reservoir,
    spatial_growth_graph,
    spatial_growth_reservoir,
    watts_strogatz_reservoir,
    waxman_reservoir,
)
from rnnlab.reservoir.readout import LMSReadout, RLSReadout
from rnnlab.reservoir.topology import delay_line, delay_line_feedback, simple_cycle


# --- topology: the delay chain and its weight checks ---------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5])
def test_delay_chain_topologies_match_their_closed_forms(n):
    r, b = 0.7, -0.2
    dlr = np.diag(np.full(n - 1, r), -1)
    dlrb = dlr + np.diag(np.full(n - 1, b), 1)
    scr = dlr.copy()
    scr[0, n - 1] = r  # n = 1: the cycle is one self-loop of weight r
    kw = {"dtype": torch.float64}
    np.testing.assert_array_equal(delay_line(n, r, **kw).numpy(), dlr)
    np.testing.assert_array_equal(delay_line_feedback(n, r, b, **kw).numpy(), dlrb)
    np.testing.assert_array_equal(simple_cycle(n, r, **kw).numpy(), scr)


def test_topology_weights_take_numpy_scalars_and_keep_their_checks():
    # check_number accepts every numpy real; the old private check refused np.float32
    w = simple_cycle(4, np.float32(0.5), dtype=torch.float64)
    assert float(w[1, 0]) == 0.5 and float(w[0, 3]) == 0.5
    assert float(delay_line_feedback(4, 0.5, np.float64(0.0))[0, 1]) == 0.0  # b = 0 allowed
    with pytest.raises(ValueError, match="non-zero"):
        delay_line_feedback(4, 0.0, 0.1)
    with pytest.raises(ValueError, match="b must be finite"):
        delay_line_feedback(4, 0.5, float("nan"))
    with pytest.raises(TypeError, match="r must be a number"):
        simple_cycle(4, "0.5")


# --- graphs: one option path ----------------------------------------------------------------------
def test_graph_builders_equal_graph_to_reservoir_on_the_networkx_graph():
    nx = pytest.importorskip("networkx")
    for mode in ("independent", "symmetric", "random_direction"):
        w, graph = watts_strogatz_reservoir(30, 4, 0.2, mode=mode, seed=3, return_graph=True,
                                            dtype=torch.float64)
        assert nx.utils.graphs_equal(graph, nx.watts_strogatz_graph(30, 4, 0.2, seed=3))
        ref = graph_to_reservoir(graph, mode=mode, seed=3, dtype=torch.float64)
        assert torch.equal(w, ref)
    w = barabasi_albert_reservoir(30, 2, seed=5, spectral_radius=0.8, layout="csr")
    assert w.layout == torch.sparse_csr
    graph = nx.barabasi_albert_graph(30, 2, seed=5)
    assert torch.equal(w.to_dense(), graph_to_reservoir(graph, seed=5, spectral_radius=0.8))


def test_graph_builders_options_are_keywords_and_checked():
    with pytest.raises(TypeError):
        watts_strogatz_reservoir(30, 4, 0.2, "symmetric")  # options are keyword only
    with pytest.raises(TypeError, match="colour"):
        barabasi_albert_reservoir(30, 2, colour="red")
    with pytest.raises(ValueError, match="seed"):
        waxman_reservoir(30, 4.0, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        spatial_growth_graph(20, 5.0, 0.5, seed=-2)
    with pytest.raises(ValueError, match="spectral_radius"):
        watts_strogatz_reservoir(30, 4, spectral_radius=0.0)
    # numpy integer seeds, as a grid hands them over
    w1 = spatial_growth_reservoir(30, beta=0.8, seed=np.int64(4))
    w2 = spatial_growth_reservoir(30, beta=0.8, seed=4)
    assert torch.equal(w1, w2)


def test_graph_builder_generator_draws_the_networkx_seed_first():
    nx = pytest.importorskip("networkx")
    gen = torch.Generator().manual_seed(11)
    w, graph = watts_strogatz_reservoir(20, 4, 0.3, generator=gen, return_graph=True,
                                        dtype=torch.float64)
    ref_gen = torch.Generator().manual_seed(11)
    nx_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ref_gen))
    assert nx.utils.graphs_equal(graph, nx.watts_strogatz_graph(20, 4, 0.3, seed=nx_seed))
    assert torch.equal(w, graph_to_reservoir(graph, generator=ref_gen, dtype=torch.float64))


# --- networks: one run interface ------------------------------------------------------------------
def _pair() -> tuple[EchoStateNetwork, DeepEchoStateNetwork]:
    deep = DeepEchoStateNetwork(2, [12, 8], variant="deepESN", output_size=1,
                                feedback_scaling=0.3, seed=1, dtype=torch.float64)
    esn = EchoStateNetwork(units=12, input_size=2, output_size=1, feedback_scaling=0.3, seed=1,
                           dtype=torch.float64)
    return esn, deep


def test_shallow_and_deep_share_their_checks_and_messages():
    esn, deep = _pair()
    for net, width in ((esn, 12), (deep, 20)):
        assert net.initial_state(3).shape == (3, width)
        u = torch.zeros(3, 2, dtype=torch.float64)
        x = net.initial_state(3)
        with pytest.raises(ValueError, match="pass feedback="):
            net.step(u, x)
        with pytest.raises(ValueError, match="pass teacher="):
            net(torch.zeros(3, 5, 2, dtype=torch.float64))
        with pytest.raises(ValueError, match="washout"):
            net(torch.zeros(3, 5, 2, dtype=torch.float64), washout=5,
                teacher=torch.zeros(3, 5, 1, dtype=torch.float64))
        with pytest.raises(ValueError, match="state has batch size 2, the input has 3"):
            net.step(u, net.initial_state(2), torch.zeros(3, 1, dtype=torch.float64))
        with pytest.raises(TypeError, match="float32"):
            net(torch.zeros(3, 5, 2, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"\(batch, units\)"):
        esn.step(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="sum of the layers' units"):
        deep.step(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))


def test_deep_forward_and_generate_equal_its_layers_run_by_hand():
    _, deep = _pair()
    torch.manual_seed(0)
    u = torch.randn(2, 9, 2, dtype=torch.float64)
    y = torch.randn(2, 9, 1, dtype=torch.float64)
    states, last = deep(u, washout=3, teacher=y)
    # reference: layer by layer with the shallow networks' own forward (teacher forcing)
    x1, _ = deep.layers[0](u, teacher=y)
    x2, _ = deep.layers[1](x1, teacher=y)
    ref = torch.cat([x1, x2], dim=-1)
    torch.testing.assert_close(states, ref[:, 3:], rtol=0, atol=0)
    torch.testing.assert_close(last, ref[:, -1], rtol=0, atol=0)
    # generate: the shared closed loop against steps taken by hand
    w_out = torch.randn(20, 1, dtype=torch.float64) * 0.1
    u_gen = torch.randn(2, 4, 2, dtype=torch.float64)
    outputs, xs = deep.generate(4, lambda x: torch.tanh(x @ w_out), state=last,
                                last_output=y[:, -1], inputs=u_gen)
    x, out = last, y[:, -1]
    for t in range(4):
        x = deep.step(u_gen[:, t], x, out)
        out = torch.tanh(x @ w_out)
        torch.testing.assert_close(xs[:, t], x, rtol=0, atol=0)
        torch.testing.assert_close(outputs[:, t], out, rtol=0, atol=0)


# --- readouts: one linear map ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", [LMSReadout, RLSReadout])
def test_online_readouts_share_their_map_and_checks(cls):
    readout = cls(3, 2, dtype=torch.float64)
    assert readout.weight.shape == (2, 3) and readout.bias.shape == (2,)
    readout.weight.copy_(torch.arange(6.0).view(2, 3))
    readout.bias.copy_(torch.tensor([1.0, -1.0]))
    x = torch.tensor([[1.0, 0.5, -2.0]], dtype=torch.float64)
    by_hand = torch.tensor([[0.5 - 4.0 + 1.0, 3.0 + 2.0 - 10.0 - 1.0]], dtype=torch.float64)
    torch.testing.assert_close(readout(x), by_hand, rtol=0, atol=0)
    with pytest.raises(ValueError, match="n_features must be a positive integer"):
        cls(0, 2)
    with pytest.raises(TypeError, match="n_outputs must be an int"):
        cls(3, 2.0)


def test_online_readout_rates_are_checked():
    for lr in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="lr"):
            LMSReadout(3, 1, lr=lr)
    for forgetting in (0.0, 1.5):
        with pytest.raises(ValueError, match="forgetting"):
            RLSReadout(3, 1, forgetting=forgetting)
    with pytest.raises(ValueError, match="delta"):
        RLSReadout(3, 1, delta=0.0)
    assert RLSReadout(3, 1, forgetting=np.float32(1.0)).forgetting == 1.0
