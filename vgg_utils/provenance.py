"""Provenance of a committed result: the git commit and the device it came from.

Every CSV and JSON record the course commits (ablation grids, course-model records, benchmarks)
names the command, commit, date, device, torch version and dataset it came from; these two helpers
are the parts that need the system. Used by :mod:`vgg_utils.experiments` and
:mod:`vgg_utils.course_models` (and ``benchmarks/``).
"""

from __future__ import annotations

import os
import platform
import subprocess

import torch

from .runtime import REPO_ROOT


def git_commit(*, short: bool = False, mark_dirty: bool = False) -> str:
    """``git rev-parse HEAD`` of the repository, or ``"unknown"`` outside a git checkout.

    ``mark_dirty``: append ``-dirty`` when tracked files have uncommitted changes (a result made
    from a working tree, not from the commit alone)."""
    try:
        out = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=10)  # fmt: skip
        dirty = mark_dirty and bool(subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True,
            text=True, timeout=10).stdout.strip())  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    head = out.stdout.strip() if out.returncode == 0 else ""
    return (head + ("-dirty" if dirty else "")) if head else "unknown"


def device_name(device: torch.device) -> str:
    """A readable device description: the GPU's name, or the CPU and its core count."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
