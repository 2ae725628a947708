"""The workshop's worst case, for real: the whole course built by ``vgg-course run --fast
--offline --html`` with no network, no CIFAR-10 (``VGG_CIFAR10_DIR`` unset, an empty cache) and
no ImageNet weights. Every notebook must run to the end and say which fallback it used, once per
source. (This replaces a separate CI step that built the course as HTML; it takes a few minutes.)

Also: the committed record of default-size runs keeps every notebook under 4 GB of memory."""

from __future__ import annotations

import csv
import re
import shutil

import nbformat
import pytest

from vgg_utils.cli import main
from vgg_utils.notebook_runner import course_notebooks
from vgg_utils.runtime import REPO_ROOT

#: How a notebook says it fell back, per source (matched line by line in its printed output).
SOURCES = {
    "ImageNet weights": r"(pretrained|ImageNet) weights\b.*\b(unavailable|not cached)",
    "CIFAR-10": r"CIFAR-10\b.*\b(unavailable|not cached)",
    "Oxford Flowers": r"(Flowers\b.*\b(unavailable|not cached)|online section skipped)",
}
#: Which sources each notebook uses, so must announce when it falls back (from the notebooks' code).
EXPECTED = {
    "01": {"ImageNet weights"},
    "02": {"ImageNet weights"},
    "03": {"ImageNet weights"},
    "04": {"CIFAR-10"},
    "05": {"ImageNet weights", "CIFAR-10"},
    "06": {"Oxford Flowers"},
    "07": {"ImageNet weights", "CIFAR-10"},
}
RECORD = REPO_ROOT / "data" / "results" / "notebook_runs.csv"
MAX_PEAK_MB = 4000  # 4 GB, the limit for the default size on a CPU


def printed_lines(nb) -> list[str]:
    lines = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                lines += output.get("text", "").splitlines()
            elif "data" in output:
                lines += output["data"].get("text/plain", "").splitlines()
    return lines


def test_the_whole_course_builds_offline_with_nothing_downloaded(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"  # the shipped data folder (checkpoints, tables) without any download
    shutil.copytree(REPO_ROOT / "data", data, ignore=shutil.ignore_patterns("cache"))
    monkeypatch.setenv("VGG_DATA_DIR", str(data))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("VGG_CIFAR10_DIR", raising=False)
    html = tmp_path / "html"
    code = main(["run", "--fast", "--offline", "--html", str(html), "--timeout", "900"])
    out = capsys.readouterr().out
    assert code == 0, out
    notebooks = course_notebooks()
    assert len(notebooks) == 7
    index = (html / "index.html").read_text()
    assert index.count("<tr><td>") == 7
    problems = []
    for path in notebooks:
        assert f'href="{path.stem}.html"' in index and (html / f"{path.stem}.html").stat().st_size > 10_000
        # every notebook draws figures; they must reach the page even where MPLBACKEND=Agg (CI)
        assert "data:image/png;base64," in (html / f"{path.stem}.html").read_text(), f"{path.name}: no figure"
        executed = nbformat.read(html / f"{path.stem}.ipynb", as_version=4)
        errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: {errors[0].get('ename')}"
        lines = printed_lines(executed)
        for source, pattern in SOURCES.items():
            said = [line for line in lines if re.search(pattern, line)]
            expected = source in EXPECTED[path.stem[:2]]
            if len(said) > 1 or (expected and not said) or (said and not expected):
                problems.append(f"{path.name}: {source}: {len(said)} fallback line(s), expected "
                                f"{'one' if expected else 'none'}: {said}")  # fmt: skip
    assert not problems, "\n".join(problems)


def test_the_recorded_default_size_runs_stay_under_4_gb():
    if not RECORD.is_file():
        pytest.skip(f"{RECORD.relative_to(REPO_ROOT)} is not recorded yet: it comes from "
                    "`vgg-course run --record data/results/notebook_runs.csv` in the default size")  # fmt: skip
    latest = {}
    for row in csv.DictReader(RECORD.open()):
        if row["size"] == "default":
            latest[row["notebook"]] = row  # later rows replace earlier runs of the same notebook
    assert sorted(latest) == [p.stem for p in course_notebooks()], "every notebook needs a default-size row"
    for name, row in latest.items():
        assert row["status"] == "ok", f"{name}: {row['status']}"
        assert row["peak_mb"], f"{name}: peak memory not measured on {row['device']}"
        assert float(row["peak_mb"]) < MAX_PEAK_MB, f"{name}: peak {row['peak_mb']} MB"
