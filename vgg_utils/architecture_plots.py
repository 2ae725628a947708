"""Figures for the architecture notebook: plot layout only, every number comes from the caller or CONFIGS.

Taught in ``01_architecture.ipynb``. Each function draws on an existing axes when given one and
returns what it drew on, so a notebook can combine figures and a test can count the bars.
"""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from .configs import CONFIGS, canonical_name, parse_layer, weight_layers

#: One colour per layer kind in the block diagram (conv and max-pool are the two that matter).
KIND_COLOURS = {
    "conv": "#4C72B0",
    "pool": "#DD8452",
    "lrn": "#8C8C8C",
    "fc": "#55A868",
    "softmax": "#C44E52",
}
_KIND_LABELS = {
    "conv": "convolution (3x3 or 1x1) + ReLU",
    "pool": "2x2 max-pool, stride 2",
    "lrn": "LRN",
    "fc": "fully connected + ReLU",
    "softmax": "soft-max",
}
MEMORY_COLOUR = "#8172B3"
PARAMS_COLOUR = "#55A868"


def _check_columns(df: pd.DataFrame, needed: tuple[str, ...], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame; got {type(df).__name__}")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; it needs {list(needed)}")


def plot_ilsvrc(df: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Bar chart of ILSVRC top-5 error by year (``data/ilsvrc_top5.csv``), VGG highlighted.

    Rows with an empty ``year`` (the human estimate) are drawn as a horizontal line, not a bar,
    labelled with their ``model`` column (who it was) when the table has one.
    Taught in ``01_architecture.ipynb``.
    """
    _check_columns(df, ("year", "team", "top5_error"), "the ILSVRC table")
    ax = ax if ax is not None else plt.subplots(figsize=(10, 4.5))[1]
    entries = df[df["year"].notna()]
    humans = df[df["year"].isna()]
    labels = [f"{int(y)}\n{t}" for y, t in zip(entries["year"], entries["team"], strict=True)]
    is_vgg = entries["team"].str.contains("VGG", case=False).to_numpy()
    colours = ["#C44E52" if v else "#9DB4D3" for v in is_vgg]
    bars = ax.bar(labels, entries["top5_error"], color=colours, edgecolor="black", linewidth=0.6)
    ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=9)
    for _, human in humans.iterrows():
        err = human["top5_error"]
        who = human.get("model")
        who = who if isinstance(who, str) and who else "human estimate"
        ax.axhline(err, color="black", linestyle="--", linewidth=1)
        ax.text(len(labels) - 0.5, err + 0.4, f"{who}: {err:.1f}%", ha="right", fontsize=9)
    ax.legend(
        handles=[Patch(color="#C44E52", label="VGG (2nd in 2014)"), Patch(color="#9DB4D3", label="winner")],
        loc="upper right",
    )
    ax.set_title("ILSVRC image classification: top-5 error of the best entries")
    ax.set_xlabel("challenge year and team")
    ax.set_ylabel("top-5 error (%)")
    ax.tick_params(axis="x", labelsize=8)
    return ax


def _layer_shapes(config: str, input_size: int) -> Iterator[tuple[str, str, int, int]]:
    """Walk Table 1: ``(entry, kind, output spatial size, output channels)`` for every layer."""
    size, channels = input_size, 3
    for entry in CONFIGS[config]:
        spec = parse_layer(entry)
        if spec.kind == "conv":
            channels = spec.channels  # padding k // 2 keeps the spatial size
        elif spec.kind == "pool":
            size //= 2
        elif spec.kind == "fc":
            size, channels = 1, spec.channels
        yield entry, spec.kind, size, channels


def plot_vgg_diagram(config: str, ax: Axes | None = None, input_size: int = 224) -> Axes:
    """Block diagram of a configuration, drawn from ``CONFIGS[config]`` via ``parse_layer``.

    One box per Table 1 entry (box height shrinks with the feature map); each box carries its
    ``gid`` (conv, pool, lrn, fc, softmax) so the boxes can be counted. Under each conv block: the
    feature-map size and channels. Taught in ``01_architecture.ipynb``.
    """
    name = canonical_name(config)
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 32:
        raise ValueError(f"input_size must be an integer of at least 32 (five poolings); got {input_size!r}")
    layers = list(_layer_shapes(name, input_size))
    ax = ax if ax is not None else plt.subplots(figsize=(0.65 * len(layers), 3.8))[1]
    x, block_start, block, kinds_seen = 0.0, 0.0, 1, []
    for entry, kind, size, channels in layers:
        width = 0.5 if kind in ("pool", "lrn") else 0.8
        height = 0.45 + 0.55 * (size / input_size) ** 0.5 if kind in ("conv", "pool", "lrn") else 0.45
        ax.add_patch(
            Rectangle((x, -height / 2), width, height, facecolor=KIND_COLOURS[kind], edgecolor="black",
                      linewidth=0.6, gid=kind)
        )
        text = "max-pool" if kind == "pool" else entry
        ax.text(x + width / 2, 0, text, rotation=90, ha="center", va="center", color="white", fontsize=8)
        if kind == "pool":  # label the block that this pool closes, and the size it hands on
            ax.text((block_start + x) / 2, -0.56, f"block {block}\n{size * 2}x{size * 2}\n{channels} ch",
                    ha="center", va="top", fontsize=8)
            ax.text(x + width / 2, height / 2 + 0.03, f"{size}²", ha="center", va="bottom", fontsize=8)
            block_start, block = x + width + 0.15, block + 1
        if kind not in kinds_seen:
            kinds_seen.append(kind)
        x += width + 0.15
    ax.set_xlim(-0.3, x + 0.2)
    ax.set_ylim(-0.9, 0.9)
    ax.set_yticks([])
    ax.set_xticks([])
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel(f"layers in Table 1 order from the {input_size}x{input_size}x3 input; box height "
                  "shrinks with the feature map; above each pool: its output size", fontsize=9)
    ax.set_title(f"Configuration {name}: {weight_layers(name)} weight layers")
    ax.legend(
        handles=[Patch(color=KIND_COLOURS[k], label=_KIND_LABELS[k]) for k in kinds_seen],
        loc="upper right", ncol=len(kinds_seen), fontsize=8, frameon=False,
    )
    return ax


def plot_feature_map_sizes(config: str, input_size: int = 224) -> Figure:
    """Two bar charts: spatial size and channels of the input, each conv block, and pool5's output.

    Taught in ``01_architecture.ipynb``.
    """
    name = canonical_name(config)
    stages: list[tuple[str, int, int]] = [("input", input_size, 3)]
    for _entry, kind, size, channels in _layer_shapes(name, input_size):
        if kind == "pool":  # a block's convs work at twice the size its pool hands on
            stages.append((f"block {len(stages)}", size * 2, channels))
            pooled = (size, channels)
    stages.append((f"pool{len(stages) - 1}\noutput", *pooled))
    labels = [s[0] for s in stages]
    fig, (ax_size, ax_ch) = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, values, colour, what, unit in (
        (ax_size, [s[1] for s in stages], KIND_COLOURS["pool"], "Spatial size", "pixels per side"),
        (ax_ch, [s[2] for s in stages], KIND_COLOURS["conv"], "Channels", "channels"),
    ):
        bars = ax.bar(labels, values, color=colour, edgecolor="black", linewidth=0.6)
        ax.bar_label(bars, padding=2, fontsize=9)
        ax.set_title(f"{what} of the feature maps, config {name}")
        ax.set_xlabel("stage (conv block = its conv layers' output)")
        ax.set_ylabel(unit)
        ax.set_ylim(0, max(values) * 1.15)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


#: Layer types whose output is a new tensor (ReLU is in place; dropout and avgpool add nothing here).
COST_TYPES = ("Conv2d", "BatchNorm2d", "LocalResponseNorm", "MaxPool2d", "Linear")


def plot_layer_costs(table: pd.DataFrame, log_params: bool = False) -> Figure:
    """Activation memory (MB, fp32, one image) and parameters per layer, from :func:`layer_table`.

    Only layers with their own output tensor (``COST_TYPES``) are drawn; ``log_params`` puts the
    parameter chart on a log scale. Taught in ``01_architecture.ipynb``.
    """
    _check_columns(table, ("layer", "type", "params", "act_bytes"), "the layer table")
    rows = table[table["type"].isin(COST_TYPES)]
    if rows.empty:
        raise ValueError(f"the layer table has no rows of types {COST_TYPES}")
    fig, (ax_mem, ax_par) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    ax_mem.bar(rows["layer"], rows["act_bytes"] / 1e6, color=MEMORY_COLOUR, edgecolor="black", linewidth=0.5)
    ax_mem.set_title("Activation memory per layer (output of one 224x224 image, fp32)")
    ax_mem.set_ylabel("output size (MB)")
    ax_par.bar(rows["layer"], rows["params"] / 1e6, color=PARAMS_COLOUR, edgecolor="black", linewidth=0.5)
    ax_par.set_title("Parameters per layer (weights + biases)")
    ax_par.set_ylabel("parameters (millions)" + (", log scale" if log_params else ""))
    if log_params:
        ax_par.set_yscale("log")
    ax_par.set_xlabel("layer")
    ax_par.tick_params(axis="x", rotation=90)
    fig.tight_layout()
    return fig
