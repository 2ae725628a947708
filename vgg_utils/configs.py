"""The paper's Table 1 as data: one spec that the table, the diagrams and the models are built from.

Taught in ``01_architecture.ipynb``. Each configuration is the column of Table 1 written with the
paper's own names: ``conv3-64`` is a 3x3 convolution with 64 output channels, ``conv1-256`` a 1x1
convolution (config C), ``LRN`` local response normalisation (config A-LRN), ``maxpool`` a 2x2
max-pooling with stride 2, ``FC-4096`` a fully connected layer, ``soft-max`` the output.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pandas as pd

_HEAD = ("FC-4096", "FC-4096", "FC-1000", "soft-max")


def _blocks(*blocks: tuple[str, ...]) -> tuple[str, ...]:
    """Join conv blocks with a max-pool after each, then add the shared FC head."""
    layers: list[str] = []
    for block in blocks:
        layers += [*block, "maxpool"]
    return (*layers, *_HEAD)


_C3 = {c: f"conv3-{c}" for c in (64, 128, 256, 512)}

_TABLE1: dict[str, tuple[str, ...]] = {
    "A": _blocks(
        (_C3[64],), (_C3[128],), (_C3[256],) * 2, (_C3[512],) * 2, (_C3[512],) * 2
    ),
    "A-LRN": _blocks(
        (_C3[64], "LRN"), (_C3[128],), (_C3[256],) * 2, (_C3[512],) * 2, (_C3[512],) * 2
    ),
    "B": _blocks(
        (_C3[64],) * 2, (_C3[128],) * 2, (_C3[256],) * 2, (_C3[512],) * 2, (_C3[512],) * 2
    ),
    "C": _blocks(
        (_C3[64],) * 2,
        (_C3[128],) * 2,
        (_C3[256],) * 2 + ("conv1-256",),
        (_C3[512],) * 2 + ("conv1-512",),
        (_C3[512],) * 2 + ("conv1-512",),
    ),
    "D": _blocks(
        (_C3[64],) * 2, (_C3[128],) * 2, (_C3[256],) * 3, (_C3[512],) * 3, (_C3[512],) * 3
    ),
    "E": _blocks(
        (_C3[64],) * 2, (_C3[128],) * 2, (_C3[256],) * 4, (_C3[512],) * 4, (_C3[512],) * 4
    ),
}

#: torchvision's names for the four configurations it ships (with optional ``_bn``).
ALIASES: dict[str, str] = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


class _Configs(Mapping[str, tuple[str, ...]]):
    """Table 1 as a read-only mapping; iterates over the six paper names, also answers aliases."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return _TABLE1[canonical_name(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(_TABLE1)

    def __len__(self) -> int:
        return len(_TABLE1)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _lookup(name) is not None

    def __repr__(self) -> str:
        return f"CONFIGS({', '.join(_TABLE1)}; aliases {', '.join(ALIASES)})"


#: The paper's Table 1: ``CONFIGS["D"]`` (or ``CONFIGS["vgg16"]``) is VGG16's layer list.
CONFIGS = _Configs()


def _lookup(name: str) -> str | None:
    key = name.strip()
    for canon in _TABLE1:
        if key.upper() == canon:
            return canon
    return ALIASES.get(key.lower())


def canonical_name(name: str) -> str:
    """``"vgg16"`` -> ``"D"``, ``"a-lrn"`` -> ``"A-LRN"``; a clear ``ValueError`` for anything else."""
    canon = _lookup(name) if isinstance(name, str) else None
    if canon is None:
        valid = ", ".join(repr(n) for n in [*_TABLE1, *ALIASES])
        raise ValueError(f"unknown VGG configuration {name!r}; valid names are {valid}")
    return canon


@dataclass(frozen=True)
class LayerSpec:
    """One entry of Table 1, parsed: ``kind`` is conv, lrn, pool, fc or softmax."""

    kind: str
    kernel: int = 0
    channels: int = 0


_CONV = re.compile(r"conv(\d+)-(\d+)$")
_FC = re.compile(r"FC-(\d+)$")


def parse_layer(entry: str) -> LayerSpec:
    """Parse one Table 1 entry (``"conv3-64"``, ``"LRN"``, ``"maxpool"``, ``"FC-4096"``, ``"soft-max"``)."""
    if m := _CONV.match(entry):
        return LayerSpec("conv", int(m.group(1)), int(m.group(2)))
    if m := _FC.match(entry):
        return LayerSpec("fc", 0, int(m.group(1)))
    simple = {"LRN": "lrn", "maxpool": "pool", "soft-max": "softmax"}
    if entry in simple:
        return LayerSpec(simple[entry])
    raise ValueError(
        f"cannot parse Table 1 entry {entry!r}; expected conv<k>-<channels>, LRN, maxpool, "
        "FC-<units> or soft-max"
    )


def weight_layers(config: str) -> int:
    """The depth the paper names a net by: conv and FC layers only (pools and LRN carry no weights)."""
    return sum(parse_layer(e).kind in ("conv", "fc") for e in CONFIGS[config])


def config_table() -> pd.DataFrame:
    """Table 1 rendered from :data:`CONFIGS`, block by block, one column per configuration.

    Rows are aligned within each of the five conv blocks, as in the paper; empty cells are ``""``.
    """
    columns: dict[str, list[str]] = {}
    index: list[tuple[str, int]] = []
    per_config_blocks: dict[str, list[list[str]]] = {}
    for name, layers in _TABLE1.items():
        blocks: list[list[str]] = [[]]
        for entry in layers:
            if entry == "maxpool":
                blocks.append([])
            elif parse_layer(entry).kind in ("conv", "lrn"):
                blocks[-1].append(entry)
        per_config_blocks[name] = blocks[:5]
    for b in range(5):
        rows = max(len(per_config_blocks[n][b]) for n in _TABLE1)
        for r in range(rows):
            index.append((f"block {b + 1}", r + 1))
        index.append((f"block {b + 1}", rows + 1))
    for name in _TABLE1:
        cells: list[str] = []
        for b in range(5):
            rows = max(len(per_config_blocks[n][b]) for n in _TABLE1)
            block = per_config_blocks[name][b]
            cells += block + [""] * (rows - len(block)) + ["maxpool"]
        columns[f"{name} ({weight_layers(name)} weight layers)"] = cells
    table = pd.DataFrame(columns, index=pd.MultiIndex.from_tuples(index, names=["block", "row"]))
    head = pd.DataFrame(
        {col: list(_HEAD) for col in columns},
        index=pd.MultiIndex.from_tuples([("head", i + 1) for i in range(len(_HEAD))]),
    )
    head.index.names = ["block", "row"]
    return pd.concat([table, head])
