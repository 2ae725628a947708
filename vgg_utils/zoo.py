"""torchvision's model zoo as data: accuracy, parameters, operations and file size of every
ImageNet-1K classifier, read from the weight metadata shipped inside torchvision (no download).

Taught in ``03_efficiency.ipynb``, which redraws Canziani, Paszke & Culurciello (2016), "An Analysis
of Deep Neural Network Models for Practical Applications", from these numbers.
"""

from __future__ import annotations

import math
import re

import pandas as pd

#: Model-name prefix -> family, first match wins (so ``resnext`` is tried before ``resnet``).
FAMILIES: tuple[tuple[str, str], ...] = (
    ("alexnet", "AlexNet"),
    ("vgg", "VGG"),
    ("resnext", "ResNeXt"),
    ("wide_resnet", "ResNet"),
    ("resnet", "ResNet"),
    ("densenet", "DenseNet"),
    ("googlenet", "Inception"),
    ("inception", "Inception"),
    ("squeezenet", "SqueezeNet"),
    ("shufflenet", "ShuffleNet"),
    ("mobilenet", "MobileNet"),
    ("mnasnet", "MNASNet"),
    ("efficientnet", "EfficientNet"),
    ("regnet", "RegNet"),
    ("convnext", "ConvNeXt"),
    ("vit", "ViT"),
    ("swin", "Swin"),
    ("maxvit", "MaxViT"),
)

#: Columns of :func:`model_zoo_table`, in order.
ZOO_COLUMNS: tuple[str, ...] = (
    "model", "weights", "family", "params", "gmacs", "acc1", "acc5", "file_mb", "crop_size", "default",
)


def model_family(name: str) -> str:
    """The architecture family of a torchvision model name: ``"vgg16_bn"`` -> ``"VGG"``.

    Unknown names (a newer torchvision) get their alphabetic prefix, capitalised, as family.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string like 'vgg16'; got {name!r}")
    for prefix, family in FAMILIES:
        if name.startswith(prefix):
            return family
    return re.match(r"[A-Za-z]*", name).group(0).capitalize() or name


def _imagenet_metrics(meta: dict) -> tuple[float, float] | None:
    """(acc@1, acc@5) on ImageNet-1K, or None when the weights were not evaluated there."""
    metrics = meta.get("_metrics", {}).get("ImageNet-1K")
    if not metrics:
        return None
    acc1, acc5 = metrics.get("acc@1"), metrics.get("acc@5")
    if acc1 is None or acc5 is None or not (math.isfinite(acc1) and math.isfinite(acc5)):
        return None  # e.g. vgg16 IMAGENET1K_FEATURES: only the conv part is trained
    return float(acc1), float(acc5)


def model_zoo_table() -> pd.DataFrame:
    """One row per ImageNet-1K weight set of torchvision's classification models.

    Columns: ``model`` (builder name), ``weights`` (enum member, e.g. ``IMAGENET1K_V1``), ``family``,
    ``params`` (count), ``gmacs`` (torchvision's ``_ops``: billions of multiply-accumulates for one
    image at the weights' evaluation size, although torchvision's docs label it "GFLOPS"), ``acc1``
    and ``acc5`` (ImageNet-1K validation accuracy, %), ``file_mb`` (``_file_size``: the weight
    file in MiB, 2**20 bytes), ``crop_size`` (evaluation resolution in pixels) and ``default``
    (whether these are the model's ``DEFAULT`` weights).

    Only classification models (``list_models(module=torchvision.models)``: no detection,
    segmentation, video or quantized models) and only weights with finite ImageNet-1K accuracy and
    an operation count are listed; nothing is filled in.
    """
    import torchvision
    from torchvision.models import get_model_weights, list_models

    rows = []
    for name in list_models(module=torchvision.models):
        enum = get_model_weights(name)
        default = enum.DEFAULT if "DEFAULT" in enum.__members__ else None
        for weights in enum:
            meta = weights.meta
            accs = _imagenet_metrics(meta)
            if accs is None or meta.get("_ops") is None or meta.get("num_params") is None:
                continue
            crop = getattr(weights.transforms(), "crop_size", [float("nan")])
            rows.append(
                {
                    "model": name,
                    "weights": weights.name,
                    "family": model_family(name),
                    "params": int(meta["num_params"]),
                    "gmacs": float(meta["_ops"]),
                    "acc1": accs[0],
                    "acc5": accs[1],
                    "file_mb": float(meta.get("_file_size", float("nan"))),
                    "crop_size": int(crop[0]),
                    "default": weights is default,
                }
            )
    table = pd.DataFrame(rows, columns=list(ZOO_COLUMNS))
    if table[["params", "gmacs", "acc1", "acc5", "file_mb"]].isna().any().any():
        raise RuntimeError("torchvision metadata has missing numbers; this torchvision is not supported")
    return table.sort_values(["family", "model", "weights"], ignore_index=True)


def pareto_front(table: pd.DataFrame, cost: str = "gmacs", value: str = "acc1") -> pd.Series:
    """Boolean mask of the rows no other row beats: none is as cheap *and* at least as accurate
    with one of the two strictly better. Exact duplicates keep only their first row.

    Taught in ``03_efficiency.ipynb`` (the accuracy-vs-operations frontier).
    """
    for col in (cost, value):
        if col not in table.columns:
            raise ValueError(f"column {col!r} not in table; columns are {list(table.columns)}")
    # Cheapest first; among equal cost the most accurate first, so it alone can be on the front.
    order = table.sort_values([cost, value], ascending=[True, False], kind="mergesort").index
    mask = pd.Series(False, index=table.index)
    best = -math.inf
    for idx in order:
        # Every earlier row costs no more; this one survives only if it is strictly more accurate.
        if table.at[idx, value] > best:
            mask[idx] = True
            best = table.at[idx, value]
    return mask
