"""The GPU suite (benchmarks/gpu_suite.py): its smoke run writes every file with its columns and
provenance; a part that runs past its budget, or gives up on it, is marked partial; the grid
scales down to fit and says so. (The numbers themselves need a GPU: none are checked here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from vgg_utils import REPO_ROOT, ShapesDataset
from vgg_utils.ablations import COLUMNS

BENCH = REPO_ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_parts  # noqa: E402
import gpu_suite  # noqa: E402

FILES = ["time_to_accuracy.csv", "loader_ratio.csv", "ablations_gpu.csv", "summary.json", "summary.md", "suite.log"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run of the whole suite, as CI runs it (tiny sizes, CPU, its own processes)."""
    out = tmp_path_factory.mktemp("gpu_suite")
    env = {**os.environ, "VGG_DEVICE": "cpu"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_suite.py"), "--smoke", "--out", str(out), "--commit", "abc123"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _check_provenance(table: pd.DataFrame, columns: dict[str, str]) -> None:
    for column, expected in columns.items():
        assert table[column].notna().all(), f"{column} is missing in some rows"
        assert (table[column].astype(str) == expected).all(), f"{column}: {table[column].unique()} != {expected}"


def test_smoke_run_writes_every_file_and_nothing_else(smoke):
    assert sorted(p.name for p in smoke.iterdir()) == sorted(FILES)
    assert len(FILES) <= 8  # the device tool brings back at most 8 files from $OUT


def test_loader_ratio_csv(smoke):
    table = pd.read_csv(smoke / "loader_ratio.csv", dtype={"round": str})
    assert list(table.columns) == gpu_parts.RATIO_COLUMNS
    assert list(table["round"]) == ["1", "2", "median"]
    rounds = table[table["round"] != "median"]
    assert (rounds["ratio"] - rounds["course_img_s"] / rounds["textbook_img_s"]).abs().max() < 1e-3
    median = table[table["round"] == "median"].iloc[0]
    assert median["course_img_s"] == pytest.approx(rounds["course_img_s"].median(), rel=1e-4)
    assert (table["workers"] == 2).all()
    _check_provenance(table, {"git_commit": "abc123", "torch_version": torch.__version__, "status": "complete"})
    assert table["suite_command"].str.contains("--smoke").all() and table["device"].str.startswith("cpu").all()
    assert table["size_label"].str.contains("not a result").all()


def test_time_to_accuracy_csv(smoke):
    table = pd.read_csv(smoke / "time_to_accuracy.csv")
    assert list(table.columns) == gpu_parts.TTA_COLUMNS
    assert list(table["run"]) == ["main", "stretch"]
    assert list(table["target_acc"]) == [0.93, 0.94] and (table["time_limit_s"] > 0).all()
    assert (table["wall_s"] >= table["train_s"]).all() and (table["warmup_s"] > 0).all() and (table["load_s"] > 0).all()
    assert table["epochs_rule"].str.startswith("auto: fits").all()
    assert table["tricks"].str.contains("test-time flip averaging").all()
    assert table["met"].tolist() == list((table["test_acc"] >= table["target_acc"]) & (table["wall_s"] <= table["time_limit_s"]))
    _check_provenance(table, {"git_commit": "abc123", "status": "complete", "compile": "off"})


def test_ablations_csv_has_the_cpu_grids_columns_plus_provenance(smoke):
    table = pd.read_csv(smoke / "ablations_gpu.csv", dtype={"train_scale": str, "test_scale": str})
    committed = pd.read_csv(REPO_ROOT / "data/results/ablations_cifar10.csv", nrows=1)
    assert list(table.columns[: len(committed.columns)]) == list(committed.columns) == COLUMNS
    assert list(table.columns) == gpu_parts.GRID_COLUMNS
    plan = gpu_suite.SMOKE_SIZES["grid"]
    runs = table.groupby(["config", "train_scale", "seed"]).ngroups
    assert runs == 2 * len(plan["seeds"])  # A and A-LRN, each seed
    assert len(table) == runs * (len(plan["test_scales"]) + 1)  # + multi-scale
    _check_provenance(table, {"git_commit": "abc123", "status": "complete", "plan_note": "as requested"})
    assert table["command"].str.startswith("python benchmarks/gpu_suite.py --smoke").all()


def test_summary_says_smoke_numbers_are_not_results(smoke):
    summary = json.loads((smoke / "summary.json").read_text())
    assert set(summary["targets"]) == {"time_to_accuracy", "time_to_accuracy_stretch", "loader_ratio", "ablation_grid"}
    for result in summary["targets"].values():
        assert result["measured"] and result["met"] is None and "not a result" in result["note_smoke"]
    assert {p: s["status"] for p, s in summary["parts"].items()} == dict.fromkeys(gpu_suite.PARTS, "complete")
    suite = summary["suite"]
    assert suite["git_commit"] == "abc123" and suite["torch_version"] == torch.__version__ and suite["smoke"]
    md = (smoke / "summary.md").read_text()
    assert md.count("not evaluated (smoke)") == 4 and "abc123" in md
    assert "torch.compile" not in summary["targets"]["time_to_accuracy"]["tricks"]


# --- budgets -------------------------------------------------------------------------------------


def _plan(tmp_path) -> dict:
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    prov = {k: "x" for k in gpu_parts.PROVENANCE} | {"precision": "fp32", "suite_command": "test"}
    return {"out": str(out), "work": str(work), "provenance": prov, "load_s": 0.1}


def test_a_part_stopped_at_its_budget_is_marked_partial_and_keeps_its_rows(tmp_path):
    plan = _plan(tmp_path)
    rows = [{"round": 1, "course_img_s": 5.0, "status": gpu_parts.RUNNING}]
    gpu_parts.write_csv(rows, gpu_parts.RATIO_COLUMNS, tmp_path / "out/loader_ratio.csv")
    child = [sys.executable, "-c", "import time; print('measuring', flush=True); time.sleep(120)"]
    lines = []
    tic = time.monotonic()
    code, killed, tail = gpu_suite.run_child(child, 2.0, lines.append)
    assert killed and time.monotonic() - tic < 60 and "measuring" in tail and lines == ["measuring"]
    state = gpu_suite.collect(plan, "ratio", code, killed, tail, budget=2.0, wall=2.0)
    assert state["status"].startswith("partial: stopped at its budget") and state["rows_kept"] == 1
    table = pd.read_csv(tmp_path / "out/loader_ratio.csv")
    assert table["status"].tolist() == [state["status"]] and table["course_img_s"].tolist() == [5.0]


def test_a_stopped_grid_keeps_the_runs_it_finished(tmp_path):
    plan = _plan(tmp_path)
    raw = pd.DataFrame([dict.fromkeys(COLUMNS, 1) | {"config": "A", "train_scale": "40", "test_scale": "40"}])
    raw.to_csv(tmp_path / "work/grid_raw.csv", index=False)
    (tmp_path / "work/grid_meta.json").write_text(json.dumps({"requested_epochs": 30, "plan_note": "as requested"}))
    state = gpu_suite.collect(plan, "grid", None, True, "", budget=5.0, wall=20.0)
    table = pd.read_csv(tmp_path / "out/ablations_gpu.csv")
    assert list(table.columns) == gpu_parts.GRID_COLUMNS and len(table) == 1 == state["rows_kept"]
    assert table["status"].iloc[0].startswith("partial: stopped at its budget") and table["requested_epochs"].iloc[0] == 30


def test_a_crashed_part_is_marked_failed_with_its_last_words(tmp_path):
    plan = _plan(tmp_path)
    code, killed, tail = gpu_suite.run_child([sys.executable, "-c", "raise SystemExit('out of memory')"], 60, print)
    state = gpu_suite.collect(plan, "tta", code, killed, tail, budget=60.0, wall=1.0)
    assert not killed and state["status"] == "failed: exit code 1: out of memory"


@pytest.fixture()
def tiny():
    torch.set_num_threads(1)
    kwargs = dict(image_size=32, num_classes=4, dtype=torch.uint8)
    return ShapesDataset(64, **kwargs), ShapesDataset(32, split="test", **kwargs)


def test_time_to_accuracy_gives_up_what_its_budget_cannot_hold(tmp_path, tiny):
    """A deadline already passed: the warm-up runs, both timed runs are skipped, status partial."""
    plan = _plan(tmp_path) | {"tta": {
        "config": "A", "width": 0.0625, "head": "compact", "max_epochs": 1, "warm_steps": 1,
        "runs": [{"name": "main", "target_acc": 0.9, "time_limit_s": 60.0},
                 {"name": "stretch", "target_acc": 0.9, "time_limit_s": 30.0}],
        "recipe": {"batch_size": 16, "eval_batch_size": 16, "compile": False}}}  # fmt: skip
    gpu_parts.tta_part(plan, *tiny, torch.device("cpu"), time.perf_counter(), 0.0, print)
    report = json.loads((tmp_path / "work/tta.json").read_text())
    assert report["status"].startswith("partial: main skipped") and "stretch skipped" in report["status"]
    assert report["runs"] == [] and len(pd.read_csv(tmp_path / "out/time_to_accuracy.csv")) == 0


def test_loader_ratio_stops_after_the_round_its_budget_allows(tmp_path, tiny):
    plan = _plan(tmp_path) | {"ratio": {"config": "A", "width": 0.0625, "batch_size": 16, "n_images": 64,
                                        "rounds": 3, "workers": 0}}  # fmt: skip
    gpu_parts.ratio_part(plan, *tiny, torch.device("cpu"), time.perf_counter(), 0.0, print)
    report = json.loads((tmp_path / "work/ratio.json").read_text())
    assert report["status"].startswith("partial: after 1 of 3 rounds: the next") and report["rounds"] == 1
    table = pd.read_csv(tmp_path / "out/loader_ratio.csv", dtype={"round": str})
    assert list(table["round"]) == ["1", "median"] and (table["status"] == report["status"]).all()


def test_grid_plan_scales_down_and_says_so():
    def seed_seconds(epochs: int) -> float:
        return 10 * epochs + 5

    assert gpu_parts.plan_grid(seed_seconds, 1000, 30, 3, [0, 1, 2]) == (30, [0, 1, 2], "")
    epochs, seeds, note = gpu_parts.plan_grid(seed_seconds, 500, 30, 3, [0, 1, 2])
    assert (epochs, seeds) == (16, [0, 1, 2]) and note.startswith("scaled down: 16 epochs instead of 30")
    assert 3 * seed_seconds(epochs) <= 500 < 3 * seed_seconds(epochs + 1)
    epochs, seeds, note = gpu_parts.plan_grid(seed_seconds, 80, 30, 3, [0, 1, 2])
    assert (epochs, seeds) == (3, [0, 1]) and "2 of 3 seeds" in note
    assert gpu_parts.plan_grid(seed_seconds, 1, 30, 3, [0, 1, 2])[:2] == (3, [0])  # at least one seed


def test_budget_overrides_are_checked():
    args = gpu_suite._parser().parse_args(["--smoke", "--budget", "grid=12", "--no-compile", "--seeds", "4"])
    sizes = gpu_suite.resolve_sizes(args)
    assert sizes["budgets"]["grid"] == 12 and sizes["grid"]["seeds"] == [4]
    assert gpu_suite.SMOKE_SIZES["budgets"]["grid"] != 12  # the defaults are not mutated
    with pytest.raises(SystemExit, match="PART=SECONDS"):
        gpu_suite.resolve_sizes(gpu_suite._parser().parse_args(["--budget", "gird=12"]))


def test_the_gpu_run_refuses_a_cpu(tmp_path, capsys):
    assert gpu_suite.main(["--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err and not list(tmp_path.iterdir())
