"""The shared validators of rnnlab._validation that replaced the private copies (issue 11), and
the cell-constructor pieces of rnnlab.cells.base the torch-shaped cells now share."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from rnnlab._validation import check_bool, check_choice, check_finite_float, check_number
from rnnlab.cells import DeepTransitionCell, ElmanCell, GRUCell, LSTMCell
from rnnlab.cells.base import TorchLayoutCell
from rnnlab.learning.clipping import clip_grad_norm_
from rnnlab.optim.hessian_free import HessianFree


def test_check_choice_lists_the_options():
    assert check_choice("form", "torch", ("cho", "torch")) == "torch"
    with pytest.raises(ValueError, match=r"form must be one of \['cho', 'torch'\], got 'x'"):
        check_choice("form", "x", ("torch", "cho"))
    # options that are not all strings keep their order
    with pytest.raises(ValueError, match=r"ord must be one of \['fro', 2\], got 3"):
        check_choice("ord", 3, ("fro", 2))


def test_check_bool():
    assert check_bool("bias", True) is True
    assert check_bool("bias", np.bool_(False)) is False
    with pytest.raises(TypeError, match="bias must be a bool, got int 1"):
        check_bool("bias", 1)


def test_check_number_open_ends_and_infinity():
    assert check_number("a", 0.5, low=0.0, high=1.0, high_open=True) == 0.5
    with pytest.raises(ValueError, match=r"a must be < 1\.0, got 1\.0"):
        check_number("a", 1.0, low=0.0, high=1.0, high_open=True)
    with pytest.raises(ValueError, match="a must be finite"):
        check_number("a", math.inf)
    assert check_number("p", math.inf, low=0.0, low_open=True, allow_inf=True) == math.inf
    with pytest.raises(ValueError, match="p must be a number, got nan"):
        check_number("p", math.nan, allow_inf=True)
    with pytest.raises(ValueError, match=r"p must be > 0\.0"):
        check_number("p", -math.inf, low=0.0, low_open=True, allow_inf=True)
    assert check_finite_float("x", np.float32(0.25)) == 0.25


def test_old_import_path_of_moved_validators():
    from rnnlab.cells import base

    assert base.check_bool is check_bool
    assert base.check_finite_float is check_finite_float


def test_clipping_still_accepts_an_infinite_threshold():
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    norm = clip_grad_norm_([p], math.inf, norm_type=math.inf)
    assert float(norm) == 2.0
    assert torch.equal(p.grad, torch.full((3,), 2.0))


def test_hessian_free_hyperparameters_through_check_number():
    params = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(TypeError, match="lr must be a number"):
        HessianFree(params, lr="1")
    with pytest.raises(ValueError, match=r"damping_drop must be < 1.0"):
        HessianFree(params, damping_drop=1.0)
    # an unbounded range stays unbounded
    HessianFree(params, damping_boost=1e6, structural_damping=1e6)


@pytest.mark.parametrize("make,rows", [
    (lambda g: ElmanCell(3, 5, generator=g), 5),
    (lambda g: GRUCell(3, 5, generator=g), 15),
    (lambda g: LSTMCell(3, 5, peepholes=False, forget_bias=None, generator=g), 20),
])
def test_torch_layout_cells_draw_torch_parameters_in_torch_order(make, rows):
    """Reference: the draws written out by hand, Uniform(-1/sqrt(H), 1/sqrt(H)) for weight_ih,
    weight_hh, bias_ih, bias_hh in that order (torch.nn.RNNCellBase's order), from one seeded
    generator: the shared constructor pieces must keep every seed's weights."""
    cell = make(torch.Generator().manual_seed(7))
    assert isinstance(cell, TorchLayoutCell)
    g = torch.Generator().manual_seed(7)
    bound = 1.0 / math.sqrt(5)
    for name, shape in (("weight_ih", (rows, 3)), ("weight_hh", (rows, 5)),
                        ("bias_ih", (rows,)), ("bias_hh", (rows,))):
        expected = torch.empty(shape).uniform_(-bound, bound, generator=g)
        assert torch.equal(getattr(cell, name).detach(), expected), name


def test_cells_without_biases_register_none():
    for cell in (ElmanCell(2, 3, bias=False), GRUCell(2, 3, bias=False),
                 LSTMCell(2, 3, bias=False), DeepTransitionCell(2, 3, bias=False)):
        assert cell.bias_ih is None and cell.bias_hh is None
        assert "bias_ih" not in dict(cell.named_parameters())
    one_bias = ElmanCell(2, 3, recurrent_bias=False)
    assert one_bias.bias_ih is not None and one_bias.bias_hh is None
