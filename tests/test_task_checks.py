"""The argument checks the task generators share (``rnnlab.tasks._checks``, ``rnnlab._validation``)
and the music experiments' shared training pieces, after they replaced private copies."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from rnnlab import _random
from rnnlab.experiments import _music_training as mt
from rnnlab.tasks import _checks
from rnnlab.tasks.chaotic import henon, lorenz
from rnnlab.tasks.long_term import delayed_recall, temporal_order
from rnnlab.tasks.text import char_batches


def test_old_import_paths_give_the_shared_checks():
    # rnnlab.tasks.narma is also the name of a function in rnnlab.tasks: import the module
    narma = importlib.import_module("rnnlab.tasks.narma")
    assert narma.check_float_dtype is _checks.check_float_dtype
    assert narma.make_generator is _random.make_generator


@pytest.mark.parametrize("bad", [torch.int64, torch.bool, "float32", None])
def test_check_float_dtype_names_the_problem(bad):
    with pytest.raises(TypeError, match=r"dtype must be a floating-point torch\.dtype"):
        _checks.check_float_dtype(bad)
    assert _checks.check_float_dtype(torch.float16) is torch.float16


def test_check_choice_lists_the_choices():
    assert _checks.check_choice("variant", "b", ("a", "b")) == "b"
    with pytest.raises(ValueError, match=r"variant must be one of \['a', 'b'\], got 'c'"):
        _checks.check_choice("variant", "c", ("a", "b"))
    with pytest.raises(ValueError, match="variant must be one of"):
        temporal_order(2, 20, variant="pascanu")
    with pytest.raises(ValueError, match="split must be one of"):
        next(char_batches("abcdefgh", 2, 1, split="dev"))  # a generator: checks on first use


@pytest.mark.parametrize("call", [
    lambda: henon(5, a=math.nan), lambda: henon(5, b=math.inf),
    lambda: lorenz(5, sigma=math.inf), lambda: lorenz(5, dt=-0.01), lambda: lorenz(5, dt=0.0),
    lambda: lorenz(5, washout=-1.0)])
def test_chaotic_parameters_out_of_range(call):
    with pytest.raises(ValueError, match="must be"):
        call()


def test_chaotic_parameters_of_the_wrong_type():
    with pytest.raises(TypeError, match="a must be a number"):
        henon(5, a="1.4")
    # numpy scalars (what a parameter grid hands over) are numbers
    assert torch.equal(henon(5, a=np.float64(1.4)), henon(5, a=1.4))


def test_recall_tolerance_checked_as_a_positive_number():
    for bad in (0.0, -0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="tolerance"):
            delayed_recall(2, 6, tau=2, distribution="uniform", tolerance=bad)
    with pytest.raises(TypeError, match="tolerance"):
        delayed_recall(2, 6, tau=2, distribution="uniform", tolerance="0.1")
    task = delayed_recall(2, 6, tau=2, distribution="uniform", tolerance=np.float32(0.25))
    assert task.params["tolerance"] == 0.25


def test_train_result_metrics_columns():
    res = mt.TrainResult(train_nll=1.0, valid_nll=2.0, test_nll=3.0, best_epoch=2, epochs_run=3,
                         diverged=False, seconds=1.23456, valid_curve=[2.5, 2.0])
    assert res.metrics() == {
        "test_nll": 3.0, "valid_nll": 2.0, "train_nll": 1.0, "best_epoch": 2, "epochs_run": 3,
        "diverged": False, "seconds": 1.23, "valid_curve": "2.5000;2.0000"}


def test_plot_mean_valid_curves_averages_over_runs_cut_to_the_shortest():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    runs = {"a": [{"curve": [3.0, 2.0, 1.0]}, {"curve": [5.0, 4.0]}], "b": [{"curve": []}]}
    mt.plot_mean_valid_curves(ax, runs, 7.0, baseline_label="key frequencies")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["a"].get_xdata()) == [1, 2]
    assert list(lines["a"].get_ydata()) == [4.0, 3.0]
    assert "b" not in lines  # no curve: nothing drawn
    assert list(lines["key frequencies"].get_ydata()) == [7.0, 7.0]
    plt.close(fig)
