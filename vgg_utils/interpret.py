"""Looking inside VGG: feature maps, and five ways to say which pixels a prediction used.

Taught in ``07_interpretability.ipynb``. VGG is one serial chain of convolutions and poolings, with
no branches or skip connections, so every feature map keeps the image's layout: conv5's 6x6 map
of a 96x96 image still says *where*. :func:`feature_maps` reads those maps through forward hooks.

The explanation methods share one calling convention::

    method(model, images, class_idx=None, ...) -> maps (N, H, W), each scaled to [0, 1]

``images`` are network inputs (already pre-processed, e.g. ``loaded.preprocess(uint8_images)``);
``class_idx`` is ``None`` (each image's predicted class), one int for all images, or one per image.
Every method explains the class *score* (the logit before the softmax), as the papers and captum
do. The model is put in eval mode for the call (dropout off, batch norm on its running statistics)
and every module's own mode is restored afterwards; hooks are always removed, also when the
forward pass fails; nothing of the model changes. Each map is divided by its own maximum (an
all-zero map stays zero).

Hooks and ``nn.ReLU(inplace=True)``: a forward hook that keeps a layer's output returns a *clone*
to the rest of the network, so a later in-place ReLU cannot overwrite what was kept (and the
gradient with respect to the kept tensor is exactly the layer's output gradient).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .profiling import paper_layer_names
from .runtime import module_device

ClassIdx = int | Sequence[int] | torch.Tensor | None


# --- plumbing shared by every method -------------------------------------------------------------


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """``(name, module)`` for a paper name (``"conv5_3"``, ``"relu5_3"``, ``"pool5"``, ``"fc6"``),
    a module path (``"features.42"``) or a module of ``model``. Used in ``07_interpretability.ipynb``."""
    paths = dict(model.named_modules())
    if isinstance(layer, nn.Module):
        for path, module in paths.items():
            if module is layer:
                return path, module
        raise ValueError("the layer module given is not part of this model")
    names = paper_layer_names(model) if hasattr(model, "features") and hasattr(model, "classifier") else {}
    by_paper = {paper: path for path, paper in names.items()}
    if layer in by_paper:
        return layer, paths[by_paper[layer]]
    if isinstance(layer, str) and layer in paths and layer:
        return layer, paths[layer]
    shown = ", ".join(list(by_paper)[:6]) + ", ..., " + ", ".join(list(by_paper)[-3:]) if by_paper else ""
    raise ValueError(
        f"unknown layer {layer!r}; use a paper name ({shown}) or a module path such as 'features.0'"
    )


def block_outputs(model: nn.Module) -> list[str]:
    """The last ReLU of each conv block (``relu1_2``, ..., ``relu5_3`` for VGG16): the maps that
    go into each max-pooling (:func:`feature_maps`' default; notebook 07)."""
    names = paper_layer_names(model)
    last: dict[str, str] = {}
    for paper in names.values():
        if paper.startswith("relu") and "_" in paper:
            last[paper.split("_")[0]] = paper  # later convs of a block overwrite earlier ones
    return list(last.values())


@contextlib.contextmanager
def _explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration; afterwards every module gets its own training flag back."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


@contextlib.contextmanager
def _forward_hooks(modules: Sequence[nn.Module], hook: Callable) -> Iterator[None]:
    """Register ``hook`` as a forward hook on each module; remove them all, whatever happens."""
    handles = []
    try:
        for module in modules:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a batch (N, C, H, W) of network inputs; got {shape}")
    if not images.is_floating_point():
        raise ValueError(
            f"images must be float network inputs (pre-processed, e.g. loaded.preprocess(images)); "
            f"got dtype {images.dtype}"
        )


def _inputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A detached copy of the images on the model's device (the caller's tensor is never touched)."""
    _check_images(images)
    return images.detach().to(module_device(model)).clone()


def class_targets(
    model: nn.Module, x: torch.Tensor, class_idx: ClassIdx, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """One class per image: the predicted class (``None``; from ``scores`` when the caller already
    ran the model), or ``class_idx`` checked and expanded."""
    if class_idx is None:
        if scores is None:
            with torch.no_grad():
                scores = model(x)
        return scores.detach().argmax(dim=1)
    target = torch.as_tensor(class_idx, device=x.device).long().reshape(-1)
    if target.numel() == 1:
        target = target.expand(len(x))
    if target.numel() != len(x):
        raise ValueError(f"class_idx gives {target.numel()} classes for {len(x)} images; give one or one per image")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    n_classes = linears[-1].out_features if linears else None  # FC8's width, when there is one
    if n_classes is not None and not bool(((target >= 0) & (target < n_classes)).all()):
        raise ValueError(f"class_idx must lie in [0, {n_classes}); got {target.tolist()}")
    return target


def _score(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each image's target logit, summed: its gradient is every image's own gradient at once
    (the images do not interact in eval mode)."""
    return scores.gather(1, target[:, None]).sum()


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map ``(N, H, W)`` by its maximum; an all-zero map stays zero (no NaN)."""
    peak = maps.flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


# --- feature maps --------------------------------------------------------------------------------


def feature_maps(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str | nn.Module] | str | None = None
) -> dict[str, torch.Tensor]:
    """The activations of ``layers`` for ``images``: ``{name: (N, C, h, w)}``, detached.

    ``layers``: paper names (``"conv5_3"``, ``"relu5_3"``, ``"pool5"``, ``"fc6"``), module paths or
    modules; default :func:`block_outputs` (the last ReLU of each block). A conv layer's map is
    the convolution's own output (before batch norm and the in-place ReLU). Taught in
    ``07_interpretability.ipynb``.
    """
    layers = block_outputs(model) if layers is None else [layers] if isinstance(layers, str) else list(layers)
    resolved = [resolve_layer(model, layer) for layer in layers]
    x = _inputs(model, images)
    kept: dict[nn.Module, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        kept[module] = output.detach().clone()
        return output

    with _explaining(model), _forward_hooks([m for _, m in resolved], keep), torch.no_grad():
        model(x)
    return {name: kept[module] for name, module in resolved}


# --- gradient methods ----------------------------------------------------------------------------


def _input_gradients(model: nn.Module, x: torch.Tensor, class_idx: ClassIdx) -> torch.Tensor:
    """d(target logit) / d(input pixels), ``(N, C, H, W)``."""
    x = x.detach().requires_grad_(True)
    scores = model(x)
    (grad,) = torch.autograd.grad(_score(scores, class_targets(model, x, class_idx, scores)), x)
    return grad


def _gradient_map(grad: torch.Tensor) -> torch.Tensor:
    """Simonyan et al.'s map: the largest absolute gradient over the colour channels."""
    return grad.abs().amax(dim=1)


def saliency(model: nn.Module, images: torch.Tensor, class_idx: ClassIdx = None) -> torch.Tensor:
    """Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman 2014): ``max_c |dS/dx|`` per pixel.

    captum's ``Saliency(model).attribute(x, target, abs=True)`` keeps the three channels; the
    course takes their maximum, as the paper did, then normalises (the test does the same to
    captum's output). Taught in ``07_interpretability.ipynb``.
    """
    x = _inputs(model, images)
    with _explaining(model):
        return normalise(_gradient_map(_input_gradients(model, x, class_idx))).to(images.device)


def smoothgrad(
    model: nn.Module,
    images: torch.Tensor,
    class_idx: ClassIdx = None,
    *,
    samples: int = 25,
    noise: float = 0.15,
    seed: int = 0,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the gradient map averaged over ``samples`` noisy copies.

    Noise is Gaussian with standard deviation ``noise x (max - min)`` of each image (the paper's
    10-20% noise level), drawn from a CPU generator seeded with ``seed`` (the same on any device).
    The class is decided on the clean image. As captum's ``NoiseTunnel(Saliency)`` with
    ``nt_type="smoothgrad"``, but averaging the channel-max maps. Taught in
    ``07_interpretability.ipynb``.
    """
    if samples < 1 or noise < 0:
        raise ValueError(f"samples must be >= 1 and noise >= 0; got samples={samples}, noise={noise}")
    x = _inputs(model, images)
    gen = torch.Generator().manual_seed(seed)
    sigma = noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    with _explaining(model):
        target = class_targets(model, x, class_idx)
        total = torch.zeros(x.shape[0], *x.shape[2:], device=x.device)
        for _ in range(samples):
            eps = torch.randn(x.shape, generator=gen).to(x.device)
            total += _gradient_map(_input_gradients(model, x + sigma * eps, target))
    return normalise(total / samples).to(images.device)


class _PositiveGradient(torch.autograd.Function):
    """Identity on the way forward; on the way back only positive gradients pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


def guided_backprop(model: nn.Module, images: torch.Tensor, class_idx: ClassIdx = None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): at every ReLU, pass back only positive
    gradients, and only where the forward activation was positive.

    A forward hook puts :class:`_PositiveGradient` behind each ``nn.ReLU``: the ReLU's own
    backward keeps the positive-input mask, the hook drops negative gradients. That is captum's
    ``GuidedBackprop`` exactly (the test checks it); the map is the channel maximum of the
    absolute value, as for :func:`saliency`. Taught in ``07_interpretability.ipynb``.
    """
    x = _inputs(model, images)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    with _explaining(model), _forward_hooks(relus, lambda module, inputs, output: _PositiveGradient.apply(output)):
        grad = _input_gradients(model, x, class_idx)
    return normalise(_gradient_map(grad)).to(images.device)


def default_cam_layer(model: nn.Module) -> str:
    """Grad-CAM's default layer: the ReLU of the last conv block (``relu5_3`` in VGG16)."""
    return block_outputs(model)[-1]


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: str | nn.Module | None = None,
    class_idx: ClassIdx = None,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): conv maps weighted by their average gradient, then ReLU.

    ``alpha_k = mean over positions of dS/dA_k``; ``cam = ReLU(sum_k alpha_k A_k)``, upsampled
    bilinearly to the input size. ``target_layer`` defaults to :func:`default_cam_layer`. Equal to
    captum's ``LayerGradCam(model, layer).attribute(x, target, relu_attributions=True)`` followed
    by ``LayerAttribution.interpolate(..., interpolate_mode="bilinear")`` (captum's default
    upsampling is "nearest"). Taught in ``07_interpretability.ipynb``, which writes it out.
    """
    _, layer = resolve_layer(model, default_cam_layer(model) if target_layer is None else target_layer)
    x = _inputs(model, images)
    kept = {}

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        kept["A"] = output
        return output.clone()  # the rest of the net gets a copy: in-place ops cannot touch A

    with _explaining(model):
        with _forward_hooks([layer], keep):
            scores = model(x)
        target = class_targets(model, x, class_idx, scores)
        activations = kept["A"]
        if activations.dim() != 4:
            raise ValueError(f"Grad-CAM needs a conv layer's (N, C, h, w) maps; got shape {tuple(activations.shape)}")
        (grads,) = torch.autograd.grad(_score(scores, target), activations)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # alpha_k: one weight per channel
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return normalise(cam[:, 0]).to(images.device)


# --- a perturbation method -----------------------------------------------------------------------


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window positions along one side, as captum's ``Occlusion``: ``ceil((size - window) /
    stride) + 1`` starts, ``stride`` apart; the last window may hang over the edge (it is cut)."""
    return [i * stride for i in range(-(-(size - window) // stride) + 1)]


def occlusion(
    model: nn.Module,
    images: torch.Tensor,
    class_idx: ClassIdx = None,
    *,
    window: int = 16,
    stride: int = 8,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014): slide a ``window x window`` patch of
    ``baseline`` over the image; each pixel gets the mean drop of the class score over the
    windows that covered it; negative drops (occluding helped) are set to 0.

    ``baseline`` is in network-input space: ``0.0`` is the training set's mean colour after mean
    subtraction; a tensor like ``images`` (e.g. a blurred copy) also works. The windows and the
    averaging are captum's ``Occlusion`` with ``sliding_window_shapes=(C, window, window)``,
    ``strides=(C, stride, stride)``: the test takes captum's first channel, sets negatives to
    zero and normalises. Costs ``len(window_starts)**2`` forward passes per image. Taught in
    ``07_interpretability.ipynb``.
    """
    x = _inputs(model, images)
    n, _, h, w = x.shape
    if not 1 <= stride <= window <= min(h, w):
        raise ValueError(f"need 1 <= stride <= window <= image side ({min(h, w)}); got window={window}, stride={stride}")
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    windows = [(top, left) for top in window_starts(h, window, stride) for left in window_starts(w, window, stride)]
    total = torch.zeros(n, h, w, device=x.device)
    count = torch.zeros(h, w, device=x.device)
    per_call = max(1, batch_size // n)
    with _explaining(model), torch.no_grad():
        scores = model(x)
        target = class_targets(model, x, class_idx, scores)
        clean = scores.gather(1, target[:, None])[:, 0]
        for start in range(0, len(windows), per_call):
            chunk = windows[start : start + per_call]
            batch = x.repeat(len(chunk), 1, 1, 1)
            for i, (top, left) in enumerate(chunk):
                part = (slice(i * n, (i + 1) * n), slice(None), slice(top, top + window), slice(left, left + window))
                batch[part] = base[(slice(None), *part[1:])]
            drops = clean.repeat(len(chunk)) - model(batch).gather(1, target.repeat(len(chunk))[:, None])[:, 0]
            for i, (top, left) in enumerate(chunk):
                total[:, top : top + window, left : left + window] += drops[i * n : (i + 1) * n, None, None]
                count[top : top + window, left : left + window] += 1
    return normalise(F.relu(total / count)).to(images.device)


#: The course's explanation methods by name, all ``method(model, images, class_idx=None)``.
METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "gradient": saliency,
    "smoothgrad": smoothgrad,
    "guided backprop": guided_backprop,
    "occlusion": occlusion,
    "grad-cam": grad_cam,
}
