"""``vgg-course doctor``: can the course run here, on what, and what to do about each problem.

Every check gives a :class:`Check` with a level: ``ok``; ``fallback`` (the course runs, on a
built-in substitute, and the line says which); ``warn`` (runs, but something deserves a look); or
``problem`` (the course cannot run as it is: a package below the bound ``pyproject.toml`` sets,
missing notebooks, a damaged course model, too little disk). ``doctor`` exits non-zero exactly
when there is a problem. Used in the README's command-line section; no notebook teaches it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .runtime import REPO_ROOT, data_dir

LEVELS = ("ok", "fallback", "warn", "problem")
#: Below this much free disk where the course writes (results, caches, kernels' temp files).
MIN_FREE_MB = 500
#: Below this much memory the default size may not fit (peaks of about 2-3 GB, notebook 06).
MIN_MEMORY_GB = 4.0


@dataclass
class Check:
    """One finding: ``topic`` (what was checked), ``level`` (:data:`LEVELS`), ``detail`` (what was
    found), ``fix`` (what to do; empty when nothing is needed)."""

    topic: str
    level: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = {"ok": "ok  ", "fallback": "fall", "warn": "warn", "problem": "FAIL"}[self.level]
        text = f"[{mark}] {self.topic}: {self.detail}"
        return text + (f"\n         -> {self.fix}" if self.fix else "")


def _version(text: str) -> tuple[int, ...]:
    """``"2.14.1+cu128"`` -> ``(2, 14, 1)``: enough to compare with a lower bound."""
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


def lower_bounds() -> dict[str, str]:
    """``{distribution: lowest version}`` from ``pyproject.toml`` in a clone (the source of truth:
    an editable install's metadata is only as new as the last install), else from the installed
    package's metadata."""
    pyproject = REPO_ROOT / "pyproject.toml"
    text = pyproject.read_text() if pyproject.is_file() else ""
    if 'name = "vgg-course"' in text and "dependencies = [" in text:
        requires = re.findall(r'"([^"]+)"', text.split("dependencies = [", 1)[1].split("]", 1)[0])
    else:
        try:
            requires = metadata.requires("vgg-course") or []
        except metadata.PackageNotFoundError:
            requires = []
    bounds = {}
    for req in requires:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)\s*$", req)
        if match:  # extras ("; extra == 'dev'") are not needed to run the course
            bounds[match.group(1)] = match.group(2)
    return bounds


def check_packages(bounds: dict[str, str] | None = None) -> list[Check]:
    """Python and every dependency against its lower bound; torch and torchvision by name."""
    bounds = lower_bounds() if bounds is None else bounds
    checks = []
    py = platform.python_version()
    need = "3.10"
    checks.append(Check("Python", "ok" if _version(py) >= _version(need) else "problem", f"{py} ({sys.executable})",
                        "" if _version(py) >= _version(need) else f"the course needs Python >= {need}"))  # fmt: skip
    others_ok = []
    for name, low in bounds.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            checks.append(Check(name, "problem", "not installed", f"pip install '{name}>={low}' (or: make setup)"))
            continue
        if _version(have) < _version(low):
            checks.append(Check(name, "problem", f"{have} is below the course's lower bound {low}",
                                f"pip install -U '{name}>={low}'"))  # fmt: skip
        elif name in ("torch", "torchvision"):
            checks.append(Check(name, "ok", f"{have} (the course needs >= {low})"))
        else:
            others_ok.append(name)
    if others_ok:
        checks.append(Check("other packages", "ok", f"{len(others_ok)} at or above their bounds ({', '.join(others_ok)})"))
    return checks


def _memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):  # Windows
        return None


def check_device() -> list[Check]:
    """The device the notebooks will use, its memory, and whether bf16 is fast on it."""
    import torch

    from .runtime import cpu_bf16_support, get_device

    try:
        device = get_device()
    except ValueError as err:  # VGG_DEVICE names a device that is not there
        return [Check("device", "problem", str(err), "unset VGG_DEVICE or set it to cpu")]
    ram = _memory_gb()
    ram_text = f"{ram:.1f} GB RAM" if ram else "RAM unknown"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        detail = f"CUDA: {props.name}, {props.total_memory / 1e9:.1f} GB; {ram_text}"
        bf16 = ("fast (tensor cores)" if torch.cuda.is_bf16_supported() else "not supported: fp16/fp32 used")
    elif device.type == "mps":
        detail = f"Apple MPS; {ram_text} (shared with the GPU)"
        bf16 = "supported on recent macOS; fp32 is the safe default"
    else:
        detail = f"CPU, {os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads; {ram_text}"
        support = cpu_bf16_support()
        bf16 = f"fast ({support})" if support != "none" else "emulated (no AMX/AVX512-BF16): the course trains in fp32"
    checks = [Check("device", "ok", detail), Check("bf16", "ok", bf16)]
    if ram is not None and ram < MIN_MEMORY_GB:
        checks.append(Check("memory", "warn", f"{ram:.1f} GB RAM; the default size peaks near 3 GB",
                            "run the notebooks in the CI size: VGG_FAST=1 (or vgg-course run --fast)"))  # fmt: skip
    return checks


def check_downloads() -> list[Check]:
    """CIFAR-10, ImageNet VGG16 and Oxford Flowers: present and verified, or the fallback used."""
    from . import fetch
    from .data import CIFAR10_DIR_ENV

    checks = []
    for name, item in fetch.catalog().items():
        st = fetch.status(item)
        local = os.environ.get(CIFAR10_DIR_ENV) if name == "cifar10" else None
        if st.state == "present":
            checks.append(Check(name, "ok", f"present, checksum verified ({fetch._shown(item.target)})"))
        elif local and Path(local).expanduser().exists():
            checks.append(Check(name, "ok", f"local image-folder copy from ${CIFAR10_DIR_ENV} ({local})"))
        else:
            level = "warn" if st.state == "damaged" else "fallback"
            what = {"missing": "not downloaded", "partial": f"partly downloaded ({st.detail})"}.get(st.state, f"damaged: {st.detail}")
            fix = (f"vgg-course fetch {name} replaces it" if st.state == "damaged"
                   else f"on a connected machine: vgg-course fetch {name}")  # fmt: skip
            checks.append(Check(name, level, f"{what}: {item.without}", fix))
    return checks


def check_course_models() -> list[Check]:
    """Every shipped course model against the sha256 in its record (notebooks 05-07 need them)."""
    from .course_models import RECIPES, CourseModelError, verify_file

    checks = []
    for name in RECIPES:
        try:
            record = verify_file(name)
            checks.append(Check(f"course model {name}", "ok", f"sha256 verified, test accuracy {record['test_accuracy']:.1%}"))
        except (CourseModelError, KeyError) as err:
            message = str(err)
            fix = message.split("; ", 1)[1] if "; " in message else "git checkout -- data/checkpoints"
            checks.append(Check(f"course model {name}", "problem", message.split("; ")[0], fix))
    return checks


def check_notebooks(folder: str | os.PathLike | None = None) -> list[Check]:
    """The seven notebooks are there and readable (a partial clone or copy loses some)."""
    import nbformat

    from .notebook_runner import NOTEBOOK_DIR, course_notebooks

    folder = Path(folder or NOTEBOOK_DIR)
    found = course_notebooks(folder)
    if not found:
        return [Check("notebooks", "problem", f"none in {folder}",
                      "clone the course: git clone https://github.com/vgg-course/vgg-close-reading")]  # fmt: skip
    broken = []
    for path in found:
        try:
            nbformat.read(path, as_version=4)
        except Exception as err:  # noqa: BLE001 - truncated JSON, merge conflict markers, ...
            broken.append(f"{path.name} ({type(err).__name__})")
    if broken:
        return [Check("notebooks", "problem", f"unreadable: {', '.join(broken)}", "git checkout -- notebooks")]
    from .fetch import _shown

    return [Check("notebooks", "ok", f"{len(found)} in {_shown(folder)}: {', '.join(p.stem[:2] for p in found)}")]


def check_network(urls: Sequence[str] | None = None, timeout: float = 3.0) -> list[Check]:
    """Can the download hosts be reached (each probed in parallel, ``timeout`` seconds)?"""
    from .models import reachable_hosts

    if urls is None:
        from .fetch import catalog

        urls = [item.files[0].url for item in catalog().values()]
    hosts = reachable_hosts(urls, timeout)
    down = sorted(h for h, ok in hosts.items() if not ok)
    if not down:
        return [Check("network", "ok", f"{', '.join(sorted(hosts))} reachable")]
    return [Check("network", "fallback", f"{', '.join(down)} unreachable within {timeout:g} s: offline, so the "
                  "notebooks use what is cached and the course's own models and data",
                  "fine for the course; to get the optional downloads, run vgg-course fetch --all on a connected machine")]  # fmt: skip


def check_disk(paths: Sequence[Path] | None = None, min_free_mb: float = MIN_FREE_MB) -> list[Check]:
    """Free space where the course writes: the data folder and torch.hub's cache."""
    import torch

    paths = list(paths) if paths is not None else [data_dir(), Path(torch.hub.get_dir())]
    checks = []
    for path in paths:
        existing = next((p for p in (path, *path.parents) if p.exists()), Path.cwd())
        free = shutil.disk_usage(existing).free / 1e6
        if free < min_free_mb:
            checks.append(Check("disk", "problem", f"{free:,.0f} MB free at {existing}",
                                f"free at least {min_free_mb:,.0f} MB there (or set VGG_DATA_DIR / TORCH_HOME elsewhere)"))  # fmt: skip
        else:
            checks.append(Check("disk", "ok", f"{free / 1e3:,.1f} GB free at {existing}"))
    return checks


def run_checks(
    *,
    bounds: dict[str, str] | None = None,
    notebooks: str | os.PathLike | None = None,
    network_urls: Sequence[str] | None = None,
    network_timeout: float = 3.0,
    disk_paths: Sequence[Path] | None = None,
    min_free_mb: float = MIN_FREE_MB,
) -> list[Check]:
    """All checks (the arguments replace what is checked, for tests and other layouts)."""
    return [
        *check_packages(bounds), *check_device(), *check_notebooks(notebooks), *check_course_models(),
        *check_downloads(), *check_network(network_urls, network_timeout), *check_disk(disk_paths, min_free_mb),
    ]  # fmt: skip


def report(checks: Sequence[Check]) -> tuple[str, int]:
    """The printed report and the exit code (1 when any check is a problem, else 0)."""
    lines = [c.line() for c in checks]
    problems = [c for c in checks if c.level == "problem"]
    fallbacks = [c for c in checks if c.level == "fallback"]
    if problems:
        lines.append(f"\nthe course cannot run as it is: {len(problems)} problem(s) above ({', '.join(c.topic for c in problems)})")
    elif fallbacks:
        lines.append(f"\nthe course runs, with fallbacks for: {', '.join(c.topic for c in fallbacks)}")
    else:
        lines.append("\nthe course runs here with everything it can use")
    return "\n".join(lines), 1 if problems else 0
