"""rnnlab.init.sparse_singular_ (GroundHog's ``sample_weights``) and the deep-rnn preset's
``groundhog_init_`` against the properties the code states: k nonzeros per input unit, equal
column norms, a largest singular value equal to ``scale`` (from an SVD computed separately,
float64, so 1e-12 is far above its rounding), dense N(0, 0.1^2) input and output weights
(sample moments within five standard errors), zero hidden biases; and the preset wiring."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.experiments import deep_rnn as dr
from rnnlab.init import sparse_singular_


@pytest.mark.parametrize("shape,k", [((40, 40), 20), ((30, 88), 20), ((12, 50), 20),
                                     ((50, 8), 3)])
def test_sparse_singular_structure(shape, k):
    w = torch.empty(*shape, dtype=torch.float64)
    sparse_singular_(w, k, 1.7, generator=torch.Generator().manual_seed(0))
    rows, cols = shape
    per_column = (w != 0).sum(dim=0)
    assert torch.equal(per_column, torch.full((cols,), min(k, rows)))
    sigma = torch.linalg.svdvals(w)
    assert float(sigma[0]) == pytest.approx(1.7, rel=1e-12)
    norms = w.norm(dim=0)
    torch.testing.assert_close(norms, norms[:1].expand_as(norms), rtol=1e-12, atol=0)
    # before the final scaling the entries are uniform in (-scale, scale): a column's entries
    # have both signs, and are not all of one magnitude
    assert (w > 0).any() and (w < 0).any()
    assert float(w[w != 0].abs().std()) > 0.1 * float(w[w != 0].abs().mean())


def test_sparse_singular_seeded_and_dtype_independent():
    a = torch.empty(20, 20)
    b = torch.empty(20, 20, dtype=torch.float64)
    sparse_singular_(a, 5, generator=torch.Generator().manual_seed(3))
    sparse_singular_(b, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.double(), b, rtol=1e-6, atol=1e-7)
    c = torch.empty(20, 20, dtype=torch.float64)
    sparse_singular_(c, 5, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(b, c)


def test_sparse_singular_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        sparse_singular_(torch.empty(5))
    with pytest.raises(ValueError, match="k"):
        sparse_singular_(torch.empty(5, 5), 0)
    with pytest.raises(ValueError, match="scale"):
        sparse_singular_(torch.empty(5, 5), 2, 0.0)


@pytest.mark.parametrize("name", ["RNN", "sRNN", "DT(S)-RNN", "DOT(S)-RNN"])
def test_groundhog_init_per_matrix(name):
    width = 60
    net = dr.build_network(name, width, seed=0, dtype=torch.float64)
    readout_bias = net.readout.bias.detach().clone()
    dr.groundhog_init_(net, seed=1)
    dense = []
    for pname, p in net.named_parameters():
        if pname == "readout.bias":
            assert torch.equal(p, readout_bias)  # left to the marginal-frequency init
        elif pname.rsplit(".", 1)[-1].startswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), pname
        elif pname in ("cell.weight_ih", "cell.layers.0.weight_ih") \
                or pname.startswith(("readout.", "output_hidden.")):
            assert bool((p != 0).all()), pname
            dense.append(p.detach().flatten())
        else:
            assert p.shape == (width, width), pname
            assert torch.equal((p.detach() != 0).sum(0), torch.full((width,), 20)), pname
            sigma_max = float(torch.linalg.svdvals(p.detach())[0])
            assert sigma_max == pytest.approx(1.0, rel=1e-12), pname
    values = torch.cat(dense)
    n = values.numel()
    # N(0, 0.01): the sample std's standard error is 0.1 / sqrt(2 n), the mean's 0.1 / sqrt(n)
    assert abs(float(values.std()) - 0.1) < 5 * 0.1 / math.sqrt(2 * n)
    assert abs(float(values.mean())) < 5 * 0.1 / math.sqrt(n)
    again = dr.build_network(name, width, seed=0, dtype=torch.float64)
    dr.groundhog_init_(again, seed=1)
    for a, b in zip(net.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_groundhog_init_refuses_gated_cells(name):
    net = dr.build_network(name, 8, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="initialises tanh networks"):
        dr.groundhog_init_(net, seed=0)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])  # refused before anything changed


def test_preset_sets_init_not_noise_and_explicit_values_win():
    cfg = dr.effective_config(dr.DeepRnnConfig(preset="paper"))
    assert cfg.weight_noise is None and cfg.init == "groundhog"
    cfg = dr.effective_config(dr.DeepRnnConfig(preset="paper", weight_noise=0.075,
                                               init="default"))
    assert cfg.weight_noise == 0.075 and cfg.init == "default"
    for quoted in ("state['weight_noise_amount'] = 0.075", "state['no_noise_bias'] = True"):
        assert quoted in dr.WEIGHT_NOISE_SOURCE
    for quoted in ("state['rec_sparse'] = '20'", "state['rec_scale'] = '1.'",
                   "state['inp_scale'] = .1", "state['out_scale'] = .1"):
        assert quoted in dr.PAPER_SOURCES["init"]
    for bad in ({"weight_noise": 0.075}, {"init": "groundhog"}):
        with pytest.raises(ValueError, match="preset=paper only"):
            dr.DeepRnnConfig(**bad).validate()
