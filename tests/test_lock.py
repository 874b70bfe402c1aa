"""The environment is the locked one (issue 10: exact versions of every dependency).

``constraints.txt`` is compiled by pip-tools from ``pyproject.toml`` and ``constraints.in`` (see
the README). These tests fail when a dependency is added to ``pyproject.toml`` without
re-locking, or when the environment was installed without the lock (another version of any
package, transitive ones included, than the one the suite was checked with).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503 normalisation


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert match, f"constraints.txt line {line!r} is not an exact pin"
        pins[_canonical(match[1])] = match[2]
    return pins


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    names = {_canonical(re.match(r"[A-Za-z0-9._-]+", s)[0]) for s in specs}
    return names - {"rnnlab"}


def test_every_declared_dependency_is_locked():
    missing = _declared() - set(_locked())
    assert not missing, f"not in constraints.txt (re-run pip-compile, see README): {missing}"


def test_the_environment_has_the_locked_versions():
    if not LOCK.is_file():  # pragma: no cover - an installed package without its source tree
        pytest.skip("constraints.txt is not beside the tests")
    wrong = {}
    for name, version in _locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (version, "not installed")
            continue
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, ("installed versions differ from constraints.txt (install with "
                       f"`pip install -c constraints.txt -e \".[dev]\"`): {wrong}")
