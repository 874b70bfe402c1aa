"""Issue 17, ``lstm-variants --preset paper``: Greff et al.'s random search (ranges, trial count,
draws against the stated distributions), the input noise, the Welch comparison of the best
trials against scipy on the logged rows, and a stopped trial resumed bit for bit."""

import csv
import json
import math

import pytest
import torch
from scipy import stats

from rnnlab.experiments import get_experiment, resolve_config, run_experiment
from rnnlab.experiments import lstm_variants as lv


def _split(n, gen):
    chords = [(48, 60, 64, 67), (53, 60, 65, 69), (55, 59, 62, 67), (48, 60, 64, 67)]
    out = []
    for _ in range(n):
        shift = int(torch.randint(-3, 4, (1,), generator=gen))
        length = int(torch.randint(8, 13, (1,), generator=gen))
        out.append([[m + shift for m in chords[(t // 2) % 4]] for t in range(length)])
    return out


@pytest.fixture
def tiny_json(tmp_path):
    gen = torch.Generator().manual_seed(5)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"train": _split(4, gen), "valid": _split(2, gen),
                                "test": _split(2, gen)}))
    return path


def test_paper_constants_are_greff_et_al():
    # Greff et al. 2017 (abstract: 5400 runs over 3 data sets and 9 architectures) and the
    # search ranges as summarised from their Section IV (docs/lstm_variants.md, sources)
    assert lv.PAPER["trials"] * 3 * 9 == 5400
    assert lv.GREFF_SEARCH == {"hidden_range": (20, 200), "lr_range": (1e-6, 1e-2),
                               "one_minus_momentum_range": (0.01, 1.0), "noise_max": 1.0}


def test_search_draws_follow_the_stated_distributions():
    draws = [lv.sample_hyperparameters("vanilla", t) for t in range(1500)]
    assert draws[3] == lv.sample_hyperparameters("vanilla", 3)  # seeded by (variant, trial)
    assert draws[3] != lv.sample_hyperparameters("NFG", 3)  # each variant its own search
    lr = [math.log10(d["lr"]) for d in draws]
    mom = [math.log10(1 - d["momentum"]) for d in draws]
    noise = [d["input_noise"] for d in draws]
    hidden = [d["hidden_size"] for d in draws]
    # Kolmogorov-Smirnov against the stated uniform laws; p < 1e-4 would be a wrong law
    assert stats.kstest(lr, stats.uniform(-6, 4).cdf).pvalue > 1e-4
    assert stats.kstest(mom, stats.uniform(-2, 2).cdf).pvalue > 1e-4
    assert stats.kstest(noise, stats.uniform(0, 1).cdf).pvalue > 1e-4
    assert min(hidden) >= 20 and max(hidden) <= 200
    # log-uniform hidden sizes: the median is near sqrt(20 * 200) = 63 (a uniform law: 110)
    assert 55 <= sorted(hidden)[750] <= 72


def test_noisy_input_adds_noise_in_training_only():
    net = lv.build_lstm_network("vanilla", 5, seed=0, dtype=torch.float64)
    noisy = lv.NoisyInput(net, 0.5)
    x = torch.zeros(64, 30, 88, dtype=torch.float64)
    noisy.eval()
    assert torch.equal(noisy(x)[0], net(x)[0])
    seen = []

    class Record(torch.nn.Module):
        def forward(self, x, s=None, lengths=None):
            seen.append(x)
            return x, None

    noisy.net = Record()
    noisy.train()
    noisy(x)
    # sample std of 64*30*88 N(0, 0.25) draws: within 5 standard errors (0.5/sqrt(2n)) of 0.5
    se = 0.5 / math.sqrt(2 * x.numel())
    assert abs(float(seen[0].std()) - 0.5) < 5 * se
    with pytest.raises(ValueError, match="sigma"):
        lv.NoisyInput(net, -1.0)


def test_paper_preset_fills_only_defaults():
    exp = get_experiment("lstm-variants")
    cfg = resolve_config(exp, {"preset": "paper", "trials": "4"})
    from rnnlab.experiments._presets import apply_preset

    eff = apply_preset(cfg, {**lv.PAPER, "hidden_range": lv.GREFF_SEARCH["hidden_range"]})
    assert eff.trials == 4 and eff.top_fraction == 0.1 and eff.epochs == 150
    assert eff.patience == 15 and eff.batch_size == 1 and eff.clip_norm is None
    # SGD with Nesterov momentum: a reading note of the paper (docs/lstm_variants.md)
    assert lv.PAPER["nesterov"] is True and eff.nesterov is True


def test_paper_nesterov_can_be_turned_off_and_excludes_clipping():
    from rnnlab.experiments._presets import apply_preset
    from rnnlab.experiments.registry import check_config

    exp = get_experiment("lstm-variants")
    preset = {**lv.PAPER, "hidden_range": lv.GREFF_SEARCH["hidden_range"]}
    off = apply_preset(resolve_config(exp, {"preset": "paper", "nesterov": "false"}), preset)
    assert off.nesterov is False  # an explicit false wins over the preset: heavy-ball
    clipped = apply_preset(resolve_config(exp, {"preset": "paper", "clip-norm": "0.5"}), preset)
    with pytest.raises(ValueError, match="--nesterov false"):
        check_config(clipped)
    check_config(apply_preset(resolve_config(
        exp, {"preset": "paper", "clip-norm": "0.5", "nesterov": "false"}), preset))


@pytest.mark.parametrize(("overrides", "match"), [
    ({"preset": "paper", "seeds": "0,1"}, "--trials"),
    ({"preset": "paper", "quick": "true"}, "exclude"),
    ({"trials": "5"}, "preset=paper only"),
    ({"nesterov": "true"}, "preset=paper only"),
    ({"preset": "paper", "hidden-range": "9,3"}, "smallest first"),
])
def test_bad_paper_options_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(get_experiment("lstm-variants"), overrides)


def _args(tiny_json, **kw):
    base = {"data": str(tiny_json), "preset": "paper", "variants": "vanilla,NFG",
            "trials": "3", "epochs": "2", "hidden-range": "3,5", "top-fraction": "1.0"}
    base.update(kw)
    return base


def test_paper_run_end_to_end_and_welch_on_the_logged_trials(tiny_json, tmp_path):
    result, run_dir = run_experiment("lstm-variants", _args(tiny_json),
                                     out_dir=tmp_path / "run")
    assert (run_dir / "lstm_variants_paper.png").read_bytes()[:4] == b"\x89PNG"
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["variant"], int(r["trial"])) for r in rows) == sorted(
        (v, t) for v in ("vanilla", "NFG") for t in range(3))
    for r in rows:  # the logged hyperparameters are the trial's draw
        hp = lv.sample_hyperparameters(r["variant"], int(r["trial"]), (3, 5))
        assert int(r["hidden_size"]) == hp["hidden_size"]
        assert float(r["lr"]) == hp["lr"]
    test = {v: [float(r["test_nll"]) for r in rows if r["variant"] == v]
            for v in ("vanilla", "NFG")}
    ref = stats.ttest_ind(test["NFG"], test["vanilla"], equal_var=False)
    nfg = next(r for r in result.rows if r["variant"] == "NFG")
    # top_fraction 1: every trial is compared; the same float64 formula as scipy's
    assert nfg["p_value_top"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert nfg["welch_t_top"] == pytest.approx(ref.statistic, rel=1e-12)
    assert nfg["trials"] == 3 and nfg["greff_2017"] == "hurts"
    assert len(list((run_dir / "jobs").glob("*-trial*/checkpoint.pt"))) == 6


def test_top_trials_are_chosen_by_validation_with_diverged_last():
    rows = [{"valid_nll": v, "trial": i} for i, v in enumerate([3.0, math.nan, 1.0, 2.0])]
    assert [r["trial"] for r in lv._top_trials(rows, 0.5)] == [2, 3]
    assert [r["trial"] for r in lv._top_trials(rows, 1.0)] == [2, 3, 0, 1]


class _Stop(Exception):
    pass


def test_a_stopped_trial_resumes_bit_for_bit(tiny_json, tmp_path):
    cfg = resolve_config(get_experiment("lstm-variants"), _args(tiny_json, epochs="4"))
    from rnnlab.experiments._presets import apply_preset

    cfg = apply_preset(cfg, lv.PAPER)
    optimizers = set()

    def record(trainer, event):
        group = trainer.optimizer.param_groups[0]
        optimizers.add((type(trainer.optimizer), group["nesterov"], group["momentum"] > 0))

    ref = lv.paper_trial(cfg, "vanilla", 1, str(tmp_path / "ref"), _callbacks=(record,))
    assert optimizers == {(torch.optim.SGD, True, True)}  # the preset's Nesterov momentum

    def stop_after_two_epochs(trainer, event):
        if event == "epoch" and trainer.position.epoch == 2:
            raise KeyboardInterrupt  # the trainer checkpoints first, then re-raises

    with pytest.raises(KeyboardInterrupt):
        lv.paper_trial(cfg, "vanilla", 1, str(tmp_path / "run"),
                       _callbacks=(stop_after_two_epochs,))
    again = lv.paper_trial(cfg, "vanilla", 1, str(tmp_path / "run"))
    for key in ("test_nll", "valid_nll", "train_nll", "best_epoch", "epochs_run",
                "valid_curve", "hidden_size", "lr", "momentum", "input_noise"):
        # the same operations on the same values in the same order: equal bits
        assert again[key] == ref[key], key
    assert ref["epochs_run"] == 4


def test_fanova_names_the_hyperparameter_that_matters():
    pytest.importorskip("sklearn")
    trials = []
    for t in range(60):
        hp = lv.sample_hyperparameters("vanilla", t)
        # test NLL driven by the learning rate alone (as Greff et al. found it most important)
        trials.append({**hp, "test_nll": 9.0 - 0.5 * math.log10(hp["lr"])})
    got = lv.fanova_importance(trials, (20, 200))
    assert set(got) == set(lv.FANOVA_INPUTS)
    assert got["lr"] > 0.8 and max(got["momentum"], got["hidden_size"],
                                   got["input_noise"]) < 0.1
    few = lv.fanova_importance(trials[: lv.FANOVA_MIN_TRIALS - 1], (20, 200))
    assert all(math.isnan(v) for v in few.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_paper_trial_runs_on_cuda(tiny_json, tmp_path):
    cfg = resolve_config(get_experiment("lstm-variants"), _args(tiny_json, device="cuda"))
    from rnnlab.experiments._presets import apply_preset

    row = lv.paper_trial(apply_preset(cfg, lv.PAPER), "CIFG", 0, str(tmp_path / "job"))
    assert math.isfinite(row["test_nll"]) or row["diverged"]
