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
record before it unpickles anything (``weights_only=True`` as well). Building, measuring and
the command line are in :mod:`vgg_utils.course_models.build`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..augment import subtract_mean
from ..data import to_float
from ..models import VGG, build_vgg
from ..runtime import REPO_ROOT, data_dir

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
