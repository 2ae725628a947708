"""The built-in offline dataset: one coloured shape per image over a cluttered, textured background.

Taught in ``04_training.ipynb`` (the offline fallback to CIFAR-10) and reused where a notebook
needs images with a known object box (localisation). Ten kinds of shape at a random position,
size, rotation and colour, over a background of blotchy noise and a stripe grating crossed by
distractor strokes. A linear classifier on the raw pixels stays near chance, a small VGG learns it.

Every item is a function of ``(seed, split, index)`` alone: item ``i`` has its own random stream
(NumPy's ``SeedSequence([seed, split, i])``), so it is the same whatever ``n`` is. The stream only
draws ~350 numbers per image; the drawing itself is vectorised over a chunk of images with torch
tensor ops: a signed distance to each shape on a pixel grid, turned into an antialiased mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .image_tensors import ImageTensors

#: The ten kinds, in label order (``num_classes=k`` uses the first ``k``).
SHAPE_CLASSES = (
    "circle", "square", "triangle", "star", "cross", "ring", "hexagon", "heart", "arrow", "ellipse",
)  # fmt: skip
_SPLITS = {"train": 0, "val": 1, "test": 2}
_CHUNK = 256  # images drawn at once: bounds memory at ~50 MB for 64x64
_STROKES = 4
_NOISE_LO, _NOISE_HI = 6, 16  # side of the coarse and fine background noise grids


def _polygon(points: list[tuple[float, float]]) -> torch.Tensor:
    """Vertices scaled so the farthest one lies on the unit circle: every shape fits radius 1."""
    verts = torch.tensor(points, dtype=torch.float32)
    return verts / verts.norm(dim=1).max()


def _regular(k: int, radii: tuple[float, ...] = (1.0,)) -> torch.Tensor:
    """A regular polygon (one radius) or star (alternating radii), pointing up."""
    n = k * len(radii)
    return _polygon(
        [
            (radii[i % len(radii)] * math.cos(a), -radii[i % len(radii)] * math.sin(a))
            for i, a in enumerate(math.pi / 2 + 2 * math.pi * i / n for i in range(n))
        ]
    )


_POLYGONS = {
    "triangle": _regular(3),
    "star": _regular(5, (1.0, 0.45)),
    "hexagon": _regular(6),
    "arrow": _polygon([(-1, -0.18), (0.25, -0.18), (0.25, -0.5), (1, 0), (0.25, 0.5), (0.25, 0.18), (-1, 0.18)]),
}


def _sd_polygon(x: torch.Tensor, y: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
    """Signed distance to a polygon (negative inside), after Inigo Quilez's ``sdPolygon``:
    distance to the nearest edge, sign from the even-odd crossing test."""
    vx, vy = verts[:, 0].tolist(), verts[:, 1].tolist()
    d = (x - vx[0]) ** 2 + (y - vy[0]) ** 2
    inside = torch.zeros_like(x, dtype=torch.bool)
    for i in range(len(vx)):
        j = i - 1
        ex, ey = vx[j] - vx[i], vy[j] - vy[i]
        wx, wy = x - vx[i], y - vy[i]
        t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0, 1)
        d = torch.minimum(d, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        above, below, left = y >= vy[i], y < vy[j], ex * wy > ey * wx
        inside ^= (above & below & left) | (~above & ~below & ~left)
    return torch.where(inside, -1.0, 1.0) * d.sqrt()


def _sd_box(x: torch.Tensor, y: torch.Tensor, bx: float, by: float) -> torch.Tensor:
    qx, qy = x.abs() - bx, y.abs() - by
    return torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)


def _sd_heart(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Quilez's ``sdHeart`` (tip at the origin, lobes up to y = 1.1), centred and scaled to radius 1."""
    s = 0.674  # the heart's farthest point from (0, 0.55) in Quilez's coordinates
    px, py = x.abs() * s, 0.55 - y * s  # image y points down; the heart stands upright
    lobe = torch.hypot(px - 0.25, py - 0.75) - math.sqrt(2) / 4
    m = 0.5 * (px + py).clamp(min=0)
    body = torch.minimum(px**2 + (py - 1) ** 2, (px - m) ** 2 + (py - m) ** 2).sqrt()
    body = body * torch.sign(px - py)
    return torch.where(px + py > 1, lobe, body) / s


def _sd_ellipse(x: torch.Tensor, y: torch.Tensor, a: float = 1.0, b: float = 0.5) -> torch.Tensor:
    """Quilez's first-order approximation: exact on the boundary, which is all the mask needs."""
    k0 = torch.hypot(x / a, y / b)
    k1 = torch.hypot(x / a**2, y / b**2)
    return torch.where(k1 > 1e-6, k0 * (k0 - 1) / k1.clamp(min=1e-6), -b)  # the centre: -b


def signed_distance(kind: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) from local coordinates ``(x, y)`` to a unit-radius shape."""
    r = torch.hypot(x, y)
    if kind == "circle":
        return r - 1
    if kind == "square":
        return _sd_box(x, y, 0.7071, 0.7071)
    if kind == "cross":
        return torch.minimum(_sd_box(x, y, 0.95, 0.3), _sd_box(x, y, 0.3, 0.95))
    if kind == "ring":
        return (r - 0.72).abs() - 0.28
    if kind == "heart":
        return _sd_heart(x, y)
    if kind == "ellipse":
        return _sd_ellipse(x, y)
    if kind in _POLYGONS:
        return _sd_polygon(x, y, _POLYGONS[kind])
    raise ValueError(f"unknown shape {kind!r}; valid shapes are {SHAPE_CLASSES}")


def _draw_parameters(
    indices: list[int], seed: int, split: int, num_classes: int, image_size: int, scale: tuple
) -> dict[str, torch.Tensor]:
    """Each item's random numbers from its own stream: the only per-image Python work."""
    n_uniform = 19 + 9 * _STROKES
    rows = []
    for index in indices:
        rng = np.random.default_rng([seed, split, index])
        rows.append(rng.random(n_uniform + _NOISE_LO**2 + _NOISE_HI**2, dtype=np.float32))
    u = torch.from_numpy(np.stack(rows))
    size = image_size
    radius = (scale[0] + (scale[1] - scale[0]) * u[:, 1]) * size / 2
    bright = u[:, 5] < 0.5  # a bright shape on a dark background, or the reverse
    strokes = u[:, 19 : 19 + 9 * _STROKES].reshape(-1, _STROKES, 9)
    noise = u[:, n_uniform:]
    return {
        "label": (u[:, 0] * num_classes).long().clamp(max=num_classes - 1),
        "radius": radius,
        "cx": radius + (size - 2 * radius) * u[:, 2],  # the whole shape stays inside the image
        "cy": radius + (size - 2 * radius) * u[:, 3],
        "angle": 2 * math.pi * u[:, 4],
        "fg": _shape_colour(bright, u[:, 6:9]),
        "bg": _background_colours(bright, u[:, 9:15]),
        "shade_angle": 2 * math.pi * u[:, 18],
        "grating": _grating(u[:, 15:19]),
        "strokes": strokes,
        "stroke_xy": strokes[:, :, :4] * size,  # segment ends (x0, y0, x1, y1) in pixels
        "noise_lo": noise[:, : _NOISE_LO**2].reshape(-1, 1, _NOISE_LO, _NOISE_LO),
        "noise_hi": noise[:, _NOISE_LO**2 :].reshape(-1, 1, _NOISE_HI, _NOISE_HI),
    }


# The colour and grating rules, shared with the multi-shape scenes of vgg_utils.scenes.
def _shape_colour(bright: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """RGB ``(N, 3)`` of a shape from 3 uniforms: light on a dark background, or dark on light."""
    return torch.where(bright[:, None], 0.55 + 0.45 * u, 0.4 * u)


def _background_colours(bright: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The two background colours ``(N, 2, 3)`` the noise and stripes mix, from 6 uniforms."""
    return torch.where(bright[:, None], 0.45 * u, 0.6 + 0.4 * u).view(-1, 2, 3)


def _grating(u: torch.Tensor) -> torch.Tensor:
    """Stripe grating ``(N, 4)`` from 4 uniforms: frequency (1-5 cycles per unit length),
    orientation, phase and weight in the background mix."""
    return torch.stack([1 + 4 * u[:, 0], math.pi * u[:, 1], 2 * math.pi * u[:, 2], 0.6 * u[:, 3]], 1)


def _pixel_grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``gy (1, H, 1)``, ``gx (1, 1, W)``, to broadcast to ``(N, H, W)``."""
    gy = (torch.arange(height, dtype=torch.float32) + 0.5)[None, :, None]
    gx = (torch.arange(width, dtype=torch.float32) + 0.5)[None, None, :]
    return gy, gx


def _render(p: dict[str, torch.Tensor], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 3, S, S)`` in [0, 1] and object masks ``(N, S, S)`` from drawn parameters."""
    s = image_size
    gy, gx = _pixel_grid(s, s)
    image = _background(p, gy, gx, unit=s)
    mask = _paint_shape(image, p, gy, gx)
    return image.clamp_(0, 1), mask


def _background(p: dict[str, torch.Tensor], gy: torch.Tensor, gx: torch.Tensor, unit: float) -> torch.Tensor:
    """Backgrounds ``(N, 3, H, W)`` (not clamped): coarse and fine noise plus a stripe grating mixing
    two colours, then the distractor strokes. ``unit``: the length in pixels that the grating's
    frequency and the strokes' width refer to (the image size; scenes keep the dataset's)."""
    h, w = gy.shape[1], gx.shape[2]
    noise = 0.6 * F.interpolate(p["noise_lo"], size=(h, w), mode="bicubic", align_corners=False)
    noise = noise + 0.4 * F.interpolate(p["noise_hi"], size=(h, w), mode="bilinear", align_corners=False)
    freq, theta, phase, weight = (p["grating"][:, i, None, None] for i in range(4))
    stripes = 0.5 + 0.5 * torch.sin(
        2 * math.pi * freq * (gx * theta.cos() + gy * theta.sin()) / unit + phase
    )
    t = (weight * stripes + (1 - weight) * noise[:, 0]).clamp(0, 1)[:, None]
    image = torch.lerp(p["bg"][:, 0, :, None, None], p["bg"][:, 1, :, None, None], t)

    # Distractor strokes: line segments of any colour, under the shape so its box stays exact.
    for k in range(p["strokes"].shape[1]):
        st = p["strokes"][:, k]
        x0, y0, x1, y1 = (p["stroke_xy"][:, k, i, None, None] for i in range(4))
        half_width = (0.5 + st[:, 4, None, None] * 0.03 * unit) * (st[:, 8, None, None] < 0.8)
        dx, dy = x1 - x0, y1 - y0
        t = (((gx - x0) * dx + (gy - y0) * dy) / (dx**2 + dy**2 + 1e-6)).clamp(0, 1)
        dist = torch.hypot(gx - x0 - t * dx, gy - y0 - t * dy)
        alpha = (0.5 + half_width - dist).clamp_(0, 1)[:, None]
        image.lerp_(st[:, 5:8, None, None], alpha)  # paint the stroke over what is there
    return image


def _paint_shape(image: torch.Tensor, p: dict[str, torch.Tensor], gy: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
    """Paint shape ``i`` of ``p`` over ``image[i]`` (in place, antialiased); returns the masks ``(N, H, W)``."""
    n, h, w = len(p["label"]), gy.shape[1], gx.shape[2]
    # Local coordinates (rotated, in units of the shape's radius), then a signed distance.
    cos, sin = p["angle"].cos()[:, None, None], p["angle"].sin()[:, None, None]
    r = p["radius"][:, None, None]
    dx, dy = gx - p["cx"][:, None, None], gy - p["cy"][:, None, None]
    lx, ly = (dx * cos + dy * sin) / r, (-dx * sin + dy * cos) / r
    sd = torch.empty(n, h, w)
    for label in p["label"].unique().tolist():
        idx = (p["label"] == label).nonzero()[:, 0]
        sd[idx] = signed_distance(SHAPE_CLASSES[label], lx[idx], ly[idx])
    sd_pixels = sd * r
    alpha = (0.5 - sd_pixels).clamp(0, 1)[:, None]  # antialiased edge, one pixel wide
    sa = p["shade_angle"]
    shade = 0.85 + 0.15 * (lx * sa.cos()[:, None, None] + ly * sa.sin()[:, None, None]).clamp(-1, 1)
    image.lerp_(p["fg"][:, :, None, None] * shade[:, None], alpha)
    return sd_pixels < 0


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes ``(N, 4)`` as ``(x0, y0, x1, y1)`` pixel edges around each mask's True pixels.

    Pixel ``(row, col)`` is inside when ``y0 <= row < y1`` and ``x0 <= col < x1``.
    """
    cols, rows = masks.any(dim=1), masks.any(dim=2)
    if not bool(cols.any(dim=1).all()):
        raise ValueError("a mask is empty, so it has no box")
    size_x, size_y = cols.shape[1], rows.shape[1]
    x0 = cols.float().argmax(dim=1)
    x1 = size_x - cols.flip(1).float().argmax(dim=1)
    y0 = rows.float().argmax(dim=1)
    y1 = size_y - rows.flip(1).float().argmax(dim=1)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def render_shapes(
    indices: list[int] | range,
    *,
    image_size: int = 64,
    num_classes: int = 10,
    seed: int = 0,
    split: str = "train",
    scale: tuple[float, float] = (0.35, 0.8),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw the items at ``indices``: ``(images, labels, boxes, masks)``.

    ``images`` ``(N, 3, S, S)`` float in [0, 1]; ``labels`` ``(N,)`` int64; ``boxes`` ``(N, 4)``
    tight ``(x0, y0, x1, y1)`` pixel edges; ``masks`` ``(N, S, S)`` bool, the shape's pixels.
    Arguments as in :class:`ShapesDataset`.
    """
    _check_args(image_size, num_classes, seed, split, scale)
    indices = list(indices)
    parts = []
    for start in range(0, len(indices), _CHUNK):
        p = _draw_parameters(indices[start : start + _CHUNK], seed, _SPLITS[split], num_classes, image_size, scale)
        images, masks = _render(p, image_size)
        parts.append((images, p["label"], mask_boxes(masks), masks))
    if not parts:
        raise ValueError("indices is empty; ask for at least one item")
    return tuple(torch.cat(t) for t in zip(*parts, strict=True))  # type: ignore[return-value]


def _check_args(image_size, num_classes, seed, split, scale) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16 (pixels per side); got {image_size!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 10:
        raise ValueError(
            f"num_classes must be an integer from 2 to 10 (the first k of {SHAPE_CLASSES}); "
            f"got {num_classes!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {tuple(_SPLITS)}; got {split!r}")
    try:
        lo, hi = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a pair (lo, hi) of fractions of the image size; got {scale!r}") from None
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1 (shape diameter / image size); got {scale!r}")
    if lo * image_size < 6:
        raise ValueError(
            f"scale lo={lo} makes shapes {lo * image_size:.1f} pixels across at image_size={image_size}; "
            f"use lo >= {6 / image_size:.3f} so every shape is at least 6 pixels wide"
        )


class ShapesDataset(ImageTensors):
    """``n`` images of ten kinds of shape over clutter: the course's offline dataset.

    ``ShapesDataset(n, image_size=64, num_classes=10, seed=0, scale=(0.35, 0.8), split="train")``.
    Item ``i`` depends only on ``(seed, split, i)``: use ``split="train"`` and ``split="test"`` (or
    different seeds) for disjoint sets. ``scale`` bounds the shape's diameter as a fraction of the
    image size. Besides :class:`ImageTensors`' ``images`` (float in [0, 1], or ``uint8`` with
    ``dtype=torch.uint8``: 4x smaller), ``labels`` and ``classes``, it has ``boxes`` ``(N, 4)``:
    the tight ``(x0, y0, x1, y1)`` pixel-edge box of each shape, and with ``masks=True`` the
    shapes' pixel masks ``(N, S, S)``. (``subset`` and ``to`` return plain :class:`ImageTensors`,
    without boxes: index ``boxes`` yourself.) Taught in ``04_training.ipynb``.
    """

    def __init__(
        self,
        n: int,
        image_size: int = 64,
        num_classes: int = 10,
        seed: int = 0,
        scale: tuple[float, float] = (0.35, 0.8),
        *,
        split: str = "train",
        dtype: torch.dtype = torch.float32,
        masks: bool = False,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer (number of images); got {n!r}")
        if dtype != torch.uint8 and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a float dtype or torch.uint8; got {dtype}")
        images, labels, boxes, mask_tensor = render_shapes(
            range(n), image_size=image_size, num_classes=num_classes, seed=seed, split=split, scale=scale
        )
        if dtype == torch.uint8:
            images = images.mul(255).round_().to(torch.uint8)
        else:
            images = images.to(dtype)
        source = f"shapes {split} (seed {seed}, {image_size}x{image_size})"
        super().__init__(images, labels, list(SHAPE_CLASSES[:num_classes]), source)
        self.boxes = boxes
        self.masks = mask_tensor if masks else None
        self.seed, self.split, self.scale = seed, split, tuple(scale)
