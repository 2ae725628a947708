"""Training as the paper did it (Sec. 3.1), in one loop a learner can read top to bottom.

Taught in ``04_training.ipynb``. Mini-batch SGD with momentum 0.9 and weight decay 5e-4,
dropout 0.5 on FC6/FC7 (in :func:`vgg_utils.build_vgg`), and a learning rate divided by 10 when
the validation accuracy stops improving (``schedule="plateau"``); ``schedule="onecycle"`` is the
modern alternative that reaches the same accuracy in far fewer epochs. The data sit on the device
as tensors; each batch is sliced from a random permutation and augmented there (see
:mod:`vgg_utils.augment`). bf16 autocast and channels-last memory are switched on where they pay:
CUDA GPUs, and CPUs that multiply bf16 natively (AMX or AVX512-BF16).

Also here: :func:`evaluate`, :func:`confusion_matrix`, and :func:`init_from_shallower`, the
paper's trick of starting a deep net from a trained configuration A. Checkpoints that resume a run
exactly are in :mod:`vgg_utils.training_checkpoints`, the learning-curve and confusion-matrix
figures in :mod:`vgg_utils.training_plots`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageTensors, to_float
from .runtime import (
    cpu_fast_bf16,
    get_device,
    module_device,
    progress_bar,
    restore_training_flags,
    training_flags,
)
from .training_checkpoints import CheckpointError, _load_for_resume, _save, load_checkpoint  # noqa: F401 (re-export)

SCHEDULES = ("plateau", "onecycle", "constant")
HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"]


class Evaluation(NamedTuple):
    loss: float  # mean cross-entropy
    accuracy: float  # fraction correct, 0-1


# --- where bf16 and channels-last pay ------------------------------------------------------------


def auto_bf16(device: torch.device | str) -> bool:
    """bf16 autocast by default where it pays: CUDA GPUs that support it and CPUs with native bf16
    (:func:`cpu_fast_bf16`; measured on an AVX512-BF16 EPYC, one core, VGG-A/4 at 32x32: 1.4x
    alone, 2.2x with channels-last); not on MPS, whose bf16 support depends on the macOS version."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_fast_bf16()


def auto_channels_last(device: torch.device | str) -> bool:
    """NHWC memory where convolution kernels prefer it: CUDA (tensor cores) and bf16 CPUs."""
    device = torch.device(device)
    return device.type == "cuda" or (device.type == "cpu" and cpu_fast_bf16())


_INFERRED = "tensors (classes inferred from the labels)"


def _as_tensors(data, name: str) -> ImageTensors:
    if isinstance(data, ImageTensors):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        images, labels = data[0], data[1]
        if len(data) == 3:
            return ImageTensors(images, labels, data[2], "tensors")
        classes = [str(i) for i in range(int(torch.as_tensor(labels).max()) + 1)]
        return ImageTensors(images, labels, classes, _INFERRED)
    raise TypeError(
        f"{name} must be an ImageTensors (e.g. from load_cifar10 or ShapesDataset) or a tuple "
        f"(images, labels[, classes]); got {type(data).__name__}"
    )


def _check_outputs(outputs: int, data: ImageTensors, who: str) -> None:
    """The model must score exactly the data's classes (at least its labels, when the classes
    were only inferred from them): else say what to change, before a loss function fails with
    ``IndexError: Target 7 is out of bounds`` (or, on a GPU, a device-side assert)."""
    k = len(data.classes)
    if outputs == k or (data.source == _INFERRED and outputs >= k):
        return
    names = ", ".join(data.classes[:4]) + (", ..." if k > 4 else "")
    raise ValueError(
        f"{who}: the model outputs {outputs} class scores but the data has {k} classes ({names}). "
        f"Build the model for them, e.g. build_vgg(..., num_classes={k}), or give a trained model "
        f"a new last layer with vgg_utils.replace_head(model, {k})"
    )


# --- evaluation ----------------------------------------------------------------------------------


def predict(
    model: nn.Module,
    data: ImageTensors | tuple,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 500,
    bf16: bool | None = None,
) -> torch.Tensor:
    """Logits ``(N, num_classes)`` (float32, on the model's device) for every image, in eval mode."""
    return _predict(model, _as_tensors(data, "data"), transform, batch_size, bf16, check=None)


@torch.inference_mode()
def _predict(model, data: ImageTensors, transform, batch_size: int, bf16, *, check: str | None):
    """:func:`predict`; with ``check`` (the caller's name) the first batch's outputs are checked
    against the data's classes, so a wrong head fails at once, not after a pass over all data."""
    device = module_device(model)
    bf16 = auto_bf16(device) if bf16 is None else bf16
    transform = transform or to_float
    flags = training_flags(model)
    model.eval()
    outputs = []
    try:
        for start in range(0, len(data), batch_size):
            x = transform(data.images[start : start + batch_size].to(device, non_blocking=True))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                outputs.append(model(x).float())
            if check is not None and start == 0:
                _check_outputs(outputs[0].shape[-1], data, check)
    finally:
        restore_training_flags(flags)
    return torch.cat(outputs)


def evaluate(
    model: nn.Module,
    data: ImageTensors | tuple,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 500,
    bf16: bool | None = None,
) -> Evaluation:
    """Mean cross-entropy and accuracy (0-1) of ``model`` on ``data``, on the model's device.

    ``transform`` is the test-time pre-processing (e.g. ``augment.test``; default: to float).
    """
    data = _as_tensors(data, "data")
    logits = _predict(model, data, transform, batch_size, bf16, check="evaluate")
    labels = data.labels.to(logits.device)
    loss = F.cross_entropy(logits, labels).item()
    return Evaluation(loss, (logits.argmax(1) == labels).float().mean().item())


def confusion_matrix(
    model: nn.Module,
    data: ImageTensors | tuple,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 500,
) -> torch.Tensor:
    """Counts ``(K, K)`` ``int64``: row = true class, column = predicted class (on the CPU)."""
    data = _as_tensors(data, "data")
    k = len(data.classes)
    pred = _predict(model, data, transform, batch_size, None, check="confusion_matrix").argmax(1).cpu()
    return torch.bincount(data.labels.cpu() * k + pred, minlength=k * k).reshape(k, k)


# --- the training loop ---------------------------------------------------------------------------


def train(
    model: nn.Module,
    train_data: ImageTensors | tuple,
    test_data: ImageTensors | tuple | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "plateau",
    patience: int = 2,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    bf16: bool | None = None,
    channels_last: bool | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    param_groups: list[dict] | None = None,
    label_smoothing: float = 0.0,
    nesterov: bool = False,
) -> pd.DataFrame:
    """Train ``model`` with SGD and return the history, one row per epoch.

    History columns: ``epoch, lr`` (mean over the epoch; the largest group's), ``train_loss, train_acc`` (running,
    on augmented batches in train mode), ``test_loss, test_acc`` (on ``test_data``; NaN without)
    and ``seconds``. ``schedule``: ``"plateau"`` (the paper: lr x0.1 once the test accuracy has
    not improved for more than ``patience`` epochs; the paper used its validation set), ``"onecycle"``
    (``OneCycleLR`` peaking at ``lr``) or ``"constant"``. ``augment``: a callable on a batch on
    the device, e.g. :class:`vgg_utils.PaperAugment`; its ``.test`` method, if any, pre-processes
    the test images (else they are only converted to float). The last incomplete batch of an
    epoch is dropped. ``bf16``/``channels_last``: ``None`` picks what pays on ``device`` (see
    :func:`auto_bf16`). ``checkpoint``: a file written after every epoch; with ``resume=True`` a
    run continues from it (and returns at once if it already reached ``epochs``). ``seed`` seeds
    the batch order and dropout (initialise the model before, e.g. after ``seed_everything``).
    ``param_groups``: the optimiser's parameter groups, e.g. ``[{"params": ..., "lr": 1e-3}, ...]``
    for discriminative learning rates (notebook 06); a group without ``"lr"`` uses ``lr``, and
    every schedule scales each group's rate by the same factor. Default: every parameter that
    requires a gradient, at ``lr`` (frozen parameters are left out). ``label_smoothing`` and
    ``nesterov`` are passed to the loss and to SGD (both off in the paper).
    The model is left on ``device``. Taught in ``04_training.ipynb``.
    """
    train_data = _as_tensors(train_data, "train_data")
    test_data = None if test_data is None else _as_tensors(test_data, "test_data")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "patience" else 1):
            kind = "a non-negative" if name == "patience" else "a positive"
            raise ValueError(f"{name} must be {kind} integer; got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive; got {lr}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
    if test_data is not None and test_data.source != _INFERRED and len(test_data.classes) != len(train_data.classes):
        raise ValueError(
            f"train_data has {len(train_data.classes)} classes but test_data has {len(test_data.classes)}; "
            "test on the same classes you train on"
        )
    if batch_size > len(train_data):
        raise ValueError(f"batch_size={batch_size} exceeds the {len(train_data)} training images")
    device = torch.device(device) if device is not None else get_device()
    bf16 = auto_bf16(device) if bf16 is None else bf16
    channels_last = auto_channels_last(device) if channels_last is None else channels_last
    eval_transform = getattr(augment, "test", None)
    settings = {"schedule": schedule, "lr": lr, "batch_size": batch_size, "momentum": momentum,
                "weight_decay": weight_decay, "seed": seed, "n_train": len(train_data),
                "label_smoothing": label_smoothing, "nesterov": nesterov}  # fmt: skip

    torch.manual_seed(seed)  # dropout draws from the global generator of the device
    sampler = torch.Generator().manual_seed(seed)  # batch order
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    images, labels = train_data.images.to(device), train_data.labels.to(device)
    steps = len(train_data) // batch_size
    groups = _param_groups(model, param_groups, lr)
    optimizer = torch.optim.SGD(
        groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )
    if schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], epochs=epochs, steps_per_epoch=steps
        )
    elif schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.1, patience=patience
        )
    else:
        scheduler = None

    history: list[dict] = []
    start_epoch = 0
    if checkpoint is not None and resume:
        path = Path(checkpoint)
        if path.exists():
            state = _load_for_resume(path, model, optimizer, scheduler, sampler, augment, settings, epochs)
            history, start_epoch = state["history"], state["epoch"]
        elif progress:
            print(f"no checkpoint at {path} yet: training from scratch")

    bar = progress_bar((epochs - start_epoch) * steps, progress, f"epoch {start_epoch + 1}/{epochs}", unit="batch")
    for epoch in range(start_epoch + 1, epochs + 1):
        tic = time.perf_counter()
        model.train()
        perm = torch.randperm(len(train_data), generator=sampler).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        lr_sum, seen = 0.0, 0
        if bar is not None:
            bar.set_description(f"epoch {epoch}/{epochs}")
        for step in range(steps):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            x, y = images[idx], labels[idx]
            x = augment(x) if augment is not None else to_float(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
                if step == 0:  # a shape, known without waiting for the device
                    _check_outputs(logits.shape[-1], train_data, "train")
                loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr_sum += max(g["lr"] for g in optimizer.param_groups)  # the largest group's rate
            optimizer.step()
            if schedule == "onecycle":
                scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step == steps - 1:  # .item() waits for the GPU: not every step
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")
        row = {"epoch": epoch, "lr": lr_sum / steps, "train_loss": loss_sum.item() / seen,
               "train_acc": correct.item() / seen, "test_loss": float("nan"), "test_acc": float("nan")}  # fmt: skip
        if test_data is not None:
            row["test_loss"], row["test_acc"] = evaluate(model, test_data, transform=eval_transform, bf16=bf16)
        if schedule == "plateau":
            scheduler.step(row["test_acc"] if test_data is not None else row["train_acc"])
        row["seconds"] = time.perf_counter() - tic
        history.append(row)
        if bar is not None:
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                            test_acc=f"{row['test_acc']:.3f}")  # fmt: skip
        if checkpoint is not None:
            _save(Path(checkpoint), model, optimizer, scheduler, sampler, augment, settings, epoch, history)
    if bar is not None:
        bar.close()
    return pd.DataFrame(history, columns=HISTORY_COLUMNS)


def _param_groups(model: nn.Module, param_groups: list[dict] | None, lr: float) -> list[dict]:
    """The optimiser's groups, each with its own ``lr``; checks that no parameter is in two."""
    if param_groups is None:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("every parameter of the model is frozen (requires_grad=False): nothing to train")
        return [{"params": trainable, "lr": lr}]
    groups, seen = [], set()
    for i, group in enumerate(param_groups):
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(f"param_groups[{i}] must be a dict with 'params' (and optionally 'lr'); got {group!r}")
        params = list(group["params"])
        if any(id(p) in seen for p in params):
            raise ValueError(f"param_groups[{i}] repeats a parameter of an earlier group")
        seen.update(id(p) for p in params)
        rate = group.get("lr", lr)
        if not rate > 0:
            raise ValueError(f"param_groups[{i}] has lr={rate}; learning rates must be positive")
        groups.append({**group, "params": params, "lr": rate})
    return groups


# --- the paper's initialisation of deep nets -----------------------------------------------------


def init_from_shallower(deep: nn.Module, shallow: nn.Module, *, n_convs: int = 4) -> list[str]:
    """Copy a trained shallow net's first ``n_convs`` conv layers and its FC layers into ``deep``.

    The paper (Sec. 3.1) trained configuration A from random weights, then started the deeper
    nets from it: "the first four convolutional layers and the last three fully-connected layers"
    came from A, the rest stayed random. Layers are matched by their paper names: A's first four
    convs are conv1_1, conv2_1, conv3_1, conv3_2, which exist with the same shapes in B-E.
    Batch-norm layers after the copied convs are copied too (both nets must agree on batch
    norm). With ``head="compact"`` the single FC layer is copied. Returns the copied layer names.
    Taught in ``04_training.ipynb``.
    """
    from .profiling import paper_layer_names

    deep_names, shallow_names = paper_layer_names(deep), paper_layer_names(shallow)
    deep_by_name = {name: path for path, name in deep_names.items()}
    has_bn = [any(isinstance(m, nn.BatchNorm2d) for m in net.modules()) for net in (deep, shallow)]
    if has_bn[0] != has_bn[1]:
        raise ValueError(
            f"batch norm differs: deep net batch_norm={has_bn[0]}, shallow net batch_norm={has_bn[1]}; "
            "build both with the same batch_norm"
        )
    convs = [name for name in shallow_names.values() if name.startswith("conv")][:n_convs]
    fcs = [name for name in shallow_names.values() if name.startswith("fc")]
    deep_fcs = [name for name in deep_names.values() if name.startswith("fc")]
    if fcs != deep_fcs:
        raise ValueError(f"the heads differ: shallow net has {fcs}, deep net {deep_fcs}; use the same head")
    layers = convs + [name.replace("conv", "bn") for name in convs if has_bn[0]] + fcs
    shallow_modules, deep_modules = dict(shallow.named_modules()), dict(deep.named_modules())
    pairs = []
    for name in layers:
        if name not in deep_by_name:
            raise ValueError(f"the deep net has no layer {name} to receive the shallow net's {name}")
        src = shallow_modules[next(p for p, n in shallow_names.items() if n == name)]
        dst = deep_modules[deep_by_name[name]]
        for key, tensor in src.state_dict().items():
            target = dst.state_dict()[key]
            if target.shape != tensor.shape:
                raise ValueError(
                    f"{name}.{key} has shape {tuple(tensor.shape)} in the shallow net but "
                    f"{tuple(target.shape)} in the deep net; build both with the same width, "
                    "num_classes, fc_width and input size"
                )
        pairs.append((name, src, dst))
    with torch.no_grad():  # check everything first, then copy: no half-initialised net on error
        for _, src, dst in pairs:
            for key, tensor in src.state_dict().items():
                dst.state_dict()[key].copy_(tensor)
    return [name for name, _, _ in pairs]
