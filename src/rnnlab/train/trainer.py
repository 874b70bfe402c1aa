"""One trainer for every model of the cell protocol, learning rule and optimizer, with
checkpoints that resume a killed run bit-identically on the same machine.

The trainer adds no mathematics: per minibatch it runs the learning rule (BPTT over the whole
sequence or truncated chunks, or an online rule step by step with one update whenever the rule
has written a gradient), clips (:class:`~rnnlab.learning.GradientClipper`) and steps the
optimizer — or calls ``HessianFree.step(forward, loss)``, which computes its own gradient and
curvature. Early stopping follows Prechelt (1998), "Early stopping — but when?": stop after
``patience`` epochs without an improvement of the monitored loss by more than ``min_delta``,
and restore the best weights.

(Over 500 lines: epochs, streams and Hessian-free steps share one position, checkpoint and
resume state machine, whose pieces must change together; that is why they stay in one class.)
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rnnlab._tree import tree_map
from rnnlab._validation import check_bool, check_choice, check_int, check_number, check_tensor
from rnnlab.learning import BPTT, GradientClipper, LearningRule, squared_error
from rnnlab.optim import HessianFree
from rnnlab.train.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    CheckpointError,
    atomic_save,
    check_environment,
    check_fingerprint,
    check_rule_supported,
    environment,
    fingerprint,
    load_checkpoint,
    load_rule_state,
    rng_state,
    rule_is_at_rest,
    rule_state,
    set_rng_state,
)
from rnnlab.train.metrics import MetricsLog
from rnnlab.train.weight_noise import WeightNoise

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
Batch = tuple[torch.Tensor, ...]


@dataclass
class Position:
    """Where a run stands. ``step`` counts minibatches (epochs) or stream items (streams);
    ``updates`` the optimizer steps taken."""

    epoch: int = 0      # epochs finished
    batch: int = 0      # minibatches finished in the current epoch
    step: int = 0
    updates: int = 0
    done: bool = False


def _masked_squared_error(reduction: str) -> Loss:
    """The course's ``sum ||y - o||^2`` over unmasked steps (``mask`` ``(batch, time)``), summed
    over the batch, or divided by its size for ``reduction="mean"``."""

    def loss(o: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return squared_error(o, y, reduction)
        total = ((y - o).pow(2) * mask.unsqueeze(-1).to(o.dtype)).sum()
        return total / o.shape[0] if reduction == "mean" else total

    return loss


class _Data:
    """A data set: ``(inputs, targets[, mask])`` tensors of ``(sequences, time, ...)`` cut into
    minibatches of ``batch_size`` in a (seeded) shuffled order, or a sequence of ready
    ``(inputs, targets[, mask])`` minibatches (shuffled as whole minibatches)."""

    def __init__(self, data: Any, batch_size: int, name: str) -> None:
        self.name = name
        if isinstance(data, tuple | list) and data and all(isinstance(t, torch.Tensor)
                                                            for t in data):
            self.tensors: Batch | None = self._check(tuple(data), name)
            self.batches: list[Batch] = []
            self.size = self.tensors[0].shape[0]
            self.batch_size = batch_size
            self.n_batches = math.ceil(self.size / batch_size)
        elif isinstance(data, Sequence) and data:
            self.tensors = None
            self.batches = [self._check(tuple(b), f"{name}[{i}]") for i, b in enumerate(data)]
            self.size = sum(b[0].shape[0] for b in self.batches)
            self.n_batches = len(self.batches)
        else:
            raise TypeError(f"{name} must be a tuple (inputs, targets[, mask]) of tensors or a "
                            f"non-empty sequence of such minibatches, got {type(data).__name__}")

    @staticmethod
    def _check(batch: Batch, name: str) -> Batch:
        if len(batch) not in (2, 3):
            raise ValueError(f"{name} must be (inputs, targets) or (inputs, targets, mask), got "
                             f"{len(batch)} tensors")
        x, y = batch[0], batch[1]
        check_tensor(f"{name} inputs", x, ndim=3, layout="(batch, time, features)")
        check_tensor(f"{name} targets", y, ndim=3, layout="(batch, time, outputs)")
        if y.shape[:2] != x.shape[:2]:
            raise ValueError(f"{name}: targets of shape {tuple(y.shape)} do not match inputs of "
                             f"shape {tuple(x.shape)} in (batch, time)")
        if len(batch) == 3:
            mask = batch[2]
            check_tensor(f"{name} mask", mask, ndim=2, layout="(batch, time)")
            if mask.shape != x.shape[:2]:
                raise ValueError(f"{name}: mask of shape {tuple(mask.shape)} must be (batch, "
                                 f"time) = {tuple(x.shape[:2])}")
        return batch

    def order(self, generator: torch.Generator | None) -> torch.Tensor:
        """The epoch's order of sequences (tensors) or minibatches (a sequence): a permutation
        drawn from ``generator``, or the given order when it is None."""
        count = self.size if self.tensors is not None else self.n_batches
        if generator is None:
            return torch.arange(count)
        return torch.randperm(count, generator=generator)

    def batch(self, order: torch.Tensor, index: int) -> Batch:
        if self.tensors is None:
            return self.batches[int(order[index])]
        idx = order[index * self.batch_size: (index + 1) * self.batch_size]
        return tuple(t[idx.to(t.device)] for t in self.tensors)


class Trainer:
    """Train a recurrent network, with validation, early stopping, metrics and checkpoints.

    Args:
        model: a model of the cell protocol (``RecurrentNetwork`` over any cell, ``ElmanRNN``).
        optimizer: any ``torch.optim`` optimizer, or :class:`~rnnlab.optim.HessianFree` (which
            takes ``step(forward, loss)``; then ``rule`` must be None or a full ``BPTT``).
        rule: the learning rule (default: full ``BPTT(model)``). ``BPTT`` makes one update per
            minibatch (summing the gradients of its truncation chunks); an online rule (``RTRL``,
            ``ForwardModeRTRL``, ``UORO``, ``SnAp1``, ``ELSTMRTRL``) runs each minibatch step by
            step from a fresh state and updates whenever it has written a gradient.
        loss: ``loss(outputs, targets, mask_or_None) -> scalar`` for BPTT, HessianFree and
            validation; default the course's squared error with the rule's ``reduction``
            (online rules compute their own training loss).
        scheduler: an LR scheduler, stepped every epoch (``scheduler_interval="epoch"``; a
            ``ReduceLROnPlateau`` gets the monitored loss) or after every update (``"step"``).
        clip: None (non-finite gradients are still dropped and the step skipped), a norm
            threshold (Pascanu et al. 2013), or a :class:`~rnnlab.learning.GradientClipper`.
        batch_size, shuffle, seed: minibatches of a ``(inputs, targets[, mask])`` data set, in
            an order shuffled every epoch by a CPU generator seeded with ``seed``.
        patience, min_delta, restore_best: early stopping on the validation loss (the training
            loss without validation data); ``patience=None`` trains every epoch.
        run_dir: folder for ``metrics.csv``, ``metrics.jsonl`` and ``checkpoint.pt``; None
            keeps everything in memory.
        checkpoint_every: also checkpoint every this many steps (minibatches, or stream items).
        checkpoint_every_epochs: checkpoint every this many epochs (and always at the end).
        metrics_every: also write a ``kind="step"`` row every this many steps.
        progress: show a ``rich`` progress bar.
        callbacks: ``callback(trainer, event)`` after every step (``"step"``) and epoch
            (``"epoch"``); the state (``trainer.position``, ``history``) is complete then.
        hidden: for HessianFree with structural damping, ``hidden(model, inputs)`` returning the
            hidden states.
        distributed: data-parallel training over the ranks of the initialised default process
            group (``torchrun``; gloo on CPU, NCCL on GPU): the model is wrapped in
            ``DistributedDataParallel``, every minibatch (the global batch) is split into
            ``world_size`` shards ``batch[rank::world_size]``, losses are scaled so that
            DDP's gradient average equals the gradient of the whole batch, and only rank 0
            writes checkpoints and metrics (every rank resumes from them). BPTT only (full or
            truncated); see ``docs/distributed.md``.
        weight_noise: a :class:`~rnnlab.train.WeightNoise`: every update's gradient is taken at
            weights perturbed by a fresh Gaussian draw, and applied to the clean weights (BPTT
            with :meth:`fit` only; its generator is in the checkpoint).

    Use ``trainer.fit(train, epochs, val)`` or ``trainer.fit_stream(stream, steps)``; to
    continue a killed run build the same objects and call ``trainer.resume(run_dir)`` first.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        rule: LearningRule | None = None,
        *,
        loss: Loss | None = None,
        scheduler: Any = None,
        scheduler_interval: str = "epoch",
        clip: float | GradientClipper | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        patience: int | None = None,
        min_delta: float = 0.0,
        restore_best: bool = True,
        run_dir: str | Path | None = None,
        checkpoint_every: int | None = None,
        checkpoint_every_epochs: int = 1,
        metrics_every: int | None = None,
        progress: bool = True,
        callbacks: Sequence[Callable[[Trainer, str], None]] = (),
        hidden: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
        distributed: bool = False,
        weight_noise: WeightNoise | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.hessian_free = isinstance(optimizer, HessianFree)
        if self.hessian_free:
            if rule is not None and not (isinstance(rule, BPTT) and rule.truncation is None):
                raise ValueError("HessianFree computes its own gradients over whole sequences: "
                                 f"give rule=None (or full BPTT), not {type(rule).__name__}")
            if clip is not None:
                raise ValueError("clip does not apply to HessianFree (it does not use .grad)")
            rule = None
        elif not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError("optimizer must be a torch.optim.Optimizer or HessianFree, got "
                            f"{type(optimizer).__name__}")
        elif rule is None:
            rule = BPTT(model)
        if rule is not None and rule.model is not model:
            raise ValueError("the learning rule was built for another model object")
        check_rule_supported(rule)
        self.rule = rule
        if weight_noise is not None:
            if not isinstance(weight_noise, WeightNoise):
                raise TypeError("weight_noise must be a rnnlab.train.WeightNoise or None, got "
                                f"{type(weight_noise).__name__}")
            if not isinstance(rule, BPTT):
                raise ValueError(
                    "weight_noise applies to BPTT updates (full or truncated), not to "
                    + ("HessianFree (its curvature products would see other weights than its "
                       "gradient)" if self.hessian_free else
                       f"the online rule {type(rule).__name__} (one update per step; the "
                       "noise would change inside its gradient's window)"))
            weight_noise.parameters(model)  # refuses a model with nothing to perturb, now
        self.weight_noise = weight_noise
        self.reduction = getattr(rule, "reduction", "sum")
        self.loss = loss if loss is not None else _masked_squared_error(self.reduction)
        self.scheduler = scheduler
        self.scheduler_interval = check_choice("scheduler_interval", scheduler_interval,
                                               ("epoch", "step"))
        if isinstance(clip, GradientClipper):
            self.clipper = clip
        else:
            threshold = math.inf if clip is None else check_number(
                "clip", clip, low=0.0, low_open=True)
            self.clipper = GradientClipper("norm", threshold)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.shuffle = check_bool("shuffle", shuffle)
        self.seed = check_int("seed", seed)
        self.patience = None if patience is None else check_int("patience", patience, low=1)
        self.min_delta = check_number("min_delta", min_delta, low=0.0)
        self.restore_best = check_bool("restore_best", restore_best)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.checkpoint_every = _optional_positive("checkpoint_every", checkpoint_every)
        self.checkpoint_every_epochs = check_int("checkpoint_every_epochs",
                                                 checkpoint_every_epochs, low=1)
        self.metrics_every = _optional_positive("metrics_every", metrics_every)
        self.progress = check_bool("progress", progress)
        self.callbacks = list(callbacks)
        self.hidden = hidden
        self._params = [p for p in model.parameters() if p.requires_grad]

        self.generator = torch.Generator().manual_seed(self.seed)
        self.position = Position()
        self.history: list[dict[str, Any]] = []    # epoch rows (and step rows, in order)
        self.mode: str | None = None
        self.best: float = math.inf
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.stopped_early = False
        self._best_state: dict[str, torch.Tensor] | None = None
        self._order: torch.Tensor | None = None
        self._epoch_sum = 0.0                      # loss summed over the epoch's sequences
        self._epoch_count = 0
        self._window_sum = 0.0                     # since the last step row
        self._window_count = 0
        self._last_norm: float | None = None
        self._data_size: int | None = None
        self._resumed_from: dict[str, Any] | None = None
        self._safe = True                          # state consistent: a checkpoint may be taken
        self._checkpoint_due = False
        self._signal: int | None = None
        self.distributed = check_bool("distributed", distributed)
        self.rank, self.world_size = 0, 1
        self._ddp: nn.Module | None = None
        if self.distributed:
            self.rank, self.world_size = _check_distributed(self.rule, self.hessian_free)
        self._metrics = (None if self.run_dir is None or self.rank != 0
                         else MetricsLog(self.run_dir))

    # -- settings that a checkpoint must match --------------------------------------------
    def _settings(self) -> dict[str, Any]:
        settings = {
            "batch_size": self.batch_size, "shuffle": self.shuffle, "seed": self.seed,
            "patience": self.patience, "min_delta": self.min_delta,
            "restore_best": self.restore_best, "metrics_every": self.metrics_every,
            "scheduler": None if self.scheduler is None else type(self.scheduler).__qualname__,
            "scheduler_interval": self.scheduler_interval,
            "clip": [self.clipper.mode, self.clipper.threshold, self.clipper.norm_type],
            "loss": getattr(self.loss, "__qualname__", type(self.loss).__qualname__),
        }
        if self.weight_noise is not None:
            # only when set: checkpoints written before weight noise keep their fingerprint
            settings["weight_noise"] = repr(self.weight_noise)
        return settings

    @property
    def fingerprint(self) -> dict[str, str]:
        return fingerprint(self.model, self.optimizer, self.rule, self._settings())

    # -- public entry points --------------------------------------------------------------
    def fit(self, train: Any, epochs: int, val: Any = None) -> list[dict[str, Any]]:
        """Train for ``epochs`` epochs (in all, counting those before a resume); return the
        epoch rows. ``train``/``val``: ``(inputs, targets[, mask])`` tensors, ``(sequences,
        time, ...)``, or a sequence of such minibatches."""
        epochs = check_int("epochs", epochs, low=1)
        data = _Data(train, self.batch_size, "train")
        val_data = None if val is None else _Data(val, self.batch_size, "val")
        if self.distributed:
            self._start_distributed(data)
        self._start("epochs", data.size)
        with self._guard(), self._bar(epochs * data.n_batches) as bar:
            while (not self.position.done and not self.stopped_early
                   and self.position.epoch < epochs):
                self._run_epoch(data, val_data, bar)
            self._finish()
        if self.distributed:
            dist.barrier()  # rank 0's last checkpoint is on disk when fit returns anywhere
        return [row for row in self.history if row["kind"] == "epoch"]

    def fit_stream(self, stream: Iterable[Any], steps: int | None = None
                   ) -> list[dict[str, Any]]:
        """Online training on a stream of ``(x_t, y_t)`` pairs (``(D,)`` or ``(batch, D)``):
        one ``rule.step`` per item and one update whenever the rule has a gradient (every step
        for the RTRL family, every ``truncation`` steps for BPTT). Stops after ``steps`` items
        in all, or when the stream ends. After :meth:`resume`, give the stream from its start:
        the items before the checkpoint are skipped. Returns the rows written."""
        if self.hessian_free:
            raise ValueError("HessianFree needs whole sequences: use fit(), not fit_stream()")
        if self.distributed:
            raise ValueError("fit_stream is not distributed (one stream is one sequence of "
                             "steps): use distributed=False, or fit() over sequences")
        if isinstance(self.rule, BPTT) and self.rule.truncation is None:
            raise ValueError("online BPTT over a stream needs a truncation (BPTT(model, k))")
        if self.weight_noise is not None:
            raise ValueError("weight_noise applies to fit() over sequences, not to fit_stream "
                             "(a stream's BPTT window is built step by step, under one set of "
                             "weights per step)")
        steps = None if steps is None else check_int("steps", steps, low=1)
        self._start("stream", None)
        iterator = iter(stream)
        for skipped in range(self.position.step):  # the data position: items learnt from
            if next(iterator, None) is None:
                raise CheckpointError(f"the stream ended after {skipped} items; the run was "
                                      f"checkpointed at item {self.position.step}")
        with self._guard(), self._bar(steps) as bar:
            if not self.position.done:
                for item in iterator:
                    if steps is not None and self.position.step >= steps:
                        break
                    self._stream_step(item)
                    bar.advance(1, self._window_mean())
                    self._after_step()
                self._end_stream()
                self._finish()
        return self.history

    def resume(self, run_dir: str | Path | None = None) -> Trainer:
        """Load the checkpoint of ``run_dir`` (default: this trainer's) into the model,
        optimizer, rule, scheduler, generators and position; the next ``fit``/``fit_stream``
        continues where it was written. A checkpoint of another model, optimizer, rule or
        trainer configuration, or of another format version, raises :class:`CheckpointError`
        and changes nothing."""
        run_dir = self.run_dir if run_dir is None else Path(run_dir)
        if run_dir is None:
            raise ValueError("resume needs run_dir (the trainer has none)")
        ckpt = load_checkpoint(run_dir)
        path = run_dir / CHECKPOINT_NAME
        check_fingerprint(ckpt["fingerprint"], self.fingerprint, path)
        check_environment(ckpt["environment"])
        metrics = MetricsLog(run_dir)
        sizes = metrics.sizes()
        if any(sizes[k] < ckpt["metrics_bytes"][k] for k in sizes):
            raise CheckpointError(f"the metrics files in {run_dir} are shorter than when the "
                                  "checkpoint was written: they do not belong to it")
        backup = (copy.deepcopy(self.model.state_dict()),
                  copy.deepcopy(self.optimizer.state_dict()))
        try:
            self._load(ckpt)
        except Exception:
            # nothing half-loaded: put the model and optimizer back as they were
            self.model.load_state_dict(backup[0])
            self.optimizer.load_state_dict(backup[1])
            raise
        if self.rank == 0:
            metrics.truncate(ckpt["metrics_bytes"])
        self.run_dir, self._metrics = run_dir, (metrics if self.rank == 0 else None)
        self._resumed_from = ckpt["position"]
        return self

    def evaluate(self, data: Any) -> float:
        """The loss per sequence on ``data`` (no gradients, the model in eval mode)."""
        data = data if isinstance(data, _Data) else _Data(data, self.batch_size, "data")
        was_training = self.model.training
        self.model.eval()
        total = 0.0
        try:
            with torch.no_grad():
                order = data.order(None)
                for b in range(data.n_batches):
                    x, y, *mask = data.batch(order, b)
                    out, _ = self.model(x)
                    value = float(self.loss(out, y, mask[0] if mask else None))
                    total += value * (x.shape[0] if self.reduction == "mean" else 1)
        finally:
            self.model.train(was_training)
        return total / data.size

    def save_checkpoint(self) -> Path:
        """Write the checkpoint now (atomically). Only at a consistent point: between steps."""
        if self.run_dir is None:
            raise ValueError("save_checkpoint needs a run_dir")
        if not (self._safe and rule_is_at_rest(self.rule)):
            raise RuntimeError("a checkpoint can only be written between steps (and, for "
                               "online BPTT, between truncation chunks)")
        self._checkpoint_due = False
        if self.rank != 0:  # every rank holds the same state: rank 0 writes it
            return self.run_dir / CHECKPOINT_NAME
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return atomic_save(self._state(), self.run_dir / CHECKPOINT_NAME)

    # -- the loops --------------------------------------------------------------------------
    def _start(self, mode: str, data_size: int | None) -> None:
        if self.mode is not None and self.mode != mode:
            raise CheckpointError(f"this run trains by {self.mode}; it cannot continue with "
                                  f"{'fit' if mode == 'epochs' else 'fit_stream'}")
        if self._data_size is not None and data_size != self._data_size:
            raise CheckpointError(f"the training data have {data_size} sequences, the run was "
                                  f"checkpointed with {self._data_size}")
        if self.run_dir is not None and self._resumed_from is None and self.mode is None:
            if (self.run_dir / CHECKPOINT_NAME).exists():
                raise FileExistsError(f"{self.run_dir} already holds a checkpoint: call "
                                      "trainer.resume() to continue it, or use another run_dir")
            if self.rank == 0:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                for path in (self._metrics.csv, self._metrics.jsonl):
                    path.unlink(missing_ok=True)
        self.mode, self._data_size = mode, data_size
        self.model.train()

    def _run_epoch(self, data: _Data, val: _Data | None, bar: Any) -> None:
        pos = self.position
        if pos.batch == 0:
            self._order = data.order(self.generator if self.shuffle else None)
            self._epoch_sum, self._epoch_count = 0.0, 0
        while pos.batch < data.n_batches:
            self._safe = False
            batch = data.batch(self._order, pos.batch)
            count = batch[0].shape[0]
            if self.distributed:
                # this rank's shard of the global minibatch (DistributedSampler's rank::world)
                loss_sum = self._sync_step(self._train_batch(
                    tuple(t[self.rank::self.world_size] for t in batch), count))
            else:
                loss_sum = self._train_batch(batch)
            self._epoch_sum += loss_sum
            self._epoch_count += count
            self._window_sum += loss_sum
            self._window_count += count
            pos.batch += 1
            pos.step += 1
            self._safe = True
            bar.advance(1, self._epoch_sum / self._epoch_count)
            self._after_step()
        self._safe = False
        train_loss = self._epoch_sum / self._epoch_count
        val_loss = None if val is None else self.evaluate(val)
        if self.distributed and val_loss is not None:
            # every rank evaluated the whole validation set; rank 0's value decides for all,
            # so that early stopping cannot differ between ranks
            value = torch.tensor([val_loss], dtype=torch.float64, device=self._sync_device())
            dist.broadcast(value, 0)
            val_loss = float(value[0])
        monitored = train_loss if val_loss is None else val_loss
        improved = monitored < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = monitored, pos.epoch, 0
            if self.restore_best:
                self._best_state = {k: v.detach().clone()
                                    for k, v in self.model.state_dict().items()}
        else:
            self.bad_epochs += 1
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(monitored)
            else:
                self.scheduler.step()
        self._write_row("epoch", train_loss, val_loss, best=improved)
        pos.epoch += 1
        pos.batch = 0
        self._order = None
        if self.patience is not None and self.bad_epochs >= self.patience:
            self.stopped_early = True
        self._safe = True
        for callback in self.callbacks:
            callback(self, "epoch")
        if pos.epoch % self.checkpoint_every_epochs == 0:
            self._checkpoint_due = True
        self._maybe_checkpoint()

    def _train_batch(self, batch: Batch, global_count: int | None = None) -> float:
        """One minibatch (a rank's shard of the global one of ``global_count`` sequences when
        distributed); returns its loss summed over its sequences."""
        x, y, *rest = batch
        mask = rest[0] if rest else None
        scale = x.shape[0] if self.reduction == "mean" else 1
        if self.hessian_free:
            hidden = None if self.hidden is None else (lambda: self.hidden(self.model, x))
            value = self.optimizer.step(forward=lambda: self.model(x)[0],
                                        loss=lambda out: self.loss(out, y, mask), hidden=hidden)
            self.position.updates += 1
            self._step_scheduler()
            return float(value) * scale
        self.optimizer.zero_grad(set_to_none=True)
        if isinstance(self.rule, BPTT):
            factor = 1.0
            if self.distributed:
                # DDP averages the ranks' gradients; the whole batch's gradient is their sum
                # (reduction "sum") or their sum over the global batch size ("mean")
                factor = float(self.world_size)
                if self.reduction == "mean":
                    factor *= x.shape[0] / global_count
            return self._bptt_batch(x, y, mask, factor) * scale
        return self._online_batch(x, y, mask) * scale

    def _bptt_batch(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
                    factor: float = 1.0) -> float:
        # BPTT(k, k) of Williams & Peng: chunks of k steps, the state carried but detached
        steps = x.shape[1]
        k = steps if self.rule.truncation is None else self.rule.truncation
        starts = range(0, steps, k)
        noise = (contextlib.nullcontext() if self.weight_noise is None
                 else self.weight_noise.perturbed(self.model))
        with noise:
            total = self._bptt_chunks(x, y, mask, factor, k, starts)
        self._update()
        return total

    def _bptt_chunks(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
                     factor: float, k: int, starts: range) -> float:
        state, total = None, 0.0
        for start in starts:
            part = slice(start, start + k)
            state0 = None if state is None else tree_map(torch.Tensor.detach, state)
            # under DDP the gradients of all chunks are summed locally (no_sync) and
            # all-reduced once, with the last chunk's backward
            last = start == starts[-1]
            with (self._ddp.no_sync() if self._ddp is not None and not last
                  else contextlib.nullcontext()):
                out, state = (self.model if self._ddp is None else self._ddp)(x[:, part], state0)
                loss = self.loss(out, y[:, part], None if mask is None else mask[:, part])
                (loss if factor == 1.0 else loss * factor).backward()
            total += float(loss.detach())
        return total

    def _online_batch(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None
                      ) -> float:
        rule = self.rule
        rule.reset(x.shape[0])
        total = 0.0
        for t in range(x.shape[1]):
            y_t = y[:, t]
            if mask is not None:
                m = mask[:, t]
                if bool(m.all()):
                    pass
                elif not bool(m.any()):
                    y_t = None
                else:
                    raise ValueError(f"online rules take a loss for the whole batch or none at a "
                                     f"step; the mask differs between sequences at step {t}")
            rule.step(x[:, t], y_t)
            if rule.last_loss is not None:
                total += float(rule.last_loss)
            if rule.grad_ready:
                self._update()
        return total

    # -- distributed ------------------------------------------------------------------------
    def _sync_device(self) -> torch.device:
        # gloo reduces CPU tensors, NCCL CUDA ones
        return (torch.device("cuda", torch.cuda.current_device())
                if dist.get_backend() == "nccl" else torch.device("cpu"))

    def _start_distributed(self, data: _Data) -> None:
        smallest = (min(b[0].shape[0] for b in data.batches) if data.tensors is None
                    else min(self.batch_size, data.size - (data.n_batches - 1) * self.batch_size))
        if smallest < self.world_size:
            raise ValueError(f"a minibatch of {smallest} sequence(s) cannot be split over "
                             f"{self.world_size} ranks: every rank needs at least one "
                             "(choose batch_size and the data size accordingly)")
        if self._ddp is None:
            from torch.nn.parallel import DistributedDataParallel

            device = next(self.model.parameters()).device
            ids = [device.index] if device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=ids)

    def _sync_step(self, loss_sum: float) -> float:
        """All ranks: the global batch's loss (the sum of the shards') and whether any rank
        got a signal, in one all-reduce, so that every rank stops at the same step."""
        flag = 0.0 if self._signal is None else 1.0
        value = torch.tensor([loss_sum, flag], dtype=torch.float64, device=self._sync_device())
        dist.all_reduce(value)
        if float(value[1]) > 0 and self._signal is None:
            self._signal = int(signal.SIGTERM)
        return float(value[0])

    def _stream_step(self, item: Any) -> None:
        x_t, y_t = item
        if x_t.dim() == 1:
            x_t = x_t.unsqueeze(0)
        if y_t.dim() == 1:
            y_t = y_t.unsqueeze(0)
        self._safe = False
        self.rule.step(x_t, y_t)
        if self.rule.last_loss is not None:
            self._window_sum += float(self.rule.last_loss)
            self._window_count += 1
        if self.rule.grad_ready:
            self._update()
        self.position.step += 1
        self._safe = True

    def _end_stream(self) -> None:
        """The tail of a truncated-BPTT chunk is learnt from; the last rows are written."""
        if isinstance(self.rule, BPTT) and not rule_is_at_rest(self.rule):
            self._safe = False
            self.rule.flush()
            self._update()
            self._safe = True
        if self._window_count:
            self._write_row("step", self._window_mean(), None)

    def _update(self) -> None:
        result = self.clipper.step(self.optimizer, self._params)
        self.optimizer.zero_grad(set_to_none=True)
        self._last_norm = result.norm
        self.position.updates += 1
        self._step_scheduler()

    def _step_scheduler(self) -> None:
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()

    def _window_mean(self) -> float:
        if not self._window_count:
            return math.nan
        return self._window_sum / self._window_count

    def _after_step(self) -> None:
        pos = self.position
        if self.metrics_every is not None and pos.step % self.metrics_every == 0:
            self._write_row("step", self._window_mean(), None)
        for callback in self.callbacks:
            callback(self, "step")
        if self.checkpoint_every is not None and pos.step % self.checkpoint_every == 0:
            self._checkpoint_due = True
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """Write a due checkpoint, and stop on a signal, at the first consistent point."""
        if not rule_is_at_rest(self.rule):
            return
        if self._signal is not None:
            name = signal.Signals(self._signal).name
            where = ""
            if self.run_dir is not None:
                where = f"; checkpoint written to {self.save_checkpoint()}"
            raise KeyboardInterrupt(f"stopped by {name} at step {self.position.step}{where}")
        if self._checkpoint_due and self.run_dir is not None:
            self.save_checkpoint()

    def _write_row(self, kind: str, train_loss: float, val_loss: float | None,
                   best: bool | None = None) -> None:
        pos = self.position
        row = {
            "kind": kind, "epoch": pos.epoch, "step": pos.step, "updates": pos.updates,
            "train_loss": train_loss, "val_loss": val_loss,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "grad_norm": self._last_norm, "clipped": self.clipper.clipped,
            "skipped": self.clipper.skipped + getattr(self.optimizer, "skipped_steps", 0),
            "best": best,
        }
        if kind == "step":
            self._window_sum, self._window_count = 0.0, 0
        self.history.append(row)
        if self._metrics is not None:
            self._metrics.write(row)

    def _finish(self) -> None:
        if self.position.done:
            return
        if self.restore_best and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        self.position.done = True
        if self.run_dir is not None:
            self.save_checkpoint()

    # -- checkpoint contents ----------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "environment": environment(),
            "fingerprint": self.fingerprint,
            "mode": self.mode,
            "data_size": self._data_size,
            "position": asdict(self.position),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rule": rule_state(self.rule),
            "clipper": {"calls": self.clipper.calls, "clipped": self.clipper.clipped,
                        "skipped": self.clipper.skipped},
            "early_stopping": {"best": self.best, "best_epoch": self.best_epoch,
                               "bad_epochs": self.bad_epochs, "stopped": self.stopped_early,
                               "best_state": self._best_state},
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            "epoch": {"order": self._order, "sum": self._epoch_sum,
                      "count": self._epoch_count},
            "window": {"sum": self._window_sum, "count": self._window_count,
                       "last_norm": self._last_norm},
            "history": self.history,
            "weight_noise": (None if self.weight_noise is None
                             else self.weight_noise.state_dict()),
            "metrics_bytes": (self._metrics.sizes() if self._metrics is not None
                              else {"csv": 0, "jsonl": 0}),
        }

    def _load(self, ckpt: dict[str, Any]) -> None:
        device = next(iter(self.model.state_dict().values())).device
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for key, value in self.optimizer.state.items():
            # torch moves the per-parameter state to its parameter; HessianFree's own entries
            # (the CG warm start) follow the model here, or a GPU run would lose its warm start
            if isinstance(key, str) and isinstance(value, torch.Tensor):
                self.optimizer.state[key] = value.to(device)
        if (ckpt["scheduler"] is None) != (self.scheduler is None):
            raise CheckpointError("the checkpoint and the trainer differ in having a scheduler")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        load_rule_state(self.rule, ckpt["rule"])
        for key, value in ckpt["clipper"].items():
            setattr(self.clipper, key, value)
        early = ckpt["early_stopping"]
        self.best, self.best_epoch = early["best"], early["best_epoch"]
        self.bad_epochs, self.stopped_early = early["bad_epochs"], early["stopped"]
        self._best_state = early["best_state"]
        if self._best_state is not None:
            self._best_state = {k: v.to(device) for k, v in self._best_state.items()}
        set_rng_state(ckpt["rng"])
        self.generator.set_state(ckpt["generator"])
        self._order = ckpt["epoch"]["order"]
        self._epoch_sum, self._epoch_count = ckpt["epoch"]["sum"], ckpt["epoch"]["count"]
        window = ckpt["window"]
        self._window_sum, self._window_count = window["sum"], window["count"]
        self._last_norm = window["last_norm"]
        self.history = list(ckpt["history"])
        noise = ckpt.get("weight_noise")  # absent in checkpoints written before weight noise
        if (noise is None) != (self.weight_noise is None):
            raise CheckpointError("the checkpoint and the trainer differ in having weight noise")
        if self.weight_noise is not None:
            try:
                self.weight_noise.load_state_dict(noise)
            except ValueError as err:
                raise CheckpointError(str(err)) from None
        self.mode, self._data_size = ckpt["mode"], ckpt["data_size"]
        self.position = Position(**ckpt["position"])

    # -- signals and the progress bar -----------------------------------------------------
    @contextmanager
    def _guard(self):  # type: ignore[no-untyped-def]
        """SIGINT/SIGTERM during training finish the current step, write a checkpoint and raise
        ``KeyboardInterrupt``; a second signal interrupts at once. An exception raised at a
        consistent point (e.g. ``KeyboardInterrupt`` from a callback) also checkpoints first;
        any other failure keeps the last checkpoint and the metrics written so far."""
        self._signal = None
        main = threading.current_thread() is threading.main_thread()
        old = {}
        if main:
            def handler(signum: int, frame: Any) -> None:
                if self._signal is not None:
                    raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
                self._signal = signum

            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, handler)
        try:
            yield
        except KeyboardInterrupt:
            if (self._signal is None and self._safe and rule_is_at_rest(self.rule)
                    and self.run_dir is not None and self.mode is not None):
                self.save_checkpoint()
            raise
        finally:
            for sig, previous in old.items():
                signal.signal(sig, previous)
            self._signal = None

    @contextmanager
    def _bar(self, total: int | None):  # type: ignore[no-untyped-def]
        if not self.progress:
            yield _NoBar()
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]:.4g}"), TimeElapsedColumn(),
                      TimeRemainingColumn()) as progress:
            task = progress.add_task("train", total=total, loss=math.nan,
                                     completed=self.position.step)
            yield _RichBar(progress, task)


class _NoBar:
    def advance(self, steps: int, loss: float | None = None) -> None:
        pass


class _RichBar:
    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task = progress, task

    def advance(self, steps: int, loss: float | None = None) -> None:
        fields = {} if loss is None else {"loss": loss}
        self.progress.update(self.task, advance=steps, **fields)


def _check_distributed(rule: Any, hessian_free: bool) -> tuple[int, int]:
    """(rank, world size) of the default process group, which must be initialised; only
    BPTT (whose gradients come from ``backward``, where DDP all-reduces them) is supported."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("distributed=True needs torch.distributed.init_process_group() "
                           "first (torchrun sets up the environment for it)")
    if hessian_free or not isinstance(rule, BPTT):
        name = "HessianFree" if hessian_free else type(rule).__name__
        raise ValueError(f"distributed training supports BPTT (full or truncated), not {name}: "
                         "online rules write .grad without backward(), which DDP does not "
                         "see")
    return dist.get_rank(), dist.get_world_size()


def _optional_positive(name: str, value: int | None) -> int | None:
    return None if value is None else check_int(name, value, low=1)
