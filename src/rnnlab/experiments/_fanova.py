"""Functional ANOVA main effects of a random forest (Hutter, Hoos & Leyton-Brown 2014), the
hyperparameter-importance measure Greff et al. 2017 used.

A regression tree over the box ``X = prod_d [lo_d, hi_d]`` (with the uniform measure, i.e. the
search distribution once log-uniform hyperparameters are given as logarithms) is constant,
``c_l``, on each leaf's box ``B_l``. Its mean and variance over ``X`` are::

    f0 = sum_l c_l |B_l| / |X|,        V = sum_l (c_l - f0)^2 |B_l| / |X|

and the marginal of hyperparameter ``i`` (the average over all the others) is piecewise
constant in ``x_i``::

    f_i(x_i) = sum_{l: x_i in B_l,i} c_l prod_{d != i} |B_l,d| / |X_d|

so its variance ``V_i = mean_{x_i} (f_i(x_i) - f0)^2`` is a finite sum over the intervals
between the leaf boundaries. The importance of ``i`` is the fraction ``V_i / V`` of the tree's
variance that its main effect explains; over a forest, the mean of the per-tree fractions
(Hutter et al. 2014, section 3). Interactions (pairs and more) are not computed: the fractions
of the main effects sum to at most 1, the rest is interaction.

scikit-learn (the optional ``sklearn`` extra) grows the forest; the computation above is ours,
tested against a brute-force integration over the product of all split cells.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np


def _leaves(tree: Any, lo: np.ndarray, hi: np.ndarray) -> tuple[list, list]:
    """The leaf boxes ``(low, high)`` arrays and values of a fitted sklearn tree."""
    t = tree.tree_
    boxes, values = [], []
    stack = [(0, lo.copy(), hi.copy())]
    while stack:
        node, a, b = stack.pop()
        left, right = t.children_left[node], t.children_right[node]
        if left == -1:  # a leaf
            boxes.append((a, b))
            values.append(float(t.value[node].ravel()[0]))
            continue
        d, thr = t.feature[node], t.threshold[node]
        b_left, a_right = b.copy(), a.copy()
        b_left[d] = min(b[d], max(a[d], thr))  # sklearn sends x <= thr to the left
        a_right[d] = max(a[d], min(b[d], thr))
        stack.append((left, a, b_left))
        stack.append((right, a_right, b))
    return boxes, values


def tree_main_effects(tree: Any, lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    """``V_i / V`` for every input ``i`` of one fitted sklearn regression tree over the box
    ``[lo, hi]`` (module docstring); zeros when the tree is constant."""
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    width = hi_a - lo_a
    if np.any(width <= 0):
        raise ValueError(f"every range needs lo < hi, got lo={lo_a.tolist()}, hi={hi_a.tolist()}")
    boxes, values = _leaves(tree, lo_a, hi_a)
    c = np.asarray(values)
    frac = np.array([(b - a) / width for a, b in boxes])  # (leaves, dims) share per dimension
    vol = frac.prod(axis=1)
    f0 = float((c * vol).sum())
    total = float(((c - f0) ** 2 * vol).sum())
    out = np.zeros(len(lo_a))
    if total <= 0:
        return out
    for i in range(len(lo_a)):
        cuts = np.unique(np.concatenate([[lo_a[i], hi_a[i]],
                                         [a[i] for a, _ in boxes], [b[i] for _, b in boxes]]))
        others = np.delete(frac, i, axis=1).prod(axis=1)  # |B_l,-i| / |X_-i|
        var = 0.0
        for u, v in itertools.pairwise(cuts):
            mid = 0.5 * (u + v)
            inside = np.array([a[i] <= mid < b[i] for a, b in boxes])
            f_i = float((c[inside] * others[inside]).sum())
            var += (f_i - f0) ** 2 * (v - u) / width[i]
        out[i] = var / total
    return out


def forest_main_effects(x: np.ndarray, y: np.ndarray, lo: Sequence[float],
                        hi: Sequence[float], *, n_trees: int = 30, seed: int = 0
                        ) -> np.ndarray:
    """Fit a random forest (scikit-learn's ``RandomForestRegressor``, ``n_trees`` trees,
    ``random_state=seed``) to ``y`` over ``x`` ``(trials, dims)`` and return the mean over its
    trees of :func:`tree_main_effects` on ``[lo, hi]``."""
    from sklearn.ensemble import RandomForestRegressor

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (trials, dims) and y (trials,), got {x.shape}, {y.shape}")
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise ValueError("x and y must be finite (drop diverged trials first)")
    forest = RandomForestRegressor(n_estimators=n_trees, random_state=seed).fit(x, y)
    return np.mean([tree_main_effects(t, lo, hi) for t in forest.estimators_], axis=0)


__all__ = ["forest_main_effects", "tree_main_effects"]
