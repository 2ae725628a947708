"""Honest inference timing on the learner's own machine: warm-up, several repeats, the median.

Taught in ``03_efficiency.ipynb`` (does counting operations predict time? Canziani et al. 2016).
Every result carries what it was measured under (device, threads, batch size, repeats, autocast),
because a latency without those is not a number anyone can compare.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn

from .runtime import module_device, restore_training_flags, training_flags

_AUTOCAST_DTYPES = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class LatencyResult:
    """One timing: the median over ``repeats`` forward passes of one batch, after ``warmup`` passes."""

    median_ms: float  #: median wall time of one forward pass of the whole batch
    per_image_ms: float  #: median_ms / batch_size
    throughput: float  #: images per second at the median
    min_ms: float
    times_ms: tuple[float, ...]
    repeats: int
    warmup: int
    batch_size: int
    input_size: tuple[int, int, int]
    threads: int  #: torch.get_num_threads() during the measurement
    device: str
    autocast: str | None  #: e.g. "bfloat16" when run under torch.autocast, else None

    def as_dict(self) -> dict:
        """The fields as a plain dict (``times_ms`` included)."""
        return asdict(self)


def _check_positive_int(name: str, value: object, minimum: int = 1, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {minimum}{hint}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{hint}; got {value}")
    return value


def _synchronize(device: torch.device) -> None:
    """Wait for queued kernels: GPU calls return before the work is done, so time would lie."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_latency(
    model: nn.Module,
    input_size: tuple[int, int, int] = (3, 224, 224),
    batch_size: int = 1,
    *,
    repeats: int = 5,
    warmup: int = 2,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> LatencyResult:
    """Time ``model`` on a random batch ``(batch_size, *input_size)``: ``warmup`` untimed passes,
    then ``repeats`` timed ones under ``torch.inference_mode`` (eval mode), synchronising the GPU
    around each. Reports the median, which a single slow pass (another process) does not move.

    ``device=None`` times on the device the model's parameters are on; a device moves the model
    there (in place, like ``model.to``). ``autocast_dtype=torch.bfloat16`` (or ``float16``) runs
    under ``torch.autocast``; ``threads`` sets ``torch.set_num_threads`` for the measurement only.
    Taught in ``03_efficiency.ipynb``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    repeats = _check_positive_int("repeats", repeats, 1, " (timed passes; 3-10 is typical)")
    warmup = _check_positive_int("warmup", warmup, 0, " (untimed passes before timing)")
    batch_size = _check_positive_int("batch_size", batch_size, 1, " (images per forward pass)")
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)
    ):
        raise ValueError(
            f"input_size is (channels, height, width) of one image, e.g. (3, 224, 224); got {input_size!r}"
        )
    if autocast_dtype is not None and autocast_dtype not in _AUTOCAST_DTYPES:
        raise ValueError(f"autocast_dtype must be None, torch.bfloat16 or torch.float16; got {autocast_dtype!r}")
    if threads is not None:
        threads = _check_positive_int("threads", threads, 1, " (CPU threads)")

    if device is None:
        device = module_device(model)
    else:
        device = torch.device(device)
        model.to(device)
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, *input_size, generator=generator).to(device=device, dtype=dtype)

    autocast = (
        torch.autocast(device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    old_threads = torch.get_num_threads()
    flags = training_flags(model)
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        model.eval()
        with torch.inference_mode(), autocast:
            for _ in range(warmup):
                model(x)
            _synchronize(device)
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                _synchronize(device)
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        restore_training_flags(flags)
        torch.set_num_threads(old_threads)

    median = statistics.median(times)
    return LatencyResult(
        median_ms=median,
        per_image_ms=median / batch_size,
        throughput=1000.0 * batch_size / median,
        min_ms=min(times),
        times_ms=tuple(times),
        repeats=repeats,
        warmup=warmup,
        batch_size=batch_size,
        input_size=tuple(input_size),
        threads=used_threads,
        device=str(device),
        autocast=None if autocast_dtype is None else str(autocast_dtype).removeprefix("torch."),
    )


def combine_results(results: list[LatencyResult]) -> LatencyResult:
    """Pool the timed passes of several measurements of the same setting into one result.

    Used to interleave settings (A, B, A, B, ...) so that a burst of load from another process
    hits all of them alike instead of one; the median is taken over every pooled pass.
    """
    if not results:
        raise ValueError("results is empty; pass at least one LatencyResult")
    first = results[0]
    keys = ("batch_size", "input_size", "device", "autocast")
    for other in results[1:]:
        if any(getattr(other, k) != getattr(first, k) for k in keys):
            raise ValueError(f"results differ in {keys}; only repeats of one setting can be combined")
    times = tuple(t for r in results for t in r.times_ms)
    median = statistics.median(times)
    return LatencyResult(
        median_ms=median,
        per_image_ms=median / first.batch_size,
        throughput=1000.0 * first.batch_size / median,
        min_ms=min(times),
        times_ms=times,
        repeats=len(times),
        warmup=sum(r.warmup for r in results),
        batch_size=first.batch_size,
        input_size=first.input_size,
        threads=first.threads,
        device=first.device,
        autocast=first.autocast,
    )


def latency_table(
    models: Mapping[str, nn.Module],
    input_size: tuple[int, int, int] = (3, 224, 224),
    batch_sizes: tuple[int, ...] = (1,),
    *,
    rounds: int = 1,
    **kwargs,
) -> pd.DataFrame:
    """:func:`measure_latency` for every model and batch size, one row each (``model`` first).

    With ``rounds > 1`` every setting is measured once per round, round after round, and its row
    pools all timed passes (``repeats`` = rounds x repeats): on a shared machine, load from other
    processes then spreads over all models instead of landing on one. ``kwargs`` go to
    :func:`measure_latency` (repeats, warmup, device, autocast_dtype, threads).
    """
    if not models:
        raise ValueError("models is empty; pass a dict like {'vgg16': torchvision.models.vgg16()}")
    if not batch_sizes:
        raise ValueError("batch_sizes is empty; pass e.g. (1, 8)")
    rounds = _check_positive_int("rounds", rounds, 1, " (passes over all settings)")
    collected: dict[tuple[str, int], list[LatencyResult]] = {}
    for _ in range(rounds):
        for name, model in models.items():
            for batch_size in batch_sizes:
                result = measure_latency(model, input_size, batch_size, **kwargs)
                collected.setdefault((name, batch_size), []).append(result)
    rows = []
    for (name, _batch), results in collected.items():
        row = combine_results(results).as_dict()
        row.pop("times_ms")
        rows.append({"model": name, **row})
    return pd.DataFrame(rows)
