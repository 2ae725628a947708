"""Runtime helpers shared by every notebook: run size, device, seeds, where data lives, progress bars.

Taught in passing in every notebook's setup cell (first met in ``01_architecture.ipynb``).
"""

from __future__ import annotations

import os
import random
import warnings
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


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module with neither)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def training_flags(model: torch.nn.Module) -> dict[torch.nn.Module, bool]:
    """Each module's own train/eval flag, to give back with :func:`restore_training_flags` after a
    call that puts the model in eval mode. ``model.train(was_training)`` would instead switch every
    module, also those the caller held in eval mode (e.g. frozen batch norms, notebook 06)."""
    return {module: module.training for module in model.modules()}


def restore_training_flags(flags: dict[torch.nn.Module, bool]) -> None:
    """Give every module the flag :func:`training_flags` recorded."""
    for module, training in flags.items():
        module.training = training


def cpu_bf16_support() -> str:
    """What this CPU offers for bfloat16 matrix products, as PyTorch's own CPU probes see it.

    ``"AMX-BF16"`` (Intel Sapphire Rapids and later: tile units), ``"AVX512-BF16"`` (a bf16 dot
    product instruction: Intel Cooper Lake, AMD Zen 4/5) or ``"none"`` (bf16 is converted to fp32
    and usually slower). Taught in ``03_efficiency.ipynb``; decides bf16 defaults in training.
    """
    probes = (("AMX-BF16", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return name
    return "none"


def cpu_fast_bf16() -> bool:
    """Does this CPU multiply bf16 natively (AMX or AVX512-BF16)? Without either it is emulated."""
    return cpu_bf16_support() != "none"


def progress_bar(total: int, enabled: bool, desc: str, *, unit: str = "it", delay: float = 0.0):
    """A tqdm bar (a widget in Jupyter, text elsewhere), or ``None`` when disabled or empty.

    ``delay``: seconds before it appears, so quick loops print nothing."""
    if not enabled or total == 0:
        return None
    with warnings.catch_warnings():
        # tqdm.auto warns once when a Jupyter kernel lacks ipywidgets, then falls back to text.
        warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
        from tqdm.auto import tqdm
    from tqdm.notebook import tqdm_notebook

    if issubclass(tqdm, tqdm_notebook):
        tqdm = _saved_notebook_bar()
    return tqdm(total=total, desc=desc, unit=unit, leave=True, delay=delay)


def _saved_notebook_bar() -> type:
    """tqdm's Jupyter widget, shown through a display handle: when it closes, the handle is updated,
    so a saved notebook (GitHub, nbconvert) shows the final state, not the "0%" it started with."""
    from IPython.display import display
    from tqdm.notebook import tqdm_notebook

    class SavedNotebookBar(tqdm_notebook):
        def __init__(self, *args, **kwargs):
            self._handle = None
            super().__init__(*args, display=False, **kwargs)
            if not self.disable and self.delay <= 0:
                self._show()

        def _show(self) -> None:
            self.displayed = True
            self._handle = display(self.container, display_id=True)

        def display(self, *args, check_delay: bool = True, **kwargs):
            # tqdm calls this with check_delay only once the delay has passed: show the bar then
            if check_delay and self.delay > 0 and not self.displayed:
                self._show()
            return super().display(*args, check_delay=False, **kwargs)

        def close(self) -> None:
            super().close()
            if self._handle is not None:
                self._handle.update(self.container)  # the saved copy's text: the final counts
                self._handle = None

    return SavedNotebookBar
