"""Building the course models: train a recipe, measure it, write the checkpoint and its record.

``python -m vgg_utils.course_models build NAME`` (also ``list``, ``verify``, ``reevaluate``) runs
:func:`main`. What learners use, the recipes and the verified loading, is in
:mod:`vgg_utils.course_models`; this module is what rebuilds the files in ``data/checkpoints/``
(see the README's table of course models for the commands and their CPU times).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ..augment import PaperAugment
from ..data import ImageTensors, load_cifar10
from ..models import count_params
from ..runtime import get_device, seed_everything
from ..training import auto_bf16, predict, train
from . import (
    CHECKPOINT_DIR,
    FORMAT,
    RECIPES,
    CourseModelError,
    Recipe,
    _check_name,
    _rebuild_command,
    checkpoint_paths,
    course_models,
    load_course_model,
    recipe_from_record,
    sha256,
)


def smoke_recipe(recipe: Recipe) -> Recipe:
    """The same recipe at a size that trains in seconds (tests, ``build --smoke``): a few
    hundred shapes, one epoch, a narrower net. It exercises every step of a real build."""
    return dataclasses.replace(
        recipe, dataset="shapes", width=0.0625, n_train=256, n_test=64, epochs=1, batch_size=32,
        subset=32, expected_minutes="", notes="smoke-test size of the recipe: not a course model",
    )  # fmt: skip


def load_data(recipe: Recipe, *, subset: bool = False) -> tuple[ImageTensors | None, ImageTensors]:
    """``(train, test)`` of a recipe; ``subset=True`` gives only the fixed test subset the quick
    check uses (``train`` is then ``None``)."""
    if recipe.dataset == "shapes":
        from ..shapes import ShapesDataset

        kwargs = dict(image_size=recipe.input_size, num_classes=recipe.num_classes, seed=recipe.seed, dtype=torch.uint8)
        if subset:  # item i depends only on (seed, split, i): the first k are a fixed subset
            return None, ShapesDataset(recipe.subset, split="test", **kwargs)
        return (
            ShapesDataset(recipe.n_train or 10_000, split="train", **kwargs),
            ShapesDataset(recipe.n_test or 2_000, split="test", **kwargs),
        )
    if recipe.dataset == "cifar10":
        if subset:
            return None, load_cifar10("test", recipe.subset, seed=recipe.seed)
        return load_cifar10("train", recipe.n_train, seed=recipe.seed), load_cifar10("test", recipe.n_test, seed=recipe.seed)
    raise ValueError(f"recipe dataset must be 'shapes' or 'cifar10'; got {recipe.dataset!r}")


def _measure_test_and_subset(recipe: Recipe, model: nn.Module, test_data: ImageTensors, preprocess) -> dict:
    """The record's accuracy fields: the whole test split and the fixed subset, by the recipe's
    protocol and single-view, measured on the stored weights."""
    full = measure(recipe, model, test_data, preprocess)
    _, subset_data = load_data(recipe, subset=True)
    subset = measure(recipe, model, subset_data, preprocess)
    protocol = "the whole image and its mirror image, softmax averaged (the paper's Sec. 3.2)" if recipe.test_flip else "the whole image"
    return {
        "test_accuracy": round(full["accuracy"], 5),
        "test_accuracy_single_view": round(full["accuracy_single_view"], 5),
        "subset": {
            "what": f"the first {recipe.subset} test images" if recipe.dataset == "shapes"
            else f"{recipe.subset} test images drawn with seed {recipe.seed} (load_cifar10('test', {recipe.subset}, seed={recipe.seed}))",
            "n": recipe.subset,
            "accuracy": round(subset["accuracy"], 5),
        },
        "evaluation": f"fp32 on the CPU, on the weights as stored (fp16 matrices loaded back as fp32); test protocol: {protocol}, "
        "at the training crop size, training-set mean RGB subtracted; test_accuracy_single_view: the whole image alone",
    }  # fmt: skip


def reevaluate(name: str, *, directory: str | os.PathLike | None = None, command: str | None = None) -> dict:
    """Re-measure a shipped model's accuracies after a change of the *test* protocol only, and
    rewrite its record (the weights file and its sha256 stay as they are).

    Refuses when the recipe in code differs from the record in anything that shapes training:
    that needs a rebuild. The record keeps its training provenance and gains a ``reevaluated``
    entry (command, commit, date, device, torch version). Used once, when the recipes gained
    ``test_flip``.
    """
    from ..provenance import device_name, git_commit

    _check_name(name)
    loaded = load_course_model(name, directory=directory)
    old, new = recipe_from_record(loaded.record), RECIPES[name]
    evaluation_only = {"test_flip", "subset", "purpose", "notes", "expected_minutes"}
    changed = [f.name for f in dataclasses.fields(Recipe) if getattr(old, f.name) != getattr(new, f.name)]
    if set(changed) - evaluation_only:
        raise CourseModelError(
            f"the recipe of {name!r} changed in {sorted(set(changed) - evaluation_only)}, which shapes "
            f"training: rebuild it with `{_rebuild_command(name)}`"
        )
    _, test_data = load_data(new)
    record = dict(loaded.record)
    record.pop("test_loss", None)
    record.update(_measure_test_and_subset(new, loaded.model, test_data, loaded.preprocess))
    record["recipe"] = dataclasses.asdict(new)
    record["reevaluated"] = {
        "why": f"test protocol changed ({', '.join(changed) or 'nothing'}); weights unchanged (same sha256)",
        "command": command or f"python -m vgg_utils.course_models reevaluate {name}",
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_name(torch.device("cpu")),
        "torch_version": torch.__version__,
    }
    _, record_path = checkpoint_paths(name, directory)
    tmp = record_path.with_name(record_path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, record_path)
    return record


def _compact_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Matrices and filters (``dim >= 2``: all but a few kB of the weights) in fp16, or bf16 where
    a value exceeds fp16's range; vectors (biases, batch-norm statistics) stay fp32."""
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point() and tensor.dim() >= 2:
            fits = bool(tensor.abs().max() < torch.finfo(torch.float16).max)
            tensor = tensor.to(torch.float16 if fits else torch.bfloat16)
        state[key] = tensor.clone()
    return state


def build_course_model(
    name: str,
    *,
    recipe: Recipe | None = None,
    device: torch.device | str | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Train course model ``name`` from its recipe, evaluate it, write ``NAME.pt`` and ``NAME.json``.

    ``recipe`` overrides :data:`RECIPES` (tests pass a tiny one). The accuracies in the record are
    measured on the weights as stored (fp16 matrices loaded back as fp32, evaluated in fp32), so
    :func:`load_course_model` reproduces them. Returns the record.
    """
    from ..provenance import device_name, git_commit

    if recipe is None:
        _check_name(name)
        recipe = RECIPES[name]
    device = get_device(device) if not isinstance(device, torch.device) else device
    out = Path(out_dir) if out_dir is not None else CHECKPOINT_DIR
    tic = time.perf_counter()
    train_data, test_data = load_data(recipe)
    load_seconds = time.perf_counter() - tic
    if progress:
        print(f"{name}: {train_data.source}, {len(train_data):,} train / {len(test_data):,} test images "
              f"({load_seconds:.0f} s to load)", flush=True)  # fmt: skip

    seed_everything(recipe.seed)
    model = recipe.build()
    augment = PaperAugment.from_data(
        train_data, recipe.input_size, recipe.scale, flip=recipe.flip, color=recipe.color, seed=recipe.seed
    )
    tic = time.perf_counter()
    history = train(
        model, train_data, test_data, epochs=recipe.epochs, batch_size=recipe.batch_size,
        lr=recipe.lr, weight_decay=recipe.weight_decay, schedule=recipe.schedule,
        augment=augment, device=device, seed=recipe.seed, progress=progress,
    )  # fmt: skip
    train_seconds = time.perf_counter() - tic

    # Store, then measure what was stored: the record describes the file, not the live model.
    out.mkdir(parents=True, exist_ok=True)
    weights, record_path = out / f"{name}.pt", out / f"{name}.json"
    payload = {"format": FORMAT, "state_dict": _compact_state(model), "mean": augment.mean.clone()}
    tmp = weights.with_name(weights.name + ".tmp")
    torch.save(payload, tmp)
    stored = recipe.build()
    stored.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
    stored.eval()
    measured = _measure_test_and_subset(recipe, stored, test_data, augment.test)

    os.replace(tmp, weights)  # atomic: never half a file under the real name
    record = {
        "name": name,
        "format": FORMAT,
        "recipe": dataclasses.asdict(recipe),
        "classes": list(train_data.classes),
        "params": count_params(stored),
        "command": command or f"{_rebuild_command(name)}" + (f" --device {device.type}" if device.type != "cpu" else ""),
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast" if auto_bf16(device) else "fp32",
        "torch_version": torch.__version__,
        "dataset": {
            "train": f"{train_data.source}: {len(train_data):,} images",
            "test": f"{test_data.source}: {len(test_data):,} images",
        },
        "epochs": recipe.epochs,
        "load_seconds": round(load_seconds, 1),
        "wall_time_s": round(train_seconds, 1),
        "history": history.round(5).to_dict(orient="list"),
        **measured,
        "storage": "conv and FC weights fp16 (bf16 where a value exceeds fp16's range), vectors fp32",
        "reproducibility": "the recipe and seed fix the data, initialisation, batch order, dropout and "
        "augmentation; rebuilding on the same machine and torch version repeats the run, and "
        "elsewhere gives the same accuracy to within noise (bf16 rounding differs between CPUs and GPUs)",
        "file_size": weights.stat().st_size,
        "sha256": sha256(weights),
    }  # fmt: skip
    tmp_record = record_path.with_name(record_path.name + ".tmp")
    tmp_record.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp_record, record_path)
    if progress:
        print(f"{name}: test accuracy {measured['test_accuracy']:.2%} (stored weights, fp32), "
              f"{record['file_size'] / 1e6:.1f} MB, trained in {train_seconds / 60:.1f} min; wrote {weights} and {record_path}")  # fmt: skip
    return record


def measure(recipe: Recipe, model: nn.Module, data: ImageTensors, preprocess) -> dict[str, float]:
    """Test accuracy by the recipe's protocol (``"accuracy"``: whole image, plus its mirror when
    ``recipe.test_flip``) and of the single view (``"accuracy_single_view"``), fp32."""
    single = predict(model, data, transform=preprocess, bf16=False).softmax(dim=1)
    probs = single
    if recipe.test_flip:
        mirrored = predict(model, data, transform=lambda x: preprocess(x).flip(-1), bf16=False)
        probs = (single + mirrored.softmax(dim=1)) / 2
    labels = data.labels.to(probs.device)
    return {
        "accuracy": (probs.argmax(1) == labels).float().mean().item(),
        "accuracy_single_view": (single.argmax(1) == labels).float().mean().item(),
    }


def check_against_record(name: str, *, full: bool = False, directory: str | os.PathLike | None = None) -> tuple[float, float]:
    """Re-evaluate a shipped model: ``(measured, recorded)`` accuracy on the fixed test subset
    (``full=True``: the whole test split). Tests call this; so can a learner who doubts a file."""
    loaded = load_course_model(name, directory=directory)
    recipe = loaded.recipe
    if full:
        _, test = load_data(recipe)
        recorded = loaded.test_accuracy
    else:
        _, test = load_data(recipe, subset=True)
        recorded = float(loaded.record["subset"]["accuracy"])
    return measure(recipe, loaded.model, test, loaded.preprocess)["accuracy"], recorded


def main(argv: list[str] | None = None) -> None:
    """``python -m vgg_utils.course_models {list, verify, build}``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m vgg_utils.course_models",
        description="The course's own trained VGGs: list them, verify the shipped files, or rebuild one.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the course models and their recorded accuracy")
    verify = sub.add_parser("verify", help="check files against their records (sha256) and re-test a subset")
    verify.add_argument("names", nargs="*", default=list(RECIPES))
    build = sub.add_parser("build", help="train NAME from its recipe and write data/checkpoints/NAME.{pt,json}")
    build.add_argument("name", choices=sorted(RECIPES))
    build.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    build.add_argument("--out", default=None, help="output folder (default: data/checkpoints)")
    build.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    build.add_argument("--smoke", action="store_true", help="a tiny version of the recipe, for tests (never ship it)")
    again = sub.add_parser("reevaluate", help="re-measure a shipped model after a change of the test protocol only")
    again.add_argument("name", choices=sorted(RECIPES))
    args = parser.parse_args(argv)
    if args.action == "list":
        print(course_models().to_string(index=False))
    elif args.action == "verify":
        failed = 0
        for name in args.names:
            try:
                measured, recorded = check_against_record(name)
                print(f"{name}: sha256 ok; subset accuracy {measured:.2%} (record {recorded:.2%})")
            except (CourseModelError, ValueError) as err:
                failed += 1
                print(f"{name}: {err}", file=sys.stderr)
        raise SystemExit(1 if failed else 0)
    elif args.action == "reevaluate":
        record = reevaluate(args.name, command="python -m vgg_utils.course_models " + shlex.join(argv if argv is not None else sys.argv[1:]))
        print(f"{args.name}: test accuracy {record['test_accuracy']:.2%} "
              f"(single view {record['test_accuracy_single_view']:.2%}); record rewritten")  # fmt: skip
    else:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if args.smoke and args.out is None:
            parser.error("--smoke writes a tiny model: give --out DIR so it cannot replace a shipped checkpoint")
        recipe = smoke_recipe(RECIPES[args.name]) if args.smoke else None
        build_course_model(
            args.name, recipe=recipe, device=args.device, out_dir=args.out,
            command="python -m vgg_utils.course_models " + shlex.join(argv if argv is not None else sys.argv[1:]),
        )  # fmt: skip
