"""Issue 17: every published figure an experiment prints equals the one cited (with its
source), and the statistics of ``lstm-variants`` (Welch's test, its power) against scipy and a
simulation."""

import math

import numpy as np
import pytest
from scipy import stats

from rnnlab.experiments import _music_training as mt
from rnnlab.experiments import deep_rnn
from rnnlab.experiments import long_term as lt
from rnnlab.experiments import lstm_variants as lv

# The constants table: value printed or used, and where it is stated.
PASCANU_CODE = "github.com/pascanur/trainingRNNs, RNN.py, __main__ state defaults"
GREFF_NOTE = "blog.csdn.net/chn13/article/details/54378517 (Greff et al.'s search space): "
# Sutskever's released HF-RNN code (2011, "release A"), read in the copy barapa/HF-RNN
SUTSKEVER_CODE = "github.com/barapa/HF-RNN (Sutskever 2011), opt/r/demo.py and opt/d/seq"
SOURCES = {
    ("long_term", "PAPER.hidden_size"): (50, PASCANU_CODE + ": state['nhid'] = 50"),
    ("long_term", "PAPER.lr"): (0.01, PASCANU_CODE + ": state['lr'] = .01"),
    ("long_term", "PAPER.batch"): (20, PASCANU_CODE + ": state['bs'] = 20"),
    ("long_term", "PAPER.clip"): (1.0, PASCANU_CODE + ": state['cutoff'] = 1."),
    ("long_term", "PAPER.budget"): (5_000_000 * 20, PASCANU_CODE + ": maxiters 5e6 x bs 20"),
    ("long_term", "PAPER.test_size"): (10_000, PASCANU_CODE + ": state['ebs'] = 10000"),
    ("long_term", "PAPER.eval_every"): (20, PASCANU_CODE + ": state['checkFreq'] = 20"),
    ("long_term", "PAPER.momentum"): (0.0, PASCANU_CODE + ": update W - lr * g (no momentum)"),
    ("long_term", "PAPER.hf_batch"): (1000, SUTSKEVER_CODE
                                      + ", pathological.py: batch_size = 1000"),
    ("long_term", "PAPER.hf_cg_iters"): (300, SUTSKEVER_CODE + ", demo.py: max_cg_iter = 300"),
    ("long_term", "PAPER.hf_structural_damping"): (
        0.03, SUTSKEVER_CODE + ", demo.py: init_damping = array([1, .03]) * ..., the second "
        "entry used as mu_times_lambda"),
    ("long_term", "SPARSE_INIT.k"): (15, PASCANU_CODE + ": smart_tanh, W_hh[dx][spng[15:]] = 0"),
    ("long_term", "SPARSE_INIT.spectral_radius"): (0.95, PASCANU_CODE + ": .95 * W_hh / sr"),
    ("lstm_variants", "GREFF_2017.NFG"): ("hurts", "Greff et al. 2017, abstract: the forget "
                                          "gate is a most critical component"),
    ("lstm_variants", "GREFF_2017.NOAF"): ("hurts", "Greff et al. 2017, abstract: the output "
                                           "activation function is a most critical component"),
    ("lstm_variants", "GREFF_2017.CIFG"): ("does not hurt", "Greff et al. 2017, conclusion: "
                                           "coupling input and forget gates ... without "
                                           "significantly hurting performance"),
    ("lstm_variants", "GREFF_2017.NP"): ("does not hurt", "Greff et al. 2017, conclusion: "
                                         "removing peephole connections ... without "
                                         "significantly hurting performance"),
    **{("lstm_variants", f"GREFF_2017.{v}"): ("not better", "Greff et al. 2017, abstract: none "
                                              "of the variants can improve upon the standard "
                                              "LSTM architecture significantly")
       for v in ("NIG", "NOG", "NIAF", "FGR")},
    # the random search: the paper note blog.csdn.net/chn13/article/details/54378517 (pages
    # corpus) and, for the trial count, a third-party reading note (code index) "200 trials
    # for each random search (lstm variant x datasets)"; 5400 runs (abstract) = 200 x 3 x 9
    ("lstm_variants", "GREFF_SEARCH.hidden_range"): ((20, 200), GREFF_NOTE + "[20, 200]"),
    ("lstm_variants", "GREFF_SEARCH.lr_range"): ((1e-6, 1e-2), GREFF_NOTE + "[10-6, 10-2]"),
    ("lstm_variants", "GREFF_SEARCH.one_minus_momentum_range"): (
        (0.01, 1.0), GREFF_NOTE + "momentum: 1 - log-uniform samples from [0.01, 1.0]"),
    ("lstm_variants", "GREFF_SEARCH.noise_max"): (1.0, GREFF_NOTE + "uniform samples [0, 1]"),
    ("lstm_variants", "PAPER.trials"): (200, "reading note: 200 trials for each random search"),
}


def _lookup(module: str, name: str):
    mod = {"long_term": lt, "lstm_variants": lv}[module]
    table, key = name.split(".")
    return getattr(mod, table)[key]


@pytest.mark.parametrize(("module", "name"), sorted(SOURCES))
def test_printed_figure_equals_the_cited_one(module, name):
    value, source = SOURCES[(module, name)]
    assert source
    assert _lookup(module, name) == value


def test_no_unverified_figure_is_left():
    assert set(lv.GREFF_2017) == {k.split(".")[1] for (m, k) in SOURCES
                                  if m == "lstm_variants" and k.startswith("GREFF_2017.")}
    assert set(lv.GREFF_SEARCH) == {k.split(".")[1] for (m, k) in SOURCES
                                    if m == "lstm_variants" and k.startswith("GREFF_SEARCH.")}
    # deep-rnn: only figures with the stored page they were read from (Pascanu et al. 2014's
    # own JSB figures could not be verified, so none of them is printed)
    assert {(src, m) for src, d in deep_rnn.PUBLISHED for m in d} == set(
        deep_rnn.PUBLISHED_SOURCES)
    assert all("Pascanu" not in src for src, _ in deep_rnn.PUBLISHED)
    for module in (deep_rnn, lv, lt):
        text = (module.__doc__ or "").lower()
        assert "as remembered" not in text and "recalled" not in text


def test_welch_t_test_is_scipys():
    rng = np.random.default_rng(0)
    a, b = rng.normal(8.3, 0.05, 5), rng.normal(8.4, 0.2, 7)
    t, p = mt.welch_t_test(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    # by hand: Welch's t and the Welch-Satterthwaite degrees of freedom
    va, vb = a.var(ddof=1) / 5, b.var(ddof=1) / 7
    t_hand = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 6)
    assert t == pytest.approx(t_hand, rel=1e-12)
    assert p == pytest.approx(2 * stats.t.sf(abs(t_hand), df), rel=1e-9)


@pytest.mark.parametrize(("n", "d"), [(4, 2.0), (10, 1.0)])
def test_welch_power_matches_a_simulation(n, d):
    """Simulated tests on normal samples whose means differ by d standard deviations: the
    rejection rate over 20000 draws has standard error <= 0.0036, so 5 sigma = 0.018. The
    formula is the pooled (equal-variance) test's power, which the simulated pooled test
    matches; Welch's test has fewer degrees of freedom and is less powerful at small n
    (measured: n=4, d=2: 0.60 against 0.66), so the formula is an upper bound for it."""
    rng = np.random.default_rng(17)
    reps = 20_000
    a = rng.normal(d, 1.0, (reps, n))
    b = rng.normal(0.0, 1.0, (reps, n))
    pooled = float((stats.ttest_ind(a, b, axis=1).pvalue < 0.05).mean())
    welch = float((stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05).mean())
    power = lv.welch_power(n, d, 0.05)
    assert power == pytest.approx(pooled, abs=0.018)
    assert welch <= power + 0.018


def test_seeds_for_power_is_the_first_n_that_reaches_it():
    for d in (0.5, 0.8, 1.0, 2.0):
        n = lv.seeds_for_power(d, 0.05, 0.8)
        assert lv.welch_power(n, d) >= 0.8 > lv.welch_power(n - 1, d)
    # Cohen (1988)'s tabulated sample sizes for power 0.8 at alpha 0.05 (two-sided): 64, 26, 17
    assert [lv.seeds_for_power(d) for d in (0.5, 0.8, 1.0)] == [64, 26, 17]
    for n in (3, 10):
        d = lv.detectable_effect(n)
        assert lv.welch_power(n, d) == pytest.approx(0.8, abs=1e-6)
    with pytest.raises(ValueError, match="n"):
        lv.welch_power(1, 1.0)
    with pytest.raises(ValueError, match="power"):
        lv.seeds_for_power(1.0, power=1.0)


def test_effect_size_sets_the_seeds_for_the_stated_power():
    from rnnlab.experiments import get_experiment, resolve_config

    exp = get_experiment("lstm-variants")
    cfg = resolve_config(exp, {"effect-size": "1.0"})
    n = len(cfg.settings().seeds)
    assert n == lv.seeds_for_power(1.0, 0.05, 0.8) == 17
    assert cfg.settings().seeds == tuple(range(17))
    # explicit seeds win; without effect_size the preset's seeds stay
    assert resolve_config(exp, {"effect-size": "1.0", "seeds": "0,1"}).settings().seeds == (0, 1)
    assert len(resolve_config(exp, {"effect-size": "2.0", "power": "0.9"}).settings().seeds) \
        == lv.seeds_for_power(2.0, 0.05, 0.9)
    with pytest.raises(ValueError, match="effect_size"):
        resolve_config(exp, {"effect-size": "0"})
