"""The ablation grid: planning, the command line's CSV (provenance and rows), resuming, plots."""

from __future__ import annotations

import subprocess
import sys

import matplotlib
import pandas as pd
import pytest
import torch

from vgg_utils import REPO_ROOT
from vgg_utils.ablations import (
    COLUMNS,
    EXPERIMENTS,
    PAPER_TABLE3,
    PROVENANCE_COLUMNS,
    evaluate_scales,
    parse_scale,
    plan_runs,
    summarize,
)
from vgg_utils.ablations_plots import plot_experiment
from vgg_utils.experiments import load_dataset, main

matplotlib.use("Agg")


def test_parse_scale():
    assert parse_scale("40") == 40
    assert parse_scale("32-48") == (32, 48)
    assert parse_scale(36) == 36
    for bad in ("", "x", "48-32", "0", "1-2-3"):
        with pytest.raises(ValueError, match="training scale"):
            parse_scale(bad)


def test_plan_shares_runs_between_experiments():
    runs = plan_runs(list(EXPERIMENTS), default_scale="40")
    keys = [(config, scale) for config, scale, _ in runs]
    assert len(keys) == len(set(keys)) == 8  # A, A-LRN, B, C, D, E at S=40 + D at 32 and 32-48
    shared = dict(((c, s), names) for c, s, names in runs)
    assert shared[("D", "40")] == ["depth", "1x1", "jitter"]
    assert shared[("A", "40")] == ["lrn", "depth"]
    assert ("D", "32-48") in shared and ("D", "32") in shared
    # The default scale moves the architecture runs but not the jitter experiment's fixed points.
    assert ("A", "36") in [(c, s) for c, s, _ in plan_runs(["lrn", "jitter"], default_scale="36")]
    with pytest.raises(ValueError, match="unknown experiments"):
        plan_runs(["width"])
    with pytest.raises(ValueError, match="unknown experiments"):
        plan_runs([])


def test_paper_numbers_are_table_3():
    assert PAPER_TABLE3[("A", "256")] == 29.6 and PAPER_TABLE3[("A-LRN", "256")] == 29.7
    assert PAPER_TABLE3[("D", "256-512")] == 25.6 and PAPER_TABLE3[("E", "256-512")] == 25.5


def test_multi_scale_averages_posteriors():
    class Fixed(torch.nn.Module):
        """Predicts class 0 at 32 px and class 1 (more confidently) at other sizes."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            big = x.shape[-1] > 32
            logits = torch.tensor([0.0, 3.0]) if big else torch.tensor([1.0, 0.0])
            return logits.expand(len(x), 2) + self.w

    from vgg_utils import ImageTensors, PaperAugment

    data = ImageTensors(torch.zeros(4, 3, 32, 32), torch.tensor([1, 1, 1, 1]), ["a", "b"])
    acc = evaluate_scales(Fixed(), PaperAugment(32), data, [32, 40])
    assert acc == {"32": 0.0, "40": 1.0, "multi": 1.0}


@pytest.fixture(scope="module")
def quick_csv(tmp_path_factory):
    """The smoke run of the command line, as the README documents it (a subprocess)."""
    out = tmp_path_factory.mktemp("results") / "quick.csv"
    cmd = [sys.executable, "-m", "vgg_utils.experiments", "--quick", "--experiments", "lrn", "jitter",
           "--seeds", "0", "1", "--n-train", "128", "--n-test", "64", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote 40 rows to {out}" in done.stdout
    return out


def test_quick_run_writes_provenance_and_rows(quick_csv):
    df = pd.read_csv(quick_csv)
    assert list(df.columns) == COLUMNS
    assert df[PROVENANCE_COLUMNS].notna().all().all()
    for column in PROVENANCE_COLUMNS:  # one grid, one provenance
        assert df[column].nunique() == 1, column
    row = df.iloc[0]
    assert row["command"].startswith("python -m vgg_utils.experiments --quick")
    assert row["torch_version"] == torch.__version__
    assert row["dataset"].startswith("shapes") and row["size_label"] == "smoke test"
    assert row["git_commit"] == "unknown" or len(row["git_commit"]) == 40
    assert row["wall_time_s"] > 0 and row["threads"] >= 1
    # 5 runs (A, A-LRN at S=40; D at S=32, 40, 32-48) x 2 seeds x (3 test scales + multi-scale).
    runs = df.groupby(["config", "train_scale", "seed"]).size()
    assert len(runs) == 10 and (runs == 4).all()
    assert sorted(df["test_scale"].astype(str).unique()) == ["32", "40", "48", "multi"]
    assert set(df["train_scale"].astype(str)) == {"32", "40", "32-48"}
    assert set(df.loc[df["config"] == "A-LRN", "experiments"]) == {"lrn"}
    assert set(df.loc[(df["config"] == "D") & (df["train_scale"].astype(str) == "40"), "experiments"]) == {"jitter"}
    assert df["test_acc"].between(0, 1).all()
    assert ((df["test_error"] - 100 * (1 - df["test_acc"])).abs() < 1e-3).all()
    assert (df["n_train"] == 128).all() and (df["epochs"] == 1).all() and (df["width"] == 0.125).all()


def test_summary_and_plots_read_the_csv(quick_csv):
    df = pd.read_csv(quick_csv)
    summary = summarize(df, test_scale="multi")
    assert len(summary) == 5 and (summary["seeds"] == 2).all()
    assert (summary["error_min"] <= summary["error_mean"]).all()
    for experiment in ("lrn", "jitter"):
        fig = plot_experiment(df, experiment)
        assert fig.axes[0].get_ylabel() == "test error (%)"
    with pytest.raises(ValueError, match="no runs of experiment 'depth'"):
        plot_experiment(df, "depth")


def test_jitter_plot_keeps_multi_scale_off_the_q_axis():
    import matplotlib.pyplot as plt

    rows = [
        {"experiments": "jitter", "config": "D", "seed": seed, "train_scale": s, "test_scale": q,
         "test_error": 30.0 + i + seed}
        for s in ("32", "40", "32-48") for seed in (0, 1) for i, q in enumerate(("48", "32", "40", "multi"))
    ]  # fmt: skip
    try:
        ax = plot_experiment(pd.DataFrame(rows), "jitter").axes[0]
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels[:3] == ["Q=32", "Q=40", "Q=48"] and labels[3].startswith("multi-scale")
        lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
        assert len(lines) == 3  # one line per training scale, over the three Qs only
        for line in lines:
            assert list(line.get_xdata()) == [0, 1, 2]
            assert list(line.get_ydata()) == [31.5, 32.5, 30.5]  # Q=32, 40, 48: mean over two seeds
        assert ax.get_xticks()[3] > 3  # multi-scale stands apart, past the dotted divider
    finally:
        plt.close("all")


def test_resume_skips_finished_runs(quick_csv, tmp_path, capsys):
    out = tmp_path / "resumed.csv"
    out.write_text(quick_csv.read_text())
    table = main(["--quick", "--experiments", "lrn", "jitter", "--seeds", "0", "1", "--n-train", "128",
                  "--n-test", "64", "--out", str(out), "--resume"])  # fmt: skip
    assert "already in the CSV, skipped" in capsys.readouterr().out
    assert len(table) == 40
    before = pd.read_csv(quick_csv)
    assert table["test_acc"].round(6).tolist() == before["test_acc"].round(6).tolist()


def test_bad_arguments():
    with pytest.raises(SystemExit):
        main(["--experiments", "width"])
    with pytest.raises(ValueError, match="dataset must be"):
        load_dataset("imagenet", 10, 10)


def test_compare_with_paper_pairs_our_runs_with_tables_3_and_4(quick_csv):
    from vgg_utils.ablations import compare_with_paper

    table = compare_with_paper(pd.read_csv(quick_csv))
    # The quick grid has A, A-LRN, D at S=40, 32 and 32-48: 2 + 3 single-scale + 3 multi-scale rows.
    assert len(table) == 8
    row = table[(table["config"] == "A-LRN")].iloc[0]
    assert row["paper top-1 error %"] == 29.7 and row["paper table"] == 3 and row["seeds"] == 2
    jitter = table[(table["train S"] == "32-48") & (table["test Q"] == "multi")].iloc[0]
    assert jitter["paper top-1 error %"] == 24.8 and jitter["paper table"] == 4
    assert (table["min"] <= table["error % (mean)"]).all()
