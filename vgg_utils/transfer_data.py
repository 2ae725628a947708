"""A small real dataset to transfer ImageNet VGG16 to: Oxford 102 Flowers, downloaded once.

Taught in ``06_transfer_learning.ipynb`` (the online section). Oxford 102 Flowers (Nilsback &
Zisserman, 2008, from the same Visual Geometry Group as VGG) has 102 flower species with exactly
10 training and 10 validation images each (and 6,149 test images): a few-labels task by design.
The download (about 330 MB) goes through ``torchvision.datasets.Flowers102``, whose MD5 checks
cover the image archive ``102flowers.tgz`` (checked before it is unpacked) and both label files
(``imagelabels.mat``, ``setid.mat``; checked again on every load).

The download is behind a reachability probe, so offline it fails within seconds with
:class:`vgg_utils.DatasetUnavailableError`, and it is atomic: everything is downloaded, checked
and unpacked in a private scratch folder inside :func:`vgg_utils.cache_dir`, which is renamed to
``flowers-102`` only when complete (with a ``.complete`` marker), so a loader never sees half a
dataset. The unpacked images take about 350 MB; the archive is deleted after unpacking.

:func:`per_class_split` draws the few labelled images per class of the offline experiments.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
from pathlib import Path

import torch

from .data import DatasetUnavailableError, ImageTensors, _square
from .models import _reachable
from .runtime import cache_dir

FOLDER = "flowers-102"  # torchvision's folder name inside its root
_MARKER = ".complete"


def _flowers102():
    from torchvision.datasets import Flowers102

    return Flowers102


def flowers102_url() -> str:
    """Where torchvision downloads the three files from (its own constant)."""
    return _flowers102()._download_url_prefix


def flowers102_cached(root: Path | None = None) -> bool:
    """Is a complete download in the cache (the marker written after the MD5-checked unpack)?"""
    return ((root or cache_dir()) / FOLDER / _MARKER).is_file()


def download_flowers102(*, timeout: float = 5.0) -> Path:
    """Download Oxford 102 Flowers into ``cache_dir()/flowers-102`` once; returns that folder.

    Cached: returns at once. Otherwise probes the host for ``timeout`` seconds, then lets
    torchvision download and MD5-check the three files in a scratch folder, unpacks, deletes the
    archive, and renames the folder into place. Offline it raises
    :class:`vgg_utils.DatasetUnavailableError` within about ``timeout`` seconds, saying what to
    run on a connected machine. Taught in ``06_transfer_learning.ipynb``.
    """
    root = cache_dir()
    final = root / FOLDER
    if flowers102_cached(root):
        return final
    url = flowers102_url()
    if not _reachable(url, timeout):
        host = url.split("/")[2]
        raise DatasetUnavailableError(
            f"Oxford 102 Flowers is not cached and {host} is unreachable within {timeout:g} s.\n"
            f"It would be downloaded to {final}. On a connected machine run\n"
            '    python -c "import vgg_utils; vgg_utils.download_flowers102()"\n'
            f"and copy the folder {FOLDER} into {root} (or set VGG_DATA_DIR to a data folder that has it)."
        )
    scratch = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-partial-", dir=root))
    try:
        try:
            _flowers102()(str(scratch), split="train", download=True)  # downloads, MD5-checks, unpacks
        except RuntimeError as err:  # torchvision: "File not found or corrupted."
            raise DatasetUnavailableError(
                f"the Oxford 102 Flowers download failed its MD5 check or was cut off ({err}); "
                "nothing was kept: run again to retry"
            ) from err
        folder = scratch / FOLDER
        (folder / "102flowers.tgz").unlink(missing_ok=True)
        record = {"source": url, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "md5": {name: md5 for name, md5 in _flowers102()._file_dict.values()},
                  "checked_by": "torchvision.datasets.Flowers102 (archive before unpacking; label files on every load)"}  # fmt: skip
        (folder / _MARKER).write_text(json.dumps(record, indent=1) + "\n")
        if final.exists():  # an old incomplete copy (no marker): replace it
            shutil.rmtree(final)
        folder.rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def load_flowers102(
    split: str = "train",
    *,
    num_classes: int | None = None,
    n_per_class: int | None = None,
    image_size: int = 224,
    seed: int = 0,
    timeout: float = 5.0,
) -> ImageTensors:
    """Oxford 102 Flowers as ``uint8`` :class:`ImageTensors`, each image resized so its smaller
    side is ``image_size`` and centre-cropped square (downloads once, see
    :func:`download_flowers102`).

    ``split``: ``"train"`` and ``"val"`` (10 images per class each) or ``"test"``.
    ``num_classes``: keep the first ``k`` species (labels stay 0..k-1). ``n_per_class``: a seeded
    random subset of that many images per class. Taught in ``06_transfer_learning.ipynb``.
    """
    import numpy as np
    from PIL import Image

    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test'; got {split!r}")
    for name, value in (("num_classes", num_classes), ("n_per_class", n_per_class)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
    if num_classes is not None and num_classes > 102:
        raise ValueError(f"Oxford 102 Flowers has 102 classes; got num_classes={num_classes}")
    download_flowers102(timeout=timeout)
    dataset = _flowers102()(str(cache_dir()), split=split)  # checks the label files' MD5 again
    labels = torch.tensor(dataset._labels, dtype=torch.int64)
    k = num_classes or 102
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(k):
        idx = torch.nonzero(labels == c).flatten()
        if n_per_class is not None:
            if len(idx) < n_per_class:
                raise ValueError(f"the {split} split has only {len(idx)} images of class {c}; got n_per_class={n_per_class}")
            idx = idx[torch.randperm(len(idx), generator=gen)[:n_per_class]].sort().values
        keep.append(idx)
    chosen = torch.cat(keep)
    images = []
    for i in chosen.tolist():
        with Image.open(dataset._image_files[i]) as file:
            file.draft("RGB", (image_size, image_size))  # JPEG: decode at a reduced scale, faster
            image = torch.from_numpy(np.array(file.convert("RGB"))).permute(2, 0, 1)
        images.append(_square(image[None], image_size)[0])
    names = list(getattr(dataset, "classes", None) or [f"flower {i + 1}" for i in range(102)])  # older torchvision: no names
    return ImageTensors(torch.stack(images), labels[chosen], names[:k],
                        source=f"Oxford 102 Flowers {split} ({len(chosen)} images, {k} classes)")  # fmt: skip


def per_class_split(data: ImageTensors, k: int, *, seed: int = 0) -> tuple[ImageTensors, ImageTensors]:
    """``(chosen, rest)``: ``k`` images of every class drawn at random (seeded), and all others.
    The few-labels experiments of ``06_transfer_learning.ipynb`` use it."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (images per class) must be a positive integer; got {k!r}")
    counts = data.class_counts()
    if int(counts.min()) < k:
        poor = [data.classes[i] for i in range(len(counts)) if counts[i] < k]
        raise ValueError(f"asked for {k} images per class but {poor[:3]} have only {int(counts.min())}")
    gen = torch.Generator().manual_seed(seed)
    labels = data.labels.cpu()
    chosen = torch.cat([torch.nonzero(labels == c).flatten()[torch.randperm(int(counts[c]), generator=gen)[:k]]
                        for c in range(len(counts))])  # fmt: skip
    mask = torch.ones(len(data), dtype=torch.bool)
    mask[chosen] = False
    return data.subset(chosen.sort().values), data.subset(torch.nonzero(mask).flatten())
