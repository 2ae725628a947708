"""Per-layer accounting: output shapes, parameters, multiply-accumulates and activation memory.

Taught in ``01_architecture.ipynb`` (where memory and parameters sit) and ``03_efficiency.ipynb``
(what VGG costs). MACs come from ``torch.utils.flop_counter`` (FLOPs = 2 x MACs), not from hand
formulas; a config name is analysed on PyTorch's ``meta`` device, so no weights are allocated.
"""

from __future__ import annotations

import weakref
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from .models import VGG, build_vgg
from .runtime import restore_training_flags, training_flags


def paper_layer_names(model: VGG) -> dict[str, str]:
    """Map module paths to the names used in the literature: ``features.0`` -> ``conv1_1``, ..."""
    names: dict[str, str] = {}
    block, conv = 1, 0
    for idx, module in model.features.named_children():
        path = f"features.{idx}"
        if isinstance(module, nn.Conv2d):
            conv += 1
            names[path] = f"conv{block}_{conv}"
        elif isinstance(module, nn.BatchNorm2d):
            names[path] = f"bn{block}_{conv}"
        elif isinstance(module, nn.ReLU):
            names[path] = f"relu{block}_{conv}"
        elif isinstance(module, nn.LocalResponseNorm):
            names[path] = f"lrn{block}"
        elif isinstance(module, nn.MaxPool2d):
            names[path] = f"pool{block}"
            block, conv = block + 1, 0
    names["avgpool"] = "avgpool"
    fc = 5
    for idx, module in model.classifier.named_children():
        path = f"classifier.{idx}"
        if isinstance(module, nn.Linear):
            fc += 1
            names[path] = f"fc{fc}" if len(model.classifier) > 1 else "fc"
        elif isinstance(module, nn.ReLU):
            names[path] = f"relu{fc}"
        elif isinstance(module, nn.Dropout):
            names[path] = f"drop{fc}"
    return names


def layer_table(
    model: nn.Module | str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    *,
    totals: bool = False,
    **build_kwargs: Any,
) -> pd.DataFrame:
    """One row per leaf layer: ``layer``, ``module``, ``type``, ``output_shape``, ``params``, ``macs``
    and ``act_bytes`` (fp32 output size for one image).

    ``model`` is a module or a config name (built on the meta device with ``build_kwargs``, so all six
    configurations can be analysed without 550 MB each). ``totals=True`` appends a ``total`` row.
    ReLU rows are in-place in VGG: their outputs reuse the conv's memory (see notebook 01).
    """
    if isinstance(model, str):
        with torch.device("meta"):
            model = build_vgg(model, **build_kwargs)
    elif build_kwargs:
        raise TypeError(f"build options {sorted(build_kwargs)} only apply when model is a config name")
    if len(input_size) != 3:
        raise ValueError(f"input_size is (channels, height, width) for one image; got {input_size!r}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, *input_size, device=device)
    names = paper_layer_names(model) if isinstance(model, VGG) else {}

    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    for name, module in leaves:
        hooks.append(
            module.register_forward_hook(
                lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
            )
        )
    flags = training_flags(model)
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        restore_training_flags(flags)

    root = type(model).__name__
    flops = counter.get_flop_counts()
    rows = []
    for name, module in leaves:
        if name not in shapes:  # defined but unused in forward
            continue
        shape = shapes[name]
        numel = 1
        for s in shape:
            numel *= s
        rows.append(
            {
                "layer": names.get(name, name),
                "module": name,
                "type": type(module).__name__,
                "output_shape": shape,
                "params": sum(p.numel() for p in module.parameters(recurse=False)),
                "macs": sum(flops.get(f"{root}.{name}", {}).values()) // 2,
                "act_bytes": numel * 4,
            }
        )
    table = pd.DataFrame(rows)
    if totals:
        total = {
            "layer": "total",
            "module": "",
            "type": "",
            "output_shape": (),
            "params": int(table["params"].sum()),
            "macs": int(table["macs"].sum()),
            "act_bytes": int(table["act_bytes"].sum()),
        }
        table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    return table


def total_macs(model: nn.Module | str, input_size: tuple[int, int, int] = (3, 224, 224), **kw: Any) -> int:
    """Multiply-accumulates of one forward pass of one image (``torch.utils.flop_counter`` / 2)."""
    return int(layer_table(model, input_size, **kw)["macs"].sum())


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks bytes held by tensors that ops create, freeing them when their last tensor dies."""

    def __init__(self) -> None:
        super().__init__()
        self.owners: dict[int, set[int]] = {}
        self.sizes: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int, ref: int) -> None:
        owners = self.owners.get(key)
        if owners is None:
            return
        owners.discard(ref)
        if not owners:
            del self.owners[key]
            self.current -= self.sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0:
                continue
            if key not in self.owners:
                self.owners[key] = set()
                self.sizes[key] = storage.nbytes()
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            if id(t) not in self.owners[key]:
                self.owners[key].add(id(t))
                weakref.finalize(t, self._release, key, id(t))
        return out


def peak_activation_memory(
    model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224), batch_size: int = 1
) -> int:
    """Bytes of activations PyTorch holds at the peak of one inference pass (weights excluded).

    On CUDA this is the allocator's own peak (``torch.cuda.max_memory_allocated``) minus what was
    allocated before; on other devices every tensor the forward pass creates is tracked until it is
    freed. In-place ReLU and freeing of dead intermediates make this far less than the per-layer sum.
    """
    param = next(model.parameters())
    x = torch.zeros(batch_size, *input_size, device=param.device, dtype=param.dtype)
    flags = training_flags(model)
    model.eval()
    try:
        with torch.inference_mode():
            if param.device.type == "cuda":
                torch.cuda.synchronize(param.device)
                torch.cuda.reset_peak_memory_stats(param.device)
                before = torch.cuda.memory_allocated(param.device)
                model(x)
                torch.cuda.synchronize(param.device)
                return int(torch.cuda.max_memory_allocated(param.device) - before)
            with _LiveTensorBytes() as tracker:
                model(x)
            return int(tracker.peak)
    finally:
        restore_training_flags(flags)


def summary(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224), **kwargs: Any):
    """A torchinfo summary for one image (columns: output size, parameters, MACs)."""
    from torchinfo import summary as _summary

    kwargs.setdefault("col_names", ("output_size", "num_params", "mult_adds"))
    kwargs.setdefault("depth", 3)
    kwargs.setdefault("verbose", 0)
    return _summary(model, input_size=(1, *input_size), **kwargs)
