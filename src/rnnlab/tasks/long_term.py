"""Long-term-dependency tasks: delayed recall and the "pathological" problems.

Sources (each generator's docstring gives its exact definition and success criterion):

- Hochreiter & Schmidhuber (1997), *Long short-term memory*, Neural Computation 9(8):
  experiment 4 (adding), 5 (multiplication), 6a/6b (temporal order), 2 (long noise-free lags).
- Martens & Sutskever (2011), *Learning recurrent neural networks with Hessian-free
  optimization*, ICML: the same problems rescaled to a length T, plus random permutation and
  noiseless memorization.
- Pascanu, Mikolov & Bengio (2013), *On the difficulty of training recurrent neural networks*,
  ICML, and its published code (github.com/pascanur/trainingRNNs), which fixes the details
  the papers leave open (positions, ranges, scaling, criteria).

Where these sources disagree, the generator takes a named ``variant``. Every generator returns
a :class:`LongTermTask`: ``inputs`` ``(batch, time, D)`` and ``targets`` ``(batch, time, O)``
float tensors, zero-padded to the longest sequence, a boolean ``mask`` ``(batch, time)`` of the
steps where the loss and the metric apply, and ``lengths`` ``(batch,)``. Data are drawn on the
CPU in float64 from a seeded ``torch.Generator`` (so a seed gives the same data on every
device), then cast; targets are computed from the inputs *as cast*, so the target is exactly
the defined function of what the network sees.

Conventions: positions are 0-based (the papers count from 1; each docstring translates).
A metric returns a :class:`TaskScore`; ``chance`` on a task is the success rate of the best
prediction that ignores the inputs (derived in closed form in each docstring and in
``docs/tasks_long_term.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from rnnlab._random import make_generator
from rnnlab._validation import check_positive_int

# Per-sequence criteria of the sources.
HS_ABS_TOLERANCE = 0.04  # H&S 1997 exp. 4/5: |error| at the end below 0.04
PASCANU_SQ_TOLERANCE = 0.04  # Pascanu 2013: a sequence is wrong if its squared error > 0.04
HS_CLASS_TOLERANCE = 0.3  # H&S 1997 exp. 6: every output unit within 0.3 of its target
# Pascanu 2013: a run succeeds when fewer than 1% of fresh test sequences are wrong.
RUN_ERROR_RATE = 0.01

MARKER_VARIANTS = ("hochreiter1997", "pascanu2013")
TEMPORAL_ORDER_VARIANTS = ("hochreiter1997", "pascanu2013")
PERMUTATION_VARIANTS = ("pascanu2013", "martens2011")
RECALL_DISTRIBUTIONS = ("bits", "uniform")

# Temporal order alphabet (index -> symbol). pascanu2013 uses the first six only.
TEMPORAL_ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")
_X, _TRIGGER, _START = 4, 6, 7
# H&S 1997 windows for the relevant symbols, 1-based positions for T = 100 (exp. 6a, 6b).
_HS_WINDOWS = {2: ((10, 20), (50, 60)), 3: ((10, 20), (33, 43), (66, 76))}
# Pascanu 2013 code: window k starts at floor(s_k T / 10) and is floor(T / 10) wide.
_PASCANU_STARTS = {2: (1, 5), 3: (1, 3, 6)}


# ------------------------------------------------------------------------------------------
# Containers
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LongTermTask:
    """A batch of one long-term-dependency task.

    Attributes:
        name: the registry name (a key of :data:`LONG_TERM_TASKS`).
        variant: which source's definition was used (see the generator).
        inputs: ``(batch, time, D)``; steps at or beyond ``lengths`` are zero.
        targets: ``(batch, time, O)``; zero where ``mask`` is False.
        mask: ``(batch, time)`` bool, the steps where the loss applies and the metric reads.
        lengths: ``(batch,)`` int64, the length of each sequence (``time == lengths.max()``).
        params: the generator's arguments (``length``, ``tau``, ...).
        info: ground truth the generator used (``positions``, ``values``, ``labels``, ...), for
            analysis; the metric itself reads only ``targets`` and ``mask``.
        chance: success rate (the metric's ``success_rate``) of the best input-independent
            prediction.
        chance_step: the same for the metric's ``step_accuracy``.
    """

    name: str
    variant: str
    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    params: dict[str, object] = field(default_factory=dict)
    info: dict[str, torch.Tensor] = field(default_factory=dict)
    chance: float = math.nan
    chance_step: float = math.nan

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def max_length(self) -> int:
        return self.inputs.shape[1]

    @property
    def input_size(self) -> int:
        return self.inputs.shape[2]

    @property
    def output_size(self) -> int:
        return self.targets.shape[2]

    @property
    def valid(self) -> torch.Tensor:
        """``(batch, time)`` bool: True at the steps that belong to the sequence (not padding)."""
        steps = torch.arange(self.max_length, device=self.lengths.device)
        return steps.unsqueeze(0) < self.lengths.unsqueeze(1)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LongTermTask:
        """A copy with the float tensors moved/cast (``mask``/``lengths`` only moved)."""
        if dtype is not None:
            _check_dtype(dtype)
        info = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
                for k, v in self.info.items()}
        return replace(
            self,
            inputs=self.inputs.to(device=device, dtype=dtype),
            targets=self.targets.to(device=device, dtype=dtype),
            mask=self.mask.to(device=device),
            lengths=self.lengths.to(device=device),
            info=info,
        )

    def final_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """``outputs[b, lengths[b] - 1]``: each sequence's output at its own last step."""
        return final_outputs(outputs, self.lengths)

    def score(self, outputs: torch.Tensor) -> TaskScore:
        """The task's metric (:data:`LONG_TERM_TASKS` ``[name].score``) with its defaults."""
        return LONG_TERM_TASKS[self.name].score(outputs, self)


@dataclass(frozen=True, eq=False)
class TaskScore:
    """What a task's metric returns.

    Attributes:
        success_rate: fraction of sequences processed correctly, by the source's criterion.
        step_accuracy: fraction of scored steps that are correct (equals ``success_rate`` for
            tasks scored at the last step only).
        mse: mean over scored steps of the squared error summed over output units.
        correct: ``(batch,)`` bool, which sequences are correct.
        criterion: the per-sequence criterion, in words.
    """

    success_rate: float
    step_accuracy: float
    mse: float
    correct: torch.Tensor
    criterion: str

    @property
    def error_rate(self) -> float:
        return 1.0 - self.success_rate

    @property
    def solved(self) -> bool:
        """Pascanu et al. (2013): a run is successful when under 1% of test sequences are wrong.

        (H&S 1997 instead report the number of wrong sequences out of 2560 test sequences.)
        """
        return self.error_rate < RUN_ERROR_RATE


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------
def _check_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None and seed is not None:
        raise ValueError("give either seed or generator, not both")
    return make_generator(seed, generator)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value  # type: ignore[return-value]


def _check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return float(value)


def _uniform_int(low: torch.Tensor | int, high: torch.Tensor | int, shape: tuple[int, ...],
                 gen: torch.Generator) -> torch.Tensor:
    """Integers uniform on ``[low, high]`` (inclusive; per-element bounds allowed)."""
    low_t = torch.as_tensor(low, dtype=torch.int64).expand(shape)
    high_t = torch.as_tensor(high, dtype=torch.int64).expand(shape)
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    span = (high_t - low_t + 1).to(torch.float64)
    return low_t + torch.minimum(torch.floor(u * span).to(torch.int64), high_t - low_t)


def _variable_lengths(batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """Lengths uniform on ``{T, ..., T + floor(T/10)}`` (H&S 1997: "between T and T + T/10")."""
    return _uniform_int(length, length + length // 10, (batch,), gen)


def _valid(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    return torch.arange(max_length).unsqueeze(0) < lengths.unsqueeze(1)


def _one_hot(symbols: torch.Tensor, n: int, valid: torch.Tensor) -> torch.Tensor:
    """One-hot float64 codes, all-zero where ``valid`` is False (padding)."""
    codes = torch.nn.functional.one_hot(symbols.clamp(min=0), n).to(torch.float64)
    return codes * valid.unsqueeze(-1)


def _last_step_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    mask = torch.zeros(lengths.shape[0], max_length, dtype=torch.bool)
    mask[torch.arange(lengths.shape[0]), lengths - 1] = True
    return mask


def _finish(name: str, variant: str, inputs: torch.Tensor, targets: torch.Tensor,
            mask: torch.Tensor, lengths: torch.Tensor, params: dict[str, object],
            info: dict[str, torch.Tensor], chance: float, chance_step: float,
            dtype: torch.dtype, device: torch.device | str | None) -> LongTermTask:
    return LongTermTask(
        name=name, variant=variant,
        inputs=inputs.to(device=device, dtype=dtype),
        targets=targets.to(device=device, dtype=dtype),
        mask=mask.to(device=device), lengths=lengths.to(device=device),
        params=params,
        info={k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
              for k, v in info.items()},
        chance=chance, chance_step=chance_step,
    )


def final_outputs(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(batch, O)``: ``outputs[b, lengths[b] - 1]`` from ``(batch, time, O)`` outputs.

    A causal RNN run over the zero-padded batch gives, at ``lengths[b] - 1``, exactly its output
    on the unpadded sequence ``b``, so one padded batch serves variable lengths.
    """
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"outputs must be a torch.Tensor, got {type(outputs).__name__}")
    if outputs.dim() != 3:
        raise ValueError("outputs must be a (batch, time, features) tensor, got shape "
                         f"{tuple(outputs.shape)}")
    if not isinstance(lengths, torch.Tensor) or lengths.is_floating_point() or \
            lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError("lengths must be an integer torch.Tensor")
    if lengths.dim() != 1 or lengths.shape[0] != outputs.shape[0]:
        raise ValueError(f"lengths must be (batch,) = ({outputs.shape[0]},), "
                         f"got {tuple(lengths.shape)}")
    if bool((lengths < 1).any()) or bool((lengths > outputs.shape[1]).any()):
        raise ValueError(f"lengths must lie in [1, {outputs.shape[1]}] (the time dimension)")
    rows = torch.arange(outputs.shape[0], device=outputs.device)
    return outputs[rows, lengths.to(outputs.device) - 1]


# ------------------------------------------------------------------------------------------
# Generators
# ------------------------------------------------------------------------------------------
def delayed_recall(
    batch: int,
    length: int,
    tau: int,
    *,
    features: int = 1,
    distribution: str = "bits",
    tolerance: float = 0.1,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """Delayed recall (the course's definition of a long-term dependency): ``y(t) = x(t - tau)``.

    ``x(t)``, ``t = 0..length-1``, is i.i.d. with ``features`` components: ``"bits"`` are fair
    coin flips in {0, 1}; ``"uniform"`` are U[-1, 1). The target ``y(t) = x(t - tau)`` is
    defined for ``t >= tau`` (``mask`` True there); steps ``t < tau`` carry no loss.

    Success criterion (ours; the course gives none): a step is correct when every component is
    (bits) on the right side of 0.5, or (uniform) within ``tolerance`` of the target; a
    sequence is correct when all its ``length - tau`` scored steps are.
    Chance (input-independent prediction: 0.5 for bits, 0 for uniform): per step
    ``0.5^features`` (bits) or ``tolerance^features`` (uniform, ``tolerance <= 1``); per
    sequence that to the power ``length - tau``.
    """
    check_positive_int("batch", batch)
    check_positive_int("length", length)
    check_positive_int("tau", tau)
    check_positive_int("features", features)
    _check_choice("distribution", distribution, RECALL_DISTRIBUTIONS)
    tolerance = _check_positive_float("tolerance", tolerance)
    _check_dtype(dtype)
    if tau >= length:
        raise ValueError(f"tau must be smaller than length (the target x(t - tau) needs "
                         f"t - tau >= 0 for some t < length), got tau={tau}, length={length}")
    gen = _generator(seed, generator)
    if distribution == "bits":
        x = torch.randint(0, 2, (batch, length, features), generator=gen).to(torch.float64)
        p_step = 0.5**features
    else:
        x = torch.rand(batch, length, features, generator=gen, dtype=torch.float64) * 2 - 1
        x = x.to(dtype).to(torch.float64)
        p_step = min(tolerance, 1.0) ** features
    y = torch.zeros_like(x)
    y[:, tau:] = x[:, : length - tau]
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[:, tau:] = True
    lengths = torch.full((batch,), length, dtype=torch.int64)
    params = {"length": length, "tau": tau, "features": features,
              "distribution": distribution, "tolerance": tolerance}
    return _finish("delayed_recall", distribution, x, y, mask, lengths, params, {},
                   p_step ** (length - tau), p_step, dtype, device)


def _marker_problem(name: str, batch: int, length: int, variant: str, seed: int | None,
                    generator: torch.Generator | None, dtype: torch.dtype,
                    device: torch.device | str | None) -> LongTermTask:
    check_positive_int("batch", batch)
    check_positive_int("length", length)
    _check_choice("variant", variant, MARKER_VARIANTS)
    _check_dtype(dtype)
    adding = name == "adding_problem"
    if variant == "hochreiter1997" and length < 20:
        raise ValueError(
            f"length (T) must be >= 20 for the hochreiter1997 {name}: the first marker is in the "
            f"first 10 steps and the second among the first T/2 - 1 unmarked ones, got {length}")
    if variant == "pascanu2013" and length < 10:
        raise ValueError(
            f"length (T) must be >= 10 for the pascanu2013 {name}: the first marker is in the "
            f"first T'/10 steps, got {length}")
    gen = _generator(seed, generator)
    rows = torch.arange(batch)
    lengths = _variable_lengths(batch, length, gen)
    t_max = int(lengths.max())
    valid = _valid(lengths, t_max)
    markers = torch.zeros(batch, t_max, dtype=torch.float64)
    if variant == "hochreiter1997":
        half = length // 2
        p1 = _uniform_int(0, 9, (batch,), gen)
        # Uniform over the first T/2 - 1 still unmarked pairs, i.e. {0..T/2-1} minus p1.
        k = _uniform_int(0, half - 2, (batch,), gen)
        p2 = k + (k >= p1).to(torch.int64)
        low, high = (-1.0, 1.0) if adding else (0.0, 1.0)
        values = low + (high - low) * torch.rand(batch, t_max, generator=gen, dtype=torch.float64)
        markers[:, 0] = -1.0
        markers[rows, lengths - 1] = -1.0
        # "In the rare case where the first pair gets marked, we set X1 to zero" (adding) /
        # "to 1.0" (multiplication): the neutral element of the operation.
        first_marked = (p1 == 0) | (p2 == 0)
        values[first_marked, 0] = 0.0 if adding else 1.0
        p_first = 0.1 + 0.9 / (half - 1)
    else:
        p1 = _uniform_int(0, lengths // 10 - 1, (batch,), gen)
        p2 = _uniform_int(lengths // 10, lengths // 2 - 1, (batch,), gen)
        values = torch.rand(batch, t_max, generator=gen, dtype=torch.float64)
        p_first = 0.0
    markers[rows, p1] = 1.0
    markers[rows, p2] = 1.0
    values = (values * valid).to(dtype).to(torch.float64)  # what the network will see
    x1, x2 = values[rows, p1], values[rows, p2]
    if adding:
        target = 0.5 + (x1 + x2) / 4.0 if variant == "hochreiter1997" else (x1 + x2) / 2.0
    else:
        target = x1 * x2
    inputs = torch.stack([values, markers * valid], dim=-1)
    targets = torch.zeros(batch, t_max, 1, dtype=torch.float64)
    targets[rows, lengths - 1, 0] = target
    mask = _last_step_mask(lengths, t_max)
    chance = _marker_chance(adding, variant, p_first)
    info = {"positions": torch.stack([p1, p2], 1), "values": torch.stack([x1, x2], 1)}
    params = {"length": length, "variant": variant}
    return _finish(name, variant, inputs, targets, mask, lengths, params, info, chance, chance,
                   dtype, device)


def _marker_chance(adding: bool, variant: str, p_first: float) -> float:
    """Success rate of the best constant prediction (derivations in docs/tasks_long_term.md)."""
    if adding and variant == "hochreiter1997":
        # Predict 0.5: correct iff |S| < 0.16 with S = X1 + X2 (triangular on [-2, 2]:
        # P = a - a^2/4) or, when the first pair is marked, S = X2 ~ U[-1, 1] (P = a).
        a = 4 * HS_ABS_TOLERANCE
        return p_first * a + (1 - p_first) * (a - a * a / 4)
    if adding:
        # Predict 0.5: correct iff |X1 + X2 - 1| <= 0.4, triangular on [-1, 1]: 2a - a^2.
        a = 2 * math.sqrt(PASCANU_SQ_TOLERANCE)
        return 2 * a - a * a
    # Product Z = X1 X2 of two U[0, 1] has density -ln z, decreasing, so the best window of
    # half-width w is [0, 2w]: P = 2w (1 - ln 2w). A marked first pair leaves Z = X2 ~ U[0, 1].
    w = HS_ABS_TOLERANCE if variant == "hochreiter1997" else math.sqrt(PASCANU_SQ_TOLERANCE)
    return p_first * 2 * w + (1 - p_first) * 2 * w * (1 - math.log(2 * w))


def adding_problem(
    batch: int,
    length: int = 100,
    *,
    variant: str = "hochreiter1997",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """The adding problem. Inputs have two channels, ``(value, marker)``; one target at the end.

    ``variant="hochreiter1997"`` (H&S 1997, experiment 4): each sequence has a random length
    ``L`` uniform on ``{T, ..., T + floor(T/10)}`` (``T = length``). Values are U[-1, 1).
    Exactly two pairs are marked (marker 1): the first uniformly among the first 10 (positions
    0..9), the second uniformly among "the first T/2 - 1 still unmarked pairs", i.e. positions
    ``{0, ..., T//2 - 1}`` minus the first one (so the minimal lag to the end is T/2, as in
    the paper's table). All other markers are 0, except at the first and last pairs (positions 0
    and ``L - 1``), which are -1 unless marked. If position 0 is marked its value is set to 0
    (the paper's rule, applied to whichever marker lands there). Target at ``L - 1``:
    ``0.5 + (X1 + X2) / 4``. Correct when ``|error| < 0.04`` there.
    Chance (predict 0.5): about 0.154 (0.1544 for T = 100; exact value in ``task.chance``).

    ``variant="pascanu2013"`` (Pascanu et al. 2013, supplementary material and code; after
    Martens & Sutskever 2011): ``L`` as above; values U[0, 1); markers 1 at one position
    uniform on ``[0, L//10)`` and one uniform on ``[L//10, L//2)``, 0 everywhere else (no -1
    markers). Target ``(X1 + X2) / 2``. A sequence is wrong when its squared error exceeds 0.04
    (so correct when ``|error| <= 0.2``; this is what the paper and its code use, which makes
    chance 0.64). A run is solved when under 1% of test sequences are wrong
    (:attr:`TaskScore.solved`). Their code draws the length once per batch and from
    ``[T, T + T/10)``; here each sequence draws its own length from the paper's closed range.

    ``info``: ``positions`` ``(batch, 2)`` (first, second marker) and ``values`` (X1, X2).
    """
    return _marker_problem("adding_problem", batch, length, variant, seed, generator, dtype,
                           device)


def multiplication_problem(
    batch: int,
    length: int = 100,
    *,
    variant: str = "hochreiter1997",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """The multiplication problem: as :func:`adding_problem`, with target ``X1 * X2``.

    ``variant="hochreiter1997"`` (H&S 1997, experiment 5): values are U[0, 1); the marker
    scheme and lengths are those of experiment 4; if position 0 is marked its value is set to
    1.0 (the paper sets X1 to 1.0, the neutral element). Correct when ``|error| < 0.04``.
    Chance (predict 0.04): about 0.26 (0.258 for T = 100; exact value in ``task.chance``).

    ``variant="pascanu2013"``: the pascanu2013 adding problem with target ``X1 * X2``; wrong
    when the squared error exceeds 0.04. Chance (predict 0.2): ``0.4 (1 - ln 0.4) = 0.767``.

    The exact H&S 1997 wording (value range, the rule for a marked first pair) is given from
    the paper as best we can check it; see ``docs/tasks_long_term.md``.
    """
    return _marker_problem("multiplication_problem", batch, length, variant, seed, generator,
                           dtype, device)


def _temporal_order_windows(variant: str, bits: int, length: int) -> list[tuple[int, int]]:
    """0-based inclusive windows of the relevant symbols."""
    if variant == "hochreiter1997":
        # The paper's 1-based positions for T = 100, scaled by T/100 (exact at T = 100).
        return [((a * length + 50) // 100 - 1, (b * length + 50) // 100 - 1)
                for a, b in _HS_WINDOWS[bits]]
    width = length // 10
    return [((s * length) // 10, (s * length) // 10 + width - 1) for s in _PASCANU_STARTS[bits]]


def _temporal_order_windows_ok(variant: str, bits: int, length: int) -> bool:
    windows = _temporal_order_windows(variant, bits, length)
    first = 1 if variant == "hochreiter1997" else 0  # position 0 holds the start symbol E
    last = length - 2 if variant == "hochreiter1997" else length - 1  # L - 1 holds B
    if any(hi < lo for lo, hi in windows):
        return False
    if windows[0][0] < first or windows[-1][1] > last:
        return False
    return all(windows[k][1] < windows[k + 1][0] for k in range(len(windows) - 1))


def temporal_order(
    batch: int,
    length: int = 100,
    *,
    bits: int = 2,
    variant: str = "hochreiter1997",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """Temporal order: classify the order of ``bits`` (2 or 3) relevant symbols X/Y.

    Inputs are one-hot symbols; alphabet (index: symbol) ``0-3: a, b, c, d`` (distractors),
    ``4: X``, ``5: Y``, and for hochreiter1997 also ``6: B`` (trigger) and ``7: E`` (start).
    The target, at the last step only, is one-hot over ``2^bits`` classes:
    ``class = sum_k s_k 2^(bits-1-k)`` with ``s_k = 0`` for X and 1 for Y, first symbol most
    significant, i.e. H&S's order XX->Q, XY->R, YX->S, YY->U (and Q, R, S, U, V, A, B, C for
    three symbols). Each ``s_k`` is a fair coin, so classes are uniform.

    ``variant="hochreiter1997"`` (H&S 1997, experiments 6a: bits=2, 6b: bits=3): length ``L``
    uniform on ``{T, ..., T + floor(T/10)}``; position 0 is E, position ``L - 1`` is B, the
    relevant symbols are at 1-based positions ``t1 in [10, 20]``, ``t2 in [50, 60]`` (6a) or
    ``[10, 20]``, ``[33, 43]``, ``[66, 76]`` (6b) for T = 100 (for other T these windows are
    scaled by T/100 and rounded: our extension), all other positions uniform distractors.
    Correct when every output unit is within 0.3 of its target ("the final absolute error of
    all output units is below 0.3").

    ``variant="pascanu2013"`` (Pascanu et al. 2013 and code; after Martens & Sutskever 2011):
    fixed length T, six symbols (no E/B), relevant symbol k uniform in the window starting at
    ``floor(s_k T/10)`` of width ``floor(T/10)``, with ``s = (1, 5)`` (2 bits) or ``(1, 3, 6)``
    (3 bits). Correct when the argmax of the output is the target class. (Their code numbers
    the classes with the first symbol least significant: a relabelling.)

    Chance: ``1 / 2^bits`` under both criteria (a constant one-hot guess of one class).
    ``info``: ``positions`` ``(batch, bits)``, ``labels`` ``(batch,)``.
    """
    check_positive_int("batch", batch)
    check_positive_int("length", length)
    _check_choice("variant", variant, TEMPORAL_ORDER_VARIANTS)
    if bits not in (2, 3):
        raise ValueError(f"bits must be 2 (H&S experiment 6a) or 3 (6b), got {bits!r}")
    _check_dtype(dtype)
    if not _temporal_order_windows_ok(variant, bits, length):
        shortest = next(t for t in range(1, 1000) if _temporal_order_windows_ok(variant, bits, t))
        raise ValueError(
            f"length={length} is too short for the {variant} temporal order with {bits} bits: "
            f"the windows of the relevant symbols would overlap or leave the sequence; "
            f"use length >= {shortest}")
    gen = _generator(seed, generator)
    rows = torch.arange(batch)
    if variant == "hochreiter1997":
        lengths, n_symbols = _variable_lengths(batch, length, gen), 8
    else:
        lengths, n_symbols = torch.full((batch,), length, dtype=torch.int64), 6
    t_max = int(lengths.max())
    valid = _valid(lengths, t_max)
    symbols = torch.randint(0, 4, (batch, t_max), generator=gen)
    if variant == "hochreiter1997":
        symbols[:, 0] = _START
        symbols[rows, lengths - 1] = _TRIGGER
    windows = _temporal_order_windows(variant, bits, length)
    positions = torch.stack([_uniform_int(lo, hi, (batch,), gen) for lo, hi in windows], 1)
    which = torch.randint(0, 2, (batch, bits), generator=gen)
    symbols[rows.unsqueeze(1), positions] = _X + which
    labels = (which * (2 ** torch.arange(bits - 1, -1, -1))).sum(1)
    inputs = _one_hot(symbols, n_symbols, valid)
    targets = torch.zeros(batch, t_max, 2**bits, dtype=torch.float64)
    targets[rows, lengths - 1, labels] = 1.0
    mask = _last_step_mask(lengths, t_max)
    chance = 1.0 / 2**bits
    params = {"length": length, "bits": bits, "variant": variant}
    info = {"positions": positions, "labels": labels}
    return _finish("temporal_order", variant, inputs, targets, mask, lengths, params, info,
                   chance, chance, dtype, device)


def random_permutation(
    batch: int,
    length: int = 100,
    *,
    n_symbols: int = 100,
    variant: str = "pascanu2013",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """Random permutation problem (Martens & Sutskever 2011; Pascanu et al. 2013): remember the
    first symbol over ``length - 1`` random ones.

    After H&S 1997 experiment 2 (noise-free sequences with long time lags), in the form of
    Martens & Sutskever's and Pascanu's code: an alphabet of ``n_symbols`` (100) one-hot
    symbols; ``x(0)`` is symbol 0 or 1 (a fair coin), ``x(1..T-1)`` are i.i.d. uniform on
    ``{2, ..., n_symbols - 1}`` (despite the name, not a permutation). Fixed length ``T``.
    At the end the first symbol comes back: ``y(T - 1) = x(0)``.

    ``variant="pascanu2013"``: that is the only target (``mask`` at the last step only).
    ``variant="martens2011"``: next-symbol prediction at every step, ``y(t) = x(t + 1)`` for
    ``t < T - 1`` (``mask`` all True; only the last step is predictable).
    Metric (both): correct when the argmax of the output at the last step is ``x(0)``.
    Chance: 0.5 (guess symbol 0 or 1).
    """
    check_positive_int("batch", batch)
    check_positive_int("length", length)
    check_positive_int("n_symbols", n_symbols)
    _check_choice("variant", variant, PERMUTATION_VARIANTS)
    _check_dtype(dtype)
    if length < 2:
        raise ValueError(f"length must be >= 2 (a first symbol and a last step), got {length}")
    if n_symbols < 3:
        raise ValueError(f"n_symbols must be >= 3 (two symbols to remember and at least one "
                         f"distractor), got {n_symbols}")
    gen = _generator(seed, generator)
    first = torch.randint(0, 2, (batch,), generator=gen)
    rest = torch.randint(2, n_symbols, (batch, length - 1), generator=gen)
    sequence = torch.cat([first.unsqueeze(1), rest, first.unsqueeze(1)], dim=1)
    valid = torch.ones(batch, length, dtype=torch.bool)
    inputs = _one_hot(sequence[:, :-1], n_symbols, valid)
    targets = _one_hot(sequence[:, 1:], n_symbols, valid)
    lengths = torch.full((batch,), length, dtype=torch.int64)
    if variant == "pascanu2013":
        mask = _last_step_mask(lengths, length)
        targets = targets * mask.unsqueeze(-1)
    else:
        mask = valid.clone()
    params = {"length": length, "n_symbols": n_symbols, "variant": variant}
    info = {"labels": first}
    return _finish("random_permutation", variant, inputs, targets, mask, lengths, params, info,
                   0.5, 0.5, dtype, device)


def noiseless_memorization(
    batch: int,
    delay: int = 100,
    *,
    n_symbols: int = 2,
    pattern_length: int = 5,
    all_patterns: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LongTermTask:
    """Noiseless memorization (Martens & Sutskever 2011; Pascanu et al. 2013 and code).

    A pattern of ``P = pattern_length`` symbols from ``n_symbols`` is shown, then ``delay`` (T
    in the papers) blank steps, then a trigger; the pattern must be reproduced from the trigger
    step on. Total length ``delay + 2P``. Input channels ``n_symbols + 2``: the symbols, then
    *blank*, then *trigger*; output channels ``n_symbols + 1``: the symbols, then *blank*.

    - steps ``0..P-1``: input the pattern; target blank;
    - steps ``P..P+delay-1``: input blank; target blank;
    - step ``P+delay``: input trigger; target the pattern's first symbol;
    - steps ``P+delay+1..delay+2P-1``: input blank; target the rest of the pattern.

    This is Pascanu's code (the trigger comes at the first recall step; Martens & Sutskever's
    code raises it one step earlier). The loss is on every step (``mask`` all True); a sequence
    is correct when the argmax is right at every step. The "5-bit" problem is
    ``n_symbols=2, pattern_length=5`` (the default; 32 patterns, ``all_patterns=True`` puts
    each once in a batch of 32, in lexicographic order); the "20-bit" one is
    ``n_symbols=5, pattern_length=10`` (log2(5^10) = 23.2 bits).
    Chance: ``n_symbols^-P`` (blanks are predictable from the clock; the pattern is a guess);
    per step ``(delay + P + P / n_symbols) / (delay + 2P)``.
    """
    check_positive_int("batch", batch)
    check_positive_int("delay", delay)
    check_positive_int("n_symbols", n_symbols)
    check_positive_int("pattern_length", pattern_length)
    _check_dtype(dtype)
    if n_symbols < 2:
        raise ValueError(f"n_symbols must be >= 2 (one symbol carries no information), "
                         f"got {n_symbols}")
    gen = _generator(seed, generator)
    p = pattern_length
    if all_patterns:
        if batch != n_symbols**p:
            raise ValueError(f"all_patterns needs batch == n_symbols ** pattern_length = "
                             f"{n_symbols**p}, got batch={batch}")
        digits = n_symbols ** torch.arange(p - 1, -1, -1)
        pattern = (torch.arange(batch).unsqueeze(1) // digits) % n_symbols
    else:
        pattern = torch.randint(0, n_symbols, (batch, p), generator=gen)
    total = delay + 2 * p
    blank_in, trigger = n_symbols, n_symbols + 1
    blank_out = n_symbols
    x_sym = torch.full((batch, total), blank_in, dtype=torch.int64)
    x_sym[:, :p] = pattern
    x_sym[:, p + delay] = trigger
    y_sym = torch.full((batch, total), blank_out, dtype=torch.int64)
    y_sym[:, p + delay:] = pattern
    valid = torch.ones(batch, total, dtype=torch.bool)
    inputs = _one_hot(x_sym, n_symbols + 2, valid)
    targets = _one_hot(y_sym, n_symbols + 1, valid)
    lengths = torch.full((batch,), total, dtype=torch.int64)
    params = {"delay": delay, "n_symbols": n_symbols, "pattern_length": p,
              "all_patterns": all_patterns}
    chance = float(n_symbols) ** -p
    chance_step = (delay + p + p / n_symbols) / total
    return _finish("noiseless_memorization", f"{n_symbols}x{p}", inputs, targets, valid,
                   lengths, params, {"pattern": pattern}, chance, chance_step, dtype, device)


# ------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------
def _check_task(task: object, name: str) -> LongTermTask:
    if not isinstance(task, LongTermTask):
        raise TypeError(f"task must be a LongTermTask, got {type(task).__name__}")
    if task.name != name:
        raise ValueError(f"this metric scores {name!r} tasks, got a {task.name!r} task")
    return task


def _scored(outputs: object, task: LongTermTask, score_mask: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outputs and targets at the scored steps, ``(N, O)`` float64, and their sequence rows."""
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"outputs must be a torch.Tensor, got {type(outputs).__name__}")
    if not outputs.is_floating_point():
        raise TypeError(f"outputs must be a floating-point tensor, got {outputs.dtype}")
    if outputs.device != task.targets.device:
        raise ValueError(f"outputs are on {outputs.device} but the task is on "
                         f"{task.targets.device}; move one of them")
    batch, t_max, n_out = task.targets.shape
    per_row = score_mask.sum(1)
    if outputs.dim() == 2:
        if not bool((per_row == 1).all()):
            raise ValueError("this task scores several steps per sequence: pass the outputs "
                             f"of every step, shape {(batch, t_max, n_out)}")
        if tuple(outputs.shape) != (batch, n_out):
            raise ValueError(f"final outputs must have shape {(batch, n_out)} "
                             f"(batch, outputs), got {tuple(outputs.shape)}")
        out = outputs
    elif outputs.dim() == 3:
        if tuple(outputs.shape) != (batch, t_max, n_out):
            raise ValueError(f"outputs must have shape {(batch, t_max, n_out)} "
                             f"(batch, time, outputs) like the targets, got "
                             f"{tuple(outputs.shape)}")
        out = outputs[score_mask]
    else:
        raise ValueError("outputs must be (batch, time, outputs) or, for tasks scored at the "
                         f"last step, (batch, outputs); got shape {tuple(outputs.shape)}")
    out = out.detach().to(torch.float64)
    if not bool(torch.isfinite(out).all()):
        n_nan = int(torch.isnan(out).sum())
        raise ValueError(f"outputs contain non-finite values at scored steps ({n_nan} NaN, "
                         f"{int(torch.isinf(out).sum())} inf)")
    target = task.targets[score_mask].to(torch.float64)
    rows = score_mask.nonzero()[:, 0]
    return out, target, rows


def _summarise(step_ok: torch.Tensor, out: torch.Tensor, target: torch.Tensor,
               rows: torch.Tensor, batch: int, criterion: str) -> TaskScore:
    wrong = torch.zeros(batch, dtype=torch.int64, device=rows.device)
    wrong.index_add_(0, rows, (~step_ok).to(torch.int64))
    correct = wrong == 0
    return TaskScore(
        success_rate=float(correct.to(torch.float64).mean()),
        step_accuracy=float(step_ok.to(torch.float64).mean()),
        mse=float((out - target).pow(2).sum(1).mean()),
        correct=correct,
        criterion=criterion,
    )


def _marker_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    out, target, rows = _scored(outputs, task, task.mask)
    if task.variant == "hochreiter1997":
        ok = ((out - target).abs() < HS_ABS_TOLERANCE).all(1)
        criterion = f"|error| < {HS_ABS_TOLERANCE} at the last step (H&S 1997)"
    else:
        ok = (out - target).pow(2).sum(1) <= PASCANU_SQ_TOLERANCE
        criterion = f"squared error <= {PASCANU_SQ_TOLERANCE} at the last step (Pascanu 2013)"
    return _summarise(ok, out, target, rows, task.batch_size, criterion)


def adding_problem_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    """Score an :func:`adding_problem` batch; ``outputs`` ``(batch, time, 1)`` or ``(batch, 1)``.

    hochreiter1997: correct when ``|o - y| < 0.04`` at the last step; pascanu2013: correct when
    ``(o - y)^2 <= 0.04``.
    """
    return _marker_score(outputs, _check_task(task, "adding_problem"))


def multiplication_problem_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    """Score a :func:`multiplication_problem` batch (criteria as :func:`adding_problem_score`)."""
    return _marker_score(outputs, _check_task(task, "multiplication_problem"))


def temporal_order_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    """Score a :func:`temporal_order` batch: ``outputs`` ``(batch, time, 2^bits)`` or final.

    hochreiter1997: correct when every output unit is within 0.3 of the one-hot target;
    pascanu2013: correct when the argmax is the target class. Outputs are taken as they are
    (probabilities, or any scores for the argmax criterion).
    """
    task = _check_task(task, "temporal_order")
    out, target, rows = _scored(outputs, task, task.mask)
    if task.variant == "hochreiter1997":
        ok = ((out - target).abs() < HS_CLASS_TOLERANCE).all(1)
        criterion = f"every output unit within {HS_CLASS_TOLERANCE} of its target (H&S 1997)"
    else:
        ok = out.argmax(1) == target.argmax(1)
        criterion = "argmax at the last step is the target class (Pascanu 2013)"
    return _summarise(ok, out, target, rows, task.batch_size, criterion)


def random_permutation_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    """Score a :func:`random_permutation` batch: correct when the argmax of the output at the
    last step is the first symbol (whatever the loss mask; the other steps are unpredictable)."""
    task = _check_task(task, "random_permutation")
    last = _last_step_mask(task.lengths.cpu(), task.max_length).to(task.mask.device)
    out, target, rows = _scored(outputs, task, last)
    ok = out.argmax(1) == target.argmax(1)
    return _summarise(ok, out, target, rows, task.batch_size,
                      "argmax at the last step is the first symbol")


def noiseless_memorization_score(outputs: torch.Tensor, task: LongTermTask) -> TaskScore:
    """Score a :func:`noiseless_memorization` batch (``outputs`` ``(batch, time, n + 1)``):
    a sequence is correct when the argmax is right at every step (Pascanu's code)."""
    task = _check_task(task, "noiseless_memorization")
    out, target, rows = _scored(outputs, task, task.mask)
    ok = out.argmax(1) == target.argmax(1)
    return _summarise(ok, out, target, rows, task.batch_size, "argmax right at every step")


def delayed_recall_score(
    outputs: torch.Tensor, task: LongTermTask, tolerance: float | None = None
) -> TaskScore:
    """Score a :func:`delayed_recall` batch (``outputs`` ``(batch, time, features)``).

    A step ``t >= tau`` is correct when every component is on the right side of 0.5 (bits) or
    within ``tolerance`` (default: the task's) of ``x(t - tau)`` (uniform); a sequence is
    correct when all its scored steps are.
    """
    task = _check_task(task, "delayed_recall")
    out, target, rows = _scored(outputs, task, task.mask)
    if task.variant == "bits":
        ok = ((out > 0.5) == (target > 0.5)).all(1)
        criterion = "every bit on the right side of 0.5 at every step t >= tau"
    else:
        tol = float(task.params["tolerance"]) if tolerance is None else \
            _check_positive_float("tolerance", tolerance)
        ok = ((out - target).abs() < tol).all(1)
        criterion = f"|error| < {tol} at every step t >= tau"
    return _summarise(ok, out, target, rows, task.batch_size, criterion)


# ------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------
def _loss_inputs(outputs: object, task: LongTermTask) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(task, LongTermTask):
        raise TypeError(f"task must be a LongTermTask, got {type(task).__name__}")
    if not isinstance(outputs, torch.Tensor) or not outputs.is_floating_point():
        raise TypeError("outputs must be a floating-point torch.Tensor")
    batch, t_max, n_out = task.targets.shape
    if outputs.dim() == 2 and tuple(outputs.shape) == (batch, n_out) and \
            bool((task.mask.sum(1) == 1).all()):
        return outputs, task.targets[task.mask].to(outputs.dtype)
    if tuple(outputs.shape) != (batch, t_max, n_out):
        raise ValueError(f"outputs must have shape {(batch, t_max, n_out)} like the targets "
                         f"(or {(batch, n_out)} for a task with one scored step), "
                         f"got {tuple(outputs.shape)}")
    return outputs[task.mask], task.targets[task.mask].to(outputs.dtype)


def masked_mse(outputs: torch.Tensor, task: LongTermTask) -> torch.Tensor:
    """Differentiable loss: mean over the masked steps of ``||o(t) - y(t)||^2``.

    Pascanu's code uses this (summed over output units, averaged over sequences) for the
    adding and multiplication problems.
    """
    out, target = _loss_inputs(outputs, task)
    return (out - target).pow(2).sum(-1).mean()


def masked_cross_entropy(logits: torch.Tensor, task: LongTermTask) -> torch.Tensor:
    """Differentiable loss for the symbol tasks: mean over the masked steps of
    ``-sum_k y_k log softmax(logits)_k`` (targets are one-hot)."""
    out, target = _loss_inputs(logits, task)
    return -(target * torch.log_softmax(out, dim=-1)).sum(-1).mean()


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LongTermTaskSpec:
    """A registered task: its generator, its metric, its loss and its source."""

    name: str
    generate: Callable[..., LongTermTask]
    score: Callable[..., TaskScore]
    loss: Callable[[torch.Tensor, LongTermTask], torch.Tensor]
    source: str
    variants: tuple[str, ...]


LONG_TERM_TASKS: dict[str, LongTermTaskSpec] = {
    spec.name: spec
    for spec in (
        LongTermTaskSpec("delayed_recall", delayed_recall, delayed_recall_score, masked_mse,
                         "the course: y(t) = x(t - tau)", RECALL_DISTRIBUTIONS),
        LongTermTaskSpec("adding_problem", adding_problem, adding_problem_score, masked_mse,
                         "Hochreiter & Schmidhuber 1997 exp. 4; Pascanu et al. 2013",
                         MARKER_VARIANTS),
        LongTermTaskSpec("multiplication_problem", multiplication_problem,
                         multiplication_problem_score, masked_mse,
                         "Hochreiter & Schmidhuber 1997 exp. 5; Pascanu et al. 2013",
                         MARKER_VARIANTS),
        LongTermTaskSpec("temporal_order", temporal_order, temporal_order_score,
                         masked_cross_entropy,
                         "Hochreiter & Schmidhuber 1997 exp. 6a/6b; Pascanu et al. 2013",
                         TEMPORAL_ORDER_VARIANTS),
        LongTermTaskSpec("random_permutation", random_permutation, random_permutation_score,
                         masked_cross_entropy,
                         "Martens & Sutskever 2011; Pascanu et al. 2013", PERMUTATION_VARIANTS),
        LongTermTaskSpec("noiseless_memorization", noiseless_memorization,
                         noiseless_memorization_score, masked_cross_entropy,
                         "Martens & Sutskever 2011; Pascanu et al. 2013", ()),
    )
}
