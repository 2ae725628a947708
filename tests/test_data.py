"""Datasets: the shapes generator (determinism, boxes, difficulty), ImageTensors, loaders, fallback."""

from __future__ import annotations

import pickle
import re
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vgg_utils
from vgg_utils import data as data_module
from vgg_utils.shapes import SHAPE_CLASSES, ShapesDataset, render_shapes, signed_distance

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small tensors, one thread


def test_item_depends_only_on_seed_split_and_index():
    small, large = ShapesDataset(5, 32), ShapesDataset(12, 32)
    assert torch.equal(small.images, large.images[:5])
    assert torch.equal(small.labels, large.labels[:5])
    assert torch.equal(small.boxes, large.boxes[:5])
    images, labels, boxes, _ = render_shapes([7, 3], image_size=32)
    assert torch.equal(images[0], large.images[7]) and torch.equal(images[1], large.images[3])
    assert labels.tolist() == [large.labels[7].item(), large.labels[3].item()]
    # Across chunks of the vectorised renderer, too.
    chunked = ShapesDataset(300, 16, scale=(0.4, 0.8))
    assert torch.equal(chunked.images[290:], render_shapes(range(290, 300), image_size=16, scale=(0.4, 0.8))[0])


def test_seeds_and_splits_give_different_images():
    base = ShapesDataset(8, 32)
    for other in (ShapesDataset(8, 32, seed=1), ShapesDataset(8, 32, split="test")):
        assert not torch.equal(base.images, other.images)
        assert (base.images - other.images).abs().mean() > 0.05


def test_items_shapes_dtypes_and_classes():
    data = ShapesDataset(40, 32, num_classes=4)
    image, label = data[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert isinstance(label, int) and 0 <= label < 4
    assert data.classes == ["circle", "square", "triangle", "star"]
    assert data.images.shape == (40, 3, 32, 32) and data.labels.dtype == torch.int64
    assert data.boxes.shape == (40, 4)
    as_uint8 = ShapesDataset(40, 32, num_classes=4, dtype=torch.uint8)
    assert as_uint8.images.dtype == torch.uint8
    assert torch.equal(as_uint8.images, data.images.mul(255).round().to(torch.uint8))
    assert torch.allclose(as_uint8[3][0], image, atol=0.5 / 255 + 1e-6)


def test_all_ten_kinds_appear_roughly_balanced():
    counts = render_shapes(range(1000), image_size=16, scale=(0.4, 0.8))[1].bincount(minlength=10)
    assert len(counts) == 10 and counts.sum() == 1000
    assert counts.min() > 60 and counts.max() < 140  # 100 +- 4 sigma


def test_boxes_are_tight_around_the_shape():
    data = ShapesDataset(120, 40, masks=True)
    assert data.masks.shape == (120, 40, 40)
    rows = torch.arange(40)
    for mask, (x0, y0, x1, y1) in zip(data.masks, data.boxes.long().tolist(), strict=True):
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
        ys, xs = mask.nonzero(as_tuple=True)
        assert ys.min() == y0 and ys.max() == y1 - 1  # every mask pixel inside, each edge touched
        assert xs.min() == x0 and xs.max() == x1 - 1
        assert mask[(rows < y0) | (rows >= y1)].sum() == 0
    # Sizes follow scale=(0.35, 0.8): the box's longer side is at most the shape's diameter.
    extent = torch.maximum(data.boxes[:, 2] - data.boxes[:, 0], data.boxes[:, 3] - data.boxes[:, 1])
    assert extent.min() >= 0.2 * 40 and extent.max() <= 0.8 * 40 + 1


def test_signed_distances_have_the_right_sign():
    zero, far = torch.zeros(1, 1, 1), torch.full((1, 1, 1), 1.05)
    for kind in SHAPE_CLASSES:
        assert signed_distance(kind, far, zero).item() > 0, kind  # outside the unit disk
        assert signed_distance(kind, zero, far).item() > 0, kind
        if kind != "ring":
            assert signed_distance(kind, zero, zero).item() < 0, kind  # the centre is inside
    assert signed_distance("ring", zero, zero).item() > 0  # the hole
    assert signed_distance("circle", torch.full((1, 1, 1), 0.6), torch.full((1, 1, 1), 0.8)).abs() < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be a positive integer"),
        ({"image_size": 8}, "image_size must be an integer >= 16"),
        ({"num_classes": 11}, "num_classes must be an integer from 2 to 10"),
        ({"num_classes": 1}, "num_classes"),
        ({"scale": (0.6, 0.3)}, "0 < lo <= hi <= 1"),
        ({"scale": (0.1, 0.5), "image_size": 32}, "at least 6 pixels"),
        ({"scale": "big"}, "scale must be a pair"),
        ({"split": "validation"}, "split must be one of"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"dtype": torch.int32}, "dtype must be"),
    ],
)
def test_invalid_arguments_are_rejected_clearly(kwargs, match):
    args = {"n": 4, "image_size": 32} | kwargs
    with pytest.raises(ValueError, match=match):
        ShapesDataset(**args)


def test_a_linear_classifier_on_raw_pixels_stays_near_chance():
    """The dataset is not trivial: position, size, rotation and colour vary, so no single pixel
    template matches a class. Logistic regression fits the training set but not the test set."""
    torch.manual_seed(0)
    train, test = ShapesDataset(3000, 32), ShapesDataset(1000, 32, split="test")
    x, xt = train.images.flatten(1), test.images.flatten(1)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xt = (x - mu) / sd, (xt - mu) / sd
    linear = torch.nn.Linear(x.shape[1], 10)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(x), train.labels) + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        train_acc = (linear(x).argmax(1) == train.labels).float().mean().item()
        test_acc = (linear(xt).argmax(1) == test.labels).float().mean().item()
    assert train_acc > 0.3  # the probe did fit (a broken probe would pass the next line trivially)
    assert test_acc < 0.40, f"a linear probe reached {test_acc:.1%}: the dataset is too easy"


# --- ImageTensors and loaders ----------------------------------------------------------------------


def test_image_tensors_validates_and_slices():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    data = vgg_utils.ImageTensors(images, [0, 1, 2, 0, 1, 2], ["a", "b", "c"])
    assert len(data) == 6 and data.image_size == (8, 8)
    image, label = data[4]
    assert image.dtype == torch.float32 and torch.allclose(image * 255, images[4].float())
    assert label == 1
    sub = data.subset([5, 0])
    assert torch.equal(sub.images, images[[5, 0]]) and sub.labels.tolist() == [2, 0]
    assert data.class_counts().tolist() == [2, 2, 2]
    assert "n=6" in repr(data)
    with pytest.raises(ValueError, match="labels must have shape"):
        vgg_utils.ImageTensors(images, [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="labels must lie in"):
        vgg_utils.ImageTensors(images, [0, 1, 2, 3, 0, 0], ["a", "b", "c"])
    with pytest.raises(TypeError, match="uint8"):
        vgg_utils.ImageTensors(images.int(), [0] * 6, ["a"])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        vgg_utils.ImageTensors(images[0], [0] * 3, ["a"])


def _write_png(image: torch.Tensor, path) -> None:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)


def test_load_image_folder(tmp_path):
    gen = torch.Generator().manual_seed(0)
    saved = {}
    for cls in ("dog", "cat"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8, generator=gen)
            _write_png(image, tmp_path / cls / f"{i}.png")
            saved[(cls, i)] = image
    data = vgg_utils.load_image_folder(tmp_path)
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(data.images[0], saved[("cat", 0)])  # PNG is lossless
    square = vgg_utils.load_image_folder(tmp_path, image_size=16)
    assert square.images.shape == (6, 3, 16, 16) and square.images.dtype == torch.uint8
    some = vgg_utils.load_image_folder(tmp_path, n=4, seed=1)
    assert len(some) == 4 and torch.equal(some.images, vgg_utils.load_image_folder(tmp_path, n=4, seed=1).images)
    draws = {tuple(vgg_utils.load_image_folder(tmp_path, n=4, seed=s).labels.tolist()) for s in range(6)}
    assert len(draws) > 1  # seeded: another seed draws another subset
    index = {saved[k].numpy().tobytes(): k for k in saved}
    assert all(index[im.numpy().tobytes()][0] == some.classes[y] for im, y in zip(some.images, some.labels, strict=True))
    _write_png(torch.zeros(3, 10, 10, dtype=torch.uint8), tmp_path / "dog" / "odd.png")
    with pytest.raises(ValueError, match="pass image_size"):
        vgg_utils.load_image_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vgg_utils.load_image_folder(tmp_path / "nowhere")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No CIFAR-10 anywhere: an empty cache, no local copy, no network."""
    monkeypatch.setenv("VGG_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("VGG_CIFAR10_DIR", raising=False)
    monkeypatch.setattr(data_module, "_reachable", lambda url, timeout: False)


def test_cifar10_offline_fails_fast_and_clearly(offline):
    start = time.perf_counter()
    with pytest.raises(vgg_utils.DatasetUnavailableError, match="not cached.*VGG_CIFAR10_DIR not set.*unreachable") as err:
        vgg_utils.load_cifar10("train")
    assert time.perf_counter() - start < 5
    assert "Or set VGG_CIFAR10_DIR to a copy as image folders" in str(err.value)  # the other way in, named
    with pytest.raises(ValueError, match="split must be"):
        vgg_utils.load_cifar10("validation")


def test_default_dataset_falls_back_to_shapes(offline, capsys):
    train, test = vgg_utils.default_dataset(50, 20)
    line = capsys.readouterr().out.strip()
    assert line.startswith("dataset: shapes") and "CIFAR-10 is unavailable" in line
    assert "\n" not in line
    assert len(train) == 50 and len(test) == 20 and train.images.shape[-1] == 32
    assert not torch.equal(train.images[:20], test.images)


def test_cifar10_network_check_is_quick_when_offline(monkeypatch, tmp_path):
    # The real reachability probe (no monkeypatched network): bounded by its timeout.
    monkeypatch.setenv("VGG_DATA_DIR", str(tmp_path))
    start = time.perf_counter()
    data_module._reachable(data_module.CIFAR10_URL, 2.0)
    assert time.perf_counter() - start < 3


def test_cifar10_from_the_torchvision_cache(offline, monkeypatch, tmp_path):
    """A fake cache in torchvision's pickle format (its MD5 check bypassed): NHWC becomes NCHW."""
    from torchvision.datasets import CIFAR10, cifar

    folder = tmp_path / "cache" / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (name, _) in enumerate(CIFAR10.train_list + CIFAR10.test_list):
        data = rng.integers(0, 256, (4, 3 * 32 * 32), dtype=np.uint8)  # rows are R, G, B planes
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [i % 10, 1, 2, 3]}, f)
    with open(folder / CIFAR10.meta["filename"], "wb") as f:
        pickle.dump({"label_names": list(vgg_utils.CIFAR10_CLASSES)}, f)
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: True)
    test = vgg_utils.load_cifar10("test")
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f)["data"]
    assert test.images.shape == (4, 3, 32, 32) and test.images.dtype == torch.uint8
    assert torch.equal(test.images[1, 0].flatten(), torch.from_numpy(raw[1, :1024]))  # red plane
    assert test.labels.tolist() == [5, 1, 2, 3] and tuple(test.classes) == vgg_utils.CIFAR10_CLASSES
    assert "torchvision cache" in test.source
    assert len(vgg_utils.load_cifar10("train", n=7)) == 7
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: False)
    with pytest.raises(vgg_utils.DatasetUnavailableError, match="incomplete or corrupt"):
        vgg_utils.load_cifar10("test")


def test_cifar10_from_a_local_image_folder_copy():
    if vgg_utils.local_cifar10_folder() is None:
        pytest.skip("VGG_CIFAR10_DIR is not set (conftest sets it on machines that keep a JPEG copy)")
    data = vgg_utils.load_cifar10("test", n=300, source="folder")
    assert data.images.shape == (300, 3, 32, 32) and data.images.dtype == torch.uint8
    assert tuple(data.classes) == vgg_utils.CIFAR10_CLASSES
    assert data.class_counts().min() > 10  # a random subset, not the first class folder
    assert "JPEG" in data.source and "VGG_CIFAR10_DIR" in data.source


def _fake_cifar_folder(root, ext=".png", classes=vgg_utils.CIFAR10_CLASSES, size=32):
    for split in ("train", "test"):
        for k, name in enumerate(classes):
            image = torch.full((3, size, size), 20 * k, dtype=torch.uint8)
            (root / split / name).mkdir(parents=True)
            _write_png(image, root / split / name / f"0{ext}")
    return root


def test_local_cifar10_folder_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("VGG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(data_module, "_reachable", lambda url, timeout: False)
    monkeypatch.delenv("VGG_CIFAR10_DIR", raising=False)
    assert vgg_utils.local_cifar10_folder() is None
    # A folder with train/ and test/ ImageFolders (PNG: lossless, so the note says nothing of JPEG).
    root = _fake_cifar_folder(tmp_path / "cifar")
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(root))
    test = vgg_utils.load_cifar10("test")
    assert len(test) == 10 and test.labels.tolist() == list(range(10))
    assert "VGG_CIFAR10_DIR" in test.source and "JPEG" not in test.source
    assert test.images[3].unique().tolist() == [60]
    # The same folder as a .tar.gz archive, unpacked once into extract_to.
    import tarfile

    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar")
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(archive))
    unpacked = vgg_utils.local_cifar10_folder(extract_to=tmp_path / "x")
    assert (unpacked / "train" / "cat").is_dir() and unpacked.is_relative_to(tmp_path / "x")
    assert vgg_utils.local_cifar10_folder(extract_to=tmp_path / "x") == unpacked  # once
    # A typo is an error, not a silent fallback to the shapes.
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(vgg_utils.DatasetUnavailableError, match="neither a folder nor"):
        vgg_utils.load_cifar10("test")
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(root / "train"))
    with pytest.raises(vgg_utils.DatasetUnavailableError, match="has no train/ folder"):
        vgg_utils.load_cifar10("test")
    other = _fake_cifar_folder(tmp_path / "other", classes=("a", "b"))
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(other))
    with pytest.raises(vgg_utils.DatasetUnavailableError, match="CIFAR-10 has"):
        vgg_utils.load_cifar10("test", source="folder")
    with pytest.raises(ValueError, match="source must be"):
        vgg_utils.load_cifar10("test", source="jpeg")


def test_a_small_vgg_learns_the_shapes():
    """...while a small VGG does: config A (batch norm, width 1/8) reaches 90% (93% measured)
    in ~30 s of one CPU core."""
    train = ShapesDataset(10_000, 32, dtype=torch.uint8)
    test = ShapesDataset(1000, 32, split="test", dtype=torch.uint8)
    torch.manual_seed(0)
    model = vgg_utils.build_vgg("A", 10, batch_norm=True, width=0.125, head="compact")
    augment = vgg_utils.PaperAugment.from_data(train, 32, color=False)  # flip + mean subtraction
    history = vgg_utils.train(model, train, test, epochs=8, batch_size=64, lr=0.1, schedule="onecycle",
                              augment=augment, device="cpu", progress=False)  # fmt: skip
    assert history["test_acc"].iloc[-1] >= 0.90, history.to_string()


def test_cifar10_source_picks_exactly_one_place(offline, monkeypatch, tmp_path):
    with pytest.raises(vgg_utils.DatasetUnavailableError, match=r"unavailable: \$VGG_CIFAR10_DIR not set\. On a") as err:
        vgg_utils.load_cifar10("test", source="folder")  # neither the cache nor a download tried
    root = _fake_cifar_folder(tmp_path / "cifar")
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(root))
    with pytest.raises(vgg_utils.DatasetUnavailableError, match="not cached in .*; www.cs.toronto.edu unreachable") as err:
        vgg_utils.load_cifar10("test", source="torchvision")  # the folder is there, and not used
    assert "VGG_CIFAR10_DIR" not in str(err.value)
    assert len(vgg_utils.load_cifar10("test", source="auto")) == len(vgg_utils.load_cifar10("test", source="folder")) == 10
    with pytest.raises(ValueError, match="source must be 'auto', 'torchvision' or 'folder'; got 'jpeg'"):
        vgg_utils.load_cifar10("test", source="jpeg")


# --- Surviving mutants of data (mutation/README.md) ------------------------------------------------


def test_default_dataset_takes_cifar10_subsets_and_says_so(offline, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(_fake_cifar_folder(tmp_path / "cifar")))
    for size in (32, 48):  # CIFAR-10 is resized only when asked for another size, both splits
        train, test = vgg_utils.default_dataset(6, 4, image_size=size)
        said = "dataset: CIFAR-10 (image folder from $VGG_CIFAR10_DIR): 6 train / 4 test images\n"
        assert capsys.readouterr().out == said
        assert train.images.shape == (6, 3, size, size) and test.images.shape == (4, 3, size, size)
        assert train.images.dtype == test.images.dtype == torch.uint8
        assert "CIFAR-10 test" in test.source and tuple(test.classes) == vgg_utils.CIFAR10_CLASSES


def test_default_dataset_fallback_keeps_seed_size_and_the_reason(offline, capsys):
    train, test = vgg_utils.default_dataset(6, 4, image_size=48, seed=3)
    line = capsys.readouterr().out
    assert re.fullmatch(
        r"dataset: shapes \(48x48\), because CIFAR-10 is unavailable \(not cached in \S+; "
        r"\$VGG_CIFAR10_DIR not set; www\.cs\.toronto\.edu unreachable within 3 s\)\n",
        line,
    ), line
    assert torch.equal(train.images, ShapesDataset(6, 48, seed=3, dtype=torch.uint8).images)
    assert torch.equal(
        test.images, ShapesDataset(4, 48, seed=3, split="test", dtype=torch.uint8).images
    )


def test_a_jpeg_cifar10_folder_is_subsampled_and_marked_lossy(offline, monkeypatch, tmp_path):
    # Upper-case .JPG as cameras and Windows copies name them; the note must still say JPEG.
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(_fake_cifar_folder(tmp_path / "cifar", ext=".JPG")))
    data = vgg_utils.load_cifar10("test", n=4, seed=1, source="folder")
    assert len(data) == 4 and len(set(data.labels.tolist())) == 4  # 4 of the 10 one-image classes
    assert data.source == "CIFAR-10 test (image folder from $VGG_CIFAR10_DIR, JPEG: slightly lossy)"


def test_load_image_folder_names_its_source_and_refuses_bad_sizes(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        _write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), tmp_path / cls / "0.png")
    assert vgg_utils.load_image_folder(tmp_path).source == f"image folder {tmp_path}"
    for bad in (0, -16, 2.5, "16", True):
        with pytest.raises(
            ValueError, match=rf"^image_size must be a positive integer or None; got {bad!r}$"
        ):
            vgg_utils.load_image_folder(tmp_path, image_size=bad)
    (tmp_path / "dog" / "0.png").write_bytes(b"not an image")
    with (
        pytest.warns(UserWarning, match="skipped 1 unreadable"),
        pytest.raises(
            ValueError,
            match=r"\['dog'\] .*; add images that open in an image viewer, or remove the folder$",
        ),
    ):
        vgg_utils.load_image_folder(tmp_path)


def test_a_wrong_cifar10_setting_says_what_is_expected(monkeypatch, tmp_path):
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(
        vgg_utils.DatasetUnavailableError,
        match=r"point it at a folder holding train/<class>/\*\.png and test/<class>/\*\.png "
        r"\(or an archive of one\), or unset it$",
    ):
        vgg_utils.local_cifar10_folder()
    for name in "gfedcba":
        (tmp_path / name).mkdir()
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(tmp_path))
    with pytest.raises(
        vgg_utils.DatasetUnavailableError,
        match=r"has no train/ folder \(found: \['a', 'b', 'c', 'd', 'e'\]\); expected train/<class>/\* "
        r"and test/<class>/\*$",
    ):
        vgg_utils.local_cifar10_folder()


def test_a_cifar10_archive_unpacks_into_a_named_folder_and_nowhere_else(monkeypatch, tmp_path):
    import tarfile

    root = _fake_cifar_folder(tmp_path / "cifar")
    archive = tmp_path / "cifar10-png.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar")
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(archive))
    unpacked = vgg_utils.local_cifar10_folder(extract_to=tmp_path / "x")
    st = archive.stat()
    # Named after the archive (without .tar.gz), its size and time: a new copy unpacks afresh.
    assert (
        unpacked
        == tmp_path / "x" / f"vgg_course_cifar10-png_{st.st_size}_{int(st.st_mtime)}" / "cifar"
    )
    if not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no extraction filter (added in 3.10.12 / 3.11.4)")
    # An archive whose member climbs out of the folder is refused, and writes nothing outside it.
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(root, arcname="cifar")
        tar.add(root / "test" / "cat" / "0.png", arcname="../escaped.png")
    monkeypatch.setenv("VGG_CIFAR10_DIR", str(evil))
    with pytest.raises(tarfile.OutsideDestinationError):
        vgg_utils.local_cifar10_folder(extract_to=tmp_path / "y")
    assert not (tmp_path / "y" / "escaped.png").exists() and not (tmp_path / "escaped.png").exists()
    assert list((tmp_path / "y").iterdir()) == []  # the half-unpacked scratch folder is gone too
