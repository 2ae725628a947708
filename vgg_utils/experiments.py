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

``python -m vgg_utils.experiments transferability ...`` runs the other grid, Yosinski et al.'s
layer-wise transferability (taught in ``06_transfer_learning.ipynb``, see
:mod:`vgg_utils.transferability`), to ``data/results/transferability_<dataset>.csv``::

    python -m vgg_utils.experiments transferability --dataset cifar10 --n-train 10000 --epochs 5 --seeds 0 1
    python -m vgg_utils.experiments transferability --quick
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from .ablations import EXPERIMENTS, RUN_COLUMNS, SETTING_COLUMNS, run_grid, summarize
from .data import ImageTensors, load_cifar10
from .provenance import device_name, git_commit
from .runtime import REPO_ROOT, cache_dir, get_device
from .training import auto_bf16


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
        epilog="The other grid: python -m vgg_utils.experiments transferability --help",
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


def grid_provenance(command: str, device: torch.device, dataset: str, size_label: str) -> dict:
    """The provenance columns of a grid (``wall_time_s`` is filled in as it runs)."""
    return {
        "command": command,
        "git_commit": git_commit(),
        "device": device_name(device),
        "precision": "bf16 autocast" if auto_bf16(device) else "fp32",
        "dataset": dataset,
        "wall_time_s": 0.0,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "size_label": size_label,
    }


def _prepare(args: argparse.Namespace, grid: str, command: str) -> tuple:
    """What both grids' command lines need: threads, device, CSV path, data, provenance."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    if args.out:
        out = Path(args.out)
    elif args.quick:  # a smoke run is not a result: keep it out of data/results
        out = cache_dir() / f"{grid}_quick.csv"
    else:
        out = REPO_ROOT / "data" / "results" / f"{grid}_{args.dataset}.csv"
    tic = time.perf_counter()
    train_data, test_data = load_dataset(args.dataset, args.n_train, args.n_test, source=args.source)
    print(f"{train_data.source}: {len(train_data)} train / {len(test_data)} test images "
          f"({time.perf_counter() - tic:.0f} s to load)", flush=True)  # fmt: skip
    dataset = train_data.source if args.dataset == "cifar10" else "shapes (seed 0, 32x32)"
    size_label = args.size_label or ("smoke test" if args.quick else f"{device.type.upper()}-sized")
    return device, out, train_data, test_data, grid_provenance(command, device, dataset, size_label)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """The command line: parse ``argv``, run the grid, write the CSV, print a summary.
    ``transferability`` as the first argument runs :func:`transferability_main` instead."""
    if list(sys.argv[1:] if argv is None else argv)[:1] == ["transferability"]:
        return transferability_main(list(sys.argv[1:] if argv is None else argv)[1:])
    args = _parser().parse_args(argv)
    if args.quick:
        args.dataset, args.epochs, args.width = "shapes", 1, 0.125
        args.n_train, args.n_test = args.n_train or 256, args.n_test or 128
        args.batch_size = min(args.batch_size, 64)
    command = "python -m vgg_utils.experiments " + shlex.join(argv if argv is not None else sys.argv[1:])
    device, out, train_data, test_data, provenance = _prepare(args, "ablations", command)
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


def _transfer_parser() -> argparse.ArgumentParser:
    from .transferability import VARIANTS

    p = argparse.ArgumentParser(
        prog="python -m vgg_utils.experiments transferability",
        description="Yosinski et al. (2014) at small scale: split the classes into halves A and B, "
        "train a base net on each, then on B copy conv blocks 1..k from baseA or baseB, freeze them "
        "(or fine-tune: '+') and train the rest. One CSV row per trained net.",
    )
    p.add_argument("--dataset", choices=["cifar10", "shapes"], default="cifar10")
    p.add_argument("--source", choices=["auto", "torchvision", "folder"], default="auto",
                   help="where CIFAR-10 comes from (see vgg_utils.load_cifar10)")  # fmt: skip
    p.add_argument("--n-train", type=int, default=None, help="training subset over both halves (default: all)")
    p.add_argument("--n-test", type=int, default=None, help="test subset over both halves (default: all)")
    p.add_argument("--first", type=int, nargs="+", default=None, help="class indices of half A (default: the first half)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="conv blocks copied (1-5)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--epochs", type=int, default=5, help="epochs of every transferred net")
    p.add_argument("--source-epochs", type=int, default=None, help="epochs of the base nets (default: --epochs)")
    p.add_argument("--width", type=float, default=0.25, help="channel multiplier (1.0: the paper's)")
    p.add_argument("--head", choices=["compact", "paper"], default="compact")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--size-label", default=None, help="e.g. 'CPU-sized' (default: from the device)")
    p.add_argument("--out", default=None,
                   help="CSV path (default: data/results/transferability_<dataset>.csv; --quick: data/cache)")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run: shapes, 400 train / 200 test images, 1 epoch, width 0.125, k = 1 and 5")  # fmt: skip
    return p


def transferability_main(argv: Sequence[str]) -> pd.DataFrame:
    """``python -m vgg_utils.experiments transferability ...``: run the grid of
    :func:`vgg_utils.transferability.run_transferability`, write the CSV, print the summary."""
    from .transferability import run_transferability, summarize_transferability

    args = _transfer_parser().parse_args(argv)
    if args.quick:
        args.dataset, args.epochs, args.width, args.ks = "shapes", 1, 0.125, [1, 5]
        args.n_train, args.n_test = args.n_train or 400, args.n_test or 200
        args.batch_size = min(args.batch_size, 32)
    command = "python -m vgg_utils.experiments transferability " + shlex.join(argv)
    device, out, train_data, test_data, provenance = _prepare(args, "transferability", command)
    table = run_transferability(
        train_data, test_data, first=args.first, ks=args.ks, variants=args.variants, seeds=args.seeds,
        epochs=args.epochs, source_epochs=args.source_epochs, width=args.width, head=args.head,
        batch_size=args.batch_size, lr=args.lr, device=device, out=out, provenance=provenance,
        log=lambda line: print(line, flush=True),
    )  # fmt: skip
    print(f"wrote {len(table)} rows to {out} in {table['wall_time_s'].iloc[0]:.0f} s")
    print(summarize_transferability(table).to_string(float_format=lambda v: f"{v:.1f}"))
    return table


if __name__ == "__main__":
    main()
