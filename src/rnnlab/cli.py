"""The ``rnnlab`` command line: a thin shell over the experiment registry.

``rnnlab list`` lists the experiments (``--options`` with their options);
``rnnlab run NAME --help`` lists one experiment's options (default, allowed values, help);
``rnnlab run NAME [--option value ...] [--out DIR] [--overwrite] [--threads K] [--debug]`` runs
one with a progress bar, prints its table and writes the run folder.

Errors are one line on stderr, no traceback (``--debug`` or ``RNNLAB_DEBUG=1`` shows it): exit
status 2 for a bad command (unknown experiment or option, a bad value, an unusable ``--out``),
checked before any work starts; 1 for a run that failed (what it finished stays in the run folder
with ``error.txt``; a run that finished nothing leaves no folder). The thread count, the run
folder rules and ``--overwrite`` are those of :mod:`rnnlab.experiments.registry`.

(Over 500 lines: every command is a thin shell over its library module, but typer declares
each option in the command's signature, one line each; the commands share the error and output
conventions of this module.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="rnnlab: recurrent neural networks made real and measured.")
console = Console()


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


@app.command("list")
def list_command(
    options: bool = typer.Option(False, "--options", help="also list each experiment's options"),
) -> None:
    """List the registered experiments."""
    from rnnlab.experiments import list_experiments

    table = Table(title="rnnlab experiments")
    table.add_column("name", style="bold")
    table.add_column("description")
    for exp in list_experiments():
        text = exp.description
        if options:
            text += "\n" + "\n".join(
                f"  {r['option']} ({r['type']}, default {r['default']!r}"
                + (f"; {r['allowed']}" if r["allowed"] else "") + f"): {r['help']}"
                for r in exp.option_rows()
            )
        table.add_row(exp.name, text)
    console.print(table)


def _parse_extra(args: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    i = 0
    while i < len(args):
        key = args[i]
        if not key.startswith("--"):
            raise typer.BadParameter(f"expected --option value, got {key!r}")
        if "=" in key:
            name, value = key[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise typer.BadParameter(f"option {key} has no value")
            name, value = key[2:], args[i + 1]
            i += 2
        overrides[name] = value
    return overrides


@contextmanager
def _rich_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda advance=1: progress.advance(task, advance)


def _error(message: str) -> None:
    # Plain text on stderr: rich markup would eat a path's [brackets] and wrap long paths.
    typer.echo(f"error: {message}", err=True)


def _debug(flag: bool) -> bool:
    """``--debug`` or ``RNNLAB_DEBUG`` set (to anything but 0): show tracebacks."""
    return flag or os.environ.get("RNNLAB_DEBUG", "") not in ("", "0")


def _fail(exc: BaseException, debug: bool, code: int) -> NoReturn:
    """Re-raise ``exc`` under ``--debug``; otherwise one line on stderr (the message without
    its exception type) and exit with ``code`` (2: a bad command, 1: the work failed)."""
    if debug:
        raise exc
    _error(_describe(exc).split(": ", 1)[-1])
    raise typer.Exit(code) from None


def _describe(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _format_default(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(_fmt(v) for v in value) if value else "(empty)"
    return "none" if value is None else _fmt(value)


def _experiment_help(name: str) -> None:
    """Print experiment ``name``'s options: default, allowed values, help."""
    from rnnlab.experiments import get_experiment

    exp = get_experiment(name)
    console.print(f"Usage: rnnlab run {exp.name} [--option value ...] [--out DIR] "
                  "[--overwrite] [--threads K] [--debug]\n", markup=False, highlight=False)
    console.print(exp.description + "\n", markup=False, highlight=False)
    table = Table(title=f"{exp.name} options", title_justify="left")
    for column in ("option", "type", "default", "allowed", "help"):
        table.add_column(column, overflow="fold")
    for row in exp.option_rows():
        table.add_row(row["option"], row["type"], _format_default(row["default"]),
                      row["allowed"], row["help"], style=None)
    console.print(table, markup=False)
    console.print("Run options: --out DIR (new or empty), --overwrite, --threads K, --debug "
                  "(`rnnlab run --help`).", markup=False, highlight=False)


@app.command("run", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run_command(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="experiment name (see `rnnlab list`)",
                                      show_default=False),
    help_: bool = typer.Option(False, "--help", "-h", is_eager=False,
                               help="show this message; with NAME, that experiment's options "
                               "(defaults, allowed values, help)"),
    out: Path | None = typer.Option(None, "--out", help="run folder (default runs/NAME-TIME); "
                                    "must be new or empty"),
    overwrite: bool = typer.Option(False, "--overwrite", help="reuse a run folder: delete the "
                                   "previous run's files there first"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads for the run (the "
                                       "experiment's own threads option when it has one)"),
    debug: bool = typer.Option(False, "--debug", help="show the traceback of an error "
                               "(also RNNLAB_DEBUG=1)"),
    resume: Path | None = typer.Option(None, "--resume", help="continue the stopped run in "
                                       "this folder with its saved options (finished jobs "
                                       "are kept)"),
) -> None:
    """Run experiment NAME; extra `--option value` pairs set its options
    (`rnnlab run NAME --help` lists them)."""
    import torch

    from rnnlab.experiments import run_experiment
    from rnnlab.experiments.registry import plan_run

    debug = _debug(debug)
    if help_:
        if name is None:
            typer.echo(ctx.get_help())
            raise typer.Exit(0)
        try:
            _experiment_help(name)
        except KeyError as exc:
            _error(_describe(exc).removeprefix("KeyError: "))
            raise typer.Exit(2) from None
        raise typer.Exit(0)
    if name is None:
        _error("missing experiment NAME: rnnlab run NAME [--option value ...] (see `rnnlab "
               "list`, `rnnlab run NAME --help`)")
        raise typer.Exit(2)
    try:
        overrides = _parse_extra(list(ctx.args))
        # Every check (experiment, options, thread count, run folder) before any work starts.
        if resume is not None and out is not None and out != resume:
            raise ValueError("give the run folder once: --resume RUN_DIR (without --out)")
        out = resume if resume is not None else out
        plan = plan_run(name, overrides, out, threads=threads, overwrite=overwrite,
                        resume=resume is not None)
    except (KeyError, ValueError, TypeError, typer.BadParameter) as exc:
        if debug:
            raise
        _error(str(exc.args[0]) if exc.args else str(exc))
        raise typer.Exit(2) from None
    console.print(f"[bold]{name}[/bold] (torch {torch.__version__}, {plan.threads} threads)")
    try:
        result, run_dir = run_experiment(name, overrides, plan.run_dir, progress=_rich_progress,
                                         threads=threads, overwrite=overwrite,
                                         resume=resume is not None)
    except KeyboardInterrupt:
        if debug:
            raise
        _error(f"{name} interrupted")
        _report_folder(plan.run_dir)
        raise typer.Exit(130) from None
    except Exception as exc:
        if debug:
            raise
        _error(f"{name} failed: {_describe(exc)}")
        _report_folder(plan.run_dir)
        raise typer.Exit(1) from None
    table = Table(title=result.title)
    for column in result.rows[0] if result.rows else []:
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(*(_fmt(v) for v in row.values()))
    console.print(table)
    if result.summary:
        console.print(result.summary)
    console.print(f"run folder: {run_dir}")
    for plot in result.plots:
        console.print(f"plot: {plot}")


def _split_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise typer.BadParameter(f"expected comma-separated column names, got {text!r}")
    return names


def _init_distributed() -> int:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the default process group (gloo on the
    CPU, NCCL with CUDA) and return this process's rank; 0 for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank()


@app.command("fit")
def fit_command(
    data: Path = typer.Argument(..., help="CSV/TSV, Parquet, .npy or .npz file, rows in time "
                                "order", show_default=False),
    target: str = typer.Option(..., "--target", help="column(s) to forecast, comma-separated",
                               show_default=False),
    features: str | None = typer.Option(None, "--features", help="input columns, "
                                        "comma-separated (default: all but the time column)"),
    time_column: str | None = typer.Option(None, "--time-column", help="a date column: "
                                           "parsed, must increase; kept in the outputs"),
    fill: str | None = typer.Option(None, "--fill", help="missing values: refused (default), "
                                    "ffill or interpolate"),
    kind: str = typer.Option("esn", "--kind", help="esn (reservoir + ridge readout), lstm "
                             "or gru (trained by BPTT with Adam, early stopping)"),
    horizon: int = typer.Option(1, "--horizon", help="forecast this many rows ahead"),
    units: int = typer.Option(300, "--units", help="reservoir units (esn)"),
    spectral_radius: float = typer.Option(0.9, "--spectral-radius"),
    leak: float = typer.Option(1.0, "--leak", help="leak rate a in (0, 1]"),
    input_scaling: float = typer.Option(0.5, "--input-scaling"),
    alphas: str = typer.Option("1e-8,1e-6,1e-4,1e-2,1", "--alphas", help="ridge penalties "
                               "tried; the best on the validation part is kept"),
    washout: int = typer.Option(100, "--washout", help="first rows left out of the fit (esn)"),
    hidden_size: int = typer.Option(64, "--hidden-size", help="LSTM/GRU units"),
    epochs: int = typer.Option(60, "--epochs", help="most epochs (lstm/gru)"),
    lr: float = typer.Option(3e-3, "--lr", help="Adam learning rate (lstm/gru)"),
    window: int = typer.Option(60, "--window", help="training window length (lstm/gru)"),
    context: int = typer.Option(20, "--context", help="first steps of each window not "
                                "scored (lstm/gru)"),
    validation: float = typer.Option(0.15, "--validation", help="fraction of rows (before "
                                     "the test part) for choosing the penalty"),
    test: float = typer.Option(0.15, "--test", help="fraction of rows at the end for scoring"),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--out", help="run folder (default runs/fit-TIME)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="reuse a run folder"),
    debug: bool = typer.Option(False, "--debug", help="show the traceback of an error"),
) -> None:
    """Fit a forecaster (ESN, LSTM or GRU) to your own series: split by time, standardised
    on the training part, penalty chosen on validation, scored on test beside persistence;
    writes model.pt, predictions.csv and forecast.png to the run folder."""
    from rnnlab.experiments._run_folder import _make_run_dir, check_run_dir, default_run_dir
    from rnnlab.forecasting import ForecastConfig, fit_forecaster, save_fit
    from rnnlab.tasks.tabular import read_series

    debug = _debug(debug)
    try:
        targets = _split_names(target) or []
        config = ForecastConfig(
            kind=kind, hidden_size=hidden_size, epochs=epochs, lr=lr, window=window,
            context=context,
            horizon=horizon, units=units, spectral_radius=spectral_radius, leak=leak,
            input_scaling=input_scaling, washout=washout, validation=validation, test=test,
            seed=seed, alphas=tuple(float(a) for a in alphas.split(",") if a.strip())).check()
        run_dir = check_run_dir(out if out is not None else default_run_dir("fit"), overwrite)
        table = read_series(data, time_column=time_column, fill=fill)
    except (ValueError, TypeError, ImportError, OSError, typer.BadParameter) as exc:
        _fail(exc, debug, 2)
    rank = _init_distributed()
    try:
        model, report = fit_forecaster(table, targets, _split_names(features), config)
        if rank != 0:
            return  # under torchrun the first process writes the run folder and the table
        _make_run_dir(run_dir, overwrite)
        written = save_fit(run_dir, table, model, report,
                           {"data": str(data), "time_column": time_column, "fill": fill})
    except (ValueError, TypeError) as exc:
        _fail(exc, debug, 1)
    what = (f"ESN ({units} units), ridge alpha {report.alpha:g} (validation)"
            if kind == "esn" else f"{kind.upper()} ({hidden_size} units)")
    result = Table(title=f"fit: {what}, forecasting {', '.join(targets)} {horizon} row(s) "
                         "ahead")
    for column in ("part", "rows", "model_nrmse", "persistence_nrmse"):
        result.add_column(column, justify="right")
    for row in report.rows:
        result.add_row(*(_fmt(v) for v in row.values()))
    console.print(result)
    console.print(f"run folder: {run_dir}")
    for path in written:
        console.print(f"  {path.name}")


@app.command("forecast")
def forecast_command(
    data: Path = typer.Argument(..., help="a file with the model's feature columns",
                                show_default=False),
    model_dir: Path = typer.Option(..., "--model", help="run folder of `rnnlab fit`",
                                   show_default=False),
    time_column: str | None = typer.Option(None, "--time-column", help="default: the fit's"),
    fill: str | None = typer.Option(None, "--fill", help="default: the fit's"),
    out: Path | None = typer.Option(None, "--out", help="CSV of forecasts (default "
                                    "MODEL/forecast-DATA.csv)"),
    debug: bool = typer.Option(False, "--debug", help="show the traceback of an error"),
) -> None:
    """Forecast with a model saved by `rnnlab fit`: row t of the CSV (column TARGET+H_forecast)
    holds the forecast made at row t of the target H rows later, so the last H rows forecast
    past the end of the file."""
    import json

    from rnnlab.forecasting import ForecastModel, write_predictions
    from rnnlab.tasks.tabular import read_series

    debug = _debug(debug)
    try:
        model = ForecastModel.load(model_dir)
        fitted = {}
        if (model_dir / "config.json").is_file():
            fitted = json.loads((model_dir / "config.json").read_text())
        time_column = time_column or fitted.get("time_column")
        table = read_series(data, time_column=time_column, fill=fill or fitted.get("fill"))
        prediction = model.predict(table)
        path = out or model_dir / f"forecast-{data.stem}.csv"
        h = model.config.horizon
        # row t: the forecast made at t of the value h rows later (the last rows forecast
        # past the end of the file)
        write_predictions(path, table.time, [f"{t}+{h}" for t in model.targets], prediction)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        _fail(exc, debug, 2)
    console.print(f"{len(table)} forecasts ({model.config.horizon} row(s) ahead) of "
                  f"{', '.join(model.targets)}: {path}")


@app.command("sweep")
def sweep_command(
    name: str = typer.Argument(..., help="experiment name (see `rnnlab list`)",
                               show_default=False),
    param: list[str] = typer.Option(..., "--param", help="NAME=LOW:HIGH, NAME=LOW:HIGH:log "
                                    "or NAME=A,B,C (repeat for each swept option)",
                                    show_default=False),
    objective: str = typer.Option(..., "--objective", help="the number of the result to "
                                  "optimise (a key of its figures, e.g. final_window_nrmse)",
                                  show_default=False),
    trials: int = typer.Option(20, "--trials", help="trials this process runs"),
    direction: str = typer.Option("minimize", "--direction", help="minimize or maximize"),
    set_: list[str] = typer.Option([], "--set", help="a fixed option NAME=VALUE (repeat)"),
    storage: str | None = typer.Option(None, "--storage", help="journal file (shared by "
                                       "processes; default OUT/study.log) or database URL"),
    study: str | None = typer.Option(None, "--study", help="study name (default "
                                     "NAME-OBJECTIVE); processes with the same storage and "
                                     "name share it"),
    out: Path | None = typer.Option(None, "--out", help="sweep folder (default "
                                    "runs/sweep-NAME-TIME); trials go to OUT/trial-NNNN"),
    seed: int | None = typer.Option(None, "--seed", help="sampler seed (default: random; "
                                    "give each process its own)"),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="median pruning on the "
                               "values an experiment reports while it runs"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads per trial"),
    debug: bool = typer.Option(False, "--debug", help="show the traceback of an error"),
) -> None:
    """Sweep an experiment's options with Optuna; several processes with one --storage share
    a study. Writes trials.csv and Optuna's plots to the sweep folder."""
    from rnnlab.sweep import run_sweep

    debug = _debug(debug)
    try:
        fixed = _parse_extra(["--" + kv if "=" in kv else kv for kv in set_])
        found, folder = run_sweep(name, list(param), objective=objective, trials=trials,
                                  direction=direction, fixed=fixed, storage=storage,
                                  study_name=study, out_dir=out, seed=seed, prune=prune,
                                  threads=threads)
    except (KeyError, ValueError, TypeError, ImportError, typer.BadParameter) as exc:
        _fail(exc, debug, 2)
    done = [t for t in found.trials if t.state.name == "COMPLETE"]
    table = Table(title=f"sweep {name}: {objective} ({direction}), {len(found.trials)} trials "
                        f"in the study, {len(done)} complete")
    table.add_column("trial", justify="right")
    table.add_column(objective, justify="right")
    keys = sorted({k for t in done for k in t.params})
    for key in keys:
        table.add_column(key, justify="right")
    best_first = sorted(done, key=lambda t: t.value, reverse=direction == "maximize")
    for t in best_first[:10]:
        table.add_row(str(t.number), _fmt(t.value), *(_fmt(t.params.get(k)) for k in keys))
    console.print(table)
    console.print(f"sweep folder: {folder}")


@app.command("stream")
def stream_command(
    model: str | None = typer.Option(None, "--model", help="rls (echo state network + "
                                     "recursive least squares; default) or rtrl"),
    columns: str | None = typer.Option(None, "--columns", help="CSV rows: input columns, "
                                       "comma-separated 0-based indices or header names"),
    target: str | None = typer.Option(None, "--target", help="CSV rows: the column to "
                                      "forecast (index or header name)"),
    standardize: str | None = typer.Option(None, "--standardize", help="running (Welford "
                                           "mean/std over the lines so far; default) or none"),
    seed: int | None = typer.Option(None, "--seed"),
    units: int | None = typer.Option(None, "--units", help="rls: reservoir units (100)"),
    spectral_radius: float | None = typer.Option(None, "--spectral-radius", help="rls (0.9)"),
    leak: float | None = typer.Option(None, "--leak", help="rls: leak rate (1)"),
    input_scaling: float | None = typer.Option(None, "--input-scaling", help="rls (0.5)"),
    forgetting: float | None = typer.Option(None, "--forgetting", help="rls: RLS forgetting "
                                            "factor in (0, 1] (1)"),
    delta: float | None = typer.Option(None, "--delta", help="rls: ridge penalty, P(0) = I "
                                       "/ delta (1)"),
    rule: str | None = typer.Option(None, "--rule", help="rtrl: rtrl (exact) or uoro"),
    cell: str | None = typer.Option(None, "--cell", help="rtrl: elman or gru"),
    hidden: int | None = typer.Option(None, "--hidden", help="rtrl: hidden units (16)"),
    optimizer: str | None = typer.Option(None, "--optimizer", help="rtrl: adam or sgd"),
    lr: float | None = typer.Option(None, "--lr", help="rtrl: learning rate (0.01)"),
    clip: float | None = typer.Option(None, "--clip", help="rtrl: gradient norm clip (1)"),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="folder for the "
                                           "checkpoint (written on SIGINT/SIGTERM and at EOF)"),
    resume: Path | None = typer.Option(None, "--resume", help="continue the run saved in "
                                       "this folder; feed only the new lines"),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every",
                                                help="also checkpoint every this many lines"),
    threads: int = typer.Option(1, "--threads", help="torch threads (one line is tiny work: "
                                "more threads only add synchronisation)"),
    debug: bool = typer.Option(False, "--debug", help="show the traceback of an error"),
) -> None:
    """Learn online from numbers on standard input (one value, or one CSV row, per line) and
    print after each line the forecast of the target at the next line. Malformed lines are
    reported on stderr and skipped."""
    import torch

    from rnnlab.online_stream import StreamConfig, StreamError, run_stream

    debug = _debug(debug)
    given = {"model": model, "standardize": standardize, "seed": seed, "units": units,
             "spectral_radius": spectral_radius, "leak": leak, "input_scaling": input_scaling,
             "forgetting": forgetting, "delta": delta, "rule": rule, "cell": cell,
             "hidden": hidden, "optimizer": optimizer, "lr": lr, "clip": clip,
             "columns": _split_names(columns), "target": target}
    try:
        if threads < 1:
            raise typer.BadParameter(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
        config = None
        if resume is None:
            config = StreamConfig(**{k: v for k, v in given.items() if v is not None}).check()
        result = run_stream(None, config, checkpoint=checkpoint, resume=resume,
                            checkpoint_every=checkpoint_every, given=given)
    except (StreamError, ValueError, TypeError, OSError, typer.BadParameter) as exc:
        _fail(exc, debug, 2)
    if result.signal is not None:
        import signal

        where = f"; checkpoint: {result.checkpoint}" if result.checkpoint else ""
        typer.echo(f"stopped by {signal.Signals(result.signal).name} after {result.lines} "
                   f"line(s){where}", err=True)
        raise typer.Exit(128 + result.signal)


@app.command("translate")
def translate_command(
    texts: list[str] | None = typer.Argument(None, help="texts to translate (none or '-': one "
                                             "per line from standard input)",
                                             show_default=False),
    model_dir: Path = typer.Option(..., "--model", help="run folder of `rnnlab run seq2seq` "
                                   "(or one of its models/NAME folders)", show_default=False),
    name: str | None = typer.Option(None, "--name", help="which of the run's models, e.g. "
                                    "dates-bahdanau-seed0 (needed when it saved several)"),
    beam: int = typer.Option(5, "--beam", help="beam width (1: greedy)"),
    n_best: int = typer.Option(1, "--n-best", help="outputs per text, best first"),
    penalty: str = typer.Option("average", "--length-penalty",
                                help="none | average | gnmt"),
    debug: bool = typer.Option(False, "--debug", help="show the traceback of an error"),
) -> None:
    """Translate with a model saved by `rnnlab run seq2seq`: one line per output (with
    --n-best > 1, the outputs of a text are numbered and separated by a blank line)."""
    import sys

    from rnnlab.experiments._seq2seq_common import find_translator, translate

    debug = _debug(debug)
    try:
        if not texts or texts == ["-"]:
            texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        outs = translate(find_translator(model_dir, name), texts, beam_size=beam,
                         n_best=n_best, length_penalty=penalty)
    except (ValueError, TypeError, KeyError, ImportError, OSError) as exc:
        _fail(exc, debug, 2)
    for k, hyps in enumerate(outs):
        if n_best == 1:
            typer.echo(hyps[0])
            continue
        for i, h in enumerate(hyps, start=1):
            typer.echo(f"{i}\t{h}")
        if k < len(outs) - 1:
            typer.echo("")


@app.command("caption")
def caption_command(
    image: Path = typer.Argument(..., help="image file (PNG, JPEG, ...); other sizes are "
                                 "resized, other modes converted", show_default=False),
    model_path: Path = typer.Option(..., "--model", help="run folder of `rnnlab run "
                                    "captioning` (or a captioner_*.pt checkpoint)",
                                    show_default=False),
    name: str | None = typer.Option(None, "--name", help="which of the run's captioners, e.g. "
                                    "show_and_tell (default: show_attend_tell)"),
    beam: int = typer.Option(3, "--beam", help="beam width (1: greedy)"),
    n_best: int = typer.Option(1, "--n-best", help="captions to print, best first"),
    overlay: Path | None = typer.Option(None, "--overlay", help="write the best caption's "
                                        "per-word attention over the image to this PNG"),
    debug: bool = typer.Option(False, "--debug", help="show the traceback of an error"),
) -> None:
    """Caption an image with a model saved by `rnnlab run captioning`: one line per caption,
    `score<TAB>caption` (the score is the log-probability of the caption, eos included)."""
    from rnnlab.captioning import (
        attention_overlay_png,
        caption_images,
        load_captioner,
        load_image,
    )

    debug = _debug(debug)
    try:
        if n_best > beam:
            raise ValueError(f"--n-best ({n_best}) cannot exceed --beam ({beam})")
        if overlay is not None and overlay.is_dir():
            raise ValueError(f"--overlay {overlay} is a folder; give the PNG file to write")
        if overlay is not None and not overlay.parent.is_dir():
            raise FileNotFoundError(f"no folder {overlay.parent} for the overlay PNG")
        model, vocab, _ = load_captioner(model_path, name=name)
        if overlay is not None and model.kind != "show_attend_tell":
            raise ValueError(f"--overlay needs an attention model; {model_path} gave a "
                             f"{model.kind} captioner (choose --name show_attend_tell)")
        x = load_image(image, model.image_size, model.in_channels)
        caps = caption_images(model, vocab, x, beam=beam, n_best=n_best)[0]
    except (ValueError, TypeError, KeyError, ImportError, OSError) as exc:
        _fail(exc, debug, 2)
    for c in caps:
        typer.echo(f"{c.score:.4f}\t{c.text}")
    if overlay is not None:
        best = caps[0]
        if not best.words:
            _fail(ValueError("the best caption is empty: no overlay to draw"), debug, 1)
        attention_overlay_png(x, best.words, best.attention, model.grid, overlay,
                              title=best.text)
        typer.echo(f"attention overlay: {overlay}", err=True)

def _report_folder(run_dir: Path) -> None:
    if (run_dir / "error.txt").is_file():
        typer.echo(f"the finished part is kept in {run_dir}; {run_dir / 'error.txt'} has the "
                   "traceback", err=True)
    else:
        typer.echo(f"nothing was finished; the run left no files in {run_dir}", err=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
