"""Testing like the paper (Sec. 3.2, Tables 4-5): dense, multi-crop and multi-scale evaluation.

Taught in ``05_dense_evaluation.ipynb``. At test time the paper rescales an image so its smaller
side is Q (the *test scale*) and then either

* **dense**: runs the fully convolutional net (:func:`vgg_utils.to_fully_convolutional`) over the
  whole image, averages the class score map into one score per class, and averages the softmax
  with that of the horizontally flipped image; or
* **multi-crop**: cuts a regular 5x5 grid of training-size crops, each also flipped (50 crops per
  scale, as GoogLeNet did), and averages their softmax outputs;
* **multi-crop & dense**: averages the two; **multi-scale**: averages the softmax over several Q.

Each evaluation returns the class probabilities and the multiply-accumulates it spent, counted
by ``torch.utils.flop_counter`` while it ran (not a formula), so the costs in the notebook's
Table 5 are measured like the errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .data import ImageTensors, to_float
from .dense import FullyConvolutionalVGG, to_fully_convolutional
from .runtime import module_device

#: Table 5 of the paper: ILSVRC-2012 validation error (%), (top-1, top-5), nets trained with scale
#: jittering S in [256, 512] and tested at Q in {256, 384, 512} (multi-crop: 50 crops per scale).
PAPER_TABLE5: dict[tuple[str, str], tuple[float, float]] = {
    ("D", "dense"): (24.8, 7.5),
    ("D", "multi-crop"): (24.6, 7.5),
    ("D", "multi-crop & dense"): (24.4, 7.2),
    ("E", "dense"): (24.8, 7.5),
    ("E", "multi-crop"): (24.6, 7.4),
    ("E", "multi-crop & dense"): (24.4, 7.1),
}

PreprocessFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TestTimeResult:
    """What one test-time evaluation gave and cost.

    ``probs``: ``(N, classes)`` class posteriors (softmax outputs, averaged as the method says).
    ``macs``: multiply-accumulates spent on all ``N`` images (``torch.utils.flop_counter``).
    ``views``: network inputs per image (dense: 2 per scale with the flip; multi-crop: crops).
    ``seconds``: wall time of the network passes (for the notebook's table; tests never read it).
    """

    method: str
    scales: tuple[int, ...]
    probs: torch.Tensor
    macs: int
    views: int
    seconds: float

    __test__ = False  # not a pytest class, despite the name

    @property
    def macs_per_image(self) -> float:
        return self.macs / len(self.probs)

    def error(self, labels: torch.Tensor, k: int = 1) -> float:
        """Top-``k`` error (0-1): the true label is not among the ``k`` most probable classes."""
        top = self.probs.topk(k, dim=1).indices.cpu()
        return 1.0 - (top == labels.cpu()[:, None]).any(dim=1).float().mean().item()

    def nll(self, labels: torch.Tensor) -> float:
        """Mean negative log-probability of the true class: sensitive where the error is ~0."""
        p = self.probs.cpu().gather(1, labels.cpu()[:, None]).clamp_min(1e-12)
        return -p.log().mean().item()


def _as_fcn(model: nn.Module) -> FullyConvolutionalVGG:
    return model if isinstance(model, FullyConvolutionalVGG) else to_fully_convolutional(model)


def _images(images: torch.Tensor | ImageTensors) -> torch.Tensor:
    x = images.images if isinstance(images, ImageTensors) else images
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(
            f"images must be a batch (N, 3, H, W) or an ImageTensors; got {getattr(x, 'shape', type(x).__name__)}"
        )
    return x


def _check_scale(scale: int, net: FullyConvolutionalVGG) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < net.crop_size:
        raise ValueError(
            f"the test scale Q is the smaller image side after rescaling, an integer of at least "
            f"the training crop {net.crop_size}; got {scale!r}"
        )
    return scale


def rescale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Float images rescaled isotropically so the smaller side is ``scale`` (the paper's Q):
    bilinear with antialiasing, as :meth:`vgg_utils.PaperAugment.test` does."""
    x = to_float(images)
    h, w = x.shape[-2:]
    if min(h, w) == scale:
        return x
    size = (round(h * scale / min(h, w)), round(w * scale / min(h, w)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def crop_grid(height: int, width: int, crop: int, grid: int = 5) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of a regular ``grid x grid`` of ``crop``-sized crops spanning an
    image, first and last flush with its edges; corners that coincide (an image side equal to the
    crop) are listed once."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive integer (the paper's multi-crop uses 5); got {grid!r}")
    ys = torch.linspace(0, height - crop, grid).round().long().unique().tolist()
    xs = torch.linspace(0, width - crop, grid).round().long().unique().tolist()
    return [(y, x) for y in ys for x in xs]


def _run(net, images, scale, preprocess, batch_size, views_of, method) -> TestTimeResult:
    """Average the softmax over the views of each image, counting the MACs as they are spent.
    ``views_of(x)`` stacks ``V`` same-sized views of a batch ``x`` of ``n`` images along the batch
    dimension (view-major: ``(V * n, C, h, w)``), so one forward pass serves them all."""
    x_all = _images(images)
    device = module_device(net)
    probs, views = [], 0
    tic = time.perf_counter()
    # no_grad, not inference_mode: under inference_mode FlopCounterMode counts no FLOPs at all in
    # torch 2.5, the lower bound that `make test-oldest` tests.
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        for start in range(0, len(x_all), batch_size):
            x = rescale(x_all[start : start + batch_size].to(device), scale)
            x = preprocess(x) if preprocess is not None else x
            stacked = views_of(x)
            p = net(stacked).mean(dim=(2, 3)).float().softmax(dim=1)  # average the map, then softmax
            views = len(stacked) // len(x)
            probs.append(p.view(views, len(x), -1).mean(dim=0))
    seconds = time.perf_counter() - tic
    return TestTimeResult(method, (scale,), torch.cat(probs), counter.get_total_flops() // 2, views, seconds)


def dense_evaluation(
    model: nn.Module,
    images: torch.Tensor | ImageTensors,
    scale: int,
    *,
    preprocess: PreprocessFn | None = None,
    flip: bool = True,
    batch_size: int = 16,
) -> TestTimeResult:
    """The paper's dense evaluation at test scale Q = ``scale``: rescale, run the fully
    convolutional net over the whole image, average the score map, softmax; with ``flip`` the
    same for the mirrored image, the two posteriors averaged. ``model``: a VGG (converted with
    :func:`vgg_utils.to_fully_convolutional`) or a converted one. ``images``: ``(N, 3, H, W)``
    ``uint8`` or float in [0, 1] (all the same size), or an :class:`ImageTensors`; ``preprocess``
    maps the rescaled float batch to the net's input (e.g. a course model's ``.preprocess``).
    Taught in ``05_dense_evaluation.ipynb``.
    """
    net = _as_fcn(model)
    _check_scale(scale, net)

    def views(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.flip(-1)]) if flip else x

    return _run(net, images, scale, preprocess, batch_size, views, f"dense Q={scale}")


def multi_crop_evaluation(
    model: nn.Module,
    images: torch.Tensor | ImageTensors,
    scale: int,
    *,
    grid: int = 5,
    flip: bool = True,
    crop_size: int | None = None,
    preprocess: PreprocessFn | None = None,
    batch_size: int | None = None,
) -> TestTimeResult:
    """Multi-crop evaluation at test scale Q = ``scale``: a regular ``grid x grid`` of
    ``crop_size`` crops (default: the training crop) from the rescaled image, each also flipped
    with ``flip`` (the paper: 5 x 5 x 2 = 50 crops per scale), softmax averaged over the crops.
    Coinciding crops (an image side equal to the crop) are evaluated once. Arguments as in
    :func:`dense_evaluation`; ``batch_size`` counts images (default: about 128 crops a pass).
    Taught in ``05_dense_evaluation.ipynb``.
    """
    net = _as_fcn(model)
    _check_scale(scale, net)
    crop = crop_size or net.crop_size
    if isinstance(crop, bool) or not isinstance(crop, int) or not net.crop_size <= crop <= scale:
        raise ValueError(f"crop_size must lie between the training crop {net.crop_size} and Q={scale}; got {crop!r}")

    def views(x: torch.Tensor) -> torch.Tensor:
        crops = [x[..., y : y + crop, c : c + crop] for y, c in crop_grid(*x.shape[-2:], crop, grid)]
        return torch.cat(crops + ([c.flip(-1) for c in crops] if flip else []))

    if batch_size is None:
        h, w = _images(images).shape[-2:]
        size = (round(h * scale / min(h, w)), round(w * scale / min(h, w)))
        batch_size = max(1, 128 // (len(crop_grid(*size, crop, grid)) * (2 if flip else 1)))
    flips = " x 2 flips" if flip else ""
    return _run(net, images, scale, preprocess, batch_size, views, f"multi-crop Q={scale} ({grid}x{grid}{flips})")


def combine_evaluations(*results: TestTimeResult, method: str | None = None) -> TestTimeResult:
    """Average the class posteriors of several evaluations of the same images (each one vote), and
    add up their costs: multi-crop & dense, or multi-scale (the paper's Tables 4-5)."""
    if not results:
        raise ValueError("give at least one TestTimeResult to combine")
    shapes = {tuple(r.probs.shape) for r in results}
    if len(shapes) != 1:
        raise ValueError(f"the evaluations must cover the same images and classes; got probs shaped {sorted(shapes)}")
    scales = tuple(sorted({q for r in results for q in r.scales}))
    return TestTimeResult(
        method or " + ".join(r.method for r in results), scales,
        torch.stack([r.probs for r in results]).mean(dim=0),
        sum(r.macs for r in results), sum(r.views for r in results), sum(r.seconds for r in results),
    )  # fmt: skip


METHODS = ("dense", "multi-crop", "multi-crop & dense")


def multi_scale_evaluation(
    model: nn.Module,
    images: torch.Tensor | ImageTensors,
    scales: Sequence[int],
    *,
    method: str = "dense",
    **kwargs,
) -> TestTimeResult:
    """``method`` (``"dense"``, ``"multi-crop"`` or ``"multi-crop & dense"``) at every test scale
    in ``scales``, softmax averaged over the scales (the paper: Q in {256, 384, 512} for nets
    trained with S in [256, 512]). ``kwargs`` go to the evaluations (``preprocess``, ``grid``, ...)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if not scales:
        raise ValueError("scales is empty; give the test scales Q, e.g. (256, 384, 512)")
    net = _as_fcn(model)  # convert once for all scales
    dense_kw = {k: v for k, v in kwargs.items() if k in ("preprocess", "flip", "batch_size")}
    per_method = []
    if method != "multi-crop":
        per_method.append(combine_evaluations(*(dense_evaluation(net, images, q, **dense_kw) for q in scales),
                                              method="dense"))  # fmt: skip
    if method != "dense":
        per_method.append(combine_evaluations(*(multi_crop_evaluation(net, images, q, **kwargs) for q in scales),
                                              method="multi-crop"))  # fmt: skip
    return combine_evaluations(*per_method, method=f"{method}, Q in {{{', '.join(map(str, scales))}}}")


def evaluation_table(
    model: nn.Module,
    data: ImageTensors,
    scales: Sequence[int],
    *,
    single_scale: int | None = None,
    preprocess: PreprocessFn | None = None,
    grid: int = 5,
    flip: bool = True,
    top5: bool = False,
) -> tuple[pd.DataFrame, dict[str, TestTimeResult]]:
    """The paper's Table 5 for ``model`` on ``data``: dense, multi-crop and both, at one test scale
    (``single_scale``, default the middle of ``scales``) and over all ``scales``. Each (method, Q)
    is evaluated once and the rows combine those runs, so the MACs and seconds of a combined row
    are the sums of its parts. Returns ``(table, results)``: one row per setting with top-1 error
    (%), optionally top-5, the mean negative log-likelihood of the true class (``NLL``), views and
    MACs per image, seconds; ``results`` maps the row's name
    to its :class:`TestTimeResult`. Taught in ``05_dense_evaluation.ipynb``.
    """
    if not isinstance(data, ImageTensors):
        raise TypeError(f"data must be an ImageTensors (images and labels, e.g. ShapesDataset or load_cifar10); got {type(data).__name__}")
    scales = list(scales)
    if not scales:
        raise ValueError("scales is empty; give the test scales Q, e.g. (256, 384, 512)")
    single = single_scale if single_scale is not None else scales[len(scales) // 2]
    net = _as_fcn(model)
    dense, crops = {}, {}
    for q in dict.fromkeys([single, *scales]):
        dense[q] = dense_evaluation(net, data, q, preprocess=preprocess, flip=flip)
        crops[q] = multi_crop_evaluation(net, data, q, preprocess=preprocess, flip=flip, grid=grid)
    results: dict[str, TestTimeResult] = {}
    for label, qs in ((f"Q = {single}", [single]), ("Q in {" + ", ".join(map(str, scales)) + "}", scales)):
        d = combine_evaluations(*(dense[q] for q in qs), method="dense")
        c = combine_evaluations(*(crops[q] for q in qs), method="multi-crop")
        for name, result in (("dense", d), ("multi-crop", c), ("multi-crop & dense", combine_evaluations(c, d))):
            result.method = name
            results[f"{name}, {label}"] = result
    rows = []
    for key, r in results.items():
        name, label = key.split(", ", 1)
        row = {"evaluation": name, "test scales": label, "top-1 error %": 100 * r.error(data.labels)}
        if top5:
            row["top-5 error %"] = 100 * r.error(data.labels, 5)
        row["NLL"] = r.nll(data.labels)
        row.update({"views / image": r.views, "GMACs / image": r.macs_per_image / 1e9, "seconds": r.seconds,
                    "ms / image": 1000 * r.seconds / len(data)})  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows), results
