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
    spatial_growth_beta,
    spatial_growth_graph,
    spatial_growth_reservoir,
    watts_strogatz_reservoir,
    waxman_beta,
    waxman_reservoir,
)
from rnnlab.reservoir.spatial_growth import _grow, _pair_index, _splitmix_uniform


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


@pytest.mark.parametrize("kind", ["small_world", "scale_free", "spatial", "spatial_growth"])
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
    # beta bisected on the realised degree of this seed: exactly n degree / 2 edges
    assert int((graph_reservoir("spatial_growth", n, degree) != 0).sum()) == n * degree


def test_seeded_and_dtype():
    a = watts_strogatz_reservoir(50, 4, 0.3, seed=5, dtype=torch.float64)
    b = watts_strogatz_reservoir(50, 4, 0.3, seed=5, dtype=torch.float64)
    c = watts_strogatz_reservoir(50, 4, 0.3, seed=6, dtype=torch.float64)
    # Bit equality is right here: the same seed on the same path; and every dtype is the
    # float64 matrix cast at the end (module doc), the same numbers.
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


# --- spatial growth (Kaiser & Hilgetag 2004) -----------------------------------------------------
MEAN_PAIR_DISTANCE = (2 + math.sqrt(2) + 5 * math.log(1 + math.sqrt(2))) / 15   # 0.5214
MEAN_DISTANCE_TO_CENTRE = (math.sqrt(2) + math.log(1 + math.sqrt(2))) / 6       # 0.3826


def _positions(graph: nx.Graph) -> np.ndarray:
    return np.array([graph.nodes[i]["pos"] for i in range(graph.number_of_nodes())])


def test_spatial_growth_seeded():
    a = spatial_growth_graph(60, 4.0, 0.5, seed=3)
    b = spatial_growth_graph(60, 4.0, 0.5, seed=3)
    c = spatial_growth_graph(60, 4.0, 0.5, seed=4)
    assert list(a.edges()) == list(b.edges()) and dict(a.nodes(data=True)) == dict(
        b.nodes(data=True))
    assert set(a.edges()) != set(c.edges())
    w1 = spatial_growth_reservoir(60, 6, 4.0, seed=3, dtype=torch.float64)
    w2 = spatial_growth_reservoir(60, 6, 4.0, seed=3, dtype=torch.float64)
    torch.testing.assert_close(w1, w2, rtol=0, atol=0)  # same seed, same path; float32: a cast
    f32 = spatial_growth_reservoir(60, 6, 4.0, seed=3, dtype=torch.float32)
    torch.testing.assert_close(f32, w1.float(), rtol=0, atol=0)
    g1 = spatial_growth_reservoir(60, 6, 4.0, generator=torch.Generator().manual_seed(9))
    g2 = spatial_growth_reservoir(60, 6, 4.0, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    csr = spatial_growth_reservoir(60, 6, 4.0, seed=3, layout="csr", dtype=torch.float64)
    torch.testing.assert_close(csr.to_dense(), w1)


def test_spatial_growth_every_node_joins_an_earlier_one():
    g = spatial_growth_graph(150, 8.0, 0.7, seed=1)
    attempts = [g.nodes[k]["attempt"] for k in range(150)]
    assert attempts[0] == 0 and all(np.diff(attempts) > 0)
    assert g.graph["attempts"] == attempts[-1] + 1
    assert g.graph["attempts"] > 150                      # some candidates were discarded
    for k in range(1, 150):
        assert min(g.neighbors(k)) < k, f"node {k} has no link to an earlier node"
    assert nx.is_connected(g)
    pos = _positions(g)
    assert pos.min() >= 0 and pos.max() <= 1
    assert g.graph["mean_degree"] == 2 * g.number_of_edges() / 150


def test_link_uniforms_are_splitmix64():
    """The link uniforms: SplitMix64 outputs (the published sequence for seed 1234567 starts
    6457827717110365317, 3203168211198807973, 9817491932198370423), top 53 bits; uniform by a
    Kolmogorov-Smirnov test; one counter per pair of attempts s < t."""
    from scipy import stats

    u = _splitmix_uniform(np.uint64(1234567), np.arange(3))
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423]
    assert [int(v * 2**53) for v in u] == [e >> 11 for e in expected]
    many = _splitmix_uniform(np.uint64(2024), np.arange(200_000))
    assert stats.kstest(many, "uniform").pvalue > 1e-3
    t, s = np.triu_indices(300, 1)[::-1]                   # all s < t < 300
    idx = _pair_index(t, s)
    assert len(np.unique(idx)) == len(idx) and int(idx.max()) == 300 * 299 // 2 - 1


def test_spatial_growth_acceptance_probability_closed_form():
    """The growth loop with fixed existing nodes and every candidate at one point x: each
    candidate is kept with p = 1 - prod_i (1 - beta exp(-alpha d_i)) and, if kept, linked to node
    i with probability beta exp(-alpha d_i) / p. Monte Carlo over 3000 independent keys (one
    growth step each), 4.5 standard errors."""
    existing = np.array([[0.2, 0.3], [0.5, 0.5], [0.8, 0.1], [0.45, 0.9], [0.3, 0.55]])
    x = np.array([0.4, 0.6])
    alpha, beta = 3.0, 0.3
    p_i = beta * np.exp(-alpha * np.linalg.norm(existing - x, axis=1))
    p = 1 - np.prod(1 - p_i)                               # about 0.45
    keys = np.random.default_rng(0).integers(0, 2**64, size=3000, dtype=np.uint64)
    tried, linked = 0, np.zeros(5)
    for key in keys:
        g = _grow(6, alpha, beta, key, lambda t0, b: np.tile(x, (b, 1)), existing, 10**6)
        tried += g.tried - 5                               # candidates, the kept one included
        linked[g.links[5]] += 1
    kept = len(keys)
    p_hat = kept / tried
    se = math.sqrt(p * p * (1 - p) / kept)                 # geometric number of candidates
    assert abs(p_hat - p) < 4.5 * se
    q = p_i / p
    np.testing.assert_array_less(np.abs(linked / kept - q), 4.5 * np.sqrt(q * (1 - q) / kept))


def test_spatial_growth_second_node_against_quadrature():
    """n = 2 from the centre: each candidate (uniform in the square) is kept with probability
    q = integral over [0, 1]^2 of beta exp(-alpha |x - c|) (midpoint rule, 1000^2 cells); the
    candidates drawn for node 1 are geometric with mean 1 / q."""
    alpha, beta = 4.0, 0.8
    h = (np.arange(1000) + 0.5) / 1000
    gx, gy = np.meshgrid(h, h)
    q = float(np.mean(beta * np.exp(-alpha * np.hypot(gx - 0.5, gy - 0.5))))     # about 0.24
    draws = [spatial_growth_graph(2, alpha, beta, seed=s, first_position=(0.5, 0.5))
             .nodes[1]["attempt"] for s in range(2000)]
    q_hat = len(draws) / sum(draws)
    assert abs(q_hat - q) < 4.5 * math.sqrt(q * q * (1 - q) / len(draws))


def test_spatial_growth_is_local_and_spreads_from_the_first_node():
    _, g = spatial_growth_reservoir(300, 8, 6.0, seed=0, return_graph=True)
    pos = _positions(g)
    lengths = [np.linalg.norm(pos[u] - pos[v]) for u, v in g.edges()]
    assert np.mean(lengths) < 0.6 * MEAN_PAIR_DISTANCE
    # growth from the centre with short links: the first nodes stay near it, later ones fill
    # the square (uniform points: mean distance 0.3826 to the centre)
    early, late = [], []
    for s in range(5):
        d = np.linalg.norm(_positions(spatial_growth_graph(200, 20.0, 1.0, seed=s,
                                                           first_position=(0.5, 0.5))) - 0.5,
                           axis=1)
        early.append(d[1:21].mean())
        late.append(d[-20:].mean())
    assert np.mean(early) < 0.6 * MEAN_DISTANCE_TO_CENTRE
    assert np.mean(early) < 0.7 * np.mean(late)


def test_spatial_growth_reservoir_pattern_and_beta():
    w, g = spatial_growth_reservoir(100, 10, 5.0, seed=2, return_graph=True,
                                    dtype=torch.float64)
    np.testing.assert_array_equal(_pattern(w), _adjacency(g))
    assert int((w != 0).sum()) == 2 * g.number_of_edges() == 1000
    # the reported beta regrows the same graph
    again = spatial_growth_graph(100, 5.0, g.graph["beta"], seed=2)
    assert set(again.edges()) == set(g.edges())
    assert spatial_growth_beta(100, 10, 5.0, seed=2) == g.graph["beta"]
    w2 = spatial_growth_reservoir(100, beta=g.graph["beta"], alpha=5.0, seed=2,
                                  dtype=torch.float64)
    torch.testing.assert_close(w2, w, rtol=0, atol=0)  # the same graph through the same path
    for seed in range(4):                               # the bisection hits the degree exactly
        _, h = spatial_growth_reservoir(100, 10, 5.0, seed=seed, return_graph=True)
        assert h.graph["mean_degree"] == 10.0 and 0 < h.graph["beta"] < 1


def test_spatial_growth_common_random_numbers_are_monotone_in_beta():
    """For one seed a larger beta keeps every candidate a smaller beta kept (up to where the
    smaller-beta growth stopped), which is what makes the bisection on beta meaningful."""
    for seed in range(3):
        small = spatial_growth_graph(80, 6.0, 0.3, seed=seed)
        large = spatial_growth_graph(80, 6.0, 0.6, seed=seed)
        kept_small = {small.nodes[k]["attempt"] for k in small}
        kept_large = {large.nodes[k]["attempt"] for k in large}
        horizon = min(max(kept_small), max(kept_large))
        assert {a for a in kept_small if a <= horizon} <= kept_large
        assert large.number_of_edges() > small.number_of_edges()
        assert large.graph["attempts"] < small.graph["attempts"]


def test_spatial_growth_bad_input():
    with pytest.raises(ValueError, match="n >= 2"):
        spatial_growth_graph(1, 5.0, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        spatial_growth_graph(10, 0.0, 0.5)
    with pytest.raises(ValueError, match="beta"):
        spatial_growth_graph(10, 5.0, 0.0)
    with pytest.raises(ValueError, match="beta"):
        spatial_growth_graph(10, 5.0, 1.5)
    with pytest.raises(TypeError, match="beta"):
        spatial_growth_graph(10, 5.0, "0.5")
    with pytest.raises(ValueError, match="seed"):
        spatial_growth_graph(10, 5.0, 0.5, seed=-1)
    with pytest.raises(ValueError, match="first_position"):
        spatial_growth_graph(10, 5.0, 0.5, first_position=(1.5, 0.5))
    with pytest.raises(ValueError, match="max_attempts"):
        spatial_growth_graph(50, 60.0, 0.01, max_attempts=2000)
    with pytest.raises(ValueError, match="connected"):
        spatial_growth_reservoir(50, 1.5, 5.0)
    with pytest.raises(ValueError, match="lower alpha"):
        spatial_growth_reservoir(50, 10, 20.0)
    with pytest.raises(ValueError, match="exactly one"):
        spatial_growth_reservoir(50, 6, 5.0, beta=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        spatial_growth_reservoir(50)
    with pytest.raises(ValueError, match="alpha"):
        graph_reservoir("spatial_growth", 50, 6, growth_alpha=-1.0)


def test_spatial_growth_takes_numpy_scalars():
    import numpy as np

    from rnnlab.reservoir.graphs import spatial_growth_graph

    a = spatial_growth_graph(30, np.float64(3.0), np.float32(0.75), seed=2)
    b = spatial_growth_graph(30, 3.0, float(np.float32(0.75)), seed=2)
    assert sorted(a.edges()) == sorted(b.edges())
