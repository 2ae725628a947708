"""The set-up promises: declared dependencies agree, notebooks share one setup cell and one URL."""

import json
import re
import shutil
from pathlib import Path

import pytest

from vgg_utils import REPO_ROOT
from vgg_utils.fork import repository_url, retarget

CONDA_TO_PIP = {"pytorch": "torch"}


def _pyproject_requirements() -> dict[str, str]:
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    reqs = {}
    for block in re.findall(r"(?:dependencies|dev)\s*=\s*\[(.*?)\]", text, flags=re.S):
        for item in re.findall(r'"([^"]+)"', block):
            name, bound = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", item).groups()
            reqs[name.lower()] = bound
    return reqs


def _environment_requirements() -> dict[str, str]:
    reqs = {}
    text = (REPO_ROOT / "environment.yml").read_text(encoding="utf-8")
    for line in text.split("dependencies:", 1)[1].splitlines():
        match = re.match(r"\s+- ([A-Za-z0-9_.-]+)\s*(>=[^\s#]+)?\s*$", line)
        if match and match.group(1) not in ("python", "pip"):
            name = CONDA_TO_PIP.get(match.group(1).lower(), match.group(1).lower())
            reqs[name] = match.group(2) or ""
    return reqs


def test_environment_yml_lists_the_same_packages_and_bounds_as_pyproject():
    pyproject, conda = _pyproject_requirements(), _environment_requirements()
    assert pyproject, "no requirements parsed from pyproject.toml"
    assert conda == pyproject
    for name in ["torch", "torchvision", "matplotlib", "pandas", "torchinfo", "jupyterlab",
                 "ipykernel", "tqdm", "pytest", "nbval", "ruff"]:
        assert name in pyproject, name
    assert all(bound.startswith(">=") for bound in pyproject.values()), "lower bounds only, no pins"
    assert "python=3.11" in (REPO_ROOT / "environment.yml").read_text(encoding="utf-8")


def _notebooks() -> list[Path]:
    return sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_every_notebook_starts_with_the_same_colab_setup_cell():
    notebooks = _notebooks()
    assert notebooks, "no notebooks found"
    url = repository_url()
    first_cells = {path.name: _code_cells(path)[0] for path in notebooks}
    reference = first_cells[notebooks[0].name]
    assert f'REPO_URL = "{url}"' in reference
    assert 'find_spec("vgg_utils") is None' in reference and "--no-deps" in reference
    for name, cell in first_cells.items():
        assert cell == reference, f"{name}: setup cell differs from {notebooks[0].name}"


def test_notebooks_have_title_badge_objectives_and_time():
    url_path = repository_url().removeprefix("https://github.com/")
    for path in _notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert nb["metadata"]["kernelspec"]["name"] == "python3", path.name
        head = "".join(nb["cells"][0]["source"])
        assert head.startswith("# "), f"{path.name}: no title"
        badge = f"https://colab.research.google.com/github/{url_path}/blob/main/notebooks/{path.name}"
        assert badge in head, f"{path.name}: Colab badge missing or pointing elsewhere"
        assert re.search(r"objectives", head, re.I), f"{path.name}: no objectives"
        assert re.search(r"\d+\s*min", head), f"{path.name}: no time estimate"


def test_readme_maps_every_notebook_with_a_badge_and_the_two_commands():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    url_path = repository_url().removeprefix("https://github.com/")
    for path in _notebooks():
        assert f"github/{url_path}/blob/main/notebooks/{path.name}" in readme, path.name
    assert "make lab" in readme and "make test" in readme
    assert "VGG_FAST=1" in readme and "environment.yml" in readme


def test_ci_runs_the_readme_test_command_in_fast_mode():
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci and "VGG_FAST=1" in ci


def test_fork_retargets_every_url(tmp_path):
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "notebooks", tmp_path / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    old = repository_url(tmp_path)
    changed = retarget("https://github.com/someone/my-vgg-fork.git", tmp_path)
    assert tmp_path / "pyproject.toml" in changed
    assert repository_url(tmp_path) == "https://github.com/someone/my-vgg-fork"
    for path in [tmp_path / "README.md", *(tmp_path / "notebooks").glob("*.ipynb")]:
        text = path.read_text(encoding="utf-8")
        assert old not in text and old.removeprefix("https://github.com/") not in text, path.name
    with pytest.raises(ValueError, match="expected https://github.com/<owner>/<repo>"):
        retarget("not a url", tmp_path)
