"""Long-term-dependency tasks: every target is recomputed here from the inputs alone (decoding
markers and symbols the way a reader of the papers would), every chance level is checked by
Monte Carlo against its closed form, and every metric against hand-made right and wrong
predictions."""

import math

import pytest
import scipy.integrate
import scipy.stats
import torch

from rnnlab.models.elman import ElmanRNN
from rnnlab.tasks.long_term import (
    LONG_TERM_TASKS,
    LongTermTask,
    adding_problem,
    adding_problem_score,
    delayed_recall,
    delayed_recall_score,
    final_outputs,
    masked_cross_entropy,
    masked_mse,
    multiplication_problem,
    multiplication_problem_score,
    noiseless_memorization,
    noiseless_memorization_score,
    random_permutation,
    random_permutation_score,
    temporal_order,
    temporal_order_score,
)

MAKERS = {
    "recall_bits": lambda **kw: delayed_recall(6, 25, 4, **kw),
    "recall_uniform": lambda **kw: delayed_recall(6, 25, 4, features=2,
                                                  distribution="uniform", **kw),
    "adding_hs": lambda **kw: adding_problem(6, 40, **kw),
    "adding_pascanu": lambda **kw: adding_problem(6, 40, variant="pascanu2013", **kw),
    "mult_hs": lambda **kw: multiplication_problem(6, 40, **kw),
    "mult_pascanu": lambda **kw: multiplication_problem(6, 40, variant="pascanu2013", **kw),
    "order_hs2": lambda **kw: temporal_order(6, 50, **kw),
    "order_hs3": lambda **kw: temporal_order(6, 50, bits=3, **kw),
    "order_pascanu2": lambda **kw: temporal_order(6, 50, variant="pascanu2013", **kw),
    "order_pascanu3": lambda **kw: temporal_order(6, 50, bits=3, variant="pascanu2013", **kw),
    "perm_pascanu": lambda **kw: random_permutation(6, 30, n_symbols=20, **kw),
    "perm_martens": lambda **kw: random_permutation(6, 30, n_symbols=20, variant="martens2011",
                                                    **kw),
    "memo_5bit": lambda **kw: noiseless_memorization(6, 20, **kw),
    "memo_20bit": lambda **kw: noiseless_memorization(6, 20, n_symbols=5, pattern_length=10,
                                                      **kw),
}


def binomial_close(observed: float, p: float, n: int, sigmas: float = 4.5) -> bool:
    return abs(observed - p) <= sigmas * math.sqrt(p * (1 - p) / n) + 1e-12


def uniform_counts_ok(counts: torch.Tensor) -> bool:
    """Chi-square goodness of fit to the uniform distribution (scipy as the reference)."""
    return scipy.stats.chisquare(counts.double().numpy()).pvalue > 1e-4


# ------------------------------------------------------------------------------------------
# Properties every task shares
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(MAKERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layout_dtype_padding(key, dtype):
    task = MAKERS[key](seed=3, dtype=dtype, device="cpu")
    b, t_max, _ = task.inputs.shape
    assert task.inputs.dtype == task.targets.dtype == dtype
    assert task.targets.shape[:2] == (b, t_max) and task.mask.shape == (b, t_max)
    assert task.mask.dtype == torch.bool and task.lengths.dtype == torch.int64
    assert int(task.lengths.max()) == t_max and bool((task.lengths >= 1).all())
    valid = torch.arange(t_max) < task.lengths.unsqueeze(1)
    assert torch.equal(task.valid, valid)
    assert not bool(task.mask[~valid].any())  # no loss on padding
    assert bool((task.inputs[~valid] == 0).all()) and bool((task.targets[~task.mask] == 0).all())
    assert bool(task.mask.any(1).all())  # every sequence is scored somewhere
    assert task.name in LONG_TERM_TASKS
    assert task.variant in LONG_TERM_TASKS[task.name].variants or \
        not LONG_TERM_TASKS[task.name].variants
    assert 0.0 < task.chance <= task.chance_step <= 1.0


@pytest.mark.parametrize("key", sorted(MAKERS))
def test_seeded(key):
    make = MAKERS[key]
    a, b = make(seed=11), make(seed=11)
    c = make(generator=torch.Generator().manual_seed(11))
    for x, y in ((a, b), (a, c)):
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
        assert torch.equal(x.mask, y.mask) and torch.equal(x.lengths, y.lengths)
    d = make(seed=12)
    assert d.inputs.shape != a.inputs.shape or not torch.equal(d.inputs, a.inputs)
    assert torch.equal(make().inputs, make(seed=0).inputs)  # the default seed is 0
    with pytest.raises(ValueError, match="not both"):
        make(seed=1, generator=torch.Generator())
    with pytest.raises(TypeError, match="seed"):
        make(seed=1.5)


@pytest.mark.parametrize("key", sorted(MAKERS))
def test_perfect_prediction_scores_one(key):
    task = MAKERS[key](seed=5)
    score = task.score(task.targets)
    assert score.success_rate == 1.0 and score.step_accuracy == 1.0 and score.mse == 0.0
    assert score.correct.shape == (task.batch_size,) and bool(score.correct.all())
    assert score.solved and score.error_rate == 0.0
    if bool((task.mask.sum(1) == 1).all()):  # last-step tasks also take final outputs
        final = task.final_outputs(task.targets)
        assert task.score(final).success_rate == 1.0


def test_to_moves_and_casts():
    task = adding_problem(4, 30, seed=1)
    t64 = task.to(dtype=torch.float64)
    assert t64.inputs.dtype == torch.float64 and t64.info["values"].dtype == torch.float64
    assert t64.info["positions"].dtype == torch.int64
    assert torch.equal(t64.inputs.float(), task.inputs) and torch.equal(t64.mask, task.mask)
    with pytest.raises(TypeError, match="dtype"):
        task.to(dtype=torch.int32)


# ------------------------------------------------------------------------------------------
# Delayed recall
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distribution", ["bits", "uniform"])
def test_delayed_recall_definition(distribution):
    length, tau = 30, 7
    task = delayed_recall(5, length, tau, features=3, distribution=distribution, seed=2)
    x, y = task.inputs, task.targets
    for b in range(5):
        for t in range(length):
            assert bool(task.mask[b, t]) == (t >= tau)
            if t >= tau:
                assert torch.equal(y[b, t], x[b, t - tau])
    if distribution == "bits":
        assert set(x.unique().tolist()) == {0.0, 1.0}
    else:
        assert float(x.min()) >= -1.0 and float(x.max()) < 1.0 and float(x.min()) < -0.9


def test_delayed_recall_metric_known_answers():
    task = delayed_recall(4, 12, 3, seed=0)
    out = task.targets.clone()
    out[0, 3] = 1.0 - out[0, 3]  # one wrong bit in sequence 0
    s = delayed_recall_score(out, task)
    assert s.success_rate == 0.75 and s.step_accuracy == pytest.approx(1 - 1 / (4 * 9))
    assert s.correct.tolist() == [False, True, True, True]
    assert s.mse == pytest.approx(1 / (4 * 9))
    uni = delayed_recall(4, 12, 3, distribution="uniform", seed=0, dtype=torch.float64)
    assert delayed_recall_score(uni.targets + 0.09, uni).success_rate == 1.0
    assert delayed_recall_score(uni.targets + 0.11, uni).success_rate == 0.0
    assert delayed_recall_score(uni.targets + 0.11, uni, tolerance=0.2).success_rate == 1.0


def test_delayed_recall_chance_by_monte_carlo():
    n = 20000
    bits = delayed_recall(n, 4, 1, features=2, seed=1)  # 3 scored steps, 2 bits each
    s = delayed_recall_score(torch.full_like(bits.targets, 0.7), bits)
    assert bits.chance_step == 0.25 and bits.chance == pytest.approx(0.25**3)
    assert binomial_close(s.step_accuracy, bits.chance_step, 3 * n)
    assert binomial_close(s.success_rate, bits.chance, n)
    uni = delayed_recall(n, 3, 1, distribution="uniform", tolerance=0.3, seed=1)
    s = delayed_recall_score(torch.zeros_like(uni.targets), uni)
    assert binomial_close(s.step_accuracy, 0.3, 2 * n) and uni.chance == pytest.approx(0.09)
    assert binomial_close(s.success_rate, uni.chance, n)


def test_delayed_recall_bad_input():
    with pytest.raises(ValueError, match="tau must be smaller than length"):
        delayed_recall(2, 10, 10)
    with pytest.raises(ValueError, match="tau"):
        delayed_recall(2, 10, 0)
    with pytest.raises(ValueError, match="batch"):
        delayed_recall(0, 10, 2)
    with pytest.raises(ValueError, match="distribution"):
        delayed_recall(2, 10, 2, distribution="gauss")
    with pytest.raises(ValueError, match="tolerance"):
        delayed_recall(2, 10, 2, tolerance=0.0)
    task = delayed_recall(2, 10, 2)
    with pytest.raises(ValueError, match="several steps"):
        delayed_recall_score(torch.zeros(2, 1), task)


# ------------------------------------------------------------------------------------------
# Adding and multiplication
# ------------------------------------------------------------------------------------------
def decode_markers(task, b):
    """(values, markers, marked positions, L) of sequence b, read from the inputs only."""
    n = int(task.lengths[b])
    values = task.inputs[b, :n, 0].double()
    markers = task.inputs[b, :n, 1].double()
    marked = (markers == 1).nonzero().flatten().tolist()
    return values, markers, marked, n


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adding_hochreiter_definition(dtype):
    big_t = 40
    task = adding_problem(300, big_t, seed=4, dtype=dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    first_marked = 0
    for b in range(task.batch_size):
        values, markers, marked, n = decode_markers(task, b)
        assert big_t <= n <= big_t + big_t // 10
        assert len(marked) == 2
        assert max(marked) <= big_t // 2 - 1 and min(marked) <= 9
        assert set(task.info["positions"][b].tolist()) == set(marked)
        assert int(task.info["positions"][b, 0]) <= 9
        assert n - 1 - max(marked) >= big_t // 2  # the paper's minimal lag T/2
        expected = torch.zeros(n, dtype=torch.float64)
        expected[0], expected[n - 1] = -1.0, -1.0
        expected[marked] = 1.0
        assert torch.equal(markers, expected)
        assert float(values.min()) >= -1.0 and float(values.max()) < 1.0
        if 0 in marked:
            first_marked += 1
            assert float(values[0]) == 0.0
        target = 0.5 + (values[marked[0]] + values[marked[1]]) / 4.0
        assert abs(float(task.targets[b, n - 1, 0]) - float(target)) < tol
        assert task.mask[b].nonzero().flatten().tolist() == [n - 1]
    assert first_marked > 0  # the special case was exercised


def test_adding_hochreiter_distributions():
    big_t, n = 40, 6000
    task = adding_problem(n, big_t, seed=5)
    counts = torch.bincount(task.lengths - big_t, minlength=5)
    assert counts.shape[0] == 5 and uniform_counts_ok(counts)
    marked = task.inputs[..., 1] == 1
    assert bool((marked.sum(1) == 2).all())
    p1 = task.info["positions"][:, 0]
    assert uniform_counts_ok(torch.bincount(p1, minlength=10))
    # Second marker: uniform on {0..T/2-1} minus the first: every position equally likely
    # given p1, so its counts over p1 = 5 sequences are uniform on the other 19 positions.
    p2 = task.info["positions"][:, 1]
    assert bool((p2 != p1).all())
    sel = p2[p1 == 5]
    counts = torch.bincount(sel, minlength=20)
    assert counts[5] == 0 and uniform_counts_ok(torch.cat([counts[:5], counts[6:]]))


def test_adding_pascanu_definition():
    task = adding_problem(300, 50, variant="pascanu2013", seed=6, dtype=torch.float64)
    for b in range(task.batch_size):
        values, markers, marked, n = decode_markers(task, b)
        assert 50 <= n <= 55
        assert set(markers.unique().tolist()) <= {0.0, 1.0} and len(marked) == 2
        first, second = marked
        assert 0 <= first < n // 10 and n // 10 <= second < n // 2
        assert float(values.min()) >= 0.0 and float(values.max()) < 1.0
        target = (values[first] + values[second]) / 2.0
        assert float(task.targets[b, n - 1, 0]) == pytest.approx(float(target), abs=1e-12)
    seconds = task.info["positions"][:, 1]
    assert int(seconds.min()) <= 6 and int(seconds.max()) >= 24  # spans [L/10, L/2)


@pytest.mark.parametrize("variant", ["hochreiter1997", "pascanu2013"])
def test_multiplication_definition(variant):
    task = multiplication_problem(300, 40, variant=variant, seed=7, dtype=torch.float64)
    first_marked = 0
    for b in range(task.batch_size):
        values, _, marked, n = decode_markers(task, b)
        assert len(marked) == 2
        assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0
        if variant == "hochreiter1997" and 0 in marked:
            first_marked += 1
            assert float(values[0]) == 1.0
        target = values[marked[0]] * values[marked[1]]
        assert float(task.targets[b, n - 1, 0]) == pytest.approx(float(target), abs=1e-12)
    assert variant == "pascanu2013" or first_marked > 0


def test_marker_metrics_known_answers():
    hs = adding_problem(8, 30, seed=1, dtype=torch.float64)
    y = hs.targets
    assert adding_problem_score(y + 0.039, hs).success_rate == 1.0
    assert adding_problem_score(y - 0.041, hs).success_rate == 0.0
    shift = torch.tensor([0.03, 0.05] * 4, dtype=torch.float64).view(8, 1, 1)
    s = adding_problem_score(y + shift * hs.mask.unsqueeze(-1), hs)
    assert s.success_rate == 0.5 and s.correct.tolist() == [True, False] * 4
    assert s.mse == pytest.approx((0.03**2 + 0.05**2) / 2)
    assert not s.solved
    # The final-step form reads the same numbers.
    assert adding_problem_score(hs.final_outputs(y) + 0.05, hs).success_rate == 0.0
    pa = adding_problem(8, 30, variant="pascanu2013", seed=1, dtype=torch.float64)
    assert adding_problem_score(pa.targets + 0.19, pa).success_rate == 1.0  # 0.0361 <= 0.04
    assert adding_problem_score(pa.targets + 0.21, pa).success_rate == 0.0  # 0.0441 > 0.04
    mu = multiplication_problem(8, 30, seed=1, dtype=torch.float64)
    assert multiplication_problem_score(mu.targets - 0.039, mu).success_rate == 1.0
    assert multiplication_problem_score(mu.targets + 0.041, mu).success_rate == 0.0
    with pytest.raises(ValueError, match="adding_problem"):
        adding_problem_score(mu.targets, mu)


@pytest.mark.parametrize(
    ("make", "score", "constant", "others"),
    [
        (lambda n: adding_problem(n, 20, seed=8), adding_problem_score, 0.5, (0.45, 0.56)),
        (lambda n: adding_problem(n, 20, variant="pascanu2013", seed=8), adding_problem_score,
         0.5, (0.4, 0.6)),
        (lambda n: multiplication_problem(n, 20, seed=8), multiplication_problem_score, 0.04,
         (0.1, 0.25)),
        (lambda n: multiplication_problem(n, 20, variant="pascanu2013", seed=8),
         multiplication_problem_score, 0.2, (0.3, 0.5)),
    ],
)
def test_marker_chance_levels_by_monte_carlo(make, score, constant, others):
    n = 20000
    task = make(n)
    rate = score(torch.full((n, 1), constant), task).success_rate
    assert binomial_close(rate, task.chance, n)
    for c in others:  # the closed form is for the best constant: others do worse
        assert score(torch.full((n, 1), c), task).success_rate < task.chance


def _interval_overlap(lo: float, hi: float, a: float = -1.0, b: float = 1.0) -> float:
    return max(0.0, min(hi, b) - max(lo, a))


@pytest.mark.parametrize("length", [20, 100])
def test_marker_chance_levels_exact(length):
    """task.chance against an independent computation: the paper's marking procedure
    enumerated exactly, and the probabilities integrated numerically with scipy."""
    quad = scipy.integrate.quad
    half = length // 2
    # P(position 0 marked): the first marker uniform on 0..9, the second uniform on the
    # T/2 - 1 unmarked positions of {0..T/2-1}.
    combos = [(p1, p2) for p1 in range(10) for p2 in range(half) if p2 != p1]
    p0 = sum(1 for p1, p2 in combos if 0 in (p1, p2)) / len(combos)
    # Adding, predict 0.5: |X1 + X2| < 0.16 with X ~ U[-1, 1] (density 1/2 each).
    both = quad(lambda x1: 0.25 * _interval_overlap(-0.16 - x1, 0.16 - x1), -1, 1,
                points=[-0.16, 0.16])[0]
    one = 0.5 * _interval_overlap(-0.16, 0.16)
    assert adding_problem(1, length).chance == pytest.approx(p0 * one + (1 - p0) * both,
                                                            abs=1e-9)
    # Multiplication, predict 0.04: X1 X2 < 0.08 with X ~ U[0, 1].
    both = quad(lambda x1: min(1.0, 0.08 / x1), 0, 1, points=[0.08])[0]
    assert multiplication_problem(1, length).chance == pytest.approx(
        p0 * 0.08 + (1 - p0) * both, abs=1e-9)
    # Pascanu: squared error <= 0.04 around 0.5 ((X1+X2)/2) and 0.2 (X1 X2), X ~ U[0, 1].
    add = quad(lambda x1: _interval_overlap(0.6 - x1, 1.4 - x1, 0.0, 1.0), 0, 1,
               points=[0.4, 0.6])[0]
    mul = quad(lambda x1: min(1.0, 0.4 / x1), 0, 1, points=[0.4])[0]
    assert adding_problem(1, length, variant="pascanu2013").chance == pytest.approx(add,
                                                                                   abs=1e-9)
    assert multiplication_problem(1, length, variant="pascanu2013").chance == pytest.approx(
        mul, abs=1e-9)


def test_marker_bad_input():
    with pytest.raises(ValueError, match="length"):
        adding_problem(2, 19)
    with pytest.raises(ValueError, match="length"):
        multiplication_problem(2, 9, variant="pascanu2013")
    with pytest.raises(ValueError, match="variant"):
        adding_problem(2, 100, variant="martens")
    with pytest.raises(ValueError, match="batch"):
        adding_problem(0, 100)
    with pytest.raises(TypeError, match="dtype"):
        adding_problem(2, 100, dtype=torch.int64)
    with pytest.raises(TypeError, match="generator"):
        adding_problem(2, 100, generator=3)
    task = adding_problem(3, 30)
    with pytest.raises(ValueError, match="shape"):
        adding_problem_score(torch.zeros(3, task.max_length, 2), task)
    with pytest.raises(ValueError, match="shape"):
        adding_problem_score(torch.zeros(2, 1), task)
    with pytest.raises(ValueError, match="non-finite"):
        adding_problem_score(torch.full((3, 1), float("nan")), task)
    with pytest.raises(TypeError, match="floating"):
        adding_problem_score(torch.zeros(3, 1, dtype=torch.int64), task)
    with pytest.raises(TypeError, match="LongTermTask"):
        adding_problem_score(torch.zeros(3, 1), "adding")


# ------------------------------------------------------------------------------------------
# Temporal order
# ------------------------------------------------------------------------------------------
def decode_order(task, b):
    """(symbols, relevant positions, class) of sequence b from the one-hot inputs."""
    n = int(task.lengths[b])
    codes = task.inputs[b, :n]
    assert bool((codes.sum(1) == 1).all())
    symbols = codes.argmax(1)
    relevant = ((symbols == 4) | (symbols == 5)).nonzero().flatten().tolist()
    label = 0
    for p in relevant:  # X = 0, Y = 1, first symbol most significant (Q, R, S, U ...)
        label = 2 * label + int(symbols[p] == 5)
    return symbols, relevant, label, n


@pytest.mark.parametrize(
    ("bits", "windows"), [(2, [(10, 20), (50, 60)]), (3, [(10, 20), (33, 43), (66, 76)])]
)
def test_temporal_order_hochreiter_definition(bits, windows):
    task = temporal_order(400, 100, bits=bits, seed=9)
    assert task.input_size == 8 and task.output_size == 2**bits
    seen = [set() for _ in windows]
    for b in range(task.batch_size):
        symbols, relevant, label, n = decode_order(task, b)
        assert 100 <= n <= 110
        assert int(symbols[0]) == 7 and int(symbols[n - 1]) == 6  # E ... B
        assert bool((symbols[1 : n - 1] <= 5).all())
        assert len(relevant) == bits
        for k, ((lo, hi), p) in enumerate(zip(windows, relevant, strict=True)):
            assert lo <= p + 1 <= hi  # the paper's 1-based positions
            seen[k].add(p + 1)
        assert task.mask[b].nonzero().flatten().tolist() == [n - 1]
        assert int(task.targets[b, n - 1].argmax()) == label
        assert float(task.targets[b, n - 1].sum()) == 1.0
    assert all(s == set(range(lo, hi + 1)) for s, (lo, hi) in zip(seen, windows, strict=True))


@pytest.mark.parametrize("bits", [2, 3])
def test_temporal_order_pascanu_definition(bits):
    big_t = 60
    task = temporal_order(300, big_t, bits=bits, variant="pascanu2013", seed=10)
    assert task.input_size == 6 and bool((task.lengths == big_t).all())
    starts = (1, 5) if bits == 2 else (1, 3, 6)
    for b in range(task.batch_size):
        symbols, relevant, label, n = decode_order(task, b)
        assert n == big_t and len(relevant) == bits and int(symbols.max()) <= 5  # no E, B
        for s, p in zip(starts, relevant, strict=True):
            assert s * big_t // 10 <= p < s * big_t // 10 + big_t // 10
        assert int(task.targets[b, n - 1].argmax()) == label


@pytest.mark.parametrize(("bits", "variant"), [(2, "hochreiter1997"), (3, "pascanu2013")])
def test_temporal_order_classes_balanced(bits, variant):
    task = temporal_order(4000, 40, bits=bits, variant=variant, seed=12)
    labels = task.targets[task.mask].argmax(1)
    counts = torch.bincount(labels, minlength=2**bits)
    assert uniform_counts_ok(counts)
    assert torch.equal(labels, task.info["labels"])


def test_temporal_order_metrics_and_chance():
    hs = temporal_order(8, 100, seed=1)
    y = hs.final_outputs(hs.targets)
    soft = 0.25 + 0.5 * y  # 0.75 on the class, 0.25 elsewhere: all within 0.3
    assert temporal_order_score(soft, hs).success_rate == 1.0
    loose = 0.2 + 0.45 * y  # the class unit is 0.65, 0.35 away from 1: wrong for H&S
    assert temporal_order_score(loose, hs).success_rate == 0.0
    pa = temporal_order(8, 100, variant="pascanu2013", seed=1)
    ypa = pa.final_outputs(pa.targets)
    assert temporal_order_score(0.2 + 0.45 * ypa, pa).success_rate == 1.0  # argmax is right
    assert temporal_order_score(ypa.roll(1, dims=1), pa).success_rate == 0.0
    n = 8000
    for variant in ("hochreiter1997", "pascanu2013"):
        task = temporal_order(n, 30, bits=3, variant=variant, seed=13)
        guess = torch.zeros(n, 8)
        guess[:, 3] = 1.0
        s = temporal_order_score(guess, task)
        assert task.chance == 1 / 8 and binomial_close(s.success_rate, 1 / 8, n)


def test_temporal_order_bad_input():
    with pytest.raises(ValueError, match=r"too short.*length >= (\d+)") as err:
        temporal_order(2, 10)
    shortest = int(str(err.value).rsplit(">= ", 1)[1])
    temporal_order(2, shortest, seed=0)  # the suggested length works
    with pytest.raises(ValueError, match="too short"):
        temporal_order(2, shortest - 1)
    with pytest.raises(ValueError, match="bits"):
        temporal_order(2, 100, bits=4)
    with pytest.raises(ValueError, match="too short"):
        temporal_order(2, 9, variant="pascanu2013")


# ------------------------------------------------------------------------------------------
# Random permutation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["pascanu2013", "martens2011"])
def test_random_permutation_definition(variant):
    length, n_sym = 25, 100
    task = random_permutation(200, length, n_symbols=n_sym, variant=variant, seed=14)
    x = task.inputs.argmax(-1)
    y = task.targets.argmax(-1)
    assert bool((task.inputs.sum(-1) == 1).all())
    assert bool((task.targets.sum(-1) == task.mask).all())  # one-hot exactly where scored
    assert set(x[:, 0].tolist()) == {0, 1}
    assert int(x[:, 1:].min()) >= 2 and int(x[:, 1:].max()) <= n_sym - 1
    assert torch.equal(y[:, -1], x[:, 0])  # the first symbol comes back at the end
    if variant == "pascanu2013":
        assert task.mask.nonzero()[:, 1].unique().tolist() == [length - 1]
    else:
        assert bool(task.mask.all())
        assert torch.equal(y[:, :-1], x[:, 1:])  # next-symbol targets


def test_random_permutation_metric_and_chance():
    task = random_permutation(10, 20, variant="martens2011", seed=1)
    out = torch.rand(10, 20, 100, generator=torch.Generator().manual_seed(0))
    out[:, -1] = task.targets[:, -1]
    assert random_permutation_score(out, task).success_rate == 1.0  # only the end counts
    out[:4, -1] = task.targets[:4, -1].roll(1, dims=1)
    assert random_permutation_score(out, task).success_rate == 0.6
    n = 10000
    big = random_permutation(n, 5, n_symbols=10, seed=2)
    guess = torch.zeros(n, 10)
    guess[:, 0] = 1.0
    assert binomial_close(random_permutation_score(guess, big).success_rate, big.chance, n)
    with pytest.raises(ValueError, match="n_symbols"):
        random_permutation(2, 10, n_symbols=2)
    with pytest.raises(ValueError, match="length"):
        random_permutation(2, 1)


# ------------------------------------------------------------------------------------------
# Noiseless memorization
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_sym", "p"), [(2, 5), (5, 10)])
def test_memorization_definition(n_sym, p):
    delay = 15
    task = noiseless_memorization(50, delay, n_symbols=n_sym, pattern_length=p, seed=15)
    total = delay + 2 * p
    assert task.inputs.shape == (50, total, n_sym + 2)
    assert task.targets.shape == (50, total, n_sym + 1) and bool(task.mask.all())
    x, y = task.inputs.argmax(-1), task.targets.argmax(-1)
    blank_in, trigger, blank_out = n_sym, n_sym + 1, n_sym
    for b in range(50):
        pattern = x[b, :p]
        assert int(pattern.max()) < n_sym
        assert x[b, p:].tolist() == [blank_in] * delay + [trigger] + [blank_in] * (p - 1)
        assert y[b, : p + delay].tolist() == [blank_out] * (p + delay)
        assert torch.equal(y[b, p + delay :], pattern)


def test_memorization_all_patterns_and_metric():
    task = noiseless_memorization(32, 10, all_patterns=True)
    patterns = task.inputs[:, :5].argmax(-1)
    assert len({tuple(r) for r in patterns.tolist()}) == 32
    with pytest.raises(ValueError, match="all_patterns"):
        noiseless_memorization(31, 10, all_patterns=True)
    out = task.targets.clone()
    out[3, -1] = out[3, -1].roll(1)  # one wrong recalled symbol
    s = noiseless_memorization_score(out, task)
    assert s.success_rate == 31 / 32 and s.correct[3].item() is False
    assert s.step_accuracy == pytest.approx(1 - 1 / (32 * task.max_length))
    # Chance: blanks from the clock, then always guess symbol 0.
    n, delay = 20000, 4
    big = noiseless_memorization(n, delay, n_symbols=2, pattern_length=3, seed=3)
    guess = torch.zeros_like(big.targets)
    guess[:, : 3 + delay, 2] = 1.0
    guess[:, 3 + delay :, 0] = 1.0
    s = noiseless_memorization_score(guess, big)
    assert big.chance == 1 / 8 and binomial_close(s.success_rate, 1 / 8, n)
    assert s.step_accuracy == pytest.approx(big.chance_step, abs=0.01)
    with pytest.raises(ValueError, match="n_symbols"):
        noiseless_memorization(2, 10, n_symbols=1)


# ------------------------------------------------------------------------------------------
# Losses, final outputs, padding with a real model
# ------------------------------------------------------------------------------------------
def test_masked_mse_against_a_loop():
    task = adding_problem(5, 30, seed=2, dtype=torch.float64)
    out = torch.randn(task.targets.shape, dtype=torch.float64, requires_grad=True)
    terms = [((out[b, t] - task.targets[b, t]) ** 2).sum()
             for b in range(5) for t in range(task.max_length) if task.mask[b, t]]
    expected = torch.stack(terms).mean()
    loss = masked_mse(out, task)
    assert torch.allclose(loss, expected, atol=1e-14)
    loss.backward()
    assert out.grad is not None and bool((out.grad[~task.mask] == 0).all())
    final = task.final_outputs(out.detach())
    assert torch.allclose(masked_mse(final, task), expected.detach(), atol=1e-14)


def test_masked_cross_entropy_against_torch():
    task = temporal_order(6, 50, bits=3, seed=3)
    logits = torch.randn(task.targets.shape)
    expected = torch.nn.functional.cross_entropy(task.final_outputs(logits),
                                                 task.info["labels"])
    assert torch.allclose(masked_cross_entropy(logits, task), expected, atol=1e-6)
    memo = noiseless_memorization(4, 6, seed=0)
    logits = torch.randn(memo.targets.shape)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 3),
                                                 memo.targets.argmax(-1).reshape(-1))
    assert torch.allclose(masked_cross_entropy(logits, memo), expected, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        masked_cross_entropy(torch.zeros(6, 3, 8), task)


def test_padded_batch_equals_unpadded_runs():
    """A causal model's output at L - 1 of the padded batch is its output on sequence b alone."""
    task = adding_problem(6, 40, seed=4)
    assert len(set(task.lengths.tolist())) > 1  # really variable lengths
    model = ElmanRNN(2, 8, 1, readout="identity")
    with torch.no_grad():
        padded, _ = model(task.inputs)
        final = final_outputs(padded, task.lengths)
        for b in range(6):
            n = int(task.lengths[b])
            alone, _ = model(task.inputs[b : b + 1, :n])
            assert torch.allclose(final[b], alone[0, -1], atol=1e-6)
    score = task.score(padded)
    assert 0.0 <= score.success_rate <= 1.0 and math.isfinite(score.mse)
    with pytest.raises(ValueError, match="lengths"):
        final_outputs(padded, task.lengths + 100)
    with pytest.raises(TypeError, match="lengths"):
        final_outputs(padded, task.lengths.float())


def test_registry_generates_and_scores():
    for name, spec in LONG_TERM_TASKS.items():
        args = (3, 30, 2) if name == "delayed_recall" else (3, 30)
        task = spec.generate(*args, seed=1)
        assert isinstance(task, LongTermTask) and task.name == name
        assert spec.score(task.targets, task).success_rate == 1.0
        assert float(spec.loss(task.targets, task)) >= 0.0


def test_outputs_on_another_device_are_refused():
    task = adding_problem(3, 30)
    with pytest.raises(ValueError, match="are on meta"):
        adding_problem_score(torch.zeros(3, 1, device="meta"), task)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_same_data_and_scores():
    for make in MAKERS.values():
        cpu, gpu = make(seed=4), make(seed=4, device="cuda")
        assert gpu.inputs.is_cuda and gpu.mask.is_cuda and gpu.lengths.is_cuda
        assert torch.equal(gpu.inputs.cpu(), cpu.inputs)
        assert torch.equal(gpu.targets.cpu(), cpu.targets)
        assert gpu.score(gpu.targets).success_rate == 1.0
        shift = 0.5 * cpu.mask.unsqueeze(-1)
        expected = cpu.score(cpu.targets + shift)
        got = gpu.score(gpu.targets + shift.cuda())
        assert got.success_rate == expected.success_rate
        assert got.mse == pytest.approx(expected.mse, rel=1e-6, abs=1e-12)
        loss = LONG_TERM_TASKS[gpu.name].loss(gpu.targets, gpu)
        assert loss.is_cuda
