"""Reading photos the way a learner's folder holds them: any mode, any orientation, any size.

Used by :func:`vgg_utils.load_image_folder` (taught in ``04_training.ipynb``; notebook 06 invites
you to bring your own photos). A camera or phone folder is not a clean dataset: some files are
truncated or are not images at all, phones store portrait photos sideways with an EXIF
"orientation" tag, PNGs may be 16-bit, grayscale, palette or transparent, scans may be CMYK,
and a 12-megapixel JPEG is 36 MB decoded. This module lists the files (hidden files and
folders such as ``.ipynb_checkpoints`` left out), decodes each to ``uint8`` RGB the way a photo
viewer shows it, and estimates the memory a folder will take before anything is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .runtime import progress_bar

#: Seconds before :func:`load_image_folder`'s progress bar appears (quick loads print nothing).
PROGRESS_DELAY = 1.0
#: Files that operating systems leave in photo folders; never images, never reported.
_SYSTEM_FILES = {"thumbs.db", "desktop.ini", ".ds_store"}


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SYSTEM_FILES


def list_image_files(root: str | os.PathLike) -> tuple[list[str], list[tuple[Path, int]]]:
    """``(classes, [(file, class index), ...])`` of an ImageFolder tree ``root/<class>/...``.

    Classes are the sorted names of the visible sub-folders; each class takes every visible file
    below its folder (sub-folders included), in torchvision ``ImageFolder``'s order. Hidden files
    and folders (a leading dot: ``.DS_Store``, macOS ``._IMG_1.jpg``, Jupyter's
    ``.ipynb_checkpoints``) and ``Thumbs.db``/``desktop.ini`` are left out. Whether a file is an
    image is decided by decoding it, not by its extension (``.JPG``, ``.jpeg``, ``.jfif`` all work).
    """
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not _hidden(p.name))
    if not classes:
        found = sorted(p.name for p in root.iterdir() if not _hidden(p.name))[:5]
        raise FileNotFoundError(
            f"{root} has no class folders (found {found or 'nothing'}); put each class's images in "
            f"its own folder: {root}/<class>/<image>"
        )
    samples: list[tuple[Path, int]] = []
    for k, name in enumerate(classes):
        for folder, _, names in sorted(os.walk(root / name, followlinks=True)):
            relative = Path(folder).relative_to(root / name).parts
            if any(_hidden(part) for part in relative):
                continue
            samples += [(Path(folder) / f, k) for f in sorted(names) if not _hidden(f)]
    return classes, samples


def _to_rgb(image):
    """A Pillow image in any mode -> ``RGB`` as a viewer shows it (transparency over white)."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit PNGs hold 0-65535; Pillow's own convert("L") clips them at 255 (a white image).
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        gray = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
        return gray.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        # "La" is premultiplied (a TIFF's associated alpha); Pillow converts it only to LA.
        if image.mode == "La":
            image = image.convert("LA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        background.alpha_composite(image.convert("RGBA"))
        return background.convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGB


def read_image(path: str | os.PathLike, min_side: int | None = None) -> torch.Tensor:
    """One image file as ``uint8`` ``(3, H, W)``, upright (EXIF orientation applied), RGB.

    ``min_side``: the image will be shrunk so its smaller side is ``min_side`` afterwards, so a
    large JPEG is decoded at a reduced size (libjpeg's DCT scaling, Pillow's ``draft``: 1/2,
    1/4 or 1/8, never below ``min_side``) and any other large image is box-reduced to at most
    twice ``min_side`` first. Raises Pillow's ``OSError``/``SyntaxError``/``ValueError`` for a
    file that is not a readable image.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as file:
        if min_side is not None and file.format == "JPEG":
            file.draft("RGB", (min_side, min_side))  # decodes at >= min_side on both sides
        upright = ImageOps.exif_transpose(file)  # loads the pixels: truncation shows here
        rgb = _to_rgb(upright)
    if min_side is not None:
        factor = min(rgb.size) // (2 * min_side)
        if factor >= 2:  # keep >= 2x the target for the antialiased resize that follows
            rgb = rgb.reduce(factor)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def image_header_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` from the file's header (no pixels decoded), as shown upright."""
    from PIL import Image

    with Image.open(path) as file:
        width, height = file.size
        if file.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
            width, height = height, width
    return height, width


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (psutil, else ``/proc/meminfo``), or ``None``."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def format_bytes(n: float) -> str:
    """``1.5 GB``, ``320 MB``, ``12 kB`` (powers of 1000, as file managers show sizes)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so the smaller side is ``size`` (antialiased), then centre-crop to ``size x size``."""
    h, w = images.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        images = F.interpolate(images.float(), size=new, mode="bilinear", antialias=True)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        images = images[..., top : top + size, left : left + size].round().clamp(0, 255)
        images = images.to(torch.uint8)
    return images


def decode_all(
    files: list[Path], root: Path, image_size: int | None, progress: bool
) -> tuple[torch.Tensor, dict[int, str]]:
    """Decode ``files`` (for :func:`vgg_utils.load_image_folder`) into one preallocated ``uint8`` tensor (no second copy when stacking);
    returns it (readable images only) and ``{position: reason}`` for the skipped files."""
    first, skipped = None, {}
    for j, file in enumerate(files):  # the output's size: image_size, or the first readable header
        try:
            first = (image_size, image_size) if image_size else image_header_size(file)
            break
        except Exception as err:  # noqa: BLE001 - any failure to read a header means "not an image"
            skipped[j] = _reason(err)
    if first is None:
        return torch.empty(0, 3, image_size or 1, image_size or 1, dtype=torch.uint8), skipped
    needed = len(files) * 3 * first[0] * first[1]
    free = available_memory()
    if free is not None and needed > free:
        raise MemoryError(
            f"{len(files)} images of {first[0]}x{first[1]} take {format_bytes(needed)} as uint8, "
            f"more than the {format_bytes(free)} of memory available; pass a smaller image_size "
            f"(e.g. image_size={max(32, first[0] // 2)}) or n=... to load a random subset"
        )
    out = torch.empty(len(files), 3, *first, dtype=torch.uint8)
    bar = progress_bar(len(files), progress, f"loading {root.name}", unit="image", delay=PROGRESS_DELAY)
    filled = 0
    for j, file in enumerate(files):
        if bar is not None:
            bar.update(1)
        if j in skipped:
            continue
        try:
            image = read_image(file, image_size)
        except Exception as err:  # noqa: BLE001 - truncated, not an image, unsupported mode
            skipped[j] = _reason(err)
            continue
        if image_size:
            image = _square(image[None], image_size)[0]
        elif tuple(image.shape[1:]) != first:
            raise ValueError(
                f"images in {root} differ in size ({first[0]}x{first[1]} and "
                f"{image.shape[1]}x{image.shape[2]} in {file.relative_to(root)}); pass image_size=... "
                "to resize them to one square size"
            )
        out[filled] = image
        filled += 1
    if bar is not None:
        bar.close()
    return out[:filled], dict(sorted(skipped.items()))


def _reason(err: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):
        return "not an image Pillow can read"
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text[:80]}" if text else type(err).__name__
