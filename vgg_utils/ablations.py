"""The paper's ablations (Tables 3-4) as a small grid: plan, train, test at several scales.

Taught in ``04_training.ipynb``; run from the command line with ``python -m vgg_utils.experiments``
(see :mod:`vgg_utils.experiments`). Four experiments, each a set of runs that differ in one thing:

- ``lrn``: A vs A-LRN (local response normalisation does not help);
- ``depth``: A, B, D, E (11, 13, 16, 19 weight layers: deeper is better, until it saturates);
- ``1x1``: C vs D (same depth; 1x1 convs in C, 3x3 in D: spatial context matters);
- ``jitter``: D trained at a fixed scale S vs with S jittered per image, each tested at several
  test scales Q and multi-scale (softmax averaged over the Qs), as in Tables 3 and 4.

A run is (configuration, training scale, seed); runs shared by two experiments (D at the default
S is in ``depth``, ``1x1`` and ``jitter``) are trained once. Every net has batch norm and the
compact head (global average pooling + one linear layer), so it accepts any test size Q: the
equivalent of the paper's dense evaluation, where the FC layers become convolutions and the
class scores are averaged over the positions.

The figure of one experiment (:func:`vgg_utils.plot_experiment`) is in :mod:`vgg_utils.ablations_plots`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from .augment import PaperAugment
from .data import ImageTensors
from .models import build_vgg, count_params
from .runtime import seed_everything
from .training import predict, train

#: Which configurations each experiment compares; ``"S"`` stands for the default training scale.
EXPERIMENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "lrn": (("A", "S"), ("A-LRN", "S")),
    "depth": (("A", "S"), ("B", "S"), ("D", "S"), ("E", "S")),
    "1x1": (("C", "S"), ("D", "S")),
    "jitter": (("D", "32"), ("D", "S"), ("D", "32-48")),
}

#: The paper's Table 3: top-1 validation error (%) on ILSVRC-2012, single test scale.
#: Keys: (config, training scale S as in the paper). Jittered nets were tested at Q = 384.
PAPER_TABLE3 = {
    ("A", "256"): 29.6,
    ("A-LRN", "256"): 29.7,
    ("B", "256"): 28.7,
    ("C", "256"): 28.1,
    ("C", "384"): 28.1,
    ("C", "256-512"): 27.3,
    ("D", "256"): 27.0,
    ("D", "384"): 26.8,
    ("D", "256-512"): 25.6,
    ("E", "256"): 27.3,
    ("E", "384"): 26.9,
    ("E", "256-512"): 25.5,
}
#: Table 4: top-1 validation error (%) with multi-scale testing (Q in {S-32, S, S+32}, or
#: {S_min, (S_min+S_max)/2, S_max} for jittered nets).
PAPER_TABLE4 = {
    ("B", "256"): 28.2,
    ("C", "256"): 27.7,
    ("C", "384"): 27.8,
    ("C", "256-512"): 26.3,
    ("D", "256"): 26.6,
    ("D", "384"): 26.5,
    ("D", "256-512"): 24.8,
    ("E", "256"): 26.9,
    ("E", "384"): 26.7,
    ("E", "256-512"): 24.8,
}

PROVENANCE_COLUMNS = [
    "command", "git_commit", "device", "precision", "dataset", "wall_time_s", "date",
    "torch_version", "threads", "size_label",
]  # fmt: skip
SETTING_COLUMNS = [
    "n_train", "n_test", "epochs", "width", "batch_size", "lr", "schedule", "weight_decay",
    "batch_norm", "head", "default_scale",
]  # fmt: skip
RUN_COLUMNS = [
    "experiments", "config", "seed", "train_scale", "test_scale", "test_acc", "test_error",
    "train_acc", "train_seconds", "params",
]  # fmt: skip
COLUMNS = RUN_COLUMNS + SETTING_COLUMNS + PROVENANCE_COLUMNS
MULTI = "multi"


def parse_scale(text: str | int | Sequence[int]) -> int | tuple[int, int]:
    """``"40"`` -> 40 (fixed S); ``"32-48"`` -> (32, 48) (S jittered in [32, 48])."""
    if isinstance(text, int) and not isinstance(text, bool):
        value: int | tuple[int, int] = text
    elif isinstance(text, (tuple, list)) and len(text) == 2:
        value = (int(text[0]), int(text[1]))
    else:
        try:
            parts = [int(p) for p in str(text).split("-")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            raise ValueError(f"a training scale is 'S' (e.g. '40') or 'Smin-Smax' (e.g. '32-48'); got {text!r}")
        value = parts[0] if len(parts) == 1 else (parts[0], parts[1])
    lo, hi = (value, value) if isinstance(value, int) else value
    if not 0 < lo <= hi:
        raise ValueError(f"a training scale needs 0 < S_min <= S_max; got {text!r}")
    return value


def scale_label(scale: int | tuple[int, int]) -> str:
    """The CSV's spelling of a training scale: ``"40"`` or ``"32-48"``."""
    return str(scale) if isinstance(scale, int) else f"{scale[0]}-{scale[1]}"


def plan_runs(experiments: Sequence[str], default_scale: str = "40") -> list[tuple[str, str, list[str]]]:
    """The distinct runs ``(config, train scale label, [experiments])`` the experiments need."""
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown or not experiments:
        raise ValueError(f"unknown experiments {unknown or experiments!r}; valid: {list(EXPERIMENTS)}")
    default = scale_label(parse_scale(default_scale))
    runs: dict[tuple[str, str], list[str]] = {}
    for name in experiments:
        for config, scale in EXPERIMENTS[name]:
            key = (config, default if scale == "S" else scale)
            runs.setdefault(key, []).append(name)
    return [(config, scale, names) for (config, scale), names in runs.items()]


@torch.inference_mode()
def evaluate_scales(
    model: torch.nn.Module, augment: PaperAugment, test: ImageTensors, test_scales: Sequence[int]
) -> dict[str, float]:
    """Accuracy at each test scale Q (whole image rescaled so its side is Q) and multi-scale
    (class posteriors averaged over the Qs, as in the paper's Table 4)."""
    labels = test.labels.to(next(model.parameters()).device)
    accuracy, probs = {}, 0
    for q in test_scales:
        augment.test_scale = q
        p = predict(model, test, transform=augment.test).softmax(dim=1)
        accuracy[str(q)] = (p.argmax(1) == labels).float().mean().item()
        probs = probs + p
    augment.test_scale = None
    accuracy[MULTI] = (probs.argmax(1) == labels).float().mean().item()  # type: ignore[union-attr]
    return accuracy


def run_one(
    config: str,
    scale: str,
    seed: int,
    train_data: ImageTensors,
    test_data: ImageTensors,
    *,
    epochs: int,
    width: float,
    batch_size: int,
    lr: float,
    weight_decay: float = 5e-4,
    schedule: str = "onecycle",
    test_scales: Sequence[int] = (32, 40, 48),
    device: torch.device | str | None = None,
) -> tuple[dict[str, float], float, float, int]:
    """Train one net and test it: ``(accuracy per test scale, final train accuracy, seconds,
    parameters)``. Crops are the stored image size; ``scale`` is the training scale S."""
    seed_everything(seed)
    model = build_vgg(config, len(train_data.classes), batch_norm=True, width=width, head="compact")
    crop = int(train_data.images.shape[-1])
    augment = PaperAugment.from_data(train_data, crop, parse_scale(scale), seed=seed)
    tic = time.perf_counter()
    history = train(
        model, train_data, None, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, schedule=schedule, augment=augment, device=device, seed=seed,
        progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - tic
    accuracy = evaluate_scales(model, augment, test_data, test_scales)
    return accuracy, float(history["train_acc"].iloc[-1]), seconds, count_params(model)


def run_grid(
    experiments: Sequence[str] = tuple(EXPERIMENTS),
    *,
    train_data: ImageTensors,
    test_data: ImageTensors,
    seeds: Sequence[int] = (0,),
    epochs: int = 2,
    width: float = 0.25,
    batch_size: int = 128,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    schedule: str = "onecycle",
    default_scale: str = "40",
    test_scales: Sequence[int] = (32, 40, 48),
    device: torch.device | str | None = None,
    provenance: dict | None = None,
    out: str | os.PathLike | None = None,
    done: pd.DataFrame | None = None,
    log=print,
) -> pd.DataFrame:
    """Train every run of ``experiments`` for every seed; one row per (run, test scale).

    ``provenance``: columns copied into every row (see :data:`PROVENANCE_COLUMNS`). ``out``: a
    CSV rewritten after every run, so an interrupted grid keeps what it finished. ``done``: rows
    of an earlier, interrupted grid; their runs are not trained again. Taught in
    ``04_training.ipynb``.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed, e.g. seeds=(0,)")
    if any(isinstance(q, bool) or not isinstance(q, int) or q < 32 for q in test_scales) or not test_scales:
        raise ValueError(f"test_scales must be integers >= 32 (the nets pool 5 times); got {test_scales!r}")
    runs = plan_runs(experiments, default_scale)
    settings = {
        "n_train": len(train_data), "n_test": len(test_data), "epochs": epochs, "width": width,
        "batch_size": batch_size, "lr": lr, "schedule": schedule, "weight_decay": weight_decay,
        "batch_norm": True, "head": "compact", "default_scale": scale_label(parse_scale(default_scale)),
    }  # fmt: skip
    provenance = dict(provenance or {})
    rows = [] if done is None else done.to_dict("records")
    finished = {(r["config"], str(r["train_scale"]), int(r["seed"])) for r in rows}
    start = time.perf_counter() - float(provenance.get("wall_time_s") or 0)
    total = len(runs) * len(seeds)
    for i, (seed, (config, scale, names)) in enumerate(((s, r) for s in seeds for r in runs), 1):
        if (config, scale, seed) in finished:
            log(f"[{i}/{total}] {config} S={scale} seed={seed}: already in the CSV, skipped")
            continue
        accuracy, train_acc, seconds, params = run_one(
            config, scale, seed, train_data, test_data, epochs=epochs, width=width,
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule=schedule,
            test_scales=test_scales, device=device,
        )  # fmt: skip
        for q, acc in accuracy.items():
            rows.append({
                "experiments": ";".join(names), "config": config, "seed": seed, "train_scale": scale,
                "test_scale": q, "test_acc": acc, "test_error": 100 * (1 - acc),
                "train_acc": train_acc, "train_seconds": seconds, "params": params, **settings,
            })  # fmt: skip
        accs = ", ".join(f"Q={q}: {100 * a:.1f}%" for q, a in accuracy.items())
        log(f"[{i}/{total}] {config} S={scale} seed={seed}: {seconds:.0f} s, {accs}")
        provenance["wall_time_s"] = round(time.perf_counter() - start, 1)
        table = _table(rows, provenance)
        if out is not None:
            _write(table, out)
    provenance["wall_time_s"] = round(time.perf_counter() - start, 1)
    table = _table(rows, provenance)
    if out is not None:
        _write(table, out)
    return table


def _table(rows: list[dict], provenance: dict) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    for key, value in provenance.items():
        table[key] = value
    return table.reindex(columns=COLUMNS)


def _write(table: pd.DataFrame, out: str | os.PathLike) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)  # atomic: a reader never sees half a CSV


def grid_provenance(results: pd.DataFrame) -> pd.Series:
    """How a grid's CSV was made (the provenance columns of its first row), ready to print.

    A local path in ``dataset`` (where the machine that ran the grid kept its copy of CIFAR-10)
    is left out: it names a folder of that machine, nothing a reader has. Taught in
    ``04_training.ipynb``.
    """
    keys = ["size_label", "dataset", "device", "precision", "threads", "torch_version", "git_commit",
            "date", "wall_time_s", "command"]  # fmt: skip
    missing = [k for k in keys if k not in results.columns]
    if missing:
        raise ValueError(f"not a grid CSV written by vgg_utils.experiments: no column(s) {missing}")
    first = results.iloc[0][keys].copy()
    first["dataset"] = re.sub(r" in [^\s,)]*[/\\][^\s,)]*", "", str(first["dataset"]))
    return first


def summarize(results: pd.DataFrame, test_scale: str | None = None) -> pd.DataFrame:
    """Mean and spread over seeds of the test error (%), one row per (run, test scale).

    ``test_scale``: keep one test scale (e.g. ``"40"`` or ``"multi"``); default: all.
    """
    df = results.copy()
    df["test_scale"] = df["test_scale"].astype(str)
    df["train_scale"] = df["train_scale"].astype(str)
    if test_scale is not None:
        df = df[df["test_scale"] == str(test_scale)]
    grouped = df.groupby(["config", "train_scale", "test_scale"], sort=False)["test_error"]
    out = grouped.agg(error_mean="mean", error_min="min", error_max="max", seeds="count")
    return out.reset_index()


#: Our runs beside the paper's: (config, our train S, our test Q, paper S, paper Q, paper table).
#: Our S = 40 (crop 32) plays the paper's S = 256 (crop 224); S in [32, 48] its [256; 512]. Our
#: S = 32 (no rescaling) has no real counterpart: it is listed beside the paper's other fixed scale,
#: S = 384 (1.71x the crop), for completeness only; notebook 04 leaves those rows out.
PAPER_PAIRS = (
    ("A", "40", "40", "256", "256", 3), ("A-LRN", "40", "40", "256", "256", 3),
    ("B", "40", "40", "256", "256", 3), ("C", "40", "40", "256", "256", 3),
    ("D", "40", "40", "256", "256", 3), ("E", "40", "40", "256", "256", 3),
    ("D", "32", "32", "384", "384", 3), ("D", "32-48", "40", "256-512", "384", 3),
    ("D", "40", MULTI, "256", "224,256,288", 4), ("D", "32", MULTI, "384", "352,384,416", 4),
    ("D", "32-48", MULTI, "256-512", "256,384,512", 4),
)  # fmt: skip


def compare_with_paper(results: pd.DataFrame) -> pd.DataFrame:
    """Our test error (mean and range over seeds) beside the paper's top-1 val. error (Tables
    3-4) for the matching configuration and scales; runs missing from ``results`` are left out."""
    summary = summarize(results).set_index(["config", "train_scale", "test_scale"])
    rows = []
    for config, s, q, paper_s, paper_q, table in PAPER_PAIRS:
        if (config, s, q) not in summary.index:
            continue
        ours = summary.loc[(config, s, q)]
        paper = (PAPER_TABLE3 if table == 3 else PAPER_TABLE4)[(config, paper_s)]
        rows.append({
            "config": config, "train S": s, "test Q": q, "error % (mean)": ours["error_mean"],
            "min": ours["error_min"], "max": ours["error_max"], "seeds": int(ours["seeds"]),
            "paper S": paper_s, "paper Q": paper_q, "paper top-1 error %": paper,
            "paper table": table,
        })  # fmt: skip
    return pd.DataFrame(rows)
