"""rnnlab.train.WeightNoise in the Trainer: each update is the optimizer step of the clean
weights with the gradient taken at the weights plus that update's draw (checked against autograd
at the perturbed weights, computed separately), biases are not perturbed, the clean weights come
back bit for bit, validation sees them, and a killed run resumes with the same draws.

Bit equality is used only where the same operations run on the same values (restoring a copy,
resuming on the same machine); the update is compared with a float64 tolerance (one SGD step:
a few roundings of numbers of order one, so 1e-12 is far above the ~1e-15 error and far below the
noise's effect, which is of order std * lr).
"""

from __future__ import annotations

import pytest
import torch

from rnnlab import ElmanCell, RecurrentNetwork
from rnnlab.learning import BPTT, ForwardModeRTRL
from rnnlab.optim import HessianFree
from rnnlab.train import CheckpointError, Trainer, WeightNoise
from rnnlab.train.weight_noise import is_bias
from tests.test_train import data as train_data


class RecordingNoise(WeightNoise):
    """WeightNoise that keeps every draw it makes (the test's view of n)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.made: list[torch.Tensor] = []

    def draw(self, like: torch.Tensor) -> torch.Tensor:
        n = super().draw(like)
        self.made.append(n.clone())
        return n


def net(dtype: torch.dtype = torch.float64) -> RecurrentNetwork:
    cell = ElmanCell(2, 5, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return RecurrentNetwork(cell, 1, generator=torch.Generator().manual_seed(2), dtype=dtype)


def data(n: int = 4, steps: int = 7, seed: int = 0, dtype: torch.dtype = torch.float64):
    return train_data(n, steps, seed, dtype)  # the trainer tests' inputs and targets


def mse(o: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return ((o - y) ** 2).mean()


def test_update_is_clean_weights_minus_lr_times_gradient_at_perturbed_weights():
    lr, std = 0.3, 0.2
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    noise = RecordingNoise(std, seed=5)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=lr), loss=mse,
                      batch_size=4, shuffle=False, progress=False, weight_noise=noise)
    x, y = data()
    trainer.fit((x, y), 1)

    names = [name for name, _ in model.named_parameters()]
    perturbed = [name for name in names if not is_bias(name)]
    assert len(noise.made) == len(perturbed) == 3  # weight_ih, weight_hh, readout.weight
    reference = net()
    reference.load_state_dict(before)
    with torch.no_grad():
        params = dict(reference.named_parameters())
        for name, n in zip(perturbed, noise.made, strict=True):
            params[name].add_(n)
    mse(reference(x)[0], y, None).backward()
    for name, p in reference.named_parameters():
        expected = before[name] - lr * p.grad
        torch.testing.assert_close(model.state_dict()[name], expected, rtol=0, atol=1e-12)
    # the noise mattered: the gradient at the clean weights gives another step
    clean = net()
    clean.load_state_dict(before)
    mse(clean(x)[0], y, None).backward()
    w = "cell.weight_hh"
    assert (model.state_dict()[w] - (before[w] - lr * dict(clean.named_parameters())[w].grad)
            ).abs().max() > 1e-3


def test_draw_statistics_and_seeding():
    a, b = WeightNoise(0.075, seed=3), WeightNoise(0.075, seed=3)
    like = torch.zeros(300, 300)
    first = a.draw(like)
    assert torch.equal(first, b.draw(like))            # same seed, same draw
    assert not torch.equal(first, a.draw(like))        # a fresh draw every time
    assert first.dtype == torch.float32
    # 90,000 N(0, std^2) values: the sample std has relative standard error 1/sqrt(2 n) = 0.24%
    assert abs(float(first.double().std()) / 0.075 - 1) < 0.012
    assert abs(float(first.double().mean())) < 5 * 0.075 / 300


def test_clean_weights_back_bit_for_bit_also_after_an_exception():
    model = net(torch.float32)
    clean = {k: v.clone() for k, v in model.state_dict().items()}
    noise = WeightNoise(0.5, biases=True, seed=0)
    with noise.perturbed(model):
        moved = {k: not torch.equal(v, clean[k]) for k, v in model.state_dict().items()}
    assert all(moved.values())  # biases=True: every parameter was perturbed
    for k, v in model.state_dict().items():
        assert torch.equal(v, clean[k])
    with pytest.raises(RuntimeError, match="boom"), noise.perturbed(model):
        raise RuntimeError("boom")
    for k, v in model.state_dict().items():
        assert torch.equal(v, clean[k])


def test_biases_are_not_perturbed_by_default():
    model = net()
    clean = {k: v.clone() for k, v in model.state_dict().items()}
    with WeightNoise(0.5).perturbed(model):
        for name, p in model.named_parameters():
            assert torch.equal(p, clean[name]) == is_bias(name), name


def test_truncated_bptt_one_draw_per_update_and_validation_sees_clean_weights():
    model = net()
    noise = WeightNoise(0.3, seed=1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1),
                      BPTT(model, 3, reduction="mean"), loss=mse, batch_size=2,
                      shuffle=False, progress=False, weight_noise=noise)
    x, y = data(4, 7)
    xv, yv = data(2, 7, seed=9)  # one validation batch: its loss is the mean squared error
    rows = trainer.fit((x, y), 1, val=(xv, yv))
    assert trainer.position.updates == 2 and noise.draws == 2  # 3 chunks each, one draw
    with torch.no_grad():
        assert rows[-1]["val_loss"] == pytest.approx(float(mse(model(xv)[0], yv, None)),
                                                     rel=1e-12)


def _run(tmp_path, epochs, callbacks=()):
    model = net(torch.float32)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                   loss=mse, batch_size=2, seed=4, run_dir=tmp_path, progress=False,
                   callbacks=list(callbacks), weight_noise=WeightNoise(0.1, seed=7))


def test_resume_draws_the_same_noise(tmp_path):
    x, y = data(6, 5, dtype=torch.float32)
    full = _run(tmp_path / "full", 4)
    full.fit((x, y), 4)

    class Kill(RuntimeError):
        pass

    def kill(trainer, event):
        if event == "epoch" and trainer.position.epoch == 2:
            raise Kill

    killed = _run(tmp_path / "run", 4, [kill])
    with pytest.raises(Kill):
        killed.fit((x, y), 4)
    resumed = _run(tmp_path / "run", 4).resume()
    resumed.fit((x, y), 4)
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.weight_noise.draws == full.weight_noise.draws == 12

    # another noise, or none, is refused and loads nothing
    model = net(torch.float32)
    other = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), loss=mse,
                    batch_size=2, seed=4, run_dir=tmp_path / "run", progress=False,
                    weight_noise=WeightNoise(0.2, seed=7))
    with pytest.raises(CheckpointError):
        other.resume()
    model = net(torch.float32)
    none = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), loss=mse,
                   batch_size=2, seed=4, run_dir=tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError):
        none.resume()


def test_mid_epoch_resume_with_clipping_and_truncation(tmp_path):
    """Killed in the middle of an epoch (a checkpoint every step), clipped gradients,
    truncated BPTT: the resumed run ends with the same weights and draws."""
    x, y = data(6, 5, dtype=torch.float32)

    def make(run_dir, callbacks=()):
        model = net(torch.float32)
        return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9),
                       BPTT(model, 2), loss=mse, batch_size=2, seed=4, clip=0.05,
                       run_dir=run_dir, checkpoint_every=1, progress=False,
                       callbacks=list(callbacks), weight_noise=WeightNoise(0.1, seed=7))

    full = make(tmp_path / "full")
    full.fit((x, y), 3)
    assert full.clipper.clipped > 0  # clipping did act

    class Kill(RuntimeError):
        pass

    def kill(trainer, event):
        if event == "step" and trainer.position.step == 4:  # epoch 1, its first batch done
            raise Kill

    with pytest.raises(Kill):
        make(tmp_path / "run", [kill]).fit((x, y), 3)
    resumed = make(tmp_path / "run").resume()
    assert resumed.weight_noise.draws == 3  # the checkpoint of step 3
    resumed.fit((x, y), 3)
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed.weight_noise.draws == full.weight_noise.draws == 9


def test_checkpoint_from_before_weight_noise_still_resumes(tmp_path):
    """A checkpoint written before the weight_noise key existed has no such key and the same
    fingerprint: a trainer without weight noise resumes it."""
    from rnnlab.train import CHECKPOINT_NAME

    x, y = data(4, 5, dtype=torch.float32)
    model = net(torch.float32)
    first = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=mse,
                    batch_size=2, run_dir=tmp_path, progress=False)
    first.fit((x, y), 1)
    path = tmp_path / CHECKPOINT_NAME
    ckpt = torch.load(path, weights_only=True)
    assert ckpt.pop("weight_noise") is None
    torch.save(ckpt, path)
    model = net(torch.float32)
    again = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=mse,
                    batch_size=2, run_dir=tmp_path, progress=False).resume()
    assert again.position.epoch == 1
    for a, b in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_uses_are_refused():
    with pytest.raises(ValueError, match="std"):
        WeightNoise(0.0)
    with pytest.raises(ValueError, match="std"):
        WeightNoise(float("nan"))
    model = net()
    with pytest.raises(ValueError, match="online rule ForwardModeRTRL"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), ForwardModeRTRL(model),
                progress=False, weight_noise=WeightNoise(0.1))
    with pytest.raises(ValueError, match="HessianFree"):
        Trainer(model, HessianFree(model.parameters()), progress=False,
                weight_noise=WeightNoise(0.1))
    with pytest.raises(TypeError, match="WeightNoise"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), progress=False,
                weight_noise=0.1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), BPTT(model, 2),
                      progress=False, weight_noise=WeightNoise(0.1))
    with pytest.raises(ValueError, match="fit_stream"):
        trainer.fit_stream([(torch.zeros(2), torch.zeros(1))])
    frozen = net()
    for name, p in frozen.named_parameters():
        p.requires_grad_(is_bias(name))  # only the biases train: nothing gets noise
    with pytest.raises(ValueError, match="no parameter"):
        Trainer(frozen, torch.optim.SGD([p for p in frozen.parameters() if p.requires_grad],
                                        lr=0.1), progress=False, weight_noise=WeightNoise(0.1))
    with pytest.raises(ValueError, match="differs from this one"):
        WeightNoise(0.1).load_state_dict(WeightNoise(0.2).state_dict())
