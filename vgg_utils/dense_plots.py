"""Figures of dense evaluation: class score maps drawn over a scene.

Taught in ``05_dense_evaluation.ipynb`` (the maps come from :func:`vgg_utils.score_maps`, the
scenes from :class:`vgg_utils.ShapeScenes`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle


def plot_score_maps(
    image: torch.Tensor,
    maps: torch.Tensor,
    ys: torch.Tensor,
    xs: torch.Tensor,
    classes: list[str],
    *,
    which: list[int] | None = None,
    boxes: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    cell: float = 2.6,
    columns: int = 5,
):
    """Each class's score map drawn over the image: ``image`` ``(3, H, W)`` in [0, 1], ``maps``
    ``(classes, h, w)`` with window centres ``ys``, ``xs`` (from :func:`score_maps`). ``which``:
    the classes to draw (default all); ``boxes``/``labels``: the true shapes, drawn in the panel
    of their class, with the map's peak (a cross). Each map is shown as a softmax over classes
    at every window (0-1), the same colour scale in every panel. Returns the figure.
    """
    which = list(range(len(classes))) if which is None else list(which)
    rows = -(-len(which) // columns)
    h, w = image.shape[-2:]
    fig, axes = plt.subplots(rows, min(columns, len(which)), squeeze=False,
                             figsize=(cell * min(columns, len(which)) * w / max(h, w) + 0.6, cell * rows * h / max(h, w) + 0.5))  # fmt: skip
    probs = maps.softmax(dim=0)
    dy = float(ys[1] - ys[0]) if len(ys) > 1 else 32.0
    dx = float(xs[1] - xs[0]) if len(xs) > 1 else 32.0
    extent = (float(xs[0]) - dx / 2, float(xs[-1]) + dx / 2, float(ys[-1]) + dy / 2, float(ys[0]) - dy / 2)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, c in zip(axes.flat, which, strict=False):
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), extent=(0, w, h, 0))
        ax.imshow(probs[c].numpy(), extent=extent, cmap="magma", vmin=0, vmax=1, alpha=0.6, interpolation="nearest")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        flat = int(maps[c].argmax())
        ax.plot(float(xs[flat % maps.shape[-1]]), float(ys[flat // maps.shape[-1]]), "c+", ms=14, mew=2.5)
        if boxes is not None and labels is not None:
            for (x0, y0, x1, y1), label in zip(boxes.tolist(), labels.tolist(), strict=True):
                if label == c:
                    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.5))
        ax.set_title(classes[c], fontsize=9)
    fig.tight_layout()
    return fig
