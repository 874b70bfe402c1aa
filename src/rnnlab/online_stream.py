"""Online forecasting of a stream of numbers: ``rnnlab stream`` reads one value (or one CSV row)
per line, learns online and prints, after each line, its forecast of the target at the next line.

Per valid line t (raw row ``r(t)``, target value ``v(t)``):

1. **Learn** from the forecast made at line t - 1: its target is ``v(t)`` standardised with the
   statistics of line t - 1 (the units the forecast was made in).
2. **Standardise** (``standardize="running"``): the running mean ``m(t)`` and variance of every
   used column over lines 1..t (Welford 1962, "Note on a method for calculating corrected sums
   of squares and products"; float64), ``u(t) = (r(t) - m(t)) / s(t)`` with ``s`` the sample
   standard deviation (``n - 1``), or 1 while fewer than two lines have been seen or the column
   has been constant. Causal: only lines up to t are used. ``"none"`` feeds the raw numbers.
3. **Forecast** ``v(t + 1)``, print it (de-standardised: ``p s(t) + m(t)``) and flush.

Models:

* ``"rls"``: an echo state network (Jaeger 2001) advanced one step per line,
  ``x(t) = (1 - a) x(t-1) + a tanh(W_in u(t) + W x(t-1))``, and a
  :class:`~rnnlab.reservoir.readout.RLSReadout` on the features ``z(t) = [x(t); u(t)]``
  (recursive least squares: with forgetting 1 the readout after line t is exactly the ridge
  regression of the targets seen so far on the features, penalty ``delta``).
* ``"rtrl"``: an :class:`~rnnlab.ElmanRNN` (identity readout) or a
  :class:`~rnnlab.RecurrentNetwork` over a :class:`~rnnlab.GRUCell` trained online by exact RTRL
  (:class:`~rnnlab.learning.RTRL` for the Elman network, :class:`~rnnlab.learning.ForwardModeRTRL`
  for the GRU) or UORO, with ``torch.optim.Adam`` or SGD and norm clipping
  (:class:`~rnnlab.learning.GradientClipper`) after every step, as ``Trainer.fit_stream`` does.
  The printed forecast is ``model.output(model.cell(u(t), h(t-1)))`` with the current weights;
  the rule recomputes the same output (to rounding) when the next line brings its target.

A malformed line (wrong number of fields, a cell that is not a finite number) is reported on
standard error with its line number and content and skipped; nothing of the state changes.
Blank lines are skipped silently. The state (network, readout or rule with its influence
tensors, optimizer, statistics, the pending input) is checkpointed atomically on SIGINT/SIGTERM
(after the line being processed; a signal while waiting for input stops at once), at the end of
the input and every ``checkpoint_every`` lines; a resumed run continues bit-identically on the
same machine (see ``docs/stream.md``).

(Over 500 lines: the line reader, the online standardiser, the two model kinds and the
checkpoint/resume and signal handling of one command, which must change together.)
"""

from __future__ import annotations

import math
import os
import select
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from rnnlab._files import load_versioned
from rnnlab._validation import check_choice, check_int, check_number
from rnnlab.learning import RTRL, UORO, ForwardModeRTRL, GradientClipper
from rnnlab.models.elman import ElmanRNN
from rnnlab.models.recurrent import RecurrentNetwork
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.readout import RLSReadout
from rnnlab.train.checkpoint import (
    CHECKPOINT_NAME,
    atomic_save,
    check_environment,
    environment,
)

FORMAT_NAME = "rnnlab.stream.checkpoint"
FORMAT_VERSION = 1
MODELS = ("rls", "rtrl")
RULES = ("rtrl", "uoro")
CELLS = ("elman", "gru")
STANDARDIZE = ("running", "none")
OPTIMIZERS = ("adam", "sgd")


class StreamError(ValueError):
    """A stream run that cannot start: bad options, or a checkpoint that does not fit."""


@dataclass
class StreamConfig:
    """Everything that defines a stream run (saved in its checkpoint; a resume must match).

    ``columns``/``target``: None for one value per line; else CSV rows, the columns fed as
    inputs and the column forecast, given as 0-based indices or, when any is a name, by the
    names of a header on the first line."""

    model: str = "rls"
    columns: list[str] | None = None
    target: str | None = None
    standardize: str = "running"
    seed: int = 0
    # rls
    units: int = 100
    spectral_radius: float = 0.9
    leak: float = 1.0
    input_scaling: float = 0.5
    forgetting: float = 1.0
    delta: float = 1.0
    # rtrl
    rule: str = "rtrl"
    cell: str = "elman"
    hidden: int = 16
    optimizer: str = "adam"
    lr: float = 1e-2
    clip: float = 1.0

    def check(self) -> StreamConfig:
        check_choice("model", self.model, MODELS)
        check_choice("standardize", self.standardize, STANDARDIZE)
        check_choice("rule", self.rule, RULES)
        check_choice("cell", self.cell, CELLS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_int("seed", self.seed)
        check_int("units", self.units, low=1)
        check_int("hidden", self.hidden, low=1)
        check_number("spectral_radius", self.spectral_radius, low=0.0, low_open=True)
        check_number("leak", self.leak, low=0.0, low_open=True, high=1.0)
        check_number("input_scaling", self.input_scaling, low=0.0, low_open=True)
        check_number("forgetting", self.forgetting, low=0.0, low_open=True, high=1.0)
        check_number("delta", self.delta, low=0.0, low_open=True)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("clip", self.clip, low=0.0, low_open=True)
        if self.columns is not None and not self.columns:
            raise StreamError("columns must name at least one column")
        if self.columns is not None and len(self.columns) > 1 and self.target is None:
            raise StreamError("with more than one input column, --target names the column "
                              "to forecast")
        return self

    @property
    def csv(self) -> bool:
        return self.columns is not None or self.target is not None

    @property
    def input_names(self) -> list[str]:
        if self.columns is not None:
            return list(self.columns)
        return [self.target] if self.target is not None else ["value"]

    @property
    def target_name(self) -> str:
        if self.target is not None:
            return self.target
        return self.columns[0] if self.columns else "value"

    @property
    def by_name(self) -> bool:
        return any(not _is_index(c) for c in [*self.input_names, self.target_name]) and self.csv


def _is_index(text: str) -> bool:
    return text.isdigit()


# -- running standardisation --------------------------------------------------------------------
class RunningStandardizer:
    """Per-column running mean and sample variance (Welford's update, float64)::

        n += 1;  d = r - m;  m += d / n;  M2 += d (r - m);  s = sqrt(M2 / (n - 1))

    ``s`` is 1 while ``n < 2`` and wherever the column has been constant (``M2 = 0``)."""

    def __init__(self, width: int) -> None:
        self.count = 0
        self.mean = torch.zeros(width, dtype=torch.float64)
        self.m2 = torch.zeros(width, dtype=torch.float64)

    def update(self, row: torch.Tensor) -> None:
        self.count += 1
        delta = row - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (row - self.mean)

    @property
    def std(self) -> torch.Tensor:
        if self.count < 2:
            return torch.ones_like(self.mean)
        std = (self.m2 / (self.count - 1)).sqrt()
        return torch.where(std > 0, std, torch.ones_like(std))

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved["mean"].shape != self.mean.shape:
            raise StreamError(f"the checkpoint standardises {saved['mean'].numel()} columns, "
                              f"this run {self.mean.numel()}")
        self.count = int(saved["count"])
        self.mean, self.m2 = saved["mean"].clone(), saved["m2"].clone()


# -- line parsing ------------------------------------------------------------------------------
class LineParser:
    """Turns a line into the row of used values ``[inputs..., target]`` (float64), or raises
    ``ValueError`` with a message naming the problem (not yet the line number)."""

    def __init__(self, config: StreamConfig, header: list[str] | None) -> None:
        self.config = config
        self.header = header
        self.fields: int | None = None
        self.index: list[int] = []
        if not config.csv:
            self.index = [0, 0]  # the value is the input and the target
        elif not config.by_name:
            self.index = [int(c) for c in [*config.input_names, config.target_name]]
        elif header is not None:
            self.set_header(header)

    @property
    def needs_header(self) -> bool:
        return self.config.csv and self.config.by_name and self.header is None

    def set_header(self, names: list[str]) -> None:
        missing = [c for c in [*self.config.input_names, self.config.target_name]
                   if c not in names]
        if missing:
            raise StreamError(f"the header {names} has no column {', '.join(missing)}")
        self.header = names
        self.fields = len(names)
        self.index = [names.index(c) for c in [*self.config.input_names,
                                               self.config.target_name]]

    def __call__(self, line: str) -> torch.Tensor:
        if not self.config.csv:
            cells = [line.strip()]
        else:
            cells = [c.strip() for c in line.split(",")]
            if self.fields is not None and len(cells) != self.fields:
                raise ValueError(f"expected {self.fields} fields, got {len(cells)}")
            if len(cells) <= max(self.index):
                raise ValueError(f"expected at least {max(self.index) + 1} fields, got "
                                 f"{len(cells)}")
        values = []
        for i in self.index:
            where = "" if not self.config.csv else f"field {self._name(i)} = {cells[i]!r}: "
            try:
                value = float(cells[i])
            except ValueError:
                raise ValueError(f"{where}not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{where}not a finite number")
            values.append(value)
        return torch.tensor(values, dtype=torch.float64)

    def _name(self, i: int) -> str:
        return repr(self.header[i]) if self.header is not None else str(i)


# -- the online model ----------------------------------------------------------------------------
@dataclass
class _Pending:
    """What the forecast of the last line was made from: the standardised input ``u`` (and,
    for the RLS model, the features ``z``) and the target's mean and scale then."""

    u: torch.Tensor
    z: torch.Tensor | None
    target_mean: float
    target_std: float


class OnlineForecaster:
    """The state of a stream run and the per-line step (see the module docstring)."""

    def __init__(self, config: StreamConfig) -> None:
        self.config = config.check()
        d = len(config.input_names)
        self.stats = RunningStandardizer(d + 1)
        self.rows = 0
        self.updates = 0
        self.pending: _Pending | None = None
        gen = torch.Generator().manual_seed(config.seed)
        dtype = torch.float64
        self.esn: EchoStateNetwork | None = None
        self.readout: RLSReadout | None = None
        self.x: torch.Tensor | None = None
        self.model: torch.nn.Module | None = None
        self.rule: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.clipper: GradientClipper | None = None
        if config.model == "rls":
            self.esn = EchoStateNetwork(input_size=d, units=config.units,
                                        spectral_radius=config.spectral_radius,
                                        leak=config.leak, input_scaling=config.input_scaling,
                                        kernel="torch", generator=gen, dtype=dtype)
            self.readout = RLSReadout(config.units + d, 1, forgetting=config.forgetting,
                                      delta=config.delta, dtype=dtype)
            self.x = torch.zeros(1, config.units, dtype=dtype)
        else:
            torch_state = torch.get_rng_state()
            torch.manual_seed(config.seed)  # ElmanRNN draws from the global generator
            try:
                if config.cell == "elman":
                    self.model = ElmanRNN(d, config.hidden, 1, readout="identity", dtype=dtype)
                else:
                    from rnnlab.cells import GRUCell

                    self.model = RecurrentNetwork(GRUCell(d, config.hidden, generator=gen,
                                                          dtype=dtype), 1, generator=gen,
                                                  dtype=dtype)
            finally:
                torch.set_rng_state(torch_state)
            if config.rule == "uoro":
                self.rule = UORO(self.model, seed=config.seed)
            elif config.cell == "elman":
                self.rule = RTRL(self.model)
            else:
                self.rule = ForwardModeRTRL(self.model)
            params = list(self.model.parameters())
            self.optimizer = (torch.optim.Adam(params, lr=config.lr) if config.optimizer == "adam"
                              else torch.optim.SGD(params, lr=config.lr))
            self.clipper = GradientClipper("norm", config.clip)

    # -- one line -------------------------------------------------------------------------
    def step(self, row: torch.Tensor) -> float:
        """Learn from the previous forecast (the target is ``row[-1]``), then forecast the
        target of the next line; returns that forecast in the data's units."""
        if self.pending is not None:
            p = self.pending
            target = ((row[-1:] - p.target_mean) / p.target_std).unsqueeze(0)
            self._learn(p, target)
        if self.config.standardize == "running":
            self.stats.update(row)
            mean, std = self.stats.mean, self.stats.std
        else:
            mean, std = torch.zeros_like(row), torch.ones_like(row)
        u = ((row[:-1] - mean[:-1]) / std[:-1]).unsqueeze(0)
        forecast, z = self._forecast(u)
        self.pending = _Pending(u, z, float(mean[-1]), float(std[-1]))
        self.rows += 1
        return float(forecast) * float(std[-1]) + float(mean[-1])

    def _learn(self, p: _Pending, target: torch.Tensor) -> None:
        if self.readout is not None:
            self.readout.step(p.z, target)
        else:
            self.rule.step(p.u, target)
            if self.rule.grad_ready:
                self.clipper.step(self.optimizer, list(self.model.parameters()))
                self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1

    @torch.no_grad()
    def _forecast(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.esn is not None:
            self.x = self.esn.step(u, self.x)
            z = torch.cat([self.x, u], dim=1)
            return self.readout.predict(z)[0, 0], z
        state = self.rule.state
        if state is None:
            state = self.model.initial_state(1)
        return self.model.output(self.model.cell(u, state))[0, 0], None

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        p = self.pending
        out: dict[str, Any] = {
            "rows": self.rows, "updates": self.updates, "stats": self.stats.state_dict(),
            "pending": None if p is None else {"u": p.u, "z": p.z, "target_mean": p.target_mean,
                                               "target_std": p.target_std},
        }
        if self.readout is not None:
            out["esn"] = self.esn.state_dict()
            out["readout"] = self.readout.state_dict()  # W and P included (extra state)
            out["x"] = self.x.clone()
        else:
            out["model"] = self.model.state_dict()
            out["rule"] = self.rule.state_dict()
            out["optimizer"] = self.optimizer.state_dict()
            out["clipper"] = {"calls": self.clipper.calls, "clipped": self.clipper.clipped,
                              "skipped": self.clipper.skipped}
        return out

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.stats.load_state_dict(saved["stats"])
        self.rows, self.updates = int(saved["rows"]), int(saved["updates"])
        p = saved["pending"]
        self.pending = None if p is None else _Pending(p["u"], p["z"], p["target_mean"],
                                                       p["target_std"])
        if self.readout is not None:
            self.esn.load_state_dict(saved["esn"])
            self.readout.load_state_dict(saved["readout"])
            self.x = saved["x"].clone()
        else:
            self.model.load_state_dict(saved["model"])
            self.rule.load_state_dict(saved["rule"])
            self.optimizer.load_state_dict(saved["optimizer"])
            for key, value in saved["clipper"].items():
                setattr(self.clipper, key, value)


# -- reading lines ------------------------------------------------------------------------------
def fd_lines(fd: int, stopped: Callable[[], bool], poll: float = 0.2) -> Iterator[str]:
    """Lines from a pipe or terminal, read byte by byte after ``select`` says a byte is there,
    so that a signal that only sets a flag (``stopped()``) ends a wait for input within
    ``poll`` seconds, and no byte past the current line is taken from the pipe: when the run
    stops, every line not yet learnt from is still unread (the cost, a system call per byte,
    is small beside the work per line). The last line may lack its newline."""
    line = bytearray()
    while True:
        while not select.select([fd], [], [], poll)[0]:
            if stopped():
                return
        byte = os.read(fd, 1)
        if not byte:
            break
        if byte == b"\n":
            yield line.decode("utf-8", errors="replace")
            line.clear()
            if stopped():
                return
        else:
            line += byte
    if line:
        yield line.decode("utf-8", errors="replace")


def _stdin_lines(stopped: Callable[[], bool]) -> Iterable[str]:
    """Standard input: a pipe or terminal through :func:`fd_lines`; a regular file (``<
    FILE``), whose unread lines stay in the file, or a stand-in without a descriptor, line by
    line as usual."""
    try:
        fd = sys.stdin.fileno()
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except (AttributeError, OSError, ValueError):
        return sys.stdin
    return sys.stdin if regular else fd_lines(fd, stopped)


@dataclass
class StreamResult:
    """How a stream run ended: ``lines`` read, ``rows`` learnt from (in all, with the resumed
    part), ``skipped`` malformed lines, ``signal`` (the signal number that stopped it, or
    None at the end of the input) and the ``checkpoint`` written (or None)."""

    lines: int = 0
    rows: int = 0
    skipped: int = 0
    signal: int | None = None
    checkpoint: Path | None = None
    messages: list[str] = field(default_factory=list)


def load_stream_checkpoint(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a stream checkpoint (a folder holding ``checkpoint.pt``) and check its format."""
    if not (Path(run_dir) / CHECKPOINT_NAME).is_file():
        raise StreamError(f"no stream checkpoint at {Path(run_dir) / CHECKPOINT_NAME}")
    return load_versioned(run_dir, name=CHECKPOINT_NAME, format_name=FORMAT_NAME,
                          version=FORMAT_VERSION, what="rnnlab stream checkpoint",
                          error=StreamError)


def resume_config(ckpt: dict[str, Any], given: dict[str, Any]) -> StreamConfig:
    """The saved configuration; options given again must equal the saved ones."""
    saved = ckpt["config"]
    differ = [f"{k} {saved[k]!r} (given {v!r})" for k, v in given.items()
              if v is not None and k in saved and saved[k] != v]
    if differ:
        raise StreamError("the run was started with " + ", ".join(differ) + ": drop these "
                          "options to resume it, or start a new run")
    return StreamConfig(**saved)


def run_stream(
    lines: Iterable[str] | None,
    config: StreamConfig | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    given: dict[str, Any] | None = None,
) -> StreamResult:
    """Run a stream: ``lines`` (None: standard input, read through :func:`fd_lines`), one
    forecast printed to ``out`` per valid line. ``checkpoint``: folder written at the end, on
    SIGINT/SIGTERM and every ``checkpoint_every`` lines (refused if it already holds a
    checkpoint and this is not a resume). ``resume``: folder to continue from (its saved
    configuration is used; ``given`` options must match it); checkpoints go back there unless
    ``checkpoint`` names another folder. A resumed stream continues after the saved lines: give
    only the new ones (no header)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if checkpoint_every is not None:
        check_int("checkpoint_every", checkpoint_every, low=1)
    ckpt = None
    if resume is not None:
        ckpt = load_stream_checkpoint(resume)
        config = resume_config(ckpt, given or {})
        check_environment(ckpt["environment"])
        target_dir = Path(checkpoint if checkpoint is not None else resume)
    else:
        if config is None:
            raise StreamError("give a configuration or a run to resume")
        target_dir = None if checkpoint is None else Path(checkpoint)
        if target_dir is not None and (target_dir / CHECKPOINT_NAME).exists():
            raise StreamError(f"{target_dir} already holds a checkpoint: resume it (--resume) "
                              "or choose another folder")
    config.check()
    forecaster = OnlineForecaster(config)
    header = None
    if ckpt is not None:
        forecaster.load_state_dict(ckpt["state"])
        header = ckpt["header"]
    parser = LineParser(config, header)
    result = StreamResult()

    def save() -> Path | None:
        if target_dir is None:
            return None
        target_dir.mkdir(parents=True, exist_ok=True)
        state = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                 "environment": environment(), "config": asdict(config),
                 "header": parser.header, "state": forecaster.state_dict()}
        return atomic_save(state, target_dir / CHECKPOINT_NAME)

    stop: dict[str, int | None] = {"signal": None}
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    if main:
        def handler(signum: int, frame: Any) -> None:
            if stop["signal"] is not None:
                raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
            stop["signal"] = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        source = _stdin_lines(lambda: stop["signal"] is not None) if lines is None else lines
        for number, line in enumerate(source, start=1):
            result.lines = number
            text = line.rstrip("\r\n")
            if text.strip():
                if parser.needs_header:
                    parser.set_header([c.strip() for c in text.split(",")])
                else:
                    try:
                        row = parser(text)
                    except ValueError as exc:
                        result.skipped += 1
                        message = f"line {number}: {exc}: {text!r} (skipped)"
                        result.messages.append(message)
                        print(message, file=err, flush=True)
                    else:
                        forecast = forecaster.step(row)
                        out.write(f"{forecast!r}\n")
                        out.flush()
                        if checkpoint_every and forecaster.rows % checkpoint_every == 0:
                            save()
            if stop["signal"] is not None:
                break
        result.signal = stop["signal"]
        result.rows = forecaster.rows
        result.checkpoint = save()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return result
