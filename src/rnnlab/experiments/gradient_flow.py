"""``gradient-flow``: the course's "gradient as an image" for the tanh RNN, the LSTM and the GRU.

One long-lag sequence (the adding problem of Hochreiter & Schmidhuber 1997, or delayed recall)
is fed to each network; the loss is at the last step only,
``L = 1/2 ||o(T) - y(T)||^2``. For every earlier step t and every hidden unit the experiment
shows ``|dL/dh_i(t)|``, the gradient BPTT sends back to the state at step t, as an image
(time x units, log colour scale), one panel per model and one more for the LSTM's cell state,
``|dL/dc_i(t)|``. Where the image goes dark is where the gradient has vanished (Hochreiter 1991;
Bengio, Simard & Frasconi 1994): for the tanh RNN each step back multiplies it by
``W^T diag(1 - h^2)``; the LSTM's cell state carries it through the constant-error carousel,
scaled only by the forget gate (Hochreiter & Schmidhuber 1997; Gers et al. 2000); the GRU's
update gate interpolates between copying and the squashing path (Cho et al. 2014).

Definitions. States are indexed like the inputs, 0-based: ``h(t)`` is the state right after
reading ``x(t)``, t = 0..T with ``T = L - 1`` the last step of a sequence of length L.
``dL/dh(t)`` is the derivative with respect to the state passed on to step t + 1 (Greff et al.
2017's delta-y); for the LSTM ``dL/dc(t)`` is the total derivative with respect to the cell state
c(t) with everything before it fixed, i.e. it includes the path through
``h(t) = o(t) tanh(c(t))`` (Greff et al. 2017's delta-c). Both are computed by autograd: the
states of a plain Python loop over ``cell(x_t, state)`` are kept, and one
``torch.autograd.grad`` call returns the gradient flowing into each of them.

The table gives, per model and state, ``||dL/dh(t)||`` at t = T, T - 10, T - 50, T - 100 (those
inside the sequence), its value at the earliest step whose input the target depends on (the
first marker of the adding problem, ``x(T - tau)`` for delayed recall) relative to its value at
T, and the *reach*: the number of steps back k of the first step ``T - k`` where the norm falls
below ``fraction`` times its value at T (empty when it never does within the sequence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab._validation import check_tensor
from rnnlab.cells import GRUCell, LSTMCell, RecurrentCell, flatten_state, map_state
from rnnlab.cells.elman import ElmanCell
from rnnlab.cells.gru import FORMS
from rnnlab.experiments.registry import ExperimentResult, RunContext, option, register
from rnnlab.learning.clipping import clip_grad_norm_
from rnnlab.models.recurrent import RecurrentNetwork
from rnnlab.tasks.long_term import (
    MARKER_VARIANTS,
    LongTermTask,
    adding_problem,
    delayed_recall,
    masked_mse,
)

MODELS = ("rnn", "lstm", "gru")
TASKS = ("adding", "delayed-recall")
MODEL_LABELS = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU"}
TABLE_LAGS = (0, 10, 50, 100)


@dataclass
class GradientFlowConfig:
    task: str = option("adding", "the long-lag input: adding (H&S 1997) or delayed-recall",
                       choices=TASKS)
    length: int = option(150, "sequence length T (the adding problem draws L in [T, T+T/10]); "
                         "at least 20 (adding, hochreiter1997), 10 (adding) or 2", low=1)
    variant: str = option("hochreiter1997", "adding-problem variant: hochreiter1997, pascanu2013",
                          choices=MARKER_VARIANTS)
    tau: int | None = option(None, "delayed-recall lag (none: length - 10), below length", low=1)
    models: tuple[str, ...] = option(MODELS, "models to compare: rnn, lstm, gru",
                                     choices=MODELS, unique=True, item="model(s)")
    hidden_size: int = option(32, "N, hidden units of every model", low=1)
    train_steps: int = option(0, "Adam updates on the task before the analysis (0: at init)",
                              low=0)
    batch: int = option(32, "sequences per training update", low=1)
    lr: float = option(0.01, "Adam learning rate of the training", low=0, low_open=True)
    clip_norm: float | None = option(1.0, "gradient-norm clipping in training (none: off)",
                                     low=0, low_open=True)
    lstm_forget_bias: float = option(1.0, "initial forget-gate bias of the LSTM", finite=True)
    lstm_peepholes: bool = option(True, "LSTM with peephole connections (Greff's vanilla)")
    gru_form: str = option("cho", "GRU form: cho (reset before W) or torch", choices=FORMS)
    fraction: float = option(1e-3, "reach: steps back until the norm < fraction x norm at T",
                             low=0, high=1, low_open=True, high_open=True)
    floor: float = option(1e-12, "lowest relative value shown in the images (log scale)",
                          low=0, high=1, low_open=True, high_open=True)
    dtype: str = option("float64", "float64 (gradients below 1e-38 survive) or float32",
                        choices=("float32", "float64"))
    device: str = option("cpu", "torch device")
    seed: int = option(0, "seed of the weights, the analysed sequence and the training data")

    def validate(self) -> None:
        minimum = {"adding": 20 if self.variant == "hochreiter1997" else 10,
                   "delayed-recall": 2}[self.task]
        if self.length < minimum:
            raise ValueError(f"length must be >= {minimum} for task {self.task!r}"
                             + (f" ({self.variant})" if self.task == "adding" else "")
                             + f", got {self.length}")
        if self.tau is not None and not self.tau < self.length:
            raise ValueError(f"tau must be in [1, length - 1] = [1, {self.length - 1}], "
                             f"got {self.tau}")
        try:
            torch.device(self.device)
        except RuntimeError as exc:
            raise ValueError(f"device {self.device!r} is not a torch device: {exc}") from None

    @property
    def effective_tau(self) -> int:
        return self.length - 10 if self.tau is None else self.tau


# ------------------------------------------------------------------------------------------
# the gradients
def state_gradients(
    model: RecurrentNetwork, x: torch.Tensor, target: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """``dL/dstate(t)`` for every step t, for a loss at the last step only.

    ``L_b = 1/2 ||o_b(T) - y_b||^2`` for each sequence b of ``x`` ``(batch, time, D)`` (all of
    length ``time``, ``T = time - 1``), ``target`` ``(batch, O)``. Returns ``(grads, losses)``:
    ``grads`` has one ``(batch, time, width)`` tensor per leaf of the cell's state (``(h,)`` for
    the Elman cell and the GRU, ``(h, c)`` for the LSTM), entry ``[b, t]`` being ``dL_b/ds(t)``
    with ``s(t)`` the state after reading ``x(t)``; ``losses`` is ``(batch,)``. Sequences do not
    interact, so summing the losses before differentiating gives each one its own gradient.

    The step loop runs ``model.cell`` directly (not a fused kernel), keeps every state and asks
    autograd for the gradient flowing into each: the derivative with respect to a state with
    everything before it fixed (for the LSTM's c(t) that includes the path through
    ``h(t) = o(t) tanh(c(t))``).
    """
    if not isinstance(model, RecurrentNetwork):
        raise TypeError(f"model must be a RecurrentNetwork, got {type(model).__name__}")
    cell: RecurrentCell = model.cell
    x = cell.check_input(x)
    target = check_tensor("target", target, ndim=2, last_dim=model.output_size, dtype=x.dtype,
                          device=x.device, layout="(batch, outputs)")
    if target.shape[0] != x.shape[0]:
        raise ValueError(f"target has {target.shape[0]} rows but x has {x.shape[0]} sequences")
    with torch.enable_grad():
        # A leaf initial state puts every state in the graph even if the weights are frozen.
        state = map_state(lambda s: s.detach().requires_grad_(True),
                          model.initial_state(x.shape[0]))
        history: list[list[torch.Tensor]] = []
        for x_t in x.unbind(1):
            state = cell(x_t, state)
            history.append(flatten_state(state))
        losses = 0.5 * (model.output(state) - target).pow(2).sum(-1)
        flat = [leaf for leaves in history for leaf in leaves]
        grads = torch.autograd.grad(losses.sum(), flat, allow_unused=True)
    width = len(history[0])
    per_leaf = []
    for k in range(width):
        steps = [g if g is not None else torch.zeros_like(flat[i])
                 for i, g in enumerate(grads) if i % width == k]
        per_leaf.append(torch.stack(steps, 1))
    return tuple(per_leaf), losses.detach()


def gradient_reach(norms: torch.Tensor, fraction: float = 1e-3) -> int | None:
    """Steps back k of the first step ``T - k`` with ``norms[T - k] < fraction * norms[T]``.

    ``norms`` is ``(time,)``, the gradient norm per step with ``T = time - 1`` the step of the
    loss. ``None`` when the norm never falls below within the sequence.
    """
    norms = check_tensor("norms", norms, ndim=1, finite=True, layout="(time,)")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    back = norms.flip(0)  # back[k] = norms[T - k]
    below = (back < fraction * back[0]).nonzero()
    return int(below[0, 0]) if below.numel() else None


# ------------------------------------------------------------------------------------------
# models, data, training
def build_network(
    kind: str,
    input_size: int,
    hidden_size: int,
    output_size: int = 1,
    *,
    lstm_forget_bias: float = 1.0,
    lstm_peepholes: bool = True,
    gru_form: str = "cho",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> RecurrentNetwork:
    """A ``kind`` (``"rnn"``, ``"lstm"``, ``"gru"``) cell with a linear readout ``V h + c``."""
    factory: dict[str, Any] = {"generator": generator, "device": device, "dtype": dtype}
    cell: RecurrentCell
    if kind == "rnn":
        cell = ElmanCell(input_size, hidden_size, nonlinearity="tanh", **factory)
    elif kind == "lstm":
        cell = LSTMCell(input_size, hidden_size, peepholes=lstm_peepholes,
                        forget_bias=lstm_forget_bias, **factory)
    elif kind == "gru":
        cell = GRUCell(input_size, hidden_size, form=gru_form, **factory)
    else:
        raise ValueError(f"unknown model {kind!r}; models: {MODELS}")
    return RecurrentNetwork(cell, output_size, "identity", generator=generator)


def make_task(cfg: GradientFlowConfig, batch: int, generator: torch.Generator) -> LongTermTask:
    dtype = getattr(torch, cfg.dtype)
    if cfg.task == "adding":
        return adding_problem(batch, cfg.length, variant=cfg.variant, generator=generator,
                              dtype=dtype, device=cfg.device)
    return delayed_recall(batch, cfg.length, cfg.effective_tau, generator=generator,
                          dtype=dtype, device=cfg.device)


def source_steps(cfg: GradientFlowConfig, task: LongTermTask) -> list[int]:
    """Steps of the analysed sequence whose inputs the last target depends on."""
    if cfg.task == "adding":
        return sorted(int(p) for p in task.info["positions"][0])
    return [int(task.lengths[0]) - 1 - cfg.effective_tau]


def train(model: RecurrentNetwork, cfg: GradientFlowConfig, ctx: RunContext | None = None,
          name: str = "") -> float | None:
    """``cfg.train_steps`` Adam updates on fresh batches (the same stream for every model);
    returns the mean loss of the last (up to) 10 updates, ``None`` without training."""
    if cfg.train_steps == 0:
        return None
    gen = torch.Generator().manual_seed(2**31 + cfg.seed)  # apart from the analysed sequence
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    losses: list[float] = []
    for step in range(cfg.train_steps):
        batch = make_task(cfg, cfg.batch, gen)
        opt.zero_grad(set_to_none=True)
        outputs, _ = model(batch.inputs, lengths=batch.lengths)
        loss = masked_mse(outputs, batch)
        loss.backward()
        if cfg.clip_norm is not None:
            clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"training {name} diverged at update {step + 1}; lower --lr")
        losses.append(value)
        if ctx is not None:
            ctx.log_metrics({"phase": "train", "model": name, "state": "", "step": step + 1,
                             "steps_back": "", "value": value})
    tail = losses[-10:]
    return sum(tail) / len(tail)


# ------------------------------------------------------------------------------------------
def _panels(cfg: GradientFlowConfig, model_name: str, grads: tuple[torch.Tensor, ...]
            ) -> list[tuple[str, str, torch.Tensor]]:
    """``(model, state, |grad| (time, units))`` per image panel of one model."""
    names = ("h", "c") if model_name == "lstm" else ("h",)
    return [(model_name, s, grads[k][0].abs()) for k, s in enumerate(names)]


@register("gradient-flow",
          "|dL(T)/dh(t)| per step and unit as an image: tanh RNN vs LSTM (h and c) vs GRU",
          GradientFlowConfig)
def run(cfg: GradientFlowConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    dtype = getattr(torch, cfg.dtype)
    device = torch.device(cfg.device)
    task = make_task(cfg, 1, torch.Generator().manual_seed(cfg.seed))
    x, target = task.inputs, task.targets[:, -1]  # one sequence: its last step is T
    length = x.shape[1]
    t_last = length - 1
    sources = source_steps(cfg, task)
    lags = [k for k in TABLE_LAGS if k <= t_last]

    panels: list[tuple[str, str, torch.Tensor]] = []
    rows: list[dict[str, Any]] = []
    figures: dict[str, Any] = {"length": length, "sources": sources}
    with ctx.progress("models", len(cfg.models)) as advance:
        for name in cfg.models:
            gen = torch.Generator(device=device).manual_seed(cfg.seed * len(MODELS)
                                                             + MODELS.index(name))
            model = build_network(name, task.input_size, cfg.hidden_size, task.output_size,
                                  lstm_forget_bias=cfg.lstm_forget_bias,
                                  lstm_peepholes=cfg.lstm_peepholes, gru_form=cfg.gru_form,
                                  generator=gen, device=device, dtype=dtype)
            train_loss = train(model, cfg, ctx, name)
            grads, losses = state_gradients(model, x, target)
            for model_name, state, image in _panels(cfg, name, grads):
                norms = image.norm(dim=1)
                if not bool(torch.isfinite(norms).all()):
                    raise FloatingPointError(f"the gradient of {model_name} is not finite")
                panels.append((model_name, state, image))
                reach = gradient_reach(norms, cfg.fraction)
                at_t = float(norms[t_last])
                row: dict[str, Any] = {"model": MODEL_LABELS[model_name], "state": state}
                for k in lags:
                    row["norm_T" if k == 0 else f"norm_T-{k}"] = float(norms[t_last - k])
                row["rel_norm_at_source"] = float(norms[sources[0]]) / at_t if at_t > 0 \
                    else math.nan
                row["reach"] = reach
                row["loss"] = float(losses[0])
                row["train_loss"] = train_loss
                rows.append(row)
                key = f"{model_name}_{state}"
                figures[f"reach_{key}"] = reach
                figures[f"norm_T_{key}"] = at_t
                for t in range(length):
                    ctx.log_metrics({"phase": "gradient", "model": model_name, "state": state,
                                     "step": t, "steps_back": t_last - t,
                                     "value": float(norms[t])})
            advance(1)

    # ---- plot: one image per panel, then the per-step norms -------------------------------
    rel = [(m, s, (img / img[t_last].norm()).cpu().double()) for m, s, img in panels]
    vmax = max(float(r.max()) for *_, r in rel)
    norm = LogNorm(vmin=cfg.floor, vmax=max(vmax, cfg.floor * 10))
    fig, axes = plt.subplots(len(rel) + 1, 1, figsize=(11, 2.3 * len(rel) + 3.2),
                             gridspec_kw={"height_ratios": [1.0] * len(rel) + [1.4]})
    for ax, (m, s, r) in zip(axes[:-1], rel, strict=True):
        shown = r.clamp_min(cfg.floor * 1e-3).T.numpy()  # zeros would break the log scale
        im = ax.imshow(shown, aspect="auto", origin="lower", norm=norm, cmap="magma",
                       interpolation="nearest", extent=(-0.5, length - 0.5, -0.5, r.shape[1] - 0.5))
        for p in sources:
            ax.axvline(p, color="cyan", ls="--", lw=0.8)
        ax.set_ylabel("unit")
        ax.set_title(f"{MODEL_LABELS[m]}: |dL(T)/d{s}_i(t)| / ||dL/d{s}(T)||", fontsize=10)
        fig.colorbar(im, ax=ax, pad=0.01)
    ax = axes[-1]
    for m, s, r in rel:
        ax.semilogy(range(length), r.norm(dim=1).clamp_min(1e-300).numpy(),
                    label=f"{MODEL_LABELS[m]} {s}")
    ax.axhline(cfg.fraction, color="gray", ls=":", label=f"fraction {cfg.fraction:g}")
    for p in sources:
        ax.axvline(p, color="cyan", ls="--", lw=0.8)
    ax.set_xlim(-0.5, length - 0.5)
    ax.set_xlabel("step t (the loss is at T = last step; dashed: the inputs the target needs)")
    ax.set_ylabel("||dL/ds(t)|| / ||dL/ds(T)||")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    # an invisible colorbar keeps the line plot's x axis aligned with the images'
    fig.colorbar(im, ax=ax, pad=0.01).ax.set_visible(False)
    trained = f"after {cfg.train_steps} Adam updates" if cfg.train_steps else "at initialization"
    fig.suptitle(f"gradient flow on {_task_label(cfg)}, L={length}, N={cfg.hidden_size}, "
                 f"{trained}, seed {cfg.seed}")
    fig.tight_layout()
    plot = ctx.save_figure(fig, "gradient_flow")

    parts = []
    for row in rows:
        reach = row["reach"]
        parts.append(f"{row['model']} {row['state']}: "
                     + (f"reach {reach}" if reach is not None else f"reach > {t_last}")
                     + f", at the first source {row['rel_norm_at_source']:.1e}")
    summary = (f"Gradient of a loss at step T={t_last} w.r.t. each earlier state ({trained}); "
               f"reach = steps back until the norm falls below {cfg.fraction:g} of its value "
               f"at T. " + "; ".join(parts) + ".")
    return ExperimentResult(
        title=f"gradient-flow ({_task_label(cfg)}, N={cfg.hidden_size}, {trained})",
        rows=rows, summary=summary, plots=[plot], figures=figures,
    )


def _task_label(cfg: GradientFlowConfig) -> str:
    if cfg.task == "adding":
        return f"the adding problem ({cfg.variant})"
    return f"delayed recall (tau={cfg.effective_tau})"


__all__ = [
    "MODELS",
    "TASKS",
    "GradientFlowConfig",
    "build_network",
    "gradient_reach",
    "state_gradients",
]
