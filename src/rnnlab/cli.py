"""The ``rnnlab`` command line: a thin shell over the experiment registry.

``rnnlab list`` lists the experiments (``--options`` with their options);
``rnnlab run NAME [--option value ...] [--out DIR]`` runs one with a progress bar, prints its
table and writes the run folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
                f"  --{name} ({tp}, default {default!r}): {doc}"
                for name, tp, default, doc in exp.options()
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


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run_command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="experiment name (see `rnnlab list`)"),
    out: Path | None = typer.Option(None, "--out", help="run folder (default runs/NAME-TIME)"),
    threads: int | None = typer.Option(None, "--threads", help="torch.set_num_threads"),
) -> None:
    """Run experiment NAME; extra `--option value` pairs set its options."""
    import torch

    from rnnlab.experiments import run_experiment
    from rnnlab.experiments.registry import get_experiment, resolve_config

    try:
        experiment = get_experiment(name)
        overrides = _parse_extra(list(ctx.args))
        resolve_config(experiment, overrides)  # fail on a bad option before any work starts
    except (KeyError, ValueError, typer.BadParameter) as exc:
        console.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        raise typer.Exit(2) from None
    if threads is not None:
        if threads < 1:
            console.print("[red]error:[/red] --threads must be positive")
            raise typer.Exit(2)
        torch.set_num_threads(threads)
    console.print(f"[bold]{name}[/bold] (torch {torch.__version__}, "
                  f"{torch.get_num_threads()} threads)")
    result, run_dir = run_experiment(name, overrides, out, progress=_rich_progress)
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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
