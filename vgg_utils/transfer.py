"""Transfer learning with VGG: swap the head, freeze by stage, smaller rates for earlier blocks.

Taught in ``06_transfer_learning.ipynb``. The lecture-note recipe: take a trained VGG, replace
its last FC layer (FC8) with a new one sized for your classes (:func:`replace_head`), freeze the
rest (:func:`freeze`) and train the new layer; with more data unfreeze more (``train=
"classifier"``, ``"block5"``, ... ``"all"``), giving earlier blocks smaller learning rates
(:func:`discriminative_param_groups`). While a part is frozen its outputs never change, so
:func:`cache_features` computes them once and only the rest trains (:func:`split_frozen`): that
is why a linear probe on VGG16 is cheap even on a CPU.

Frozen batch-norm and dropout layers behave as in eval mode even while the model trains (the
trainer calls ``model.train()`` every epoch): a "frozen" BN that normalised with batch statistics
and updated its running averages would not be frozen, and cached features would then differ from
the ones training sees. :func:`freeze` holds them in eval mode with a forward pre-hook, whatever
``model.train()`` says, until a later call unfreezes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from .data import ImageTensors, to_float
from .models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedUnavailableError,
    init_weights,
    load_pretrained,
)
from .runtime import get_device
from .training import predict
from .training import train as _train

#: ``freeze`` modes, from the fewest trainable parameters to all of them.
MODES = ("head", "classifier", "block5", "block4", "block3", "block2", "block1", "all")
#: Stages in forward order: five conv blocks (each ends with its max-pool), FC6-FC7, FC8.
STAGES = ("block1", "block2", "block3", "block4", "block5", "classifier", "head")
_FIRST_TRAINABLE = {"head": "head", "classifier": "classifier", "all": "block1"} | {
    f"block{k}": f"block{k}" for k in range(1, 6)
}
_HELD = (nn.modules.batchnorm._BatchNorm, nn.Dropout)


# --- what a VGG is, stage by stage ---------------------------------------------------------------


def _check_vgg(model: object, who: str) -> None:
    """A clear error for anything that is not a VGG laid out as torchvision's (and build_vgg's)."""
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "model", None), nn.Module):
        raise TypeError(f"{who} takes the network itself: pass {type(model).__name__}.model, not the {type(model).__name__}")
    features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
    pools = sum(isinstance(m, nn.MaxPool2d) for m in features) if isinstance(features, nn.Sequential) else 0
    if not (
        isinstance(model, nn.Module) and hasattr(model, "avgpool") and pools == 5
        and isinstance(classifier, nn.Sequential) and len(classifier) and isinstance(classifier[-1], nn.Linear)
    ):  # fmt: skip
        raise TypeError(
            f"{who} expects a VGG (vgg_utils.build_vgg, load_pretrained, a course model's .model or "
            "torchvision.models.vgg*): a module with .features (conv blocks, each ending in a 2x2 "
            f"max-pool, five in all), .avgpool and .classifier ending in nn.Linear; got {type(model).__name__}"
        )


def _sequence(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """``(stage, module path, module)`` in forward order; a flatten sits between avgpool and FC6."""
    seq, block = [], 1
    for idx, module in model.features.named_children():
        seq.append((f"block{block}", f"features.{idx}", module))
        if isinstance(module, nn.MaxPool2d):
            block += 1
    seq += [("pool", "avgpool", model.avgpool), ("pool", "flatten", nn.Flatten())]
    last = len(model.classifier) - 1
    for idx, module in model.classifier.named_children():
        seq.append(("head" if int(idx) == last else "classifier", f"classifier.{idx}", module))
    return seq


def _paper_names(model: nn.Module) -> dict[str, str]:
    from .profiling import paper_layer_names

    return paper_layer_names(model)  # type: ignore[arg-type]


def stage_table(model: nn.Module) -> pd.DataFrame:
    """One row per stage (``block1`` ... ``block5``, ``classifier`` = FC6-FC7, ``head`` = FC8):
    its layers (paper names), parameters, and how many of them are trainable now."""
    _check_vgg(model, "stage_table")
    names = _paper_names(model)
    rows = {s: {"stage": s, "layers": [], "params": 0, "trainable": 0} for s in STAGES}
    for stage, path, module in _sequence(model):
        if stage not in rows:
            continue
        params = list(module.parameters())
        if params and not isinstance(module, nn.modules.batchnorm._BatchNorm):
            rows[stage]["layers"].append(names.get(path, path))
        rows[stage]["params"] += sum(p.numel() for p in params)
        rows[stage]["trainable"] += sum(p.numel() for p in params if p.requires_grad)
    for row in rows.values():
        layers = row["layers"]
        row["layers"] = "-" if not layers else layers[0] if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"
    return pd.DataFrame(list(rows.values()))


# --- the recipe: new head, freeze ----------------------------------------------------------------


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the last Linear layer (FC8) with a new one for ``num_classes`` classes, freshly
    initialised as :func:`vgg_utils.build_vgg` does (N(0, 0.01), zero bias, from the global RNG:
    seed first), on the old layer's device and dtype; every other layer is kept as it was.
    Returns the model (changed in place). Taught in ``06_transfer_learning.ipynb``."""
    _check_vgg(model, "replace_head")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer (the classes of your task); got {num_classes!r}")
    old = model.classifier[-1]
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)  # fmt: skip
    model.classifier[-1] = init_weights(new)
    return model


@dataclass(frozen=True)
class FreezeReport:
    """What :func:`freeze` did: parameter counts, the first trainable layer, and how many frozen
    batch-norm and dropout layers are held in eval mode."""

    mode: str
    trainable: int
    frozen: int
    first_trainable: str
    held_in_eval: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    def __str__(self) -> str:
        share = 100 * self.trainable / self.total if self.total else 0.0
        held = f"; {self.held_in_eval} frozen batch-norm/dropout layers held in eval mode" if self.held_in_eval else ""
        return (
            f"freeze(train={self.mode!r}): {self.trainable:,} trainable ({share:.1f}%), "
            f"{self.frozen:,} frozen; trainable from {self.first_trainable} on{held}"
        )


def _hold_eval_hook(module: nn.Module, args: tuple) -> None:
    if getattr(module, "_vgg_frozen", False):
        module.training = False  # running statistics, no dropout: whatever model.train() said


def _hold_eval(module: nn.Module, held: bool, root_training: bool) -> None:
    if held:
        if not getattr(module, "_vgg_hooked", False):  # one hook per module, however often frozen
            module.register_forward_pre_hook(_hold_eval_hook)
            module._vgg_hooked = True
        module._vgg_frozen = True
        module.training = False
    elif getattr(module, "_vgg_frozen", False):
        module._vgg_frozen = False
        module.training = root_training  # back to the model's mode at once


def freeze(model: nn.Module, train: str = "head") -> FreezeReport:
    """Make only part of a VGG trainable (``requires_grad``), by stage.

    ``train``: ``"head"`` (the last Linear only: a linear probe), ``"classifier"`` (all FC
    layers), ``"block5"`` ... ``"block1"`` (that conv block and everything after it) or
    ``"all"``. Everything before is frozen, and its batch-norm and dropout layers are held in
    eval mode even in ``model.train()`` (BN keeps and uses its running statistics; dropout is
    off), so the frozen part computes a fixed function; a later call with a less restrictive
    mode (or ``"all"``) releases them. On a compact head (one Linear) ``"classifier"`` is
    ``"head"``. Returns a :class:`FreezeReport`. Taught in ``06_transfer_learning.ipynb``.
    """
    _check_vgg(model, "freeze")
    if train not in MODES:
        raise ValueError(f"unknown freeze mode {train!r}; valid modes are {MODES} (what stays trainable)")
    seq = _sequence(model)
    first = _FIRST_TRAINABLE[train]
    rank = {s: i for i, s in enumerate(STAGES)} | {"pool": 4.5}  # avgpool/flatten: after block5
    start = next(i for i, (stage, _, _) in enumerate(seq) if rank[stage] >= rank[first])
    names = _paper_names(model)
    trainable = frozen = held = 0
    first_name = None
    for i, (_, path, module) in enumerate(seq):
        is_frozen = i < start
        for p in module.parameters():
            p.requires_grad_(not is_frozen)
            if is_frozen:
                frozen += p.numel()
            else:
                trainable += p.numel()
        if not is_frozen and first_name is None and any(True for _ in module.parameters()):
            first_name = names.get(path, path)
        for m in module.modules():
            if isinstance(m, _HELD):
                _hold_eval(m, is_frozen, model.training)
                held += is_frozen
    return FreezeReport(train, trainable, frozen, first_name or "-", held)


# --- discriminative learning rates ---------------------------------------------------------------


def discriminative_param_groups(model: nn.Module, lr: float, *, decay: float = 0.5) -> list[dict]:
    """Optimiser parameter groups, one per stage with trainable parameters: the head at ``lr``,
    FC6-FC7 at ``lr * decay``, block5 at ``lr * decay**2``, ... block1 at ``lr * decay**6``.

    Early layers hold general features that need only small changes; the new head needs large
    ones. Frozen parameters are left out. Each group has ``"params"``, ``"lr"`` and ``"name"``;
    pass the list as ``train(..., param_groups=...)``. Taught in ``06_transfer_learning.ipynb``.
    """
    _check_vgg(model, "discriminative_param_groups")
    if not lr > 0:
        raise ValueError(f"lr must be positive; got {lr}")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1] (1: one rate for all); got {decay}")
    by_stage: dict[str, list[nn.Parameter]] = {s: [] for s in STAGES}
    for stage, _, module in _sequence(model):
        if stage in by_stage:
            by_stage[stage] += [p for p in module.parameters() if p.requires_grad]
    groups = []
    for depth, stage in enumerate(reversed(STAGES)):
        if by_stage[stage]:
            groups.append({"params": by_stage[stage], "lr": lr * decay**depth, "name": stage})
    if not groups:
        raise ValueError("every parameter is frozen: call freeze(model, train=...) to choose what trains")
    return groups


# --- feature caching -----------------------------------------------------------------------------


def split_frozen(model: nn.Module) -> tuple[nn.Sequential, nn.Sequential]:
    """``(frozen, rest)``: the model cut before its first trainable layer, as two Sequentials that
    share the model's own modules, so training ``rest`` trains ``model``. ``rest(frozen(x))``
    equals ``model(x)``; ``rest`` starts with a flatten when the cut is in the classifier. Call
    :func:`freeze` first. Taught in ``06_transfer_learning.ipynb``."""
    _check_vgg(model, "split_frozen")
    seq = _sequence(model)
    cut = next((i for i, (_, _, m) in enumerate(seq) if any(p.requires_grad for p in m.parameters())), None)
    if cut is None:
        raise ValueError("every parameter is frozen: nothing to train (call freeze(model, train=...))")
    if cut == 0:
        raise ValueError("nothing is frozen (block1 trains): call freeze(model, train=...) first")
    frozen = nn.Sequential(*(m for _, _, m in seq[:cut]))
    rest = [m for _, _, m in seq[cut:]]
    if seq[cut][1].startswith("classifier"):
        rest.insert(0, nn.Flatten())
    rest = nn.Sequential(*rest)
    for part in (frozen, rest):  # the containers' own mode flag follows the model's
        part.training = model.training
    return frozen, rest


def cache_features(
    frozen: nn.Module,
    data: ImageTensors,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 250,
    bf16: bool = False,
) -> ImageTensors:
    """The frozen part's outputs for every image, computed once (eval mode, no gradients, on the
    module's device; fp32 unless ``bf16``). Flat outputs are stored as ``(N, D, 1, 1)`` so the
    result is an :class:`ImageTensors` that :func:`vgg_utils.train` takes as it is: train the
    ``rest`` of :func:`split_frozen` on it. ``transform``: the pre-processing the model expects
    (e.g. a course model's ``preprocess``). Taught in ``06_transfer_learning.ipynb``."""
    out = predict(frozen, data, transform=transform, batch_size=batch_size, bf16=bf16)
    if out.dim() == 2:
        out = out[:, :, None, None]
    return ImageTensors(out, data.labels.to(out.device), data.classes, f"features of {data.source or 'images'}")


class Preprocess:
    """A deterministic pre-processing in the trainer's ``augment`` slot: the same function on
    training batches and (as ``.test``) on test images; no randomness, so features can be cached."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.fn = fn or to_float

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)

    test = __call__


def fine_tune(
    model: nn.Module,
    train_data: ImageTensors,
    test_data: ImageTensors | None = None,
    *,
    train: str = "head",
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    epochs: int = 10,
    lr: float = 0.01,
    decay: float | None = None,
    batch_size: int = 64,
    cache: bool | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = False,
    **train_kwargs,
) -> pd.DataFrame:
    """The whole recipe on a model whose head is already replaced: :func:`freeze` (``train``),
    optional discriminative rates (``decay``), then :func:`vgg_utils.train` with ``preprocess``
    on every batch (no augmentation), through the frozen layers or, with ``cache`` (default:
    whenever something is frozen), on cached features: the same result, faster. ``batch_size``
    is capped at the training-set size. Returns the training history; the model is trained in
    place and left on ``device``. Taught in ``06_transfer_learning.ipynb``."""
    freeze(model, train)
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    groups = discriminative_param_groups(model, lr, decay=decay) if decay is not None else None
    options = dict(epochs=epochs, batch_size=min(batch_size, len(train_data)), lr=lr, device=device,
                   seed=seed, progress=progress, param_groups=groups, **train_kwargs)  # fmt: skip
    if cache if cache is not None else train != "all":
        frozen, rest = split_frozen(model)
        feats = [None if d is None else cache_features(frozen, d, transform=preprocess)
                 for d in (train_data, test_data)]  # fmt: skip
        return _train(rest, feats[0], feats[1], **options)
    return _train(model, train_data, test_data, augment=Preprocess(preprocess), **options)


# --- source models -------------------------------------------------------------------------------


class ImageNetNormalize:
    """torchvision's ImageNet pre-processing: [0, 1] float, minus the mean, divided by the std."""

    def __init__(self) -> None:
        self.mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        self.std = torch.tensor(IMAGENET_STD)[:, None, None]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


@dataclass
class SourceModel:
    """A trained network to transfer from, and how to feed it: ``model`` (eval, CPU),
    ``input_size`` (the crop it was trained on), ``preprocess`` (uint8 or [0, 1] images to its
    input), ``classes`` (what it was trained to tell apart) and a one-line ``description``."""

    name: str
    model: nn.Module
    input_size: int
    preprocess: Callable[[torch.Tensor], torch.Tensor]
    classes: list[str]
    description: str


def load_source_model(prefer: str = "imagenet", *, timeout: float = 5.0) -> SourceModel:
    """torchvision's ImageNet VGG16 where it is cached or downloadable, else the course's
    ``cifar10`` model (``prefer="cifar10"``: the course model directly); prints one line saying
    which, and why. Taught in ``06_transfer_learning.ipynb``."""
    if prefer not in ("imagenet", "cifar10"):
        raise ValueError(f"prefer must be 'imagenet' (torchvision's VGG16) or 'cifar10' (the course model); got {prefer!r}")
    reason = ""
    if prefer == "imagenet":
        try:
            model = load_pretrained("D", timeout=timeout)
        except PretrainedUnavailableError as err:
            reason = "; ImageNet VGG16 weights are unavailable (" + str(err).split(" (")[0].split(". On")[0] + ")"
            reason += ", `python -m vgg_utils.download vgg16` on a connected machine fetches them"
        else:
            from .models import imagenet_categories

            description = "torchvision's ImageNet VGG16 (138,357,544 parameters, 224x224 crops)"
            print(f"source model: {description}")
            return SourceModel("imagenet-vgg16", model, 224, ImageNetNormalize(), imagenet_categories(), description)
    from .course_models import load_course_model

    course = load_course_model("cifar10")
    recipe = course.recipe
    description = (f"the course's cifar10 model (VGG16-BN at width {recipe.width:g}, {course.input_size}x"
                   f"{course.input_size} crops, {course.test_accuracy:.1%} on the CIFAR-10 test set)")  # fmt: skip
    print(f"source model: {description}{reason}")
    return SourceModel("cifar10", course.model, course.input_size, course.preprocess, course.classes, description)
