"""The online transfer dataset (Oxford 102 Flowers): fails fast offline, downloads atomically,
loads subsets. No test needs the network: downloads are replaced by local fakes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from vgg_utils import DatasetUnavailableError, transfer_data
from vgg_utils.transfer_data import download_flowers102, flowers102_cached, load_flowers102


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VGG_DATA_DIR", str(tmp_path))
    return tmp_path


def test_offline_download_fails_within_seconds_with_what_to_run(data_dir, monkeypatch):
    # A closed port on loopback: the connection is refused at once, like a machine without network.
    monkeypatch.setattr(transfer_data, "flowers102_url", lambda: "https://127.0.0.1:9/flowers-102/")
    tic = time.perf_counter()
    with pytest.raises(DatasetUnavailableError, match=r"(?s)unreachable.*vgg_utils.download_flowers102\(\)"):
        load_flowers102("train", timeout=2.0)
    assert time.perf_counter() - tic < 5
    assert not flowers102_cached() and not list((data_dir / "cache").iterdir())


def test_the_real_host_probe_is_bounded_by_its_timeout(data_dir):
    """Against the real host: offline (this machine) it fails within the timeout; a connected
    machine would start a 330 MB download, which a test must not do."""
    from vgg_utils.models import _reachable

    url = transfer_data.flowers102_url()  # imports torchvision.datasets: not part of the probe
    tic = time.perf_counter()
    reachable = _reachable(url, 2.0)
    assert time.perf_counter() - tic < 4
    if reachable:
        pytest.skip("the Flowers102 host is reachable here: the offline failure cannot be shown for real")
    with pytest.raises(DatasetUnavailableError, match="unreachable within 2 s"):
        download_flowers102(timeout=2.0)
    assert time.perf_counter() - tic < 10


class _FakeFlowers:
    """Stands in for torchvision's Flowers102: ``download=True`` writes what the real one unpacks
    (``flowers-102/jpg/*.jpg`` and the two label files); ``fail`` cuts the download off."""

    fail = False
    _file_dict = {"image": ("102flowers.tgz", "m1"), "label": ("imagelabels.mat", "m2"), "setid": ("setid.mat", "m3")}
    classes = [f"species {i}" for i in range(102)]

    def __init__(self, root, split="train", download=False):
        from PIL import Image

        base = Path(root) / "flowers-102"
        if download:
            (base / "jpg").mkdir(parents=True)
            (base / "102flowers.tgz").write_bytes(b"partial")
            if self.fail:
                raise RuntimeError("File not found or corrupted.")
            for i in range(12):
                colour = (20 * i, 100, 200)
                Image.new("RGB", (60 + 4 * i, 48), colour).save(base / "jpg" / f"image_{i + 1:05d}.jpg")
            for name in ("imagelabels.mat", "setid.mat"):
                (base / name).write_bytes(b"labels")
        if not (base / "imagelabels.mat").is_file():
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        self._image_files = [base / "jpg" / f"image_{i + 1:05d}.jpg" for i in range(12)]
        self._labels = [i % 3 for i in range(12)]


@pytest.fixture
def fake_flowers(monkeypatch):
    monkeypatch.setattr(transfer_data, "_reachable", lambda url, timeout: True)
    monkeypatch.setattr(transfer_data, "_flowers102", lambda: _FakeFlowers)
    monkeypatch.setattr(transfer_data, "flowers102_url", lambda: "https://example.invalid/flowers-102/")
    _FakeFlowers.fail = False
    return _FakeFlowers


def test_a_failed_download_leaves_nothing_where_a_loader_looks(data_dir, fake_flowers):
    fake_flowers.fail = True
    with pytest.raises(DatasetUnavailableError, match="MD5 check or was cut off"):
        download_flowers102()
    assert not (data_dir / "cache" / "flowers-102").exists()
    assert not list((data_dir / "cache").iterdir()), "the scratch folder must be removed"


def test_download_is_atomic_once_and_loads_subsets(data_dir, fake_flowers):
    folder = download_flowers102()
    assert folder == data_dir / "cache" / "flowers-102" and flowers102_cached()
    assert (folder / ".complete").is_file() and not (folder / "102flowers.tgz").exists()
    assert [p.name for p in (data_dir / "cache").iterdir()] == ["flowers-102"]
    fake_flowers.fail = True  # cached: no second download
    assert download_flowers102() == folder

    data = load_flowers102("train", num_classes=2, n_per_class=3, image_size=32)
    assert data.images.shape == (6, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.class_counts().tolist() == [3, 3] and data.classes == ["species 0", "species 1"]
    again = load_flowers102("train", num_classes=2, n_per_class=3, image_size=32)
    assert torch.equal(again.images, data.images)  # seeded subset
    with pytest.raises(ValueError, match="only 4 images of class 0"):
        load_flowers102("train", num_classes=1, n_per_class=5, image_size=32)


def test_bad_arguments(data_dir):
    with pytest.raises(ValueError, match="split must be"):
        load_flowers102("validation")
    with pytest.raises(ValueError, match="102 classes"):
        load_flowers102(num_classes=200)
    with pytest.raises(ValueError, match="n_per_class must be a positive integer"):
        load_flowers102(n_per_class=0)
