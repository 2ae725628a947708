"""Receptive fields: theoretical (a recurrence), empirical (gradients) and effective (Luo et al.).

Taught in ``02_receptive_fields.ipynb``. Three views of "which input pixels can a unit see":

* :func:`receptive_field_table` -- the *theoretical* receptive field of every layer, from the
  recurrence of Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks"
  (Distill, 2019). For a layer with kernel ``k``, stride ``s`` and left padding ``p`` fed by a
  layer with receptive field ``r``, jump ``j`` and start ``c``::

      r_out = r + (k - 1) * j          # each extra kernel tap reaches one input-jump further
      j_out = j * s                    # neighbouring outputs are s input-jumps apart
      c_out = c + ((k - 1) / 2 - p) * j

  starting from the input, ``r = 1, j = 1, c = 0`` (pixel ``i``'s centre is at coordinate ``i``).
* :func:`empirical_receptive_field` and :func:`effective_receptive_fields` (Luo et al., NeurIPS
  2016) -- the field measured with gradients, in :mod:`vgg_utils.receptive_measured`.

:func:`compose_kernels` makes the paper's Sec. 2.3 exact: two linear 3x3 convolutions are one 5x5.

The fully connected head is out of scope on purpose: after ``AdaptiveAvgPool2d`` / ``Flatten`` /
``Linear`` every unit depends on every pool5 position, i.e. the whole image (a global receptive
field), so the recurrence stops at the conv/pool ``features``; such modules are refused.
"""

from __future__ import annotations

import math
import types

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .models import VGG, build_vgg
from .profiling import paper_layer_names

#: Modules that act on each spatial position separately (or per channel): receptive field unchanged.
#: BatchNorm is taken in eval mode (a per-channel affine map); LRN mixes channels, not positions.
POINTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.BatchNorm2d,
    nn.LocalResponseNorm,
)

_SUPPORTED = (
    "Conv2d (square kernel and stride, dilation 1), MaxPool2d (dilation 1), AvgPool2d, and the "
    "point-wise modules " + ", ".join(t.__name__ for t in POINTWISE)
)


def _square(value: int | tuple[int, ...], what: str, path: str, module: nn.Module) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(
            f"cannot compute the receptive field through {path} ({module!r}): its {what} {value} is "
            f"not square; this recurrence tracks one size for both axes. Supported: {_SUPPORTED}"
        )
    return int(value[0])


def _geometry(path: str, module: nn.Module) -> tuple[int, int, int, bool] | None:
    """``(kernel, stride, left padding, ceil_mode)`` of a spatial layer, ``None`` if point-wise."""
    if isinstance(module, POINTWISE):
        return None
    if isinstance(module, nn.Conv2d):
        dilation = _square(module.dilation, "dilation", path, module)
        if dilation != 1:
            raise ValueError(
                f"cannot compute the receptive field through {path} ({module!r}): dilated "
                f"convolutions (dilation={module.dilation}) are not supported. Supported: {_SUPPORTED}"
            )
        k = _square(module.kernel_size, "kernel_size", path, module)
        s = _square(module.stride, "stride", path, module)
        if module.padding == "valid":
            p = 0
        elif module.padding == "same":
            p = (k - 1) // 2  # PyTorch pads the extra pixel of an even kernel on the right
        else:
            p = _square(module.padding, "padding", path, module)
        return k, s, p, False
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        if isinstance(module, nn.MaxPool2d) and _square(module.dilation, "dilation", path, module) != 1:
            raise ValueError(
                f"cannot compute the receptive field through {path} ({module!r}): dilated "
                f"pooling is not supported. Supported: {_SUPPORTED}"
            )
        k = _square(module.kernel_size, "kernel_size", path, module)
        s = _square(module.stride if module.stride is not None else k, "stride", path, module)
        p = _square(module.padding, "padding", path, module)
        return k, s, p, bool(module.ceil_mode)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)):
        raise TypeError(
            f"cannot compute the receptive field through {path} ({type(module).__name__}): after "
            "adaptive pooling / flattening / a fully connected layer every unit sees the whole "
            "input (a global receptive field), so the table stops at the conv/pool features; pass "
            f"model.features (or the VGG model itself). Supported: {_SUPPORTED}"
        )
    raise TypeError(
        f"cannot compute the receptive field through {path} ({type(module).__name__}): unknown "
        f"module type. Supported: {_SUPPORTED}"
    )


def _chain(model: nn.Module | str) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """The leaf modules of the conv/pool part in forward order, and their paper names."""
    if isinstance(model, str):
        with torch.device("meta"):
            model = build_vgg(model)
    if isinstance(model, VGG):
        names = paper_layer_names(model)
        return [(f"features.{i}", m) for i, m in model.features.named_children()], names
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            "expected a VGG model, its .features (an nn.Sequential), or a config name such as 'D'; "
            f"got {type(model).__name__} (a general module's forward order cannot be read off)"
        )
    leaves: list[tuple[str, nn.Module]] = []

    def walk(seq: nn.Sequential, prefix: str) -> None:
        for name, child in seq.named_children():
            path = f"{prefix}{name}"
            if isinstance(child, nn.Sequential):
                walk(child, f"{path}.")
            elif list(child.children()):
                raise TypeError(
                    f"cannot compute the receptive field through {path} ({type(child).__name__}): a "
                    "container other than nn.Sequential (its forward order is unknown). Supported: "
                    f"{_SUPPORTED}"
                )
            else:
                leaves.append((path, child))

    walk(model, "")
    names: dict[str, str] = {}
    if all(not list(m.children()) for m in model.children()):
        # A flat chain (VGG-like features): name it as a VGG's features would be named; average
        # pools (as in linearise()) count as pools too.
        like = [nn.MaxPool2d(2) if isinstance(m, nn.AvgPool2d) else m for m in model.children()]
        stub = types.SimpleNamespace(features=nn.Sequential(*like), classifier=nn.Sequential())
        names = {k.removeprefix("features."): v for k, v in paper_layer_names(stub).items()}
    return leaves, names


def _out_size(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    if ceil_mode:
        out = math.ceil((n + 2 * p - k) / s) + 1
        if (out - 1) * s >= n + p:  # PyTorch: the last window must start inside input or left pad
            out -= 1
        return out
    return (n + 2 * p - k) // s + 1


def receptive_field_table(
    model: nn.Module | str, input_size: tuple[int, int, int] = (3, 224, 224)
) -> pd.DataFrame:
    """One row per layer of the conv/pool features with its theoretical receptive field.

    Columns: ``layer`` (paper name, ``conv1_1`` ... ``pool5``, for a VGG or a flat VGG-like chain;
    else the module path), ``module`` (path), ``type``, ``kernel``, ``stride``, ``padding``,
    ``output_size`` (height, width for ``input_size``), ``rf`` (receptive field side in input
    pixels, ignoring the image border), ``jump`` (input pixels between neighbouring units) and
    ``start`` (input coordinate of the centre of the first unit; pixel ``i`` is centred at ``i``, so
    a negative start means the first unit's field hangs over the zero padding). Unit ``u`` sees input
    pixels ``start + u * jump +- (rf - 1) / 2``.

    ``model`` is a VGG (its ``features`` are analysed; the FC head has a global receptive field and is
    left out), an ``nn.Sequential`` of supported modules, or a config name (built on the meta device).
    A module the recurrence cannot reason about (a dilated conv, a non-square kernel, an unknown or
    global module) raises a ``ValueError``/``TypeError`` naming it and listing what is supported.
    Taught in ``02_receptive_fields.ipynb``.
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size is (channels, height, width) for one image; got {input_size!r}")
    leaves, names = _chain(model)
    h, w = int(input_size[1]), int(input_size[2])
    rf, jump, start = 1, 1, 0.0
    rows = []
    for path, module in leaves:
        geometry = _geometry(path, module)
        k, s, p = 1, 1, 0
        if geometry is not None:
            k, s, p, ceil_mode = geometry
            rf = rf + (k - 1) * jump
            start = start + ((k - 1) / 2 - p) * jump
            jump = jump * s
            if getattr(module, "padding", None) != "same":  # "same" keeps the size (even kernels pad 1 more right)
                h, w = _out_size(h, k, s, p, ceil_mode), _out_size(w, k, s, p, ceil_mode)
            if h < 1 or w < 1:
                raise ValueError(
                    f"input_size {tuple(input_size)} is too small: {path} ({type(module).__name__}) "
                    "would have an empty output"
                )
        rows.append(
            {
                "layer": names.get(path, path),
                "module": path,
                "type": type(module).__name__,
                "kernel": k,
                "stride": s,
                "padding": p,
                "output_size": (h, w),
                "rf": rf,
                "jump": jump,
                "start": start,
            }
        )
    return pd.DataFrame(rows)


def compose_kernels(k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """The single kernel of two stacked *linear* convolutions (stride 1, no bias): first ``k1``
    (shape ``(mid, in, h1, w1)``), then ``k2`` (``(out, mid, h2, w2)``); the result has shape
    ``(out, in, h1 + h2 - 1, w1 + w2 - 1)``. 2-D kernels are single-channel convolutions.

    ``conv2d`` is a cross-correlation, and two cross-correlations compose into the cross-correlation
    with the *full convolution* of the kernels: ``K[o, c] = sum_m conv_full(k2[o, m], k1[m, c])``.
    Exact for unpadded ("valid") convolutions; with zero padding it holds except on the outer ring
    of pixels, where the stacked version pads the intermediate map with zeros. Taught in
    ``02_receptive_fields.ipynb`` (Sec. 2.3: two 3x3 convs see 5x5).
    """
    if not isinstance(k1, torch.Tensor) or not isinstance(k2, torch.Tensor):
        raise TypeError("k1 and k2 must be torch tensors (conv weights)")
    if k1.dim() == 2 and k2.dim() == 2:
        return compose_kernels(k1[None, None], k2[None, None])[0, 0]
    if k1.dim() != 4 or k2.dim() != 4:
        raise ValueError(
            "k1 and k2 must both be conv weights shaped (out, in, h, w) or both 2-D kernels; got "
            f"shapes {tuple(k1.shape)} and {tuple(k2.shape)}"
        )
    if k2.shape[1] != k1.shape[0]:
        raise ValueError(
            f"k2 takes {k2.shape[1]} input channels but k1 produces {k1.shape[0]} "
            f"(shapes {tuple(k1.shape)} then {tuple(k2.shape)})"
        )
    h2, w2 = k2.shape[-2:]
    # Full convolution = cross-correlation with the flipped kernel over a (size - 1)-padded input.
    # k1's input channels play the batch; its output channels (the middle ones) are summed over.
    full = F.conv2d(k1.transpose(0, 1), k2.flip(-2, -1), padding=(h2 - 1, w2 - 1))
    return full.transpose(0, 1).contiguous()
