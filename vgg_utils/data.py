"""Datasets as tensors: CIFAR-10, your own image folders, and the choice between them offline.

Taught in ``04_training.ipynb``. Every dataset the course trains on is an :class:`ImageTensors`:
all images in one ``(N, 3, H, W)`` tensor, labels in one ``int64`` tensor, and the class names.
A whole CIFAR-10 training set is 150 MB as ``uint8``, so it fits on any GPU; the trainer slices
batches straight from it (no ``DataLoader``, no per-image Python work), as airbench does.

Sources, in the order :func:`load_cifar10` tries them with ``source="auto"``:

1. torchvision's CIFAR-10 pickles, cached under :func:`vgg_utils.cache_dir`;
2. a local copy as image folders, named by the ``VGG_CIFAR10_DIR`` environment variable: a folder
   holding ``train/<class>/*`` and ``test/<class>/*`` (PNG or JPEG), or a ``.tar.gz`` of such a
   folder (unpacked once into the system temp folder, never into the repository). Handy for a
   classroom server or a USB stick that already has CIFAR-10 as images;
3. a download through ``torchvision.datasets.CIFAR10(download=True)`` when the host answers.

Offline and with nothing cached, :func:`default_dataset` falls back to the built-in
:class:`vgg_utils.ShapesDataset` and says so in one printed line.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch

from .image_files import _square, decode_all, list_image_files
from .image_tensors import ImageTensors, to_float  # noqa: F401 (re-export: vgg_utils.data.* kept)
from .models import DOWNLOAD_STALL_SECONDS, _reachable, _stall_timeout
from .runtime import cache_dir
from .shapes import ShapesDataset

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: The environment variable that names a local image-folder copy of CIFAR-10 (folder or .tar.gz).
CIFAR10_DIR_ENV = "VGG_CIFAR10_DIR"


class DatasetUnavailableError(RuntimeError):
    """A dataset is neither cached nor downloadable; the message says what was tried."""




def _random_subset(labels: torch.Tensor, n: int | None, seed: int) -> torch.Tensor | None:
    """``n`` indices drawn at random (seeded): classes in about their proportions, unlike the
    first ``n`` of a folder sorted by class. ``None`` for all."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer or None (all images); got {n!r}")
    if n > len(labels):
        raise ValueError(f"asked for n={n} images but the split has only {len(labels)}")
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return perm[:n]


def load_image_folder(
    path: str | os.PathLike,
    image_size: int | None = None,
    *,
    n: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ImageTensors:
    """Load an ImageFolder tree (``path/<class>/<image>``) into ``uint8`` :class:`ImageTensors`.

    Classes are the sorted folder names, as in torchvision's ``ImageFolder``. Made for folders of
    real photos (see :mod:`vgg_utils.image_files`): hidden files and folders are ignored; a file
    that cannot be decoded (truncated, not an image) is skipped, and one warning names every
    skipped file (a class left with no image is an error); EXIF orientation is applied (phone
    photos come out upright); grayscale, palette, CMYK, 16-bit and transparent images become
    RGB (transparency over white). ``image_size`` resizes each image so its smaller side is
    ``image_size`` and centre-crops a square (needed when your photos differ in size); large
    JPEGs are then decoded at a reduced size, which is several times faster. ``None`` keeps the
    size, which must then be the same for all. ``n`` keeps a seeded random subset of ``n``
    files (only those are decoded). Before decoding, the memory the tensor will take
    (``N x 3 x H x W`` bytes) is compared with the memory available, and a clear error says
    what to change when it does not fit. ``progress`` shows a bar when loading takes more than
    a second. Taught in ``04_training.ipynb``; used for your own photos in ``06``.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (expected {root}/<class>/*.jpg)")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive integer or None; got {image_size!r}")
    classes, samples = list_image_files(root)
    empty = [c for k, c in enumerate(classes) if not any(label == k for _, label in samples)]
    if empty:
        raise ValueError(f"class folders {empty} in {root} hold no files; remove them or add images")
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    chosen = _random_subset(labels, n, seed)
    order = chosen.tolist() if chosen is not None else list(range(len(samples)))
    out, skipped = decode_all([samples[i][0] for i in order], root, image_size, progress)
    kept = [i for j, i in enumerate(order) if j not in skipped]
    if skipped:
        names = ", ".join(f"{samples[order[j]][0].relative_to(root)} ({why})" for j, why in skipped.items())
        warnings.warn(f"skipped {len(skipped)} unreadable file(s) in {root}: {names}", stacklevel=2)
        tried = {samples[i][1] for i in order}
        lost = [classes[k] for k in sorted(tried) if not any(samples[i][1] == k for i in kept)]
        if lost:
            raise ValueError(
                f"no readable image left for class(es) {lost} in {root} (skipped: {names}); "
                "add images that open in an image viewer, or remove the folder"
            )
    return ImageTensors(out, labels[kept], classes, source=f"image folder {root}")


def local_cifar10_folder(extract_to: str | os.PathLike | None = None) -> Path | None:
    """The local image-folder copy of CIFAR-10 named by ``$VGG_CIFAR10_DIR``, or ``None`` if unset.

    The variable names a folder with ``train/`` and ``test/`` ImageFolders, or a ``.tar.gz``
    archive of one (unpacked once, about a second for 60,000 small files, into ``extract_to``:
    default the system temp folder, never the repository). A variable that names nothing usable
    raises :class:`DatasetUnavailableError` saying what was found: a typo must not silently fall
    back to another dataset. Taught in ``04_training.ipynb``.
    """
    setting = os.environ.get(CIFAR10_DIR_ENV, "").strip()
    if not setting:
        return None
    path = Path(setting).expanduser()
    if path.is_dir():
        folder = path
    elif path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        folder = _unpack_once(path, Path(extract_to) if extract_to else Path(tempfile.gettempdir()))
    else:
        raise DatasetUnavailableError(
            f"{CIFAR10_DIR_ENV}={setting} is neither a folder nor a .tar.gz archive; point it at a "
            "folder holding train/<class>/*.png and test/<class>/*.png (or an archive of one), or unset it"
        )
    for split in ("train", "test"):
        if not (folder / split).is_dir():
            raise DatasetUnavailableError(
                f"{CIFAR10_DIR_ENV}={setting} has no {split}/ folder (found: "
                f"{sorted(p.name for p in folder.iterdir())[:5]}); expected train/<class>/* and test/<class>/*"
            )
    return folder


def _unpack_once(tarball: Path, base: Path) -> Path:
    """Unpack ``tarball`` under ``base`` once; the folder name records the archive's size and time."""
    stat = tarball.stat()
    stem = tarball.name.split(".")[0]
    target = base / f"vgg_course_{stem}_{stat.st_size}_{int(stat.st_mtime)}"
    if (target / ".complete").is_file():
        return _single_root(target)
    # Unpack into a private folder and rename: parallel test runs never see half a tree.
    base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="unpacking_", dir=base))
    try:
        with tarfile.open(tarball) as tar:
            # The "data" filter refuses absolute paths and links out of the folder (Python >= 3.10.12).
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(scratch, **safe)
        (scratch / ".complete").touch()
        try:
            scratch.rename(target)
        except OSError:  # another process finished first
            if not (target / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _single_root(target)


def _single_root(folder: Path) -> Path:
    """An archive may hold ``train/`` and ``test/`` at its top or inside one folder."""
    if (folder / "train").is_dir():
        return folder
    inner = [p for p in folder.iterdir() if p.is_dir()]
    return inner[0] if len(inner) == 1 else folder


def _first_files(folder: Path, k: int = 3) -> list[str]:
    """A few file names from the first class folder (to tell JPEG from PNG copies)."""
    first = min((p for p in folder.iterdir() if p.is_dir()), default=None)
    return [] if first is None else sorted(p.name for p in first.iterdir())[:k]


def _cifar10_cached(root: Path) -> bool:
    """Are torchvision's six CIFAR-10 pickles in ``root``? (``CIFAR10`` checks their MD5 sums.)"""
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    return all((folder / name).is_file() for name, _ in CIFAR10.train_list + CIFAR10.test_list)


def load_cifar10(
    split: str = "train",
    n: int | None = None,
    *,
    source: str = "auto",
    timeout: float = 3.0,
    seed: int = 0,
    verbose: bool = False,
) -> ImageTensors:
    """CIFAR-10 as ``uint8`` :class:`ImageTensors` (``split="train"``: 50,000, ``"test"``: 10,000).

    ``source``: ``"auto"`` tries torchvision's cache, then the local image folder of
    ``$VGG_CIFAR10_DIR`` (see :func:`local_cifar10_folder`), then a download; ``"torchvision"``
    only the cache and download; ``"folder"`` only the local copy (a JPEG copy costs a little
    accuracy: the source note says so, and so should a reported number). Offline, the download
    is skipped after a ``timeout``-second reachability check and :class:`DatasetUnavailableError`
    says what was tried. ``n`` keeps a seeded random subset. Taught in ``04_training.ipynb``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    if source not in ("auto", "torchvision", "folder"):
        raise ValueError(f"source must be 'auto', 'torchvision' or 'folder'; got {source!r}")
    tried, how = [], None
    root = cache_dir()
    if source in ("auto", "torchvision"):
        if _cifar10_cached(root):
            how = f"torchvision cache in {root}"
        else:
            tried.append(f"not cached in {root}")
    if how is None and source in ("auto", "folder"):
        folder = local_cifar10_folder()
        if folder is not None:
            data = load_image_folder(folder / split, n=n, seed=seed, progress=verbose)
            if tuple(data.classes) != CIFAR10_CLASSES or data.image_size != (32, 32):
                raise DatasetUnavailableError(
                    f"{CIFAR10_DIR_ENV} holds classes {data.classes[:4]}... of size {data.image_size}; "
                    f"CIFAR-10 has {list(CIFAR10_CLASSES[:4])}... at 32x32"
                )
            lossy = any(p.lower().endswith((".jpg", ".jpeg")) for p in _first_files(folder / split))
            data.source = f"CIFAR-10 {split} (image folder from ${CIFAR10_DIR_ENV}" + (
                ", JPEG: slightly lossy)" if lossy else ")"
            )
            if verbose:
                print(data.source)
            return data
        tried.append(f"${CIFAR10_DIR_ENV} not set")
    if how is None and source in ("auto", "torchvision"):
        if _reachable(CIFAR10_URL, timeout):
            how = f"downloaded to {root}"
        else:
            tried.append(f"{urlparse(CIFAR10_URL).hostname} unreachable within {timeout:g} s")
    if how is None:
        raise DatasetUnavailableError(
            "CIFAR-10 is unavailable: " + "; ".join(tried) + ". On a connected machine run\n"
            "    python -c \"import vgg_utils; vgg_utils.load_cifar10('train')\"\n"
            f"and copy {root}/cifar-10-batches-py along (or set VGG_DATA_DIR)."
            + (
                f" Or set {CIFAR10_DIR_ENV} to a copy as image folders (train/<class>/*.png, test/<class>/*.png)."
                if source == "auto"  # only where the folder would have been used
                else ""
            )
        )
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        if how.startswith("downloaded"):
            with _stall_timeout(DOWNLOAD_STALL_SECONDS):  # torchvision's downloader has no timeout
                download_and_extract_archive(CIFAR10_URL, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
        dataset = CIFAR10(str(root), train=split == "train", download=False)
    except OSError as err:  # the download stalled or broke off (a partial archive fails its MD5 next time)
        raise DatasetUnavailableError(
            f"CIFAR-10 is unavailable: the download from {urlparse(CIFAR10_URL).hostname} failed ({type(err).__name__}: "
            f"{err}). On a connected machine run\n"
            "    python -c \"import vgg_utils; vgg_utils.load_cifar10('train')\"\n"
            f"and copy {root}/cifar-10-batches-py along (or set VGG_DATA_DIR)."
        ) from err
    except RuntimeError as err:  # torchvision's MD5 check failed
        raise DatasetUnavailableError(
            f"CIFAR-10 files in {root / CIFAR10.base_folder} are incomplete or corrupt ({err}); "
            "delete that folder and load again to re-download"
        ) from err
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    source_note = f"CIFAR-10 {split} ({how})"
    data = ImageTensors(images, torch.tensor(dataset.targets), list(dataset.classes), source_note)
    if verbose:
        print(source_note)
    chosen = _random_subset(data.labels, n, seed)
    return data if chosen is None else data.subset(chosen)


def default_dataset(
    n_train: int | None = None,
    n_test: int | None = None,
    *,
    image_size: int = 32,
    seed: int = 0,
    timeout: float = 3.0,
) -> tuple[ImageTensors, ImageTensors]:
    """``(train, test)``: CIFAR-10 when cached or downloadable, else the built-in shapes dataset.

    Prints one line saying which and why. ``n_train``/``n_test`` take seeded subsets (``None``:
    all of CIFAR-10, or 10,000/2,000 shapes). ``image_size`` is the shapes' size; CIFAR-10 is
    resized only if it differs from 32. Taught in ``04_training.ipynb``.
    """
    try:
        train = load_cifar10("train", n_train, timeout=timeout, seed=seed)
        test = load_cifar10("test", n_test, timeout=timeout, seed=seed)
    except DatasetUnavailableError as err:
        reason = str(err).split(". On a connected")[0].removeprefix("CIFAR-10 is unavailable: ")
        print(f"dataset: shapes ({image_size}x{image_size}), because CIFAR-10 is unavailable ({reason})")
        kwargs = dict(image_size=image_size, seed=seed, dtype=torch.uint8)
        return (
            ShapesDataset(n_train or 10_000, split="train", **kwargs),
            ShapesDataset(n_test or 2_000, split="test", **kwargs),
        )
    if image_size != 32:
        train = ImageTensors(_square(train.images, image_size), train.labels, train.classes, train.source)
        test = ImageTensors(_square(test.images, image_size), test.labels, test.classes, test.source)
    where = train.source.replace("CIFAR-10 train ", "", 1)
    print(f"dataset: CIFAR-10 {where}: {len(train)} train / {len(test)} test images")
    return train, test
