"""Measuring explanations: against ground truth, by perturbation, and against the model itself.

Taught in ``07_interpretability.ipynb``. A heat map is a claim about the model ("these pixels
made the score"); three ways to test it:

* **against ground truth** (:func:`pointing_game`, Zhang et al. 2016): does the map's maximum
  fall on the object? With masks, how much of the map's mass lies on the object?
* **by perturbation** (:func:`deletion_curve`, :func:`insertion_curve`, Petsiuk et al. 2018):
  delete the pixels the map ranks first and watch the class probability fall (fast = good), or
  insert them into a blurred (or blank) image and watch it rise.
* **against the model** (:func:`sanity_check`, Adebayo et al. 2018): randomise the weights from the
  top down; a map that does not change did not depend on what the model learned.

Maps are ``(N, H, W)`` tensors, as :mod:`vgg_utils.interpret` returns them.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from .interpret import METHODS, _explaining, _inputs, class_targets
from .models import init_weights
from .profiling import paper_layer_names
from .runtime import module_device

# --- against ground truth ------------------------------------------------------------------------


def _check_maps(maps: torch.Tensor) -> None:
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a tensor (N, H, W), one map per image; got {shape}")


def centre_maps(n: int, height: int, width: int) -> torch.Tensor:
    """The centre baseline: ``n`` maps that peak (1) at the image centre and fall linearly to 0 at
    the corners (Zhang et al.'s baseline "always point at the centre"); in [0, 1] like the others.
    Taught in ``07_interpretability.ipynb``."""
    ys = torch.arange(height, dtype=torch.float32) + 0.5 - height / 2
    xs = torch.arange(width, dtype=torch.float32) + 0.5 - width / 2
    distance = torch.hypot(ys[:, None], xs[None, :])
    closeness = 1 - distance / distance.max()
    return (closeness / closeness.max()).expand(n, height, width).clone()


@dataclass
class PointingResult:
    """``hits``: ``(N,)`` bool, the map's maximum within ``tolerance`` pixels of the box;
    ``hit_rate``: their mean; ``points``: ``(N, 2)`` the maxima as ``(row, col)``. With masks:
    ``on_object`` ``(N,)`` bool, the maximum on one of the object's own pixels (no tolerance), and
    ``energy`` ``(N,)``, the share of each map's sum on the object; ``None`` without masks."""

    hits: torch.Tensor
    hit_rate: float
    points: torch.Tensor
    tolerance: float
    on_object: torch.Tensor | None = None
    energy: torch.Tensor | None = None

    @property
    def on_object_rate(self) -> float | None:
        return None if self.on_object is None else float(self.on_object.float().mean())

    @property
    def mean_energy(self) -> float | None:
        return None if self.energy is None else float(self.energy.mean())


def pointing_game(
    maps: torch.Tensor,
    boxes: torch.Tensor,
    tolerance: float | None = None,
    masks: torch.Tensor | None = None,
) -> PointingResult:
    """The pointing game (Zhang et al. 2016): a hit when each map's maximum lies within
    ``tolerance`` pixels of its ground-truth box.

    ``boxes``: ``(N, 4)`` as ``(x0, y0, x1, y1)`` pixel edges (:class:`vgg_utils.ShapesDataset`'s
    ``boxes``). The maximum is the first one in reading order; its point is the pixel's centre.
    ``tolerance``: the paper's 15 pixels at 224x224; the default ``None`` scales that to the map
    (15 x side / 224: 6.4 pixels at 96x96). ``masks``: ``(N, H, W)`` bool object masks, which add
    the stricter ``on_object`` (the maximum on the shape's own pixels, so a ring's hole is a
    miss) and ``energy``, the share of the map's sum on the object (0 for an all-zero map).
    Taught in ``07_interpretability.ipynb``.
    """
    _check_maps(maps)
    n, h, w = maps.shape
    boxes = torch.as_tensor(boxes, dtype=torch.float32).cpu()
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must be (N, 4) = ({n}, 4) as (x0, y0, x1, y1); got {tuple(boxes.shape)}")
    if tolerance is None:
        tolerance = 15 * max(h, w) / 224
    if tolerance < 0:
        raise ValueError(f"tolerance is a distance in pixels, >= 0; got {tolerance}")
    flat = maps.detach().cpu().flatten(1).argmax(dim=1)
    rows, cols = flat // w, flat % w
    px, py = cols + 0.5, rows + 0.5  # the maximum pixel's centre, in pixel-edge coordinates
    x0, y0, x1, y1 = boxes.unbind(1)
    dx = torch.stack([x0 - px, torch.zeros_like(px), px - x1]).amax(0)
    dy = torch.stack([y0 - py, torch.zeros_like(py), py - y1]).amax(0)
    hits = torch.hypot(dx, dy) <= tolerance
    on_object = energy = None
    if masks is not None:
        masks = torch.as_tensor(masks).cpu().bool()
        if masks.shape != maps.shape:
            raise ValueError(f"masks must match maps {tuple(maps.shape)}; got {tuple(masks.shape)}")
        on_object = masks.flatten(1).gather(1, flat[:, None])[:, 0]
        m = maps.detach().cpu().float().clamp(min=0)
        total = m.flatten(1).sum(1)
        inside = (m * masks).flatten(1).sum(1)
        energy = torch.where(total > 0, inside / total.clamp_min(1e-12), torch.zeros_like(total))
    points = torch.stack([rows, cols], 1)
    return PointingResult(hits, float(hits.float().mean()), points, float(tolerance), on_object, energy)


# --- by perturbation -----------------------------------------------------------------------------


@dataclass
class PerturbationCurve:
    """``fractions``: ``(steps + 1,)`` share of pixels changed; ``probs``: ``(N, steps + 1)`` the
    target class's softmax probability at each step; ``auc``: ``(N,)`` area under each curve
    (trapezoid rule over fractions in [0, 1]); ``kind``: "deletion" or "insertion"."""

    kind: str
    fractions: torch.Tensor
    probs: torch.Tensor
    auc: torch.Tensor

    @property
    def mean_auc(self) -> float:
        return float(self.auc.mean())


def blurred(images: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """A Gaussian blur of each image (RISE's insertion start: kernel 11, sigma 5)."""
    return gaussian_blur(images, [kernel_size, kernel_size], [sigma, sigma])


def pixel_order(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Pixel indices ``(N, H*W)`` from the most to the least salient; ties (e.g. zeros) in a random
    order drawn with ``seed``, so a flat map does not delete rows from the top."""
    _check_maps(maps)
    flat = maps.detach().cpu().float().flatten(1)
    perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(seed))
    order = flat[:, perm].argsort(dim=1, descending=True, stable=True)
    return perm[order]


def _curve(kind, model, images, maps, class_idx, steps, start, end, seed, batch_size) -> PerturbationCurve:
    x = _inputs(model, images)
    n, c, h, w = x.shape
    if maps.shape != (n, h, w):
        raise ValueError(f"maps must be (N, H, W) = {(n, h, w)} to match the images; got {tuple(maps.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= h * w:
        raise ValueError(f"steps must be an integer from 1 to H*W = {h * w}; got {steps!r}")
    order = pixel_order(maps, seed).to(x.device)
    counts = [round(k * h * w / steps) for k in range(steps + 1)]
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=x.device).expand(n, -1))
    rank = rank.view(n, 1, h, w)  # each pixel's position in the order
    probs = torch.empty(n, steps + 1)
    with _explaining(model), torch.no_grad():
        target = class_targets(model, x, class_idx)
        per_call = max(1, batch_size // n)
        for s0 in range(0, steps + 1, per_call):
            chunk = counts[s0 : s0 + per_call]
            done = torch.cat([(rank < k).to(x.dtype) for k in chunk])  # the pixels changed so far
            batch = start.repeat(len(chunk), 1, 1, 1) * (1 - done) + end.repeat(len(chunk), 1, 1, 1) * done
            p = model(batch).softmax(dim=1).gather(1, target.repeat(len(chunk))[:, None])[:, 0]
            probs[:, s0 : s0 + len(chunk)] = p.view(len(chunk), n).T.cpu()
    fractions = torch.tensor(counts, dtype=torch.float32) / (h * w)
    auc = torch.trapezoid(probs, fractions, dim=1)
    return PerturbationCurve(kind, fractions, probs, auc)


def _fill(x: torch.Tensor, baseline: float | str | torch.Tensor) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline != "blur":
            raise ValueError(f"baseline must be a number, a tensor like the images, or 'blur'; got {baseline!r}")
        return blurred(x)
    return torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)


def deletion_curve(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_idx=None,
    *,
    steps: int = 20,
    baseline: float | str | torch.Tensor = 0.0,
    seed: int = 0,
    batch_size: int = 128,
) -> PerturbationCurve:
    """Deletion (Petsiuk et al. 2018): replace the most salient pixels first, in ``steps`` equal
    steps, and record the class probability; a **low** area under the curve means the map found
    the pixels the model needs.

    ``baseline`` replaces deleted pixels, in network-input space: ``0.0`` (default) is the
    training set's mean colour once the mean is subtracted (RISE deletes to zero, too); ``"blur"``
    uses a blurred copy. Costs ``N x (steps + 1)`` forward passes. Taught in
    ``07_interpretability.ipynb``.
    """
    x = _inputs(model, images)
    return _curve("deletion", model, x, maps, class_idx, steps, x, _fill(x, baseline), seed, batch_size)


def insertion_curve(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    class_idx=None,
    *,
    steps: int = 20,
    baseline: float | str | torch.Tensor = "blur",
    seed: int = 0,
    batch_size: int = 128,
) -> PerturbationCurve:
    """Insertion (Petsiuk et al. 2018): start from ``baseline`` (default a blurred copy, as RISE)
    and put back the most salient pixels first; a **high** area under the curve is good. The
    class is decided on the original images. Taught in ``07_interpretability.ipynb``."""
    x = _inputs(model, images)
    return _curve("insertion", model, x, maps, class_idx, steps, _fill(x, baseline), x, seed, batch_size)


# --- against the model ---------------------------------------------------------------------------


def randomisation_stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The cascade of Adebayo et al., one block at a time from the top: ``[("fc8", [paths]),
    ("fc7", ...), ("fc6", ...), ("block5", [conv, bn paths]), ..., ("block1", ...)]``. Used by
    :func:`sanity_check` (notebook 07)."""
    names = paper_layer_names(model)
    stages: dict[str, list[str]] = {}
    for path, paper in names.items():
        if paper.startswith("fc"):
            stages.setdefault(paper, []).append(path)
        elif match := re.fullmatch(r"(?:conv|bn)(\d+)_\d+", paper):
            stages.setdefault(f"block{match.group(1)}", []).append(path)
    return list(reversed(list(stages.items())))


def randomise(model: nn.Module, paths: list[str], seed: int = 0) -> nn.Module:
    """Re-initialise the modules at ``paths`` in place, as a fresh course model would be
    (:func:`vgg_utils.init_weights`; batch norm also forgets its running statistics). ``seed``
    makes it reproducible without touching the global random state. Exercise 4 of notebook 07."""
    devices = [module_device(model)] if module_device(model).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for path in paths:
            module = model.get_submodule(path)
            init_weights(module)
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
    return model


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation between paired maps ``(N, H, W)``: ``(N,)``. Ties get their
    average rank (pandas); a constant map shares no ordering with anything: 0. Taught in
    ``07_interpretability.ipynb`` (the sanity check)."""
    ra = torch.tensor(pd.DataFrame(a.detach().cpu().double().flatten(1).T.numpy()).rank().to_numpy()).T
    rb = torch.tensor(pd.DataFrame(b.detach().cpu().double().flatten(1).T.numpy()).rank().to_numpy()).T
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = ra.norm(dim=1) * rb.norm(dim=1)
    return torch.where(denom > 0, (ra * rb).sum(1) / denom.clamp_min(1e-300), torch.zeros_like(denom)).float()


@dataclass
class SanityCheck:
    """``table``: one row per (stage, method): ``stage``, ``method``, ``rank_corr`` (mean over
    images) and ``rank_corr_std``; ``maps[method][stage]``: the maps, ``"original"`` included;
    ``stages``: their order."""

    table: pd.DataFrame
    maps: dict[str, dict[str, torch.Tensor]]
    stages: list[str]


def sanity_check(
    model: nn.Module,
    images: torch.Tensor,
    methods: Mapping[str, Callable[..., torch.Tensor]] | list[str] = ("gradient", "guided backprop", "grad-cam"),
    class_idx=None,
    *,
    seed: int = 0,
) -> SanityCheck:
    """The model-randomisation test of Adebayo et al. (2018), cascading from the top.

    A copy of ``model`` has its layers re-initialised one stage at a time (FC8, FC7, FC6, then
    conv block 5 down to block 1, cumulatively; :func:`randomisation_stages`); after each stage
    every method explains the same images for the same class (the original model's prediction,
    unless ``class_idx`` is given), and :func:`rank_correlation` compares each map with the
    original's. A method that explains the *model* should decorrelate quickly; one that stays
    near 1 shows the image, not what was learned. ``methods``: names of
    :data:`vgg_utils.interpret.METHODS` or ``{name: function}``. ``model`` is not changed.
    Taught in ``07_interpretability.ipynb``.
    """
    funcs = {name: METHODS[name] for name in methods} if not isinstance(methods, Mapping) else dict(methods)
    x = _inputs(model, images)
    with _explaining(model):
        target = class_targets(model, x, class_idx)
    maps = {name: {"original": f(model, x, class_idx=target)} for name, f in funcs.items()}
    copy_ = copy.deepcopy(model).eval()
    rows, stages = [], ["original"]
    for k, (stage, paths) in enumerate(randomisation_stages(model)):
        randomise(copy_, paths, seed=seed + k)
        stages.append(stage)
        for name, f in funcs.items():
            maps[name][stage] = f(copy_, x, class_idx=target)
            corr = rank_correlation(maps[name]["original"], maps[name][stage])
            rows.append({"stage": stage, "method": name, "rank_corr": float(corr.mean()),
                         "rank_corr_std": float(corr.std()) if len(corr) > 1 else math.nan})  # fmt: skip
    return SanityCheck(pd.DataFrame(rows), maps, stages)


def explanation_table(
    model: nn.Module,
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    boxes: torch.Tensor,
    masks: torch.Tensor | None = None,
    class_idx=None,
    *,
    steps: int = 20,
    tolerance: float | None = None,
    deletion_baseline: float | str | torch.Tensor = 0.0,
    insertion_baseline: float | str | torch.Tensor = "blur",
) -> tuple[pd.DataFrame, dict[str, dict[str, PerturbationCurve]]]:
    """Every measure for every method's maps of the same images: ``(table, curves)``.

    ``table``: one row per method with ``pointing`` (hit rate, box within ``tolerance``),
    ``on_object`` and ``energy`` (with ``masks``), ``deletion_auc`` (lower is better) and
    ``insertion_auc`` (higher is better); ``curves[method]["deletion" | "insertion"]``. The
    baselines are those of :func:`deletion_curve` and :func:`insertion_curve`. Costs
    ``2 x N x (steps + 1)`` forward passes per method. Taught in ``07_interpretability.ipynb``.
    """
    rows, curves = [], {}
    for name, m in maps.items():
        score = pointing_game(m, boxes, tolerance, masks)
        curves[name] = {
            "deletion": deletion_curve(model, images, m, class_idx, steps=steps, baseline=deletion_baseline),
            "insertion": insertion_curve(model, images, m, class_idx, steps=steps, baseline=insertion_baseline),
        }
        row = {"method": name, "pointing": score.hit_rate}
        if masks is not None:
            row |= {"on_object": score.on_object_rate, "energy": score.mean_energy}
        row |= {k + "_auc": c.mean_auc for k, c in curves[name].items()}
        rows.append(row)
    return pd.DataFrame(rows).set_index("method"), curves
