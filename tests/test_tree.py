"""One set of state-tree helpers (rnnlab._tree, issue 11), its public spellings and the
deprecated forward-mode ``flatten_state``/``unflatten_state`` (which returned a tensor under the
name that ``rnnlab.cells.flatten_state`` uses for the list of leaves)."""

import pytest
import torch

from rnnlab import _tree, cells
from rnnlab.learning import forward_mode


def _state():
    h = torch.arange(6.0).view(2, 3)
    c = torch.arange(10.0, 14.0).view(2, 2)
    deep = torch.arange(20.0, 24.0).view(2, 2, 1)
    return (h, (c, deep))


def test_leaves_concat_split_round_trip():
    state = _state()
    leaves = _tree.tree_leaves(state)
    assert [t.shape for t in leaves] == [(2, 3), (2, 2), (2, 2, 1)]
    flat = _tree.tree_concat(state)
    # the definition: each leaf flattened after the batch axis, concatenated depth first
    want = torch.cat([state[0], state[1][0], state[1][1].reshape(2, 2)], dim=1)
    assert torch.equal(flat, want)
    back = _tree.tree_split(flat, state)
    assert _tree.tree_structure(back) == _tree.tree_structure(state) == (None, (None, None))
    for a, b in zip(_tree.tree_leaves(back), leaves, strict=True):
        assert torch.equal(a, b)
    doubled = _tree.tree_map(lambda a, b: a + b, state, state)
    assert torch.equal(_tree.tree_concat(doubled), 2 * flat)


def test_public_spellings_are_the_tree_helpers():
    assert cells.map_state is _tree.tree_map
    assert cells.flatten_state is _tree.tree_leaves
    assert isinstance(cells.flatten_state(_state()), list)
    assert torch.equal(cells.concat_state(_state()), _tree.tree_concat(_state()))
    assert cells.split_state is _tree.tree_split


def test_layout_checks_the_number_of_leaves_and_types():
    layout = _tree.TreeLayout(_state())
    assert layout.total == 7
    with pytest.raises(ValueError, match="has 1 tensors"):
        layout.concat(torch.zeros(2, 7), "model.cell's state")
    with pytest.raises(TypeError, match="tuple of tensors"):
        _tree.tree_leaves((torch.zeros(1), "h"))
    with pytest.raises(TypeError, match="tuple of tensors"):
        _tree.TreeLayout(())


def test_forward_mode_names_are_deprecated_and_say_what_to_write():
    state = _state()
    with pytest.warns(DeprecationWarning, match="rnnlab.cells.concat_state"):
        flat = forward_mode.flatten_state(state)
    assert torch.equal(flat, cells.concat_state(state))
    with pytest.warns(DeprecationWarning, match="rnnlab.cells.split_state"):
        back = forward_mode.unflatten_state(flat, state)
    assert torch.equal(back[1][1], state[1][1])
