"""Figures for the efficiency notebook: plot layout only; every number comes from the caller.

Taught in ``03_efficiency.ipynb``. Each function draws on a given axes (or a new figure) and
returns what it drew on, so a notebook can combine figures and a test can count what was drawn.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from .architecture_plots import _check_columns

VGG_COLOUR = "#C44E52"
#: Marker area (points^2) per million parameters: VGG16's 138 M gives a bubble of ~415 pt^2.
AREA_PER_MPARAM = 3.0
_FAMILY_PALETTE = plt.get_cmap("tab20").colors


def family_colours(families) -> dict[str, str | tuple]:
    """A fixed colour per family (sorted), VGG always in the highlight red."""
    others = [f for f in sorted(set(families)) if f != "VGG"]
    # tab20's dark shades first, then the light ones; its reds (6, 7) are kept for VGG.
    order = [i for i in range(0, 20, 2) if i != 6] + [i for i in range(1, 20, 2) if i != 7]
    palette = [_FAMILY_PALETTE[i] for i in order]
    colours: dict[str, str | tuple] = {f: palette[i % len(palette)] for i, f in enumerate(others)}
    colours["VGG"] = VGG_COLOUR
    return colours


def _bubble_area(params: pd.Series | np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(params, dtype=float) / 1e6 * AREA_PER_MPARAM, 6.0)


def plot_accuracy_vs_cost(
    zoo: pd.DataFrame,
    front: pd.Series | None = None,
    *,
    cost: str = "gmacs",
    ax: Axes | None = None,
    label_models: tuple[str, ...] = ("alexnet", "resnet50", "mobilenet_v3_large", "efficientnet_b0",
                                     "vit_h_14", "squeezenet1_1", "convnext_large"),
) -> Axes:
    """Canziani et al.'s Fig. 2 from :func:`vgg_utils.model_zoo_table`: top-1 accuracy against
    operations (log x), bubble area proportional to parameters, colour by family, VGG outlined
    and labelled, and the Pareto front (``front``: boolean mask) as a dashed staircase.

    Taught in ``03_efficiency.ipynb``.
    """
    _check_columns(zoo, ("model", "family", "params", cost, "acc1"), "the zoo table")
    ax = ax if ax is not None else plt.subplots(figsize=(12, 7.5))[1]
    colours = family_colours(zoo["family"])
    for family, rows in zoo.groupby("family"):
        is_vgg = family == "VGG"
        ax.scatter(
            rows[cost], rows["acc1"], s=_bubble_area(rows["params"]), color=colours[family],
            alpha=0.85 if is_vgg else 0.55, edgecolor="black", linewidth=1.2 if is_vgg else 0.4,
            label=family, zorder=3 if is_vgg else 2, gid=f"family:{family}",
        )
    if front is not None:
        pts = zoo[front].sort_values(cost)
        ax.step(pts[cost], pts["acc1"], where="post", color="black", linestyle="--", linewidth=1,
                zorder=4, gid="pareto")
    for row in zoo[zoo["family"] == "VGG"].itertuples():
        # VGG bubbles carry their depth inside ("16", "16bn"): labels beside them would collide.
        depth = row.model.removeprefix("vgg").replace("_bn", "bn")
        ax.annotate(depth, (getattr(row, cost), row.acc1), ha="center", va="center", fontsize=6.5,
                    color="white", fontweight="bold", zorder=5)
    vgg = zoo[zoo["family"] == "VGG"]
    if not vgg.empty:
        anchor = vgg.sort_values([cost, "acc1"]).iloc[-1]  # the most expensive, most accurate one
        ax.annotate("VGG-11/13/16/19\n(bn: with batch norm)", (anchor[cost], anchor["acc1"]),
                    xytext=(45, -70), textcoords="offset points", fontsize=9, color=VGG_COLOUR,
                    fontweight="bold", arrowprops={"arrowstyle": "-", "color": VGG_COLOUR})
    seen: set[str] = set()
    for row in zoo.sort_values("acc1", ascending=False).itertuples():
        if row.model in seen or row.model not in label_models:
            continue
        seen.add(row.model)
        ax.annotate(row.model, (getattr(row, cost), row.acc1), xytext=(9, -3),
                    textcoords="offset points", ha="left", fontsize=8, zorder=5)
    ax.set_xscale("log")
    ax.set_xlabel("operations per image: GMACs, log scale (1 multiply-accumulate = 2 FLOPs)")
    ax.set_ylabel("ImageNet-1K top-1 accuracy (%)")
    ax.set_title(f"torchvision's {len(zoo)} ImageNet-1K weight sets: accuracy vs operations "
                 "(bubble area ∝ parameters)")
    ax.grid(True, which="both", alpha=0.3)
    family_legend = ax.legend(loc="lower right", fontsize=8, ncol=2, title="family", markerscale=0.4,
                              scatterpoints=1)
    for handle in family_legend.legend_handles:
        handle.set_sizes([40])
    ax.add_artist(family_legend)
    sizes = [5, 25, 140, 600]
    size_handles = [
        Line2D([], [], linestyle="", marker="o", markersize=float(np.sqrt(_bubble_area([m * 1e6])[0])),
               markerfacecolor="lightgrey", markeredgecolor="black", label=f"{m} M params")
        for m in sizes
    ]
    if front is not None:
        size_handles.append(Line2D([], [], color="black", linestyle="--", label="Pareto front"))
    ax.legend(handles=size_handles, loc="upper left", fontsize=8, title="bubble area = parameters",
              labelspacing=2.4, borderpad=1.2, handlelength=4.5, handletextpad=1.0)
    return ax


def plot_density_ranking(table: pd.DataFrame, columns: dict[str, str]) -> Figure:
    """One ranked bar chart per column (``{column: axis label}``), lowest first, log y, VGG red.

    ``table`` has one row per model (``model``, ``family`` and the columns). Taught in
    ``03_efficiency.ipynb`` (accuracy per parameter and per operation).
    """
    _check_columns(table, ("model", "family", *columns), "the density table")
    fig, axes = plt.subplots(len(columns), 1, figsize=(15, 4.2 * len(columns)))
    axes = np.atleast_1d(axes)
    for ax, (column, label) in zip(axes, columns.items(), strict=True):
        rows = table.sort_values(column)
        is_vgg = (rows["family"] == "VGG").to_numpy()
        bars = ax.bar(rows["model"], rows[column], color=np.where(is_vgg, VGG_COLOUR, "#9DB4D3"),
                      edgecolor="black", linewidth=0.4)
        for bar, vgg in zip(bars, is_vgg, strict=True):
            bar.set_gid("vgg" if vgg else "other")
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.set_xlabel(f"{len(rows)} torchvision models (default weights), ranked")
        ax.set_title(f"{label}: lowest on the left, VGG in red")
        ax.tick_params(axis="x", rotation=90, labelsize=7)
        for tick, vgg in zip(ax.get_xticklabels(), is_vgg, strict=True):
            if vgg:
                tick.set_color(VGG_COLOUR)
                tick.set_fontweight("bold")
        ax.set_xlim(-0.7, len(rows) - 0.3)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_vgg_family(family: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Top-1 accuracy of VGG-11/13/16/19 against GMACs, with and without batch norm.

    ``family`` has columns ``model``, ``depth``, ``gmacs``, ``acc1``, ``bn``. Taught in
    ``03_efficiency.ipynb``.
    """
    _check_columns(family, ("model", "depth", "gmacs", "acc1", "bn"), "the VGG family table")
    ax = ax if ax is not None else plt.subplots(figsize=(8, 4.8))[1]
    for bn, rows in family.groupby("bn"):
        rows = rows.sort_values("depth")
        ax.plot(rows["gmacs"], rows["acc1"], marker="o" if bn else "s", linestyle="-" if bn else "--",
                color="#4C72B0" if bn else VGG_COLOUR, label="with batch norm" if bn else "plain (paper)")
        for row in rows.itertuples():
            ax.annotate(f"{row.depth} layers", (row.gmacs, row.acc1), xytext=(0, 7 if bn else -13),
                        textcoords="offset points", ha="center", fontsize=8)
    ax.set_xlabel("operations per image (GMACs)")
    ax.set_ylabel("ImageNet-1K top-1 accuracy (%)")
    ax.set_title("Within the VGG family: accuracy against operations, with and without batch norm")
    ax.margins(x=0.08, y=0.12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return ax


def plot_layer_cost_shares(table: pd.DataFrame, title: str = "VGG16") -> Figure:
    """Three bar charts from :func:`vgg_utils.layer_table`: parameters (% of total), MACs (% of
    total) and activation memory (MB, fp32, one image) of every conv, pool and FC layer.

    Taught in ``03_efficiency.ipynb``.
    """
    _check_columns(table, ("layer", "type", "params", "macs", "act_bytes"), "the layer table")
    rows = table[table["type"].isin(("Conv2d", "Linear", "MaxPool2d"))]
    if rows.empty:
        raise ValueError("the layer table has no Conv2d, Linear or MaxPool2d rows")
    fig, axes = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    panels = (
        ("parameters", 100 * rows["params"] / table["params"].sum(), "% of all parameters", "#55A868"),
        ("MACs", 100 * rows["macs"] / table["macs"].sum(), "% of all MACs", "#4C72B0"),
        ("activation memory", rows["act_bytes"] / 1e6, "output size (MB, fp32, one image)", "#8172B3"),
    )
    for ax, (what, values, unit, colour) in zip(axes, panels, strict=True):
        bars = ax.bar(rows["layer"], values, color=colour, edgecolor="black", linewidth=0.5)
        top = values.to_numpy().argmax()
        ax.bar_label(bars, labels=[f"{v:.1f}" if i == top else "" for i, v in enumerate(values)],
                     padding=2, fontsize=8)
        ax.set_ylabel(unit)
        ax.set_ylim(0, values.max() * 1.18)
        ax.set_title(f"{title}: {what} by layer")
        ax.grid(True, axis="y", alpha=0.3)
    axes[-1].set_xlabel("layer (ReLUs are in place and add nothing)")
    axes[-1].tick_params(axis="x", rotation=90)
    fig.tight_layout()
    return fig


def plot_latency_vs_macs(
    latency: pd.DataFrame, fits: pd.DataFrame | None = None, title: str = ""
) -> Figure:
    """Per-image latency against GMACs, log-log: one panel per batch size, one series per
    (device, threads), with the fitted power laws from ``fits`` (columns ``device``, ``threads``,
    ``batch_size``, ``slope``, ``intercept``, ``r2``: log10 ms = intercept + slope * log10 GMACs;
    optional ``clean``: False draws that fit faint and says its timings were noisy).

    Taught in ``03_efficiency.ipynb``.
    """
    needed = ("model", "gmacs", "per_image_ms", "batch_size", "device", "threads")
    _check_columns(latency, needed, "the latency table")
    batches = sorted(latency["batch_size"].unique())
    fig, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 5.5), sharey=True,
                             squeeze=False)
    markers = ("o", "s", "^", "D")
    colours = ("#4C72B0", "#DD8452", "#55A868", "#8172B3")
    xs = np.geomspace(latency["gmacs"].min() / 1.5, latency["gmacs"].max() * 1.5, 50)
    for ax, batch in zip(axes[0], batches, strict=True):
        rows_b = latency[latency["batch_size"] == batch]
        for i, ((device, threads), rows) in enumerate(rows_b.groupby(["device", "threads"])):
            colour = colours[i % len(colours)]
            unit = "thread" if threads == 1 else "threads"
            ax.scatter(rows["gmacs"], rows["per_image_ms"], marker=markers[i % len(markers)], s=55,
                       color=colour, edgecolor="black", linewidth=0.5, zorder=3,
                       label=f"{device}, {threads} {unit}")
            if fits is not None:
                fit = fits[(fits["device"] == device) & (fits["threads"] == threads)
                           & (fits["batch_size"] == batch)]
                if not fit.empty:
                    f = fit.iloc[0]
                    # A fit the notebook marked unclean (noisy or contended timings) is drawn faint.
                    clean = bool(f.get("clean", True))
                    ax.plot(xs, 10 ** (f["intercept"] + f["slope"] * np.log10(xs)), color=colour,
                            linestyle="--" if clean else ":", linewidth=1, alpha=1.0 if clean else 0.5,
                            label=f"fit: time ∝ GMACs^{f['slope']:.2f}, R²={f['r2']:.2f}"
                            + ("" if clean else " (noisy timings: do not read)"))
        for i, (_key, rows) in enumerate(rows_b.groupby(["device", "threads"])):
            for row in rows.itertuples():  # series alternate above / below their points
                ax.annotate(row.model, (row.gmacs, row.per_image_ms), xytext=(0, 7 if i % 2 == 0 else -12),
                            textcoords="offset points", ha="center", fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # 2, 5, 10, 20 ms rather than 2x10^0
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.set_xlabel("operations per image at this input size (GMACs, log scale)")
        ax.set_title(f"batch of {batch}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        ax.margins(x=0.1, y=0.15)
    axes[0, 0].set_ylabel("median time per image (ms, log scale)")
    fig.suptitle(title or "Measured latency vs operations")
    fig.tight_layout()
    return fig
