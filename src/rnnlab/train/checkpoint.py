"""Checkpoint files of :class:`rnnlab.train.Trainer`: atomic writes, RNG states, learning-rule
state, and the fingerprint that refuses a checkpoint of another model or format.

A checkpoint is one ``torch.save`` file of plain containers and tensors (no pickled classes), so
it loads with ``torch.load(..., weights_only=True)``. It is written to a temporary file in the
same folder, flushed to disk (``fsync``) and moved over the old one with ``os.replace``, which is
atomic on POSIX and Windows: a run killed while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlab._files import atomic_save as atomic_save  # re-exported: the one atomic writer
from rnnlab._files import load_versioned
from rnnlab.learning import BPTT, LearningRule

#: Bumped when the layout of a checkpoint changes; a checkpoint of another version is refused.
FORMAT_VERSION = 2  # 2: learning rules saved through their state_dict()
FORMAT_NAME = "rnnlab.train.checkpoint"
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed here (another model, configuration or format)."""


# -- files ------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint (a file, or a run folder holding ``checkpoint.pt``) onto the CPU and
    check its format and version; the caller moves tensors where they belong."""
    return load_versioned(path, name=CHECKPOINT_NAME, format_name=FORMAT_NAME,
                          version=FORMAT_VERSION, what="rnnlab.train checkpoint",
                          error=CheckpointError)


def _rnnlab_version() -> str:
    from rnnlab import __version__

    return __version__


def environment() -> dict[str, Any]:
    """What bit-identical resumption depends on besides the checkpoint itself."""
    return {
        "rnnlab": _rnnlab_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "world_size": (torch.distributed.get_world_size()
                       if torch.distributed.is_available() and torch.distributed.is_initialized()
                       else 1),
    }


def check_environment(saved: dict[str, Any]) -> None:
    """Warn (not fail) when the versions or thread count differ from the checkpoint's: the run
    continues correctly, but not necessarily bit-identically."""
    now = environment()
    diff = [f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in now if saved.get(k) != now[k]]
    if diff:
        warnings.warn("resuming with a different environment (" + ", ".join(diff) + "): the "
                      "run continues, but not bit-identically to an uninterrupted one",
                      RuntimeWarning, stacklevel=3)


# -- random number generators -------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """The global generators: torch's CPU one, every CUDA device's, numpy's and Python's."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global one is saved)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            warnings.warn(f"the checkpoint holds {len(cuda)} CUDA generator states, this machine "
                          f"has {torch.cuda.device_count()} devices: CUDA generators not restored",
                          RuntimeWarning, stacklevel=2)
        else:
            torch.cuda.set_rng_state_all(cuda)
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(  # noqa: NPY002 (the global generator is restored)
        (np_state["name"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss_next"]))


# -- learning rules -------------------------------------------------------------------------------
def rule_is_at_rest(rule: LearningRule | None) -> bool:
    """Whether the rule holds nothing that a checkpoint cannot store: an online BPTT in the
    middle of a truncation chunk holds an autograd graph, so it is at rest only between chunks."""
    if isinstance(rule, BPTT):
        return rule.state is None or rule.grad_ready
    return True


def rule_state(rule: LearningRule | None) -> dict[str, Any] | None:
    """The online state of a learning rule, its ``state_dict()``: the carried network state
    and, for the RTRL family, the influence tensors (UORO: its rank-one factors and the state
    of its sign generator). The formats are in each rule's ``state_dict`` docstring."""
    if rule is None:
        return None
    if not rule_is_at_rest(rule):
        raise RuntimeError("BPTT is inside a truncation chunk (an autograd graph is pending): "
                           "a checkpoint can only be taken between chunks")
    return rule.state_dict()  # type: ignore[attr-defined]


def check_rule_supported(rule: LearningRule | None) -> None:
    """Refuse, before training, a rule whose online state a checkpoint could not hold."""
    if rule is None or all(callable(getattr(rule, name, None))
                           for name in ("state_dict", "load_state_dict")):
        return
    raise TypeError(f"cannot checkpoint the state of a {type(rule).__name__}: give the rule "
                    "state_dict() and load_state_dict() methods")


def load_rule_state(rule: LearningRule | None, saved: dict[str, Any] | None) -> None:
    """Restore what :func:`rule_state` captured into ``rule`` (built like the saved one); the
    rule moves the tensors to its model's device. A state of another rule or shape raises
    :class:`CheckpointError`."""
    if rule is None or saved is None:
        return
    try:
        rule.load_state_dict(saved)  # type: ignore[attr-defined]
    except ValueError as err:
        raise CheckpointError(f"the checkpoint's learning-rule state does not fit: {err}") from err


# -- fingerprint ----------------------------------------------------------------------------------
def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(model: torch.nn.Module, optimizer: Any, rule: LearningRule | None,
                settings: dict[str, Any]) -> dict[str, str]:
    """Digests of what a checkpoint must match to be resumed: the model (class, ``repr`` and
    every state-dict entry's name, shape and dtype), the optimizer (class and parameter
    layout), the learning rule (class and options) and the trainer's settings that change
    results (batch size, shuffling, seed, ...). Values (weights, learning rates) are not part
    of it: they are what the checkpoint restores."""
    entries = [(k, list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    groups = [[list(p.shape) for p in g["params"]] for g in optimizer.param_groups]
    rule_options = {k: getattr(rule, k) for k in ("truncation", "reduction", "seed", "eps")
                    if hasattr(rule, k)}
    return {
        "model": _digest([type(model).__module__, type(model).__qualname__, repr(model),
                          entries]),
        "optimizer": _digest([type(optimizer).__module__, type(optimizer).__qualname__, groups]),
        "rule": _digest([None if rule is None else type(rule).__qualname__, rule_options]),
        "trainer": _digest(settings),
    }


def check_fingerprint(saved: dict[str, str], current: dict[str, str], path: Path) -> None:
    """``CheckpointError`` naming every part (model, optimizer, rule, trainer) that differs."""
    differ = [k for k in current if saved.get(k) != current[k]]
    if differ:
        raise CheckpointError(
            f"the checkpoint {path} was made with a different {', '.join(differ)} than this "
            "trainer's (a checkpoint resumes only the run it came from: same model "
            "architecture, optimizer class, learning rule and trainer settings); nothing was "
            "loaded"
        )
