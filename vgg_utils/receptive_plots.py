"""Figures for the receptive-field notebook: plot layout only, every number comes from the caller.

Taught in ``02_receptive_fields.ipynb``. Each function returns the figure it drew, so a test can
check titles and labels and a notebook can save it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import ScalarFormatter

from .receptive_measured import EffectiveRF

RF_COLOUR = "#4C72B0"
ERF_COLOUR = "#C44E52"
JUMP_COLOUR = "#DD8452"
OTHER_COLOUR = "#55A868"


def _square(ax, centre: tuple[float, float], side: float, **style) -> Rectangle:
    """Outline the ``side``-pixel square centred on ``centre`` (row, col), pixel edges included."""
    half = side / 2
    patch = Rectangle((centre[1] - half, centre[0] - half), side, side, fill=False, **style)
    ax.add_patch(patch)
    return patch


def plot_path_counts(grids: Sequence[torch.Tensor], titles: Sequence[str] | None = None) -> Figure:
    """One panel per grid of path counts (input pixels x paths to the centre unit), numbers written
    in the cells and the receptive field (the non-zero cells) outlined."""
    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 4.4), squeeze=False)
    for i, (ax, grid) in enumerate(zip(axes[0], grids, strict=True)):
        grid = grid.detach().cpu().float()
        ax.imshow(grid.numpy(), cmap="Blues", vmin=0, vmax=float(grid.max()) * 1.15)
        for r, c in grid.nonzero().tolist():
            ax.text(c, r, f"{grid[r, c]:g}", ha="center", va="center", fontsize=8)
        nz = grid.nonzero()
        lo, hi = nz.min(0).values.tolist(), nz.max(0).values.tolist()
        side = hi[0] - lo[0] + 1
        _square(ax, ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2), side, edgecolor=ERF_COLOUR, linewidth=2)
        ax.set_title(titles[i] if titles else f"receptive field {side}x{side}")
        ax.set_xlabel("input column (pixels)")
        ax.set_ylabel("input row (pixels)")
        ax.set_xticks(range(grid.shape[1]))
        ax.set_yticks(range(grid.shape[0]))
    fig.suptitle("Paths from each input pixel to the centre output unit (red: receptive field)")
    fig.tight_layout()
    return fig


def plot_kernels(kernels: Mapping[str, torch.Tensor], title: str) -> Figure:
    """Heat maps of 2-D kernels side by side, on one symmetric colour scale (blue < 0 < red)."""
    fig, axes = plt.subplots(1, len(kernels), figsize=(3.9 * len(kernels), 3.8), squeeze=False,
                             layout="constrained")
    vmax = max(float(k.abs().max()) for k in kernels.values())
    for ax, (name, kernel) in zip(axes[0], kernels.items(), strict=True):
        image = ax.imshow(kernel.detach().cpu().float().numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("kernel column")
        ax.set_ylabel("kernel row")
        ax.set_xticks(range(kernel.shape[1]))
        ax.set_yticks(range(kernel.shape[0]))
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="weight value")
    fig.suptitle(title)
    return fig


def plot_rf_by_layer(table: pd.DataFrame, input_size: int = 224) -> Figure:
    """Receptive field and jump of every conv and pool row of :func:`receptive_field_table`."""
    rows = table[table["type"].isin(["Conv2d", "MaxPool2d", "AvgPool2d"])]
    fig, (ax_rf, ax_jump) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    colours = [JUMP_COLOUR if "Pool" in t else RF_COLOUR for t in rows["type"]]
    bars = ax_rf.bar(rows["layer"], rows["rf"], color=colours, edgecolor="black", linewidth=0.5)
    ax_rf.bar_label(bars, fontsize=8, padding=2)
    ax_rf.axhline(input_size, color="black", linestyle="--", linewidth=1)
    ax_rf.text(0, input_size + 6, f"input: {input_size} pixels", fontsize=9)
    ax_rf.set_ylim(0, max(input_size, int(rows["rf"].max())) * 1.15)
    ax_rf.set_title("Theoretical receptive field per layer (blue: 3x3/1x1 conv, orange: 2x2 max-pool)")
    ax_rf.set_ylabel("receptive field side (pixels)")
    ax_jump.step(rows["layer"], rows["jump"], where="mid", color=JUMP_COLOUR, linewidth=2)
    ax_jump.plot(rows["layer"], rows["jump"], "o", color=JUMP_COLOUR)
    ax_jump.set_yscale("log", base=2)
    ax_jump.yaxis.set_major_formatter(ScalarFormatter())
    ax_jump.set_title("Jump: input pixels between neighbouring units (doubles at each pool)")
    ax_jump.set_ylabel("jump (pixels, log2 scale)")
    ax_jump.set_xlabel("layer")
    ax_jump.tick_params(axis="x", rotation=90)
    fig.tight_layout()
    return fig


def plot_gradient_maps(
    maps: Mapping[str, torch.Tensor],
    boxes: Mapping[str, tuple[tuple[int, int], tuple[int, int]]] | None = None,
    title: str = "",
    origin: tuple[int, int] = (0, 0),
) -> Figure:
    """Input-gradient maps side by side; ``boxes`` (rows, cols inclusive) are outlined in red.

    ``origin``: the input (row, col) of each map's top-left pixel, for maps cut out of a larger
    gradient (``grad[80:140, 80:140]`` has origin ``(80, 80)``). The axes then show the input's own
    pixel coordinates, and ``boxes`` are given in those coordinates too.
    """
    r_off, c_off = origin
    fig, axes = plt.subplots(1, len(maps), figsize=(4.6 * len(maps), 4.9), squeeze=False,
                             layout="constrained")
    for ax, (name, grad) in zip(axes[0], maps.items(), strict=True):
        grad = grad.detach().cpu().float()
        h, w = grad.shape[-2:]
        # extent puts pixel (i, j) of the map at input coordinates (r_off + i, c_off + j)
        extent = (c_off - 0.5, c_off + w - 0.5, r_off + h - 0.5, r_off - 0.5)
        ax.imshow(((grad > 0).float() * 0.25 + grad / grad.max() * 0.75).numpy(), cmap="magma",
                  extent=extent)
        if boxes and name in boxes:
            (r0, r1), (c0, c1) = boxes[name]
            ax.add_patch(
                Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                          edgecolor=ERF_COLOUR, linewidth=1.5)
            )
        ax.set_title(textwrap.fill(name, 46), fontsize=10)
        ax.set_xlabel("input column (pixels)")
        ax.set_ylabel("input row (pixels)")
    fig.suptitle(textwrap.fill(title or "|d unit / d input| (dark: zero; red box: theoretical receptive field)", 90))
    return fig


def plot_erf_maps(erfs: Sequence[EffectiveRF], title: str, columns: int = 4, zoom: bool = True) -> Figure:
    """Effective-receptive-field maps with the theoretical field (solid) and the ``mass`` square
    (dashed) outlined. ``zoom`` crops each panel to about 1.3 x its receptive field (axes keep
    input-pixel coordinates), so fields of every depth are visible; ``zoom=False`` shows the image."""
    rows = math.ceil(len(erfs) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.7 * rows), squeeze=False)
    for ax in axes.flat[len(erfs):]:
        ax.axis("off")
    for ax, erf in zip(axes.flat, erfs, strict=False):
        grad_map = erf.map
        top, left = 0, 0
        if zoom:
            half = max(erf.rf * 0.65, 12)
            top = max(0, int(erf.centre[0] - half))
            left = max(0, int(erf.centre[1] - half))
            grad_map = grad_map[top : int(erf.centre[0] + half) + 1, left : int(erf.centre[1] + half) + 1]
        h, w = grad_map.shape
        ax.imshow(grad_map.numpy(), cmap="magma", extent=(left - 0.5, left + w - 0.5, top + h - 0.5, top - 0.5))
        _square(ax, erf.centre, erf.rf, edgecolor=RF_COLOUR, linewidth=1.5)
        _square(ax, erf.centre, erf.size, edgecolor="white", linewidth=1.2, linestyle="--")
        ax.set_xlim(left - 0.5, left + w - 0.5)
        ax.set_ylim(top + h - 0.5, top - 0.5)
        ax.set_title(f"{erf.layer}: rf {erf.rf}, {round(erf.mass * 100)}% in {erf.size}", fontsize=10)
        ax.set_xlabel("input column (pixels)")
        ax.set_ylabel("input row (pixels)")
    fig.suptitle(f"{title}\n(blue: theoretical receptive field; white dashed: square holding "
                 f"{round(erfs[0].mass * 100)}% of the mean |gradient|)")
    fig.tight_layout()
    return fig


def plot_erf_profile(erf: EffectiveRF, title: str = "") -> Figure:
    """The ERF's column profile (summed over rows) against a Gaussian of the measured sigma."""
    profile = erf.map.sum(0).double()
    xs = torch.arange(profile.numel(), dtype=torch.float64)
    mean = float((profile * xs).sum())
    sigma_x = float(torch.sqrt((profile * (xs - mean) ** 2).sum()))
    gauss = torch.exp(-((xs - mean) ** 2) / (2 * sigma_x**2)) / (sigma_x * math.sqrt(2 * math.pi))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    half = erf.rf / 2
    ax.axvspan(erf.centre[1] - half, erf.centre[1] + half, color=RF_COLOUR, alpha=0.12,
               label=f"theoretical receptive field ({erf.rf} px)")
    ax.plot(xs.numpy(), profile.numpy(), color=ERF_COLOUR, linewidth=2, label="ERF profile (mean |gradient|)")
    ax.plot(xs.numpy(), gauss.numpy(), color="black", linestyle="--", linewidth=1,
            label=f"Gaussian, sigma = {sigma_x:.1f} px")
    ax.set_title(title or f"{erf.layer}: effective receptive field profile")
    ax.set_xlabel("input column (pixels)")
    ax.set_ylabel("share of the gradient per column")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_erf_growth(
    df: pd.DataFrame,
    x: str = "layer",
    title: str = "",
    xlabel: str = "layer",
    other: pd.DataFrame | None = None,
    other_label: str = "pretrained",
) -> Figure:
    """Left: theoretical rf, the 95% and 50% ERF squares and 2 sigma by depth; right: their ratios
    to the rf. ``df`` has the columns of :meth:`EffectiveRF.summary` (``rf``, ``erf_95%``,
    ``erf_50%``, ``sigma``) and ``x``; ``other`` (same columns) adds a second set of 95% squares,
    e.g. for trained weights."""
    fig, (ax_size, ax_ratio) = plt.subplots(1, 2, figsize=(13, 4.6))
    ax_size.plot(df[x], df["rf"], "o-", color=RF_COLOUR, label="theoretical receptive field")
    series = [(df, "erf_95%", "ERF: square with 95% of |gradient|", "-", ERF_COLOUR),
              (df, "erf_50%", "ERF: square with 50%", "--", ERF_COLOUR),
              (df, "2sigma", "ERF: 2 sigma", ":", "black")]
    if other is not None:
        series.append((other, "erf_95%", f"ERF 95%, {other_label}", "-", OTHER_COLOUR))
    for data, col, label, style, colour in series:
        values = 2 * data["sigma"] if col == "2sigma" else data[col]
        ax_size.plot(data[x], values, style, marker=".", color=colour, label=label)
        ax_ratio.plot(data[x], values / data["rf"], style, marker=".", color=colour, label=label)
    ax_size.set_title(title or "Receptive field and effective receptive field")
    ax_size.set_ylabel("side (input pixels)")
    ax_ratio.set_title("ERF as a fraction of the theoretical receptive field")
    ax_ratio.set_ylabel("ERF side / rf side")
    ax_ratio.set_ylim(0, 1.05)
    for ax in (ax_size, ax_ratio):
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        if not pd.api.types.is_numeric_dtype(df[x]):
            ax.tick_params(axis="x", rotation=90)
    fig.tight_layout()
    return fig
