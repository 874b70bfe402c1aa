"""rnnlab.train.Trainer: the trainer adds nothing to the math (a hand-written loop gives the same
bits), and a run killed midway and resumed from its checkpoint gives bit-identical parameters and
metrics files.

Bit equality (``torch.equal``, byte-equal files) is the right comparison here, not a tolerance:
the runs compared execute the same code path, on the same machine, with the same thread count
and library versions, so every floating-point operation happens in the same order on the same
values. A tolerance would hide a resume that is merely close (a lost RNG draw, a skipped or
repeated minibatch, an optimizer moment not restored).
"""

# ruff: noqa: NPY002  (the global numpy generator is what a checkpoint must restore)

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch

from rnnlab import ElmanRNN, GRUCell, LSTMCell, RecurrentNetwork
from rnnlab.learning import BPTT, RTRL, UORO, ForwardModeRTRL, GradientClipper, SnAp1
from rnnlab.learning.base import squared_error
from rnnlab.optim import HessianFree
from rnnlab.train import CHECKPOINT_NAME, CheckpointError, Trainer, load_checkpoint


class Kill(RuntimeError):
    """Stands for a crash at a chosen step."""


def kill_at(step: int, exc: type[BaseException] = Kill):
    def callback(trainer: Trainer, event: str) -> None:
        if event == "step" and trainer.position.step == step:
            raise exc(f"killed at step {step}")

    return callback


def gru_net(hidden: int = 4, dtype: torch.dtype = torch.float32) -> RecurrentNetwork:
    cell = GRUCell(2, hidden, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return RecurrentNetwork(cell, 1, generator=torch.Generator().manual_seed(2))


def data(n: int = 10, steps: int = 6, seed: int = 0, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, steps, 2, generator=gen, dtype=dtype)
    y = torch.sin(x.cumsum(1)[..., :1])
    return x, y


def noisy_loss(o: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Squared error against targets jittered by torch's, numpy's and Python's global
    generators: a resume that did not restore all three would diverge."""
    jitter = 1e-3 * (torch.randn(y.shape, dtype=y.dtype) + float(np.random.rand())
                     + random.random())
    return squared_error(o, y + jitter)


def files(run_dir) -> tuple[bytes, bytes]:
    return ((run_dir / "metrics.csv").read_bytes(), (run_dir / "metrics.jsonl").read_bytes())


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# -- the trainer adds nothing -------------------------------------------------------------------
@pytest.mark.parametrize("truncation", [None, 2])
def test_matches_hand_written_loop(truncation):
    x, y = data()
    model = gru_net()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    trainer = Trainer(model, opt, BPTT(model, truncation), batch_size=4, seed=7, progress=False)
    rows = trainer.fit((x, y), epochs=3)

    ref = gru_net()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(7)
    k = x.shape[1] if truncation is None else truncation
    losses = []
    for _ in range(3):
        order = torch.randperm(x.shape[0], generator=gen)
        total = 0.0
        for start in range(0, x.shape[0], 4):
            idx = order[start : start + 4]
            xb, yb = x[idx], y[idx]
            ref_opt.zero_grad(set_to_none=True)
            h = None
            for s in range(0, x.shape[1], k):
                out, h = ref(xb[:, s : s + k], None if h is None else h.detach())
                loss = squared_error(out, yb[:, s : s + k])
                loss.backward()
                total += float(loss.detach())
            ref_opt.step()
        losses.append(total / x.shape[0])
    assert_same_params(model, ref)
    assert [r["train_loss"] for r in rows] == losses


def test_online_and_hessian_free_match_hand_written_loops():
    # RTRL on a stream: one rule.step and one SGD step per item
    model, rule = _online("rtrl")
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), rule, progress=False
            ).fit_stream(_stream(25))
    ref, ref_rule = _online("rtrl")
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    for x_t, y_t in _stream(25):
        ref_rule.step(x_t.unsqueeze(0), y_t.unsqueeze(0))
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert_same_params(model, ref)

    # HessianFree: one step(forward, loss) per minibatch of the seeded permutation
    x, y = data(8, steps=4)
    nets = []
    for _ in range(2):
        net = ElmanRNN(2, 3, 1, readout="identity")
        with torch.no_grad():
            gen = torch.Generator().manual_seed(2)
            for p in net.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        nets.append((net, HessianFree(net.parameters(), model=net, max_cg_iters=6)))
    Trainer(*nets[0], batch_size=4, seed=1, progress=False).fit((x, y), 2)
    net, hf = nets[1]
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        order = torch.randperm(8, generator=gen)
        for start in (0, 4):
            xb, yb = x[order[start : start + 4]], y[order[start : start + 4]]
            hf.step(forward=lambda xb=xb: net(xb)[0],
                    loss=lambda out, yb=yb: squared_error(out, yb))
    assert_same_params(nets[0][0], net)


def test_masked_loss_equals_shorter_sequences():
    # Outputs are causal, so a mask that drops the last half of every sequence gives the same
    # loss and gradient as training on the first half. Different op order: float64, rtol 1e-12.
    x, y = data(dtype=torch.float64)
    mask = torch.zeros(x.shape[:2])
    mask[:, :3] = 1
    a, b = gru_net(dtype=torch.float64), gru_net(dtype=torch.float64)
    Trainer(a, torch.optim.SGD(a.parameters(), lr=0.05), batch_size=5, progress=False
            ).fit((x, y, mask), 2)
    Trainer(b, torch.optim.SGD(b.parameters(), lr=0.05), batch_size=5, progress=False
            ).fit((x[:, :3], y[:, :3]), 2)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)
        assert not torch.equal(pa, gru_net(dtype=torch.float64).get_parameter(
            next(n for n, p in a.named_parameters() if p is pa)))


# -- resume ---------------------------------------------------------------------------------
def _bptt_trainer(run_dir, callbacks=(), **kw):
    # the same global generators at every start; a resumed run must replace them by the saved
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    model = gru_net()
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return Trainer(model, opt, BPTT(model, truncation=3), loss=noisy_loss, scheduler=sched,
                   clip=1.0, batch_size=3, seed=3, patience=3, run_dir=run_dir,
                   checkpoint_every=2, metrics_every=3, progress=False, callbacks=callbacks,
                   **kw)


def test_resume_bptt_adam_gated_bit_identical(tmp_path):
    x, y = data()
    val = data(6, seed=1)
    full = _bptt_trainer(tmp_path / "full")
    full.fit((x, y), 4, val=val)
    rng_after = (torch.get_rng_state(), np.random.rand(), random.random())

    killed = _bptt_trainer(tmp_path / "run", [kill_at(7)])
    with pytest.raises(Kill):
        killed.fit((x, y), 4, val=val)
    assert load_checkpoint(tmp_path / "run")["position"]["step"] == 6  # the last one kept
    resumed = _bptt_trainer(tmp_path / "run").resume()
    resumed.fit((x, y), 4, val=val)

    assert_same_params(full.model, resumed.model)
    assert files(tmp_path / "full") == files(tmp_path / "run")
    assert full.history == resumed.history
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for k in sa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[k][name], sb[k][name])
    assert full.scheduler.state_dict() == resumed.scheduler.state_dict()
    assert torch.equal(torch.get_rng_state(), rng_after[0])
    assert (np.random.rand(), random.random()) == rng_after[1:]
    assert torch.equal(full.generator.get_state(), resumed.generator.get_state())


@pytest.mark.parametrize("how", ["keyboard", "sigterm"])
def test_interrupt_writes_checkpoint_at_that_step(tmp_path, how):
    x, y = data()

    def sigterm(trainer, event):
        if event == "step" and trainer.position.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    full = _bptt_trainer(tmp_path / "full", checkpoint_every_epochs=100)
    full.fit((x, y), 3)
    cb = kill_at(5, KeyboardInterrupt) if how == "keyboard" else sigterm
    killed = _bptt_trainer(tmp_path / "run", [cb], checkpoint_every_epochs=100)
    with pytest.raises(KeyboardInterrupt):
        killed.fit((x, y), 3)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back
    assert load_checkpoint(tmp_path / "run")["position"]["step"] == 5
    resumed = _bptt_trainer(tmp_path / "run", checkpoint_every_epochs=100).resume()
    resumed.fit((x, y), 3)
    assert_same_params(full.model, resumed.model)
    assert files(tmp_path / "full") == files(tmp_path / "run")


def _online(kind: str):
    gen = torch.Generator().manual_seed(5)
    if kind == "rtrl":
        model = ElmanRNN(2, 4, 1, readout="identity")
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(0.4 * torch.randn(p.shape, generator=gen))
        rule = RTRL(model)
    else:
        cell = (LSTMCell(2, 3, generator=gen) if kind == "fwd"
                else GRUCell(2, 3, generator=gen))
        model = RecurrentNetwork(cell, 1, generator=gen)
        rule = {"fwd": ForwardModeRTRL, "uoro": UORO, "snap": SnAp1}.get(kind)
        rule = BPTT(model, truncation=4) if rule is None else rule(model)
    return model, rule


def _stream(n: int = 40):
    t = torch.arange(n + 1, dtype=torch.float32)
    u = torch.stack([torch.sin(0.3 * t), torch.cos(0.17 * t)], 1)
    return [(u[i], u[i + 1, :1]) for i in range(n)]


@pytest.mark.parametrize("kind", ["rtrl", "bptt", "uoro", "snap", "fwd"])
def test_resume_online_stream_bit_identical(tmp_path, kind):
    def make(run_dir, callbacks=()):
        model, rule = _online(kind)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
        return Trainer(model, opt, rule, clip=GradientClipper("value", 0.5), run_dir=run_dir,
                       checkpoint_every=6, metrics_every=5, progress=False,
                       callbacks=callbacks)

    stream = _stream(30 if kind == "fwd" else 40)
    full = make(tmp_path / "full")
    full.fit_stream(stream)
    killed = make(tmp_path / "run", [kill_at(15)])
    with pytest.raises(Kill):
        killed.fit_stream(stream)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["position"]["step"] == 12
    if kind == "rtrl":  # the influence tensors travel in the checkpoint
        assert set(ckpt["rule"]["influence"]) == {"W", "U", "b"}
        assert ckpt["rule"]["influence"]["W"].abs().sum() > 0
    resumed = make(tmp_path / "run").resume()
    resumed.fit_stream(stream)
    assert_same_params(full.model, resumed.model)
    assert files(tmp_path / "full") == files(tmp_path / "run")
    if kind == "rtrl":
        for key, value in full.rule.influence.items():
            assert torch.equal(value, resumed.rule.influence[key])
    if kind == "uoro":
        assert torch.equal(full.rule.theta_tilde, resumed.rule.theta_tilde)


def test_resume_hessian_free_bit_identical(tmp_path):
    x, y = data(12, steps=5)

    def make(run_dir, callbacks=()):
        model = ElmanRNN(2, 3, 1, readout="identity")
        with torch.no_grad():
            gen = torch.Generator().manual_seed(2)
            for p in model.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        opt = HessianFree(model.parameters(), damping=1.0, model=model, max_cg_iters=8)
        return Trainer(model, opt, batch_size=6, run_dir=run_dir, checkpoint_every=1,
                       progress=False, callbacks=callbacks)

    full = make(tmp_path / "full")
    full.fit((x, y), 3)
    killed = make(tmp_path / "run", [kill_at(4)])
    with pytest.raises(Kill):
        killed.fit((x, y), 3)
    resumed = make(tmp_path / "run").resume()
    resumed.fit((x, y), 3)
    assert_same_params(full.model, resumed.model)
    assert files(tmp_path / "full") == files(tmp_path / "run")
    assert full.optimizer.damping == resumed.optimizer.damping
    assert torch.equal(full.optimizer.state["cg_init"], resumed.optimizer.state["cg_init"])


# -- refusing the wrong checkpoint, keeping finished work -----------------------------------
def test_refuses_other_model_or_version_and_changes_nothing(tmp_path):
    x, y = data()
    run = tmp_path / "run"
    first = _bptt_trainer(run, [kill_at(5)])
    with pytest.raises(Kill):
        first.fit((x, y), 2)
    before_files = files(run)

    model = gru_net(hidden=5)  # another architecture
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    other = Trainer(model, opt, BPTT(model, truncation=3), run_dir=run, progress=False)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="model"):
        other.resume()
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())
    assert other.position.step == 0 and files(run) == before_files

    same_model = _bptt_trainer(run)
    same_model.batch_size = 4  # a trainer setting that changes the run
    with pytest.raises(CheckpointError, match="trainer"):
        same_model.resume()

    ckpt = torch.load(run / CHECKPOINT_NAME, weights_only=True)
    ckpt["format_version"] = 99
    torch.save(ckpt, run / CHECKPOINT_NAME)
    fresh = _bptt_trainer(run)
    params = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    with pytest.raises(CheckpointError, match="version 99"):
        fresh.resume()
    assert all(torch.equal(params[k], v) for k, v in fresh.model.state_dict().items())
    assert files(run) == before_files


def test_failure_keeps_last_checkpoint_and_metrics(tmp_path):
    x, y = data()
    run = tmp_path / "run"
    trainer = _bptt_trainer(run, [kill_at(9)])
    with pytest.raises(Kill):
        trainer.fit((x, y), 5)
    ckpt = load_checkpoint(run)
    assert ckpt["position"] == {"epoch": 2, "batch": 0, "step": 8, "updates": 8, "done": False}
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("kind,epoch,step")
    assert sum(line.startswith("epoch,") for line in lines) == 2
    with pytest.raises(FileExistsError, match="resume"):
        _bptt_trainer(run).fit((x, y), 5)
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    x, y = data()
    run = tmp_path / "run"
    trainer = _bptt_trainer(run, [kill_at(3)])
    with pytest.raises(Kill):
        trainer.fit((x, y), 2)
    good = (run / CHECKPOINT_NAME).read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    assert (run / CHECKPOINT_NAME).read_bytes() == good
    assert sorted(p.name for p in run.iterdir()) == [CHECKPOINT_NAME, "metrics.csv",
                                                     "metrics.jsonl"]


# -- early stopping ---------------------------------------------------------------------------
def test_early_stopping_patience_min_delta_and_best_restore(monkeypatch):
    x, y = data()
    model = gru_net()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), batch_size=5,
                      patience=2, min_delta=0.1, progress=False)
    # 2.95 is not better than 3.0 by more than min_delta; 2.0 is; then two bad epochs
    scripted = iter([3.0, 2.95, 2.0, 1.95, 2.5, 0.0])
    monkeypatch.setattr(trainer, "evaluate", lambda data: next(scripted))
    snapshots = []
    trainer.callbacks.append(lambda t, event: event == "epoch" and snapshots.append(
        {k: v.clone() for k, v in t.model.state_dict().items()}))
    rows = trainer.fit((x, y), 10, val=(x, y))
    assert [r["best"] for r in rows] == [True, False, True, False, False]
    assert trainer.stopped_early and trainer.best_epoch == 2 and trainer.best == 2.0
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[2][k])
    assert not torch.equal(snapshots[2]["readout.weight"], snapshots[4]["readout.weight"])


# -- bad input ------------------------------------------------------------------------------
def test_bad_input_errors(tmp_path):
    model = gru_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data()
    trainer = Trainer(model, opt, progress=False)
    with pytest.raises(ValueError, match="targets"):
        trainer.fit((x, y[:, :4]), 1)
    with pytest.raises(ValueError, match="mask"):
        trainer.fit((x, y, torch.ones(10, 5)), 1)
    with pytest.raises(TypeError, match="train must be"):
        trainer.fit(x, 1)
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(model, opt, batch_size=0)
    with pytest.raises(ValueError, match="truncation"):
        Trainer(model, opt, progress=False).fit_stream(_stream(3))
    hf = HessianFree(model.parameters(), model=model)
    with pytest.raises(ValueError, match="clip"):
        Trainer(model, hf, clip=1.0)
    with pytest.raises(ValueError, match="another model"):
        Trainer(model, opt, BPTT(gru_net()))
    with pytest.raises(ValueError, match="resume needs run_dir"):
        Trainer(model, opt).resume()


def test_progress_bar_runs(capsys):
    x, y = data()
    model = gru_net()
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), batch_size=5,
            progress=True).fit((x, y), 1)
    assert "train" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda_bit_identical(tmp_path):
    x, y = (t.cuda() for t in data())

    def make(run_dir, callbacks=()):
        model = gru_net().cuda()
        opt = torch.optim.Adam(model.parameters(), lr=0.03)
        return Trainer(model, opt, batch_size=3, run_dir=run_dir, checkpoint_every=2,
                       progress=False, callbacks=callbacks)

    full = make(tmp_path / "full")
    full.fit((x, y), 3)
    with pytest.raises(Kill):
        make(tmp_path / "run", [kill_at(5)]).fit((x, y), 3)
    resumed = make(tmp_path / "run").resume()
    resumed.fit((x, y), 3)
    assert_same_params(full.model, resumed.model)
    assert files(tmp_path / "full") == files(tmp_path / "run")
