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


def _oldest_constraints():
    """The script `make test-oldest` installs from (it lives in .ci/, outside the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "oldest_constraints", REPO_ROOT / ".ci" / "oldest_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oldest_constraints_are_exactly_the_declared_lower_bounds():
    script = _oldest_constraints()
    pins = script.oldest_pins()
    declared = {name: bound.removeprefix(">=") for name, bound in _pyproject_requirements().items()}
    assert pins == declared, "make test-oldest would not test pyproject.toml's lower bounds"
    conda = {name: bound.removeprefix(">=") for name, bound in _environment_requirements().items()}
    assert conda == pins, "environment.yml's bounds differ from what make test-oldest tests"
    lines = script.constraints_text(pins).splitlines()
    assert lines == [f"{name}=={version}" for name, version in declared.items()]
    assert "torch==" in script.constraints_text(pins) and "numpy==" in script.constraints_text(pins)


@pytest.mark.parametrize("requirement", ['"torch==2.2"', '"torch>=2.2,<3"', '"torch"',
                                         '"torch>=2.2; python_version<\'3.12\'"'])
def test_oldest_constraints_refuse_anything_but_a_plain_lower_bound(tmp_path, requirement):
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "x"\ndependencies = ["numpy>=1.24", {requirement}]\n', encoding="utf-8")
    with pytest.raises(ValueError, match="not a plain lower bound"):
        _oldest_constraints().oldest_pins(tmp_path / "pyproject.toml")


def test_installed_versions_meet_the_bounds_and_equal_them_under_test_oldest():
    """Every run checks the environment against pyproject.toml's bounds; under `make test-oldest`
    (VGG_OLDEST=1) each declared package must be installed at exactly its lower bound, so the
    oldest-versions run cannot silently test something newer."""
    import importlib.metadata
    import os

    from packaging.version import Version

    oldest = os.environ.get("VGG_OLDEST") == "1"
    for name, version in _oldest_constraints().oldest_pins().items():
        installed = Version(importlib.metadata.version(name))
        if oldest:
            assert installed == Version(version), f"{name} {installed} is not its lower bound {version}"
        else:
            assert installed >= Version(version), f"{name} {installed} is below its bound {version}"


def test_ci_tests_the_oldest_versions_beside_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test\n" in ci, ".ci/run does not run the README's test command"
    assert "make oldest-env" in ci and "oldest-tests" in ci, ".ci/run does not test the lower bounds"
    assert ci.index("make oldest-env") < ci.index("oldest-tests") < ci.index("make test\n"), \
        "the oldest venv is made first, its tests start beside make test"
    assert 'wait "$oldest"' in ci and 'exit "$rc"' in ci, "a failure of the oldest-version tests must fail CI"
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")

    def recipe(target: str) -> str:
        return makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]

    assert recipe("test-oldest").strip() == "oldest-env oldest-tests"
    assert ".ci/oldest_constraints.py --venv" in recipe("oldest-env")
    assert "VGG_OLDEST=1" in recipe("oldest-tests") and "$(OLDEST_TESTS)" in recipe("oldest-tests")
    selected = makefile.split("OLDEST_TESTS ?=", 1)[1].split("\nOLDEST_DESELECT", 1)[0].split()
    files = [t for t in selected if t.startswith("tests/")]
    assert files and all((REPO_ROOT / t).is_file() for t in files), "OLDEST_TESTS names a missing file"
