"""The paper's training-set augmentation (Sec. 3.1), on a whole batch at once as tensor operations.

Taught in ``04_training.ipynb``. For each training image the paper

1. rescales it isotropically so its smaller side is the training scale ``S`` (fixed, or drawn
   from ``[S_min, S_max]`` per image: "scale jittering"),
2. takes a random ``224 x 224`` crop (one SGD iteration, one crop),
3. flips it horizontally with probability 0.5,
4. shifts its colours along the principal components of the training set's RGB values
   (Krizhevsky et al.'s "fancy PCA" colour augmentation),
5. subtracts the training set's mean RGB value (the only pre-processing).

At the course's image sizes the same recipe reads e.g. "32 crops from S in [32, 64]" for CIFAR.
Steps 1-2 are one bilinear resampling per image (``F.grid_sample``), so every image in a batch
gets its own ``S`` and its own crop without a Python loop; random numbers are drawn on the CPU
from a ``torch.Generator`` and moved to the batch's device, so results are the same on CPU,
CUDA and MPS. :class:`PaperAugment` composes the five steps into one callable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .data import ImageTensors, to_float


def _pair(scale: int | Sequence[int]) -> tuple[int, int]:
    lo, hi = (scale, scale) if isinstance(scale, int) else tuple(scale)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (lo, hi)) or not 0 < lo <= hi:
        raise ValueError(
            f"a training scale is an integer S or a range (S_min, S_max) with 0 < S_min <= S_max; "
            f"got {scale!r}"
        )
    return lo, hi


def sample_scales(
    n: int, scale: int | Sequence[int], generator: torch.Generator | None = None
) -> torch.Tensor:
    """``n`` training scales ``S``, integers uniform in ``[S_min, S_max]`` inclusive (``int64``)."""
    lo, hi = _pair(scale)
    return torch.randint(lo, hi + 1, (n,), generator=generator)


def sample_crop_offsets(
    scales: torch.Tensor, image_size: tuple[int, int], crop_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Top-left corners ``(oy, ox)`` of a random crop in each rescaled image, uniform over all
    positions where the crop fits: ``0 <= oy <= H_s - crop`` with ``H_s`` the rescaled height."""
    h, w = image_size
    factor = scales.double() / min(h, w)
    room_y = (h * factor).floor().long() - crop_size
    room_x = (w * factor).floor().long() - crop_size
    if bool((room_y < 0).any() or (room_x < 0).any()):
        raise ValueError(
            f"a {crop_size}x{crop_size} crop does not fit an image rescaled to S={int(scales.min())}; "
            f"the training scale S must be at least the crop size"
        )
    oy = (torch.rand(len(scales), generator=generator, dtype=torch.float64) * (room_y + 1)).floor()
    ox = (torch.rand(len(scales), generator=generator, dtype=torch.float64) * (room_x + 1)).floor()
    return oy.long(), ox.long()


def rescale_crop(
    images: torch.Tensor, crop_size: int, scales: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor
) -> torch.Tensor:
    """Rescale image ``i`` so its smaller side is ``scales[i]`` and cut the ``crop_size`` square at
    ``(oy[i], ox[i])``, in one bilinear ``grid_sample``: the same numbers as
    ``F.interpolate(..., mode="bilinear")`` followed by slicing, but with a scale per image.
    (Bilinear without antialiasing: fine for upscaling, which is the paper's S >= crop case when
    images are stored at the crop size; store larger images at the smallest S you train with.)
    """
    n, _, h, w = images.shape
    device = images.device
    factor = scales.to(device, torch.float32) / min(h, w)  # rescaled size: (h * f, w * f)
    steps = torch.arange(crop_size, device=device, dtype=torch.float32) + 0.5
    # Output pixel j sits at x = ox + j + 0.5 in the rescaled image; grid_sample wants [-1, 1].
    gx = 2 * (ox.to(device)[:, None] + steps) / (w * factor[:, None]) - 1
    gy = 2 * (oy.to(device)[:, None] + steps) / (h * factor[:, None]) - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_flip(
    images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability p must be in [0, 1]; got {p}")
    flip = (torch.rand(len(images), generator=generator) < p).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def mean_rgb(images: torch.Tensor) -> torch.Tensor:
    """The per-channel mean ``(3,)`` of a set of images, in the float [0, 1] scale."""
    return to_float(images).mean(dim=(0, 2, 3), dtype=torch.float64).float()


def rgb_pca(images: torch.Tensor, max_images: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues ``(3,)`` (descending) and eigenvectors ``(3, 3)`` (columns) of the RGB
    covariance of the training pixels (float [0, 1] scale; the first ``max_images`` images)."""
    pixels = to_float(images[:max_images]).permute(1, 0, 2, 3).reshape(3, -1).double()
    eigvals, eigvecs = torch.linalg.eigh(torch.cov(pixels))  # ascending
    return eigvals.flip(0).float(), eigvecs.flip(1).float()


def pca_color_shift(
    images: torch.Tensor,
    eigvals: torch.Tensor,
    eigvecs: torch.Tensor,
    std: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add ``sum_i alpha_i * lambda_i * p_i`` to every pixel of each image, ``alpha_i ~ N(0, std)``
    drawn once per image (AlexNet, Sec. 4.1), with ``lambda_i, p_i`` from :func:`rgb_pca`.

    Literally as written, the shift's standard deviation along ``p_i`` is ``std * lambda_i``,
    small on the [0, 1] scale; many implementations pass ``eigvals.sqrt()`` (the standard
    deviations) instead, which makes the shift independent of the pixel scale.
    """
    alpha = torch.randn(len(images), 3, generator=generator) * std
    shift = (alpha * eigvals.cpu()) @ eigvecs.cpu().T  # row i: sum_k alpha_ik lambda_k p_k
    return images + shift.to(images.device, images.dtype)[:, :, None, None]


def subtract_mean(images: torch.Tensor, mean: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Subtract a mean RGB value ``(3,)`` from every pixel (the paper's only pre-processing)."""
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device)
    return images - mean[:, None, None]


class PaperAugment:
    """The paper's augmentation as one callable on a batch ``(N, 3, H, W)`` (uint8 or float).

    ``PaperAugment(crop_size, scale=None, *, flip=True, color_pca=None, color_std=0.1, mean=None,
    test_scale=None, seed=0)``. ``scale``: ``None`` crops at the stored size; an integer ``S`` is
    single-scale training; ``(S_min, S_max)`` is scale jittering with ``S`` drawn per image.
    ``color_pca``: ``(eigvals, eigvecs)`` from :func:`rgb_pca` (``None``: no colour shift).
    ``mean``: the training set's mean RGB (``None``: no subtraction). Calling it applies the
    training-time steps in the paper's order; :meth:`test` is the test-time pre-processing
    (float, optional rescale to ``test_scale`` Q, mean subtraction; no crop, no randomness).
    :meth:`from_data` measures mean and PCA on a training set. It owns a seeded CPU
    ``torch.Generator``; ``state_dict``/``load_state_dict`` save and restore it (checkpoints).
    Taught in ``04_training.ipynb``.
    """

    def __init__(
        self,
        crop_size: int,
        scale: int | Sequence[int] | None = None,
        *,
        flip: bool = True,
        color_pca: tuple[torch.Tensor, torch.Tensor] | None = None,
        color_std: float = 0.1,
        mean: torch.Tensor | Sequence[float] | None = None,
        test_scale: int | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
            raise ValueError(f"crop_size must be a positive integer; got {crop_size!r}")
        self.crop_size = crop_size
        self.scale = None if scale is None else _pair(scale)
        if self.scale is not None and self.scale[0] < crop_size:
            raise ValueError(f"training scale S_min={self.scale[0]} is smaller than the crop {crop_size}")
        self.flip = bool(flip)
        if color_pca is not None:
            eigvals, eigvecs = (torch.as_tensor(t, dtype=torch.float32) for t in color_pca)
            if eigvals.shape != (3,) or eigvecs.shape != (3, 3):
                raise ValueError("color_pca must be (eigvals (3,), eigvecs (3, 3)), as rgb_pca returns")
            color_pca = (eigvals, eigvecs)
        self.color_pca = color_pca
        self.color_std = float(color_std)
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        if self.mean is not None and self.mean.shape != (3,):
            raise ValueError(f"mean must be 3 numbers (R, G, B); got shape {tuple(self.mean.shape)}")
        self.test_scale = test_scale
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_data(
        cls,
        data: ImageTensors | torch.Tensor,
        crop_size: int | None = None,
        scale: int | Sequence[int] | None = None,
        *,
        flip: bool = True,
        color: bool = True,
        color_std: float = 0.1,
        subtract_mean: bool = True,
        test_scale: int | None = None,
        seed: int = 0,
    ) -> PaperAugment:
        """Measure the mean RGB and the RGB PCA on training images, then build the augmentation.

        ``crop_size`` defaults to the stored image size (``scale`` then decides what jitters).
        """
        images = data.images if isinstance(data, ImageTensors) else data
        return cls(
            crop_size or int(images.shape[-1]),
            scale,
            flip=flip,
            color_pca=rgb_pca(images) if color else None,
            color_std=color_std,
            mean=mean_rgb(images) if subtract_mean else None,
            test_scale=test_scale,
            seed=seed,
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images)
        n, _, h, w = x.shape
        if self.scale is not None or (h, w) != (self.crop_size, self.crop_size):
            scales = sample_scales(n, self.scale or min(h, w), self.generator)
            oy, ox = sample_crop_offsets(scales, (h, w), self.crop_size, self.generator)
            x = rescale_crop(x, self.crop_size, scales, oy, ox)
        if self.flip:
            x = random_flip(x, 0.5, self.generator)
        if self.color_pca is not None:
            x = pca_color_shift(x, *self.color_pca, std=self.color_std, generator=self.generator)
        if self.mean is not None:
            x = subtract_mean(x, self.mean)
        return x

    def test(self, images: torch.Tensor) -> torch.Tensor:
        """Test-time pre-processing: float, smaller side rescaled to ``test_scale``, mean removed."""
        x = to_float(images)
        if self.test_scale is not None and min(x.shape[-2:]) != self.test_scale:
            h, w = x.shape[-2:]
            size = (round(h * self.test_scale / min(h, w)), round(w * self.test_scale / min(h, w)))
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return x if self.mean is None else subtract_mean(x, self.mean)

    def state_dict(self) -> dict:
        """The generator's state (and the measured statistics), for checkpoints."""
        state = {"generator": self.generator.get_state()}
        if self.mean is not None:
            state["mean"] = self.mean
        if self.color_pca is not None:
            state["eigvals"], state["eigvecs"] = self.color_pca
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if "mean" in state:
            self.mean = state["mean"].float()
        if "eigvals" in state:
            self.color_pca = (state["eigvals"].float(), state["eigvecs"].float())

    def __repr__(self) -> str:
        parts = [f"crop_size={self.crop_size}", f"scale={self.scale}", f"flip={self.flip}"]
        parts.append(f"color_pca={'on' if self.color_pca is not None else 'off'}")
        parts.append("mean=" + ("off" if self.mean is None else str([round(v, 3) for v in self.mean.tolist()])))
        return f"PaperAugment({', '.join(parts)})"


def train_transform(
    data: ImageTensors | torch.Tensor, crop_size: int | None = None, scale=None, **kwargs
) -> PaperAugment:
    """Shorthand for :meth:`PaperAugment.from_data`: the paper's full recipe for a training set."""
    return PaperAugment.from_data(data, crop_size, scale, **kwargs)
