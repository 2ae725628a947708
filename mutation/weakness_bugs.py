"""Each bug of issue 14's mutation review, put into a copy of the package: the tests named for
it must fail (and pass on the unchanged copy). Writes ``mutation/weaknesses.md``.

    python mutation/weakness_bugs.py [--only NAME ...]

Nothing in the checkout changes: every bug is applied to a fresh copy under the system temp
folder, and pytest runs there (``import vgg_utils`` resolves to the copy; checked).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: (name, file, text in the file, its replacement, tests that must fail); a tuple of texts and
#: one of replacements for a bug in several places. Each text must occur exactly once, so a
#: refactoring that moves it makes this script fail loudly, not pass.
BUGS = [
    ("augment: rescale/crop step deleted", "vgg_utils/augment.py",
     "x = rescale_crop(x, self.crop_size, scales, oy, ox)", "x = x",
     ["tests/test_augment.py::test_jittered_crops_differ_in_scale_as_drawn"]),
    ("augment: PCA colour shift deleted", "vgg_utils/augment.py",
     "x = pca_color_shift(x, *self.color_pca, std=self.color_std, generator=self.generator)", "x = x",
     ["tests/test_augment.py::test_paper_augment_shifts_colours_along_the_pca_axes_by_the_stated_amount"]),
    ("augment: mean subtraction deleted", "vgg_utils/augment.py",
     "            x = subtract_mean(x, self.mean)\n        return x", "            x = x\n        return x",
     ["tests/test_augment.py::test_paper_augment_output_has_zero_mean_after_mean_subtraction"]),
    ("train: SGD without momentum and weight decay", "vgg_utils/training.py",
     "groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov", "groups, lr=lr",
     ["tests/test_training.py::test_weight_decay_shrinks_by_the_stated_factor_and_momentum_accumulates",
      "tests/test_training.py::test_momentum_changes_the_trajectory_of_the_trained_weights"]),
    ("train: ReduceLROnPlateau in the wrong mode", "vgg_utils/training.py",
     'mode="max", factor=0.1', 'mode="min", factor=0.1',
     ["tests/test_training.py::test_plateau_divides_the_rate_by_ten_when_accuracy_stops_improving"]),
    ("train: patience ignored", "vgg_utils/training.py",
     "factor=0.1, patience=patience", "factor=0.1, patience=2",
     ["tests/test_training.py::test_plateau_divides_the_rate_by_ten_when_accuracy_stops_improving"]),
    ('train: schedule="constant" steps on plateaus', "vgg_utils/training.py",
     ('    elif schedule == "plateau":\n        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(',
      '        if schedule == "plateau":\n            scheduler.step('),
     ('    elif schedule in ("plateau", "constant"):\n        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(',
      '        if schedule in ("plateau", "constant"):\n            scheduler.step('),
     ["tests/test_training.py::test_constant_schedule_keeps_the_rate_and_onecycle_warms_up_then_anneals"]),
    ("evaluate: transform= ignored", "vgg_utils/training.py",
     "    transform = transform or to_float\n    flags = training_flags", "    transform = to_float\n    flags = training_flags",
     ["tests/test_training.py::test_evaluate_applies_the_given_transform"]),
    ("init: convs left at PyTorch's default", "vgg_utils/models.py",
     'nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")', "m.reset_parameters()",
     ["tests/test_models.py::test_init_schemes_give_the_stated_distributions"]),
    ('init: "glorot" normal instead of uniform', "vgg_utils/models.py",
     "nn.init.xavier_uniform_(m.weight)", "nn.init.xavier_normal_(m.weight)",
     ["tests/test_models.py::test_init_schemes_give_the_stated_distributions"]),
    ("load_cifar10: waits 300 s instead of its timeout", "vgg_utils/data.py",
     "_reachable(CIFAR10_URL, timeout)", "_reachable(CIFAR10_URL, 300)",
     ["tests/test_timeouts.py::test_cifar10_gives_the_offline_error_within_its_timeout"]),
    ("load_pretrained: waits 300 s instead of its timeout", "vgg_utils/models.py",
     "_reachable(weights.url, timeout)", "_reachable(weights.url, 300)",
     ["tests/test_timeouts.py::test_pretrained_gives_the_offline_error_within_its_timeout"]),
    ("probe: TCP connect only (the code before this issue)", "vgg_utils/models.py",
     "            with urllib.request.urlopen(request, timeout=timeout):",
     "            with socket.create_connection((urlparse(url).hostname, urlparse(url).port or 443), timeout=timeout):",
     ["tests/test_timeouts.py::test_cifar10_gives_the_offline_error_within_its_timeout",
      "tests/test_timeouts.py::test_pretrained_gives_the_offline_error_within_its_timeout"]),
    ("download: no stall timeout", "vgg_utils/models.py",
     "    socket.setdefaulttimeout(seconds)\n", "    pass\n",
     ["tests/test_timeouts.py::test_a_download_that_stalls_gives_up_with_the_offline_error"]),
    ("checkpoints: torch.load(weights_only=False)", "vgg_utils/training_checkpoints.py",
     'torch.load(path, map_location="cpu", weights_only=True)', 'torch.load(path, map_location="cpu", weights_only=False)',
     ["tests/test_training.py::test_checkpoints_are_read_without_running_their_code"]),
    ("load_pretrained: torch.load(weights_only=False)", "vgg_utils/models.py",
     'state = torch.load(path, map_location="cpu", weights_only=True)', 'state = torch.load(path, map_location="cpu", weights_only=False)',
     ["tests/test_models.py::test_a_damaged_or_malicious_weight_file_is_refused_without_running_it"]),
    ("resume: only the schedule checked", "vgg_utils/training_checkpoints.py",
     "for k, v in settings.items() if saved.get(k) != v]", 'for k, v in settings.items() if k == "schedule" and saved.get(k) != v]',
     ["tests/test_training.py::test_resume_refuses_a_run_with_other_settings"]),
    ("multi-scale: the last scale only", "vgg_utils/ablations.py",
     "probs = probs + p", "probs = p",
     ["tests/test_grid_resume.py::test_multi_scale_averages_the_posteriors_of_every_scale"]),
    ("multi-scale: logits averaged, not posteriors", "vgg_utils/ablations.py",
     "p = predict(model, test, transform=augment.test).softmax(dim=1)", "p = predict(model, test, transform=augment.test)",
     ["tests/test_grid_resume.py::test_multi_scale_averages_the_posteriors_of_every_scale"]),
    ("run_grid: resume keyed without the seed", "vgg_utils/ablations.py",
     "if (config, scale, seed) in finished:", "if any((config, scale) == f[:2] for f in finished):",
     ["tests/test_grid_resume.py::test_an_interrupted_grid_resumes_where_it_stopped"]),
    ("run_grid: empty seeds accepted", "vgg_utils/ablations.py",
     "    if not seeds:\n", "    if False:\n",
     ["tests/test_grid_resume.py::test_run_grid_refuses_bad_arguments_before_training"]),
    ("seed_everything: Python's and NumPy's generators not seeded", "vgg_utils/runtime.py",
     "    random.seed(seed)\n    np.random.seed(seed % 2**32)\n", "",
     ["tests/test_runtime.py::test_seed_everything_repeats_random_draws"]),
    ("train: no check of the head against the classes", "vgg_utils/training.py",
     "                if step == 0:  # a shape, known without waiting for the device\n"
     '                    _check_outputs(logits.shape[-1], train_data, "train")\n', "",
     ["tests/test_real_world_inputs.py::test_train_says_what_to_do_when_the_head_does_not_fit"]),
    ("load_image_folder: EXIF orientation ignored", "vgg_utils/image_files.py",
     "upright = ImageOps.exif_transpose(file)", "upright = file",
     ["tests/test_real_world_inputs.py::test_exif_orientation_is_applied"]),
    ("load_image_folder: no draft decoding of large JPEGs", "vgg_utils/image_files.py",
     '            file.draft("RGB", (min_side, min_side))', "            pass",
     ["tests/test_real_world_inputs.py::test_large_jpegs_are_decoded_at_reduced_size"]),
    ("load_image_folder: no memory estimate", "vgg_utils/image_files.py",
     "    if free is not None and needed > free:", "    if False:",
     ["tests/test_real_world_inputs.py::test_memory_estimate_stops_a_folder_that_does_not_fit"]),
]  # fmt: skip


def copy_package(dest: Path) -> None:
    shutil.copytree(REPO / "vgg_utils", dest / "vgg_utils", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests", dest / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "conftest.py", dest / "conftest.py")
    (dest / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')


def pytest(dest: Path, tests: list[str]) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(dest))
    check = "import vgg_utils, sys; sys.exit(0 if vgg_utils.__file__.startswith(sys.argv[1]) else 9)"
    assert subprocess.run([sys.executable, "-c", check, str(dest)], cwd=dest, env=env).returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:nbval", *tests],
        cwd=dest, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names (substrings) of the bugs to try")
    args = parser.parse_args(argv)
    bugs = [b for b in BUGS if not args.only or any(o in b[0] for o in args.only)]
    rows, failures = [], 0
    with tempfile.TemporaryDirectory(prefix="vgg_bugs_") as tmp:
        clean = Path(tmp) / "clean"
        copy_package(clean)
        all_tests = sorted({t for *_, tests in bugs for t in tests})
        code, last = pytest(clean, all_tests)
        print(f"unchanged copy: {last}", flush=True)
        if code != 0:
            sys.exit(f"the named tests must pass on the unchanged package first: {last}")
        for i, (name, file, old, new, tests) in enumerate(bugs):
            dest = Path(tmp) / f"bug{i}"
            copy_package(dest)
            text = (dest / file).read_text()
            for before, after in zip(*((old, new) if isinstance(old, tuple) else ((old,), (new,))), strict=True):
                if text.count(before) != 1:
                    sys.exit(f"{name}: the text to change occurs {text.count(before)} times in {file}, not once")
                text = text.replace(before, after)
            (dest / file).write_text(text)
            tic = time.perf_counter()
            code, last = pytest(dest, tests)
            caught = code == 1
            failures += not caught
            print(f"{'caught' if caught else 'MISSED'}: {name} ({last}, {time.perf_counter() - tic:.0f} s)", flush=True)
            rows.append((name, file, tests, "fails (bug caught)" if caught else f"PASSES: {last}"))
            shutil.rmtree(dest, ignore_errors=True)
    _write(rows)
    sys.exit(1 if failures else 0)


def _write(rows) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    lines = [
        "# Issue 14's bugs, each caught by a test",
        "",
        "Each bug the mutation review found (and a few more of the same kind) is applied to a copy",
        "of the package by `mutation/weakness_bugs.py`; the tests in the last column must fail on it",
        "and pass on the unchanged copy. Regenerate with `.venv/bin/python mutation/weakness_bugs.py`.",
        f"Last run: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, on top of commit {commit or 'unknown'}.",
        "",
        "| bug | file | test that catches it | result |",
        "| --- | --- | --- | --- |",
    ]
    table = {}
    path = HERE / "weaknesses.md"
    if path.is_file():  # keep the rows of bugs not tried this time (--only)
        for line in path.read_text().splitlines():
            if line.startswith("| ") and not line.startswith(("| bug ", "| ---")):
                table[line.split(" | ")[0][2:]] = line
    for name, file, tests, result in rows:
        names = "<br>".join(f"`{t.split('::')[0].removeprefix('tests/')}::{t.split('::')[1]}`" for t in tests)
        table[name] = f"| {name} | `{file}` | {names} | {result} |"
    order = [b[0] for b in BUGS]
    lines += sorted(table.values(), key=lambda row: order.index(row.split(" | ")[0][2:]) if row.split(" | ")[0][2:] in order else len(order))
    (HERE / "weaknesses.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
