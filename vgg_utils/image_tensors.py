"""The course's labelled image set: all images in one tensor, labels in another, class names.

Taught in ``04_training.ipynb``. Every dataset the course trains on (:func:`vgg_utils.load_cifar10`,
:class:`vgg_utils.ShapesDataset`, :func:`vgg_utils.load_image_folder`, ...) is an
:class:`ImageTensors`; :func:`to_float` is the one place that turns ``uint8`` images into floats.
A module of its own so that the datasets and everything that consumes them import it without
importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(repr=False)
class ImageTensors:
    """A labelled image set held as tensors, ready to move to a device and slice into batches.

    ``images``: ``(N, 3, H, W)``, either ``uint8`` (0-255, 4x smaller: real photos) or a float
    dtype in [0, 1] (the shapes dataset). ``labels``: ``(N,)`` ``int64``. ``classes``: the names,
    ``classes[label]``; ``source`` a note on where they came from. Indexing gives ``(float image in [0, 1], int label)`` like a torchvision
    dataset, so it also works with a ``DataLoader``. Taught in ``04_training.ipynb``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str = ""  # where the images came from, e.g. "CIFAR-10 train (torchvision cache)"

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dim() != 4:
            raise ValueError(
                "images must be a tensor shaped (N, C, H, W); got "
                f"{getattr(self.images, 'shape', type(self.images).__name__)}"
            )
        if self.images.dtype != torch.uint8 and not self.images.is_floating_point():
            raise TypeError(f"images must be uint8 (0-255) or float (0-1); got {self.images.dtype}")
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64)
        if self.labels.shape != (len(self.images),):
            raise ValueError(
                f"labels must have shape ({len(self.images)},), one per image; "
                f"got {tuple(self.labels.shape)}"
            )
        self.classes = list(self.classes)
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(
            self.classes
        ):
            raise ValueError(
                f"labels must lie in [0, {len(self.classes) - 1}] for {len(self.classes)} classes; "
                f"got [{int(self.labels.min())}, {int(self.labels.max())}]"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_float(self.images[index]), int(self.labels[index])

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.images.shape[1:])
        return (
            f"{type(self).__name__}(n={len(self)}, image={shape}, dtype={self.images.dtype}, "
            f"classes={len(self.classes)}, device={self.images.device})"
        )

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images."""
        return tuple(self.images.shape[-2:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> ImageTensors:
        """The same data on ``device`` (images keep their dtype: ``uint8`` stays small)."""
        return ImageTensors(self.images.to(device), self.labels.to(device), self.classes, self.source)

    def subset(self, indices: torch.Tensor | Sequence[int] | slice) -> ImageTensors:
        """The images at ``indices`` (a slice, a list or an index tensor)."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(indices, dtype=torch.int64, device=self.labels.device)
        return ImageTensors(self.images[indices], self.labels[indices], self.classes, self.source)

    def class_counts(self) -> torch.Tensor:
        """Images per class, ``(num_classes,)``."""
        return torch.bincount(self.labels.cpu(), minlength=len(self.classes))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` 0-255 -> ``float32`` 0-1; float images pass through unchanged."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 (0-255) or float (0-1); got {images.dtype}")
    return images
