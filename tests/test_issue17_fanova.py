"""fANOVA main effects (Hutter et al. 2014) of ``experiments._fanova`` against a brute-force
integration of the same trees over the product of all their split cells, and a forest on a
function whose variance decomposition is known in closed form."""

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.tree import DecisionTreeRegressor

from rnnlab.experiments import _fanova


def _brute_force(tree, lo, hi):
    """The tree is constant on every product cell of its split points: integrate exactly on
    that grid with ``tree.predict`` at the cell centres (no leaf boxes involved)."""
    t = tree.tree_
    dims = len(lo)
    mids, weights = [], []
    for d in range(dims):
        thr = t.threshold[(t.feature == d) & (t.children_left != -1)]
        cuts = np.unique(np.concatenate([[lo[d], hi[d]], thr[(thr > lo[d]) & (thr < hi[d])]]))
        mids.append(0.5 * (cuts[:-1] + cuts[1:]))
        weights.append(np.diff(cuts) / (hi[d] - lo[d]))
    grid = np.stack(np.meshgrid(*mids, indexing="ij"), axis=-1).reshape(-1, dims)
    values = tree.predict(grid).reshape([len(m) for m in mids])
    w = weights[0]
    for d in range(1, dims):
        w = np.multiply.outer(w, weights[d])
    f0 = (values * w).sum()
    total = ((values - f0) ** 2 * w).sum()
    out = []
    for i in range(dims):
        axes = tuple(d for d in range(dims) if d != i)
        marginal = (values * w).sum(axis=axes) / weights[i]
        out.append(((marginal - f0) ** 2 * weights[i]).sum() / total)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tree_main_effects_equal_the_brute_force_integral(seed):
    rng = np.random.default_rng(seed)
    lo, hi = np.array([-6.0, -2.0, 0.0]), np.array([-2.0, 0.0, 1.0])
    x = lo + (hi - lo) * rng.random((80, 3))
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * rng.standard_normal(80)
    tree = DecisionTreeRegressor(max_leaf_nodes=12, random_state=seed).fit(x, y)
    ours = _fanova.tree_main_effects(tree, lo, hi)
    # the same finite sums in another order: float64 rounding only
    np.testing.assert_allclose(ours, _brute_force(tree, lo, hi), rtol=1e-10, atol=1e-12)
    assert ours.sum() <= 1 + 1e-12


def test_forest_recovers_a_known_variance_decomposition():
    # y = 2 x0 + 0.5 x1 on [0, 1]^3: main-effect fractions 4/4.25, 0.25/4.25, 0, no interaction
    rng = np.random.default_rng(0)
    x = rng.random((400, 3))
    y = 2 * x[:, 0] + 0.5 * x[:, 1]
    got = _fanova.forest_main_effects(x, y, [0, 0, 0], [1, 1, 1], n_trees=20)
    # a forest of 400 points approximates the linear function by steps: a few per cent off
    assert got == pytest.approx([4 / 4.25, 0.25 / 4.25, 0.0], abs=0.04)


def test_bad_input_is_refused():
    tree = DecisionTreeRegressor().fit([[0.0], [1.0]], [0.0, 1.0])
    with pytest.raises(ValueError, match="lo < hi"):
        _fanova.tree_main_effects(tree, [1.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        _fanova.forest_main_effects(np.array([[0.0], [np.nan]]), np.zeros(2), [0], [1])
    with pytest.raises(ValueError, match=r"\(trials, dims\)"):
        _fanova.forest_main_effects(np.zeros(3), np.zeros(3), [0], [1])
