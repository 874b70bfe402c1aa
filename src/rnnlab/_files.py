"""Files rnnlab writes and reads back: written atomically, read with their format checked.

A file of rnnlab's (a trainer checkpoint, a forecaster, a stream's state) is a dict saved with
``torch.save`` that names its ``format`` and ``format_version``; :func:`load_versioned` refuses
anything else with a message that says what the file is and what this rnnlab reads, before
the caller touches any object. :func:`atomic_save` writes through a temporary file and
``os.replace``, so a crash mid-write leaves the previous file whole.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

import torch


def atomic_save(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` through a temporary file, ``fsync`` and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _version() -> str:
    try:  # the installed distribution's version (importing the package root here would
        return importlib.metadata.version("rnnlab")  # pull every layer into this low one)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def load_versioned(path: str | os.PathLike[str], *, name: str, format_name: str,
                   version: int, what: str, error: type[Exception] = ValueError,
                   hint: str = "") -> dict[str, Any]:
    """Read ``path`` (a file, or a folder holding ``name``) onto the CPU with
    ``weights_only=True`` and check that it is a ``format_name`` file of format ``version``.

    ``FileNotFoundError`` when there is no such file; ``error`` (naming ``what`` the file
    should be, the version found and the one read here, plus ``hint``) otherwise.
    """
    path = Path(path)
    if path.is_dir():
        path = path / name
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise error(f"{path} is not a readable {what} ({exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != format_name:
        raise error(f"{path} is not an {what}")
    found = blob.get("format_version")
    if found != version:
        written_by = blob.get("rnnlab_version")
        raise error(f"{path} has {what} format version {found}"
                    + (f" (written by rnnlab {written_by})" if written_by else "")
                    + f"; this rnnlab ({_version()}) reads version {version} only" + hint)
    return blob
