"""VGG networks built from :data:`vgg_utils.CONFIGS`, and torchvision's ImageNet weights for them.

Taught in ``01_architecture.ipynb`` (the builder) and used by every later notebook. With default
arguments :func:`build_vgg` is the paper's network, and for configurations A, B, D, E its state
dict matches torchvision's ``vgg11/13/16/19(_bn)`` key for key, so torchvision's weights load.
"""

from __future__ import annotations

import http.client
import math
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import nn

from .configs import CONFIGS, canonical_name, parse_layer

#: Paper configurations torchvision ships ImageNet weights for.
TORCHVISION_NAMES: dict[str, str] = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}

#: The paper's input pre-processing: subtract the mean RGB of the training set (ImageNet, 0-1 scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: torchvision's weights were trained with per-channel std division as well.
IMAGENET_STD = (0.229, 0.224, 0.225)

MIN_INPUT = 32  # five 2x2 max-poolings halve the input five times: 32 -> 1


class VGG(nn.Module):
    """A VGG net: ``features`` (convs and pools), ``avgpool``, ``classifier`` (as in torchvision).

    The forward pass checks its input first, so a wrong shape fails with a sentence, not a trace.
    """

    def __init__(
        self,
        features: nn.Sequential,
        avgpool: nn.Module,
        classifier: nn.Sequential,
        *,
        config: str,
        in_channels: int,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier
        self.config = config
        self.in_channels = in_channels
        #: The crop size FC6 was sized for (``head="paper", input_size=...``); ``None``: any size.
        self.input_size = input_size

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` that says what is wrong with ``x`` and what would be valid."""
        who = f"build_vgg({self.config!r})"
        if x.dim() != 4:
            raise ValueError(
                f"{who} expects a batch of images shaped (N, {self.in_channels}, H, W); got a "
                f"{x.dim()}-D tensor of shape {tuple(x.shape)} (add a batch dimension with x[None])"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{who} expects {self.in_channels} input channels; got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )
        h, w = x.shape[-2:]
        if h < MIN_INPUT or w < MIN_INPUT:
            raise ValueError(
                f"{who} expects inputs of at least {MIN_INPUT}x{MIN_INPUT} pixels (five 2x2 "
                f"poolings); got {h}x{w}"
            )
        if self.input_size is not None and (h, w) != (self.input_size, self.input_size):
            side = self.input_size // 32
            raise ValueError(
                f"{who} has the paper's head sized for {self.input_size}x{self.input_size} crops "
                f"(FC6 takes the {side}x{side} pool5 map); got {h}x{w}. Resize or crop to "
                f"{self.input_size}, or use vgg_utils.to_fully_convolutional(model) for any size "
                "larger than that (notebook 05)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def make_features(
    config: str, *, batch_norm: bool = False, width: float = 1.0, in_channels: int = 3
) -> nn.Sequential:
    """The convolutional part of a configuration: conv [+ BN] + ReLU, LRN, max-pool, in Table 1 order."""
    layers: list[nn.Module] = []
    channels = in_channels
    for entry in CONFIGS[config]:
        spec = parse_layer(entry)
        if spec.kind == "conv":
            out = _scaled(spec.channels, width)
            layers.append(nn.Conv2d(channels, out, spec.kernel, padding=spec.kernel // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        elif spec.kind == "lrn":
            # Krizhevsky et al.'s constants (n=5, k=2, beta=0.75; PyTorch divides alpha by n).
            layers.append(nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
        elif spec.kind == "pool":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def init_weights(model: nn.Module, scheme: str = "kaiming") -> nn.Module:
    """Initialise conv and linear weights in place; biases to zero, batch-norm to identity.

    ``"paper"``: N(0, 0.01) everywhere, as the paper did for config A (Sec. 3.1);
    ``"glorot"``: Glorot & Bengio's uniform init, which the paper notes works without pre-training;
    ``"kaiming"``: He et al.'s fan-out normal for convs and N(0, 0.01) for FC (torchvision's choice).
    Taught in ``04_training.ipynb``.
    """
    schemes = ("kaiming", "paper", "glorot")
    if scheme not in schemes:
        raise ValueError(f"unknown init scheme {scheme!r}; valid schemes are {schemes}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "paper" or (scheme == "kaiming" and isinstance(m, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif scheme == "glorot":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def build_vgg(
    config: str,
    num_classes: int = 1000,
    *,
    batch_norm: bool = False,
    width: float = 1.0,
    head: Literal["paper", "compact"] = "paper",
    fc_width: int = 4096,
    dropout: float = 0.5,
    in_channels: int = 3,
    init: str = "kaiming",
    input_size: int | None = None,
) -> VGG:
    """Build a VGG configuration from Table 1.

    ``config``: ``"A"``, ``"A-LRN"``, ``"B"``, ``"C"``, ``"D"``, ``"E"`` or ``"vgg11/13/16/19"``.
    ``width`` scales every conv's channels (0.25 gives a 64-channel last block). ``head="paper"``
    is the paper's three FC layers (FC6, FC7 with dropout, FC8). With ``input_size=None`` they
    follow torchvision's ``AdaptiveAvgPool2d((7, 7))`` (not in the paper: it resamples any pool5
    map to 7x7, so torchvision's weights load and any input size runs). With ``input_size=S``
    (a multiple of 32) there is no resampling, as in the paper: FC6 takes the ``S/32 x S/32``
    pool5 map of an ``S x S`` crop directly (7x7 at 224, 3x3 at 96, 1x1 at 32), and other sizes
    are refused (:func:`vgg_utils.to_fully_convolutional` takes any larger size, notebook 05).
    ``head="compact"`` is global average pooling and one Linear, the sensible head for 32x32
    images. ``fc_width`` is FC6/FC7's width (4,096 in the paper). Taught in
    ``01_architecture.ipynb``.
    """
    name = canonical_name(config)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width):
        raise ValueError(f"width must be a positive number (1.0 is the paper's net); got {width!r}")
    if width <= 0:
        raise ValueError(f"width must be positive (1.0 is the paper's net, 0.25 a quarter); got {width}")
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels), ("fc_width", fc_width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive integer; got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout}")
    if head not in ("paper", "compact"):
        raise ValueError(f"head must be 'paper' (FC6-FC8) or 'compact' (GAP + Linear); got {head!r}")
    if input_size is not None:
        if head != "paper":
            raise ValueError(
                "input_size sizes the paper's FC6 for one crop size; the compact head (global "
                "average pooling) takes any size: leave input_size=None"
            )
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < MIN_INPUT or input_size % 32:
            raise ValueError(
                f"input_size must be a multiple of 32 (five 2x2 poolings), at least {MIN_INPUT}, "
                f"e.g. 32, 64, 96 or 224; got {input_size!r}"
            )

    features = make_features(name, batch_norm=batch_norm, width=width, in_channels=in_channels)
    channels = _scaled(512, width)
    if head == "paper":
        # The paper's FC6 sees a 7x7 map at 224; sized for another crop it sees (S/32)^2 positions.
        side = 7 if input_size is None else input_size // 32
        avgpool: nn.Module = nn.AdaptiveAvgPool2d((7, 7)) if input_size is None else nn.Identity()
        classifier = nn.Sequential(
            nn.Linear(channels * side * side, fc_width),  # FC6
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(fc_width, fc_width),  # FC7
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(fc_width, num_classes),  # FC8
        )
    else:
        avgpool = nn.AdaptiveAvgPool2d(1)
        classifier = nn.Sequential(nn.Linear(channels, num_classes))
    model = VGG(features, avgpool, classifier, config=name, in_channels=in_channels, input_size=input_size)
    return init_weights(model, init)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (weights and biases) of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class PretrainedUnavailableError(RuntimeError):
    """ImageNet weights are neither cached nor downloadable; the message says how to get them."""


def torchvision_weights(config: str, *, batch_norm: bool = False):
    """torchvision's ImageNet weight enum for a paper configuration (A, B, D or E)."""
    import torchvision

    name = canonical_name(config)
    if name not in TORCHVISION_NAMES:
        raise ValueError(
            f"torchvision has no ImageNet weights for config {name!r}; it has "
            f"{', '.join(f'{k} ({v})' for k, v in TORCHVISION_NAMES.items())}"
        )
    tv_name = TORCHVISION_NAMES[name] + ("_bn" if batch_norm else "")
    return torchvision.models.get_model_weights(tv_name).DEFAULT


def weights_path(config: str, *, batch_norm: bool = False) -> Path:
    """Where torch.hub caches the weight file (``$TORCH_HOME/hub/checkpoints/...``)."""
    url = torchvision_weights(config, batch_norm=batch_norm).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


#: A download that receives nothing for this many seconds is abandoned (bad wifi, a stalled
#: server), with the same offline message as an unreachable host.
DOWNLOAD_STALL_SECONDS = 30.0


def _reachable(url: str, timeout: float) -> bool:
    """Does the URL's server answer an HTTP request within ``timeout`` seconds?

    DNS, connection, TLS handshake and the first response line all count: a host that accepts
    the connection but never answers (a captive portal, a stalled proxy) is unreachable too.
    Any HTTP answer, even an error status, means the server is there. Runs in a thread, so a
    hanging DNS lookup cannot hang the notebook.
    """
    import urllib.error
    import urllib.request

    result: list[bool] = []

    def probe() -> None:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "vgg-course"})
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                result.append(True)
        except urllib.error.HTTPError:  # the server answered (403, 405, ...): it is there
            result.append(True)
        except (OSError, ValueError, http.client.HTTPException):  # DNS, refused, timed out, TLS
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def reachable_hosts(urls: Sequence[str], timeout: float) -> dict[str, bool]:
    """:func:`_reachable` for the host of each URL, all probed at once (offline costs ``timeout``
    seconds, not one per host); the first URL of each host stands for it. Keys: host names."""
    first = {urlparse(u).netloc: u for u in reversed(list(urls))}
    answers: dict[str, bool] = {}
    threads = [threading.Thread(target=lambda h=h, u=u: answers.__setitem__(h, _reachable(u, timeout)), daemon=True)
               for h, u in first.items()]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 1)
    return {h: answers.get(h, False) for h in first}


@contextmanager
def _stall_timeout(seconds: float) -> Iterator[None]:
    """Give every socket opened inside (the download's) a read timeout: torchvision's and
    torch.hub's downloaders pass none, so a server that stops sending would hang them forever."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def load_pretrained(
    config: str = "D", *, batch_norm: bool = False, progress: bool = True, timeout: float = 5.0
) -> VGG:
    """The paper's network with torchvision's ImageNet weights, in eval mode.

    Uses the torch.hub cache when the file is there, downloads it when the network is reachable,
    and otherwise raises :class:`PretrainedUnavailableError` within ``timeout`` seconds with the
    command that pre-downloads it. Notebooks catch that error and fall back. Taught in
    ``01_architecture.ipynb``; used in notebooks 05-07.
    """
    weights = torchvision_weights(config, batch_norm=batch_norm)
    path = weights_path(config, batch_norm=batch_norm)
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated copy, foreign pickle: never unpickle code
            raise PretrainedUnavailableError(
                f"the cached weight file {path} is unreadable ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:120]}); delete it and load again, or copy a good one"
            ) from err
    else:
        tv = TORCHVISION_NAMES[canonical_name(config)] + ("_bn" if batch_norm else "")
        how = (
            f"On a connected machine run\n    python -m vgg_utils.download {tv}\n"
            f"and copy the file into {path.parent} (or set TORCH_HOME to a folder that has it)."
        )
        host = urlparse(weights.url).hostname
        if not _reachable(weights.url, timeout):
            raise PretrainedUnavailableError(
                f"ImageNet weights for {tv} are not cached ({path}) and {host} is unreachable "
                f"(no answer within {timeout:g} s). {how}"
            )
        try:
            with _stall_timeout(DOWNLOAD_STALL_SECONDS):
                state = torch.hub.load_state_dict_from_url(
                    weights.url, progress=progress, check_hash=True, weights_only=True, map_location="cpu"
                )
        except OSError as err:  # timed out, connection reset: torch.hub removes its partial file
            raise PretrainedUnavailableError(
                f"ImageNet weights for {tv} are not cached ({path}) and the download from {host} "
                f"failed ({type(err).__name__}: {err}). {how}"
            ) from err
    model = build_vgg(config, batch_norm=batch_norm)
    model.load_state_dict(state, strict=True)
    return model.eval()


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet class names (shipped inside torchvision: no download)."""
    return list(torchvision_weights("D").meta["categories"])
