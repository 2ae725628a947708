"""Repository-wide pytest hooks: per-notebook durations in the summary (CI prints them)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import matplotlib
import pytest

# Headless figures in tests and in nbval kernels started from here.
os.environ.setdefault("MPLBACKEND", "Agg")

# The development machines keep CIFAR-10 as JPEG image folders beside the checkout; point the
# course at it through the setting any user has (VGG_CIFAR10_DIR). Elsewhere nothing is set and
# the tests that need real images skip with a reason.
_LOCAL_CIFAR10 = Path(__file__).resolve().parent.parent / "shared/data/cifar10/cifar10-jpeg-imagefolder.tar.gz"
if _LOCAL_CIFAR10.is_file():
    os.environ.setdefault("VGG_CIFAR10_DIR", str(_LOCAL_CIFAR10))
matplotlib.use("Agg")

_NOTEBOOK_SECONDS: dict[str, float] = defaultdict(float)
_NOTEBOOK_FAILED: set[str] = set()


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _NOTEBOOK_SECONDS[path] += report.duration
        if report.failed:
            _NOTEBOOK_FAILED.add(path)


def pytest_terminal_summary(terminalreporter):
    if not _NOTEBOOK_SECONDS:
        return
    terminalreporter.section("notebook durations")
    for path, seconds in sorted(_NOTEBOOK_SECONDS.items()):
        status = "FAILED" if path in _NOTEBOOK_FAILED else "ok"
        terminalreporter.write_line(f"{seconds:7.1f} s  {status:6s}  {path}")
    total = sum(_NOTEBOOK_SECONDS.values())
    terminalreporter.write_line(f"{total:7.1f} s  total over {len(_NOTEBOOK_SECONDS)} notebooks")


@pytest.fixture
def one_thread():
    """One torch thread for the test (modules opt in with ``pytestmark``): small tensors gain
    nothing from threads, and on a busy 2-core runner a descheduled second thread stalls every
    parallel region."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
