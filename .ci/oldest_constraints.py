#!/usr/bin/env python3
"""The oldest versions pyproject.toml allows, as exact pins, and a virtual environment with them.

``python .ci/oldest_constraints.py`` prints one ``name==version`` line per declared dependency
(``[project] dependencies`` and the ``dev`` extra), each pinned at the lower bound that
pyproject.toml declares, so what ``make test-oldest`` tests can never drift from the bounds.

``python .ci/oldest_constraints.py --venv DIR`` makes DIR a virtual environment with exactly those
versions (their dependencies resolved by pip), installs the package itself into it without
dependencies, checks it with ``pip check`` and prints the versions that were installed. It
installs only when the pins change (``DIR/.oldest-stamp`` holds their hash), and then only what
moved. Needs Python 3.11+ (or ``tomli``) and the index that ``pip`` is configured with.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        sys.exit("oldest_constraints.py needs Python 3.11+ (tomllib) or `pip install tomli`")

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("dev",)
# Tools needed to install the package without build isolation (offline-capable, seconds).
BUILD = ["setuptools>=64", "wheel"]
_BOUND = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*>=\s*([0-9][0-9A-Za-z.+!-]*)\s*$")


def oldest_pins(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """{name: lowest allowed version} for the dependencies and the dev extra of ``pyproject``.

    Every requirement must be a plain lower bound (``name>=X``): a pin, a cap, an extra or a
    marker has no single oldest version, so it is refused with the requirement named.
    """
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for extra in EXTRAS:
        requirements += project.get("optional-dependencies", {}).get(extra, [])
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = _BOUND.match(requirement)
        if match is None:
            raise ValueError(f"{pyproject.name}: {requirement!r} is not a plain lower bound "
                             "'name>=X' (the only form whose oldest version can be tested)")
        pins[match.group(1).lower()] = match.group(2)
    return pins


def constraints_text(pins: dict[str, str]) -> str:
    return "".join(f"{name}=={version}\n" for name, version in pins.items())


def _pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check",
                    *args], check=True)


def ensure_venv(venv: Path) -> None:
    """Create or refresh ``venv`` with the oldest pins; then (re)install the package in it.

    A venv made by the same Python whose pins only moved is updated in place: pip changes just the
    moved packages, so raising one bound costs seconds, not the ~3 GB torch download. A new Python,
    a dropped package or a venv made elsewhere is rebuilt from scratch.
    """
    pins = oldest_pins()
    text = constraints_text(pins)
    stamp, python = venv / ".oldest-stamp", venv / ".oldest-python"
    requirements = venv / "oldest-requirements.txt"
    digest = hashlib.sha256(f"{sys.version}\n{text}".encode()).hexdigest()
    start = time.monotonic()
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == digest:
        print(f"oldest: {venv} already has these pins", flush=True)
    else:
        previous = requirements.read_text(encoding="utf-8") if requirements.is_file() else ""
        kept = {line.split("==")[0] for line in previous.splitlines()} <= set(pins)
        same_python = python.is_file() and python.read_text(encoding="utf-8") == sys.version
        if previous and kept and same_python:
            print(f"oldest: updating the pins that moved in {venv}", flush=True)
            stamp.unlink(missing_ok=True)
        else:
            print(f"oldest: installing the lower bounds into a new {venv}", flush=True)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            python.write_text(sys.version, encoding="utf-8")
            _pip(venv, "install", "--quiet", "--upgrade", "pip", *BUILD)
        requirements.write_text(text, encoding="utf-8")
        _pip(venv, "install", "--quiet", "-r", str(requirements))
        stamp.write_text(digest + "\n", encoding="utf-8")
    # Always re-installed (seconds): a cached venv may point at an earlier clone of the repository.
    _pip(venv, "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(ROOT))
    _pip(venv, "check")
    print(f"oldest: environment ready in {time.monotonic() - start:.0f} s", flush=True)
    report = ("import importlib.metadata as m, sys\n"
              "for name in sys.argv[1:]:\n"
              "    print(f'  {name:14s} {m.version(name)}')\n")
    subprocess.run([str(venv / "bin" / "python"), "-c", report, *oldest_pins()], check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, help="create/refresh this virtual environment")
    args = parser.parse_args(argv)
    if args.venv is None:
        sys.stdout.write(constraints_text(oldest_pins()))
    else:
        ensure_venv(args.venv)


if __name__ == "__main__":
    main()
