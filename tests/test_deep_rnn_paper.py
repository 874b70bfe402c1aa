"""``deep-rnn``'s paper preset, its resumable training, the NLL-against-epochs plot and the
published figures of its table (issue 17).

References: the preset against the sources table (every setting has its source), a resumed run
against the same run never stopped (bit for bit: the same computation on the same machine and
path, the trainer restores every generator), the plotted curves against the per-epoch values
logged in ``metrics.csv`` and the lines actually drawn, the printed published figure against the
stored page it was read from.

Tolerance: ``metrics.csv`` stores each per-epoch NLL with 4 decimals (``TrainResult.metrics``),
so a value read back is within 5e-5 of the one plotted, and so is a mean of such values; the
comparison allows 6e-5 (the half unit of the 4th decimal plus float64 round-off, far below it).
"""

from __future__ import annotations

import dataclasses
import json
import math

import matplotlib
import pytest
import torch

from rnnlab.experiments import _music_training as mt
from rnnlab.experiments import deep_rnn as dr
from rnnlab.experiments import run_experiment
from rnnlab.experiments._music_training import load_music_data, plot_mean_valid_curves
from rnnlab.experiments._presets import apply_preset
from rnnlab.experiments._resume import JOBS
from tests.test_experiment_music import _read_csv, tiny_json  # noqa: F401 (its fixture)

matplotlib.use("Agg")
COIN_FLIP = 88 * math.log(2.0)
READ_BACK = 6e-5  # see the module docstring


@pytest.fixture
def tiny(request):
    """The music tests' synthetic chorales file (``tests/test_experiment_music.py``)."""
    return request.getfixturevalue("tiny_json")


# -- the preset rule -------------------------------------------------------------------------
def test_apply_preset_replaces_only_fields_at_their_defaults():
    cfg = dr.DeepRnnConfig(lr=0.3, preset="paper")
    out = apply_preset(cfg, dr.PAPER)
    assert out.lr == 0.3                       # set by the user: kept
    assert out.batch_size == dr.PAPER["batch_size"] == 1
    assert out.optimizer == "sgd" and out.patience is None
    assert cfg.batch_size == 8                 # the original is not changed
    with pytest.raises(ValueError, match="does not have: nonsense"):
        apply_preset(cfg, {"nonsense": 1})
    with pytest.raises(TypeError, match="dataclass instance"):
        apply_preset({"lr": 1}, {"lr": 2})


def test_every_paper_setting_has_its_source():
    assert set(dr.PAPER) == set(dr.PAPER_SOURCES)
    fields = {f.name for f in dataclasses.fields(dr.DeepRnnConfig)}
    assert set(dr.PAPER) <= fields
    # the values read in GroundHog's DT_RNN_Tut.py, as quoted in the sources
    for key, quoted in (("lr", "state['lr'] = 1."), ("momentum", "state['moment'] = 0.995"),
                        ("clip_norm", "state['cutoff'] = 1."), ("batch_size", "state['bs'] = 1"),
                        ("min_lr", "state['minlr'] = 5e-7"),
                        ("lr_check_updates", "state['validFreq'] = 1000")):
        assert quoted in dr.PAPER_SOURCES[key]
        assert float(quoted.split("=")[1].strip(" .'")) == pytest.approx(dr.PAPER[key],
                                                                         rel=0, abs=0)
    assert dr.PAPER["models"] == ("RNN", "DT(S)-RNN", "DOT(S)-RNN", "sRNN")
    # the halving rule: GroundHog's mainLoop.py, quoted
    assert dr.PAPER["lr_rule"] == "groundhog"
    for quoted in ("valcost > self.old_cost * self.state['cost_threshold']",
                   "p.set_value(bparams[p.name])", "state['patience'] = 1"):
        assert quoted in dr.PAPER_SOURCES["lr_rule"]


def test_published_figures_equal_their_sources():
    for source, values in dr.PUBLISHED:
        for model, value in values.items():
            cited, where = dr.PUBLISHED_SOURCES[(source, model)]
            assert value == cited and f"{cited:.2f}" in where
    assert sum(len(v) for _, v in dr.PUBLISHED) == len(dr.PUBLISHED_SOURCES)
    # Chung et al. 2014 (arXiv 1412.3555v1), Table 2, row "JSB Chorales, test": tanh 9.10,
    # GRU 8.54, LSTM 8.67 (docs/deep_rnn.md gives where each was read)
    assert dict(dr.PUBLISHED)[dr.CHUNG_2014] == {"RNN": 9.10, "GRU": 8.54, "LSTM": 8.67}
    assert "Table 2" in dr.CHUNG_2014


@pytest.mark.parametrize(("overrides", "message"), [
    ({"optimizer": "sgd"}, "apply to preset=paper only"),
    ({"momentum": "0.9"}, "apply to preset=paper only"),
    ({"lr-check-updates": "1000"}, "apply to preset=paper only"),
    ({"lr-rule": "groundhog"}, "apply to preset=paper only"),
    ({"weight-noise": "0.075"}, "apply to preset=paper only"),
    ({"init": "groundhog"}, "apply to preset=paper only"),
    ({"preset": "paper", "models": "RNN,LSTM"}, "init=groundhog .* LSTM would lose"),
    ({"preset": "paper", "lr-rule": "ours"}, "lr_rule"),
    ({"preset": "paper", "lr-check-updates": "0"}, "lr_check_updates"),
    ({"quick": "true", "preset": "paper"}, "exclude each other"),
    ({"preset": "book"}, "preset"),
])
def test_bad_combinations_are_refused(tiny, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_experiment("deep-rnn", {"data": str(tiny), **overrides}, out_dir=tmp_path / "r")


# -- resumable training ------------------------------------------------------------------------
def test_clipped_momentum_sgd_is_groundhogs_rule_by_hand():
    """v <- m v + g, clipped to norm c over all parameters; theta <- theta - lr v (float64:
    the same few operations in another order, to 1e-15)."""
    torch.manual_seed(0)
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    opt = mt.ClippedMomentumSGD([a, b], lr=0.3, momentum=0.9, clip=1.0)
    ta, tb = a.detach().clone(), b.detach().clone()
    va, vb = torch.zeros_like(ta), torch.zeros_like(tb)
    clipped = []
    for k in range(4):
        ga, gb = torch.randn_like(ta) * (k + 1), torch.randn_like(tb) * (k + 1)
        a.grad, b.grad = ga.clone(), gb.clone()
        opt.step()
        va, vb = 0.9 * va + ga, 0.9 * vb + gb
        norm = math.sqrt(float((va**2).sum() + (vb**2).sum()))
        clipped.append(norm > 1.0)
        if norm > 1.0:
            va, vb = va / norm, vb / norm
        ta, tb = ta - 0.3 * va, tb - 0.3 * vb
        assert torch.allclose(a.detach(), ta, rtol=0, atol=1e-15)
        assert torch.allclose(b.detach(), tb, rtol=0, atol=1e-15)
    assert any(clipped)    # the clipping was exercised
    # a non-finite velocity is not applied
    a.grad = torch.full_like(ta, math.nan)
    before = a.detach().clone()
    opt.step()
    assert torch.equal(a.detach(), before)
    with pytest.raises(ValueError, match="momentum"):
        mt.ClippedMomentumSGD([a], lr=0.1, momentum=1.0, clip=1.0)


def _plan(epochs: int) -> mt.ResumableTraining:
    return mt.ResumableTraining(epochs=epochs, batch_size=2, optimizer="sgd", lr=0.1,
                                momentum=0.9, clip_norm=1.0, lr_halving=2e-4, min_lr=1e-6)


def _lr_recorder(lrs: list[float]):
    """A trainer callback that appends the learning rate after every epoch (after the
    scheduler's decision of that epoch)."""
    def record(trainer, event):
        if event == "epoch":
            lrs.append(trainer.optimizer.param_groups[0]["lr"])
    return record


# (lr_check_updates, lr_halving, stop after epoch, the rates the run never stopped has after
# each epoch). The tiny data: 8 training chorales, batch 2 -> 4 updates per epoch. With
# lr_check_updates=6 the rule decides after epochs 2 and 4 (4+4 >= 6, reset, 4+4 >= 6); the
# stop after epoch 3 leaves 4 updates counted in the checkpoint, and lr_halving=0.99 makes the
# second decision halve for sure, so a count or a plateau state lost on resume would move or
# drop that halving and change the weights.
RESUME_CASES = [(None, 2e-4, 2, None),
                (6, 0.99, 3, [0.1, 0.1, 0.1, 0.05, 0.05])]


@pytest.mark.parametrize(("check_updates", "halving", "stop_at", "lrs"), RESUME_CASES)
def test_interrupted_and_resumed_equals_never_stopped(tiny, tmp_path, check_updates, halving,
                                                      stop_at, lrs):
    data, _ = load_music_data(str(tiny))
    plan = dataclasses.replace(_plan(5), lr_halving=halving, lr_check_updates=check_updates)

    def net():
        return dr.build_network("DOT(S)-RNN", 5, seed=3)

    straight = net()
    seen: list[float] = []
    ref = mt.train_resumable(straight, data, plan, seed=3, run_dir=tmp_path / "a",
                             callbacks=[_lr_recorder(seen)])
    if lrs is not None:
        assert seen == pytest.approx(lrs, rel=1e-12)   # the halving the resume must keep

    def stop_after(trainer, event):
        if event == "epoch" and trainer.position.epoch == stop_at:
            raise KeyboardInterrupt("stopped for the test")

    with pytest.raises(KeyboardInterrupt):
        mt.train_resumable(net(), data, plan, seed=3, run_dir=tmp_path / "b",
                           callbacks=[stop_after])
    resumed = net()
    out = mt.train_resumable(resumed, data, plan, seed=3, run_dir=tmp_path / "b")
    assert out.valid_curve == ref.valid_curve and len(ref.valid_curve) == 5
    assert (out.test_nll, out.best_epoch) == (ref.test_nll, ref.best_epoch)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    # a finished run continues nowhere: resuming it again gives the same result at once
    again = mt.train_resumable(net(), data, plan, seed=3, run_dir=tmp_path / "b")
    assert again.valid_curve == ref.valid_curve and again.test_nll == ref.test_nll
    assert ref.test_nll < COIN_FLIP


def _decision_lrs(lr: float, epochs: int, decisions: list[int]) -> list[float]:
    """The rate after each epoch when the plateau rule decides after the epochs in
    ``decisions`` and no decision but the first sees an improvement (the first compares with
    +inf): halved at every decision after the first."""
    out, seen = [], 0
    for epoch in range(1, epochs + 1):
        if epoch in decisions:
            seen += 1
            if seen > 1:
                lr /= 2
        out.append(lr)
    return out


# 4 updates per epoch (8 chorales, batch 2): U -> the epochs ending the first epoch at which
# >= U updates have passed since the previous decision, counted by hand
@pytest.mark.parametrize(("check_updates", "decisions"), [
    (None, [1, 2, 3, 4, 5, 6, 7, 8, 9]),   # the per-epoch rule
    (1, [1, 2, 3, 4, 5, 6, 7, 8, 9]),      # U <= 4: every epoch too
    (8, [2, 4, 6, 8]),                     # exactly 8 updates: every 2nd epoch
    (10, [3, 6, 9]),                       # 12 >= 10, count restarts: every 3rd
])
def test_lr_check_updates_decides_on_the_hand_computed_epochs(tiny, tmp_path, check_updates,
                                                              decisions):
    """lr_halving=0.99 asks a 99 % drop of the NLL: every decision but the first halves."""
    data, _ = load_music_data(str(tiny))
    plan = dataclasses.replace(_plan(9), lr_halving=0.99, min_lr=None,
                               lr_check_updates=check_updates)
    seen: list[float] = []
    res = mt.train_resumable(dr.build_network("RNN", 3, seed=0), data, plan, seed=0,
                             run_dir=tmp_path / "r", callbacks=[_lr_recorder(seen)])
    assert res.epochs_run == 9
    # halving a power-of-two multiple of 0.1 is exact in binary floating point
    assert seen == _decision_lrs(0.1, 9, decisions)


def test_min_lr_stop_follows_the_spaced_decision(tiny, tmp_path):
    """U=10 at 4 updates per epoch: decisions after epochs 3, 6, 9; the rate goes 0.1 -> 0.05
    (epoch 6) -> 0.025 (epoch 9) < min_lr 0.03: the run stops after epoch 9 of 20."""
    data, _ = load_music_data(str(tiny))
    plan = dataclasses.replace(_plan(20), lr_halving=0.99, min_lr=0.03, lr_check_updates=10)
    res = mt.train_resumable(dr.build_network("RNN", 3, seed=0), data, plan, seed=0,
                             run_dir=tmp_path / "r")
    assert res.epochs_run == 9 and len(res.valid_curve) == 9


def test_bad_lr_check_updates_are_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="lr_check_updates must be an int >= 1, got 0"):
        dataclasses.replace(_plan(2), lr_check_updates=0)
    for bad in (2.5, True, "10"):
        with pytest.raises(TypeError, match="lr_check_updates must be an int"):
            dataclasses.replace(_plan(2), lr_check_updates=bad)
    with pytest.raises(ValueError, match="needs lr_halving"):
        dataclasses.replace(_plan(2), lr_halving=None, lr_check_updates=10)
    # a run cannot change the cadence on resume
    _refused_on_resume(tiny, tmp_path, dataclasses.replace(_plan(1), lr_check_updates=10),
                       {"lr_check_updates": 6}, "check_updates=10, this run 6")


def _refused_on_resume(tiny, tmp_path, plan, change, message):
    """Train ``plan`` for its epochs, then resume the same run with ``change``: refused."""
    data, _ = load_music_data(str(tiny))
    mt.train_resumable(dr.build_network("RNN", 3, seed=0), data, plan, seed=0,
                       run_dir=tmp_path / "r")
    with pytest.raises(ValueError, match=message):
        mt.train_resumable(dr.build_network("RNN", 3, seed=0), data,
                           dataclasses.replace(plan, **change), seed=0, run_dir=tmp_path / "r")


def test_validation_nll_is_over_all_frames(tiny, tmp_path):
    """The trainer's per-epoch validation loss (one batch of every validation chorale) is
    the frame NLL over all validation frames, as evaluate_nll computes it batch by batch
    (float32 sums of <= 100 frames of O(10) nats: agreement to 1e-5 relative)."""
    from rnnlab.experiments._music_training import evaluate_nll

    data, _ = load_music_data(str(tiny))
    model = dr.build_network("RNN", 4, seed=0)
    res = mt.train_resumable(model, data, dataclasses.replace(_plan(1), lr_halving=None),
                             seed=0, run_dir=tmp_path / "c")
    assert res.valid_nll == pytest.approx(evaluate_nll(model, data["valid"], batch_size=2),
                                          rel=1e-5)


# -- GroundHog's halving rule (lr_rule="groundhog") --------------------------------------------
# GroundHog compares exp(cost in bits) with old_cost * 1.0002: in nats per frame a margin of
# ln 2 * ln 1.0002 = 1.386e-4; the hand-computed sequences keep every value >= 0.38e-4 away
# from it, and from the reference, so float rounding cannot move a decision.
GH_MARGIN = math.log(2.0) * math.log(1.0002)


def _groundhog(check_updates=1, patience=1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = mt.ClippedMomentumSGD([p], lr=1.0, momentum=0.0, clip=1.0)
    return opt, mt.GroundHogHalving(opt, updates_per_epoch=4, check_updates=check_updates,
                                    cost_threshold=1.0002, lr_patience=patience)


@pytest.mark.parametrize(("check_updates", "patience", "nlls", "lrs"), [
    # 40 > the start reference ln 2 ln 1e21 = 33.5 (old_cost = 1e21): halve; 10: new reference;
    # +1e-4 (< margin): nothing; +2e-4 (> margin): halve; 9.9: new reference; NaN: nothing;
    # 9.95 twice: halve twice (a halving leaves the reference at 9.9)
    (1, 1, [40.0, 10.0, 10.0001, 10.0002, 9.9, math.nan, 9.95, 9.95],
     [0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.0625]),
    # patience 2: two worse checks per halving; an improvement resets the count
    (1, 2, [10.0, 11.0, 10.5, 11.0, 9.0, 11.0, 11.0], [1, 1, 0.5, 0.5, 0.5, 0.5, 0.25]),
    # 4 updates per epoch, a check every 10: only epochs 3 and 6 are seen (40, 50 never)
    (10, 1, [40.0, 40.0, 10.0, 50.0, 50.0, 11.0], [1, 1, 1, 1, 1, 0.5]),
])
def test_groundhog_rule_on_hand_computed_sequences(check_updates, patience, nlls, lrs):
    opt, rule = _groundhog(check_updates, patience)
    seen, restores = [], []
    for nll in nlls:
        before = opt.param_groups[0]["lr"]
        rule.step(nll)
        seen.append(opt.param_groups[0]["lr"])
        restores.append(rule.restore_pending)
        assert rule.restore_pending == (seen[-1] < before)   # a restore with every halving
        rule.restore_pending = False                         # (train_resumable's callback)
    assert seen == lrs      # halving a power of two is exact
    assert rule.halvings == sum(restores)
    assert rule.margin == pytest.approx(GH_MARGIN, rel=1e-12)
    # the state travels in state_dict; a different threshold cannot be resumed
    _, other = _groundhog(check_updates, patience)
    other.load_state_dict(rule.state_dict())
    assert (other.reference, other.patience_left, other.updates_since_check) == (
        rule.reference, rule.patience_left, rule.updates_since_check)
    bad = mt.GroundHogHalving(opt, updates_per_epoch=4, check_updates=check_updates,
                              cost_threshold=1.004, lr_patience=patience)
    with pytest.raises(ValueError, match="cost_threshold"):
        bad.load_state_dict(rule.state_dict())


def _gh_plan(epochs: int, **kw) -> mt.ResumableTraining:
    """RNN of width 3, seed 0, SGD lr 1 with momentum 0.9 on the tiny data: valid NLL
    13.14, 12.84, 12.51, 13.06, 12.85, 12.71 (measured): better three times, then worse by
    > 0.1 nats (>> the 1.4e-4 margin) after every restore to epoch 3's weights."""
    return dataclasses.replace(_plan(epochs), **{"lr": 1.0, "lr_rule": "groundhog",
                                                 "min_lr": None, **kw})


def _gh_reference(curve: list[float], threshold: float = 1.0002) -> list[int]:
    """The epochs at which GroundHog's mainLoop halves, with a check after every epoch and
    patience 1, written as the code is: exp(bits) against old_cost = 1e21 (float64)."""
    old, out = 1e21, []
    for epoch, nll in enumerate(curve, 1):
        valcost = math.exp(nll / math.log(2.0))
        if valcost > old * threshold:
            out.append(epoch)
        elif valcost < old:
            old = valcost
    return out


def test_groundhog_rule_in_training_halves_and_restores_the_best_weights(tiny, tmp_path):
    data, _ = load_music_data(str(tiny))
    lrs, states, velocity = [], [], []

    def record(trainer, event):   # runs after train_resumable's restore
        if event == "epoch":
            lrs.append(trainer.optimizer.param_groups[0]["lr"])
            states.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
            velocity.append(sum(float(s["velocity"].abs().sum())
                                for s in trainer.optimizer.state.values()))

    res = mt.train_resumable(dr.build_network("RNN", 3, seed=0), data, _gh_plan(6), seed=0,
                             run_dir=tmp_path / "r", callbacks=[record])
    halved = [e for e in range(1, 7) if lrs[e - 1] < (lrs[e - 2] if e > 1 else 1.0)]
    assert halved == _gh_reference(res.valid_curve) == [4, 5, 6]   # hand-read from the curve
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
    for epoch in halved:
        best = min(range(epoch), key=lambda e: res.valid_curve[e]) + 1
        assert best == 3
        # the restore copies the very tensors cloned at the best epoch: bit equality is right
        for k, v in states[epoch - 1].items():
            assert torch.equal(v, states[best - 1][k]), (epoch, k)
        assert velocity[epoch - 1] > 0     # GroundHog keeps the velocity (no reset)
    assert res.best_epoch == 3


def test_groundhog_min_lr_stop_at_or_below(tiny, tmp_path):
    """Rates 1, 1, 1, 0.5, 0.25: GroundHog loops while lr > minlr, so min_lr = 0.25 stops
    after epoch 5 (the plateau rule's stop needs a rate below it)."""
    data, _ = load_music_data(str(tiny))
    res = mt.train_resumable(dr.build_network("RNN", 3, seed=0), data,
                             _gh_plan(8, min_lr=0.25), seed=0, run_dir=tmp_path / "r")
    assert res.epochs_run == 5


# U = None: a check after every epoch, halvings after epochs 4, 5, 6; after the resume the
# halvings at 5 and 6 need the reference (12.51, from epoch 3) and the best weights from the
# checkpoint (a lost reference would restart at 33.5 nats and not halve). U = 6 (4 updates per
# epoch): checks after epochs 2, 4, 6; 4 halves (worse than epoch 2's 12.84), 6 is better.
@pytest.mark.parametrize(("check_updates", "lrs"), [
    (None, [1.0, 1.0, 1.0, 0.5, 0.25, 0.125]),
    (6, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]),
])
def test_groundhog_rule_resumes_bit_for_bit(tiny, tmp_path, check_updates, lrs):
    """Stopped after epoch 4 (just after a halving and a restore), resumed to epoch 6: equal
    to the run never stopped, bit for bit (same machine and path)."""
    data, _ = load_music_data(str(tiny))
    plan = _gh_plan(6, lr_check_updates=check_updates)
    seen: list[float] = []
    straight = dr.build_network("RNN", 3, seed=0)
    ref = mt.train_resumable(straight, data, plan, seed=0, run_dir=tmp_path / "a",
                             callbacks=[_lr_recorder(seen)])
    assert seen == lrs

    def stop_after(trainer, event):
        if event == "epoch" and trainer.position.epoch == 4:
            raise KeyboardInterrupt("stopped for the test")

    with pytest.raises(KeyboardInterrupt):
        mt.train_resumable(dr.build_network("RNN", 3, seed=0), data, plan, seed=0,
                           run_dir=tmp_path / "b", callbacks=[stop_after])
    resumed = dr.build_network("RNN", 3, seed=0)
    out = mt.train_resumable(resumed, data, plan, seed=0, run_dir=tmp_path / "b")
    assert out.valid_curve == ref.valid_curve and len(out.valid_curve) == 6
    assert out.test_nll == ref.test_nll
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k


def test_bad_groundhog_settings_are_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="lr_rule must be one of"):
        dataclasses.replace(_plan(2), lr_rule="keras")
    with pytest.raises(ValueError, match="needs lr_halving"):
        dataclasses.replace(_plan(2), lr_rule="groundhog", lr_halving=None)
    with pytest.raises(ValueError, match="lr_patience must be an int >= 1, got 0"):
        dataclasses.replace(_plan(2), lr_rule="groundhog", lr_patience=0)
    with pytest.raises(ValueError, match="applies to lr_rule='groundhog' only"):
        dataclasses.replace(_plan(2), lr_patience=2)
    opt, _ = _groundhog()
    with pytest.raises(ValueError, match=r"cost_threshold must be >= 1\.0"):
        mt.GroundHogHalving(opt, updates_per_epoch=4, check_updates=1, cost_threshold=0.99)
    with pytest.raises(ValueError, match=r"divide_lr must be > 1\.0"):
        mt.GroundHogHalving(opt, updates_per_epoch=4, check_updates=1, cost_threshold=1.0,
                            divide_lr=1.0)
    # a run cannot change the rule's patience on resume
    _refused_on_resume(tiny, tmp_path, _gh_plan(1), {"lr_patience": 2}, "lr_patience")


# -- the experiment ---------------------------------------------------------------------------
def test_paper_preset_on_tiny_sizes_checkpoints_and_resumes(tiny, tmp_path):
    opts = {"data": str(tiny), "preset": "paper", "hidden-size": "4", "epochs": "3",
            "seeds": "0", "models": "RNN,DOT(S)-RNN", "lr": "0.05", "momentum": "0.5"}
    result, run_dir = run_experiment("deep-rnn", opts, out_dir=tmp_path / "run")
    assert result.figures["preset"] == "paper"
    assert "batch 1" in result.figures["budget"] and "SGD lr 0.05" in result.figures["budget"]
    for job in ("RNN-seed0", "DOTS-RNN-seed0"):
        assert (run_dir / JOBS / job / "checkpoint.pt").is_file()
    for name in ("RNN", "DOT(S)-RNN"):
        assert math.isfinite(result.rows[0][name]) and result.rows[0][name] < COIN_FLIP
    # the registry's --resume takes the finished trainers' checkpoints: same table
    again, _ = run_experiment("deep-rnn", {}, out_dir=run_dir, resume=True)
    assert again.rows[0] == result.rows[0]
    assert "GroundHog init" in result.figures["budget"]
    # a paper run saved before the preset had init=groundhog is not finished with it
    config = json.loads((run_dir / "config.json").read_text())
    del config["config"]["init"]
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="started before the preset initialised"):
        run_experiment("deep-rnn", {}, out_dir=run_dir, resume=True)


def test_default_run_plots_nll_against_epochs_from_the_logged_values(tiny, tmp_path):
    result, run_dir = run_experiment(
        "deep-rnn",
        {"data": str(tiny), "hidden-size": "6", "epochs": "3", "seeds": "0,1",
         "models": "RNN,DT(S)-RNN,GRU", "batch-size": "3", "lr": "0.05", "patience": "5"},
        out_dir=tmp_path / "run")
    assert (run_dir / "deep_rnn_nll_epochs.png").is_file()
    assert (run_dir / "deep_rnn.png").is_file()
    logged: dict[str, list[list[float]]] = {}
    for row in _read_csv(run_dir / "metrics.csv"):
        logged.setdefault(row["model"], []).append(
            [float(v) for v in row["valid_curve"].split(";")])
    curves = result.figures["nll_curves"]
    assert set(curves) == set(logged) == {"RNN", "DT(S)-RNN", "GRU"}
    for name, per_seed in logged.items():
        length = min(len(c) for c in per_seed)
        assert len(curves[name]) == length == 3
        for e in range(length):
            mean = sum(c[e] for c in per_seed) / len(per_seed)
            assert abs(curves[name][e] - mean) <= READ_BACK
    # the budget and the checked published figure, beside ours, with the difference
    assert "budget: at most 3 epochs" in result.title
    by_row = {r["row"]: r for r in result.rows}
    published = by_row[dr.CHUNG_2014]
    # Chung et al. 2014, Table 2 (JSB test): tanh RNN 9.10, GRU 8.54; no figure for DT(S)-RNN
    assert published["GRU"] == 8.54 and published["RNN"] == 9.10
    assert published["DT(S)-RNN"] is None
    assert by_row["ours minus published"]["GRU"] == result.rows[0]["GRU"] - 8.54
    assert by_row["ours minus published"]["RNN"] == result.rows[0]["RNN"] - 9.10
    assert "8.54" in result.summary and "9.10" in result.summary and "budget" in result.summary


def test_the_plot_draws_the_curves_it_reports():
    import matplotlib.pyplot as plt

    runs = {"RNN": [{"curve": [9.0, 8.5, 8.25]}, {"curve": [9.5, 8.0]}],
            "sRNN": [{"curve": [10.0, 9.0, 8.0]}]}
    fig, ax = plt.subplots()
    plot_mean_valid_curves(ax, runs, 11.0)
    drawn = {line.get_label(): list(line.get_ydata()) for line in ax.lines
             if not line.get_label().startswith("_")}
    plt.close(fig)
    assert drawn == dr.nll_curves(runs) == {"RNN": [9.25, 8.25], "sRNN": [10.0, 9.0, 8.0]}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_paper_preset_runs_on_cuda(tiny, tmp_path):
    result, run_dir = run_experiment(
        "deep-rnn", {"data": str(tiny), "preset": "paper", "hidden-size": "4", "epochs": "2",
                     "seeds": "0", "models": "DT(S)-RNN", "lr": "0.05", "device": "cuda"},
        out_dir=tmp_path / "run")
    assert math.isfinite(result.rows[0]["DT(S)-RNN"])
    ckpt = torch.load(run_dir / JOBS / "DTS-RNN-seed0" / "checkpoint.pt", weights_only=False)
    assert all(t.device.type == "cuda" for t in ckpt["model"].values())
