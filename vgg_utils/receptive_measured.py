"""Receptive fields measured with gradients: empirical (where the gradient reaches) and effective.

Taught in ``02_receptive_fields.ipynb``; the theory they are measured against (the recurrence of
:func:`vgg_utils.receptive_field_table`) is in :mod:`vgg_utils.receptive`, the figures in
:mod:`vgg_utils.receptive_plots`.

* :func:`empirical_receptive_field` -- the input pixels whose gradient reaches one output unit.
  For a network made linear (:func:`linearise`) it is exactly the theoretical box.
* :func:`effective_receptive_fields` -- Luo, Li, Urtasun & Zemel, "Understanding the Effective
  Receptive Field in Deep Convolutional Neural Networks" (NeurIPS 2016): the mean input-gradient
  magnitude of a centre unit over random inputs, which is Gaussian-like and much smaller.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from .receptive import POINTWISE, _chain, _geometry, receptive_field_table
from .runtime import restore_training_flags, training_flags


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
    # A VGG stays whole: _chain and receptive_field_table read its features under the model's own
    # module paths (features.N), the paths receptive_field_table(model) shows the learner.
    return model


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


def _centre_box(table: pd.DataFrame, idx: int, unit: tuple[int, int], size: tuple[int, int]) -> tuple:
    """The theoretical box of ``unit`` of row ``idx`` (inclusive pixel ranges) in an image of
    ``size``: its window traced back layer by layer, clipped to each map that exists. Away from
    the border this is ``start + unit * jump +- (rf - 1) / 2``. Clipping only at the image is not
    enough: a floor-mode pool or strided conv drops the last rows of its input, so a unit whose
    window hangs over a later layer's zero padding sees none of the pixels under that padding."""
    boxes = []
    for axis, (u, n) in enumerate(zip(unit, size, strict=True)):
        lo = hi = int(u)
        for i in range(idx, -1, -1):
            k, s, p = (int(table[column].iloc[i]) for column in ("kernel", "stride", "padding"))
            below = n if i == 0 else int(table["output_size"].iloc[i - 1][axis])
            lo, hi = max(0, lo * s - p), min(below - 1, hi * s - p + k - 1)
        boxes.append((lo, hi))
    return tuple(boxes)


@dataclass(frozen=True)
class EmpiricalRF:
    """Where one unit's input gradient is non-zero (see :func:`empirical_receptive_field`)."""

    layer: str
    unit: tuple[int, int]
    rows: tuple[int, int]  # first and last input row with a non-zero gradient (inclusive)
    cols: tuple[int, int]
    theory_rows: tuple[int, int]  # the recurrence's box for the same unit, clipped to what exists
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
    flags = training_flags(features)
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
        restore_training_flags(flags)
    grad = grad[0].abs().sum(0).detach().cpu()
    hit = grad > 0
    if not hit.any():
        raise ValueError(
            f"the gradient of unit {(r, c)} of {table['layer'][idx]} is zero everywhere (all its "
            "ReLUs are off for this input); choose another unit, input or channel, or linearise()"
        )
    rows = hit.any(1).nonzero().flatten()
    cols = hit.any(0).nonzero().flatten()
    theory = _centre_box(table, idx, (r, c), tuple(x.shape[-2:]))
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
    flags = training_flags(features)
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
        restore_training_flags(flags)
    results = []
    for i, unit in zip(idxs, units, strict=True):
        row = table.iloc[i]
        centre = tuple(float(row["start"] + u * row["jump"]) for u in unit)
        grad_map = sums[i] / sums[i].sum()
        box = _centre_box(table, i, unit, size)
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
