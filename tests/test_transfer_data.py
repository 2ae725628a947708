"""The online transfer dataset (Oxford 102 Flowers): fails fast offline, downloads atomically,
loads subsets. No test needs the network: downloads are replaced by local fakes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from vgg_utils import DatasetUnavailableError, ImageTensors, transfer_data
from vgg_utils.transfer_data import (
    download_flowers102,
    flowers102_cached,
    load_flowers102,
    per_class_split,
)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VGG_DATA_DIR", str(tmp_path))
    return tmp_path


def test_offline_download_fails_within_seconds_with_what_to_run(data_dir, monkeypatch):
    # A closed port on loopback: the connection is refused at once, like a machine without network.
    monkeypatch.setattr(transfer_data, "flowers102_url", lambda: "https://127.0.0.1:9/flowers-102/")
    tic = time.perf_counter()
    with pytest.raises(
        DatasetUnavailableError, match=r"(?s)unreachable.*vgg_utils.download_flowers102\(\)"
    ):
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
        pytest.skip(
            "the Flowers102 host is reachable here: the offline failure cannot be shown for real"
        )
    with pytest.raises(DatasetUnavailableError, match="unreachable within 2 s"):
        download_flowers102(timeout=2.0)
    assert time.perf_counter() - tic < 10


_SPLITS = {"train": range(1, 13), "val": range(13, 19), "test": range(19, 28)}  # image ids


class _FakeFlowers:
    """Stands in for torchvision's Flowers102: checks ``split`` as it does; ``download=True``
    writes what the real one unpacks (``flowers-102/jpg/*.jpg`` and the two label files) and
    records the folder it was given; ``fail`` cuts the download off. The train, val and test
    splits hold different images (12, 6 and 9; labels cycle over three classes)."""

    fail = False
    size: tuple[int, int] | None = None  # every image's (width, height); None: 60 + 4 i by 48
    roots: list[Path] = []
    _file_dict = {
        "image": ("102flowers.tgz", "m1"),
        "label": ("imagelabels.mat", "m2"),
        "setid": ("setid.mat", "m3"),
    }
    classes = [f"species {i}" for i in range(102)]

    def __init__(self, root, split="train", download=False):
        from PIL import Image

        if split not in _SPLITS:  # torchvision's verify_str_arg
            raise ValueError(
                f"Unknown value '{split}' for argument split. Valid values are {set(_SPLITS)}."
            )
        base = Path(root) / "flowers-102"
        if download:
            self.roots.append(Path(root))
            (base / "jpg").mkdir(parents=True)
            (base / "102flowers.tgz").write_bytes(b"partial")
            if self.fail:
                raise RuntimeError("File not found or corrupted.")
            for i in range(1, 28):
                size = self.size or (60 + 4 * i, 48)
                Image.new("RGB", size, (8 * i, 100, 200)).save(base / "jpg" / f"image_{i:05d}.jpg")
            for name in ("imagelabels.mat", "setid.mat"):
                (base / name).write_bytes(b"labels")
        if not (base / "imagelabels.mat").is_file():
            raise RuntimeError(
                "Dataset not found or corrupted. You can use download=True to download it"
            )
        self._image_files = [base / "jpg" / f"image_{i:05d}.jpg" for i in _SPLITS[split]]
        self._labels = [j % 3 for j in range(len(_SPLITS[split]))]


@pytest.fixture
def fake_flowers(monkeypatch):
    monkeypatch.setattr(transfer_data, "_reachable", lambda url, timeout: True)
    monkeypatch.setattr(transfer_data, "_flowers102", lambda: _FakeFlowers)
    monkeypatch.setattr(
        transfer_data, "flowers102_url", lambda: "https://example.invalid/flowers-102/"
    )
    monkeypatch.setattr(_FakeFlowers, "roots", [])
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


def test_offline_the_default_probe_takes_5_s_and_the_message_names_the_host(data_dir, monkeypatch):
    probes = []

    def offline(url, timeout):
        probes.append(timeout)
        return False

    monkeypatch.setattr(transfer_data, "_reachable", offline)
    monkeypatch.setattr(
        transfer_data, "flowers102_url", lambda: "https://example.invalid/flowers-102/"
    )
    with pytest.raises(
        DatasetUnavailableError, match=r"example\.invalid is unreachable within 5 s"
    ):
        download_flowers102()
    assert probes == [5.0]


def test_each_split_is_its_own_set_of_images(data_dir, fake_flowers):
    counts = {}
    for split in ("train", "val", "test"):
        data = load_flowers102(split, image_size=16)
        counts[split] = len(data)
        assert data.source == f"Oxford 102 Flowers {split} ({len(data)} images, 102 classes)"
    assert counts == {"train": 12, "val": 6, "test": 9}


def test_the_download_is_hidden_while_partial_and_records_its_provenance(data_dir, fake_flowers):
    import datetime
    import json

    folder = download_flowers102()
    (scratch,) = (
        fake_flowers.roots
    )  # where torchvision was told to download: hidden, beside the result
    assert scratch.parent == folder.parent and scratch.name.startswith(".flowers-102-partial-")
    record = json.loads((folder / ".complete").read_text())
    assert set(record) == {"source", "date", "md5", "checked_by"}
    assert record["source"] == "https://example.invalid/flowers-102/"
    assert record["md5"] == {"102flowers.tgz": "m1", "imagelabels.mat": "m2", "setid.mat": "m3"}
    assert "torchvision.datasets.Flowers102" in record["checked_by"]
    assert datetime.datetime.fromisoformat(record["date"]).tzinfo is not None


def test_a_scratch_folder_that_cannot_be_removed_hides_neither_result_nor_error(
    data_dir, fake_flowers, monkeypatch
):
    """On Windows a file still held open (an antivirus scan, an indexer) cannot be deleted: the
    leftover scratch folder must not turn a finished download into an error, nor replace the
    download's own error with a PermissionError."""
    import shutil
    from types import SimpleNamespace

    def rmtree(path, ignore_errors=False):
        if Path(path).name.startswith(".flowers-102-partial-"):  # a file inside is held open
            if not ignore_errors:
                raise PermissionError(13, "The process cannot access the file", str(path))
            return
        shutil.rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(transfer_data, "shutil", SimpleNamespace(rmtree=rmtree))
    fake_flowers.fail = True
    with pytest.raises(DatasetUnavailableError, match="MD5 check or was cut off"):
        download_flowers102()
    fake_flowers.fail = False
    assert download_flowers102() == data_dir / "cache" / "flowers-102" and flowers102_cached()


def test_older_torchvision_without_species_names(data_dir, fake_flowers, monkeypatch):
    monkeypatch.setattr(fake_flowers, "classes", None)
    assert load_flowers102("train", num_classes=2, image_size=16).classes == [
        "flower 1",
        "flower 2",
    ]


def test_large_jpegs_are_decoded_at_reduced_scale(data_dir, fake_flowers, monkeypatch):
    """A 512x384 photo asked for at 32 px is decoded by libjpeg at 1/8 (64x48), never below 32."""
    monkeypatch.setattr(fake_flowers, "size", (512, 384))
    square, decoded = transfer_data._square, []

    def spy(images, size):
        decoded.append(tuple(images.shape[-2:]))
        return square(images, size)

    monkeypatch.setattr(transfer_data, "_square", spy)
    data = load_flowers102("val", num_classes=1, image_size=32)
    assert decoded == [(48, 64), (48, 64)] and data.images.shape == (2, 3, 32, 32)
    colour = data.images[0].float().mean(dim=(1, 2))  # the first val image: (104, 100, 200)
    assert (colour - torch.tensor([104.0, 100.0, 200.0])).abs().max() < 4


def _labelled(counts: list[int]) -> ImageTensors:
    """``counts[c]`` images of class ``c``, each image filled with its own index."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)
    return ImageTensors(
        images.contiguous(), labels, [f"c{c}" for c in range(len(counts))], source="test"
    )


def test_per_class_split_defaults_to_seed_0_and_checks_k():
    data = _labelled([10, 10, 10, 10])
    few = per_class_split(data, 2)[0]
    assert torch.equal(few.images, per_class_split(data, 2, seed=0)[0].images)  # a notebook's draw
    assert not torch.equal(few.images, per_class_split(data, 2, seed=1)[0].images)
    for k in (True, 2.5, "2", 0):
        with pytest.raises(
            ValueError, match=r"k \(images per class\) must be a positive integer; got "
        ):
            per_class_split(data, k)
    # The message names at most three of the classes that are too small.
    with pytest.raises(
        ValueError, match=r"asked for 2 images per class but \['c0', 'c1', 'c2'\] have only 1$"
    ):
        per_class_split(_labelled([1, 1, 1, 1, 1]), 2)
