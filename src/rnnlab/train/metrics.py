"""The trainer's metrics files: ``metrics.csv`` and ``metrics.jsonl``, one row per epoch (and,
optionally, every k steps), appended and flushed row by row so that a run that dies keeps
every finished row. Floats are written with ``repr`` (shortest round-trip form), so a resumed
run's files can be compared byte for byte with an uninterrupted run's."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

COLUMNS = ("kind", "epoch", "step", "updates", "train_loss", "val_loss", "lr", "grad_norm",
           "clipped", "skipped", "best")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class MetricsLog:
    """Appends rows to ``run_dir/metrics.csv`` (header first) and ``run_dir/metrics.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        self.csv = run_dir / "metrics.csv"
        self.jsonl = run_dir / "metrics.jsonl"

    def write(self, row: dict[str, Any]) -> None:
        fresh = not self.csv.exists() or self.csv.stat().st_size == 0
        with open(self.csv, "a", encoding="utf-8", newline="") as f:
            if fresh:
                f.write(",".join(COLUMNS) + "\n")
            f.write(",".join(_cell(row.get(c)) for c in COLUMNS) + "\n")
            f.flush()
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in row.items()}
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")
            f.flush()

    def sizes(self) -> dict[str, int]:
        """Bytes written so far to each file (stored in a checkpoint)."""
        return {"csv": _size(self.csv), "jsonl": _size(self.jsonl)}

    def truncate(self, sizes: dict[str, int]) -> None:
        """Cut both files back to ``sizes``: rows a killed run wrote after its last checkpoint
        are written again, identically, by the resumed run."""
        for path, size in ((self.csv, sizes["csv"]), (self.jsonl, sizes["jsonl"])):
            if _size(path) < size:
                raise FileNotFoundError(f"{path} is shorter ({_size(path)} bytes) than when the "
                                        f"checkpoint was written ({size} bytes)")
            if path.exists():
                os.truncate(path, size)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
