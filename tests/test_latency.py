"""measure_latency: medians over repeats, reported conditions, clear refusals. No timing asserts."""

import pytest
import torch
from torch import nn

from vgg_utils import (
    LatencyResult,
    combine_results,
    cpu_bf16_support,
    latency_table,
    measure_latency,
)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def test_returns_median_of_the_repeats_and_the_conditions():
    model = tiny_model().train()
    result = measure_latency(model, (3, 16, 16), batch_size=4, repeats=3, warmup=1, threads=1)
    assert isinstance(result, LatencyResult)
    assert len(result.times_ms) == 3 and all(t > 0 for t in result.times_ms)
    assert result.median_ms == sorted(result.times_ms)[1]
    assert result.min_ms == min(result.times_ms)
    assert result.per_image_ms == pytest.approx(result.median_ms / 4)
    assert result.throughput == pytest.approx(4000 / result.median_ms)
    assert (result.batch_size, result.repeats, result.warmup) == (4, 3, 1)
    assert result.threads == 1 and result.device == "cpu" and result.autocast is None
    assert result.input_size == (3, 16, 16)
    assert model.training, "training mode is restored"
    assert set(result.as_dict()) >= {"median_ms", "per_image_ms", "throughput", "threads", "device"}


def test_threads_are_restored():
    before = torch.get_num_threads()
    measure_latency(tiny_model(), (3, 8, 8), repeats=1, warmup=0, threads=1)
    assert torch.get_num_threads() == before


def test_bf16_autocast_runs_and_is_reported():
    result = measure_latency(tiny_model(), (3, 8, 8), repeats=2, warmup=0,
                             autocast_dtype=torch.bfloat16, device="cpu")
    assert result.autocast == "bfloat16" and len(result.times_ms) == 2


@pytest.mark.parametrize("repeats", [0, -1, -5])
def test_refuses_zero_or_negative_repeats(repeats):
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        measure_latency(tiny_model(), (3, 8, 8), repeats=repeats)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
    ({"batch_size": -2}, ValueError, "batch_size must be an integer >= 1"),
    ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
    ({"repeats": 2.0}, TypeError, "repeats must be an integer"),
    ({"warmup": -1}, ValueError, "warmup must be an integer >= 0"),
    ({"input_size": (8, 8)}, ValueError, r"input_size is \(channels, height, width\)"),
    ({"autocast_dtype": torch.int8}, ValueError, "autocast_dtype must be"),
    ({"threads": 0}, ValueError, "threads must be an integer >= 1"),
])
def test_refuses_bad_arguments(kwargs, error, match):
    args = {"input_size": (3, 8, 8), "repeats": 1, "warmup": 0, **kwargs}
    with pytest.raises(error, match=match):
        measure_latency(tiny_model(), **args)


def test_refuses_non_modules():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        measure_latency(lambda x: x, (3, 8, 8))


def test_latency_table_has_a_row_per_model_and_batch():
    table = latency_table({"a": tiny_model(), "b": tiny_model()}, (3, 8, 8), batch_sizes=(1, 2),
                          repeats=2, warmup=0)
    assert list(table["model"]) == ["a", "a", "b", "b"]
    assert list(table["batch_size"]) == [1, 2, 1, 2]
    assert (table["median_ms"] > 0).all() and "times_ms" not in table.columns
    with pytest.raises(ValueError, match="models is empty"):
        latency_table({}, (3, 8, 8))


def test_rounds_pool_every_timed_pass():
    table = latency_table({"a": tiny_model()}, (3, 8, 8), batch_sizes=(2,), rounds=3, repeats=2,
                          warmup=1)
    assert len(table) == 1 and table.loc[0, "repeats"] == 6 and table.loc[0, "warmup"] == 3
    with pytest.raises(ValueError, match="rounds must be an integer >= 1"):
        latency_table({"a": tiny_model()}, (3, 8, 8), rounds=0)


def test_combine_results_takes_the_median_of_all_passes():
    model = tiny_model()
    parts = [measure_latency(model, (3, 8, 8), 2, repeats=r, warmup=0) for r in (1, 2)]
    pooled = combine_results(parts)
    times = parts[0].times_ms + parts[1].times_ms
    assert pooled.times_ms == times and pooled.median_ms == sorted(times)[1]
    assert pooled.repeats == 3 and pooled.per_image_ms == pytest.approx(pooled.median_ms / 2)
    other = measure_latency(model, (3, 8, 8), 1, repeats=1, warmup=0)
    with pytest.raises(ValueError, match="only repeats of one setting"):
        combine_results([parts[0], other])
    with pytest.raises(ValueError, match="results is empty"):
        combine_results([])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cuda_timing_synchronises():
    result = measure_latency(tiny_model(), (3, 16, 16), repeats=2, warmup=1, device="cuda")
    assert result.device.startswith("cuda") and result.median_ms > 0


def test_cpu_bf16_support_agrees_with_the_cpu_flags():
    """The kernel's own list of CPU features is an independent witness of PyTorch's probes."""
    import platform
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.is_file():
        pytest.skip("CPU flags are read from /proc/cpuinfo on x86-64 Linux only")
    flags = set(cpuinfo.read_text().split())
    expected = "AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "none"
    assert cpu_bf16_support() == expected
