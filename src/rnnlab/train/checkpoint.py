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

from rnnlab._tree import tree_leaves, tree_map
from rnnlab.learning import BPTT, ELSTMRTRL, RTRL, UORO, ForwardModeRTRL, LearningRule, SnAp1

#: Bumped when the layout of a checkpoint changes; a checkpoint of another version is refused.
FORMAT_VERSION = 1
FORMAT_NAME = "rnnlab.train.checkpoint"
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed here (another model, configuration or format)."""


# -- files ------------------------------------------------------------------------------------
def atomic_save(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` through a temporary file and ``os.replace``."""
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


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint (a file, or a run folder holding ``checkpoint.pt``) onto the CPU and
    check its format and version; the caller moves tensors where they belong."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise CheckpointError(f"{path} is not a readable rnnlab checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not an rnnlab.train checkpoint")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this rnnlab "
            f"({_rnnlab_version()}) reads version {FORMAT_VERSION} only"
        )
    return ckpt


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


def _clone(state: Any) -> Any:
    return None if state is None else tree_map(lambda t: t.detach().clone(), state)


def rule_state(rule: LearningRule | None) -> dict[str, Any] | None:
    """The online state of a learning rule: the carried network state and, for the RTRL family,
    the influence tensors (UORO: its rank-one factors and the generator of its random signs).

    Uses the rule's own ``state_dict()`` when it has one; otherwise reads the public attributes
    of the rules of :mod:`rnnlab.learning` (UORO's generator is the one private attribute read).
    """
    if rule is None:
        return None
    if callable(getattr(rule, "state_dict", None)):
        return {"kind": "state_dict", "value": rule.state_dict()}
    if not rule_is_at_rest(rule):
        raise RuntimeError("BPTT is inside a truncation chunk (an autograd graph is pending): "
                           "a checkpoint can only be taken between chunks")
    kind = type(rule).__name__
    state = rule.state
    out: dict[str, Any] = {"kind": kind, "state": _clone(state)}
    if state is None or isinstance(rule, BPTT):
        return out
    if isinstance(rule, RTRL):
        out["influence"] = {k: v.clone() for k, v in rule.influence.items()}
        out["steps"] = rule.steps
    elif isinstance(rule, UORO):
        out["state_tilde"] = rule.state_tilde.clone()
        out["theta_tilde"] = rule.theta_tilde.clone()
        out["generator"] = rule._generator.get_state()
    elif isinstance(rule, SnAp1):
        out["values"] = rule.values.clone()
    elif isinstance(rule, ForwardModeRTRL | ELSTMRTRL):
        out["influence"] = rule.influence.clone()
    else:
        raise TypeError(f"cannot checkpoint the state of a {kind}: give the rule state_dict() "
                        "and load_state_dict() methods")
    return out


def check_rule_supported(rule: LearningRule | None) -> None:
    """Refuse, before training, a rule whose online state a checkpoint could not hold."""
    known = (BPTT, RTRL, UORO, SnAp1, ForwardModeRTRL, ELSTMRTRL)
    if rule is None or isinstance(rule, known) or callable(getattr(rule, "state_dict", None)):
        return
    raise TypeError(f"cannot checkpoint the state of a {type(rule).__name__}: give the rule "
                    "state_dict() and load_state_dict() methods")


def load_rule_state(rule: LearningRule | None, saved: dict[str, Any] | None,
                    device: torch.device) -> None:
    """Restore what :func:`rule_state` captured into ``rule`` (built like the saved one)."""
    if rule is None or saved is None:
        return
    if saved["kind"] == "state_dict":
        rule.load_state_dict(saved["value"])
        return
    if saved["kind"] != type(rule).__name__:
        raise CheckpointError(f"the checkpoint holds the state of a {saved['kind']}, the "
                              f"trainer's rule is a {type(rule).__name__}")
    state = saved["state"]
    if state is None:
        return  # the rule had not started: a fresh rule starts the same way
    state = tree_map(lambda t: t.to(device), state)
    batch = tree_leaves(state)[0].shape[0]
    rule.reset(batch, h0=state)
    if isinstance(rule, RTRL):
        for key, view in rule.influence.items():  # views into the rule's buffer
            view.copy_(saved["influence"][key])
        rule.steps = saved["steps"]
    elif isinstance(rule, UORO):
        rule.state_tilde = saved["state_tilde"].to(device)
        rule.theta_tilde = saved["theta_tilde"].to(device)
        rule._generator.set_state(saved["generator"])
    elif isinstance(rule, SnAp1):
        rule.values = saved["values"].to(device)
    elif isinstance(rule, ForwardModeRTRL | ELSTMRTRL):
        rule.influence = saved["influence"].to(device)


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
