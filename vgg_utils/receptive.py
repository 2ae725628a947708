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
* :func:`empirical_receptive_field` -- the input pixels whose gradient reaches one output unit.
  For a network made linear (:func:`linearise`) it is exactly the theoretical box.
* :func:`effective_receptive_fields` -- Luo, Li, Urtasun & Zemel, "Understanding the Effective
  Receptive Field in Deep Convolutional Neural Networks" (NeurIPS 2016): the mean input-gradient
  magnitude of a centre unit over random inputs, which is Gaussian-like and much smaller.

:func:`compose_kernels` makes the paper's Sec. 2.3 exact: two linear 3x3 convolutions are one 5x5.

The fully connected head is out of scope on purpose: after ``AdaptiveAvgPool2d`` / ``Flatten`` /
``Linear`` every unit depends on every pool5 position, i.e. the whole image (a global receptive
field), so the recurrence stops at the conv/pool ``features``; such modules are refused.
"""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Sequence
from dataclasses import dataclass

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


def _row(table: pd.DataFrame, layer: str | int) -> int:
    """Row index of ``layer``: a paper name, a module path or a row number."""
    if isinstance(layer, int) and not isinstance(layer, bool):
        if not -len(table) <= layer < len(table):
            raise ValueError(f"layer index {layer} is out of range for {len(table)} layers")
        return layer % len(table)
    for column in ("layer", "module"):
        hits = table.index[table[column] == layer].tolist()
        if hits:
            return int(hits[0])
    raise ValueError(f"unknown layer {layer!r}; valid layers are {', '.join(table['layer'])}")


def _features(model: nn.Module) -> nn.Module:
    if isinstance(model, str):
        raise TypeError("gradients need real weights: pass a model (e.g. build_vgg('D')), not a name")
    return model.features if isinstance(model, VGG) else model


def linearise(model: nn.Module, *, nonnegative: bool = False) -> nn.Sequential:
    """A copy of the conv/pool features made linear: ReLU, LRN and dropout become identities and
    max-pooling becomes average pooling with the same window (gradients reach every pixel of it).

    ``nonnegative=True`` also takes the absolute value of every weight, so no two paths cancel.
    Taught in ``02_receptive_fields.ipynb`` (the empirical receptive field equals the theoretical).
    """
    leaves, _ = _chain(_features(model))
    layers: list[nn.Module] = []
    for path, module in leaves:
        _geometry(path, module)  # refuse what the theory cannot handle, with the same message
        if isinstance(module, nn.MaxPool2d):
            layers.append(
                nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode)
            )
        elif isinstance(module, POINTWISE) and not isinstance(module, nn.BatchNorm2d):
            layers.append(nn.Identity())
        else:
            layer = copy.deepcopy(module)
            if nonnegative:
                with torch.no_grad():
                    for param in layer.parameters():
                        param.abs_()
            layers.append(layer)
    return nn.Sequential(*layers).eval()


def _centre_box(row: pd.Series, unit: tuple[int, int], size: tuple[int, int]) -> tuple:
    """The theoretical box of ``unit`` (inclusive pixel ranges), clipped to an image of ``size``."""
    half = (row["rf"] - 1) / 2
    boxes = []
    for u, n in zip(unit, size, strict=True):
        centre = row["start"] + u * row["jump"]
        boxes.append((max(0, int(round(centre - half))), min(n - 1, int(round(centre + half)))))
    return tuple(boxes)


@dataclass(frozen=True)
class EmpiricalRF:
    """Where one unit's input gradient is non-zero (see :func:`empirical_receptive_field`)."""

    layer: str
    unit: tuple[int, int]
    rows: tuple[int, int]  # first and last input row with a non-zero gradient (inclusive)
    cols: tuple[int, int]
    theory_rows: tuple[int, int]  # the recurrence's box for the same unit, clipped to the image
    theory_cols: tuple[int, int]
    rf: int  # the theoretical receptive field side (unclipped)
    grad: torch.Tensor  # (H, W): |d unit / d input| summed over input channels

    @property
    def height(self) -> int:
        return self.rows[1] - self.rows[0] + 1

    @property
    def width(self) -> int:
        return self.cols[1] - self.cols[0] + 1

    @property
    def matches_theory(self) -> bool:
        return self.rows == self.theory_rows and self.cols == self.theory_cols


def empirical_receptive_field(
    model: nn.Module,
    layer: str | int,
    input_size: tuple[int, int, int] = (3, 224, 224),
    unit: tuple[int, int] | None = None,
    *,
    channel: int | None = None,
    x: torch.Tensor | None = None,
    seed: int = 0,
) -> EmpiricalRF:
    """The bounding box of the input pixels whose gradient reaches one output unit of ``layer``.

    ``layer`` is a paper name (``"conv3_3"``), a module path or a row of
    :func:`receptive_field_table`; ``unit`` is the (row, column) of the output unit (default: the
    centre one); ``channel=None`` back-propagates from all channels at that position (one dead
    channel cannot hide the field). ``x`` is the input image (default: seeded standard normal).
    With ReLUs and max-pooling some pixels of the field can get no gradient for a given input; for a
    network passed through :func:`linearise` the box equals the theoretical one exactly. Taught in
    ``02_receptive_fields.ipynb``.
    """
    features = _features(model)
    if x is not None:
        input_size = tuple(x.shape[-3:])
    table = receptive_field_table(features, input_size)
    idx = _row(table, layer)
    leaves, _ = _chain(features)
    sub = nn.Sequential(*[m for _, m in leaves[: idx + 1]])
    param = next(features.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    if x is None:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(1, *input_size, generator=gen, dtype=dtype).to(device)
    elif x.dim() == 3:
        x = x[None]
    x = x.detach().clone().requires_grad_(True)
    was_training = features.training
    features.eval()
    try:
        with torch.enable_grad():
            out = sub(x)
            oh, ow = out.shape[-2:]
            r, c = unit if unit is not None else ((oh - 1) // 2, (ow - 1) // 2)
            if not (0 <= r < oh and 0 <= c < ow):
                raise ValueError(f"unit {(r, c)} is outside {table['layer'][idx]}'s {oh}x{ow} output")
            target = out[0, :, r, c].sum() if channel is None else out[0, channel, r, c]
            (grad,) = torch.autograd.grad(target, x)
    finally:
        features.train(was_training)
    grad = grad[0].abs().sum(0).detach().cpu()
    hit = grad > 0
    if not hit.any():
        raise ValueError(
            f"the gradient of unit {(r, c)} of {table['layer'][idx]} is zero everywhere (all its "
            "ReLUs are off for this input); choose another unit, input or channel, or linearise()"
        )
    rows = hit.any(1).nonzero().flatten()
    cols = hit.any(0).nonzero().flatten()
    theory = _centre_box(table.iloc[idx], (r, c), tuple(x.shape[-2:]))
    return EmpiricalRF(
        layer=str(table["layer"][idx]),
        unit=(int(r), int(c)),
        rows=(int(rows[0]), int(rows[-1])),
        cols=(int(cols[0]), int(cols[-1])),
        theory_rows=theory[0],
        theory_cols=theory[1],
        rf=int(table["rf"][idx]),
        grad=grad,
    )


@dataclass(frozen=True)
class EffectiveRF:
    """Luo et al.'s effective receptive field of one layer's centre unit.

    ``map`` is the mean |input gradient| (summed over input channels), normalised to sum to 1.
    Two radius estimates, both in input pixels:

    * ``sigma``: the standard deviation of ``map`` read as a 2-D distribution (root mean of the row
      and column variances about its centroid); for a Gaussian-shaped map it is the Gaussian's sigma.
    * ``size`` (= ``size_at(mass)``): the side of the smallest square centred on the unit's
      theoretical centre that holds ``mass`` of the map (95% by default), directly comparable with
      the theoretical side ``rf``; ``size_at(0.5)`` is the half-mass square.

    ``clipped`` says the theoretical field is larger than the image (the border caps ``size`` too).
    """

    layer: str
    unit: tuple[int, int]
    centre: tuple[float, float]  # input coordinates of the unit's theoretical centre
    rf: int
    sigma: float
    mass: float
    clipped: bool
    map: torch.Tensor

    def size_at(self, mass: float) -> int:
        """Side (pixels) of the smallest centred square holding ``mass`` of the gradient map."""
        if not 0 < mass <= 1:
            raise ValueError(f"mass is a fraction of the gradient in (0, 1]; got {mass}")
        p = self.map.double()
        ys = torch.arange(p.shape[0], dtype=torch.float64)
        xs = torch.arange(p.shape[1], dtype=torch.float64)
        # Chebyshev distance from the centre: the square of half-side d holds the mass within d.
        dist = torch.maximum(
            (ys - self.centre[0]).abs()[:, None], (xs - self.centre[1]).abs()[None, :]
        ).flatten()
        order = torch.argsort(dist)
        cum = torch.cumsum(p.flatten()[order], 0) / p.sum()
        k = int(torch.searchsorted(cum, torch.tensor([mass - 1e-12], dtype=torch.float64)))
        return int(round(2 * float(dist[order][min(k, cum.numel() - 1)]) + 1))

    @property
    def size(self) -> int:
        return self.size_at(self.mass)

    @property
    def ratio(self) -> float:
        """``size / rf``: the fraction of the theoretical side that holds ``mass`` of the gradient."""
        return self.size / self.rf

    def summary(self) -> dict[str, object]:
        """One row for a table: layer, rf, the ``mass`` square's side, sigma and their ratios."""
        return {
            "layer": self.layer,
            "rf": self.rf,
            f"erf_{round(self.mass * 100)}%": self.size,
            "erf_50%": self.size_at(0.5),
            "sigma": round(self.sigma, 2),
            "ratio": round(self.ratio, 3),
            "clipped": self.clipped,
        }


def _sigma(p: torch.Tensor) -> float:
    p = p.double() / p.double().sum()
    ys = torch.arange(p.shape[0], dtype=torch.float64)
    xs = torch.arange(p.shape[1], dtype=torch.float64)
    py, px = p.sum(1), p.sum(0)
    var_y = (py * (ys - (py * ys).sum()) ** 2).sum()
    var_x = (px * (xs - (px * xs).sum()) ** 2).sum()
    return float(torch.sqrt((var_y + var_x) / 2))


def effective_receptive_fields(
    model: nn.Module,
    layers: Sequence[str | int],
    input_size: tuple[int, int, int] = (3, 224, 224),
    *,
    n_samples: int = 16,
    batch_size: int = 4,
    seed: int = 0,
    mass: float = 0.95,
    inputs: torch.Tensor | None = None,
) -> list[EffectiveRF]:
    """Effective receptive fields (Luo et al., 2016) of the centre unit of each of ``layers``.

    For each layer, the gradient of the centre unit (all channels, before the following ReLU) is
    back-propagated to the input for ``n_samples`` random inputs (seeded standard normal, or
    ``inputs``), and ``|gradient|`` is averaged. One forward pass serves every layer. Returns one
    :class:`EffectiveRF` per layer, in the order given. Taught in ``02_receptive_fields.ipynb``.
    """
    if isinstance(layers, (str, int)):
        raise TypeError("layers is a list of layer names, e.g. ['conv1_2', 'conv5_3']")
    if not 0 < mass <= 1:
        raise ValueError(f"mass is the fraction of gradient the square must hold, in (0, 1]; got {mass}")
    features = _features(model)
    if inputs is not None:
        input_size = tuple(inputs.shape[-3:])  # the inputs given decide the size
    table = receptive_field_table(features, input_size)
    idxs = [_row(table, layer) for layer in layers]
    leaves, _ = _chain(features)
    param = next(features.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    if inputs is None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer; got {n_samples}")
        gen = torch.Generator().manual_seed(seed)
        inputs = torch.randn(n_samples, *input_size, generator=gen, dtype=dtype)
    size = tuple(inputs.shape[-2:])
    units = [tuple((n - 1) // 2 for n in table["output_size"][i]) for i in idxs]
    sums = {i: torch.zeros(size, dtype=torch.float64) for i in idxs}
    was_training = features.training
    features.eval()
    try:
        for batch in torch.split(inputs, batch_size):
            x = batch.to(device=device, dtype=dtype).requires_grad_(True)
            outs: dict[int, torch.Tensor] = {}
            h = x
            with torch.enable_grad():
                for j, (_, module) in enumerate(leaves[: max(idxs) + 1]):
                    h = module(h)
                    if j in idxs:
                        outs[j] = h
                        h = h.clone()  # a following in-place ReLU must not overwrite the output
                for n, (i, (r, c)) in enumerate(zip(idxs, units, strict=True)):
                    (grad,) = torch.autograd.grad(
                        outs[i][:, :, r, c].sum(), x, retain_graph=n < len(idxs) - 1
                    )
                    sums[i] += grad.abs().sum((0, 1)).double().cpu()
    finally:
        features.train(was_training)
    results = []
    for i, unit in zip(idxs, units, strict=True):
        row = table.iloc[i]
        centre = tuple(float(row["start"] + u * row["jump"]) for u in unit)
        grad_map = sums[i] / sums[i].sum()
        box = _centre_box(row, unit, size)
        clipped = any(hi - lo + 1 < row["rf"] for lo, hi in box)
        results.append(
            EffectiveRF(
                layer=str(row["layer"]),
                unit=unit,
                centre=centre,
                rf=int(row["rf"]),
                sigma=_sigma(grad_map),
                mass=mass,
                clipped=clipped,
                map=grad_map.float(),
            )
        )
    return results


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
