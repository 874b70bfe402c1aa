"""``ResumableTraining(nesterov=True)``: the optimizer of the music experiments' resumable path
against a hand-written Nesterov update, the combinations that have no Nesterov form, and the
trainer actually receiving it."""

import copy

import pytest
import torch

from rnnlab.experiments import _music_training as mt
from rnnlab.experiments import lstm_variants as lv


def _tiny_problem():
    net = lv.build_lstm_network("vanilla", 3, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(2, 6, 88, generator=gen, dtype=torch.float64) < 0.1).double()
    y = (torch.rand(2, 6, 88, generator=gen, dtype=torch.float64) < 0.1).double()
    return net, x, y


def _loss(net, x, y):
    out, _ = net(x)
    return mt.frame_nll_loss(out, y, None)


def _run(opt, net, x, y, steps):
    for _ in range(steps):
        opt.zero_grad()
        _loss(net, x, y).backward()
        opt.step()


def test_nesterov_sgd_equals_the_hand_written_update():
    lr, m, steps = 0.05, 0.9, 5
    net, x, y = _tiny_problem()
    ref, heavy = copy.deepcopy(net), copy.deepcopy(net)
    cfg = mt.ResumableTraining(epochs=1, lr=lr, momentum=m, clip_norm=None, nesterov=True)
    opt, clip = mt.build_optimizer(list(net.parameters()), cfg)
    assert clip is None and type(opt) is torch.optim.SGD
    _run(opt, net, x, y, steps)

    # by hand (Sutskever et al. 2013 in torch's form): v <- m v + g; p <- p - lr (g + m v)
    params = list(ref.parameters())
    vel = [torch.zeros_like(p) for p in params]
    for _ in range(steps):
        grads = torch.autograd.grad(_loss(ref, x, y), params, allow_unused=True)
        with torch.no_grad():
            for p, v, g in zip(params, vel, grads, strict=True):
                g = torch.zeros_like(p) if g is None else g
                v.copy_(m * v + g)
                p.copy_(p - lr * (g + m * v))
    # float64: the two paths differ only in the rounding of a few fused vs separate products
    # per step (~1e-16 relative), carried through 5 steps of a smooth map: far below 1e-11
    for got, want in zip(net.parameters(), params, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)

    # the test can fail: heavy-ball momentum (nesterov=False) ends far from the same point
    hb, _ = mt.build_optimizer(list(heavy.parameters()),
                               mt.ResumableTraining(epochs=1, lr=lr, momentum=m, clip_norm=None))
    _run(hb, heavy, x, y, steps)
    gap = max(float((a - b).detach().abs().max()) for a, b in zip(heavy.parameters(), params,
                                                          strict=True))
    assert gap > 1e-3  # measured 0.10 (the Nesterov paths agree to 1e-16)


def test_nesterov_sgd_is_sutskever_et_al_with_look_ahead_parameters():
    # Sutskever, Martens, Dahl & Hinton 2013, eq. (3)-(4): the gradient at the look-ahead point,
    #   v <- m v - lr grad f(theta + m v);  theta <- theta + v.
    # torch's parameters are that look-ahead point theta + m v (constant lr; e.g. Danihelka,
    # "Nesterov's momentum made simple", 2012): check it on the tiny LSTM
    lr, m, steps = 0.05, 0.9, 5
    net, x, y = _tiny_problem()
    theta = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    ref = copy.deepcopy(net)
    opt, _ = mt.build_optimizer(list(net.parameters()), mt.ResumableTraining(
        epochs=1, lr=lr, momentum=m, clip_norm=None, nesterov=True))
    _run(opt, net, x, y, steps)
    vel = [torch.zeros_like(p) for p in theta]
    params = list(ref.parameters())
    for _ in range(steps):
        with torch.no_grad():  # evaluate the gradient at theta + m v
            for p, t, v in zip(params, theta, vel, strict=True):
                p.copy_(t + m * v)
        grads = torch.autograd.grad(_loss(ref, x, y), params, allow_unused=True)
        with torch.no_grad():
            for t, v, g in zip(theta, vel, grads, strict=True):
                v.copy_(m * v - lr * (torch.zeros_like(t) if g is None else g))
                t.add_(v)
    # a change of variables, so rounding differs step by step (float64, ~1e-16 each)
    for got, t, v in zip(net.parameters(), theta, vel, strict=True):
        torch.testing.assert_close(got.detach(), (t + m * v).detach(), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize(("kw", "match"), [
    ({"optimizer": "adam", "momentum": 0.9, "clip_norm": None}, "optimizer='sgd'"),
    ({"momentum": 0.0, "clip_norm": None}, "momentum > 0"),
    ({"momentum": 0.9, "clip_norm": 1.0}, "ClippedMomentumSGD"),
])
def test_combinations_without_a_nesterov_form_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        mt.ResumableTraining(epochs=1, nesterov=True, **kw)


def test_nesterov_must_be_a_bool_and_defaults_stay_heavy_ball():
    with pytest.raises(TypeError, match="nesterov"):
        mt.ResumableTraining(epochs=1, momentum=0.9, clip_norm=None, nesterov="yes")
    p = [torch.nn.Parameter(torch.zeros(2))]
    # the defaults of the other experiments are unchanged: clipped velocity, or heavy-ball SGD
    opt, clip = mt.build_optimizer(p, mt.ResumableTraining(epochs=1, momentum=0.9))
    assert type(opt) is mt.ClippedMomentumSGD and clip is None
    opt, _ = mt.build_optimizer(p, mt.ResumableTraining(epochs=1, momentum=0.9, clip_norm=None))
    assert opt.param_groups[0]["nesterov"] is False
    opt, clip = mt.build_optimizer(p, mt.ResumableTraining(epochs=1, optimizer="adam"))
    assert type(opt) is torch.optim.Adam and clip == 1.0


def test_train_resumable_hands_nesterov_sgd_to_the_trainer(tmp_path):
    gen = torch.Generator().manual_seed(3)

    def rolls(n):
        return [(torch.rand(7, 88, generator=gen) < 0.1).float() for _ in range(n)]

    data = {"train": rolls(3), "valid": rolls(2), "test": rolls(2)}
    seen = []

    def record(trainer, event):
        seen.append((type(trainer.optimizer), trainer.optimizer.param_groups[0]["nesterov"]))

    cfg = mt.ResumableTraining(epochs=1, lr=0.01, momentum=0.5, clip_norm=None, nesterov=True)
    res = mt.train_resumable(lv.build_lstm_network("vanilla", 3, seed=0), data, cfg, seed=0,
                             run_dir=tmp_path, marginal_bias=False, callbacks=[record])
    assert seen and set(seen) == {(torch.optim.SGD, True)}
    assert res.epochs_run == 1
