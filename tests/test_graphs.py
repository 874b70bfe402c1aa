"""Graph reservoirs: structure against networkx, degree laws, seeds, spectral scaling (numpy)."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch

from rnnlab.reservoir.graphs import (
    barabasi_albert_reservoir,
    graph_reservoir,
    graph_to_reservoir,
    watts_strogatz_reservoir,
    waxman_beta,
    waxman_reservoir,
)


def _adjacency(graph: nx.Graph) -> np.ndarray:
    return nx.to_numpy_array(graph, nodelist=list(graph.nodes())) != 0


def _pattern(w: torch.Tensor) -> np.ndarray:
    return w.numpy() != 0


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build,ref", [
    (lambda s: watts_strogatz_reservoir(40, 4, 0.2, seed=s, return_graph=True,
                                        dtype=torch.float64),
     lambda s, g: nx.watts_strogatz_graph(40, 4, 0.2, seed=s)),
    (lambda s: barabasi_albert_reservoir(40, 3, seed=s, return_graph=True, dtype=torch.float64),
     lambda s, g: nx.barabasi_albert_graph(40, 3, seed=s)),
    (lambda s: waxman_reservoir(40, 6, 0.3, seed=s, return_graph=True, dtype=torch.float64),
     lambda s, g: nx.waxman_graph(40, beta=g.graph["beta"], alpha=0.3, seed=s)),
])
def test_edges_are_the_networkx_graph(build, ref):
    for seed in (0, 7):
        w, graph = build(seed)
        expected = ref(seed, graph)
        assert {frozenset(e) for e in graph.edges()} == {frozenset(e) for e in expected.edges()}
        # independent mode: both directions of every edge, nothing else
        np.testing.assert_array_equal(_pattern(w), _adjacency(expected))
        assert int((w != 0).sum()) == 2 * expected.number_of_edges()


def test_modes():
    g = nx.watts_strogatz_graph(30, 4, 0.3, seed=1)
    adj = _adjacency(g)
    ind = graph_to_reservoir(g, mode="independent", seed=2, dtype=torch.float64).numpy()
    sym = graph_to_reservoir(g, mode="symmetric", seed=2, dtype=torch.float64).numpy()
    one = graph_to_reservoir(g, mode="random_direction", seed=2, dtype=torch.float64).numpy()
    np.testing.assert_array_equal(ind != 0, adj)
    assert not np.allclose(ind, ind.T)                      # independent values
    np.testing.assert_array_equal(sym, sym.T)
    np.testing.assert_array_equal(sym != 0, adj)
    p = one != 0
    np.testing.assert_array_equal(p | p.T, adj)             # every edge, one direction only
    assert not (p & p.T).any()
    assert p.sum() == g.number_of_edges()
    # both directions appear (a fair coin, 60 edges)
    upper = np.triu(p).sum()
    assert 10 < upper < 50
    for w in (ind, sym, one):
        vals = w[w != 0]
        assert np.all(np.abs(vals) <= 1.0)


def test_directed_graph_and_self_loop():
    g = nx.DiGraph([(0, 1), (1, 2), (2, 0), (2, 2)])
    w = graph_to_reservoir(g, seed=0, dtype=torch.float64).numpy()
    expected = np.zeros((3, 3), dtype=bool)
    for u, v in g.edges():
        expected[v, u] = True                               # from u to v: W[v, u]
    np.testing.assert_array_equal(w != 0, expected)
    with pytest.raises(ValueError, match="directed"):
        graph_to_reservoir(g, mode="symmetric")
    loop = nx.Graph([(0, 1), (1, 1)])
    w = graph_to_reservoir(loop, seed=0, dtype=torch.float64).numpy()
    assert w[1, 1] != 0 and int((w != 0).sum()) == 3


def test_node_order_follows_graph_nodes():
    g = nx.Graph()
    g.add_nodes_from(["c", "a", "b"])
    g.add_edge("c", "b")
    w = graph_to_reservoir(g, mode="symmetric", seed=0, dtype=torch.float64).numpy()
    assert w[0, 2] != 0 and w[2, 0] != 0 and int((w != 0).sum()) == 2


# ------------------------------------------------------------------------------------------------
def test_small_world_ring_lattice_without_rewiring():
    n, k = 20, 4
    w = watts_strogatz_reservoir(n, k, 0.0, seed=0, dtype=torch.float64).numpy()
    for i in range(n):
        neighbours = {(i + d) % n for d in (-2, -1, 1, 2)}
        assert set(np.flatnonzero(w[i])) == neighbours
    # rewiring keeps the number of edges (n k / 2) and so the mean degree k
    w = watts_strogatz_reservoir(200, 6, 0.5, seed=3)
    assert int((w != 0).sum()) == 200 * 6


def test_scale_free_degree_law():
    """Barabasi–Albert: P(K >= k) = m (m + 1) / (k (k + 1)) for k >= m (the exact large-n
    law of the model, Bollobas et al. 2001), and exactly m (n - m) edges."""
    n, m = 3000, 3
    w = barabasi_albert_reservoir(n, m, seed=0)
    degree = (w != 0).sum(1).numpy()                        # row non-zeros = graph degree
    assert degree.sum() == 2 * m * (n - m)
    assert degree.min() >= m
    for k in (4, 6, 12, 24):
        closed = m * (m + 1) / (k * (k + 1))
        assert (degree >= k).mean() == pytest.approx(closed, abs=0.015)
    # heavy tail: hubs far above the mean, unlike the small world of the same mean degree
    ws = watts_strogatz_reservoir(n, 2 * m, 0.1, seed=0)
    assert degree.max() > 10 * degree.mean()
    assert int((ws != 0).sum(1).max()) < 3 * 2 * m


def test_waxman_beta_and_mean_degree():
    rng = np.random.default_rng(0)
    pos = rng.random((60, 2))
    d = np.array([math.dist(pos[i], pos[j]) for i in range(60) for j in range(i + 1, 60)])
    expected = 5 * 60 / (2 * np.exp(-d / (0.3 * d.max())).sum())
    assert waxman_beta(torch.from_numpy(pos), 5, 0.3) == pytest.approx(expected, rel=1e-12)
    n, degree = 150, 8
    means = [float((waxman_reservoir(n, degree, 0.2, seed=s) != 0).sum()) / n for s in range(12)]
    assert np.mean(means) == pytest.approx(degree, rel=0.05)
    # spatial: edges are shorter than random pairs (mean distance in the unit square 0.5214)
    _, g = waxman_reservoir(300, 8, 0.1, seed=0, return_graph=True)
    pos = nx.get_node_attributes(g, "pos")
    lengths = [math.dist(pos[u], pos[v]) for u, v in g.edges()]
    assert np.mean(lengths) < 0.6 * 0.5214


@pytest.mark.parametrize("kind", ["small_world", "scale_free", "spatial"])
@pytest.mark.parametrize("mode", ["independent", "symmetric"])
def test_scaled_spectral_radius_against_numpy(kind, mode):
    w = graph_reservoir(kind, 80, 8, mode=mode, spectral_radius=0.9, seed=4,
                        dtype=torch.float64).numpy()
    assert np.abs(np.linalg.eigvals(w)).max() == pytest.approx(0.9, rel=1e-10)
    if mode == "symmetric":
        np.testing.assert_allclose(np.linalg.eigvals(w).imag, 0.0, atol=1e-12)


def test_mean_degree_matches_random_reservoir_density():
    n, degree = 100, 10
    assert int((graph_reservoir("small_world", n, degree) != 0).sum()) == n * degree
    m = degree // 2
    assert int((graph_reservoir("scale_free", n, degree) != 0).sum()) == 2 * m * (n - m)


def test_seeded_and_dtype():
    a = watts_strogatz_reservoir(50, 4, 0.3, seed=5, dtype=torch.float64)
    b = watts_strogatz_reservoir(50, 4, 0.3, seed=5, dtype=torch.float64)
    c = watts_strogatz_reservoir(50, 4, 0.3, seed=6, dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    f32 = watts_strogatz_reservoir(50, 4, 0.3, seed=5, dtype=torch.float32)
    torch.testing.assert_close(f32, a.float(), rtol=0, atol=0)
    g1 = barabasi_albert_reservoir(50, 2, generator=torch.Generator().manual_seed(3))
    g2 = barabasi_albert_reservoir(50, 2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    csr = waxman_reservoir(50, 4, 0.3, seed=1, layout="csr", dtype=torch.float64)
    assert csr.layout == torch.sparse_csr
    torch.testing.assert_close(csr.to_dense(), waxman_reservoir(50, 4, 0.3, seed=1,
                                                                dtype=torch.float64))


def test_bad_input():
    with pytest.raises(ValueError, match="k must be even"):
        watts_strogatz_reservoir(20, 3)
    with pytest.raises(ValueError, match="k must be even"):
        watts_strogatz_reservoir(4, 4)
    with pytest.raises(ValueError, match="rewiring"):
        watts_strogatz_reservoir(20, 4, 1.5)
    with pytest.raises(ValueError, match="m must be smaller"):
        barabasi_albert_reservoir(5, 5)
    with pytest.raises(ValueError, match="increase alpha"):
        waxman_reservoir(50, 10, 0.05)
    with pytest.raises(ValueError, match="mean_degree"):
        waxman_beta(torch.rand(10, 2), 20, 0.3)
    with pytest.raises(TypeError, match="networkx"):
        graph_to_reservoir(np.eye(3))
    with pytest.raises(ValueError, match="multigraph"):
        graph_to_reservoir(nx.MultiGraph([(0, 1), (0, 1)]))
    with pytest.raises(ValueError, match="mode"):
        graph_to_reservoir(nx.path_graph(4), mode="both")
    with pytest.raises(ValueError, match="distribution"):
        graph_to_reservoir(nx.path_graph(4), distribution="cauchy")
    with pytest.raises(ValueError, match="seed"):
        watts_strogatz_reservoir(20, 4, seed=-1)
    with pytest.raises(ValueError, match="even mean_degree"):
        graph_reservoir("scale_free", 50, 5)
    with pytest.raises(ValueError, match="kind"):
        graph_reservoir("hyperbolic", 50, 4)
    # a tree with one direction per edge is acyclic: nilpotent, no spectral radius to scale
    with pytest.raises(ValueError, match="all eigenvalues are zero"):
        graph_to_reservoir(nx.path_graph(6), mode="random_direction", spectral_radius=0.9)
    with pytest.raises(ValueError, match="spectral_radius"):
        graph_to_reservoir(nx.path_graph(6), spectral_radius=0.0)
