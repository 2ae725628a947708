"""The figures of 01_architecture.ipynb: right number of bars and boxes, drawn from the data given."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: no display needed

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vgg_utils import (
    CONFIGS,
    data_dir,
    layer_table,
    parse_layer,
    plot_feature_map_sizes,
    plot_ilsvrc,
    plot_layer_costs,
    plot_vgg_diagram,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _boxes(ax: Axes, kind: str) -> int:
    return sum(p.get_gid() == kind for p in ax.patches)


@pytest.fixture(scope="module")
def ilsvrc() -> pd.DataFrame:
    return pd.read_csv(data_dir() / "ilsvrc_top5.csv", dtype={"year": "Int64"})


def test_ilsvrc_csv_has_the_numbers_the_notebook_teaches(ilsvrc: pd.DataFrame) -> None:
    assert list(ilsvrc.columns) == ["year", "team", "model", "top5_error", "source", "note"]
    assert ilsvrc["source"].notna().all()
    by_year = ilsvrc.dropna(subset=["year"]).set_index("team")["top5_error"]
    assert by_year["GoogLeNet"] == 6.7
    vgg = ilsvrc[ilsvrc["team"].str.contains("VGG")].iloc[0]
    assert vgg["top5_error"] == 7.3 and vgg["year"] == 2014
    assert "second" in vgg["note"].lower()
    human = ilsvrc[ilsvrc["year"].isna()]
    assert list(human["top5_error"]) == [5.1]


def test_ilsvrc_one_bar_per_entry_and_a_human_line(ilsvrc: pd.DataFrame) -> None:
    ax = plot_ilsvrc(ilsvrc)
    assert isinstance(ax, Axes)
    bars = ax.containers[0]
    assert len(bars) == 9  # 2010-2017, two entries in 2014; the human row is a line
    assert [b.get_height() for b in bars][:2] == [28.2, 25.8]
    assert len(ax.get_lines()) == 1 and ax.get_lines()[0].get_ydata()[0] == 5.1
    # VGG's bar is the one coloured differently
    colours = [b.get_facecolor() for b in bars]
    odd = [i for i, c in enumerate(colours) if colours.count(c) == 1]
    assert [ilsvrc.dropna(subset=["year"]).iloc[i]["team"] for i in odd] == ["VGG (Oxford)"]
    # the line says whose estimate it is (one annotator), not "the" human error
    assert ax.texts[-1].get_text() == "human annotator (A. Karpathy): 5.1%"  # after the bar labels
    assert plot_ilsvrc(ilsvrc.drop(columns="model")).texts[-1].get_text() == "human estimate: 5.1%"


def test_ilsvrc_draws_on_a_given_axes_and_rejects_a_wrong_table(ilsvrc: pd.DataFrame) -> None:
    _, ax = plt.subplots()
    assert plot_ilsvrc(ilsvrc, ax=ax) is ax
    with pytest.raises(ValueError, match="top5_error"):
        plot_ilsvrc(ilsvrc.drop(columns="top5_error"))


@pytest.mark.parametrize(
    ("config", "convs", "lrn"), [("A", 8, 0), ("A-LRN", 8, 1), ("C", 13, 0), ("D", 13, 0), ("E", 16, 0)]
)
def test_diagram_has_one_box_per_table1_entry(config: str, convs: int, lrn: int) -> None:
    ax = plot_vgg_diagram(config)
    assert (_boxes(ax, "conv"), _boxes(ax, "pool"), _boxes(ax, "lrn")) == (convs, 5, lrn)
    assert (_boxes(ax, "fc"), _boxes(ax, "softmax")) == (3, 1)
    assert len(ax.patches) == len(CONFIGS[config])
    conv_colour = {p.get_facecolor() for p in ax.patches if p.get_gid() == "conv"}
    pool_colour = {p.get_facecolor() for p in ax.patches if p.get_gid() == "pool"}
    assert len(conv_colour) == len(pool_colour) == 1 and conv_colour != pool_colour
    assert len(ax.get_legend().get_texts()) == 4 + (lrn > 0)


def test_diagram_labels_sizes_and_channels() -> None:
    ax = plot_vgg_diagram("vgg16")
    texts = [t.get_text() for t in ax.texts]
    assert "block 1\n224x224\n64 ch" in texts and "block 5\n14x14\n512 ch" in texts
    assert "7²" in texts and texts.count("conv3-512") == 6
    labels = [t.get_text() for t in plot_vgg_diagram("D", input_size=64).texts]
    assert "block 1\n64x64\n64 ch" in labels and "2²" in labels


def test_diagram_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="valid names"):
        plot_vgg_diagram("F")
    with pytest.raises(ValueError, match="input_size"):
        plot_vgg_diagram("D", input_size=16)


def test_feature_map_sizes_per_block() -> None:
    fig = plot_feature_map_sizes("D")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    sizes = [b.get_height() for b in fig.axes[0].containers[0]]
    channels = [b.get_height() for b in fig.axes[1].containers[0]]
    assert sizes == [224, 224, 112, 56, 28, 14, 7]
    assert channels == [3, 64, 128, 256, 512, 512, 512]


def test_layer_costs_one_bar_per_conv_pool_fc() -> None:
    table = layer_table("D", totals=True)
    fig = plot_layer_costs(table)
    assert len(fig.axes) == 2
    mem, par = (ax.containers[0] for ax in fig.axes)
    n = sum(parse_layer(e).kind in ("conv", "pool", "fc") for e in CONFIGS["D"])
    assert len(mem) == len(par) == n == 21
    assert mem[0].get_facecolor() != par[0].get_facecolor()
    tallest = max(range(n), key=lambda i: par[i].get_height())
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()][tallest] == "fc6"
    assert par[tallest].get_height() == pytest.approx(102.764544)
    assert mem[0].get_height() == pytest.approx(64 * 224 * 224 * 4 / 1e6)
    assert plot_layer_costs(table, log_params=True).axes[1].get_yscale() == "log"


def test_layer_costs_rejects_a_table_without_its_columns() -> None:
    with pytest.raises(ValueError, match="act_bytes"):
        plot_layer_costs(pd.DataFrame({"layer": ["x"], "type": ["Conv2d"], "params": [1]}))
    with pytest.raises(TypeError, match="DataFrame"):
        plot_layer_costs([1, 2, 3])


def test_gradient_map_titles_do_not_overlap() -> None:
    """Notebook 02's figure: three panels with long titles side by side; each title stays within
    its own column (the old figure's titles ran into each other)."""
    import torch

    from vgg_utils import plot_gradient_maps

    names = [f"{kind}: gradient on {share:.1%} of the field" for kind, share in
             (("trained (ImageNet weights)", 0.987), ("random init (Kaiming)", 0.993), ("all weights = 1", 1.0))]
    grad = torch.rand(60, 60)
    fig = plot_gradient_maps({n: grad for n in names}, title="Input pixels whose gradient reaches one conv3_3 unit "
                             "(zoom on input pixels 80-139; red: theoretical 40x40 field)", origin=(80, 80))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 < right.x0, f"titles overlap: {left} and {right}"
    inside = fig.bbox
    assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 for b in boxes), "a title runs off the figure"


def test_grid_provenance_names_no_local_folder() -> None:
    """Notebook 04 prints how the committed grid was made; the machine's own CIFAR-10 path is no
    part of that (older grids wrote one into the dataset field)."""
    from vgg_utils import REPO_ROOT, grid_provenance

    results = pd.read_csv(REPO_ROOT / "data" / "results" / "ablations_cifar10.csv", dtype=str)
    shown = grid_provenance(results)
    assert "/" not in shown["dataset"] and "VGG_CIFAR10_DIR" in shown["dataset"]  # names the setting, not a folder
    assert shown["command"].startswith("python -m vgg_utils.experiments") and len(shown) == 10
    posix = results.assign(dataset="CIFAR-10 train (JPEG copy in ../data/cifar10, slightly lossy)")
    assert grid_provenance(posix)["dataset"] == "CIFAR-10 train (JPEG copy, slightly lossy)"
    windows = results.assign(dataset=r"CIFAR-10 train (JPEG copy in D:\data\cifar10, slightly lossy)")
    assert grid_provenance(windows)["dataset"] == "CIFAR-10 train (JPEG copy, slightly lossy)"
    with pytest.raises(ValueError, match="no column"):
        grid_provenance(results.drop(columns="command"))


def test_latency_plot_marks_a_noisy_fit() -> None:
    """Notebook 03 reads only clean timings; its figure must not draw a noisy fit like a clean one."""
    from vgg_utils import plot_latency_vs_macs

    lat = pd.DataFrame({"model": ["a", "b", "a", "b"], "gmacs": [1.0, 10.0, 1.0, 10.0],
                        "per_image_ms": [2.0, 15.0, 9.0, 11.0], "batch_size": 1, "device": "cpu",
                        "threads": [1, 1, 2, 2]})
    fits = pd.DataFrame({"device": "cpu", "threads": [1, 2], "batch_size": 1, "slope": [0.88, 0.09],
                         "intercept": [0.3, 0.95], "r2": [1.0, 1.0], "clean": [True, False]})
    ax = plot_latency_vs_macs(lat, fits).axes[0]
    labels = {line.get_label(): line for line in ax.get_lines()}
    clean = next(line for label, line in labels.items() if "0.88" in label)
    noisy = next(line for label, line in labels.items() if "0.09" in label)
    assert "noisy" in noisy.get_label() and "noisy" not in clean.get_label()
    assert clean.get_linestyle() == "--" and noisy.get_linestyle() == ":"
    # without a clean column every fit is drawn as before
    plain = plot_latency_vs_macs(lat, fits.drop(columns="clean")).axes[0]
    assert not any("noisy" in line.get_label() for line in plain.get_lines())
