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

Random draws are made in float64 on the CPU from a ``torch.Generator`` (``generator=``, or a new
one seeded with ``seed``) and then cast, so one seed gives the same matrix for every dtype and
device (up to rounding to the dtype).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import lru_cache

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_positive_int

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


def _check_weight(name: str, value: float, *, nonzero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if nonzero and value == 0.0:
        raise ValueError(f"{name} must be non-zero (a zero weight leaves no connection)")
    return value


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
    if isinstance(density, bool) or not isinstance(density, (int, float)):
        raise TypeError(f"density must be a number, got {type(density).__name__}")
    if not (0.0 < density <= 1.0):
        raise ValueError(f"density must be in (0, 1], got {density}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    nnz = round(density * n * n)
    if nnz == 0:
        raise ValueError(f"density {density} gives no non-zero entry in a {n} x {n} matrix")
    gen = make_generator(seed, generator)
    pos = _distinct_positions(n * n, nnz, gen)
    if distribution == "uniform":
        vals = 2.0 * torch.rand(nnz, generator=gen, dtype=torch.float64) - 1.0
    else:
        vals = torch.randn(nnz, generator=gen, dtype=torch.float64)
    # A drawn exact zero (probability ~2^-53 per entry) would break the exact non-zero count.
    while bool((vals == 0).any()):
        zero = vals == 0
        vals[zero] = 2.0 * torch.rand(int(zero.sum()), generator=gen, dtype=torch.float64) - 1.0
    w = torch.zeros(n * n, dtype=torch.float64)
    w[pos] = vals
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
    check_positive_int("n", n)
    r = _check_weight("r", r)
    w = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n - 1)
    w[idx + 1, idx] = r
    return _finish(w, layout, dtype, device)


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
    check_positive_int("n", n)
    r = _check_weight("r", r)
    b = _check_weight("b", b, nonzero=False)
    w = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n - 1)
    w[idx + 1, idx] = r
    w[idx, idx + 1] = b
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
    check_positive_int("n", n)
    r = _check_weight("r", r)
    w = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n - 1)
    w[idx + 1, idx] = r
    w[0, n - 1] = r
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
    v = _check_weight("v", v)
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
