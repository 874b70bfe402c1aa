"""``long-term``: success rate against the time lag tau, per training method.

The experiment of Martens & Sutskever (2011, table 1) and Pascanu, Mikolov & Bengio (2013,
fig. 7 and table 1) at laptop scale: for every task, lag tau, method and seed, one network is
trained on fresh minibatches from the task's generator for a fixed budget of updates (stopped
early once solved) and scored on a fresh test set with the task's own metric
(``task.score(outputs)``). The table has one row per method and one column per lag; a cell is
``mean success rate over seeds (solved runs / runs)``, as in the papers' tables.

Tasks (``rnnlab.tasks.long_term``) and what tau means for each:

- ``delayed_recall``: ``y(t) = x(t - tau)`` (the course's definition), random bits, sequences
  of length ``tau + recall_steps``; the network must reproduce the first ``recall_steps``
  inputs, each ``tau`` steps later, while ignoring the ``tau`` random bits in between. A
  sequence is correct when every scored bit is on the right side of 0.5.
- ``adding_problem``: tau is the sequence length T (the papers' convention: their tables index
  the adding problem by T); ``variant="pascanu2013"`` by default (the second marker lies in
  the first half, so the lag is at least T/2). A sequence is correct when its squared error is
  at most 0.04 (Pascanu et al. 2013), or ``|error| < 0.04`` for ``hochreiter1997``.

A run is *solved* when under 1% of the test sequences are wrong (Pascanu et al. 2013's
criterion, :attr:`~rnnlab.tasks.long_term.TaskScore.solved`). Early stopping uses a separate
validation set; training data, validation and test sets come from three distinct seeds.

Methods (:data:`METHODS`): the remedies of the issue, each a model and a way to train it.

- ``sgd``: tanh RNN (default ``nn.RNN`` initialization), SGD on BPTT gradients, no clipping
  (a step with a non-finite gradient is skipped, never applied).
- ``sgd_clip``: the same with gradient-norm clipping, ``g <- theta g / ||g||`` when
  ``||g|| > theta`` (Pascanu et al. 2013, algorithm 1; their "SGD-C").
- ``hf``: tanh RNN trained by Hessian-free optimization with structural damping (Martens &
  Sutskever 2011), :class:`~rnnlab.optim.HessianFree`; one update is one HF step (CG on the
  damped Gauss-Newton model), so it has its own budget ``hf_budget`` and batch ``hf_batch``.
- ``smart_init``: tanh RNN initialized by ``smart_init`` (orthogonal, Saxe et al. 2014;
  sparse scaled to a spectral radius, Sutskever et al. 2013; identity, Le et al. 2015), trained
  like ``sgd_clip``.
- ``lstm``, ``gru``: gated units (``rnnlab.cells.LSTMCell`` without peepholes, i.e. Gers et
  al. 2000's LSTM with forget gate and PyTorch's layout, forget bias 1; ``GRUCell`` in
  PyTorch's form, Cho et al. 2014) with a linear readout (``RecurrentNetwork``), trained like
  ``sgd_clip``.

Every network has an identity readout and is trained on the task's loss (``masked_mse``, the
mean squared error over the scored steps). The published successes use budgets of 10^5-10^6
SGD updates or hundreds of HF steps (with 10^4-sequence minibatches); the default budget here
is far smaller, so the default table shows which methods learn *quickly*, not what each
method can eventually reach. ``quick=true`` runs a smoke-sized grid; see the docstring of
:class:`LongTermConfig` for the papers' scale.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    check_config,
    option,
    register,
)
from rnnlab.init import initialize
from rnnlab.learning.clipping import GradientClipper
from rnnlab.models import ElmanRNN
from rnnlab.optim.hessian_free import HessianFree
from rnnlab.tasks.long_term import (
    MARKER_VARIANTS,
    LongTermTask,
    adding_problem,
    delayed_recall,
    masked_mse,
)

TASKS = ("delayed_recall", "adding_problem")
SMART_INITS = ("orthogonal", "sparse_spectral", "identity")
# Minimal T of each adding-problem variant (the markers need room: see adding_problem).
_MIN_ADDING_LENGTH = {"hochreiter1997": 20, "pascanu2013": 10}


@dataclass(frozen=True)
class Method:
    """A row of the table: which network, initialized how, trained how.

    ``model``: ``"elman"``, ``"lstm"`` or ``"gru"``; ``trainer``: ``"sgd"`` (BPTT gradients,
    ``torch.optim.SGD``) or ``"hf"`` (:class:`~rnnlab.optim.HessianFree`); ``clip``: norm
    clipping at ``LongTermConfig.clip``; ``init``: ``"default"`` or ``"smart"`` (the
    initializer named by ``LongTermConfig.smart_init``).
    """

    name: str
    label: str
    model: str
    trainer: str
    clip: bool
    init: str = "default"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sgd", "tanh RNN + SGD", "elman", "sgd", clip=False),
    Method("sgd_clip", "tanh RNN + SGD + clipping", "elman", "sgd", clip=True),
    Method("hf", "tanh RNN + Hessian-free", "elman", "hf", clip=False),
    Method("smart_init", "tanh RNN + {init} init + clipping", "elman", "sgd", clip=True,
           init="smart"),
    Method("lstm", "LSTM + {gated} + clipping", "lstm", "sgd", clip=True),
    Method("gru", "GRU + {gated} + clipping", "gru", "sgd", clip=True),
)}
GATED = ("lstm", "gru")


def gated_units_available() -> bool:
    """Whether ``rnnlab.cells`` (LSTMCell, GRUCell) and ``RecurrentNetwork`` import."""
    try:
        _gated_classes()
    except ImportError:
        return False
    return True


def _gated_classes() -> tuple[type, type, type]:
    try:
        from rnnlab.cells import GRUCell, LSTMCell
        from rnnlab.models.recurrent import RecurrentNetwork
    except ImportError as exc:
        raise ImportError(
            f"rnnlab.cells is not available yet (the lstm and gru methods need "
            f"rnnlab.cells.LSTMCell/GRUCell and rnnlab.models.recurrent.RecurrentNetwork): {exc}"
        ) from exc
    return LSTMCell, GRUCell, RecurrentNetwork


def _default_methods() -> tuple[str, ...]:
    base = ("sgd", "sgd_clip", "hf", "smart_init")
    return base + GATED if gated_units_available() else base


# Smaller values that ``quick=true`` puts in place of the fields still at their defaults.
QUICK = {
    "lags": (10, 20),
    "seeds": (0,),
    "budget": 100,
    "hf_budget": 3,
    "hf_cg_iters": 10,
    "val_size": 128,
    "test_size": 256,
}


@dataclass
class LongTermConfig:
    """Options of ``long-term``.

    The default grid (2 tasks x 4 lags x 6 methods x 2 seeds = 96 runs) takes about 4 minutes
    on 2 cores (2 worker processes of 1 thread each); ``quick=true`` about 30 s. The papers'
    scale is orders of magnitude larger: the defaults of Pascanu et al.'s published code
    (github.com/pascanur/trainingRNNs) are 50 hidden units, minibatches of 20, learning rate
    0.01, clipping threshold 1, lengths 50-200, up to 5 * 10^6 updates and 10^4 evaluation
    sequences; Martens & Sutskever (2011) run HF on large minibatches for far more CG
    iterations than here. A run at that scale, e.g. ``--lags 50,100,200 --seeds 0,1,2,3,4
    --hidden-size 50 --batch 20 --lr 0.01 --momentum 0 --budget 1000000 --hf-budget 500
    --hf-batch 1000 --hf-cg-iters 100 --test-size 10000 --workers 16``, needs hundreds of
    CPU-hours: one tanh-RNN run at T = 100 is about 10^6 updates x 20 ms = 5.5 hours on one
    core, and a GPU helps little at batch 20 (the time loop is latency-bound).
    """

    tasks: tuple[str, ...] = option(TASKS, f"tasks, from {', '.join(TASKS)}", choices=TASKS,
                                    unique=True)
    lags: tuple[int, ...] = option((10, 20, 50, 100),
                                   "time lags tau (adding problem: the sequence length T)",
                                   low=1, unique=True)
    methods: tuple[str, ...] = option(
        _default_methods(),
        f"methods, from {', '.join(METHODS)} (lstm/gru need rnnlab.cells)",
        choices=tuple(METHODS), unique=True)
    seeds: tuple[int, ...] = option((0, 1), "seeds: one run per (task, tau, method, seed)",
                                    low=0, unique=True)
    hidden_size: int = option(32, "N, hidden units of every network", low=1)
    budget: int = option(250, "SGD updates per run (the run stops early once solved)", low=1)
    batch: int = option(32, "sequences per SGD update (fresh from the generator each time)",
                        low=1)
    lr: float = option(0.05, "SGD learning rate", low=0, low_open=True)
    momentum: float = option(0.9, "SGD momentum (0: plain SGD)", low=0, high=1, high_open=True)
    gated_optimizer: str = option("adam", "optimizer of the LSTM/GRU rows: adam (their usual "
                                  "practice) or sgd (the same SGD as the tanh rows)",
                                  choices=("adam", "sgd"))
    gated_lr: float = option(0.01, "learning rate of the LSTM/GRU rows when gated_optimizer=adam",
                             low=0, low_open=True)
    clip: float = option(1.0, "gradient-norm clipping threshold theta of the clipped methods",
                         low=0, low_open=True)
    smart_init: str = option("orthogonal",
                             f"initializer of smart_init: {', '.join(SMART_INITS)}",
                             choices=SMART_INITS)
    hf_budget: int = option(8, "Hessian-free updates per run (each is one CG solve)", low=1)
    hf_batch: int = option(64, "sequences per Hessian-free update", low=1)
    hf_cg_iters: int = option(15, "maximum CG iterations per Hessian-free update", low=1)
    hf_damping: float = option(1.0, "initial Tikhonov damping lambda (adapted by LM)",
                               low=0, low_open=True)
    hf_structural_damping: float = option(
        0.1, "structural damping mu (Martens & Sutskever 2011; 0: off)", low=0)
    eval_every: int = option(25, "SGD updates between validation checks (HF: every update)",
                             low=1)
    val_size: int = option(256, "validation sequences (early stopping)", low=1)
    test_size: int = option(1000, "test sequences (the reported success rate)", low=1)
    recall_steps: int = option(1, "delayed recall: scored steps (sequence length tau + this)",
                               low=1)
    adding_variant: str = option("pascanu2013",
                                 f"adding-problem variant: {', '.join(MARKER_VARIANTS)}",
                                 choices=MARKER_VARIANTS)
    test_seed: int = option(2013, "seed of the validation and test sets")
    dtype: str = option("float32", "float32 or float64", choices=("float32", "float64"))
    device: str = option("cpu", "torch device (cpu, cuda, ...)")
    torch_threads: int = option(1, "torch.set_num_threads in each run", low=1)
    workers: int = option(2, "runs in parallel (processes); results do not depend on it", low=1)
    quick: bool = option(False, "smoke-sized grid (<60 s): smaller lags, seeds, budgets and "
                                "test sets, except where an option is set to a non-default value")

    def validate(self) -> None:
        gated = [m for m in self.methods if m in GATED]
        if gated and not gated_units_available():
            raise ValueError(f"methods {gated} need gated units, but rnnlab.cells is not "
                             "available yet")
        if "adding_problem" in self.tasks:
            low = _MIN_ADDING_LENGTH[self.adding_variant]
            short = [t for t in self.lags if t < low]
            if short:
                raise ValueError(f"the {self.adding_variant} adding problem needs T >= {low}; "
                                 f"lags {short} are too short (drop them or the task)")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device {self.device!r} is not a torch device: {exc}") from None


def effective_config(cfg: LongTermConfig) -> LongTermConfig:
    """``cfg`` with the :data:`QUICK` values put in place of defaults when ``cfg.quick``."""
    if not cfg.quick:
        return cfg
    defaults = {f.name: f.default for f in dataclasses.fields(LongTermConfig)}
    changes = {k: v for k, v in QUICK.items() if getattr(cfg, k) == defaults[k]}
    return dataclasses.replace(cfg, **changes)


# ------------------------------------------------------------------------------------------
# data
def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from a tuple of names and numbers (CRC-32 of their text).

    Training, validation and test data use different roles in ``parts``, so their streams
    differ, and a run's data do not depend on which other runs are in the grid.
    """
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def make_task(cfg: LongTermConfig, task: str, tau: int, batch: int,
              generator: torch.Generator) -> LongTermTask:
    """One batch of ``task`` at lag ``tau`` (see the module docstring for what tau means)."""
    dtype = getattr(torch, cfg.dtype)
    if task == "delayed_recall":
        return delayed_recall(batch, tau + cfg.recall_steps, tau, generator=generator,
                              dtype=dtype, device=cfg.device)
    if task == "adding_problem":
        return adding_problem(batch, tau, variant=cfg.adding_variant, generator=generator,
                              dtype=dtype, device=cfg.device)
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def _task_sizes(task: str) -> tuple[int, int]:
    """(input features, outputs) of ``task`` as the experiment builds it."""
    return (1, 1) if task == "delayed_recall" else (2, 1)


# ------------------------------------------------------------------------------------------
# models
def build_model(cfg: LongTermConfig, method: Method, task: str, seed: int) -> nn.Module:
    """The network of ``method`` for ``task``, initialized from ``seed`` (on cfg's device)."""
    dtype = getattr(torch, cfg.dtype)
    device = torch.device(cfg.device)
    d, o = _task_sizes(task)
    gen = torch.Generator(device=device).manual_seed(seed)
    if method.model == "elman":
        model = ElmanRNN(d, cfg.hidden_size, o, readout="identity", device=device, dtype=dtype)
        return initialize(model, cfg.smart_init if method.init == "smart" else "default",
                          generator=gen)
    lstm_cls, gru_cls, network_cls = _gated_classes()
    if method.model == "lstm":
        cell = lstm_cls(d, cfg.hidden_size, peepholes=False, generator=gen, device=device,
                        dtype=dtype)
    elif method.model == "gru":
        cell = gru_cls(d, cfg.hidden_size, form="torch", generator=gen, device=device,
                       dtype=dtype)
    else:  # pragma: no cover - METHODS only name these three
        raise ValueError(f"unknown model {method.model!r}")
    return network_cls(cell, o, readout="identity", generator=gen)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)[0]


# ------------------------------------------------------------------------------------------
# one run
@dataclass
class TrainLog:
    """How training went: updates used, the update at which the validation set was solved
    (None: never), training losses, steps refused for a non-finite gradient or loss, clipped
    steps, gradient norms before clipping (SGD) and CG iterations per step (HF)."""

    updates: int = 0
    solved_at: int | None = None
    losses: list[float] = dataclasses.field(default_factory=list)
    skipped: int = 0
    clipped: int = 0
    grad_norms: list[float] = dataclasses.field(default_factory=list)
    cg_iterations: list[float] = dataclasses.field(default_factory=list)


@dataclass
class RunOutcome:
    """What one (task, tau, method, seed) run measured (one row of ``metrics.csv``)."""

    success_rate: float
    solved: bool
    step_accuracy: float
    test_mse: float
    updates: int
    solved_at: int | None
    diverged: bool
    train_loss: float
    skipped: int
    clipped: int
    grad_norm_median: float
    cg_iterations_mean: float


@torch.no_grad()
def evaluate(model: nn.Module, task: LongTermTask) -> tuple[float, bool, float, float, bool]:
    """``(success_rate, solved, step_accuracy, mse, diverged)`` of ``model`` on ``task``.

    Non-finite outputs at scored steps count as every sequence wrong (``diverged``) rather than
    an error: a diverged run is a result of the method, not a fault of the experiment.
    """
    out = _outputs(model, task.inputs)
    if not bool(torch.isfinite(out[task.mask]).all()):
        return 0.0, False, 0.0, math.inf, True
    score = task.score(out)
    return score.success_rate, score.solved, score.step_accuracy, score.mse, False


def train_model(cfg: LongTermConfig, method: Method, task: str, tau: int, seed: int,
                val: LongTermTask) -> tuple[nn.Module, TrainLog]:
    """Build and train the network of ``method`` on ``task`` at lag ``tau``.

    Initial weights come from ``derive_seed("model", task, tau, seed)`` (the same for every
    tanh-RNN method with the default initialization, so they are compared from the same start),
    training minibatches from ``derive_seed("train", task, tau, seed)``. Training stops after
    the budget or as soon as ``val`` is solved (checked every ``eval_every`` SGD updates, after
    every HF update).
    """
    model = build_model(cfg, method, task, derive_seed("model", task, tau, seed))
    data = torch.Generator().manual_seed(derive_seed("train", task, tau, seed))
    if method.trainer == "hf":
        return model, _train_hf(cfg, model, task, tau, data, val)
    return model, _train_sgd(cfg, method, model, task, tau, data, val)


def train_run(cfg: LongTermConfig, method: Method, task: str, tau: int, seed: int,
              val: LongTermTask, test: LongTermTask) -> RunOutcome:
    """Train one network (:func:`train_model`) and score it on ``test``."""
    model, log = train_model(cfg, method, task, tau, seed, val)
    success, solved, step_acc, mse, diverged = evaluate(model, test)
    finite = [v for v in log.losses[-10:] if math.isfinite(v)]
    norms = [v for v in log.grad_norms if math.isfinite(v)]
    return RunOutcome(
        success_rate=success, solved=solved, step_accuracy=step_acc, test_mse=mse,
        updates=log.updates, solved_at=log.solved_at, diverged=diverged,
        train_loss=statistics.fmean(finite) if finite else math.nan,
        skipped=log.skipped, clipped=log.clipped,
        grad_norm_median=statistics.median(norms) if norms else math.nan,
        cg_iterations_mean=statistics.fmean(log.cg_iterations) if log.cg_iterations
        else math.nan,
    )


def _train_sgd(cfg: LongTermConfig, method: Method, model: nn.Module, task: str, tau: int,
               data: torch.Generator, val: LongTermTask) -> TrainLog:
    if method.model in ("lstm", "gru") and cfg.gated_optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=cfg.gated_lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    # Without clipping the threshold is infinite: the clipper then only refuses non-finite
    # gradients, so "no clipping" never writes NaN into the weights either.
    clipper = GradientClipper("norm", cfg.clip if method.clip else math.inf, warn=False)
    log = TrainLog()
    for update in range(1, cfg.budget + 1):
        batch = make_task(cfg, task, tau, cfg.batch, data)
        loss = masked_mse(_outputs(model, batch.inputs), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        result = clipper.step(opt)
        log.updates = update
        log.grad_norms.append(result.norm)
        log.losses.append(float(loss.detach()))
        if (update % cfg.eval_every == 0 or update == cfg.budget) and evaluate(model, val)[1]:
            log.solved_at = update
            break
    log.skipped, log.clipped = clipper.skipped, clipper.clipped
    return log


def _train_hf(cfg: LongTermConfig, model: nn.Module, task: str, tau: int,
              data: torch.Generator, val: LongTermTask) -> TrainLog:
    mu = cfg.hf_structural_damping
    opt = HessianFree(model.parameters(), damping=cfg.hf_damping, model=model,
                      max_cg_iters=cfg.hf_cg_iters, structural_damping=mu)
    log = TrainLog()
    with warnings.catch_warnings():
        # A refused HF step is counted (opt.skipped_steps) and logged, not printed per step.
        warnings.simplefilter("ignore", RuntimeWarning)
        for update in range(1, cfg.hf_budget + 1):
            batch = make_task(cfg, task, tau, cfg.hf_batch, data)
            x = batch.inputs

            def forward(x: torch.Tensor = x) -> torch.Tensor:
                return _outputs(model, x)

            def loss_fn(out: torch.Tensor, batch: LongTermTask = batch) -> torch.Tensor:
                return masked_mse(out, batch)

            hidden: Callable[[], torch.Tensor] | None = None
            if mu > 0:
                def hidden(x: torch.Tensor = x) -> torch.Tensor:
                    return model.hidden_states(x)
            log.losses.append(float(opt.step(forward, loss_fn, hidden=hidden)))
            log.updates = update
            if "cg_iterations" in opt.last_step:
                log.cg_iterations.append(float(opt.last_step["cg_iterations"]))
            if evaluate(model, val)[1]:
                log.solved_at = update
                break
    log.skipped = opt.skipped_steps
    return log


# ------------------------------------------------------------------------------------------
# table and plot
def method_label(cfg: LongTermConfig, name: str) -> str:
    gated = "Adam" if cfg.gated_optimizer == "adam" else "SGD"
    return METHODS[name].label.format(init=cfg.smart_init, gated=gated)


def task_label(cfg: LongTermConfig, task: str) -> str:
    if task == "adding_problem":
        return f"adding problem ({cfg.adding_variant}), tau = T"
    return f"delayed recall (bits, {cfg.recall_steps} scored step(s))"


def lag_column(tau: int) -> str:
    return f"tau={tau}"


def summarise(cfg: LongTermConfig, records: list[dict[str, Any]],
              chance: dict[tuple[str, int], float]) -> tuple[list[dict[str, Any]], dict]:
    """The papers' table (rows: method; columns: tau; cell: mean success (solved/runs)) and
    the same numbers as nested dicts ``{task: {method: {tau: value}}}``."""
    rows: list[dict[str, Any]] = []
    mean: dict[str, dict[str, dict[int, float]]] = {}
    solved: dict[str, dict[str, dict[int, int]]] = {}
    for task in cfg.tasks:
        mean[task], solved[task] = {}, {}
        rows.append({"task": task, "method": "chance (ignores the inputs)",
                     **{lag_column(t): f"{chance[(task, t)]:.3g}" for t in cfg.lags}})
        for name in cfg.methods:
            row: dict[str, Any] = {"task": task, "method": method_label(cfg, name)}
            mean[task][name], solved[task][name] = {}, {}
            for tau in cfg.lags:
                runs = [r for r in records
                        if r["task"] == task and r["method"] == name and r["tau"] == tau]
                m = statistics.fmean(r["success_rate"] for r in runs)
                k = sum(bool(r["solved"]) for r in runs)
                mean[task][name][tau], solved[task][name][tau] = m, k
                row[lag_column(tau)] = f"{m:.2f} ({k}/{len(runs)})"
            rows.append(row)
    return rows, {"success": mean, "solved": solved}


def _plot(cfg: LongTermConfig, records: list[dict[str, Any]], numbers: dict,
          chance: dict[tuple[str, int], float]) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cfg.tasks), figsize=(6.2 * len(cfg.tasks), 4.6),
                             squeeze=False)
    lags = sorted(cfg.lags)
    for ax, task in zip(axes[0], cfg.tasks, strict=True):
        for name in cfg.methods:
            ys = [numbers["success"][task][name][t] for t in lags]
            line, = ax.plot(lags, ys, marker="o", label=method_label(cfg, name))
            pts = [(r["tau"], r["success_rate"]) for r in records
                   if r["task"] == task and r["method"] == name]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, alpha=0.35,
                       color=line.get_color())
        ax.plot(lags, [chance[(task, t)] for t in lags], ls="--", color="gray",
                label="chance (ignores the inputs)")
        ax.set_xscale("log")
        ax.set_xticks(lags, [str(t) for t in lags])
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("time lag tau" + (" (= sequence length T)"
                                         if task == "adding_problem" else ""))
        ax.set_ylabel(f"test success rate (mean over {len(cfg.seeds)} seeds; dots: runs)")
        ax.set_title(task_label(cfg, task))
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(f"long-term dependencies: N={cfg.hidden_size}, SGD budget {cfg.budget} x "
                 f"{cfg.batch} seqs, HF budget {cfg.hf_budget} x {cfg.hf_batch} seqs")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------
def run_one(cfg: LongTermConfig, task: str, tau: int, name: str, seed: int) -> dict[str, Any]:
    """One run as a metrics row: builds its own validation and test sets (from
    ``cfg.test_seed``) and its own training stream, so it gives the same row in any process."""
    t0 = time.perf_counter()
    val = make_task(cfg, task, tau, cfg.val_size, torch.Generator().manual_seed(
        derive_seed("validation", task, tau, cfg.test_seed)))
    test = make_task(cfg, task, tau, cfg.test_size, torch.Generator().manual_seed(
        derive_seed("test", task, tau, cfg.test_seed)))
    out = train_run(cfg, METHODS[name], task, tau, seed, val, test)
    row = {"task": task, "method": name, "tau": tau, "seed": seed, **dataclasses.asdict(out),
           "chance": test.chance, "seconds": time.perf_counter() - t0}
    row["solved_at"] = "" if out.solved_at is None else out.solved_at
    return row


@register("long-term",
          "success rate vs time lag tau on delayed recall and the adding problem, per remedy "
          "(SGD, clipping, Hessian-free, smart init, LSTM, GRU)",
          LongTermConfig)
def run(config: LongTermConfig, ctx: RunContext) -> ExperimentResult:
    cfg = effective_config(config)
    if cfg is not config:
        check_config(cfg)
    started = time.perf_counter()
    # Longest runs first, so that parallel workers finish together.
    jobs = [(cfg, task, tau, name, seed) for task in cfg.tasks
            for tau in sorted(cfg.lags, reverse=True)
            for name in cfg.methods for seed in ctx.seeds(cfg)]
    # Rows in the order of the jobs (each logged as it finishes, in any order).
    records = ctx.run_jobs("long-term runs", run_one, jobs, workers=cfg.workers,
                           threads=cfg.torch_threads)
    chance = {(r["task"], r["tau"]): r["chance"] for r in records}

    rows, numbers = summarise(cfg, records, chance)
    plot = ctx.save_figure(_plot(cfg, records, numbers, chance), "success_vs_lag")
    wall = time.perf_counter() - started
    parts = []
    for task in cfg.tasks:
        best = []
        for name in cfg.methods:
            done = [t for t in cfg.lags if numbers["solved"][task][name][t] > 0]
            best.append(f"{name} {max(done) if done else '-'}")
        parts.append(f"{task}: longest lag solved by at least one seed: " + ", ".join(best))
    n_solved = sum(bool(r["solved"]) for r in records)
    summary = (f"{len(records)} runs, {n_solved} solved (<1% test error) in {wall:.0f} s. "
               + "; ".join(parts) + ". Budgets are far below the papers' (see the docs).")
    return ExperimentResult(
        title=f"long-term: mean test success rate (solved runs / runs), N={cfg.hidden_size}, "
              f"{len(cfg.seeds)} seed(s)",
        rows=rows, summary=summary, plots=[plot],
        figures={**numbers, "chance": {f"{k[0]}/tau={k[1]}": v for k, v in chance.items()},
                 "runs": len(records), "solved_runs": n_solved, "wall_seconds": wall,
                 "effective_config": dataclasses.asdict(cfg)},
    )
