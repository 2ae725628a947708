"""Figures for the interpretability notebook: plot layout only, every number comes from the caller.

Taught in ``07_interpretability.ipynb``. Images are ``(3, H, W)`` floats in [0, 1] (add the mean
back after pre-processing); maps are ``(H, W)`` or ``(N, H, W)``; boxes are ``(x0, y0, x1, y1)``
pixel edges. Each function returns its figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .explain_metrics import PerturbationCurve, SanityCheck

BOX_COLOUR = "#FFD700"
MAP_CMAP = "inferno"


def _rgb(image: torch.Tensor):
    return image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def _box(ax, box, **style) -> None:
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec=BOX_COLOUR, lw=1.2, **style))


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_feature_maps(
    image: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    *,
    channels: int = 4,
    box: Sequence[float] | None = None,
    title: str | None = None,
) -> Figure:
    """One column per layer (``maps``: name -> ``(C, h, w)`` of one image): the mean over channels,
    then the ``channels`` most active channels. Every map is drawn over the image's extent (a 6x6
    map covers the same 96x96 pixels), with the object's ``box``, so position can be compared."""
    h, w = image.shape[-2:]
    fig, axes = plt.subplots(channels + 1, len(maps) + 1, figsize=(1.6 * (len(maps) + 1), 1.6 * (channels + 1)),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat:
        _blank(ax)
    axes[0, 0].imshow(_rgb(image), extent=(0, w, h, 0), interpolation="nearest")
    _box(axes[0, 0], box)
    axes[0, 0].set_title("input", fontsize=9)
    for ax in axes[1:, 0]:
        ax.axis("off")
    for col, (name, fmap) in enumerate(maps.items(), start=1):
        fmap = fmap.detach().float().cpu()
        top = fmap.flatten(1).mean(1).argsort(descending=True)[:channels].tolist()
        panels = [("mean of all", fmap.mean(0))] + [(f"channel {c}", fmap[c]) for c in top]
        for row, (label, panel) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel.numpy(), extent=(0, w, h, 0), cmap=MAP_CMAP, interpolation="nearest")
            _box(ax, box)
            ax.set_title(f"{name} {fmap.shape[1]}x{fmap.shape[2]}" if row == 0 else label, fontsize=8)
    fig.suptitle(title or "feature maps, drawn over the image (yellow: the object's box)")
    fig.tight_layout()
    return fig


def plot_filters(weight: torch.Tensor, *, title: str | None = None, columns: int = 16) -> Figure:
    """First-layer filters ``(C_out, 3, k, k)`` as RGB patches, each scaled to [0, 1] on its own."""
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(f"weight must be a first conv layer's (C_out, 3, k, k); got {tuple(weight.shape)}")
    w = weight.detach().float().cpu()
    lo = w.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = w.flatten(1).amax(1).view(-1, 1, 1, 1)
    patches = (w - lo) / (hi - lo).clamp_min(1e-12)
    rows = -(-len(w) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(0.6 * columns, 0.65 * rows + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        _blank(ax)
        if i < len(w):
            ax.imshow(_rgb(patches[i]), interpolation="nearest")
        else:
            ax.axis("off")
    fig.suptitle(title or f"{len(w)} first-layer filters ({w.shape[-1]}x{w.shape[-1]}, RGB)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_explanations(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    *,
    boxes: torch.Tensor | None = None,
    row_titles: Sequence[str] | None = None,
    mark_max: bool = True,
    title: str | None = None,
) -> Figure:
    """One row per image: the image, then each method's map (``maps``: name -> ``(N, H, W)``);
    the box in yellow and each map's maximum as a cyan cross (the pointing game's point)."""
    n = len(images)
    fig, axes = plt.subplots(n, len(maps) + 1, figsize=(1.6 * (len(maps) + 1), 1.6 * n + 0.4), squeeze=False)
    for r in range(n):
        h, w = images[r].shape[-2:]
        axes[r, 0].imshow(_rgb(images[r]), extent=(0, w, h, 0), interpolation="nearest")
        _box(axes[r, 0], None if boxes is None else boxes[r])
        axes[r, 0].set_ylabel(row_titles[r] if row_titles else "", fontsize=8)
        for c, (name, m) in enumerate(maps.items(), start=1):
            ax = axes[r, c]
            panel = m[r].detach().float().cpu()
            ax.imshow(panel.numpy(), extent=(0, w, h, 0), cmap=MAP_CMAP, vmin=0, vmax=1, interpolation="nearest")
            _box(ax, None if boxes is None else boxes[r])
            if mark_max:
                row, col = divmod(int(panel.flatten().argmax()), panel.shape[1])
                ax.plot(col + 0.5, row + 0.5, "x", color="cyan", ms=7, mew=2)
            if r == 0:
                ax.set_title(name, fontsize=9)
        for ax in axes[r]:
            _blank(ax)
    axes[0, 0].set_title("image", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_overlays(
    images: torch.Tensor, maps: torch.Tensor, titles: Sequence[str] | None = None, *, alpha: float = 0.5,
    title: str | None = None, columns: int | None = None,
) -> Figure:  # fmt: skip
    """Each map ``(N, H, W)`` over its image, in a single row (or ``columns`` wide)."""
    n = len(images)
    columns = columns or n
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.8 * rows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        _blank(ax)
        if i >= n:
            ax.axis("off")
            continue
        h, w = images[i].shape[-2:]
        ax.imshow(_rgb(images[i]), extent=(0, w, h, 0), interpolation="nearest")
        ax.imshow(maps[i].detach().float().cpu().numpy(), extent=(0, w, h, 0), cmap="jet", alpha=alpha, vmin=0, vmax=1,
                  interpolation="nearest")  # fmt: skip
        if titles:
            ax.set_title(titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_explanation_scores(
    pointing: Mapping[str, Mapping[str, float]],
    curves: Mapping[str, Mapping[str, PerturbationCurve]],
    *,
    baseline: str = "centre",
    title: str | None = None,
) -> Figure:
    """Three panels: pointing-game hit rates per method (``pointing``: group -> {method: rate},
    e.g. all images and small objects), then the mean deletion and insertion curves with their
    areas in the legend."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    groups = list(pointing)
    methods = list(next(iter(pointing.values())))
    width = 0.8 / len(groups)
    for g, group in enumerate(groups):
        xs = [i + g * width for i in range(len(methods))]
        bars = axes[0].bar(xs, [pointing[group][m] for m in methods], width, label=group)
        for bar, m in zip(bars, methods, strict=True):
            if m == baseline:
                bar.set_hatch("//")
    axes[0].set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(methods))], methods, rotation=30, ha="right")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("hit rate")
    axes[0].legend(fontsize=8, loc="lower left")
    axes[0].set_title(f"pointing game (hatched: the {baseline} baseline)", fontsize=10)
    for ax, kind, better in ((axes[1], "deletion", "lower"), (axes[2], "insertion", "higher")):
        for name, pair in curves.items():
            c = pair[kind]
            style = "--" if name == baseline else "-"
            ax.plot(c.fractions.numpy(), c.probs.mean(0).numpy(), style, label=f"{name} ({c.mean_auc:.3f})")
        ax.set_xlabel(f"share of pixels {'deleted' if kind == 'deletion' else 'inserted'}, most salient first")
        ax.set_ylabel("class probability (mean over images)")
        ax.set_title(f"{kind} curves: area in brackets, {better} is better", fontsize=10)
        ax.legend(fontsize=8)
        ax.set_ylim(0, 1.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_sanity_check(result: SanityCheck, image: torch.Tensor, index: int = 0, *, title: str | None = None) -> Figure:
    """Top: each method's map of image ``index`` as the model is randomised from the top down
    (one row per method, one column per stage); bottom: the mean rank correlation with the
    original map after each stage."""
    methods, stages = list(result.maps), result.stages
    fig = plt.figure(figsize=(1.3 * (len(stages) + 1), 1.35 * len(methods) + 3.2))
    grid = fig.add_gridspec(len(methods) + 1, len(stages) + 1, height_ratios=[1] * len(methods) + [2.2])
    h, w = image.shape[-2:]
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(_rgb(image), extent=(0, w, h, 0), interpolation="nearest")
    ax.set_title("image", fontsize=8)
    _blank(ax)
    for r, method in enumerate(methods):
        for c, stage in enumerate(stages, start=1):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(result.maps[method][stage][index].detach().cpu().numpy(), cmap=MAP_CMAP, vmin=0, vmax=1,
                      interpolation="nearest")  # fmt: skip
            _blank(ax)
            if r == 0:
                ax.set_title(stage if c == 1 else f"+ {stage}", fontsize=8)
            if c == 1:
                ax.set_ylabel(method, fontsize=8)
    ax = fig.add_subplot(grid[len(methods), :])
    table = result.table
    for method in methods:
        rows = table[table["method"] == method]
        ax.plot(rows["stage"], rows["rank_corr"], "o-", label=method)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_ylim(-0.2, 1.05)
    ax.set_ylabel("rank correlation\nwith the original map")
    ax.set_xlabel("layers randomised so far (cumulative, from the top)")
    ax.legend(fontsize=8)
    fig.suptitle(title or "sanity check (Adebayo et al. 2018): randomise the weights, see which maps change")
    fig.tight_layout()
    return fig
