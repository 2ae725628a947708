"""The course's own trained VGGs: recipes in code, small checkpoints in git, verified on load.

Taught in ``04_training.ipynb`` (section "the course's own trained models"); used by notebooks
05 (dense evaluation), 06 (transfer learning) and 07 (interpretability), which need *trained*
networks even offline, where torchvision's ImageNet weights cannot be downloaded.

Each model is a :class:`Recipe` in :data:`RECIPES`. ``python -m vgg_utils.course_models build
NAME`` trains it with the course's own :func:`vgg_utils.train`, evaluates it, and writes two files
into ``data/checkpoints/``: ``NAME.pt`` (the weights, matrices stored in fp16 to halve the size,
plus the pre-processing statistics) and ``NAME.json`` (the record: recipe, command, git commit,
date, device, torch version, dataset, wall time, learning curve, test accuracy measured on the
weights *as stored*, and the file's sha256). :func:`load_course_model` checks the file against its
record before it unpickles anything (``weights_only=True`` as well).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..augment import PaperAugment, subtract_mean
from ..data import ImageTensors, load_cifar10, to_float
from ..models import VGG, build_vgg, count_params
from ..runtime import REPO_ROOT, data_dir, get_device, seed_everything
from ..training import auto_bf16, predict, train

FORMAT = "vgg_utils.course_model/1"
CHECKPOINT_DIR = REPO_ROOT / "data" / "checkpoints"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a course model: architecture, data, optimiser, augmentation.

    ``scale``: the training scale S of :class:`vgg_utils.PaperAugment` (``None``: crops are the
    stored size; ``(lo, hi)``: scale jittering). ``test_flip``: test as the paper did (Sec. 3.2),
    averaging the softmax of each whole test image and of its mirror image. ``subset``: how many
    test images (drawn with ``seed``) the quick check in ``VGG_FAST=1`` re-evaluates against the
    record.
    """

    config: str
    width: float
    input_size: int
    dataset: str  # "shapes" (built in, offline) or "cifar10"
    epochs: int
    purpose: str
    batch_norm: bool = True
    head: str = "paper"
    fc_width: int = 512
    dropout: float = 0.5
    num_classes: int = 10
    n_train: int | None = None  # None: the whole training split
    n_test: int | None = None
    batch_size: int = 128
    lr: float = 0.05
    schedule: str = "onecycle"
    weight_decay: float = 5e-4
    scale: tuple[int, int] | None = None
    flip: bool = True
    color: bool = True
    seed: int = 0
    test_flip: bool = True  # the paper's test-time step: softmax of the image and its mirror averaged
    subset: int = 500
    expected_minutes: str = ""  # on the course's 2-core development CPU, for the error messages
    notes: str = ""

    def build(self) -> VGG:
        """The untrained network of this recipe."""
        return build_vgg(
            self.config, self.num_classes, batch_norm=self.batch_norm, width=self.width,
            head=self.head, input_size=self.input_size if self.head == "paper" else None,
            fc_width=self.fc_width, dropout=self.dropout,
        )  # fmt: skip


#: The shipped models. Change a recipe only with a reason: the checkpoint must then be rebuilt,
#: and git keeps every binary forever.
RECIPES: dict[str, Recipe] = {
    "shapes96": Recipe(
        config="D", width=0.25, input_size=96, dataset="shapes", n_train=12_000, n_test=2_000,
        epochs=8, batch_size=64, lr=0.05, expected_minutes="about 15",
        purpose="05: FC6 becomes a 3x3 conv, score maps on multi-shape scenes; "
        "07: explanations measured against the known boxes and masks",
        notes="VGG16 (config D) with batch norm at width 0.25 and the paper's three-FC head sized "
        "for 96x96 crops (FC6 takes the 3x3x128 pool5 map); the shapes sit anywhere in the image, "
        "so no crop augmentation is needed: flips, PCA colour shift and mean subtraction.",
    ),  # fmt: skip
    "cifar10": Recipe(
        config="D", width=0.5, input_size=32, dataset="cifar10", epochs=30, batch_size=128,
        lr=0.05, scale=(32, 40), expected_minutes="about 75",
        purpose="06: the offline source model for transfer learning; 07: the natural-image model",
        notes="VGG16 (config D) with batch norm at width 0.5 and the paper's three-FC head sized "
        "for 32x32 (FC6 sees the 1x1x256 pool5 map; FC width 512; dropout 0.5), trained on the "
        "full training set with the paper's augmentation: scale jittering S in [32, 40] with "
        "random 32x32 crops, flips, PCA colour shift, mean subtraction.",
    ),  # fmt: skip
}


class CourseModelError(RuntimeError):
    """A course checkpoint is missing, damaged or does not match its record; the message says
    which file and the command that rebuilds it."""


@dataclass
class CourseModel:
    """A loaded course model and what a caller needs to use it correctly.

    ``model``: the network, fp32, eval mode, on the CPU. ``classes``: names, in label order.
    ``input_size``: the training crop (FC6 is sized for it). ``preprocess(images)``: the
    test-time pre-processing, a batch of ``uint8`` (0-255) or float (0-1) images to the
    network's input (float, training-set mean RGB subtracted). ``test_accuracy``: recorded on the
    full test split, measured on these stored weights. ``record``: the whole JSON record
    (provenance). ``path``: the weights file.
    """

    name: str
    model: VGG = field(repr=False)
    classes: list[str]
    input_size: int
    mean: torch.Tensor
    test_accuracy: float
    record: dict = field(repr=False)
    path: Path

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Test-time pre-processing: ``uint8`` or [0, 1] float images to float, mean RGB removed."""
        return subtract_mean(to_float(images), self.mean.to(images.device))

    @property
    def recipe(self) -> Recipe:
        """The recipe the file was built from (from its record)."""
        return recipe_from_record(self.record)


# --- finding and checking files ------------------------------------------------------------------


def _rebuild_command(name: str) -> str:
    return f"python -m vgg_utils.course_models build {name}"


def _how_to_fix(name: str, path: Path) -> str:
    recipe = RECIPES.get(name)
    minutes = f" ({recipe.expected_minutes} min on 2 CPU cores)" if recipe and recipe.expected_minutes else ""
    try:
        shown = path.relative_to(REPO_ROOT)
    except ValueError:
        shown = path
    return (
        f"restore the shipped file with `git checkout -- {shown}` (a fresh clone has it), or "
        f"rebuild it with `{_rebuild_command(name)}`{minutes}"
    )


def _check_name(name: str) -> None:
    if name not in RECIPES:
        raise ValueError(f"unknown course model {name!r}; the course models are {sorted(RECIPES)}")


def checkpoint_paths(name: str, directory: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(weights, record)`` paths of a course model: ``NAME.pt`` and ``NAME.json`` in
    ``directory`` (default: ``$VGG_DATA_DIR/checkpoints`` if it has the record, else the
    repository's ``data/checkpoints``)."""
    if directory is None:
        user = data_dir() / "checkpoints"
        directory = user if (user / f"{name}.json").is_file() else CHECKPOINT_DIR
    folder = Path(directory)
    return folder / f"{name}.pt", folder / f"{name}.json"


def sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256 as hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(name: str, directory: str | os.PathLike | None = None) -> dict:
    """The JSON record of a built course model (raises :class:`CourseModelError` if absent)."""
    weights, record_path = checkpoint_paths(name, directory)
    if not record_path.is_file():
        raise CourseModelError(
            f"course model {name!r} has no record {record_path}; {_how_to_fix(name, record_path)}"
        )
    try:
        return json.loads(record_path.read_text())
    except json.JSONDecodeError as err:
        raise CourseModelError(
            f"the record {record_path} of course model {name!r} is not valid JSON ({err}); "
            f"{_how_to_fix(name, record_path)}"
        ) from err


def verify_file(name: str, directory: str | os.PathLike | None = None) -> dict:
    """Check ``NAME.pt`` against its record (exists, size, sha256) before anything loads it;
    returns the record. Every failure names the file and how to restore or rebuild it."""
    weights, _ = checkpoint_paths(name, directory)
    record = read_record(name, directory)
    fix = _how_to_fix(name, weights)
    if not weights.is_file():
        raise CourseModelError(f"course model {name!r}: the weights file {weights} is missing; {fix}")
    size = weights.stat().st_size
    if size != record["file_size"]:
        what = "truncated" if size < record["file_size"] else "longer than recorded"
        raise CourseModelError(
            f"course model {name!r}: {weights} is {size:,} bytes but its record says "
            f"{record['file_size']:,} ({what}: an interrupted copy or download?); {fix}"
        )
    digest = sha256(weights)
    if digest != record["sha256"]:
        raise CourseModelError(
            f"course model {name!r}: {weights} does not match its record (sha256 {digest[:12]}... "
            f"instead of {record['sha256'][:12]}...): the file is corrupted or from another build; {fix}"
        )
    return record


def load_course_model(name: str, *, directory: str | os.PathLike | None = None) -> CourseModel:
    """A shipped course model, verified, in eval mode on the CPU (fp32), with its metadata.

    ``name``: one of :data:`RECIPES` (``"shapes96"``, ``"cifar10"``). The weights file is checked
    against the sha256 in its record first, then read with ``torch.load(weights_only=True)``;
    a missing, truncated, corrupted or mismatched file raises :class:`CourseModelError` naming
    the file and the command that rebuilds it. Taught in ``04_training.ipynb``; used in 05-07.
    """
    _check_name(name)
    weights, _ = checkpoint_paths(name, directory)
    record = verify_file(name, directory)
    try:
        saved = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # the hash matched, so this is a file written by another format
        raise CourseModelError(f"course model {name!r}: {weights} is unreadable ({err}); {_how_to_fix(name, weights)}") from err
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise CourseModelError(f"{weights} is not a course-model file (no {FORMAT!r} marker); {_how_to_fix(name, weights)}")
    recipe = recipe_from_record(record)
    model = recipe.build()
    state = {k: v.float() if v.is_floating_point() else v for k, v in saved["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CourseModelError(
            f"course model {name!r}: {weights} does not fit the recipe in its record "
            f"({str(err).splitlines()[0]}); {_how_to_fix(name, weights)}"
        ) from err
    return CourseModel(
        name=name, model=model.eval(), classes=list(record["classes"]),
        input_size=recipe.input_size, mean=saved["mean"].float(),
        test_accuracy=float(record["test_accuracy"]), record=record, path=weights,
    )  # fmt: skip


def recipe_from_record(record: dict) -> Recipe:
    """The :class:`Recipe` stored in a record (JSON has lists where the recipe has tuples)."""
    fields = dict(record["recipe"])
    fields.setdefault("test_flip", False)  # records from before the field measured one view
    if isinstance(fields.get("scale"), list):
        fields["scale"] = tuple(fields["scale"])
    return Recipe(**fields)


def course_models(directory: str | os.PathLike | None = None) -> pd.DataFrame:
    """The course models: one row each (name, config, width, head, input size, classes, dataset,
    test accuracy, file size, what it is for); a recipe not yet built shows ``NaN``.
    Taught in ``04_training.ipynb``."""
    rows = []
    for name, recipe in RECIPES.items():
        try:
            record = read_record(name, directory)
        except CourseModelError:
            record = {}
        rows.append({
            "name": name,
            "config": recipe.config + ("-BN" if recipe.batch_norm else ""),
            "width": recipe.width,
            "head": recipe.head + (f" (FC {recipe.fc_width})" if recipe.head == "paper" else ""),
            "input_size": recipe.input_size,
            "classes": recipe.num_classes,
            "dataset": record.get("dataset", {}).get("train", recipe.dataset),
            "params": record.get("params", float("nan")),
            "test_accuracy": record.get("test_accuracy", float("nan")),
            "file_mb": record.get("file_size", float("nan")) / 1e6,
            "purpose": recipe.purpose,
        })  # fmt: skip
    return pd.DataFrame(rows)


# --- building ------------------------------------------------------------------------------------


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
    from ..experiments import device_name, git_commit

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
    from ..experiments import device_name, git_commit

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
