"""The product names nothing of the development machines (issue 15).

CIFAR-10 comes from torchvision's cache or download, ``VGG_DATA_DIR`` or ``VGG_CIFAR10_DIR``;
the development machines' local copy may be named only by what sets those up for tests and CI
(conftest.py, .ci/) and by the tests themselves. Everything else a learner can read -- the
package, notebooks with their saved outputs, README, committed results and their provenance --
must not point at it, nor at any absolute path of these machines.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = ("tests/", ".ci/", "conftest.py", "mutation/")  # set-up for tests and CI only
# Spelled in pieces so that this file itself does not match; an absolute path starts the word
# (``mutation/work/`` is a relative path of the repository).
FORBIDDEN = re.compile(r"\.\./" + "shared" + r"|(?<![\w.-])/(?:work|root|home)/")


def _tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc}): the scan needs the list of tracked files")
    return out.stdout.splitlines()


def offenders(files: list[str]) -> list[str]:
    found = []
    for name in files:
        if name.startswith(ALLOWED) or name.endswith((".pt", ".png", ".gz")):
            continue
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        found += [f"{name}: {match!r}" for match in sorted(set(FORBIDDEN.findall(text)))]
    return found


def test_no_tracked_file_names_the_development_machines() -> None:
    assert offenders(_tracked()) == []


def test_the_scan_finds_a_planted_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "README.md").write_text(
        "data in ../" + "shared/data/cifar10, run in /" + "work/main; survivors in mutation/work/x\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("../" + "shared\n")
    assert offenders(["README.md", "tests/test_x.py"]) == ["README.md: '../shared'", "README.md: '/work/'"]
