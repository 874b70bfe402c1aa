"""Resuming a run that stopped: ``rnnlab run NAME --resume RUN_DIR``.

Every job of :meth:`RunContext.run_jobs` keeps its finished row in the run folder
(``jobs/CALL-K.pkl``, beside the job's arguments it answers, written atomically), so a resumed run
takes the rows of the jobs that finished and runs only the others; a job that trains with
:class:`rnnlab.train.Trainer` may also checkpoint inside its own folder
(:meth:`RunContext.job_dir`) and continue from there. A resumed run uses the options saved in
the run folder's ``config.json``; options given again must agree with them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import typing
from pathlib import Path
from typing import Any

from rnnlab.experiments._options import _parse_value, check_config

JOBS = "jobs"


class JobStore:
    """The finished jobs' rows of one run folder (see the module docstring)."""

    def __init__(self, run_dir: Path, resume: bool) -> None:
        self.folder = run_dir / JOBS
        self.resume = resume
        self.calls = 0  # run_jobs calls so far in this run: the same order in a resumed run

    def next_call(self) -> int:
        self.calls += 1
        return self.calls - 1

    def _path(self, call: int, k: int) -> Path:
        return self.folder / f"{call:02d}-{k:05d}.pkl"

    def load(self, call: int, k: int, job: tuple[Any, ...]) -> dict[str, Any] | None:
        """The row job ``k`` of call ``call`` finished with, when resuming and the stored job
        is this one (its arguments' ``repr``); ``None`` otherwise."""
        path = self._path(call, k)
        if not self.resume or not path.is_file():
            return None
        try:
            with open(path, "rb") as f:
                stored = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError):
            return None  # a torn or foreign file: run the job again
        if not isinstance(stored, dict) or stored.get("job") != repr(job):
            return None
        return stored["row"]

    def save(self, call: int, k: int, job: tuple[Any, ...], row: dict[str, Any]) -> None:
        self.folder.mkdir(exist_ok=True)
        path = self._path(call, k)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump({"job": repr(job), "row": row}, f)
        os.replace(tmp, path)


def saved_config(experiment: Any, run_dir: Path, overrides: dict[str, str]) -> Any:
    """The config of the run saved in ``run_dir`` (its ``config.json``), checked; ``overrides``
    given again must agree with it (``ValueError`` listing the differences)."""
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"--resume {run_dir}: not a run folder (no readable config.json)"
                         ) from None
    if saved.get("experiment") != experiment.name:
        raise ValueError(f"--resume {run_dir}: it holds a run of {saved.get('experiment')!r}, "
                         f"not {experiment.name!r}")
    hints = typing.get_type_hints(experiment.config_type)
    values = {}
    for f in dataclasses.fields(experiment.config_type):
        if f.name in saved.get("config", {}):
            v = saved["config"][f.name]
            values[f.name] = tuple(v) if isinstance(v, list) else v
    config = experiment.config_type(**values)
    check_config(config)
    differ = []
    for key, text in overrides.items():
        name = key.lstrip("-").replace("-", "_")
        if name not in hints:
            raise ValueError(f"{experiment.name} has no option --{key.lstrip('-')}")
        value = _parse_value(key.lstrip("-"), text, hints[name])
        if value != getattr(config, name):
            differ.append(f"--{name.replace('_', '-')} {text} (the run has "
                          f"{getattr(config, name)!r})")
    if differ:
        raise ValueError(f"--resume {run_dir}: options differ from the run being resumed: "
                         + "; ".join(differ))
    return config
