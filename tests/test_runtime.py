"""Runtime helpers: run size, device choice, seeds and the data folder."""

import pytest
import torch

from vgg_utils import REPO_ROOT, data_dir, get_device, is_fast, seed_everything


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False), ("no", False)])
def test_fast_flag_reads_vgg_fast(monkeypatch, value, expected):
    monkeypatch.setenv("VGG_FAST", value)
    assert is_fast() is expected


def test_device_choice(monkeypatch):
    monkeypatch.delenv("VGG_DEVICE", raising=False)
    best = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert get_device().type == best  # the fastest device there is, in that order
    assert get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("VGG_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")


def test_seed_everything_repeats_random_draws():
    import random

    import numpy as np

    def draws():
        return torch.randn(5), random.random(), np.random.rand(3), torch.rand(2, generator=generator)

    generator = seed_everything(3)
    first = draws()
    generator = seed_everything(3)
    again = draws()
    assert torch.equal(first[0], again[0]) and torch.equal(first[3], again[3])
    assert first[1] == again[1] and np.array_equal(first[2], again[2])  # Python's and NumPy's too
    generator = seed_everything(4)
    other = draws()
    assert first[1] != other[1] and not np.array_equal(first[2], other[2])
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[3], other[3])
    seed_everything(2**32 + 3)  # NumPy takes 32-bit seeds: larger ones wrap, not fail
    wrapped = np.random.rand()
    np.random.seed(3)
    assert wrapped == np.random.rand()


def test_data_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("VGG_DATA_DIR", raising=False)
    assert data_dir() == REPO_ROOT / "data"
    monkeypatch.setenv("VGG_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path


def test_module_device_and_cpu_bf16_probe():
    from vgg_utils import cpu_bf16_support, cpu_fast_bf16, module_device

    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")  # no parameters: CPU
    with torch.device("meta"):
        assert module_device(torch.nn.Linear(2, 2)).type == "meta"
    fast = {"AMX-BF16": True, "AVX512-BF16": True, "none": False}
    assert cpu_fast_bf16() is fast[cpu_bf16_support()]  # a KeyError for an unknown answer
