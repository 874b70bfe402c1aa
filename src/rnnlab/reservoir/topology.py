"""Reservoir and input weight builders, seeded and returning torch tensors.

Recurrent matrices ``W`` (N x N, ``W[i, j]`` is the weight from unit j to unit i, so that the
update reads ``W x``):

* :func:`sparse_random`: the classic ESN reservoir (Jaeger 2001): exactly ``round(density N^2)``
  non-zero entries at uniformly drawn positions, values uniform on ``[-1, 1]`` (symmetric around
  zero) or standard normal. Scale it with :func:`rnnlab.analysis.spectral.scale_to_spectral_radius`.
* The minimum-complexity reservoirs of Rodan & Tino (2011), "Minimum complexity echo state
  network", IEEE Trans. Neural Networks 22(1):

  - :func:`delay_line` (DLR): ``W[i+1, i] = r``; nilpotent (all eigenvalues 0);
  - :func:`delay_line_feedback` (DLRB): also ``W[i, i+1] = b``; a tridiagonal Toeplitz matrix
    with eigenvalues ``2 sqrt(r b) cos(k pi / (N + 1))``, ``k = 1..N`` (for ``r b > 0``);
  - :func:`simple_cycle` (SCR): the delay line closed into a ring by ``W[0, N-1] = r``; its
    eigenvalues are ``r`` times the N-th roots of unity, so ``rho = r`` exactly.

Input matrices ``W_in`` (N x D):

* :func:`dense_uniform_input`: every entry uniform on ``[-s, s]`` (``s`` per input feature or one
  number);
* :func:`sign_pattern_input`: every entry has the same absolute value ``v`` (Rodan & Tino 2011),
  with signs from a seeded fair coin or from the decimal digits of pi (digit 0-4: minus,
  5-9: plus), an aperiodic deterministic pattern. The digits are computed exactly with
  integer arithmetic (Machin's formula, 1706), not stored.

A network's ``W=`` / ``W_in=`` (and ``topology=`` / ``input_weights=``) take a matrix or a
*builder*, as ReservoirPy's initializers: :func:`weight_from` turns either into the float64
matrix the network stores.

Random draws are made in float64 on the CPU from a ``torch.Generator`` (``generator=``, or a new
one seeded with ``seed``) and then cast, so one seed gives the same matrix for every dtype and
device (up to rounding to the dtype).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_number, check_positive_int

LAYOUTS = ("dense", "csr")
DISTRIBUTIONS = ("uniform", "normal")


# ------------------------------------------------------------------------------------------------
def _finish(w: torch.Tensor, layout: str, dtype: torch.dtype | None,
            device: torch.device | str | None) -> torch.Tensor:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    w = w.to(dtype=dtype or torch.get_default_dtype(), device=device)
    return to_csr(w) if layout == "csr" else w


def to_csr(w: torch.Tensor) -> torch.Tensor:
    """``w.to_sparse_csr()`` without torch's "CSR support is in beta" warning (it is used
    here only for ``addmm``, which is stable)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return w.to_sparse_csr()


def _nonzero_weight(name: str, value: float) -> float:
    """``value`` as a finite float (:func:`~rnnlab._validation.check_number`) that is not 0."""
    value = check_number(name, value)
    if value == 0.0:
        raise ValueError(f"{name} must be non-zero (a zero weight leaves no connection)")
    return value


def _draw_nonzero(count: int, distribution: str, gen: torch.Generator) -> torch.Tensor:
    """``count`` float64 values, uniform on [-1, 1] or standard normal, none exactly 0.

    A drawn exact zero (probability ~2^-53 per value) would drop an entry from the sparsity
    pattern (and break an exact non-zero count): it is redrawn, uniform on [-1, 1]."""
    if distribution == "uniform":
        vals = 2.0 * torch.rand(count, generator=gen, dtype=torch.float64) - 1.0
    else:
        vals = torch.randn(count, generator=gen, dtype=torch.float64)
    while bool((vals == 0).any()):
        zero = vals == 0
        vals[zero] = 2.0 * torch.rand(int(zero.sum()), generator=gen, dtype=torch.float64) - 1.0
    return vals


def _delay_chain(n: int, r: float) -> torch.Tensor:
    """``W[i+1, i] = r``, all else 0 (float64): the delay line that DLR, DLRB and SCR share."""
    check_positive_int("n", n)
    r = _nonzero_weight("r", r)
    w = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n - 1)
    w[idx + 1, idx] = r
    return w


# ------------------------------------------------------------------------------------------------
def _distinct_positions(total: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` distinct integers drawn uniformly from ``range(total)`` (without replacement).

    Small ranges: a random permutation. Large ones: draw with replacement and keep the first
    occurrence of each value until there are enough (memory O(count), not O(total)).
    """
    if total <= 1 << 22:
        return torch.randperm(total, generator=gen)[:count]
    picked = torch.empty(0, dtype=torch.int64)
    while picked.numel() < count:
        need = count - picked.numel()
        draw = torch.randint(total, (need + need // 8 + 16,), generator=gen)
        cand = torch.cat([picked, draw])
        uniq, inverse = torch.unique(cand, return_inverse=True)
        first = torch.full((uniq.numel(),), cand.numel(), dtype=torch.int64)
        first.scatter_reduce_(0, inverse, torch.arange(cand.numel()), reduce="amin")
        picked = cand[first.sort().values]
    return picked[:count]


def sparse_random(
    n: int,
    density: float,
    distribution: str = "uniform",
    *,
    generator: torch.Generator | None = None,
    seed: int = 0,
    layout: str = "dense",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random N x N matrix with exactly ``round(density * n * n)`` non-zero entries.

    Positions are uniform without replacement; values are uniform on ``[-1, 1]``
    (``distribution="uniform"``) or standard normal (``"normal"``). ``density`` must be in
    (0, 1] and give at least one non-zero. ``layout="csr"`` returns ``torch.sparse_csr``.
    """
    check_positive_int("n", n)
    density = check_number("density", density)
    if not (0.0 < density <= 1.0):
        raise ValueError(f"density must be in (0, 1], got {density}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    nnz = round(density * n * n)
    if nnz == 0:
        raise ValueError(f"density {density} gives no non-zero entry in a {n} x {n} matrix")
    gen = make_generator(seed, generator)
    pos = _distinct_positions(n * n, nnz, gen)
    w = torch.zeros(n * n, dtype=torch.float64)
    w[pos] = _draw_nonzero(nnz, distribution, gen)
    return _finish(w.view(n, n), layout, dtype, device)


def delay_line(
    n: int,
    r: float,
    *,
    layout: str = "dense",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Delay-line reservoir (DLR, Rodan & Tino 2011): ``W[i+1, i] = r``, all else 0."""
    return _finish(_delay_chain(n, r), layout, dtype, device)


def delay_line_feedback(
    n: int,
    r: float,
    b: float,
    *,
    layout: str = "dense",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Delay line with feedback (DLRB, Rodan & Tino 2011): ``W[i+1, i] = r``, ``W[i, i+1] = b``."""
    w = _delay_chain(n, r)
    idx = torch.arange(n - 1)
    w[idx, idx + 1] = check_number("b", b)
    return _finish(w, layout, dtype, device)


def simple_cycle(
    n: int,
    r: float,
    *,
    layout: str = "dense",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Simple cycle reservoir (SCR, Rodan & Tino 2011): ``W[i+1, i] = r`` and ``W[0, n-1] = r``.

    ``W / r`` is a cyclic permutation matrix, so ``eig(W) = r exp(2 pi i k / n)`` and
    ``rho(W) = |r|``.
    """
    w = _delay_chain(n, r)
    w[0, n - 1] = float(r)  # checked by _delay_chain
    return _finish(w, layout, dtype, device)


# ------------------------------------------------------------------------------------------------
def _feature_scaling(scaling: float | Sequence[float] | torch.Tensor, d: int,
                     name: str) -> torch.Tensor:
    s = torch.as_tensor(scaling, dtype=torch.float64).detach().cpu()
    if s.dim() == 0:
        s = s.expand(d)
    if s.shape != (d,):
        raise ValueError(f"{name} must be one number or one per input feature ({d}), "
                         f"got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or bool((s <= 0).any()):
        raise ValueError(f"{name} must be positive and finite, got {s.tolist()}")
    return s


def dense_uniform_input(
    n: int,
    d: int,
    scaling: float | Sequence[float] | torch.Tensor = 1.0,
    *,
    generator: torch.Generator | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Input weights ``W_in`` (N x D), entries uniform on ``[-s_j, s_j]`` for input feature j.

    ``scaling`` is one positive number or one per input feature (as ReservoirPy's
    ``input_scaling``).
    """
    check_positive_int("n", n)
    check_positive_int("d", d)
    s = _feature_scaling(scaling, d, "scaling")
    gen = make_generator(seed, generator)
    w = (2.0 * torch.rand(n, d, generator=gen, dtype=torch.float64) - 1.0) * s
    return w.to(dtype=dtype or torch.get_default_dtype(), device=device)


def _arccot_scaled(x: int, unity: int) -> tuple[int, int]:
    """``unity * arctan(1/x)`` in integers, and the number of series terms used.

    arctan(1/x) = sum_k (-1)^k / ((2k+1) x^(2k+1)). ``term`` is exactly floor(unity / x^(2k+1))
    (floors of floors by integers compose), and each ``term // k`` loses less than one unit, so
    the error is below one unit of ``unity`` per term.
    """
    total = term = unity // x
    x2, k, sign, terms = x * x, 3, -1, 1
    while term:
        term //= x2
        total += sign * (term // k)
        sign, k, terms = -sign, k + 2, terms + 1
    return total, terms


@lru_cache(maxsize=8)
def _pi_digits_cached(count: int) -> tuple[int, ...]:
    guard = 12
    while True:
        unity = 10 ** (count - 1 + guard)
        # Machin (1706): pi / 4 = 4 arctan(1/5) - arctan(1/239).
        a, ta = _arccot_scaled(5, unity)
        b, tb = _arccot_scaled(239, unity)
        scaled = 4 * (4 * a - b)
        err = 4 * (4 * (ta + 1) + tb + 1)  # bound on |scaled - pi * unity|
        low, high = divmod(scaled, 10**guard)
        # The truncated digits are certain unless the error could carry across the cut.
        if err < high < 10**guard - err:
            return tuple(int(c) for c in _decimal_string(low, count))
        guard += 8


def _decimal_string(x: int, ndigits: int) -> str:
    """``x`` as exactly ``ndigits`` decimal digits, converted in blocks (Python limits ``str`` of
    an int to 4300 digits by default)."""
    if ndigits <= 2048:
        return str(x).zfill(ndigits)
    half = ndigits // 2
    high, low = divmod(x, 10**half)
    return _decimal_string(high, ndigits - half) + _decimal_string(low, half)


def pi_digits(count: int, offset: int = 0) -> torch.Tensor:
    """The decimal digits of pi, ``3, 1, 4, 1, 5, 9, ...``: ``count`` of them from position
    ``offset`` (0 is the leading 3, 1 the first decimal), as an int64 tensor.

    Exact: Machin's formula in Python integers with guard digits, checked for carries.
    """
    check_positive_int("count", count)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r}")
    digits = _pi_digits_cached(count + offset)
    return torch.tensor(digits[offset:offset + count], dtype=torch.int64)


SIGN_SOURCES = ("random", "pi")


def sign_pattern_input(
    n: int,
    d: int,
    v: float = 1.0,
    signs: str = "random",
    *,
    digit_offset: int = 0,
    generator: torch.Generator | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Input weights (N x D) that all have absolute value ``v`` (Rodan & Tino 2011).

    ``signs="random"``: each sign from a seeded fair coin. ``signs="pi"``: the sign of the k-th
    weight is minus if the k-th decimal digit of pi is 0-4 and plus if it is 5-9, with the
    weights taken column by column (``k = j * n + i`` for ``W_in[i, j]``: all weights of input
    1, then input 2, ...) and digits counted from ``digit_offset`` (0: the leading 3 of
    3.14159...; 1: the first decimal).
    """
    check_positive_int("n", n)
    check_positive_int("d", d)
    v = _nonzero_weight("v", v)
    if v < 0:
        raise ValueError(f"v is the absolute value of the weights and must be positive, got {v}")
    if signs not in SIGN_SOURCES:
        raise ValueError(f"signs must be one of {SIGN_SOURCES}, got {signs!r}")
    if signs == "random":
        gen = make_generator(seed, generator)
        s = torch.where(torch.rand(n, d, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
        s = s.to(torch.float64)
    else:
        digits = pi_digits(n * d, digit_offset)
        s = torch.where(digits <= 4, -1.0, 1.0).to(torch.float64).view(d, n).t()
    return (v * s).to(dtype=dtype or torch.get_default_dtype(), device=device)


TOPOLOGIES = ("random", "dlr", "dlrb", "scr")


def _accepts_generator(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return any(p.name == "generator" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def weight_from(spec: Any, shape: tuple[int, ...], name: str,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The float64 CPU matrix of ``shape`` that ``spec`` describes.

    ``spec`` is a matrix (``torch.Tensor``, dense or sparse; ``numpy.ndarray``; ``scipy.sparse``)
    or a builder: a callable called as ``spec(*shape, generator=generator)`` when it takes a
    ``generator`` keyword (or ``**kwargs``), else ``spec(*shape)`` (e.g.
    ``lambda n, m: 0.5 * torch.eye(n, m)``, or
    ``lambda n, m, generator: sparse_random(n, 0.05, generator=generator)`` for W), which
    returns such a matrix. Raises ``ValueError`` for a wrong shape or non-finite
    entries, naming ``name``.
    """
    if callable(spec) and not isinstance(spec, torch.Tensor):
        builder = getattr(spec, "__name__", type(spec).__name__)
        kwargs = {"generator": generator} if _accepts_generator(spec) else {}
        w = spec(*shape, **kwargs)
        name = f"{name} (built by {builder})"
    else:
        w = spec
    w = _as_dense_float64(w, name)
    if tuple(w.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} contains non-finite values")
    return w


def _as_dense_float64(w: Any, name: str) -> torch.Tensor:
    if isinstance(w, torch.Tensor):
        w = w.detach()
        if w.layout != torch.strided:
            w = w.to_dense()
        return w.to(device="cpu", dtype=torch.float64)
    if isinstance(w, np.ndarray):
        return torch.from_numpy(np.asarray(w, dtype=np.float64).copy())
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover
        sp = None
    if sp is not None and sp.issparse(w):
        return torch.from_numpy(w.toarray().astype(np.float64))
    raise TypeError(f"{name} must be a torch.Tensor, numpy.ndarray or scipy.sparse matrix "
                    f"(or a builder returning one), got {type(w).__name__}")



# ------------------------------------------------------------------------------------------------
# The echo state network's weights from its constructor's options (EchoStateNetwork draws W, then
# W_in, from one generator, in this order).
INPUT_WEIGHTS = ("uniform", "sign_random", "sign_pi")


def build_recurrent(
    topology: Any,
    n: int,
    *,
    spectral_radius: float | None,
    density: float = 0.1,
    distribution: str = "uniform",
    r: float = 0.5,
    backward_weight: float = 0.05,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, str]:
    """``(W, name)``: the float64 recurrent matrix of an echo state network and the name of its
    topology (``"user"`` for a matrix or builder, see :func:`weight_from`).

    ``"random"``: :func:`sparse_random` scaled to ``spectral_radius`` (default 0.9); ``"scr"``:
    :func:`simple_cycle` with weight ``spectral_radius`` (its rho exactly) or ``r``; ``"dlr"``,
    ``"dlrb"`` and a user W: scaled only when ``spectral_radius`` is given (a DLR cannot be:
    all its eigenvalues are 0). Scaling is
    :func:`rnnlab.analysis.spectral.scale_to_spectral_radius`.
    """
    # Imported here, not at module level: rnnlab.analysis may import the reservoir package
    # (memory capacity of a reservoir), and a module-level import would make a cycle.
    from rnnlab.analysis.spectral import scale_to_spectral_radius

    if not isinstance(topology, str):
        w = weight_from(topology, (n, n), "the user W", generator)
        return (w if spectral_radius is None
                else scale_to_spectral_radius(w, spectral_radius)), "user"
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES} or a matrix, got {topology!r}")
    if topology == "random":
        w = sparse_random(n, density, distribution, generator=generator, dtype=torch.float64)
        rho = 0.9 if spectral_radius is None else spectral_radius
        return scale_to_spectral_radius(w, rho), topology
    if topology == "scr":
        # rho(SCR) = |r| exactly (closed form), so the target sets r.
        weight = r if spectral_radius is None else spectral_radius
        return simple_cycle(n, weight, dtype=torch.float64), topology
    if topology == "dlr":
        w = delay_line(n, r, dtype=torch.float64)
    else:
        w = delay_line_feedback(n, r, backward_weight, dtype=torch.float64)
    return (w if spectral_radius is None
            else scale_to_spectral_radius(w, spectral_radius)), topology


def build_input(
    spec: Any,
    n: int,
    d: int,
    *,
    scaling: float | Sequence[float] | torch.Tensor = 1.0,
    digit_offset: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, str]:
    """``(W_in, name)``: the float64 N x D input matrix of an echo state network and the name of
    its kind: ``"uniform"`` (:func:`dense_uniform_input`), ``"sign_random"`` /
    ``"sign_pi"`` (:func:`sign_pattern_input`, absolute value ``scaling``), or ``"user"`` for a
    matrix or builder (:func:`weight_from`)."""
    if not isinstance(spec, str):
        return weight_from(spec, (n, d), "input_weights", generator), "user"
    if spec == "uniform":
        return dense_uniform_input(n, d, scaling, generator=generator,
                                   dtype=torch.float64), spec
    if spec in ("sign_random", "sign_pi"):
        return sign_pattern_input(n, d, scaling, "random" if spec == "sign_random" else "pi",
                                  digit_offset=digit_offset, generator=generator,
                                  dtype=torch.float64), spec
    raise ValueError(f"input_weights must be one of {INPUT_WEIGHTS} or a matrix, got {spec!r}")
