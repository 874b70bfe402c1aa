"""The run folder (``--out``): checked before any work, created, cleared on ``overwrite``, and
kept or removed when a run fails (the rules are in :mod:`rnnlab.experiments.registry`'s
docstring). Public through :mod:`rnnlab.experiments.registry`."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import traceback
from pathlib import Path

# The files a run writes besides its ``NAME.png`` plots (what ``overwrite`` deletes).
RUN_FILES = ("config.json", "metrics.csv", "table.csv", "result.json", "error.txt", "model.pt",
             "predictions.csv")


class RunFolderError(ValueError):
    """The run folder (``--out``) cannot be used: a file, unwritable, or holding another run."""


def _is_run_folder(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "experiment" in config


def _run_outputs(path: Path) -> list[Path]:
    """The files of ``path`` that rnnlab writes (what ``overwrite`` deletes)."""
    return sorted(p for p in path.iterdir() if p.is_file()
                  and (p.name in RUN_FILES or p.suffix.lower() == ".png"))


def check_run_dir(path: Path | str, overwrite: bool = False) -> Path:
    """Check that ``path`` can take a new run, changing nothing; return it.

    :class:`RunFolderError` naming the problem when ``path`` is a file, lies under a file, cannot
    be written, or already holds files (unless ``overwrite``; even then it must be a run folder:
    rnnlab does not delete files of a folder it did not write).
    """
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise RunFolderError(f"--out {path} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise RunFolderError(f"--out {path}: no permission to write in this folder")
        content = sorted(p.name for p in path.iterdir())
        if content and not overwrite:
            shown = ", ".join(content[:5]) + (", ..." if len(content) > 5 else "")
            raise RunFolderError(
                f"--out {path} is not empty (it holds {shown}); choose a new folder, or pass "
                "--overwrite to delete the previous run's files there first")
        if content and not _is_run_folder(path):
            raise RunFolderError(
                f"--out {path} holds files but is not an rnnlab run folder (no config.json "
                "naming an experiment); --overwrite deletes only a previous run's files, so "
                "choose a new or empty folder")
        return path
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunFolderError(f"--out {path}: {ancestor} is a file, so no folder can be made "
                             "under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunFolderError(f"--out {path}: no permission to create a folder in {ancestor}")
    return path


def default_run_dir(name: str) -> Path:
    """``runs/NAME-YYYYmmdd-HHMMSS`` (``-2``, ``-3``, ... when that folder exists already)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def _make_run_dir(path: Path, overwrite: bool) -> list[Path]:
    """Create ``path`` (or clear a previous run's files from it); return the folders created."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"--out {path}: cannot create the folder ({exc.strerror})") from None
    if overwrite:
        for old in _run_outputs(path):
            old.unlink()
        shutil.rmtree(path / "jobs", ignore_errors=True)  # the previous run's finished jobs
    return created


def _finish_failed_run(run_dir: Path, created: list[Path], exc: BaseException) -> None:
    """Keep what a failed run finished and mark it failed, or remove it if it finished nothing."""
    try:
        finished = [p for p in _run_outputs(run_dir) if p.name != "config.json"]
        jobs = run_dir / "jobs"
        if jobs.is_dir() and any(jobs.iterdir()):
            finished.append(jobs)  # finished jobs' rows: what --resume continues from
        if not finished:
            (run_dir / "config.json").unlink(missing_ok=True)
            for folder in created:  # deepest first; a folder someone else filled meanwhile stays
                folder.rmdir()
            return
        text = "".join(traceback.format_exception(exc))
        (run_dir / "error.txt").write_text(
            f"run failed: {type(exc).__name__}: {exc}\n"
            f"finished and kept: {', '.join(p.name for p in finished)}\n\n{text}")
    except OSError:  # the folder itself is failing (disk full, removed): the run's error matters
        pass
