"""Layer-wise transferability (Yosinski et al. 2014): halves, block copies, the grid and its CLI."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import matplotlib
import pandas as pd
import pytest
import torch
from torch import nn

from vgg_utils import REPO_ROOT, ImageTensors, build_vgg
from vgg_utils.ablations import PROVENANCE_COLUMNS
from vgg_utils.experiments import main
from vgg_utils.shapes import ShapesDataset
from vgg_utils.transfer_plots import plot_transferability
from vgg_utils.transferability import (
    COLUMNS,
    class_halves,
    copy_blocks,
    frozen_mode,
    summarize_transferability,
)

matplotlib.use("Agg")


def test_class_halves_relabel_and_partition():
    data = ImageTensors(torch.zeros(10, 3, 4, 4), torch.arange(10) % 4, ["a", "b", "c", "d"], "toy")
    a, b = class_halves(data)
    assert a.classes == ["a", "b"] and b.classes == ["c", "d"]
    assert a.labels.tolist() == [0, 1, 0, 1, 0, 1] and b.labels.tolist() == [0, 1, 0, 1]
    a, b = class_halves(data, first=[3, 0])
    assert a.classes == ["a", "d"] and b.classes == ["b", "c"] and len(a) + len(b) == 10
    for bad in ([], [0, 1, 2, 3], [0, 0], [7]):
        with pytest.raises(ValueError, match="some but not all"):
            class_halves(data, first=bad)


def test_frozen_mode_maps_blocks_to_freeze_modes():
    assert [frozen_mode(k) for k in range(6)] == [
        "all",
        "block2",
        "block3",
        "block4",
        "block5",
        "classifier",
    ]
    with pytest.raises(ValueError, match="from 0 to 5"):
        frozen_mode(6)


def test_copy_blocks_copies_exactly_blocks_1_to_k():
    torch.manual_seed(0)
    source = build_vgg("D", 5, batch_norm=True, width=0.125, head="compact")
    torch.manual_seed(1)
    target = build_vgg("D", 5, batch_norm=True, width=0.125, head="compact")
    with torch.no_grad():
        source.features[1].running_mean.fill_(0.3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    copy_blocks(source, target, 2)
    pools = [i for i, m in enumerate(target.features) if isinstance(m, nn.MaxPool2d)]
    for key, value in target.state_dict().items():
        inside = key.startswith("features.") and int(key.split(".")[1]) < pools[1]
        reference = source.state_dict()[key] if inside else before[key]
        assert torch.equal(value, reference), key
    assert torch.all(target.features[1].running_mean == 0.3)  # BN statistics travel with the block


@pytest.fixture(scope="module")
def quick_csv(tmp_path_factory):
    """The smoke run of the command line, in a subprocess, as the module docstring documents."""
    out = tmp_path_factory.mktemp("results") / "transfer.csv"
    cmd = [sys.executable, "-m", "vgg_utils.experiments", "transferability", "--quick", "--seeds", "0", "1",
           "--variants", "BnB", "AnB+", "--threads", "1", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote 12 rows to {out}" in done.stdout
    return out


def test_quick_run_writes_rows_and_provenance(quick_csv):
    df = pd.read_csv(quick_csv)
    assert list(df.columns) == COLUMNS
    for column in PROVENANCE_COLUMNS:
        assert df[column].notna().all() and df[column].nunique() == 1, column
    row = df.iloc[0]
    assert row["command"].startswith("python -m vgg_utils.experiments transferability --quick")
    assert row["size_label"] == "smoke test" and row["torch_version"] == torch.__version__
    assert row["threads"] == 1 and row["wall_time_s"] > 0
    # 2 seeds x (baseA, baseB + 2 variants x k in {1, 5}).
    assert len(df) == 12 and sorted(df["variant"].unique()) == ["AnB+", "BnB", "baseA", "baseB"]
    frozen = df[df["variant"] == "BnB"].set_index("k")
    assert frozen.loc[1, "trained"].unique().tolist() == ["block2"]
    assert frozen.loc[5, "trained"].unique().tolist() == ["classifier"]
    assert frozen.loc[5, "trainable_params"].max() < frozen.loc[1, "trainable_params"].min()
    assert (
        (df.loc[df["variant"] == "AnB+", "fine_tuned"]).all()
        and not df.loc[df["variant"] == "BnB", "fine_tuned"].any()
    )
    assert df["test_acc"].between(0, 1).all()
    assert set(df["classes_a"]) == {"circle;square;triangle;star;cross"}


def test_summary_and_plot(quick_csv):
    df = pd.read_csv(quick_csv)
    table = summarize_transferability(df)
    assert list(table.index) == ["BnB", "AnB+"] and list(table.columns) == [0, 1, 5]
    base_b = 100 * df.loc[df["variant"] == "baseB", "test_acc"].mean()
    assert table[0].tolist() == pytest.approx([base_b, base_b])
    fig = plot_transferability(df)
    assert fig.axes[0].get_ylabel() == "test accuracy on B (%)"
    with pytest.raises(ValueError, match="no baseB run"):
        plot_transferability(df[df["variant"] != "baseB"])


def test_run_in_process_and_bad_arguments():
    from vgg_utils.transferability import run_transferability

    train = ShapesDataset(120, 32, num_classes=4, dtype=torch.uint8)
    test = ShapesDataset(40, 32, num_classes=4, split="test", dtype=torch.uint8)
    with pytest.raises(ValueError, match="unknown variants"):
        run_transferability(train, test, variants=["CnB"])
    with pytest.raises(ValueError, match="ks are the blocks copied"):
        run_transferability(train, test, ks=[0])
    with pytest.raises(SystemExit):
        main(["transferability", "--variants", "XnY"])


# --- Surviving mutants of transferability (mutation/README.md) -------------------------------------


@pytest.mark.usefixtures("one_thread")  # conftest.py: small tensors, one thread
def test_a_tiny_grid_in_process_records_what_it_ran(monkeypatch):
    from vgg_utils import count_params, transferability
    from vgg_utils.transferability import SETTING_COLUMNS, run_transferability

    train = ShapesDataset(24, 32, num_classes=4, dtype=torch.uint8)
    test = ShapesDataset(8, 32, num_classes=4, split="test", dtype=torch.uint8)
    devices, real = [], transferability.fine_tune

    def spy(net, data, **kwargs):  # the device asked for reaches every training run
        devices.append(kwargs["device"])
        return real(net, data, **kwargs)

    monkeypatch.setattr(transferability, "fine_tune", spy)
    lines: list[str] = []
    df = run_transferability(train, test, ks=(2,), variants=("BnB",), epochs=1, width=0.0625,
                             head="paper", batch_size=16, lr=0.02, device="cpu", log=lines.append)  # fmt: skip
    assert devices == ["cpu"] * 3
    assert df[["variant", "k", "source", "trained"]].values.tolist() == [
        ["baseA", 0, "A", "all"], ["baseB", 0, "B", "all"], ["BnB", 2, "B", "block3"],
    ]  # fmt: skip
    for i, (variant, k) in enumerate([("baseA", 0), ("baseB", 0), ("BnB", 2)]):
        expected = rf"\[{i + 1}/3\] {variant} k={k} seed=0: \d+\.\d% \(\d+ s\)"
        assert re.fullmatch(expected, lines[i]), lines[i]
    assert df[SETTING_COLUMNS].iloc[0].to_dict() == {
        "classes_a": "circle;square", "classes_b": "triangle;star", "n_train_half": int((train.labels >= 2).sum()),
        "n_test_half": int((test.labels >= 2).sum()), "epochs": 1, "source_epochs": 1, "width": 0.0625,
        "head": "paper", "batch_size": 16, "lr": 0.02, "schedule": "onecycle", "weight_decay": 5e-4,
    }  # fmt: skip
    assert (df[SETTING_COLUMNS].nunique() == 1).all()
    # Every net is VGG16 with batch norm; the paper head's FC layers are 64 wide at least.
    vgg16_bn = build_vgg(
        "D", 2, batch_norm=True, width=0.0625, head="paper", fc_width=64, input_size=32
    )
    assert df.set_index("variant").loc["baseB", "trainable_params"] == count_params(vgg16_bn)


def test_grid_arguments_and_block_copies_are_checked():
    from vgg_utils.transferability import run_transferability

    data = ShapesDataset(8, 32, num_classes=4, dtype=torch.uint8)
    with pytest.raises(
        ValueError, match=r"^ks are the blocks copied, 1 to 5 \(k = 0 is baseB, always trained\)$"
    ):
        run_transferability(data, data, ks=[1, 0])
    with pytest.raises(
        ValueError, match=r"^seeds is empty; give at least one seed, e.g. seeds=\(0,\)$"
    ):
        run_transferability(data, data, seeds=())
    # Nets laid out differently (batch norm or not) are refused before anything is copied.
    source = build_vgg("D", 5, batch_norm=True, width=0.125, head="compact")
    target = build_vgg("D", 5, width=0.125, head="compact")
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(
        ValueError,
        match=r"^copy_blocks needs blocks 1\.\.1 laid out alike in both nets \(same configuration, width and "
        r"batch norm\); the first difference: source features\.1 \(block1\) is BatchNorm2d with weight "
        r"\(8,\), target features\.1 \(block1\) is ReLU$",
    ):
        copy_blocks(source, target, 1)
    assert all(torch.equal(value, before[key]) for key, value in target.state_dict().items())
    wider = build_vgg("D", 5, batch_norm=True, width=0.25, head="compact")
    with pytest.raises(
        ValueError,
        match=r"features\.0 \(block1\) is Conv2d with weight \(8, 3, 3, 3\), "
        r"target features\.0 \(block1\) is Conv2d with weight \(16, 3, 3, 3\)$",
    ):
        copy_blocks(source, wider, 3)


def test_class_halves_error_names_the_valid_class_range():
    data = ImageTensors(torch.zeros(6, 3, 4, 4), torch.arange(6) % 3, ["a", "b", "c"], "toy")
    with pytest.raises(
        ValueError,
        match=r"^first must name some but not all of the 3 classes \(0\.\.2\); got \[5\]$",
    ):
        class_halves(data, first=[5])


@pytest.mark.usefixtures("one_thread")
def test_grid_rows_record_seed_errors_timing_and_defaults(monkeypatch):
    """Training stubbed (it is tested above) and a fake clock: every row's own columns, and the
    defaults (VGG16-BN at width 0.25 with the compact head) that the notebook relies on."""
    from types import SimpleNamespace

    from vgg_utils import count_params, transferability
    from vgg_utils.transferability import run_transferability

    train = ShapesDataset(16, 32, num_classes=4, dtype=torch.uint8)
    test = ShapesDataset(8, 32, num_classes=4, split="test", dtype=torch.uint8)
    calls: list[dict] = []

    def stub(net, data, **kwargs):
        calls.append(kwargs)
        return pd.DataFrame({"train_acc": [0.5, 0.125 * len(calls)]})  # the last epoch is recorded

    clock = iter(0.75 * i for i in range(1000))  # every perf_counter call advances 0.75 s
    monkeypatch.setattr(transferability, "fine_tune", stub)
    monkeypatch.setattr(transferability, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    df = run_transferability(train, test, ks=(1,), variants=("BnB", "BnB+"), seeds=(3,), epochs=1,
                             batch_size=16, log=lambda line: None)  # fmt: skip
    assert [c["batch_size"] for c in calls] == [16] * 4  # the batch size asked for reaches training
    assert df["seed"].tolist() == [3] * 4
    # Only BnB+ is fine-tuned (k > 0, every layer trained).
    assert df["fine_tuned"].tolist() == [False, False, False, True]
    assert df["train_acc"].tolist() == [0.125, 0.25, 0.375, 0.5]
    assert df["test_error"].tolist() == pytest.approx((100 * (1 - df["test_acc"])).tolist())
    assert df["train_seconds"].tolist() == [0.75] * 4
    assert (df["width"] == 0.25).all() and (df["head"] == "compact").all()
    vgg16_bn = build_vgg("D", 2, batch_norm=True, width=0.25, head="compact", fc_width=128)
    assert df.set_index("variant").loc["baseB", "trainable_params"] == count_params(vgg16_bn)


def test_summary_columns_are_labelled_blocks_copied():
    results = pd.DataFrame(
        {"variant": ["baseB", "BnB", "AnB"], "k": [0, 3, 3], "seed": 0, "test_acc": [0.9, 0.8, 0.6]}
    )
    table = summarize_transferability(results)
    assert table.columns.name == "k (blocks copied)"
    assert table.to_dict() == {0: {"BnB": pytest.approx(90), "AnB": pytest.approx(90)},
                               3: {"BnB": pytest.approx(80), "AnB": pytest.approx(60)}}  # fmt: skip
