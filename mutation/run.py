"""Mutation testing of the modules that decide what a learner sees (``make mutation``).

    python mutation/run.py [module ...] [--sample 30] [--seed 0] [--max-children 2] [--uncommitted]

For each module, mutmut (PyPI) puts one small bug at a time into a copy of the package (a ``<``
turned into ``<=``, a constant changed, a call dropped) and runs that module's fast tests
(:data:`MODULES`); a mutant no test notices *survives*. Each module runs in its own scratch
folder ``mutation/work/<module>/`` (git-ignored), so the checkout is never touched. The score per
module (killed / tested, equivalent mutants from ``equivalent.md`` set apart) goes to
``mutation/scores.csv`` with provenance, and each survivor's diff to
``mutation/work/<module>/survivors.txt``. A module that is not committed yet is reported as
"not yet run". ``--sample N`` (default 30) tests a seeded random sample of N mutants per module
(every module has hundreds; all of them take hours on two cores): the score is then an estimate,
about +-6 points at N = 30 (+-4 at 60), and ``--sample 0`` tests them all. ``--seed`` draws
another sample (the first N of a seed's sample of 60 are its sample of 30). Run it outside CI;
README "Mutation scores" has the measured times.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: Each module and the tests that cover it fast (node ids or files). Slow learning tests and the
#: full-size torchvision comparisons are left out: they take minutes per mutant.
MODULES: dict[str, list[str]] = {
    "augment": ["tests/test_augment.py", "tests/test_properties.py::test_augmentation_invariants"],
    "models": [
        "tests/test_models.py", "tests/test_properties.py::test_build_vgg_counts_shapes_and_macs_follow_table_1",
        "tests/test_timeouts.py",
    ],
    "training": ["tests/test_training.py", "tests/test_real_world_inputs.py"],
    "training_checkpoints": ["tests/test_training.py"],
    "receptive": [
        "tests/test_receptive.py",
        "tests/test_properties.py::test_receptive_field_table_matches_the_gradient_of_random_small_nets",
    ],
    "receptive_measured": ["tests/test_receptive.py", "tests/test_properties.py::test_receptive_field_table_matches_the_gradient_of_random_small_nets"],
    "profiling": ["tests/test_profiling.py", "tests/test_properties.py::test_build_vgg_counts_shapes_and_macs_follow_table_1"],
    "data": ["tests/test_data.py", "tests/test_real_world_inputs.py", "tests/test_timeouts.py"],
    "image_files": ["tests/test_real_world_inputs.py"],
    # Notebooks 05-07: evaluation and explanation code.
    "dense": ["tests/test_dense.py"],
    "dense_eval": ["tests/test_dense.py"],
    "scenes": ["tests/test_scenes.py"],
    "transfer": ["tests/test_transfer.py"],
    "transfer_data": ["tests/test_transfer_data.py", "tests/test_transfer.py"],
    "transferability": ["tests/test_transferability.py"],
    "interpret": ["tests/test_interpret.py"],
    "explain_metrics": ["tests/test_explain_metrics.py"],
}  # fmt: skip

#: Deselected everywhere (pytest -k): minutes per run, or full-size 550 MB models; and the
#: notebooks' exercise checks, which test a notebook's cells (nbval runs them), not the module.
SLOW = ("not learns and not torchvision_weights_load and not linear_classifier_on_raw_pixels"
        " and not notebook_exercise_checks")

#: Lines not mutated: figure styling (sizes, fonts, colours, transparency, line widths). Tests
#: check what a figure says (titles, labels, lines drawn), not how many inches it is.
STYLE = ", ".join(f"'{p}'" for p in (r"figsize=", r"fontsize=", r"alpha=", r"color=", r"\bms=", r"\blw=", r"cmap="))

#: mutmut's exit codes (mutmut.stats.status_by_exit_code), grouped for the score.
KILLED, SURVIVED, TIMEOUT, NO_TESTS = {1, 3}, {0}, {36, -24, 24, 152, 255}, {5, 33}


def committed(module: str) -> bool:
    path = f"vgg_utils/{module}.py"
    done = subprocess.run(["git", "log", "--oneline", "-1", "--", path], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", path], cwd=REPO, capture_output=True, text=True)
    return bool(done.stdout.strip()) and (REPO / path).is_file() and not dirty.stdout.startswith("??")


def equivalents() -> dict[str, dict[str, str]]:
    """``{module: {mutant name: reason}}`` from the table in ``equivalent.md``."""
    found: dict[str, dict[str, str]] = {}
    for line in (HERE / "equivalent.md").read_text().splitlines():
        match = re.match(r"\|\s*`(vgg_utils\.(\w+)\.[^`]+)`\s*\|\s*(.+?)\s*\|$", line)
        if match:
            found.setdefault(match.group(2), {})[match.group(1)] = match.group(3)
    return found


def prepare(module: str, work: Path) -> None:
    """A scratch copy: the package, the module's tests, conftest, and a config for both tools."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "tests").mkdir(parents=True)
    shutil.copytree(REPO / "vgg_utils", work / "vgg_utils", ignore=shutil.ignore_patterns("__pycache__"))
    for test in {t.split("::")[0] for t in MODULES[module]}:
        shutil.copy2(REPO / test, work / test)
    shutil.copy2(REPO / "conftest.py", work / "conftest.py")
    args = ", ".join(f'"{a}"' for a in ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:nbval", "-k", SLOW])
    tests = ", ".join(f'"{t}"' for t in MODULES[module])
    (work / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'testpaths = ["tests"]\n'
        "[tool.mutmut]\n"
        'source_paths = ["vgg_utils"]\n'
        f'only_mutate = ["vgg_utils/{module}.py"]\n'
        f"pytest_add_cli_args = [{args}]\n"
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
        f"do_not_mutate_patterns = [{STYLE}]\n"
        'process_isolation = "forkserver"\n'  # torch's thread pools are not fork-safe
        "use_git_change_detection = false\n"
        'also_copy = ["conftest.py"]\n'  # the shared fixtures (one_thread) live there
        "timeout_multiplier = 5.0\n"
        "timeout_constant = 10.0\n"
    )


#: mutmut's own first steps, without running anything: copy, mutate, list (mutmut >= 3.8).
GENERATE = (
    "import os, mutmut.__main__ as m; os.makedirs('mutants', exist_ok=True); "
    "m.set_mutant_under_test('mutant_generation'); m.copy_src_dir(); m.copy_also_copy_files(); "
    "m.setup_source_paths(); m.store_lines_covered_by_tests(); m.create_mutants(1)"
)


#: mutmut's stats step alone: run the selection once, recording which tests call which function.
STATS = (
    "import mutmut.__main__ as m; m.set_mutant_under_test(''); "
    "m.collect_or_load_stats(m.get_mutant_runner(1), apply_config_invalidation=True)"
)


def widen_stats(work: Path) -> None:
    """Give each mutated function every test of each test file that calls it.

    mutmut credits a call to the test that was running; a module-scoped fixture (one table or
    trained model shared by a file's tests) runs inside the file's *first* test only, so the tests
    that read its result were never run on the mutants and bugs they catch "survived". Widening to
    the whole file fixes that; ``-x`` still stops a killed mutant at its first failing test.
    """
    path = work / "mutants" / "mutmut-stats.json"
    stats = json.loads(path.read_text())
    by_file: dict[str, set[str]] = {}
    for test in stats["duration_by_test"]:
        by_file.setdefault(test.split("::")[0].removeprefix("mutants/"), set()).add(test.removeprefix("mutants/"))
    for function, tests in stats["tests_by_mangled_function_name"].items():
        files = {t.split("::")[0] for t in tests}
        stats["tests_by_mangled_function_name"][function] = sorted(set(tests).union(*(by_file.get(f, set()) for f in files)))
    path.write_text(json.dumps(stats, indent=4))


def clean_failure(work: Path, module: str, env: dict[str, str]) -> str:
    """Why mutmut's clean (unmutated) run failed: its fork server swallows pytest's output, so run
    the same selection once more, in the same tree, and return pytest's report."""
    shown = subprocess.run(
        [sys.executable, "-m", "pytest", "--rootdir=.", "--tb=short", "-x", "-q", "-p", "no:cacheprovider",
         "-p", "no:nbval", "-k", SLOW, *MODULES[module]],
        cwd=work / "mutants", env=env, capture_output=True, text=True,
    )  # fmt: skip
    return (shown.stdout + shown.stderr)[-3000:]


def results(work: Path, module: str) -> dict[str, int]:
    meta = json.loads((work / "mutants" / "vgg_utils" / f"{module}.py.meta").read_text())
    return {name: code for name, code in meta["exit_code_by_key"].items()}


def run_module(module: str, max_children: int, known: dict[str, str], sample: int, seed: int = 0) -> dict:
    work = HERE / "work" / module
    prepare(module, work)
    env = dict(os.environ, PYTHONPATH="", VGG_FAST="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    tic = time.perf_counter()
    log = work / "mutmut.log"
    with open(log, "w") as out:
        subprocess.run([sys.executable, "-c", GENERATE], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
        # Read-only files the tests find beside the package: the shipped course models, and the
        # notebooks whose exercise checks tests/test_dense.py and others run.
        (work / "mutants" / "data").mkdir(exist_ok=True)
        (work / "mutants" / "data" / "checkpoints").symlink_to(REPO / "data" / "checkpoints")
        (work / "mutants" / "notebooks").symlink_to(REPO / "notebooks")
        stats = subprocess.run([sys.executable, "-c", STATS], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        if stats.returncode != 0:
            raise RuntimeError(f"mutmut's first (unmutated) run of {module}'s tests failed:\n{clean_failure(work, module, env)}")
        widen_stats(work)
        names = sorted(results(work, module))
        chosen = sorted(random.Random(seed).sample(names, sample)) if 0 < sample < len(names) else []
        done = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *chosen],
                              cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    seconds = time.perf_counter() - tic
    codes = {n: c for n, c in results(work, module).items() if not chosen or n in chosen}
    if done.returncode != 0 or any(c is None for c in codes.values()):
        tail = log.read_text()[-2000:]
        if "Failed to run clean test" in tail:
            tail += "\n\nThe unmutated selection, run again with pytest:\n" + clean_failure(work, module, env)
        raise RuntimeError(f"mutmut failed on {module} (exit {done.returncode}); end of {log}:\n{tail}")
    survivors = sorted(n for n, c in codes.items() if c in SURVIVED or c in NO_TESTS)
    with open(work / "survivors.txt", "w") as out:
        for name in survivors:
            show = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, env=env,
                                  capture_output=True, text=True)  # fmt: skip
            note = f"  [equivalent: {known[name]}]" if name in known else ""
            out.write(f"{show.stdout.strip()}{note}\n\n")
    counted = {n: c for n, c in codes.items() if c in KILLED | SURVIVED | TIMEOUT | NO_TESTS}
    killed = sum(c in KILLED | TIMEOUT for c in counted.values())
    equivalent = sum(n in known for n in survivors)
    live = len(counted) - equivalent
    return {
        "module": module, "mutants": len(names), "tested": len(codes), "killed": killed,
        "survived": len(survivors) - equivalent, "equivalent": equivalent,
        "score_pct": round(100 * killed / live, 1) if live else "", "wall_time_s": round(seconds), "status": "run",
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES), help=f"default: all of {list(MODULES)}")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutants (default 2 cores)")
    parser.add_argument("--sample", type=int, default=30, help="mutants per module, seeded (0: all)")
    parser.add_argument("--seed", type=int, default=0,
                        help="which sample (default 0); another seed gives a held-out estimate of a suite "
                        "whose tests were written against seed 0's survivors")
    parser.add_argument("--uncommitted", action="store_true", help="also run modules not committed yet")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown modules {unknown}; known: {list(MODULES)}")
    known = equivalents()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    provenance = {
        "command": f"python mutation/run.py --sample {args.sample}"
        + (f" --seed {args.seed}" if args.seed else "") + " " + " ".join(args.modules),
        "git_commit": commit or "unknown", "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": f"CPU, {os.cpu_count()} cores, --max-children {args.max_children}",
        "mutmut_version": _version("mutmut"), "torch_version": _version("torch"),
    }  # fmt: skip
    rows = _previous_rows()
    for module in args.modules:
        if not (committed(module) or args.uncommitted):
            print(f"{module}: not committed yet, not yet run")
            rows[module] = {"module": module, "status": "not yet run", **provenance}
            continue
        print(f"{module}: mutating with {len(MODULES[module])} test selections ...", flush=True)
        row = run_module(module, args.max_children, known.get(module, {}), args.sample, args.seed)
        rows[module] = row | provenance
        print(f"{module}: {row['killed']} killed, {row['survived']} survived, {row['equivalent']} equivalent "
              f"of {row['tested']} tested ({row['mutants']} in all) -> {row['score_pct']}% in {row['wall_time_s']} s",
              flush=True)  # fmt: skip
        _write(rows)
    _write(rows)


COLUMNS = ["module", "status", "mutants", "tested", "killed", "survived", "equivalent", "score_pct", "wall_time_s",
           "command", "git_commit", "date", "device", "mutmut_version", "torch_version"]  # fmt: skip


def _previous_rows() -> dict[str, dict]:
    path = HERE / "scores.csv"
    if not path.is_file():
        return {}
    with open(path) as f:
        return {row["module"]: row for row in csv.DictReader(f)}


def _write(rows: dict[str, dict]) -> None:
    with open(HERE / "scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for module in MODULES:
            if module in rows:
                writer.writerow(rows[module])


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
