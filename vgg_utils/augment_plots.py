"""Figures of augmentation: image grids (rows of images, optional crop boxes, true pixel scale).

Taught in ``04_training.ipynb`` (crops at several training scales S, scale jittering, flips and
colour shifts on real pixels). Plumbing only: the augmentations themselves are in
:mod:`vgg_utils.augment`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle


def plot_image_grid(
    rows: Mapping[str, Sequence[torch.Tensor] | torch.Tensor],
    *,
    titles: Mapping[str, Sequence[str]] | None = None,
    boxes: Mapping[str, Sequence[tuple[float, float, float, float] | None]] | None = None,
    same_scale: bool = False,
    suptitle: str | None = None,
    cell: float = 1.5,
):
    """One row of images per entry of ``rows`` (label -> images ``(3, H, W)`` float in [0, 1];
    values outside are clipped, so add the mean back first). ``titles``: a title per image.
    ``boxes``: ``(x0, y0, x1, y1)`` rectangles to draw (e.g. the crop), or ``None``.
    ``same_scale``: every axis spans the largest image, so a 48-pixel image looks 1.5x a 32-pixel
    one (what rescaling to S does). Returns the figure.
    """
    if not rows:
        raise ValueError("rows is empty; pass {'row label': [image, ...], ...}")
    lists = {label: list(images) for label, images in rows.items()}
    for label, images in lists.items():
        for image in images:
            if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
                raise ValueError(
                    f"row {label!r}: every image must be a (3, H, W) or (1, H, W) tensor; "
                    f"got {getattr(image, 'shape', type(image).__name__)}"
                )
    columns = max(len(images) for images in lists.values())
    size = max(max(im.shape[-2:]) for images in lists.values() for im in images)
    fig, axes = plt.subplots(
        len(lists), columns, figsize=(cell * columns + 1.2, cell * len(lists) + 0.4), squeeze=False
    )
    for r, (label, images) in enumerate(lists.items()):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images):
                ax.axis("off")
                continue
            image = images[c].detach().float().cpu().clamp(0, 1)
            h, w = image.shape[-2:]
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), extent=(0, w, h, 0),
                      interpolation="nearest", cmap="gray")  # fmt: skip
            if same_scale:
                ax.set_xlim(0, size)
                ax.set_ylim(size, 0)
                for side in ax.spines.values():
                    side.set_visible(False)
                ax.add_patch(Rectangle((0, 0), w, h, fill=False, ec="0.3", lw=0.8))
            if boxes is not None and label in boxes and c < len(boxes[label]) and boxes[label][c]:
                x0, y0, x1, y1 = boxes[label][c]
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.5))
            if titles is not None and label in titles and c < len(titles[label]):
                ax.set_title(titles[label][c], fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
