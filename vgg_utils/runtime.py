"""Runtime helpers shared by every notebook: run size, device, seeds and where data lives.

Taught in passing in every notebook's setup cell (first met in ``01_architecture.ipynb``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

#: ``VGG_FAST=1`` shrinks every notebook to a CI-sized run (well under 2 minutes on 2 CPU cores).
FAST: bool = os.environ.get("VGG_FAST", "0").strip().lower() not in ("", "0", "false", "no")

#: The repository root when the package is used from a clone (editable install or Colab clone).
REPO_ROOT: Path = Path(__file__).resolve().parent.parent


def is_fast() -> bool:
    """Re-read ``VGG_FAST`` (useful when a test changes it after import)."""
    return os.environ.get("VGG_FAST", "0").strip().lower() not in ("", "0", "false", "no")


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the ``VGG_DEVICE`` environment variable) forces one, e.g. ``"cpu"`` to compare.
    """
    choice = prefer or os.environ.get("VGG_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} was asked for but CUDA is not available; use 'cpu'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {choice!r} was asked for but MPS is not available; use 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); returns a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def data_dir() -> Path:
    """The course's data folder: ``$VGG_DATA_DIR`` if set, else ``data/`` in the repository."""
    env = os.environ.get("VGG_DATA_DIR")
    return Path(env).expanduser() if env else REPO_ROOT / "data"


def cache_dir() -> Path:
    """Where downloads (datasets) are cached: ``<data_dir>/cache``, ignored by git."""
    path = data_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
