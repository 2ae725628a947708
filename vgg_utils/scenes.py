"""Scenes of several shapes on one larger canvas, and what a fully convolutional net's score map finds.

Taught in ``05_dense_evaluation.ipynb``. A scene is a canvas (e.g. 192x256 pixels) holding a few
shapes of the built-in dataset (:mod:`vgg_utils.shapes`), each of a different class, with its
tight box, mask and label. The shapes keep the dataset's *pixel* size (radius 0.35-0.8 of 48
pixels: what the ``shapes96`` course model saw in its 96x96 training images), and the background
keeps the dataset's look at the pixel level (noise grain, stripe frequency and stroke length per
96 pixels, stroke density per area), so a net trained on single shapes recognises them; it is
drawn by the dataset's own renderer (``_background``, ``_paint_shape``, the colour rules).

Every scene is a function of ``(seed, split, index)`` alone, like the dataset's items.
:func:`score_map_pointing_game` asks, for every shape, whether its class's score map peaks inside its box:
a classifier turned into a sliding-window detector for free (the idea behind OverFeat).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from .dense import FullyConvolutionalVGG, to_fully_convolutional
from .shapes import (
    _NOISE_HI,
    _NOISE_LO,
    _SPLITS,
    _STROKES,
    SHAPE_CLASSES,
    _background,
    _background_colours,
    _grating,
    _paint_shape,
    _pixel_grid,
    _shape_colour,
    mask_boxes,
)

_SCENE_STREAM = 5  # appended to (seed, split, index): scenes never share a stream with dataset items
_GAP = 4.0  # pixels between two shapes' enclosing circles
_TRIES = 200  # placement attempts per shape before it is left out (never, at the default sizes)


def _as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 64 for v in (h, w)):
        raise ValueError(f"size must be an integer or (height, width) of at least 64 pixels; got {size!r}")
    return h, w


class ShapeScenes:
    """``n`` canvases of ``size`` (an integer or ``(height, width)``) with ``shapes`` = ``(lo, hi)``
    shapes each (distinct classes), ``radius`` = ``(lo, hi)`` pixels (the enclosing circle;
    default: the ``shapes96`` training range 16.8-38.4), ``unit``: the pixel length the background
    texture refers to (96: the training images). Attributes: ``images`` ``(n, 3, H, W)`` float in
    [0, 1]; per scene ``labels[i]`` ``(k,)``, ``boxes[i]`` ``(k, 4)`` tight ``(x0, y0, x1, y1)``
    pixel edges, ``masks[i]`` ``(k, H, W)`` bool; ``classes``. Scene ``i`` depends only on
    ``(seed, split, i)``. Taught in ``05_dense_evaluation.ipynb``.
    """

    def __init__(
        self,
        n: int,
        size: int | tuple[int, int] = (192, 256),
        shapes: tuple[int, int] = (2, 4),
        *,
        seed: int = 0,
        split: str = "test",
        num_classes: int = 10,
        radius: tuple[float, float] = (0.35 * 48, 0.8 * 48),
        unit: int = 96,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer (number of scenes); got {n!r}")
        self.size = _as_pair(size)
        lo, hi = shapes
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= num_classes):
            raise ValueError(f"shapes must be (lo, hi) with 1 <= lo <= hi <= num_classes={num_classes} (distinct classes); got {shapes!r}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {tuple(_SPLITS)}; got {split!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        if not 2 <= num_classes <= 10:
            raise ValueError(f"num_classes must be from 2 to 10 (the first k of {SHAPE_CLASSES}); got {num_classes!r}")
        r_lo, r_hi = (float(r) for r in radius)
        if not 3 <= r_lo <= r_hi <= min(self.size) / 2:
            raise ValueError(f"radius must be (lo, hi) pixels with 3 <= lo <= hi <= {min(self.size) / 2}; got {radius!r}")
        self.seed, self.split, self.shapes, self.radius, self.unit = seed, split, (lo, hi), (r_lo, r_hi), unit
        self.classes = list(SHAPE_CLASSES[:num_classes])
        h, w = self.size
        gy, gx = _pixel_grid(h, w)
        drawn = [self._draw(i, num_classes) for i in range(n)]
        background = {key: torch.stack([d[0][key] for d in drawn]) for key in drawn[0][0]}
        images = _background(background, gy, gx, unit=unit)
        self.labels, self.boxes, self.masks = [], [], []
        for i, (_, shape) in enumerate(drawn):
            masks = torch.stack([_paint_local(images[i : i + 1], one) for one in _split(shape)])
            self.labels.append(shape["label"])
            self.masks.append(masks)
            self.boxes.append(mask_boxes(masks))
        self.images = images.clamp_(0, 1)

    def _draw(self, index: int, num_classes: int) -> tuple[dict, dict]:
        """Background and shape parameters of scene ``index`` from its own random stream."""
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], index, _SCENE_STREAM])
        h, w = self.size
        u = lambda *shape: torch.from_numpy(rng.random(shape, dtype=np.float32))  # noqa: E731
        bright = torch.tensor([rng.random() < 0.5])
        # Background: as the dataset's, with noise grids and stroke count scaled to the canvas.
        lo = (max(2, round(_NOISE_LO * h / self.unit)), max(2, round(_NOISE_LO * w / self.unit)))
        hi = (max(2, round(_NOISE_HI * h / self.unit)), max(2, round(_NOISE_HI * w / self.unit)))
        n_strokes = max(1, round(_STROKES * h * w / self.unit**2))
        strokes = u(n_strokes, 9)
        start = strokes[:, :2] * torch.tensor([w, h])
        # The dataset's segments join two uniform points of a unit-sized image: keep that length.
        end = start + (strokes[:, 2:4] - strokes[:, :2]) * self.unit
        background = {
            "bg": _background_colours(bright, u(1, 6))[0],
            "grating": _grating(u(1, 4))[0],
            "strokes": strokes,
            "stroke_xy": torch.cat([start, end], dim=1),
            "noise_lo": u(1, *lo),
            "noise_hi": u(1, *hi),
        }
        k = int(rng.integers(self.shapes[0], self.shapes[1] + 1))
        labels = rng.choice(num_classes, size=k, replace=False)
        r_lo, r_hi = self.radius
        placed: list[tuple[float, float, float]] = []
        kept = []
        for j in range(k):
            r = r_lo + (r_hi - r_lo) * float(rng.random())
            for _ in range(_TRIES):
                cx, cy = r + (w - 2 * r) * float(rng.random()), r + (h - 2 * r) * float(rng.random())
                if all(math.hypot(cx - x, cy - y) >= r + q + _GAP for x, y, q in placed):
                    placed.append((cx, cy, r))
                    kept.append(j)
                    break
        n = len(placed)
        shape = {
            "label": torch.as_tensor(labels[kept], dtype=torch.int64),
            "radius": torch.tensor([p[2] for p in placed], dtype=torch.float32),
            "cx": torch.tensor([p[0] for p in placed], dtype=torch.float32),
            "cy": torch.tensor([p[1] for p in placed], dtype=torch.float32),
            "angle": 2 * math.pi * u(n),
            "fg": _shape_colour(bright.expand(n), u(n, 3)),
            "shade_angle": 2 * math.pi * u(n),
        }
        return background, shape

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        h, w = self.size
        count = sum(len(b) for b in self.labels)
        return f"ShapeScenes(n={len(self)}, size={h}x{w}, shapes={count}, split={self.split!r}, seed={self.seed})"


def _paint_local(image: torch.Tensor, one: dict[str, torch.Tensor]) -> torch.Tensor:
    """Paint one shape over ``image`` ``(1, 3, H, W)`` in place, computing only the square around
    its enclosing circle (the antialiased edge is zero beyond half a pixel); its mask ``(H, W)``."""
    h, w = image.shape[-2:]
    r, cx, cy = float(one["radius"]), float(one["cx"]), float(one["cy"])
    y0, y1 = max(0, math.floor(cy - r - 2)), min(h, math.ceil(cy + r + 2))
    x0, x1 = max(0, math.floor(cx - r - 2)), min(w, math.ceil(cx + r + 2))
    local = dict(one, cx=one["cx"] - x0, cy=one["cy"] - y0)
    gy, gx = _pixel_grid(y1 - y0, x1 - x0)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[y0:y1, x0:x1] = _paint_shape(image[:, :, y0:y1, x0:x1], local, gy, gx)[0]
    return mask


def _split(shape: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """One parameter dict per shape (batch of one), to paint them one after another."""
    return [{key: value[j : j + 1] for key, value in shape.items()} for j in range(len(shape["label"]))]


# --- what the score map finds ----------------------------------------------------------------------


@torch.inference_mode()
def score_maps(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    step: int | None = None,
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class score maps of the fully convolutional ``model`` (a VGG is converted first) over whole
    images (float in [0, 1] or ``uint8``) at their own size: ``(maps, ys, xs)`` with ``maps``
    ``(N, classes, h, w)`` logits and ``ys``, ``xs`` the input-pixel centres of their windows.

    ``step``: pixels between windows; the net's own is its stride (32). A divisor of it, e.g. 16,
    runs the net on the image shifted by every multiple of ``step`` below the stride and
    interleaves the maps ("shift and stitch", OverFeat's fine stride): ``(stride / step)^2``
    passes for a map that many times denser. Taught in ``05_dense_evaluation.ipynb``.
    """
    net = model if isinstance(model, FullyConvolutionalVGG) else to_fully_convolutional(model)
    step = step or net.stride
    if isinstance(step, bool) or not isinstance(step, int) or step < 1 or net.stride % step:
        raise ValueError(f"step must be a divisor of the net's stride {net.stride} (e.g. {net.stride // 2}); got {step!r}")
    device = next(net.parameters()).device
    h, w = images.shape[-2:]
    net.check_input(images[:1].float())
    fine = torch.empty(len(images), net.num_classes, (h - net.crop_size) // step + 1, (w - net.crop_size) // step + 1)
    ratio = net.stride // step
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        x = preprocess(x) if preprocess is not None else x
        for sy in range(ratio):
            for sx in range(ratio):
                dy, dx = sy * step, sx * step
                if h - dy < net.crop_size or w - dx < net.crop_size:
                    continue
                out = net(x[..., dy:, dx:]).float().cpu()  # windows at 32 i + dy, 32 j + dx
                fine[start : start + len(x), :, sy::ratio, sx::ratio] = out
    half = net.crop_size / 2
    return fine, torch.arange(fine.shape[-2]) * step + half, torch.arange(fine.shape[-1]) * step + half


def score_map_pointing_game(
    model: torch.nn.Module,
    scenes: ShapeScenes,
    *,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    step: int | None = None,
) -> pd.DataFrame:
    """For every shape of every scene, where its class's score map peaks: one row per shape with
    ``scene``, ``label``, ``class``, ``box`` (x0, y0, x1, y1), the peak's window centre
    ``peak_x``, ``peak_y`` (pixels), ``hit`` (the peak lies inside the shape's box),
    ``reachable`` (some window centre lies inside the box: a hit is possible at all) and
    ``centre_hit`` (the baseline that always points at the canvas centre). ``step`` as in
    :func:`score_maps`. Taught in ``05_dense_evaluation.ipynb``.
    """
    maps, ys, xs = score_maps(model, scenes.images, preprocess=preprocess, step=step)
    h, w = scenes.size
    rows = []
    for i, (labels, boxes) in enumerate(zip(scenes.labels, scenes.boxes, strict=True)):
        for label, box in zip(labels.tolist(), boxes.tolist(), strict=True):
            flat = int(maps[i, label].argmax())
            py, px = float(ys[flat // maps.shape[-1]]), float(xs[flat % maps.shape[-1]])
            x0, y0, x1, y1 = box
            rows.append({
                "scene": i, "label": label, "class": scenes.classes[label], "box": tuple(box),
                "peak_x": px, "peak_y": py, "hit": x0 <= px < x1 and y0 <= py < y1,
                "reachable": bool(((xs >= x0) & (xs < x1)).any() and ((ys >= y0) & (ys < y1)).any()),
                "centre_hit": x0 <= w / 2 < x1 and y0 <= h / 2 < y1,
            })  # fmt: skip
    return pd.DataFrame(rows)
