"""``python -m vgg_utils.experiments``: the paper's ablations from the command line, to a CSV.

Taught in ``04_training.ipynb``. Runs the grid of :mod:`vgg_utils.ablations` (experiments
``lrn``, ``depth``, ``1x1``, ``jitter``) and writes one CSV row per (run, test scale), with the
provenance of the whole grid (command, git commit, device, precision, dataset, wall time, date,
torch version, threads, settings) in every row. Usage::

    python -m vgg_utils.experiments --dataset cifar10 --n-train 25000 --epochs 6 --seeds 0 1 2
    python -m vgg_utils.experiments --quick            # a tiny smoke run on the shapes dataset

The CSV is rewritten after every run; ``--resume`` skips the runs an interrupted grid finished.
(This module is not re-exported from ``vgg_utils``, so ``python -m`` runs it without a
double-import warning; import it as ``vgg_utils.experiments``.)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from .ablations import EXPERIMENTS, RUN_COLUMNS, SETTING_COLUMNS, run_grid, summarize
from .data import ImageTensors, load_cifar10
from .runtime import REPO_ROOT, cache_dir, get_device
from .training import auto_bf16


def git_commit() -> str:
    """``git rev-parse HEAD`` of the repository, or ``"unknown"`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def device_name(device: torch.device) -> str:
    """A readable device description: the GPU's name, or the CPU and its core count."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def load_dataset(
    name: str, n_train: int | None, n_test: int | None, *, source: str = "auto", seed: int = 0
) -> tuple[ImageTensors, ImageTensors]:
    """``(train, test)`` for the grid: ``"cifar10"`` (torchvision cache, $VGG_CIFAR10_DIR copy, or a
    download) or ``"shapes"`` (the built-in offline dataset, 32x32)."""
    if name == "cifar10":
        return (
            load_cifar10("train", n_train, source=source, seed=seed),
            load_cifar10("test", n_test, source=source, seed=seed),
        )
    if name == "shapes":
        from .shapes import ShapesDataset

        kwargs = dict(image_size=32, seed=seed, dtype=torch.uint8)
        return (
            ShapesDataset(n_train or 10_000, split="train", **kwargs),
            ShapesDataset(n_test or 2_000, split="test", **kwargs),
        )
    raise ValueError(f"dataset must be 'cifar10' or 'shapes'; got {name!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vgg_utils.experiments",
        description="Run the VGG paper's ablations (LRN, depth, 1x1, scale jitter) at small scale "
        "and write one CSV row per (run, test scale).",
    )
    p.add_argument("--dataset", choices=["cifar10", "shapes"], default="cifar10")
    p.add_argument("--source", choices=["auto", "torchvision", "folder"], default="auto",
                   help="where CIFAR-10 comes from (see vgg_utils.load_cifar10)")  # fmt: skip
    p.add_argument("--n-train", type=int, default=None, help="training subset (default: all)")
    p.add_argument("--n-test", type=int, default=None, help="test subset (default: all)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--width", type=float, default=0.25, help="channel multiplier (1.0: the paper's)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--schedule", choices=["onecycle", "plateau", "constant"], default="onecycle")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    p.add_argument("--scale", default="40", help="training scale S of the architecture runs")
    p.add_argument("--test-scales", type=int, nargs="+", default=[32, 40, 48])
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--size-label", default=None, help="e.g. 'CPU-sized' (default: from the device)")
    p.add_argument("--out", default=None,
                   help="CSV path (default: data/results/ablations_<dataset>.csv; --quick: data/cache)")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="skip runs already in --out")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run: shapes, 256 train / 128 test images, 1 epoch, width 0.125")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """The command line: parse ``argv``, run the grid, write the CSV, print a summary."""
    args = _parser().parse_args(argv)
    if args.quick:
        args.dataset, args.epochs, args.width = "shapes", 1, 0.125
        args.n_train, args.n_test = args.n_train or 256, args.n_test or 128
        args.batch_size = min(args.batch_size, 64)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    if args.out:
        out = Path(args.out)
    elif args.quick:  # a smoke run is not a result: keep it out of data/results
        out = cache_dir() / "ablations_quick.csv"
    else:
        out = REPO_ROOT / "data" / "results" / f"ablations_{args.dataset}.csv"
    tic = time.perf_counter()
    train_data, test_data = load_dataset(args.dataset, args.n_train, args.n_test, source=args.source)
    print(f"{train_data.source}: {len(train_data)} train / {len(test_data)} test images "
          f"({time.perf_counter() - tic:.0f} s to load)", flush=True)  # fmt: skip
    dataset = train_data.source if args.dataset == "cifar10" else "shapes (seed 0, 32x32)"
    provenance = {
        "command": "python -m vgg_utils.experiments " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "git_commit": git_commit(),
        "device": device_name(device),
        "precision": "bf16 autocast" if auto_bf16(device) else "fp32",
        "dataset": dataset,
        "wall_time_s": 0.0,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "size_label": args.size_label or ("smoke test" if args.quick else f"{device.type.upper()}-sized"),
    }
    done = None
    if args.resume and out.is_file():
        done = pd.read_csv(out)
        provenance["wall_time_s"] = float(done["wall_time_s"].max())
        done = done[RUN_COLUMNS + SETTING_COLUMNS]
    table = run_grid(
        args.experiments, train_data=train_data, test_data=test_data, seeds=args.seeds,
        epochs=args.epochs, width=args.width, batch_size=args.batch_size, lr=args.lr,
        schedule=args.schedule, default_scale=args.scale, test_scales=args.test_scales,
        device=device, provenance=provenance, out=out, done=done,
        log=lambda line: print(line, flush=True),
    )  # fmt: skip
    print(f"wrote {len(table)} rows to {out} in {table['wall_time_s'].iloc[0]:.0f} s")
    summary = summarize(table)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    return table


if __name__ == "__main__":
    main()
