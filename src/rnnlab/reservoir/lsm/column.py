"""The column: neurons on a 3-D grid and their synapses as an edge list (Maass et al. 2002).

:func:`build_column` draws a :class:`Column` from :class:`ColumnParameters` with one seeded CPU
generator (``rnnlab._random.make_generator``): the same seed gives the same column. A
:class:`Column` may also be written by hand (a single neuron, a single synapse) and is checked
by :meth:`Column.validate`. Everything is float64 on the CPU; the simulator casts it.

Drawing rules (the paper's appendix, Maass, Natschläger & Markram 2002):

* P(a -> b) = C_{type(a) type(b)} · exp(-(D(a, b)/lambda)^2), D the Euclidean grid distance,
  for a != b (no autapses);
* U, D, F ~ Normal(mean, (cv·mean)^2) per synapse; a value outside the allowed range (<= 0,
  or U > 1) is replaced by a uniform draw from (0, 2·mean] (U: (0, min(2·mean, 1)]), as the
  paper does (its brian2 reproduction notes the same rule);
* |A| ~ Gamma(shape 1/cv^2, scale cv^2·|mean|): mean |A|, SD cv·|A| (cv = 1 in the paper), the
  sign of the mean kept;
* per-neuron parameters given as (low, high) intervals are drawn uniformly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_int
from rnnlab.reservoir.lsm.params import (
    CONNECTION_TYPES,
    ColumnParameters,
    NeuronParameters,
    check_range,
)

_NEURON_FIELDS = ("tau_m", "resistance", "threshold", "reset", "refractory", "background",
                  "v_init_low", "v_init_high", "input_tau")
_EDGE_FIELDS = ("amplitude", "U", "D", "F", "delay", "tau_s")


@dataclass
class Column:
    """A generated (or hand-written) column. Shapes: N neurons, E synapses, K input channels.

    Per neuron ``(N,)`` float64: ``tau_m`` (ms), ``resistance`` (MΩ), ``threshold``, ``reset``
    (mV), ``refractory`` (ms), ``background`` (nA), ``v_init_low``/``v_init_high`` (mV, the
    interval initial potentials are drawn from per trial), ``input_tau`` (ms, decay of the
    input synapses' current); ``inhibitory`` bool; ``positions (N, 3)`` int64.
    Per synapse ``(E,)``: ``pre``, ``post`` int64; ``amplitude`` A (nA), ``U``, ``D``, ``F``
    (ms), ``delay`` (ms), ``tau_s`` (ms) float64. ``input_weights (K, N)`` nA per input spike
    (0: not connected).
    """

    positions: torch.Tensor
    inhibitory: torch.Tensor
    tau_m: torch.Tensor
    resistance: torch.Tensor
    threshold: torch.Tensor
    reset: torch.Tensor
    refractory: torch.Tensor
    background: torch.Tensor
    v_init_low: torch.Tensor
    v_init_high: torch.Tensor
    input_tau: torch.Tensor
    pre: torch.Tensor
    post: torch.Tensor
    amplitude: torch.Tensor
    U: torch.Tensor
    D: torch.Tensor
    F: torch.Tensor
    delay: torch.Tensor
    tau_s: torch.Tensor
    input_weights: torch.Tensor

    @property
    def n_neurons(self) -> int:
        return int(self.tau_m.shape[0])

    @property
    def n_synapses(self) -> int:
        return int(self.pre.shape[0])

    @property
    def n_inputs(self) -> int:
        return int(self.input_weights.shape[0])

    def validate(self) -> Column:
        """Check shapes, ranges and NaN; ``ValueError`` naming the offending field."""
        n = self.n_neurons
        if n == 0:
            raise ValueError("the column has no neurons")
        self._check_vectors(_NEURON_FIELDS, n, ("tau_m", "resistance", "refractory",
                                                 "input_tau"))
        if bool((self.reset >= self.threshold).any()):
            raise ValueError("column.reset must lie below column.threshold")
        if bool((self.v_init_high < self.v_init_low).any()):
            raise ValueError("column.v_init_high must be >= column.v_init_low")
        if self.inhibitory.shape != (n,) or self.inhibitory.dtype != torch.bool:
            raise ValueError(f"column.inhibitory must be a bool tensor of shape ({n},)")
        if self.positions.shape != (n, 3):
            raise ValueError(f"column.positions must have shape ({n}, 3)")
        e = self.n_synapses
        for name in ("pre", "post"):
            x = getattr(self, name)
            if x.shape != (e,) or x.dtype != torch.int64:
                raise ValueError(f"column.{name} must be an int64 tensor of shape ({e},)")
            if e and (int(x.min()) < 0 or int(x.max()) >= n):
                raise ValueError(f"column.{name} has neuron indices outside [0, {n})")
        self._check_vectors(_EDGE_FIELDS, e, ("D", "F", "delay", "tau_s"))
        if bool(((self.U <= 0) | (self.U > 1)).any()):
            raise ValueError("column.U must lie in (0, 1]")
        w = self.input_weights
        if w.dim() != 2 or w.shape[1] != n:
            raise ValueError(f"column.input_weights must have shape (n_inputs, {n})")
        if not bool(torch.isfinite(w).all()):
            raise ValueError("column.input_weights contains NaN or inf")
        return self

    def _check_vectors(self, names: tuple[str, ...], size: int,
                       positive: tuple[str, ...]) -> None:
        for name in names:
            x = getattr(self, name)
            if not isinstance(x, torch.Tensor) or x.shape != (size,):
                raise ValueError(f"column.{name} must be a tensor of shape ({size},)")
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"column.{name} contains NaN or inf")
            if name in positive and bool((x <= 0).any()):
                raise ValueError(f"column.{name} must be positive (a time constant, resistance, "
                                 f"refractory period or delay <= 0 was given)")

    def connection_type(self) -> list[str]:
        """The type (``"EE"``, ``"EI"``, ``"IE"``, ``"II"``) of each synapse, pre→post."""
        kind = self.inhibitory[self.pre].long() * 2 + self.inhibitory[self.post].long()
        return [CONNECTION_TYPES[int(k)] for k in kind]


def grid_positions(shape: tuple[int, int, int]) -> torch.Tensor:
    """All integer points of a ``shape`` grid, ``(prod(shape), 3)`` int64, row-major order."""
    axes = [torch.arange(int(s)) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def _uniform(low: float, high: float, n: int, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64)


def sample_gamma(shape_k: float, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` draws from Gamma(shape_k, 1) with ``gen`` (Marsaglia & Tsang 2000, ACM TOMS 26:363;
    for shape < 1 the boost Gamma(k) = Gamma(k + 1)·V^(1/k), V uniform)."""
    if shape_k <= 0:
        raise ValueError(f"gamma shape must be positive, got {shape_k}")
    boost = shape_k < 1.0
    k = shape_k + 1.0 if boost else shape_k
    d = k - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64)
    todo = torch.arange(n)
    while todo.numel():
        m = todo.numel()
        x = torch.randn(m, generator=gen, dtype=torch.float64)
        u = torch.rand(m, generator=gen, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out[todo[ok]] = (d * v)[ok]
        todo = todo[~ok]
    if boost:
        v = 1.0 - torch.rand(n, generator=gen, dtype=torch.float64)  # in (0, 1]
        out = out * v ** (1.0 / shape_k)
    return out


def sample_amplitudes(mean: torch.Tensor, cv: float, gen: torch.Generator) -> torch.Tensor:
    """sign(mean)·Gamma with mean |mean| and SD cv·|mean| (cv = 0: the mean itself)."""
    if cv == 0 or mean.numel() == 0:
        return mean.clone()
    g = sample_gamma(1.0 / cv**2, mean.numel(), gen) * cv**2
    return mean * g


def sample_positive(mean: torch.Tensor, cv: float, gen: torch.Generator,
                    high: float = math.inf) -> torch.Tensor:
    """Normal(mean, (cv·mean)^2); draws outside (0, high] replaced by Uniform(0, min(2·mean,
    high)] (the paper's rule for U, D, F)."""
    x = mean + cv * mean * torch.randn(mean.shape, generator=gen, dtype=torch.float64)
    bad = (x <= 0) | (x > high)
    if bool(bad.any()):
        top = torch.clamp(2 * mean[bad], max=high)
        x[bad] = top * (1.0 - torch.rand(int(bad.sum()), generator=gen, dtype=torch.float64))
    return x


def _neuron_values(pop: NeuronParameters, name: str, n: int, gen: torch.Generator
                   ) -> torch.Tensor:
    low, high = check_range(name, getattr(pop, name))
    return _uniform(low, high, n, gen)


def build_column(params: ColumnParameters | None = None, *, n_inputs: int = 1,
                 seed: object = None, generator: torch.Generator | None = None) -> Column:
    """Draw a column from ``params`` (default: the paper's 15x3x3 column) with ``n_inputs``
    input channels. Same seed, same column."""
    params = (ColumnParameters() if params is None else params).validate()
    n_inputs = check_int("n_inputs", n_inputs, low=0)
    gen = make_generator(seed, generator)
    pos = grid_positions(params.shape)
    n = pos.shape[0]
    n_inh = round(params.inhibitory_fraction * n)
    inhibitory = torch.zeros(n, dtype=torch.bool)
    inhibitory[torch.randperm(n, generator=gen)[:n_inh]] = True

    per_neuron: dict[str, torch.Tensor] = {}
    for name in ("tau_m", "resistance", "threshold", "reset", "background"):
        vals = torch.empty(n, dtype=torch.float64)
        for flag, pop in ((False, params.excitatory), (True, params.inhibitory)):
            idx = (inhibitory == flag).nonzero().flatten()
            vals[idx] = _neuron_values(pop, name, idx.numel(), gen)
        per_neuron[name] = vals
    refractory = torch.where(inhibitory, params.inhibitory.refractory,
                             params.excitatory.refractory).to(torch.float64)
    v_lo = torch.where(inhibitory, check_range("v_init", params.inhibitory.v_init)[0],
                       check_range("v_init", params.excitatory.v_init)[0]).to(torch.float64)
    v_hi = torch.where(inhibitory, check_range("v_init", params.inhibitory.v_init)[1],
                       check_range("v_init", params.excitatory.v_init)[1]).to(torch.float64)
    if bool((per_neuron["reset"] >= per_neuron["threshold"]).any()):
        raise ValueError("a drawn reset potential is not below its threshold; narrow the ranges")

    # Connections: one Bernoulli draw per ordered pair a != b.
    kind = inhibitory.long()[:, None] * 2 + inhibitory.long()[None, :]   # (pre, post) type
    syn = [params.synapses[t] for t in CONNECTION_TYPES]
    c_of = torch.tensor([s.C for s in syn], dtype=torch.float64)
    dist2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1).to(torch.float64)
    prob = c_of[kind] * torch.exp(-dist2 / params.lam**2)
    prob.fill_diagonal_(0.0)
    connected = torch.rand((n, n), generator=gen, dtype=torch.float64) < prob
    pre, post = connected.nonzero(as_tuple=True)       # sorted by pre, then post
    k = kind[pre, post]

    def per_type(attr: str) -> torch.Tensor:
        return torch.tensor([getattr(s, attr) for s in syn], dtype=torch.float64)[k]

    U = sample_positive(per_type("U"), params.udf_cv, gen, high=1.0)
    D = sample_positive(per_type("D"), params.udf_cv, gen)
    F = sample_positive(per_type("F"), params.udf_cv, gen)
    amplitude = params.amplitude_scale * sample_amplitudes(per_type("A"), params.amplitude_cv,
                                                           gen)
    in_mean = torch.where(inhibitory, params.input_amplitude[1], params.input_amplitude[0])
    in_mean = in_mean.to(torch.float64).expand(n_inputs, n).reshape(-1)
    in_w = sample_amplitudes(in_mean, params.amplitude_cv, gen).reshape(n_inputs, n)
    in_mask = torch.rand((n_inputs, n), generator=gen, dtype=torch.float64)
    in_w = torch.where(in_mask < params.input_probability, in_w, torch.zeros_like(in_w))
    input_tau = torch.where(inhibitory, params.input_tau[1], params.input_tau[0])

    return Column(
        positions=pos, inhibitory=inhibitory, refractory=refractory,
        v_init_low=v_lo, v_init_high=v_hi, input_tau=input_tau.to(torch.float64),
        pre=pre, post=post, amplitude=amplitude, U=U, D=D, F=F,
        delay=per_type("delay"), tau_s=per_type("tau_s"), input_weights=in_w,
        **per_neuron,
    ).validate()

