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
    assert get_device().type in ("cuda", "mps", "cpu")
    assert get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("VGG_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")


def test_seed_everything_repeats_random_draws():
    seed_everything(3)
    a = torch.randn(5)
    seed_everything(3)
    assert torch.equal(a, torch.randn(5))


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
    assert cpu_bf16_support() in {"AMX-BF16", "AVX512-BF16", "none"}
    assert cpu_fast_bf16() == (cpu_bf16_support() != "none")
