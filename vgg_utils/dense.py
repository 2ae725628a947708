"""The fully convolutional VGG of the paper's test time (Sec. 3.2): FC6 a k x k conv, FC7/FC8 1x1.

Taught in ``05_dense_evaluation.ipynb``. FC6 of VGG16 multiplies the flattened 7x7x512 pool5 map
by a 25,088 x 4,096 matrix; read row by row, that matrix is 4,096 filters of shape 512x7x7, so
FC6 *is* a 7x7 convolution that happens to see exactly one 7x7 window at 224x224. FC7 and FC8
are 1x1 convolutions. Written as convolutions, the same weights slide over a larger pool5 map
and give a *class score map*: one score per class for every 224x224 window, 32 pixels apart.
The paper averages that map into one score per class ("dense evaluation"); the test-time
protocols that use it are in :mod:`vgg_utils.dense_eval`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

_HEAD_LAYERS = (nn.Linear, nn.ReLU, nn.Dropout, nn.Identity)


class FullyConvolutionalVGG(nn.Module):
    """A VGG whose FC layers are convolutions: ``features`` (the convs and pools, copied) then
    ``head`` (FC6 as a ``kernel x kernel`` conv, FC7 and FC8 as 1x1 convs, ReLU and dropout
    as before). ``forward(x)`` takes ``(N, C, H, W)`` with ``H, W >= crop_size`` and returns the
    class score map ``(N, classes, H // stride - kernel + 1, W // stride - kernel + 1)``: cell
    ``(i, j)`` holds the logits of the window ``[stride * i, stride * i + crop_size)`` (rows) by
    ``[stride * j, stride * j + crop_size)`` (columns). Build it with :func:`to_fully_convolutional`.
    """

    def __init__(
        self,
        features: nn.Sequential,
        head: nn.Sequential,
        *,
        kernel: int,
        stride: int,
        in_channels: int,
        num_classes: int,
        config: str = "",
        compact: bool = False,
    ) -> None:
        super().__init__()
        self.features = features
        self.head = head
        #: FC6's kernel: the side of the pool5 window one score sees (7 for 224 crops).
        self.kernel = kernel
        #: Pixels between neighbouring windows: 2 ** (number of 2x2 max-poolings), 32 for VGG.
        self.stride = stride
        #: The window (and smallest input) side: the training crop FC6 was sized for.
        self.crop_size = kernel * stride
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.config = config
        #: ``True`` for the compact head (global average pooling + one Linear, now a 1x1 conv).
        self.compact = compact

    def score_map_size(self, height: int, width: int) -> tuple[int, int]:
        """The score map's ``(h, w)`` for an ``height x width`` input: ``size // stride - kernel + 1``."""
        return height // self.stride - self.kernel + 1, width // self.stride - self.kernel + 1

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` that says what is wrong with ``x`` and what would be valid."""
        who = "the fully convolutional " + (f"VGG {self.config}" if self.config else "VGG")
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{who} expects a batch of images shaped (N, {self.in_channels}, H, W); got "
                f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}"
            )
        h, w = x.shape[-2:]
        if h < self.crop_size or w < self.crop_size:
            what = (
                "one pool5 cell" if self.compact
                else f"FC6 is now a {self.kernel}x{self.kernel} conv over the pool5 map, {self.stride} pixels a cell"
            )  # fmt: skip
            raise ValueError(
                f"{who} needs inputs of at least {self.crop_size}x{self.crop_size} pixels, the "
                f"training crop ({what}); got {h}x{w}. Rescale the image so its smaller side is "
                f"at least {self.crop_size}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.features(x))


def _vgg_parts(model: nn.Module) -> tuple[nn.Sequential, nn.Module, nn.Sequential]:
    if isinstance(model, FullyConvolutionalVGG):
        raise TypeError("the model is already fully convolutional (its head is convolutions); use it as it is")
    parts = [getattr(model, name, None) for name in ("features", "avgpool", "classifier")]
    if not all(isinstance(p, nn.Module) for p in parts) or not isinstance(parts[0], nn.Sequential):
        hint = " (a CourseModel: pass its .model)" if hasattr(model, "preprocess") and hasattr(model, "model") else ""
        raise TypeError(
            "to_fully_convolutional expects a VGG: a module with .features (an nn.Sequential of "
            "convs and pools), .avgpool and .classifier, as build_vgg, load_pretrained, a course "
            f"model's .model and torchvision.models.vgg16() have; got {type(model).__name__}{hint}"
        )
    features, avgpool, classifier = parts
    if not isinstance(classifier, nn.Sequential):
        classifier = nn.Sequential(classifier)
    return features, avgpool, classifier


def _side(output_size) -> int | None:
    """The side of a square adaptive-pool output (``7``, ``(7, 7)``), else ``None``."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    return size[0] if len(size) == 2 and size[0] == size[1] and isinstance(size[0], int) else None


def to_fully_convolutional(model: nn.Module) -> FullyConvolutionalVGG:
    """A new module in which the FC layers of ``model`` are convolutions, weights reshaped, not
    retrained; ``model`` itself is left untouched (nothing is shared). In eval mode.

    FC6 becomes a ``k x k`` conv over the pool5 map, FC7 and FC8 1x1 convs. ``k`` is the side of
    the pool5 map FC6 was sized for: 7 for torchvision's head (``AdaptiveAvgPool2d((7, 7))``,
    ``build_vgg(..., input_size=None)``, :func:`vgg_utils.load_pretrained`; the adaptive pool is
    dropped, as the paper has no such layer, so the training crop is 224), ``S / 32`` for
    ``build_vgg(..., input_size=S)`` (3 for the ``shapes96`` course model, 1 for ``cifar10``).
    The compact head (global average pooling + one Linear) is already fully convolutional: its
    Linear becomes a 1x1 conv whose averaged score map equals the original output at any size.
    On the training crop the score map is ``1 x 1`` and equals the original logits; on a larger
    input it is ``(N, classes, H // 32 - k + 1, W // 32 - k + 1)``. A module that is not a VGG,
    or whose classifier has no FC layers, raises with a sentence that says what is expected.
    Taught in ``05_dense_evaluation.ipynb``.
    """
    features, avgpool, classifier = _vgg_parts(model)
    convs = [m for m in features.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("model.features has no nn.Conv2d: this is not a VGG's convolutional part")
    channels, in_channels = convs[-1].out_channels, convs[0].in_channels
    # Every use counts: ``[nn.MaxPool2d(2)] * 2`` puts one module in twice, and modules() would
    # list it once (stride 2 instead of 4).
    used = [m for _, m in features.named_modules(remove_duplicate=False)]
    pools = [m for m in used if isinstance(m, nn.MaxPool2d)]
    stride = math.prod(int(p.stride if isinstance(p.stride, int) else p.stride[0]) for p in pools) or 1
    linears = [m for m in classifier if isinstance(m, nn.Linear)]
    others = sorted({type(m).__name__ for m in classifier if not isinstance(m, _HEAD_LAYERS)})
    if not linears:
        raise ValueError(
            "model.classifier has no FC (nn.Linear) layers to turn into convolutions (it holds "
            f"{[type(m).__name__ for m in classifier] or 'nothing'}); pass the whole classifier "
            "network, e.g. build_vgg('D') or a course model's .model, not a feature extractor"
        )
    if others:
        raise ValueError(
            f"model.classifier holds {others}; to_fully_convolutional converts heads made of "
            "Linear, ReLU and Dropout layers (the paper's FC6-FC8 or the compact head)"
        )

    first = linears[0]
    compact = False
    if isinstance(avgpool, nn.AdaptiveAvgPool2d) and _side(avgpool.output_size) == 1:
        kernel, compact = 1, True  # global average pooling: a 1x1 conv, then the map's mean
    elif isinstance(avgpool, nn.AdaptiveAvgPool2d) and _side(avgpool.output_size):
        kernel = _side(avgpool.output_size)  # torchvision's (7, 7): FC6 sees 7x7 pool5 cells
    elif isinstance(avgpool, nn.Identity):
        kernel = round(math.sqrt(first.in_features / channels))  # build_vgg(input_size=S): S / 32
    else:
        raise ValueError(
            f"model.avgpool is {avgpool}; to_fully_convolutional handles nn.Identity (FC6 sized for "
            "one crop), AdaptiveAvgPool2d((k, k)) (torchvision's head) and AdaptiveAvgPool2d(1) "
            "(the compact head)"
        )
    if first.in_features != channels * kernel * kernel:
        raise ValueError(
            f"FC6 takes {first.in_features:,} inputs but the pool5 map has {channels} channels: "
            f"{channels} x {kernel} x {kernel} = {channels * kernel * kernel:,} expected. Is "
            "model.classifier the VGG's own head?"
        )
    input_size = getattr(model, "input_size", None)
    if input_size is not None and input_size != kernel * stride:
        raise ValueError(f"model.input_size={input_size} does not match FC6's {kernel}x{kernel} pool5 window")

    head: list[nn.Module] = []
    k = kernel
    for module in classifier:
        if isinstance(module, nn.Linear):
            weight = module.weight.detach()
            # skip_init: no random initialisation (the weights are copied in below), so converting
            # a model does not draw from, and shift, the global random generator
            conv = nn.utils.skip_init(nn.Conv2d, weight.shape[1] // (k * k), weight.shape[0], k,
                                      bias=module.bias is not None, device=weight.device,
                                      dtype=weight.dtype)  # fmt: skip
            with torch.no_grad():
                # Flattening (C, k, k) row-major is what torch.flatten did to pool5: undo it.
                conv.weight.copy_(weight.reshape(conv.weight.shape))
                if module.bias is not None:
                    conv.bias.copy_(module.bias.detach())
            head.append(conv)
            k = 1  # FC7 and FC8 see one position of the map below them
        elif isinstance(module, nn.ReLU):
            head.append(nn.ReLU(inplace=module.inplace))
        elif isinstance(module, nn.Dropout):
            head.append(nn.Dropout(module.p))
    net = FullyConvolutionalVGG(
        copy.deepcopy(features), nn.Sequential(*head), kernel=kernel, stride=stride,
        in_channels=in_channels, num_classes=linears[-1].out_features,
        config=str(getattr(model, "config", "")), compact=compact,
    )  # fmt: skip
    return net.eval()
