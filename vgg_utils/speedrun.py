"""Training the paper's networks fast on a GPU: the course trainer plus named speed-run tricks.

Taught in ``04_training.ipynb`` (section "On a GPU"); measured by ``benchmarks/gpu_suite.py``.
The network stays one of the paper's configurations with batch norm; what changes is how it is
trained and tested. Ideas from the CIFAR-10 speed-run line of work (Keller Jordan's *airbench*,
David Page's DAWNBench runs), each one named in :meth:`FastRecipe.tricks` so that a reported
number says what produced it:

- the data stay on the GPU and every random number of the augmentation is drawn there
  (:class:`TranslateFlip`), so the CPU never waits for the GPU inside an epoch;
- random translations (pad-and-crop, *not* the paper's rescale-and-crop) and flips;
- one-cycle learning rate, Nesterov momentum, label smoothing (in :func:`vgg_utils.train`);
- test-time augmentation: the paper's own flip averaging (Sec. 3.2: "the soft-max class
  posteriors of the original and flipped images are averaged") plus small translations
  (:func:`predict_tta`);
- ``torch.compile`` and cuDNN autotuning (switched on by the caller, named here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .augment import mean_rgb, subtract_mean
from .data import ImageTensors, to_float
from .runtime import module_device
from .training import _as_tensors, auto_bf16, auto_channels_last, predict, train


class TranslateFlip:
    """Random translation by up to ``pad`` pixels and a random horizontal flip, then mean
    subtraction, on a batch ``(N, 3, H, W)`` on any device.

    The translation pads each image by ``pad`` pixels (``padding_mode``: ``"reflect"`` or
    ``"zeros"``) and cuts a random ``H x W`` window, one offset per image, in one gather. Unlike
    :class:`vgg_utils.PaperAugment`, whose random numbers come from a CPU generator (the same
    results on every device), the random numbers here are drawn by a generator on the batch's
    device: no copy from the CPU, so the CPU never waits for the GPU between batches. Results are
    reproducible per device (seeded), not across devices. ``test(images)`` is the test-time
    pre-processing (float, mean removed). Taught in ``04_training.ipynb``.
    """

    def __init__(
        self,
        pad: int = 4,
        *,
        flip: bool = True,
        mean: torch.Tensor | list[float] | None = None,
        padding_mode: str = "reflect",
        seed: int = 0,
    ) -> None:
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be a non-negative integer (pixels); got {pad!r}")
        if padding_mode not in ("reflect", "zeros"):
            raise ValueError(f"padding_mode must be 'reflect' or 'zeros'; got {padding_mode!r}")
        self.pad, self.flip, self.padding_mode, self.seed = pad, bool(flip), padding_mode, seed
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        if self.mean is not None and self.mean.shape != (3,):
            raise ValueError(f"mean must be 3 numbers (R, G, B); got shape {tuple(self.mean.shape)}")
        self.generator: torch.Generator | None = None
        self._pending_state: torch.Tensor | None = None

    @classmethod
    def from_data(cls, data: ImageTensors | torch.Tensor, pad: int = 4, **kwargs) -> TranslateFlip:
        """Measure the training set's mean RGB (the paper's only pre-processing) and build it."""
        images = data.images if isinstance(data, ImageTensors) else data
        return cls(pad, mean=mean_rgb(images), **kwargs)

    def _generator_for(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._pending_state is not None:  # restored from a checkpoint before the first batch
                self.generator.set_state(self._pending_state)
                self._pending_state = None
        return self.generator

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images)
        n, c, h, w = x.shape
        gen = self._generator_for(x.device)
        if self.pad:
            p = self.pad
            mode = "reflect" if self.padding_mode == "reflect" and p < min(h, w) else "constant"
            padded = F.pad(x, (p, p, p, p), mode=mode)
            oy = torch.randint(0, 2 * p + 1, (n, 1), device=x.device, generator=gen)
            ox = torch.randint(0, 2 * p + 1, (n, 1), device=x.device, generator=gen)
            rows = (oy + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
            cols = (ox + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
            batch = torch.arange(n, device=x.device)[:, None, None, None]
            chans = torch.arange(c, device=x.device)[None, :, None, None]
            x = padded[batch, chans, rows, cols]  # one gather: each image's own window
        if self.flip:
            mirror = torch.rand(n, device=x.device, generator=gen) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
        return x if self.mean is None else subtract_mean(x, self.mean)

    def test(self, images: torch.Tensor) -> torch.Tensor:
        """Test-time pre-processing: float, mean removed (no randomness)."""
        x = to_float(images)
        return x if self.mean is None else subtract_mean(x, self.mean)

    def state_dict(self) -> dict:
        """The generator's state and the mean, for :func:`vgg_utils.train` checkpoints."""
        state: dict = {} if self.mean is None else {"mean": self.mean}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        if "mean" in state:
            self.mean = state["mean"].float()
        if "generator" in state:
            if self.generator is None:
                self._pending_state = state["generator"]
            else:
                self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        mean = "off" if self.mean is None else str([round(v, 3) for v in self.mean.tolist()])
        return f"TranslateFlip(pad={self.pad}, flip={self.flip}, padding_mode={self.padding_mode!r}, mean={mean})"


def _translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift a batch by ``(dy, dx)`` pixels, filling the border by reflection."""
    if dy == dx == 0:
        return x
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    h, w = x.shape[-2:]
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def tta_views(flip: bool = True, translate: int = 0) -> list[tuple[bool, int, int]]:
    """The test-time views ``(mirrored, dy, dx)``: the image, its mirror (``flip``), and both
    shifted by ``(+translate, +translate)`` and ``(-translate, -translate)`` pixels."""
    if isinstance(translate, bool) or not isinstance(translate, int) or translate < 0:
        raise ValueError(f"translate must be a non-negative integer (pixels); got {translate!r}")
    shifts = [(0, 0)] + ([(translate, translate), (-translate, -translate)] if translate else [])
    return [(mirrored, dy, dx) for dy, dx in shifts for mirrored in ((False, True) if flip else (False,))]


@torch.inference_mode()
def predict_tta(
    model: nn.Module,
    data: ImageTensors | tuple,
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    flip: bool = True,
    translate: int = 0,
    batch_size: int = 1000,
    bf16: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class posteriors averaged over the test-time views of :func:`tta_views`.

    Returns ``(mean softmax (N, K), softmax of the plain view (N, K))``, both on the model's
    device. ``transform``: the test pre-processing applied first (e.g. ``augment.test``).
    Averaging posteriors of an image and its mirror is the paper's own test-time step (Sec. 3.2);
    translations are not in the paper. Taught in ``04_training.ipynb``.
    """
    data = _as_tensors(data, "data").to(module_device(model))
    base = transform or to_float
    total, plain = 0, None
    views = tta_views(flip, translate)
    for mirrored, dy, dx in views:

        def view(x, mirrored=mirrored, dy=dy, dx=dx):
            x = _translate(base(x), dy, dx)
            return x.flip(-1) if mirrored else x

        p = predict(model, data, transform=view, batch_size=batch_size, bf16=bf16).softmax(dim=1)
        plain = p if plain is None else plain
        total = total + p
    return total / len(views), plain  # type: ignore[return-value]


def evaluate_tta(
    model: nn.Module, data: ImageTensors | tuple, **kwargs
) -> dict[str, float]:
    """Accuracy with test-time augmentation (``"accuracy"``) and of the plain view alone
    (``"accuracy_plain"``), plus the number of views; ``kwargs`` as for :func:`predict_tta`."""
    data = _as_tensors(data, "data")
    mean, plain = predict_tta(model, data, **kwargs)
    labels = data.labels.to(mean.device)
    views = len(tta_views(kwargs.get("flip", True), kwargs.get("translate", 0)))
    return {
        "accuracy": (mean.argmax(1) == labels).float().mean().item(),
        "accuracy_plain": (plain.argmax(1) == labels).float().mean().item(),
        "views": views,
    }


@dataclass
class FastRecipe:
    """A GPU-speed training recipe for the course trainer, every deviation from the paper named.

    ``fit(model, train_data)`` trains with :func:`vgg_utils.train` (one-cycle, SGD with
    ``momentum``/``nesterov``, ``label_smoothing``, :class:`TranslateFlip` with ``pad``);
    ``test(model, test_data)`` is the test pass with ``tta_flip``/``tta_translate``.
    ``compile`` and ``cudnn_benchmark`` are applied by the caller (they are process settings)
    and only recorded here. Taught in ``04_training.ipynb``.
    """

    epochs: int = 20
    batch_size: int = 512
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    pad: int = 4
    tta_flip: bool = True
    tta_translate: int = 2
    eval_batch_size: int = 1000
    compile: bool = False
    cudnn_benchmark: bool = False

    def tricks(self, device: torch.device | str = "cuda") -> list[str]:
        """One short name per technique this recipe uses, paper or not (for results and plots)."""
        device = torch.device(device)
        names = ["data on the device, batches sliced from one tensor (course trainer)"]
        if auto_bf16(device):
            names.append("bf16 autocast")
        if auto_channels_last(device):
            names.append("channels-last memory")
        names.append(f"one-cycle lr (peak {self.lr:g}, batch {self.batch_size})")
        if self.nesterov:
            names.append("Nesterov momentum")
        if self.label_smoothing:
            names.append(f"label smoothing {self.label_smoothing:g}")
        if self.pad:
            names.append(f"random translation +-{self.pad} px (reflect pad + crop; not the paper's rescale-crop)")
        names.append("random flips (paper)")
        names.append("augmentation random numbers drawn on the device (no CPU-GPU sync per batch)")
        names.append("no test pass between epochs")
        if self.tta_flip:
            names.append("test-time flip averaging (paper Sec. 3.2)")
        if self.tta_translate:
            names.append(f"test-time translations +-{self.tta_translate} px")
        names.append(f"test batch {self.eval_batch_size}")
        if self.compile:
            names.append("torch.compile")
        if self.cudnn_benchmark:
            names.append("cudnn.benchmark autotuning")
        return names

    def augment(self, train_data: ImageTensors, seed: int = 0) -> TranslateFlip:
        return TranslateFlip.from_data(train_data, self.pad, seed=seed)

    def fit(
        self,
        model: nn.Module,
        train_data: ImageTensors,
        test_data: ImageTensors | None = None,
        *,
        augment: TranslateFlip | None = None,
        device: torch.device | str | None = None,
        seed: int = 0,
        epochs: int | None = None,
        progress: bool = False,
    ) -> pd.DataFrame:
        """Train with :func:`vgg_utils.train`; ``test_data`` adds a (plain) test pass per epoch."""
        return train(
            model, train_data, test_data, epochs=epochs or self.epochs, batch_size=self.batch_size,
            lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
            weight_decay=self.weight_decay, label_smoothing=self.label_smoothing,
            schedule="onecycle", augment=augment or self.augment(train_data, seed), device=device,
            seed=seed, progress=progress,
        )  # fmt: skip

    def test(self, model: nn.Module, test_data: ImageTensors, augment: TranslateFlip) -> dict[str, float]:
        """Test accuracy with this recipe's test-time augmentation (and of the plain view)."""
        return evaluate_tta(
            model, test_data, transform=augment.test, flip=self.tta_flip,
            translate=self.tta_translate, batch_size=self.eval_batch_size,
        )  # fmt: skip


def choose_epochs(
    limit_s: float, step_s: float, steps_per_epoch: int, fixed_s: float, *, margin: float = 0.08,
    max_epochs: int = 200,
) -> int:  # fmt: skip
    """The most epochs (at least 1, at most ``max_epochs``) whose predicted time, ``epochs *
    steps_per_epoch * step_s + fixed_s`` (e.g. the final test pass), stays within ``limit_s`` less
    a ``margin`` fraction: a one-cycle schedule must know its length before it starts, so a run
    with a time limit chooses its epochs from a measured step time. Taught in ``04_training.ipynb``."""
    if not step_s > 0 or steps_per_epoch < 1:
        raise ValueError(f"need a positive step time and steps per epoch; got {step_s}, {steps_per_epoch}")
    room = limit_s * (1 - margin) - fixed_s
    return max(1, min(max_epochs, int(room // (step_s * steps_per_epoch))))
