"""Reservoir matrices from complex-network models, built with networkx.

The course's claim (Lukosevicius & Jaeger 2009, "Reservoir computing approaches to recurrent
neural network training", Computer Science Review 3(3), sec. 5.1, after Liebald 2004 and others)
is that small-world, scale-free and spatially organised reservoirs bring no significant
improvement over plain sparse random ones. The builders here make such reservoirs so that the
claim can be tested (experiment ``reservoir-topologies``):

* :func:`watts_strogatz_reservoir`: small world (Watts & Strogatz 1998, Nature 393): a ring
  lattice where every node is joined to its ``k`` nearest neighbours, each edge rewired to a
  uniformly chosen node with probability ``p`` (``networkx.watts_strogatz_graph``). Exactly
  ``n k / 2`` undirected edges (``k`` even), mean degree ``k``.
* :func:`barabasi_albert_reservoir`: scale free (Barabasi & Albert 1999, Science 286):
  preferential attachment, every new node joins ``m`` existing nodes with probability
  proportional to their degree (``networkx.barabasi_albert_graph``): ``m (n - m)`` edges, mean
  degree ``2 m (n - m) / n``, degree distribution ``P(k) ~ k^-3``.
* :func:`waxman_reservoir`: spatial (Waxman 1988, IEEE J. Sel. Areas Commun. 6(9)): nodes at
  uniform random positions in the unit square, each pair joined with probability
  ``beta exp(-d / (alpha L))`` (``d`` their distance, ``L`` the largest distance between two
  nodes; ``networkx.waxman_graph``). This is the distance-dependent connection rule of
  spatially grown networks (Kaiser & Hilgetag 2004, Phys. Rev. E 69): short connections are
  likely, long ones rare. ``beta`` is set from the requested mean degree by
  :func:`waxman_beta`. (networkx's Waxman-2 model, chosen by passing ``L``, draws the distances
  at random instead of from the positions and is not spatial; it is not used.) The Waxman graph
  is static: all nodes are placed at once, so isolated nodes can occur.
* :func:`spatial_growth_reservoir`: spatially grown (Kaiser & Hilgetag 2004, Phys. Rev. E 69,
  036103), built here (:func:`spatial_growth_graph`): nodes are added one at a time at uniform
  random positions in the unit square, each joins every existing node with probability
  ``beta exp(-alpha d)`` and is discarded if it joins none, so the network spreads outward from
  its first node and is connected. ``beta`` is bisected for the requested mean degree
  (:func:`spatial_growth_beta`).

Conversion (:func:`graph_to_reservoir`): node ``graph.nodes()[i]`` is unit ``i``; an edge from
node u to node v is the weight ``W[v, u]`` (so that the update reads ``W x``). Undirected graphs
become recurrent matrices by one of three ``mode`` s:

* ``"independent"`` (default): both directions, with independent weights (``W[u, v]`` and
  ``W[v, u]`` drawn separately): the pattern of W is symmetric, its values are not, as for a
  random ESN reservoir; ``nnz(W) = 2 |E|``, so the mean number of non-zeros per row is the
  graph's mean degree;
* ``"symmetric"``: ``W[u, v] = W[v, u]`` (one draw per edge): a symmetric W with real spectrum;
* ``"random_direction"``: each edge kept in one direction chosen by a fair coin (``|E|``
  non-zeros).

A directed graph's edges are taken as they are (``mode`` must be ``None`` or ``"directed"``). A
self-loop gives one diagonal weight. Weights are uniform on ``[-1, 1]`` (symmetric around zero,
as in Jaeger 2001) or standard normal; ``spectral_radius`` scales the result with
:func:`rnnlab.analysis.spectral.scale_to_spectral_radius`.

Builder options: the builders take, as keywords (``**options``), ``mode``, ``distribution``,
``spectral_radius``, ``layout``, ``dtype``, ``device`` (as for :func:`graph_to_reservoir`;
``mode`` defaults to ``"independent"``), ``seed`` (default 0) and ``generator`` (below), and
``return_graph`` (``True``: return ``(W, graph)`` instead of W).

Seeds: the graph is drawn by networkx with ``seed=seed`` (so
``networkx.watts_strogatz_graph(n, k, p, seed=seed)`` is the same graph; the spatially grown
graph from ``numpy.random.default_rng(seed)``, see :func:`spatial_growth_graph`), the weights from a
``torch.Generator`` seeded with ``seed``; with ``generator=`` given, networkx's seed is an integer
drawn from it first. Weights are drawn in float64 on the CPU, then cast, so one seed gives the
same matrix in every dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_int, check_number, check_positive_int
from rnnlab.reservoir.spatial_growth import (
    check_alpha_beta,
    spatial_growth_beta,
    spatial_growth_graph,
)
from rnnlab.reservoir.topology import DISTRIBUTIONS, _draw_nonzero, _finish

__all__ = [
    "GRAPH_KINDS",
    "GRAPH_MODES",
    "barabasi_albert_reservoir",
    "graph_reservoir",
    "graph_to_reservoir",
    "spatial_growth_beta",  # from rnnlab.reservoir.spatial_growth
    "spatial_growth_graph",  # from rnnlab.reservoir.spatial_growth
    "spatial_growth_reservoir",
    "watts_strogatz_reservoir",
    "waxman_beta",
    "waxman_reservoir",
]

GRAPH_MODES = ("independent", "symmetric", "random_direction")
GRAPH_KINDS = ("small_world", "scale_free", "spatial", "spatial_growth")


def _nx():
    import networkx

    return networkx


def _seeds(seed: int, generator: torch.Generator | None) -> tuple[int, torch.Generator]:
    """(networkx seed, torch generator of the weights)."""
    if generator is not None:
        gen = make_generator(None, generator)
        return int(torch.randint(0, 2**31 - 1, (1,), generator=gen)), gen
    seed = check_int("seed", seed, low=0)  # >= 0: networkx seeds Python's random with it
    return seed, torch.Generator().manual_seed(seed)


def graph_to_reservoir(
    graph: Any,
    *,
    mode: str | None = None,
    distribution: str = "uniform",
    spectral_radius: float | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    layout: str = "dense",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Weighted recurrent matrix (N x N) on the edges of a networkx graph (module docstring).

    Args:
        graph: a ``networkx.Graph`` or ``networkx.DiGraph`` (not a multigraph), N >= 1 nodes.
        mode: for an undirected graph ``"independent"`` (default), ``"symmetric"`` or
            ``"random_direction"``; for a directed one ``None``/``"directed"``.
        distribution: ``"uniform"`` (on [-1, 1]) or ``"normal"`` edge weights.
        spectral_radius: scale W to this spectral radius (``None``: no scaling).
        seed, generator: the weights (and the edge directions of ``"random_direction"``),
            drawn in the order of ``graph.edges()``.
        layout: ``"dense"`` or ``"csr"``.
    """
    nx = _nx()
    if not isinstance(graph, nx.Graph):
        raise TypeError(f"graph must be a networkx Graph or DiGraph, got {type(graph).__name__}")
    if graph.is_multigraph():
        raise ValueError("graph must not be a multigraph (parallel edges would share one weight)")
    n = graph.number_of_nodes()
    if n == 0:
        raise ValueError("graph has no nodes")
    directed = graph.is_directed()
    if directed:
        if mode not in (None, "directed"):
            raise ValueError(f"a directed graph's edges are used as they are: mode must be None "
                             f"or 'directed', got {mode!r}")
    else:
        mode = "independent" if mode is None else mode
        if mode not in GRAPH_MODES:
            raise ValueError(f"mode must be one of {GRAPH_MODES} for an undirected graph, "
                             f"got {mode!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if spectral_radius is not None:
        spectral_radius = check_number("spectral_radius", spectral_radius, low=0.0,
                                        low_open=True)
    gen = make_generator(check_int("seed", seed, low=0) if generator is None else None,
                         generator)

    index = {node: i for i, node in enumerate(graph.nodes())}
    edges = [(index[u], index[v]) for u, v in graph.edges()]
    src = torch.tensor([e[0] for e in edges], dtype=torch.int64)
    dst = torch.tensor([e[1] for e in edges], dtype=torch.int64)
    loop = src == dst
    w = torch.zeros(n, n, dtype=torch.float64)
    if directed:
        w[dst, src] = _draw_nonzero(len(edges), distribution, gen)
    elif mode == "independent":
        vals = _draw_nonzero(2 * len(edges), distribution, gen).view(-1, 2)
        w[dst, src] = vals[:, 0]
        w[src[~loop], dst[~loop]] = vals[~loop, 1]
    elif mode == "symmetric":
        vals = _draw_nonzero(len(edges), distribution, gen)
        w[dst, src] = vals
        w[src, dst] = vals
    else:  # random_direction
        flip = torch.rand(len(edges), generator=gen, dtype=torch.float64) < 0.5
        vals = _draw_nonzero(len(edges), distribution, gen)
        w[torch.where(flip, src, dst), torch.where(flip, dst, src)] = vals
    if spectral_radius is not None:
        from rnnlab.analysis.spectral import scale_to_spectral_radius

        w = scale_to_spectral_radius(w, spectral_radius)
    return _finish(w, layout, dtype, device)


def _build(
    make_graph: Callable[[int], Any],
    *,
    mode: str = "independent",
    distribution: str = "uniform",
    spectral_radius: float | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    return_graph: bool = False,
    layout: str = "dense",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Any:
    """The part every builder below shares: the networkx seed and the weights' generator
    (:func:`_seeds`), the graph ``make_graph(networkx seed)``, its weights
    (:func:`graph_to_reservoir`), and W or ``(W, graph)``. Its keywords are the builders'
    ``options`` (module docstring, "Builder options")."""
    nx_seed, gen = _seeds(seed, generator)
    graph = make_graph(nx_seed)
    w = graph_to_reservoir(graph, mode=mode, distribution=distribution,
                           spectral_radius=spectral_radius, generator=gen, layout=layout,
                           dtype=dtype, device=device)
    return (w, graph) if return_graph else w


def watts_strogatz_reservoir(n: int, k: int, p: float = 0.1, **options: Any) -> Any:
    """Small-world reservoir on ``networkx.watts_strogatz_graph(n, k, p, seed)``.

    ``k`` (even, ``2 <= k < n``) nearest ring neighbours, rewiring probability ``p`` in [0, 1].
    ``options``: module docstring ("Builder options"). Returns W, or ``(W, graph)`` with
    ``return_graph=True``.
    """
    check_positive_int("n", n)
    check_positive_int("k", k)
    if k % 2 or k < 2 or k >= n:
        raise ValueError(f"k must be even with 2 <= k < n ({n}), got {k}")
    p = check_number("p", p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p (rewiring probability) must be in [0, 1], got {p}")
    return _build(lambda nx_seed: _nx().watts_strogatz_graph(n, k, p, seed=nx_seed), **options)


def barabasi_albert_reservoir(n: int, m: int, **options: Any) -> Any:
    """Scale-free reservoir on ``networkx.barabasi_albert_graph(n, m, seed)`` (``1 <= m < n``).

    ``options``: module docstring ("Builder options"). Returns W, or ``(W, graph)`` with
    ``return_graph=True``.
    """
    check_positive_int("n", n)
    check_positive_int("m", m)
    if m >= n:
        raise ValueError(f"m must be smaller than n ({n}), got {m}")
    return _build(lambda nx_seed: _nx().barabasi_albert_graph(n, m, seed=nx_seed), **options)


def waxman_beta(positions: torch.Tensor, mean_degree: float, alpha: float) -> float:
    """The Waxman ``beta`` that gives expected mean degree ``mean_degree`` for these positions.

    With ``L`` the largest distance between two of the ``n`` points (networkx's Waxman-1
    model), the expected number of edges is ``beta sum_{i<j} exp(-d_ij / (alpha L))``, so
    ``beta = mean_degree n / (2 sum_{i<j} exp(-d_ij / (alpha L)))``. Raises ``ValueError`` if
    that exceeds 1 (the graph cannot be that dense at this ``alpha``).
    """
    mean_degree = check_number("mean_degree", mean_degree)
    alpha = check_number("alpha", alpha)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    pos = torch.as_tensor(positions, dtype=torch.float64)
    if pos.dim() != 2 or pos.shape[0] < 2:
        raise ValueError(f"positions must be (n, dim) with n >= 2, got shape {tuple(pos.shape)}")
    n = pos.shape[0]
    if not 0 < mean_degree <= n - 1:
        raise ValueError(f"mean_degree must be in (0, n - 1] = (0, {n - 1}], got {mean_degree}")
    d = torch.pdist(pos)
    length = float(d.max())
    if length == 0:
        raise ValueError("all positions coincide: the Waxman length scale L is 0")
    beta = mean_degree * n / (2.0 * float(torch.exp(-d / (alpha * length)).sum()))
    if beta > 1:
        raise ValueError(
            f"a Waxman graph with alpha={alpha} cannot reach mean degree {mean_degree} with "
            f"{n} nodes (it would need beta={beta:.3g} > 1): increase alpha or lower the degree")
    return beta


def waxman_reservoir(n: int, mean_degree: float, alpha: float = 0.15, **options: Any) -> Any:
    """Spatial reservoir on ``networkx.waxman_graph(n, beta, alpha, seed=seed)`` (Waxman-1:
    uniform positions in the unit square, ``L`` their largest distance).

    ``beta`` is :func:`waxman_beta` of the drawn positions, so that the expected mean degree
    given the positions is ``mean_degree``; smaller ``alpha`` means more local connections.
    (networkx draws the positions first from ``seed``, so a first call with ``beta = 0`` gives
    the positions and a second the graph; both are stored in the graph: node attribute
    ``"pos"``, ``graph.graph["beta"]``.) ``options``: module docstring ("Builder options").
    Returns W, or ``(W, graph)`` with ``return_graph=True``.
    """
    check_positive_int("n", n)
    if n < 2:
        raise ValueError(f"a Waxman graph needs n >= 2 nodes, got {n}")
    alpha = check_number("alpha", alpha)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")

    def make_graph(nx_seed: int) -> Any:
        nx = _nx()
        probe = nx.waxman_graph(n, beta=0.0, alpha=alpha, seed=nx_seed)
        pos = torch.tensor([probe.nodes[i]["pos"] for i in range(n)], dtype=torch.float64)
        beta = waxman_beta(pos, mean_degree, alpha)
        graph = nx.waxman_graph(n, beta=beta, alpha=alpha, seed=nx_seed)
        if any(graph.nodes[i]["pos"] != probe.nodes[i]["pos"] for i in range(n)):
            raise RuntimeError("networkx.waxman_graph no longer draws the positions first from "
                               "its seed; the degree calibration of waxman_reservoir must be "
                               "revised")
        graph.graph.update(beta=beta, alpha=alpha)
        return graph

    return _build(make_graph, **options)


def spatial_growth_reservoir(
    n: int,
    mean_degree: float | None = None,
    alpha: float = 5.0,
    *,
    beta: float | None = None,
    first_position: tuple[float, float] | None = None,
    max_attempts: int | None = None,
    **options: Any,
) -> Any:
    """Reservoir on a spatially grown network (:func:`spatial_growth_graph`, Kaiser & Hilgetag
    2004): link probability ``beta exp(-alpha d)``, candidates without a link discarded.

    Give either ``mean_degree`` (then ``beta`` is :func:`spatial_growth_beta` for this seed:
    the realised mean degree ``2 |E| / n`` equals ``round(mean_degree n / 2) * 2 / n`` unless a
    jump of the edge count straddles it, see there; the value is in
    ``graph.graph["mean_degree"]``) or ``beta`` itself. The graph is grown with the networkx
    seed of the module's convention (``seed``, or an integer drawn from ``generator``), the
    weights drawn as for the other graphs (``options``: module docstring, "Builder options").
    Returns W, or ``(W, graph)`` with ``return_graph=True``.

    Scale: with ``n = 100`` and ``mean_degree = 10`` the default ``alpha = 5`` needs beta of
    about 0.6-0.73 (seeds 0-9) and gives a mean link length of 0.28, that of a Waxman graph with
    ``alpha = 0.15`` of the same size and degree (random pairs in the unit square: 0.52); above
    ``alpha`` of about 6 that degree is out of reach (it would need beta > 1).
    """
    check_positive_int("n", n)
    if n < 2:
        raise ValueError(f"a spatially grown graph needs n >= 2 nodes, got {n}")
    if (mean_degree is None) == (beta is None):
        raise ValueError("give exactly one of mean_degree (beta calibrated to it) and beta, got "
                         f"mean_degree={mean_degree!r}, beta={beta!r}")
    alpha, beta = check_alpha_beta(alpha, beta)

    def make_graph(growth_seed: int) -> Any:
        b = beta
        if b is None:
            b = spatial_growth_beta(n, mean_degree, alpha, seed=growth_seed,
                                    first_position=first_position, max_attempts=max_attempts)
        return spatial_growth_graph(n, alpha, b, seed=growth_seed,
                                    first_position=first_position, max_attempts=max_attempts)

    return _build(make_graph, **options)


def graph_reservoir(
    kind: str,
    n: int,
    mean_degree: int,
    *,
    rewire: float = 0.1,
    waxman_alpha: float = 0.15,
    growth_alpha: float = 5.0,
    **kwargs: Any,
) -> Any:
    """A graph reservoir of ``kind`` (``"small_world"``, ``"scale_free"``, ``"spatial"``,
    ``"spatial_growth"``) with (about) ``mean_degree`` neighbours per node, i.e. the density
    ``mean_degree / n`` of a random ESN reservoir in ``"independent"`` mode: Watts–Strogatz with
    ``k = mean_degree`` (even) and rewiring ``rewire``; Barabasi–Albert with ``m = mean_degree /
    2`` (mean degree ``2 m (n - m) / n``); Waxman with ``waxman_alpha`` and expected mean degree
    ``mean_degree``; Kaiser–Hilgetag spatial growth with ``growth_alpha`` and beta bisected to
    realise ``mean_degree`` for the seed (:func:`spatial_growth_beta`). ``kwargs`` go to the
    builder (mode, spectral_radius, seed, ...)."""
    check_positive_int("mean_degree", mean_degree)
    if kind == "small_world":
        return watts_strogatz_reservoir(n, mean_degree, rewire, **kwargs)
    if kind == "scale_free":
        if mean_degree % 2:
            raise ValueError(f"a scale-free reservoir needs an even mean_degree (m = "
                             f"mean_degree / 2 edges per new node), got {mean_degree}")
        return barabasi_albert_reservoir(n, mean_degree // 2, **kwargs)
    if kind == "spatial":
        return waxman_reservoir(n, mean_degree, waxman_alpha, **kwargs)
    if kind == "spatial_growth":
        return spatial_growth_reservoir(n, mean_degree, growth_alpha, **kwargs)
    raise ValueError(f"kind must be one of {GRAPH_KINDS}, got {kind!r}")
