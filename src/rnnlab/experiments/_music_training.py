"""Shared machinery of the polyphonic-music experiments ``lstm-variants`` and ``deep-rnn``.

Task (Boulanger-Lewandowski, Bengio & Vincent, ICML 2012): a network reads the piano roll frame
by frame and, at every step t, outputs 88 logits ``s_k(t)``; ``p_k(t) = sigmoid(s_k(t))`` is the
probability that key k sounds in frame t+1 (an all-zero frame is read before the first one, so
every frame is predicted). The loss and the reported metric are the frame-level negative
log-likelihood in nats per frame (:func:`rnnlab.tasks.music.frame_nll`)::

    NLL = (1 / F) sum_{sequences} sum_t sum_{k=1}^{88}
              -[ y_k(t) log p_k(t) + (1 - y_k(t)) log(1 - p_k(t)) ]

averaged over all F frames of a split. Training: the output biases start at the logit of each
key's training frequency (:func:`set_marginal_bias`, option ``--marginal-bias``), Adam (Kingma &
Ba 2015) on mini-batches of whole sequences, gradient-norm clipping (Pascanu, Mikolov & Bengio
2013), early stopping on the validation NLL; the test NLL is measured once, with the parameters
of the best validation epoch (as in Greff et al. 2017 and Pascanu et al. 2014, who select by
validation error).

Both experiments share the options of :class:`MusicConfig`; options left at ``None`` take the
preset of the run: the full one or ``--quick`` (:data:`PRESETS`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnlab._validation import check_bool, check_choice, check_int, check_number
from rnnlab.experiments.registry import option
from rnnlab.learning import BPTT
from rnnlab.tasks.music import (
    NUM_KEYS,
    bach_chorales,
    frame_nll,
    key_frequencies,
    load_piano_rolls,
    marginal_nll,
    piano_roll_batches,
)
from rnnlab.train import Trainer, WeightNoise
from rnnlab.train.checkpoint import CHECKPOINT_NAME

JSB_FILE = "jsb-chorales-quarter.json"
COIN_FLIP_NLL = NUM_KEYS * math.log(2.0)  # 61.0 nats: p = 1/2 for every key

# Values of the options left at None. The full preset is sized to finish in minutes on one CPU
# core; --quick in about a minute (smaller network, fewer epochs and seeds, a larger step).
# --quick keeps the whole training set: the first 80 JSB training chorales alone generalize
# badly (test NLL 11.1 where the whole set gives 9.4 after 5 epochs, H=32, lr 0.02).
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"hidden_size": 64, "epochs": 12, "lr": 0.01, "seeds": (0, 1, 2),
             "train_sequences": None, "valid_sequences": None},
    "quick": {"hidden_size": 32, "epochs": 3, "lr": 0.02, "seeds": (0, 1),
              "train_sequences": None, "valid_sequences": None},
}


def project_data_candidates() -> list[Path]:
    """Where ``--data default`` looks for the standard JSB split, first hit wins:
    ``../shared/data/`` relative to the working directory, then relative to the project root
    (the folder holding ``src/``)."""
    root = Path(__file__).resolve().parents[3]
    out = [Path.cwd().parent / "shared" / "data" / JSB_FILE,
           root.parent / "shared" / "data" / JSB_FILE]
    unique: list[Path] = []
    for p in out:
        if p not in unique:
            unique.append(p)
    return unique


def load_music_data(
    spec: str,
    *,
    dtype: torch.dtype = torch.float32,
    train_sequences: int | None = None,
    valid_sequences: int | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, list[torch.Tensor]], str]:
    """The piano rolls ``{"train", "valid", "test"}`` and a description of where they came from.

    ``spec``: ``"default"`` (the standard JSB split of Boulanger-Lewandowski et al. 2012 from
    :func:`project_data_candidates`; if it is missing, the built-in chorales with a printed
    note), ``"builtin"`` (:func:`rnnlab.tasks.music.bach_chorales`, music21's Bach corpus,
    seeded split), or a path to a file in the Boulanger-Lewandowski format (JSON or pickle).
    ``train_sequences``/``valid_sequences`` keep only the first k sequences of those splits; the
    test split is always used whole, so test numbers stay comparable.
    """
    if spec == "default":
        found = next((p for p in project_data_candidates() if p.is_file()), None)
        if found is None:
            log(f"note: the standard JSB split ({JSB_FILE}) was not found in "
                f"{', '.join(str(p.parent) for p in project_data_candidates())}; using the "
                "built-in Bach chorales from music21 instead (--data builtin)")
            data, source = bach_chorales(dtype=dtype), "builtin (music21 Bach chorales)"
        else:
            data, source = load_piano_rolls(found, dtype=dtype), f"JSB Chorales ({found})"
    elif spec == "builtin":
        data, source = bach_chorales(dtype=dtype), "builtin (music21 Bach chorales)"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"--data: no piano-roll file at {path} "
                             "(give a path, 'default' or 'builtin')")
        data, source = load_piano_rolls(path, dtype=dtype), str(path)
    for split, keep in (("train", train_sequences), ("valid", valid_sequences)):
        if keep is not None:
            data[split] = data[split][:keep]
    for split in ("train", "valid", "test"):
        if not data[split]:
            raise ValueError(f"the {split} split of {source} has no sequences")
    return data, source


# ------------------------------------------------------------------------------------------------
@dataclass
class MusicConfig:
    """Options shared by the music experiments (``None``: the preset's value, see PRESETS)."""

    data: str = option("default", "'default' (../shared/data/jsb-chorales-quarter.json, else "
                       "builtin), 'builtin' (music21 Bach chorales) or a path")
    hidden_size: int | None = option(None, "hidden units (default 64; 32 with --quick)", low=1)
    epochs: int | None = option(None, "maximum epochs (default 12; 3 with --quick)", low=1)
    patience: int | None = option(3, "early stopping: epochs without a better valid NLL "
                                  "(none: off; the best epoch is restored either way)", low=1)
    batch_size: int = option(8, "sequences per mini-batch", low=1)
    lr: float | None = option(None, "Adam learning rate (default 0.01; 0.02 with --quick)",
                              low=0, low_open=True)
    clip_norm: float | None = option(1.0, "gradient-norm clipping threshold (none: off)",
                                     low=0, low_open=True)
    seeds: tuple[int, ...] | None = option(None, "seeds of the runs (default 0,1,2; 0,1 with "
                                           "--quick)", low=0, unique=True)
    train_sequences: int | None = option(None, "use only the first k training chorales "
                                         "(default all)", low=1)
    valid_sequences: int | None = option(None, "use only the first k validation chorales "
                                         "(default all); the test split is always whole", low=1)
    marginal_bias: bool = option(True, "start the output biases at the logit of each key's "
                                 "training frequency (else torch's uniform init)")
    threads: int = option(1, "torch threads (1 was 3-15x faster than 2 on a shared 2-core box)",
                          low=1)
    quick: bool = option(False, "the --quick preset: runs in a minute or two")
    dtype: str = option("float32", "float32 or float64", choices=("float32", "float64"))
    device: str = option("cpu", "torch device, e.g. cpu or cuda")

    def validate(self) -> None:
        if not self.data:
            raise ValueError("--data must be 'default', 'builtin' or a path")
        if self.data not in ("default", "builtin") and not Path(self.data).expanduser().is_file():
            raise ValueError(f"--data: no piano-roll file at {self.data} "
                             "(give a path, 'default' or 'builtin')")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device {self.device!r} is not a torch device") from None

    def settings(self) -> Settings:
        """The concrete settings: explicit options win, ``None`` takes the preset's value."""
        preset = PRESETS["quick" if self.quick else "full"]

        def pick(name: str) -> Any:
            value = getattr(self, name)
            return preset[name] if value is None else value

        return Settings(
            hidden_size=pick("hidden_size"), epochs=pick("epochs"), seeds=tuple(pick("seeds")),
            train_sequences=pick("train_sequences"), valid_sequences=pick("valid_sequences"),
            train=TrainConfig(epochs=pick("epochs"), batch_size=self.batch_size, lr=pick("lr"),
                              clip_norm=self.clip_norm, patience=self.patience),
            dtype=getattr(torch, self.dtype), device=torch.device(self.device),
        )

    def load_data(self, s: Settings) -> tuple[dict[str, list[torch.Tensor]], str, float]:
        """The run's splits (:func:`load_music_data` with the settings' dtype and sizes), where
        they came from, and the key-frequency baseline: the test NLL of the per-key frequencies
        of the training set (:func:`~rnnlab.tasks.music.marginal_nll`)."""
        data, source = load_music_data(self.data, dtype=s.dtype,
                                       train_sequences=s.train_sequences,
                                       valid_sequences=s.valid_sequences)
        return data, source, marginal_nll(data["train"], data["test"])


@dataclass(frozen=True)
class TrainConfig:
    """How one network is trained (see the module docstring)."""

    epochs: int
    batch_size: int = 8
    lr: float = 0.01
    clip_norm: float | None = 1.0
    patience: int | None = 3
    eval_batch_size: int = 64


@dataclass(frozen=True)
class Settings:
    hidden_size: int
    epochs: int
    seeds: tuple[int, ...]
    train_sequences: int | None
    valid_sequences: int | None
    train: TrainConfig
    dtype: torch.dtype
    device: torch.device


@dataclass
class TrainResult:
    """One trained network: NLLs (nats/frame) at the best validation epoch, and the curves."""

    train_nll: float
    valid_nll: float
    test_nll: float
    best_epoch: int
    epochs_run: int
    diverged: bool
    seconds: float
    valid_curve: list[float] = field(default_factory=list)
    train_curve: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """The columns every music experiment logs for one trained network, in this order."""
        return {
            "test_nll": self.test_nll, "valid_nll": self.valid_nll, "train_nll": self.train_nll,
            "best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
            "diverged": self.diverged, "seconds": round(self.seconds, 2),
            "valid_curve": ";".join(f"{v:.4f}" for v in self.valid_curve),
        }


# ------------------------------------------------------------------------------------------------
def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_marginal_bias(network: torch.nn.Module, rolls: Sequence[torch.Tensor]) -> None:
    """Set the output biases to ``logit(p_k)``, ``p_k = (n_k + 1) / (F + 2)`` the add-one
    smoothed frequency of key k in the frames of ``rolls``
    (:func:`rnnlab.tasks.music.key_frequencies`).

    With small output weights the network then starts at the key-frequency model
    (:func:`rnnlab.tasks.music.marginal_nll`, about 11 nats on JSB) instead of the coin flip
    (61 nats). Why: from the coin flip the first updates go into pushing all 88 outputs down,
    and the deeper tanh networks (sRNN, DT(S)-RNN) then sat on the key-frequency plateau for
    5 to 10 epochs (measured: valid NLL 11.0 after 6 epochs at lr 0.01 vs 8.8 with this start).
    ``network`` needs a ``readout`` ``nn.Linear`` (as :class:`RecurrentNetwork` has).
    """
    bias = network.readout.bias
    p = key_frequencies(rolls)
    with torch.no_grad():
        bias.copy_((torch.log(p) - torch.log1p(-p)).to(device=bias.device, dtype=bias.dtype))


@torch.no_grad()
def evaluate_nll(
    model: torch.nn.Module,
    rolls: Sequence[torch.Tensor],
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> float:
    """Frame NLL (nats per frame, over all frames of ``rolls``) of a network that maps a padded
    ``(batch, time, 88)`` input and ``lengths`` to ``(outputs, state)`` with logit outputs."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    frames = 0
    # Sorted by length so a batch holds sequences of similar length: less padding, same sum.
    order = sorted(range(len(rolls)), key=lambda i: rolls[i].shape[0], reverse=True)
    ordered = [rolls[i] for i in order]
    try:
        for batch in piano_roll_batches(ordered, batch_size, shuffle=False, device=device):
            out, _ = model(batch.inputs, lengths=batch.lengths)
            total += frame_nll(out, batch.targets, batch.mask, reduction="sum").double().cpu()
            frames += int(batch.lengths.sum())
    finally:
        model.train(was_training)
    return float(total) / frames


def train_music_model(
    model: torch.nn.Module,
    data: dict[str, list[torch.Tensor]],
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device | str | None = None,
    advance: Callable[[int], None] | None = None,
    marginal_bias: bool = False,
) -> TrainResult:
    """Train ``model`` on ``data["train"]``; early-stop on ``data["valid"]``; test the best epoch.

    With ``marginal_bias`` the output bias starts at the training set's key log-odds
    (:func:`set_marginal_bias`).

    The mini-batch order is drawn from a generator seeded with ``seed`` (the weights' seed is the
    caller's business), so the same seed and model give the same result. A non-finite training
    loss stops the run (``diverged=True``); the best epoch before it is kept, and with none all
    NLLs are NaN. ``advance(k)`` is called with the number of epochs done (all remaining ones at
    an early stop), for progress bars.
    """
    if marginal_bias:
        set_marginal_bias(model, data["train"])
    start = time.perf_counter()
    order_gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best_valid, best_state, best_epoch, stale = math.inf, None, 0, 0
    valid_curve: list[float] = []
    train_curve: list[float] = []
    diverged = False
    epochs_run = 0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        total, frames = 0.0, 0
        for batch in piano_roll_batches(data["train"], cfg.batch_size, generator=order_gen,
                                        device=device):
            out, _ = model(batch.inputs, lengths=batch.lengths)
            loss = frame_nll(out, batch.targets, batch.mask)
            if not bool(torch.isfinite(loss)):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            n = int(batch.lengths.sum())
            total += float(loss.detach()) * n
            frames += n
        if diverged:
            break
        epochs_run = epoch
        train_curve.append(total / frames)
        valid = evaluate_nll(model, data["valid"], batch_size=cfg.eval_batch_size, device=device)
        valid_curve.append(valid)
        if advance is not None:
            advance(1)
        if valid < best_valid:
            best_valid, best_epoch, stale = valid, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if cfg.patience is not None and stale >= cfg.patience:
                break
    if advance is not None and cfg.epochs > epochs_run:
        advance(cfg.epochs - epochs_run)
    if best_state is None:
        nan = math.nan
        return TrainResult(nan, nan, nan, 0, epochs_run, diverged,
                           time.perf_counter() - start, valid_curve, train_curve)
    model.load_state_dict(best_state)
    kwargs = {"batch_size": cfg.eval_batch_size, "device": device}
    return TrainResult(
        train_nll=evaluate_nll(model, data["train"], **kwargs),
        valid_nll=best_valid,
        test_nll=evaluate_nll(model, data["test"], **kwargs),
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        diverged=diverged,
        seconds=time.perf_counter() - start,
        valid_curve=valid_curve,
        train_curve=train_curve,
    )


def plot_mean_valid_curves(ax: Any, runs: dict[str, list[dict]], baseline: float, *,
                           baseline_label: str | None = None,
                           linewidths: dict[str, float] | None = None) -> None:
    """Plot on ``ax`` each network's validation NLL per epoch, averaged over its runs (the
    ``"curve"`` of each run, cut to the shortest), and the key-frequency ``baseline``."""
    from matplotlib.ticker import MaxNLocator

    for name, name_runs in runs.items():
        curves = [r["curve"] for r in name_runs if r["curve"]]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        style = {} if linewidths is None else {"lw": linewidths[name]}
        ax.plot(range(1, length + 1),
                [sum(c[e] for c in curves) / len(curves) for e in range(length)],
                marker=".", label=name, **style)
    ax.axhline(baseline, ls=":", color="gray", label=baseline_label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid NLL, mean over seeds")


def welch_t_test(sample: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """Welch's unequal-variance t-test (Welch 1947) of ``sample`` against ``reference``:
    ``t = (mean_a - mean_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with the Welch-Satterthwaite
    degrees of freedom; two-sided p-value. ``(nan, nan)`` with fewer than 2 values on a side
    or no spread at all (the test is undefined there). Computed by ``scipy.stats.ttest_ind``."""
    from scipy import stats

    a = [float(v) for v in sample if math.isfinite(v)]
    b = [float(v) for v in reference if math.isfinite(v)]
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    result = stats.ttest_ind(a, b, equal_var=False)
    return float(result.statistic), float(result.pvalue)


# ------------------------------------------------------------------------------------------------
# the resumable training path of preset=paper
class ClippedMomentumSGD(torch.optim.Optimizer):
    """SGD with momentum whose *velocity* is clipped, as in GroundHog's ``SGD_momentum``
    (Pascanu's code, ``groundhog/trainer/SGD_momentum.py``)::

        v <- m v + g;   v <- v * min(1, c / ||v||);   theta <- theta - lr v

    with ``||v||`` the norm over all parameters together. Unlike clipping the gradient before
    ``torch.optim.SGD`` (whose velocity can grow to ``c / (1 - m)``, 200 c at m = 0.995), every
    step here is at most ``lr * c`` long. A velocity with a non-finite norm is not applied (the
    trainer skips such steps too); GroundHog replaced it by ``0.1 theta``.
    """

    def __init__(self, params: Any, lr: float, momentum: float, clip: float) -> None:
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not (clip > 0 and math.isfinite(clip)):
            raise ValueError(f"clip must be a finite number > 0, got {clip}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "clip": clip})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None if closure is None else closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            velocities = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                velocities.append(state["velocity"].mul(group["momentum"]).add_(p.grad))
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(v) for v in velocities]))
            if not bool(torch.isfinite(norm)):
                continue
            scale = torch.clamp(group["clip"] / norm, max=1.0)
            for p, v in zip(params, velocities, strict=True):
                v.mul_(scale)
                self.state[p]["velocity"] = v
                p.add_(v, alpha=-group["lr"])
        return loss


def frame_nll_loss(out: torch.Tensor, targets: torch.Tensor,
                   mask: torch.Tensor | None) -> torch.Tensor:
    """The trainer's loss: :func:`~rnnlab.tasks.music.frame_nll`, nats per unmasked frame."""
    return frame_nll(out, targets, mask)


class PlateauEveryUpdates(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """``ReduceLROnPlateau`` that decides only every ``check_updates`` updates.

    The trainer steps it after every epoch with the validation NLL; it adds the epoch's
    ``updates_per_epoch`` updates (one per minibatch) to a count and passes the NLL on to
    ``ReduceLROnPlateau.step`` (which may lower the rate) only at the end of the first epoch
    at which the count reaches ``check_updates``, then starts the count again from 0. So the
    decisions fall at the end of every ``ceil(check_updates / updates_per_epoch)``-th epoch,
    and the plateau rule compares only the NLLs of those epochs. This approximates GroundHog's
    ``validFreq`` (Pascanu's code validates, and may halve the rate, mid-epoch after exactly
    every ``validFreq`` updates) at epoch granularity. The count and the inner state are in
    ``state_dict``, so a checkpointed run resumes bit for bit.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, updates_per_epoch: int,
                 check_updates: int, **plateau: Any) -> None:
        super().__init__(optimizer, **plateau)
        self.updates_per_epoch = check_int("updates_per_epoch", updates_per_epoch, low=1)
        self.check_updates = check_int("check_updates", check_updates, low=1)
        self.updates_since_check = 0

    def step(self, metrics: Any, epoch: Any = None) -> None:  # type: ignore[override]
        if epoch is not None:
            raise ValueError("PlateauEveryUpdates counts epochs itself: call step(metrics)")
        self.updates_since_check += self.updates_per_epoch
        if self.updates_since_check < self.check_updates:
            return
        self.updates_since_check = 0
        self._decide(metrics)

    def _decide(self, metrics: Any) -> None:
        """The decision taken at a check: ``ReduceLROnPlateau``'s."""
        super().step(metrics)

    # settings a resumed run must share with the checkpointed one
    _fixed: tuple[str, ...] = ("updates_per_epoch", "check_updates")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key in self._fixed:
            if state_dict.get(key) != getattr(self, key):
                raise ValueError(f"the scheduler state has {key}={state_dict.get(key)}, this "
                                 f"run {getattr(self, key)}: a run cannot change it on resume")
        super().load_state_dict(state_dict)


# GroundHog's MainLoop starts with ``self.old_cost = 1e21``, a post-processed cost exp(bits):
# as a frame NLL in nats that is ln 2 * ln(1e21) = 33.5 nats (see GroundHogHalving)
GROUNDHOG_INITIAL_COST_NATS = math.log(2.0) * math.log(1e21)
LR_RULES = ("plateau", "groundhog")


class GroundHogHalving(PlateauEveryUpdates):
    """The learning-rate rule of GroundHog's ``MainLoop`` (Pascanu's code,
    ``groundhog/mainLoop.py``, ``main``), decided at the cadence of
    :class:`PlateauEveryUpdates` (every ``check_updates`` updates, at an epoch's end)::

        if valcost > old_cost * cost_threshold:  patience -= 1
        elif valcost < old_cost:                 patience = P;  old_cost = valcost
        if divide_lr and patience < 1:
            lr = lr / divide_lr;  patience = P;  params <- best validated params

    ``valcost`` is GroundHog's post-processed validation cost: ``LM_Model.validate`` returns
    the cost in bits per step (nats / ln 2) and ``DT_RNN_Tut.py`` post-processes it with
    ``validate_postprocess = lambda x: 10**(x/numpy.log(10))``, i.e. ``exp(bits)``. Here the
    cost is the validation NLL in nats per frame, ``valcost = exp(nll / ln 2)``, and the test
    is taken in logs (exp is increasing; only float rounding at the boundary can differ)::

        nll > ref + ln 2 * ln(cost_threshold)   (worse by more than the threshold)
        nll < ref                              (better: the new reference)

    ``ref`` (``reference``, nats) starts at ``ln 2 * ln(1e21)`` (``old_cost = 1e21``) and
    changes only on a strict improvement at a check, never on a halving. A NaN NLL neither
    counts as worse nor as better (both comparisons are false, as in GroundHog). The rate is
    divided exactly (no ``eps`` as in ``ReduceLROnPlateau``). The weights are not restored
    here: the scheduler sets ``restore_pending`` and :func:`train_resumable` puts back the
    trainer's best validated weights in its epoch callback; the optimizer's velocity is left
    as it is (GroundHog changes only ``algo.lr`` and the parameters; ``SGD_momentum``'s
    velocity ``self.gs`` is not touched). Everything is in ``state_dict`` (resumable).
    """

    _fixed = ("updates_per_epoch", "check_updates", "cost_threshold", "divide_lr",
              "lr_patience")

    def __init__(self, optimizer: torch.optim.Optimizer, *, updates_per_epoch: int,
                 check_updates: int, cost_threshold: float, divide_lr: float = 2.0,
                 lr_patience: int = 1) -> None:
        super().__init__(optimizer, updates_per_epoch=updates_per_epoch,
                         check_updates=check_updates, mode="min", factor=0.5, patience=0)
        self.cost_threshold = check_number("cost_threshold", cost_threshold, low=1.0)
        self.divide_lr = check_number("divide_lr", divide_lr, low=1.0, low_open=True)
        self.lr_patience = check_int("lr_patience", lr_patience, low=1)
        self.margin = math.log(2.0) * math.log(self.cost_threshold)  # nats
        self.reference = GROUNDHOG_INITIAL_COST_NATS
        self.patience_left = self.lr_patience
        self.halvings = 0
        self.restore_pending = False

    def _decide(self, metrics: Any) -> None:
        nll = float(metrics)
        if nll > self.reference + self.margin:
            self.patience_left -= 1
        elif nll < self.reference:
            self.patience_left = self.lr_patience
            self.reference = nll
        if self.patience_left < 1:
            for group in self.optimizer.param_groups:
                group["lr"] = group["lr"] / self.divide_lr
            self.patience_left = self.lr_patience
            self.halvings += 1
            self.restore_pending = True
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


@dataclass(frozen=True)
class ResumableTraining:
    """How :func:`train_resumable` trains one network (the ``preset=paper`` path).

    ``nesterov``: Nesterov's momentum in the form of Sutskever, Martens, Dahl & Hinton (ICML
    2013) as ``torch.optim.SGD(nesterov=True)`` writes it, with ``g`` the gradient at the
    current parameters::

        v <- m v + g;   theta <- theta - lr (g + m v)

    (the heavy-ball form, ``nesterov=False``, steps ``theta <- theta - lr v``). Only with
    ``optimizer="sgd"``, ``momentum > 0`` and ``clip_norm=None``: with a momentum of 0 both
    forms are plain SGD, Adam has no such option, and the clipped-velocity optimizer of
    ``clip_norm`` (:class:`ClippedMomentumSGD`, GroundHog's rule) has no Nesterov form in
    GroundHog; each of these raises a ``ValueError`` naming the conflict.

    ``lr_check_updates``: ``None`` takes the ``lr_halving`` decision (and the ``min_lr`` stop
    that follows it) after every epoch; an int U takes it only at the end of the first epoch
    at which at least U updates (minibatches) have passed since the previous decision, i.e.
    every ``ceil(U / updates_per_epoch)`` epochs (:class:`PlateauEveryUpdates`; U = 1000 with
    JSB's 229 chorales at batch 1: after epochs 5, 10, 15, ...). This approximates GroundHog's
    ``state['validFreq'] = 1000``, which validates and decides mid-epoch after exactly every
    1000 updates; the validation NLL, early stopping (``patience``) and the restore of the
    best epoch stay per epoch. Needs ``lr_halving``.

    ``weight_noise``: the standard deviation of Gaussian weight noise (``None``: none): every
    update's gradient is taken at weights plus a fresh draw, biases excepted, and applied to
    the clean weights (:class:`rnnlab.train.WeightNoise`, seeded with the run's seed;
    GroundHog's ``state['weight_noise_amount']``).

    ``lr_rule``: the halving rule. ``"plateau"`` (the default): ``ReduceLROnPlateau``, halve
    unless the NLL is below the best of the checks by the relative margin ``lr_halving``.
    ``"groundhog"``: GroundHog's ``MainLoop`` rule (:class:`GroundHogHalving`): halve only
    when the NLL is *worse* than the reference by the threshold ``cost_threshold = 1 +
    lr_halving`` on ``exp(bits)`` (after ``lr_patience`` such checks, GroundHog's
    ``state['patience']``), and put back the best validated weights at every halving (the
    velocity is kept); the ``min_lr`` stop then fires once the rate is ``<= min_lr``
    (GroundHog loops ``while state['lr'] > state['minlr']``), the plateau rule's below it.
    """

    epochs: int
    batch_size: int = 1
    optimizer: str = "sgd"
    lr: float = 1.0
    momentum: float = 0.0
    clip_norm: float | None = 1.0
    patience: int | None = None
    lr_halving: float | None = None
    min_lr: float | None = None
    nesterov: bool = False
    lr_check_updates: int | None = None
    lr_rule: str = "plateau"
    lr_patience: int = 1
    weight_noise: float | None = None

    def __post_init__(self) -> None:
        if self.weight_noise is not None:
            check_number("weight_noise", self.weight_noise, low=0.0, low_open=True)
        check_choice("lr_rule", self.lr_rule, LR_RULES)
        check_int("lr_patience", self.lr_patience, low=1)
        if self.lr_rule == "groundhog" and self.lr_halving is None:
            raise ValueError("lr_rule='groundhog' needs lr_halving (its cost_threshold is "
                             "1 + lr_halving; GroundHog's state['cost_threshold'] = 1.0002 is "
                             "lr_halving=2e-4)")
        if self.lr_rule != "groundhog" and self.lr_patience != 1:
            raise ValueError(f"lr_patience={self.lr_patience} applies to lr_rule='groundhog' "
                             f"only, got lr_rule={self.lr_rule!r}")
        if self.lr_check_updates is not None:
            check_int("lr_check_updates", self.lr_check_updates, low=1)
            if self.lr_halving is None:
                raise ValueError(
                    f"lr_check_updates={self.lr_check_updates} needs lr_halving: it sets how "
                    "often the halving rule decides, and there is no halving rule")
        if not check_bool("nesterov", self.nesterov):
            return
        if self.optimizer != "sgd":
            raise ValueError(f"nesterov=True needs optimizer='sgd', got {self.optimizer!r} "
                             "(Nesterov momentum is an option of SGD only)")
        if not self.momentum > 0:
            raise ValueError(f"nesterov=True needs momentum > 0, got {self.momentum} (with no "
                             "momentum Nesterov's update is plain SGD: set nesterov=False)")
        if self.clip_norm is not None:
            raise ValueError(
                f"nesterov=True needs clip_norm=None, got {self.clip_norm}: with clipping, "
                "optimizer='sgd' is ClippedMomentumSGD (GroundHog's clipped velocity), which "
                "has no Nesterov form; turn clipping off or set nesterov=False")


def build_optimizer(params: Sequence[torch.nn.Parameter], cfg: ResumableTraining
                    ) -> tuple[torch.optim.Optimizer, float | None]:
    """The optimizer :func:`train_resumable` uses for ``cfg`` and the gradient-norm threshold
    left for the trainer to apply (``None`` where the optimizer clips, or nothing does).

    ``optimizer="sgd"`` with ``clip_norm``: :class:`ClippedMomentumSGD` (the velocity is
    clipped, as in GroundHog); ``"sgd"`` without: ``torch.optim.SGD`` with ``cfg.momentum``
    and ``cfg.nesterov`` (dampening 0); otherwise Adam, the gradient clipped by the trainer.
    """
    clip = cfg.clip_norm
    if cfg.optimizer == "sgd" and clip is not None:
        # GroundHog clips the velocity, not the gradient (see ClippedMomentumSGD)
        return ClippedMomentumSGD(params, cfg.lr, cfg.momentum, clip), None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov), None
    return torch.optim.Adam(params, lr=cfg.lr), clip


def train_resumable(
    model: torch.nn.Module,
    data: dict[str, list[torch.Tensor]],
    cfg: ResumableTraining,
    *,
    seed: int,
    run_dir: str | Path,
    device: torch.device | str | None = None,
    marginal_bias: bool = True,
    callbacks: Sequence[Callable[[Trainer, str], None]] = (),
) -> TrainResult:
    """Train ``model`` through :class:`rnnlab.train.Trainer` with a checkpoint in ``run_dir``
    after every epoch; if ``run_dir`` already holds one, continue from it (a finished run
    returns at once with its result). Same seed, data and settings: the same weights, whether
    the run was stopped and resumed or not (the trainer restores every generator).

    Per epoch: the training minibatches (``cfg.batch_size`` sequences, grouped once by a
    generator seeded with ``seed``, visited in an order the trainer reshuffles every epoch),
    then the validation NLL over all validation frames (one batch: exactly nats per frame).
    ``lr_halving``: halve the learning rate after an epoch whose validation NLL is not below
    the best so far by this relative margin (GroundHog's ``divide_lr``/``cost_threshold``
    rule, as ``ReduceLROnPlateau(factor=0.5, patience=0, threshold_mode="rel")``); the run
    stops once the rate is below ``min_lr``, after ``patience`` epochs without improvement, or
    after ``cfg.epochs``. ``lr_check_updates``: the halving rule decides only every that many
    updates (:class:`PlateauEveryUpdates`; see :class:`ResumableTraining`).
    ``lr_rule="groundhog"``: GroundHog's rule instead (:class:`GroundHogHalving`), which also
    puts back the best validated epoch's weights (the trainer's) at every halving.
    The best validation epoch's weights are restored and tested.
    The optimizer: :func:`build_optimizer` (``cfg.nesterov``: Nesterov momentum, see
    :class:`ResumableTraining`).
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    if marginal_bias:
        set_marginal_bias(model, data["train"])
    opt, clip = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    group_gen = torch.Generator().manual_seed(seed)
    train = [(b.inputs, b.targets, b.mask) for b in piano_roll_batches(
        data["train"], cfg.batch_size, generator=group_gen, device=device)]
    scheduler = None
    if cfg.lr_halving is not None and cfg.lr_rule == "groundhog":
        # GroundHog decides at every validation; None: at every epoch
        scheduler = GroundHogHalving(
            opt, updates_per_epoch=len(train), check_updates=cfg.lr_check_updates or 1,
            cost_threshold=1.0 + cfg.lr_halving, lr_patience=cfg.lr_patience)
    elif cfg.lr_halving is not None:
        plateau = {"mode": "min", "factor": 0.5, "patience": 0, "threshold": cfg.lr_halving,
                   "threshold_mode": "rel"}
        if cfg.lr_check_updates is None:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **plateau)
        else:
            # one update per minibatch (BPTT over whole sequences)
            scheduler = PlateauEveryUpdates(opt, updates_per_epoch=len(train),
                                            check_updates=cfg.lr_check_updates, **plateau)
    valid = [(b.inputs, b.targets, b.mask) for b in piano_roll_batches(
        data["valid"], len(data["valid"]), shuffle=False, device=device)]

    def restore_best_on_halving(trainer: Trainer, event: str) -> None:
        # GroundHog: p.set_value(bparams[p.name]) at every halving. The trainer's best state
        # is that of the best validated epoch (kept for its own restore, in its checkpoint);
        # the optimizer state (velocity) is left alone, as GroundHog leaves it.
        if event == "epoch" and isinstance(scheduler, GroundHogHalving) \
                and scheduler.restore_pending:
            scheduler.restore_pending = False
            best = trainer._best_state
            if best is not None:
                trainer.model.load_state_dict(best)

    def stop_at_min_lr(trainer: Trainer, event: str) -> None:
        # the rate changes only where the scheduler decides, so checking after every epoch
        # stops exactly after the decision that took it below min_lr (GroundHog: to or below)
        if event != "epoch" or cfg.min_lr is None:
            return
        lr = trainer.optimizer.param_groups[0]["lr"]
        if lr < cfg.min_lr or (cfg.lr_rule == "groundhog" and lr <= cfg.min_lr):
            trainer.stopped_early = True

    noise = None if cfg.weight_noise is None else WeightNoise(cfg.weight_noise, seed=seed)
    trainer = Trainer(model, opt, BPTT(model, reduction="mean"), loss=frame_nll_loss,
                      scheduler=scheduler, clip=clip, batch_size=cfg.batch_size,
                      seed=seed, patience=cfg.patience, run_dir=run_dir, progress=False,
                      callbacks=[restore_best_on_halving, stop_at_min_lr, *callbacks],
                      weight_noise=noise)
    if (run_dir / CHECKPOINT_NAME).is_file():
        trainer.resume()
    rows = trainer.fit(train, cfg.epochs, valid)
    valid_curve = [float(r["val_loss"]) for r in rows]
    train_curve = [float(r["train_loss"]) for r in rows]
    diverged = any(not math.isfinite(v) for v in valid_curve)
    seconds = time.perf_counter() - start  # this call's time (a resumed run: since the resume)
    if trainer.best_epoch is None or not math.isfinite(trainer.best):
        nan = math.nan
        return TrainResult(nan, nan, nan, 0, len(rows), diverged, seconds, valid_curve,
                           train_curve)
    kwargs = {"batch_size": 64, "device": device}
    return TrainResult(
        train_nll=evaluate_nll(model, data["train"], **kwargs),
        valid_nll=float(trainer.best),
        test_nll=evaluate_nll(model, data["test"], **kwargs),
        best_epoch=int(trainer.best_epoch) + 1,
        epochs_run=len(rows),
        diverged=diverged,
        seconds=seconds,
        valid_curve=valid_curve,
        train_curve=train_curve,
    )


__all__ = [
    "COIN_FLIP_NLL",
    "GROUNDHOG_INITIAL_COST_NATS",
    "LR_RULES",
    "PRESETS",
    "ClippedMomentumSGD",
    "GroundHogHalving",
    "MusicConfig",
    "PlateauEveryUpdates",
    "ResumableTraining",
    "Settings",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "count_parameters",
    "evaluate_nll",
    "frame_nll_loss",
    "load_music_data",
    "project_data_candidates",
    "set_marginal_bias",
    "train_music_model",
    "train_resumable",
    "welch_t_test",
]
