"""How transferable are VGG's features, block by block? Yosinski et al. (2014) at CPU size.

Taught in ``06_transfer_learning.ipynb``; the full grid runs from the command line with
``python -m vgg_utils.experiments transferability`` (see :mod:`vgg_utils.experiments`).

The classes of a dataset are split into two halves, A and B (CIFAR-10: the first five and the last
five). A base net is trained on each half (``baseA``, ``baseB``). Then, for ``k`` = 1..5, a new
net for B copies blocks 1..k of a base net, and the rest starts from random weights:

- ``BnB``: blocks from ``baseB`` (the net's own task), frozen; the rest trained on B. If this is
  worse than ``baseB``, the copied blocks were *co-adapted* with the layers above them, which
  cannot be relearned on top of them ("fragile co-adaptation", in the middle of the net);
- ``AnB``: blocks from ``baseA`` (the other task), frozen; the rest trained on B. Worse than
  ``BnB`` measures how *specific* to task A the features of blocks 1..k are;
- ``BnB+``, ``AnB+``: the same, but every layer is fine-tuned on B (nothing frozen).

``k = 0`` copies nothing: that is ``baseB`` itself. Every net is VGG16 (config D) with batch norm.
Training uses no augmentation (only the training set's mean RGB subtracted), so the frozen blocks'
outputs can be cached (:func:`vgg_utils.cache_features`): a frozen run costs a fraction of a full
one, and gives the same result as training through the frozen blocks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from .ablations import PROVENANCE_COLUMNS, _write
from .augment import mean_rgb, subtract_mean
from .data import ImageTensors, to_float
from .models import VGG, build_vgg, count_params
from .runtime import seed_everything
from .training import evaluate
from .transfer import Preprocess, _sequence, fine_tune

#: The four kinds of transferred net (Yosinski et al.'s names).
VARIANTS = ("BnB", "BnB+", "AnB", "AnB+")
RUN_COLUMNS = [
    "variant", "k", "seed", "source", "fine_tuned", "trained", "trainable_params", "test_acc",
    "test_error", "train_acc", "train_seconds",
]  # fmt: skip
SETTING_COLUMNS = [
    "classes_a", "classes_b", "n_train_half", "n_test_half", "epochs", "source_epochs", "width",
    "head", "batch_size", "lr", "schedule", "weight_decay",
]  # fmt: skip
COLUMNS = RUN_COLUMNS + SETTING_COLUMNS + PROVENANCE_COLUMNS


def class_halves(data: ImageTensors, first: Sequence[int] | None = None) -> tuple[ImageTensors, ImageTensors]:
    """``(A, B)``: the images of the classes in ``first`` (default: the first half of the
    classes) and of the others, each relabelled 0..K-1 in class order."""
    k = len(data.classes)
    first = list(range(k // 2)) if first is None else sorted(first)
    if not first or len(first) == k or len(set(first)) != len(first) or not all(0 <= c < k for c in first):
        raise ValueError(f"first must name some but not all of the {k} classes (0..{k - 1}); got {first!r}")
    halves = []
    for members in (first, [c for c in range(k) if c not in first]):
        lookup = torch.full((k,), -1, dtype=torch.int64)
        lookup[members] = torch.arange(len(members))
        mapped = lookup[data.labels.cpu()]
        keep = torch.nonzero(mapped >= 0).flatten()
        halves.append(ImageTensors(data.images[keep], mapped[keep], [data.classes[c] for c in members],
                                   f"{data.source} [{', '.join(data.classes[c] for c in members)}]"))  # fmt: skip
    return halves[0], halves[1]


def frozen_mode(k: int) -> str:
    """The :func:`vgg_utils.freeze` mode that freezes blocks 1..k: ``"all"`` trains everything
    (k = 0), ``"block3"`` freezes blocks 1-2, ``"classifier"`` freezes all five."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 5:
        raise ValueError(f"k (blocks frozen) must be an integer from 0 to 5; got {k!r}")
    return {0: "all", 5: "classifier"}.get(k, f"block{k + 1}")


def copy_blocks(source: VGG, target: VGG, k: int) -> list[str]:
    """Copy the weights (and batch-norm statistics) of conv blocks 1..k from ``source`` into
    ``target``; returns the module paths copied. Nets whose blocks 1..k differ (configuration,
    width, batch norm) are refused before anything is copied, naming the first difference."""

    def blocks(model: VGG) -> list[tuple[str, str, nn.Module]]:
        return [(stage, path, m) for stage, path, m in _sequence(model) if stage.startswith("block") and int(stage[5:]) <= k]

    def layout(seq: list[tuple[str, str, nn.Module]]) -> list[tuple]:
        return [(stage, path, type(m).__name__, {n: tuple(v.shape) for n, v in m.state_dict().items()})
                for stage, path, m in seq]  # fmt: skip

    src, dst = blocks(source), blocks(target)
    ours, theirs = layout(src), layout(dst)
    if ours != theirs:
        # Pad the shorter with None ("has no more layers") so a missing layer is named too.
        n = max(len(ours), len(theirs))
        ours, theirs = ours + [None] * (n - len(ours)), theirs + [None] * (n - len(theirs))
        differ = next((a, b) for a, b in zip(ours, theirs, strict=True) if a != b)
        raise ValueError(
            f"copy_blocks needs blocks 1..{k} laid out alike in both nets (same configuration, width and "
            f"batch norm); the first difference: source {_describe(differ[0])}, target {_describe(differ[1])}"
        )
    pairs = [(path, s, t) for (_, path, s), (_, _, t) in zip(src, dst, strict=True)]
    with torch.no_grad():
        for _, s, t in pairs:
            for key, tensor in s.state_dict().items():
                t.state_dict()[key].copy_(tensor)
    return [path for path, s, _ in pairs if s.state_dict()]


def _describe(entry: tuple | None) -> str:
    if entry is None:
        return "has no more layers"
    stage, path, kind, shapes = entry
    weight = f" with weight {shapes['weight']}" if "weight" in shapes else ""
    return f"{path} ({stage}) is {kind}{weight}"


def _net(num_classes: int, width: float, head: str, seed: int) -> VGG:
    seed_everything(seed)  # every fresh net of a seed starts from the same random weights
    return build_vgg("D", num_classes, batch_norm=True, width=width, head=head,
                     fc_width=max(64, int(512 * width)), input_size=32 if head == "paper" else None)  # fmt: skip


def run_transferability(
    train_data: ImageTensors,
    test_data: ImageTensors,
    *,
    first: Sequence[int] | None = None,
    ks: Sequence[int] = (1, 2, 3, 4, 5),
    variants: Sequence[str] = VARIANTS,
    seeds: Sequence[int] = (0,),
    epochs: int = 4,
    source_epochs: int | None = None,
    width: float = 0.25,
    head: str = "compact",
    batch_size: int = 128,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    device: torch.device | str | None = None,
    provenance: dict | None = None,
    out=None,
    log=print,
) -> pd.DataFrame:
    """The experiment, one row per trained net: ``baseA`` and ``baseB`` (``k = 0``), then every
    variant for every ``k`` in ``ks``, for every seed. ``test_acc`` is on the test images of the
    net's own half (B for all but ``baseA``). ``source_epochs``: the base nets' epochs (default
    ``epochs``). One-cycle SGD at peak ``lr``; no augmentation (the training set's mean RGB is
    subtracted). ``out``: a CSV rewritten after every net; ``provenance`` is copied into every
    row. Taught in ``06_transfer_learning.ipynb``.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown variants {unknown or variants!r}; valid: {VARIANTS}")
    for k in ks:
        if frozen_mode(k) == "all":
            raise ValueError("ks are the blocks copied, 1 to 5 (k = 0 is baseB, always trained)")
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed, e.g. seeds=(0,)")
    a_train, b_train = class_halves(train_data, first)
    a_test, b_test = class_halves(test_data, first)
    mean = mean_rgb(train_data.images)
    preprocess = Preprocess(lambda x: subtract_mean(to_float(x), mean.to(x.device)))
    settings = {
        "classes_a": ";".join(a_train.classes), "classes_b": ";".join(b_train.classes),
        "n_train_half": len(b_train), "n_test_half": len(b_test), "epochs": epochs,
        "source_epochs": source_epochs or epochs, "width": width, "head": head,
        "batch_size": batch_size, "lr": lr, "schedule": "onecycle", "weight_decay": weight_decay,
    }  # fmt: skip
    provenance = dict(provenance or {})
    options = dict(preprocess=preprocess, lr=lr, batch_size=batch_size, device=device,
                   weight_decay=weight_decay, schedule="onecycle")  # fmt: skip
    rows: list[dict] = []
    start = time.perf_counter()
    total = len(seeds) * (2 + len(ks) * len(variants))

    def record(net, variant, k, seed, source, mode, history, test, seconds) -> None:
        acc = evaluate(net, test, transform=preprocess).accuracy
        rows.append({
            "variant": variant, "k": k, "seed": seed, "source": source, "fine_tuned": mode == "all" and k > 0,
            "trained": mode, "trainable_params": count_params(net, trainable_only=True), "test_acc": acc,
            "test_error": 100 * (1 - acc), "train_acc": float(history["train_acc"].iloc[-1]),
            "train_seconds": round(seconds, 2), **settings,
        })  # fmt: skip
        log(f"[{len(rows)}/{total}] {variant} k={k} seed={seed}: {100 * acc:.1f}% ({seconds:.0f} s)")
        flush()

    def flush() -> pd.DataFrame:  # the table so far, with the wall time so far; written to `out`
        provenance["wall_time_s"] = round(time.perf_counter() - start, 1)
        table = pd.DataFrame(rows).assign(**provenance).reindex(columns=COLUMNS)
        if out is not None:
            _write(table, out)
        return table

    for seed in seeds:
        base = {}
        for half, train_half, test_half in (("A", a_train, a_test), ("B", b_train, b_test)):
            net = _net(len(train_half.classes), width, head, seed)
            tic = time.perf_counter()
            history = fine_tune(net, train_half, train="all", epochs=source_epochs or epochs, seed=seed, **options)
            record(net, f"base{half}", 0, seed, half, "all", history, test_half, time.perf_counter() - tic)
            base[half] = net
        for k in ks:
            for variant in variants:
                net = _net(len(b_train.classes), width, head, seed)
                copy_blocks(base[variant[0]], net, k)
                mode = "all" if variant.endswith("+") else frozen_mode(k)
                tic = time.perf_counter()
                history = fine_tune(net, b_train, train=mode, epochs=epochs, seed=seed, **options)
                record(net, variant, k, seed, variant[0], mode, history, b_test, time.perf_counter() - tic)
    return flush()


def summarize_transferability(results: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy (%) on B over seeds: one row per variant, one column per k (k = 0 is
    ``baseB`` for every variant), plus ``baseA`` on A for reference."""
    _check_results(results)
    acc = results.assign(acc=100 * results["test_acc"])
    base_b = acc[acc["variant"] == "baseB"]["acc"].mean()
    table = acc[acc["variant"].isin(VARIANTS)].pivot_table(index="variant", columns="k", values="acc", aggfunc="mean")
    table.insert(0, 0, base_b)
    table = table.reindex([v for v in VARIANTS if v in table.index])
    table.columns.name = "k (blocks copied)"
    return table


def _check_results(results: pd.DataFrame) -> None:
    missing = [c for c in ("variant", "k", "seed", "test_acc") if c not in results.columns]
    if missing:
        raise ValueError(f"results lack columns {missing}; pass the table of run_transferability or its CSV")
    if not (results["variant"] == "baseB").any():
        raise ValueError("results have no baseB run (k = 0): the reference every variant starts from")
