"""model_zoo_table: torchvision's own metadata as a table, checked against an independent count."""

import math

import matplotlib
import pandas as pd
import pytest
import torchvision
from torchvision.models._api import WeightsEnum

from vgg_utils import (
    layer_table,
    model_family,
    model_zoo_table,
    pareto_front,
    plot_accuracy_vs_cost,
    plot_density_ranking,
    plot_latency_vs_macs,
    plot_layer_cost_shares,
    plot_vgg_family,
    total_macs,
)

NUMERIC = ["params", "gmacs", "acc1", "acc5", "file_mb", "crop_size"]


@pytest.fixture(scope="module")
def zoo():
    return model_zoo_table()


def _independent_imagenet_weights() -> set[tuple[str, str]]:
    """Every weight enum class exported by torchvision.models (not via list_models), keeping the
    members with finite ImageNet-1K accuracies and an operation count."""
    found = set()
    for obj in vars(torchvision.models).values():
        if not (isinstance(obj, type) and issubclass(obj, WeightsEnum) and obj is not WeightsEnum):
            continue
        for member in obj:
            metrics = member.meta.get("_metrics", {}).get("ImageNet-1K", {})
            accs = [metrics.get("acc@1", math.nan), metrics.get("acc@5", math.nan)]
            if all(math.isfinite(a) for a in accs) and "_ops" in member.meta:
                found.add((obj.__name__, member.name))
    return found


def test_every_imagenet_weight_set_is_a_row(zoo):
    expected = _independent_imagenet_weights()
    assert len(zoo) == len(expected)
    assert len(zoo) > 100
    assert not zoo.duplicated(["model", "weights"]).any()
    assert zoo["model"].nunique() == len(torchvision.models.list_models(module=torchvision.models))


def test_no_missing_numbers_and_sane_ranges(zoo):
    assert not zoo[NUMERIC].isna().any().any()
    assert (zoo["params"] > 0).all() and (zoo["gmacs"] > 0).all() and (zoo["file_mb"] > 0).all()
    assert zoo["acc1"].between(0, 100).all() and (zoo["acc5"] >= zoo["acc1"]).all()
    assert zoo.groupby("model")["default"].sum().eq(1).all(), "one DEFAULT row per model"


def test_vgg16_row(zoo):
    row = zoo[(zoo["model"] == "vgg16") & (zoo["weights"] == "IMAGENET1K_V1")]
    assert len(row) == 1
    row = row.iloc[0]
    assert row["params"] == 138_357_544
    assert row["gmacs"] == pytest.approx(15.47)
    assert row["acc1"] == pytest.approx(71.592)
    assert row["family"] == "VGG" and row["crop_size"] == 224
    # The features-only weights have NaN accuracies: left out, not filled in.
    assert not ((zoo["model"] == "vgg16") & (zoo["weights"] == "IMAGENET1K_FEATURES")).any()


def test_gmacs_are_multiply_accumulates_like_our_counter(zoo):
    """torchvision's "GFLOPS" column is MACs: it equals flop_counter's FLOPs / 2 for VGG16."""
    vgg16 = zoo[(zoo["model"] == "vgg16") & zoo["default"]].iloc[0]
    assert round(vgg16["gmacs"], 2) == round(total_macs("D") / 1e9, 2)
    # file size: fp32 weights, 4 bytes each, in MiB
    assert vgg16["file_mb"] == pytest.approx(vgg16["params"] * 4 / 2**20, rel=1e-3)


def test_families(zoo):
    assert set(zoo.loc[zoo["family"] == "VGG", "model"]) == {
        f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")
    }
    assert model_family("resnext50_32x4d") == "ResNeXt"
    assert model_family("wide_resnet50_2") == "ResNet"
    assert model_family("mobilenet_v3_large") == "MobileNet"
    assert model_family("brandnewnet_b0") == "Brandnewnet"
    assert {"VGG", "ResNet", "MobileNet", "EfficientNet", "ViT"} <= set(zoo["family"])
    with pytest.raises(ValueError, match="non-empty string"):
        model_family("")


def test_pareto_front_matches_brute_force(zoo):
    mask = pareto_front(zoo)
    for i, row in zoo.iterrows():
        dominated = (
            (zoo["gmacs"] <= row["gmacs"]) & (zoo["acc1"] >= row["acc1"])
            & ((zoo["gmacs"] < row["gmacs"]) | (zoo["acc1"] > row["acc1"]))
        ).any()
        duplicate_before = (
            (zoo["gmacs"] == row["gmacs"]) & (zoo["acc1"] == row["acc1"]) & (zoo.index < i)
        ).any()
        assert mask[i] == (not dominated and not duplicate_before), row["model"]
    assert not mask[zoo["family"] == "VGG"].any(), "no VGG is on the accuracy-operations front"
    tiny = pd.DataFrame({"gmacs": [1.0, 2.0, 2.0, 3.0], "acc1": [50.0, 60.0, 55.0, 60.0]})
    assert list(pareto_front(tiny)) == [True, True, False, False]
    with pytest.raises(ValueError, match="not in table"):
        pareto_front(tiny, cost="flops")


def test_bubble_plot_draws_every_row(zoo):
    matplotlib.use("Agg")
    ax = plot_accuracy_vs_cost(zoo, pareto_front(zoo))
    drawn = sum(len(c.get_offsets()) for c in ax.collections if str(c.get_gid()).startswith("family:"))
    assert drawn == len(zoo)
    assert ax.get_xscale() == "log" and "GMACs" in ax.get_xlabel()
    assert len(ax.get_legend().get_texts()) >= 4  # the bubble-size legend
    matplotlib.pyplot.close("all")


def test_density_family_and_layer_plots(zoo):
    matplotlib.use("Agg")
    models = zoo[zoo["default"]].assign(density=lambda t: t["acc1"] / t["params"])
    fig = plot_density_ranking(models, {"density": "accuracy per parameter"})
    bars = [p for p in fig.axes[0].patches if p.get_gid() in ("vgg", "other")]
    assert len(bars) == len(models) == zoo["model"].nunique()
    assert sum(p.get_gid() == "vgg" for p in bars) == 8
    fam = zoo[zoo["family"] == "VGG"].assign(bn=lambda t: t["model"].str.endswith("_bn"),
                                               depth=lambda t: t["model"].str[3:5].astype(int))
    ax = plot_vgg_family(fam)
    assert len(ax.get_lines()) == 2 and "GMACs" in ax.get_xlabel()
    fig = plot_layer_cost_shares(layer_table("D"))
    assert len(fig.axes) == 3 and len(fig.axes[0].patches) == 13 + 5 + 3  # convs, pools, FCs
    with pytest.raises(ValueError, match="lacks columns"):
        plot_vgg_family(zoo)
    matplotlib.pyplot.close("all")


def test_latency_plot_has_a_panel_per_batch_and_a_fit_line():
    matplotlib.use("Agg")
    lat = pd.DataFrame({"model": list("ABC") * 2, "gmacs": [0.1, 1.0, 10.0] * 2,
                        "per_image_ms": [1.0, 10.0, 100.0, 0.5, 5.0, 50.0], "batch_size": [1] * 3 + [8] * 3,
                        "device": "cpu", "threads": 2})
    fits = pd.DataFrame({"device": ["cpu"] * 2, "threads": [2, 2], "batch_size": [1, 8],
                         "slope": [1.0, 1.0], "intercept": [1.0, 0.7], "r2": [1.0, 1.0]})
    fig = plot_latency_vs_macs(lat, fits, title="t")
    assert len(fig.axes) == 2
    assert all(len(ax.get_lines()) == 1 and ax.get_xscale() == "log" for ax in fig.axes)
    matplotlib.pyplot.close("all")
