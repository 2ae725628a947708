"""``vgg-course run`` on small notebooks the tests write: each in a fresh kernel, in order; HTML
and an index; time and the kernel's own peak memory; the first failing cell stops everything
with its error; ``--fast``, ``--inplace``, ``--record`` and ``--offline`` do what they say."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from vgg_utils.cli import main
from vgg_utils.notebook_runner import (
    RECORD_COLUMNS,
    NotebookRunError,
    course_notebooks,
    resolve,
    run_notebook,
)

ALLOCATE_MB = 300


def write(folder: Path, name: str, *cells) -> Path:
    path = folder / name
    nbformat.write(new_notebook(cells=list(cells)), path)
    return path


@pytest.fixture
def three(tmp_path) -> list[Path]:
    """One that holds 300 MB, one that fails at cell 2, one that must then not run."""
    return [
        write(tmp_path, "01_alloc.ipynb", new_markdown_cell("# holds memory"),
              new_code_cell(f"import numpy as np\nblock = np.ones({ALLOCATE_MB} * 2**20 // 8)  # touched: resident\n"
                            "print(f'held {block.nbytes / 2**20:.0f} MiB')"),
              new_code_cell("print('ImageNet weights unavailable (offline): a fallback line')")),  # fmt: skip
        write(tmp_path, "02_fails.ipynb", new_code_cell("x = 1"), new_markdown_cell("then"),
              new_code_cell("y = x + 1\nraise ValueError('broken on purpose')"), new_code_cell("print('after the error')")),  # fmt: skip
        write(tmp_path, "03_later.ipynb", new_code_cell("open('ran.txt', 'w').write('ran')")),
    ]


def test_run_stops_at_the_first_failing_cell_with_html_times_and_peak_memory(three, tmp_path, capsys):
    html, record = tmp_path / "html", tmp_path / "runs.csv"
    code = main(["run", *map(str, three), "--html", str(html), "--record", str(record)])
    out = capsys.readouterr().out
    assert code == 1
    peaks = {m.group(1): float(m.group(2).replace(",", "")) for m in
             re.finditer(r"(\d\d_\w+)\.ipynb: \w+, [\d.]+ s, peak memory ([\d,]+) MB", out)}  # fmt: skip
    assert set(peaks) == {"01_alloc", "02_fails"}
    assert peaks["01_alloc"] > ALLOCATE_MB
    # the kernel's own peak: not inherited from this (torch-importing) process, as ru_maxrss would be
    assert peaks["02_fails"] < ALLOCATE_MB
    assert "fallback: ImageNet weights unavailable (offline): a fallback line" in out
    assert re.search(r"(?s)02_fails\.ipynb failed at cell 2:\n    y = x \+ 1\n.*ValueError: broken on purpose", out)
    assert "not run: 03_later.ipynb" in out
    assert not (tmp_path / "ran.txt").exists()  # the later notebook did not run
    index = (html / "index.html").read_text()
    assert 'href="01_alloc.html"' in index and 'href="02_fails.html"' in index and "03_later" not in index
    assert "failed at cell 2" in index and re.search(r"\d+ MB", index) and re.search(r"[\d.]+ s", index)
    assert "broken on purpose" in (html / "02_fails.html").read_text()
    executed = nbformat.read(html / "01_alloc.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"].startswith(f"held {ALLOCATE_MB} MiB")
    rows = list(csv.DictReader(record.open()))
    assert [r["notebook"] for r in rows] == ["01_alloc", "02_fails"]
    assert [r["status"] for r in rows] == ["ok", "failed at cell 2"]
    assert set(rows[0]) == set(RECORD_COLUMNS) and float(rows[0]["peak_mb"]) > ALLOCATE_MB
    assert all(rows[0][k] for k in ("size", "seconds", "device", "torch", "git_commit", "date", "command"))
    assert nbformat.read(three[1], as_version=4).cells[0].get("outputs") == []  # not saved back


def test_fast_inplace_and_offline_reach_the_kernel(tmp_path, monkeypatch):
    monkeypatch.delenv("VGG_FAST", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as CI exports it: the saved notebook must still show figures
    path = write(tmp_path, "04_env.ipynb", new_code_cell(
        "import os, socket\nprint('VGG_FAST =', os.environ.get('VGG_FAST'))\n"
        "try:\n    socket.getaddrinfo('download.pytorch.org', 443)\n    print('resolved')\n"
        "except socket.gaierror as err:\n    print('no network:', err)\n"
        "print('loopback', socket.getaddrinfo('127.0.0.1', 80)[0][4][0])\n"
        "from vgg_utils.models import _reachable\nprint('reachable', _reachable('https://download.pytorch.org/models/x', 2.0))"),
        new_code_cell("import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0]);"))  # fmt: skip
    run, nb = run_notebook(path, fast=True, offline=True)
    assert run.status == "ok", run.error
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert "VGG_FAST = 1" in text
    assert re.search(r"no network: .*download\.pytorch\.org: no network \(vgg-course run --offline\)", text)
    assert "loopback 127.0.0.1" in text and "reachable False" in text
    assert main(["run", str(path), "--inplace", "--fast", "--offline"]) == 0
    saved = nbformat.read(path, as_version=4)
    assert "VGG_FAST = 1" in "".join(o.get("text", "") for o in saved.cells[0].outputs)
    assert any("image/png" in o.get("data", {}) for o in saved.cells[1].outputs), saved.cells[1].outputs


def test_notebook_names_resolve_like_the_readme_says(tmp_path):
    course = course_notebooks()
    assert [p.name[:3] for p in course] == [f"0{i}_" for i in range(1, 8)]
    assert resolve(["01"]) == [course[0]]
    assert resolve([course[3].stem]) == [course[3]]
    assert resolve([str(course[6])]) == [course[6]]
    assert resolve([]) == course
    with pytest.raises(NotebookRunError, match="course notebooks: 01_architecture"):
        resolve(["99"])
    with pytest.raises(NotebookRunError, match="no notebook at"):
        resolve([str(tmp_path / "missing.ipynb")])
    assert main(["run", "nope"]) == 2
