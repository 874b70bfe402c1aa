import math

import pytest
import torch

from rnnlab import ElmanRNN
from rnnlab.learning import BPTT, RTRL, EpochTrainer, OnlineTrainer, RunningLoss
from rnnlab.tasks import one_step_ahead, sine_mixture, stream_one_step_ahead


def test_running_loss_closed_form():
    r = RunningLoss(beta=0.5)
    for v in (4.0, 2.0, 1.0):
        r.update(v)
    # EMA with bias correction: (0.5*(0.5*0.5*4 + 0.5*2) + 0.5*1) / (1 - 0.125)
    ema = 0.5 * (0.5 * (0.5 * 4) + 0.5 * 2) + 0.5 * 1
    assert r.value == pytest.approx(ema / (1 - 0.5**3))
    assert r.mean == pytest.approx(7 / 3)
    assert math.isnan(RunningLoss().value)


def test_online_rtrl_learns_a_sine_stream():
    torch.manual_seed(0)
    model = ElmanRNN(1, 8, 1, readout="identity")
    rule = RTRL(model)
    trainer = OnlineTrainer(rule, torch.optim.SGD(model.parameters(), lr=0.05), clip_norm=1.0)
    series = sine_mixture(1500, periods=(17.0,), amplitudes=(0.8,))
    losses = []
    trainer.run(stream_one_step_ahead(series.tolist()),
                callback=lambda t, o, y, run: losses.append(float((o - y).pow(2).sum())))
    first, last = sum(losses[:100]) / 100, sum(losses[-100:]) / 100
    assert last < 0.1 * first
    # the learned predictor beats "x(t+1) = x(t)"
    naive = float((series[1:] - series[:-1]).pow(2)[-100:].mean())
    assert last < naive


def test_online_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = ElmanRNN(1, 4, 1, readout="identity")
    before = [p.detach().clone() for p in model.parameters()]
    trainer = OnlineTrainer(RTRL(model), torch.optim.SGD(model.parameters(), lr=1.0),
                            clip_norm=1e-3)
    trainer.step(torch.tensor([3.0]), torch.tensor([50.0]))
    delta = torch.cat([(p.detach() - b).flatten()
                       for p, b in zip(model.parameters(), before, strict=True)])
    assert delta.norm() == pytest.approx(1e-3, rel=1e-3)


def test_online_truncated_bptt_updates_once_per_chunk():
    model = ElmanRNN(1, 3, 1)
    rule = BPTT(model, truncation=5)
    trainer = OnlineTrainer(rule, torch.optim.SGD(model.parameters(), lr=0.1))
    w = model.W.detach().clone()
    for t in range(4):
        trainer.step(torch.tensor([float(t)]), torch.tensor([0.1]))
    assert torch.equal(model.W.detach(), w)
    trainer.step(torch.tensor([1.0]), torch.tensor([0.1]))
    assert not torch.equal(model.W.detach(), w)


def test_epoch_trainer_reduces_loss():
    torch.manual_seed(0)
    series = sine_mixture(401, periods=(13.0, 29.0))
    x, y = one_step_ahead(series)
    x, y = x.reshape(8, 50, 1), y.reshape(8, 50, 1)
    model = ElmanRNN(1, 10, 1, readout="identity")
    trainer = EpochTrainer(BPTT(model, truncation=25), torch.optim.Adam(model.parameters(), 1e-2),
                           clip_norm=5.0)
    history = trainer.fit(x, y, epochs=40, batch_size=4)
    assert len(history) == 40
    assert history[-1] < 0.1 * history[0]


def test_trainer_bad_arguments():
    model = ElmanRNN(1, 3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="clip_norm"):
        OnlineTrainer(RTRL(model), opt, clip_norm=0.0)
    with pytest.raises(TypeError, match="BPTT"):
        EpochTrainer(RTRL(model), opt)
    with pytest.raises(ValueError, match="beta"):
        RunningLoss(beta=1.0)
    trainer = EpochTrainer(BPTT(model), opt)
    with pytest.raises(ValueError, match="sequences"):
        trainer.fit(torch.randn(4, 5, 1), torch.randn(3, 5, 1), epochs=1, batch_size=2)


def test_online_value_clipping_and_nonfinite_skip():
    from rnnlab.learning.clipping import GradientClipper

    model = ElmanRNN(1, 3, 1, readout="identity")
    before = [p.detach().clone() for p in model.parameters()]
    trainer = OnlineTrainer(RTRL(model), torch.optim.SGD(model.parameters(), lr=1.0),
                            clipper=GradientClipper("value", 1e-3))
    trainer.step(torch.tensor([3.0]), torch.tensor([50.0]))
    deltas = [(p.detach() - b).abs().max() for p in model.parameters() for b in [before.pop(0)]]
    assert max(deltas) == pytest.approx(1e-3, rel=1e-5)
    # a NaN gradient (here from a NaN weight in the readout) is dropped, the step skipped
    with torch.no_grad():
        model.c.fill_(float("nan"))
    w = model.W.detach().clone()
    with pytest.warns(RuntimeWarning, match="non-finite"):
        trainer.step(torch.tensor([0.5]), torch.tensor([0.1]))
    assert torch.equal(model.W.detach(), w) and trainer.clipper.skipped == 1
    with pytest.raises(ValueError, match="not both"):
        OnlineTrainer(RTRL(model), torch.optim.SGD(model.parameters(), lr=1.0), clip_norm=1.0,
                      clipper=GradientClipper("value", 1.0))
