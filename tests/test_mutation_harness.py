"""The mutation harness's own bookkeeping (mutation/run.py, equivalent.md; issue 14).

mutmut itself runs outside CI (``make mutation``); these checks keep its configuration honest:
every equivalent row names a module the harness mutates, once, and every test file it selects
exists, so a renamed test file cannot silently drop a module's tests from the run.
"""

from __future__ import annotations

import importlib.util
import random
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("mutation_run", ROOT / "mutation" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_equivalent_row_is_read_once_and_names_a_mutated_module(run):
    text = (ROOT / "mutation" / "equivalent.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `vgg_utils.")]
    names = [re.match(r"\| `([^`]+)`", line).group(1) for line in rows]
    assert len(names) == len(set(names)), "a mutant is listed twice in equivalent.md"
    read = run.equivalents()
    assert sum(len(v) for v in read.values()) == len(rows), "a row of equivalent.md does not parse"
    assert set(read) <= set(run.MODULES), f"rows for modules run.py never mutates: {set(read) - set(run.MODULES)}"
    for module, mutants in read.items():
        for name, reason in mutants.items():
            assert re.fullmatch(rf"vgg_utils\.{module}\.x\S*__mutmut_\d+", name), name
            assert len(reason) > 20, f"{name}: the reason must say why no test can tell"


def test_every_selected_test_exists_and_every_module_is_in_the_package(run):
    for module, selection in run.MODULES.items():
        assert (ROOT / "vgg_utils" / f"{module}.py").is_file(), module
        for test in selection:
            path, _, name = test.partition("::")
            assert (ROOT / path).is_file(), f"{module}: {path} does not exist"
            if name:
                assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), test


def test_a_smaller_sample_is_the_start_of_a_larger_one():
    """run.py's docstring promises that seed 0's sample of 30 is the first 30 of its sample of 60,
    so survivors reviewed at 60 cover a run at 30 (mutant counts span 230-1,050 per module)."""
    for n in (233, 283, 517, 1050):
        names = [f"m{i}" for i in range(n)]
        assert random.Random(0).sample(names, 60)[:30] == random.Random(0).sample(names, 30)


def test_every_review_bug_still_finds_its_code_and_its_tests():
    """mutation/weakness_bugs.py puts each of issue 14's bugs back by replacing a text that must
    occur exactly once; code moved since (e.g. training.py split into training_checkpoints.py)
    would make the script stop, so CI checks the texts and the named tests are still there."""
    spec = importlib.util.spec_from_file_location("weakness_bugs", ROOT / "mutation" / "weakness_bugs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert len(module.BUGS) >= 26
    for name, path, texts, _replacements, tests in module.BUGS:
        source = (ROOT / path).read_text()
        for text in texts if isinstance(texts, tuple) else (texts,):
            assert source.count(text) == 1, f"{name}: {text!r} occurs {source.count(text)} times in {path}"
        for test in tests:
            file, _, function = test.partition("::")
            assert re.search(rf"^def {re.escape(function.split('[')[0])}\(", (ROOT / file).read_text(), re.M), test
