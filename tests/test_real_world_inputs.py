"""A learner's own photo folder (notebook 06): files the tests make the way cameras, phones,
scanners and operating systems leave them, and a model whose head does not fit the data."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import vgg_utils
from vgg_utils import image_files
from vgg_utils.shapes import ShapesDataset

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small tensors, one thread


def _solid(colour, size=(24, 16), mode="RGB") -> Image.Image:
    """A ``size`` (width, height) image of one colour."""
    return Image.new(mode, size, colour)


def _load(path, **kwargs):
    """load_image_folder, returning the data and every warning it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = vgg_utils.load_image_folder(path, **kwargs)
    return data, [w for w in caught if issubclass(w.category, UserWarning)]


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def messy_folder(tmp_path):
    """Two classes of good photos, plus everything a real folder brings along."""
    root = tmp_path / "photos"
    cats, dogs = root / "cats", root / "dogs"
    cats.mkdir(parents=True)
    dogs.mkdir()
    _solid((200, 30, 30)).save(cats / "IMG_0001.JPG", quality=95)  # upper-case extension
    _solid((190, 40, 40)).save(cats / "scan.PNG")
    _solid((30, 30, 200)).save(dogs / "dog1.jpeg", quality=95)
    _solid((40, 40, 190)).save(dogs / "dog2.Jpg", quality=95)
    # Broken and foreign files: each must be skipped and named.
    good = _jpeg_bytes(_solid((30, 30, 200), (200, 150)))
    (dogs / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (dogs / "notes.jpg").write_text("not an image at all")
    (cats / "README.txt").write_text("my cats")
    # Hidden and system files: silently ignored, never reported.
    (cats / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (cats / "._IMG_0001.JPG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (cats / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / ".ipynb_checkpoints").mkdir()  # Jupyter makes it next to notebooks: not a class
    (cats / ".ipynb_checkpoints").mkdir()
    _solid((0, 255, 0)).save(cats / ".ipynb_checkpoints" / "IMG_0001-checkpoint.jpg")
    return root


def test_unreadable_files_are_skipped_with_one_warning_naming_each(messy_folder):
    data, caught = _load(messy_folder, image_size=16, progress=False)
    assert data.classes == ["cats", "dogs"]  # no ".ipynb_checkpoints" class
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "skipped 3 unreadable file(s)" in message
    for name in ("dogs/truncated.jpg", "dogs/notes.jpg", "cats/README.txt"):
        assert name in message
    assert "truncated" in message and "not an image" in message  # the reason, beside each name
    for hidden in (".DS_Store", "._IMG_0001", "Thumbs.db", "checkpoint"):
        assert hidden not in message
    # What was kept is right: cats red, dogs blue (JPEG: within a few levels).
    means = data.images.float().mean(dim=(2, 3))
    assert (means[:2, 0] > 150).all() and (means[2:, 2] > 150).all()
    assert (means[:, 1] < 60).all()  # the green checkpoint copy was not loaded


def test_a_class_left_without_readable_images_is_an_error(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "broken").mkdir()
    _solid((9, 9, 9)).save(tmp_path / "ok" / "a.png")
    (tmp_path / "broken" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 half a header")
    with pytest.raises(
        ValueError, match=r"no readable image left for class\(es\) \['broken'\].*broken/a.jpg"
    ):
        _load(tmp_path, progress=False)
    (tmp_path / "broken" / "a.jpg").unlink()
    (tmp_path / "broken" / ".hidden.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\['broken'\].*hold no files"):
        _load(tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="has no class folders"):
        _load(tmp_path / "ok", progress=False)


def test_modes_become_rgb_as_a_viewer_shows_them(tmp_path):
    (tmp_path / "x").mkdir()
    _solid(77, mode="L").save(tmp_path / "x" / "gray.png")
    Image.fromarray(np.full((16, 24), 40_000, dtype=np.uint16)).save(
        tmp_path / "x" / "deep.png"
    )  # 16-bit
    _solid((0, 0, 0, 255), mode="CMYK").save(tmp_path / "x" / "cmyk.jpg", quality=95)  # black ink
    rgba = _solid((255, 0, 0, 255), mode="RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 12, 16))  # left half fully transparent (stored as black)
    rgba.save(tmp_path / "x" / "logo.png")
    palette = _solid(3, mode="P")
    palette.putpalette([0, 0, 0] * 3 + [10, 200, 10])
    palette.save(tmp_path / "x" / "palette.gif")
    assert Image.open(tmp_path / "x" / "deep.png").mode == "I;16"  # what a 16-bit PNG opens as
    data, caught = _load(tmp_path, progress=False)
    assert not caught
    images = dict(zip(["cmyk", "deep", "gray", "logo", "palette"], data.images, strict=True))
    assert all(im.shape == (3, 16, 24) and im.dtype == torch.uint8 for im in images.values())
    assert images["gray"].unique().tolist() == [77]  # the same gray in R, G and B
    assert images["deep"].unique().tolist() == [
        round(40_000 / 257)
    ]  # 16 bits scaled, not clipped at 255
    assert images["cmyk"].float().mean() < 20  # black ink stays black
    logo = images["logo"]
    assert (logo[:, :, :12] == 255).all()  # transparent over white, not black
    assert logo[:, :, 12:].float().mean(dim=(1, 2)).tolist() == [255.0, 0.0, 0.0]
    assert images["palette"][:, 0, 0].tolist() == [10, 200, 10]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    """A phone stores a portrait photo as landscape pixels plus an EXIF tag saying how to turn it."""
    stored = _solid((0, 0, 255), (40, 20))  # landscape pixels: red left quarter, blue elsewhere
    stored.paste((255, 0, 0), (0, 0, 10, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    (tmp_path / "phone").mkdir()
    (tmp_path / "phone" / "IMG_1234.JPG").write_bytes(_jpeg_bytes(stored, exif=exif.tobytes()))
    image = _load(tmp_path, progress=False)[0].images[0].float()
    red = image[0] > 128
    # EXIF 1: as stored; 2: mirrored; 3: half a turn (left edge to the right); 4: flipped upside
    # down; 5: transposed (left edge to the top); 6: a quarter turn clockwise (left to the top);
    # 7: transverse (left to the bottom); 8: a quarter turn counter-clockwise (left to the bottom).
    landscape, portrait = (20, 40), (40, 20)
    shape, where = {
        1: (landscape, red[:, :10]), 2: (landscape, red[:, 30:]), 3: (landscape, red[:, 30:]),
        4: (landscape, red[:, :10]), 5: (portrait, red[:10]), 6: (portrait, red[:10]),
        7: (portrait, red[30:]), 8: (portrait, red[30:]),
    }[orientation]  # fmt: skip
    assert tuple(image.shape[1:]) == shape
    assert where.float().mean() > 0.95 and red.float().mean() < 0.3
    assert (
        image_files.image_header_size(tmp_path / "phone" / "IMG_1234.JPG") == shape
    )  # estimate agrees


def test_sizes_and_reasons_read_as_a_person_writes_them(tmp_path):
    fmt = image_files.format_bytes
    assert [fmt(n) for n in (999, 1000, 1500, 999_999, 10**6, 2.5e9, 1e9)] == [
        "999 B", "1.0 kB", "1.5 kB", "1000.0 kB", "1.0 MB", "2.5 GB", "1.0 GB"]  # fmt: skip
    (tmp_path / "k").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    (tmp_path / "k" / "a.png").write_bytes((tmp_path / "a.png").read_bytes()[:3000])  # cut short
    (tmp_path / "k" / "b.txt").write_text("hello")
    _solid((1, 2, 3)).save(tmp_path / "k" / "c.png")
    message = str(_load(tmp_path, progress=False)[1][0].message)
    assert "k/b.txt (not an image Pillow can read)" in message
    assert "k/a.png (OSError: " in message  # Pillow's own reason, e.g. "image file is truncated"
    assert image_files._reason(OSError()) == "OSError"  # no message: the type says enough
    assert image_files._reason(ValueError("first line\nsecond")) == "ValueError: first line"


def test_large_jpegs_are_decoded_at_reduced_size(tmp_path):
    """A 3-megapixel JPEG asked for at 64 px is decoded by libjpeg at 1/8 size (256x192), the
    smallest DCT scale that keeps both sides >= 64; colours and layout survive."""
    photo = _solid((250, 250, 250), (2048, 1536))
    photo.paste((0, 0, 0), (0, 0, 1024, 1536))  # left half black
    path = tmp_path / "big.jpg"
    path.write_bytes(_jpeg_bytes(photo))
    decoded = image_files.read_image(path, min_side=64)
    assert tuple(decoded.shape) == (3, 192, 256)
    assert decoded[:, :, :120].float().mean() < 10 and decoded[:, :, 136:].float().mean() > 240
    assert tuple(image_files.read_image(path).shape) == (3, 1536, 2048)  # no size asked: full size
    # A large PNG (no DCT scaling) is box-reduced, keeping at least twice the target.
    photo.save(tmp_path / "big.png")
    reduced = image_files.read_image(tmp_path / "big.png", min_side=64)
    assert 128 <= min(reduced.shape[1:]) < 256
    (tmp_path / "c" / "k").mkdir(parents=True)
    path.rename(tmp_path / "c" / "k" / "big.jpg")
    square = _load(tmp_path / "c", image_size=64, progress=False)[0].images
    assert square.shape == (1, 3, 64, 64)  # the centre crop: black left half, white right half
    assert square[0, :, :, :28].float().mean() < 10 and square[0, :, :, 36:].float().mean() > 240


def test_memory_estimate_stops_a_folder_that_does_not_fit(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    for i in range(5):
        _solid((i, i, i), (30, 20)).save(tmp_path / "a" / f"{i}.png")
    needed = 5 * 3 * 20 * 30  # N x 3 x H x W bytes as uint8, from the headers
    decoded = []
    monkeypatch.setattr(image_files, "read_image", lambda *a, **k: decoded.append(a) or 1 / 0)
    monkeypatch.setattr(image_files, "available_memory", lambda: needed - 1)
    with pytest.raises(
        MemoryError,
        match=rf"5 images of 20x30 take {needed / 1e3:.1f} kB .* more than the .* available; pass a smaller image_size",
    ):
        _load(tmp_path, progress=False)
    with pytest.raises(MemoryError, match=rf"take {5 * 3 * 224 * 224 / 1e3:.1f} kB"):
        _load(tmp_path, image_size=224, progress=False)
    assert decoded == []  # the error came before any image was decoded
    monkeypatch.undo()
    import psutil

    free = image_files.available_memory()
    assert 0 < free <= psutil.virtual_memory().total


def test_progress_bar_names_the_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "birds").mkdir()
    for i in range(3):
        _solid((i, 0, 0)).save(tmp_path / "birds" / f"{i}.png")
    vgg_utils.load_image_folder(tmp_path, progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(image_files, "PROGRESS_DELAY", 0.0)  # show it even for a fast load
    vgg_utils.load_image_folder(tmp_path)
    err = capsys.readouterr().err
    assert f"loading {tmp_path.name}" in err and "3/3" in err and "100%" in err
    assert re.search(r"[\d?](image/s|s/image)\]", err), err  # counts images, not "it"


def test_a_random_subset_with_an_unreadable_file(messy_folder):
    data, caught = _load(messy_folder, image_size=16, n=7, seed=0, progress=False)
    assert len(data) == 4 and len(caught) == 1  # all 7 files drawn: 3 skipped, 4 kept
    outcomes = set()
    for seed in range(8):  # fewer drawn: whatever is skipped is named, the rest comes back...
        try:
            data, caught = _load(messy_folder, image_size=16, n=3, seed=seed, progress=False)
        except ValueError as err:  # ...unless a class drew only broken files
            assert "no readable image left for class(es) ['dogs']" in str(err)
            outcomes.add("error")
            continue
        skipped = int(str(caught[0].message).split()[1]) if caught else 0
        assert len(data) + skipped == 3
        outcomes.add(skipped)
    assert len(outcomes) >= 2  # the seeds drew different mixes


def test_black_stays_black_and_deep_values_are_scaled_in_every_integer_or_float_mode(tmp_path):
    """16-bit PNGs and 32-bit float TIFFs (microscopes, scientific cameras) hold 0-65535: black
    must stay 0 and mid-gray must become 128, not clip to white."""
    (tmp_path / "x").mkdir()
    deep = np.zeros((16, 24), dtype=np.uint16)
    deep[:, 12:] = 65535
    Image.fromarray(deep).save(tmp_path / "x" / "a_deep.png")
    depth = np.zeros((16, 24), dtype=np.float32)
    depth[:, 12:] = 128 * 257.0
    Image.fromarray(depth, mode="F").save(tmp_path / "x" / "b_float.tif")
    assert Image.open(tmp_path / "x" / "b_float.tif").mode == "F"
    data, caught = _load(tmp_path, progress=False)
    assert not caught
    deep_rgb, float_rgb = data.images
    assert deep_rgb[:, :, :12].unique().tolist() == [0] and deep_rgb[
        :, :, 12:
    ].unique().tolist() == [255]
    assert float_rgb[:, :, :12].unique().tolist() == [0] and float_rgb[
        :, :, 12:
    ].unique().tolist() == [128]


def _associated_alpha_tiff(image: Image.Image) -> bytes:
    """An ``LA`` image saved as a TIFF whose alpha is marked "associated" (premultiplied), as some
    scanners and compositing programs write it; Pillow opens such a file in mode ``La``."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    unassociated = (
        b"\x52\x01\x03\x00\x01\x00\x00\x00\x02\x00"  # ExtraSamples (338) = 2, little-endian
    )
    assert buffer.getvalue().count(unassociated) == 1
    return buffer.getvalue().replace(unassociated, unassociated[:-2] + b"\x01\x00")


def test_transparent_palette_and_premultiplied_pixels_show_over_white(tmp_path):
    (tmp_path / "x").mkdir()
    palette = _solid(1, mode="P")
    palette.putpalette([0, 0, 0] + [10, 200, 10])
    palette.paste(0, (0, 0, 12, 16))  # left half: palette entry 0, black but transparent
    palette.save(tmp_path / "x" / "a_icon.png", transparency=0)
    assert Image.open(tmp_path / "x" / "a_icon.png").info["transparency"] == 0
    gray = _solid((77, 255), mode="LA")
    gray.paste((0, 0), (0, 0, 12, 16))  # left half fully transparent
    (tmp_path / "x" / "b_scan.tif").write_bytes(_associated_alpha_tiff(gray))
    assert Image.open(tmp_path / "x" / "b_scan.tif").mode == "La"
    data, caught = _load(tmp_path, progress=False)
    assert not caught, [str(w.message) for w in caught]
    icon, scan = data.images
    assert (icon[:, :, :12] == 255).all() and (scan[:, :, :12] == 255).all()  # white, not black
    assert icon[:, :, 12:].float().mean(dim=(1, 2)).tolist() == [10.0, 200.0, 10.0]
    assert scan[:, :, 12:].unique().tolist() == [77]


def test_fine_detail_is_smoothed_when_shrinking_not_aliased(tmp_path):
    """A 1-pixel checkerboard shrunk 3x is an even gray (antialiased), not a coarser checkerboard."""
    (tmp_path / "k").mkdir()
    board = (np.indices((48, 48)).sum(axis=0) % 2 * 255).astype(np.uint8)
    Image.fromarray(board).save(tmp_path / "k" / "board.png")
    small = _load(tmp_path, image_size=16, progress=False)[0].images[0].float()
    assert small.shape == (3, 16, 16)
    assert abs(small.mean() - 127.5) < 10 and small.std() < 20


def test_available_memory_without_psutil_reads_proc_meminfo(monkeypatch):
    import io
    import sys
    from pathlib import Path

    monkeypatch.setitem(sys.modules, "psutil", None)  # "import psutil" now raises ImportError
    if Path("/proc/meminfo").is_file():  # Linux: a real reading, in bytes
        free = image_files.available_memory()
        assert isinstance(free, int) and 2**20 < free < 2**50
    meminfo = (
        "MemTotal:        8000000 kB\nMemFree:          500000 kB\nMemAvailable:    3000000 kB\n"
    )
    monkeypatch.setattr(image_files, "open", lambda *a, **k: io.StringIO(meminfo), raising=False)
    assert image_files.available_memory() == 3_000_000 * 1024

    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/meminfo")  # macOS, Windows

    monkeypatch.setattr(image_files, "open", no_proc, raising=False)
    assert image_files.available_memory() is None


def test_a_folder_of_only_unreadable_files(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"no readable image left for class\(es\) \['a', 'b'\]"):
        _load(tmp_path, progress=False)
    files = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg"]
    for size, shape in ((None, (0, 3, 1, 1)), (16, (0, 3, 16, 16))):
        out, skipped = image_files.decode_all(files, tmp_path, size, progress=False)
        assert tuple(out.shape) == shape and out.dtype == torch.uint8  # no image comes back
        assert skipped == {0: "not an image Pillow can read", 1: "not an image Pillow can read"}


def test_the_suggested_image_size_is_one_the_loader_accepts(tmp_path, monkeypatch):
    import ast
    import re

    (tmp_path / "a").mkdir()
    for i in range(2):
        _solid((i, i, i), (30, 20)).save(tmp_path / "a" / f"{i}.png")
    monkeypatch.setattr(image_files, "available_memory", lambda: 2 * 3 * 200 * 200)
    with pytest.raises(MemoryError) as err:
        _load(tmp_path, image_size=224, progress=False)
    suggestion = re.search(r"\(e\.g\. image_size=([^)]+)\)", str(err.value)).group(1)
    assert suggestion == "112"
    data, _ = _load(tmp_path, image_size=ast.literal_eval(suggestion), progress=False)  # it fits
    assert data.images.shape == (2, 3, 112, 112)


def test_images_of_different_sizes_are_named_with_both_sizes(tmp_path):
    (tmp_path / "a").mkdir()
    _solid((1, 1, 1), (30, 20)).save(tmp_path / "a" / "0.png")  # 20 high, 30 wide
    _solid((1, 1, 1), (24, 16)).save(tmp_path / "a" / "1.png")
    with pytest.raises(
        ValueError, match=r"differ in size \(20x30 and 16x24 in a/1\.png\); pass image_size"
    ):
        _load(tmp_path, progress=False)


def test_a_folder_without_class_folders_says_what_it_found(tmp_path):
    (tmp_path / "IMG_1.jpg").write_bytes(b"")
    (tmp_path / "IMG_2.jpg").write_bytes(b"")
    (tmp_path / ".DS_Store").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=r"has no class folders \(found \['IMG_1.jpg', 'IMG_2.jpg'\]\)"
    ):
        image_files.list_image_files(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no class folders \(found nothing\)"):
        image_files.list_image_files(tmp_path / "empty")


# --- the model's head and the data's classes ---------------------------------------------------


@pytest.fixture(scope="module")
def ten_classes():
    return ShapesDataset(64, 32, num_classes=10, dtype=torch.uint8)


def _model(num_classes: int) -> vgg_utils.VGG:
    torch.manual_seed(0)
    return vgg_utils.build_vgg("A", num_classes, width=0.125, head="compact")


@pytest.mark.parametrize("outputs", [5, 1000])
def test_train_says_what_to_do_when_the_head_does_not_fit(ten_classes, outputs):
    model = _model(outputs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError,
        match=rf"model outputs {outputs} class scores but the data has 10 classes"
        r" \(circle, square, triangle, star, \.\.\.\).*num_classes=10.*replace_head\(model, 10\)",
    ):
        vgg_utils.train(model, ten_classes, epochs=1, batch_size=32, device="cpu", progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing trained
    for check in (vgg_utils.evaluate, vgg_utils.confusion_matrix):
        with pytest.raises(
            ValueError, match=rf"{check.__name__}: the model outputs {outputs}.*replace_head"
        ):
            check(model, ten_classes)
    assert vgg_utils.predict(model, ten_classes).shape == (64, outputs)  # scores are still scores


def test_head_check_accepts_what_fits(ten_classes):
    model = _model(10)
    vgg_utils.train(model, ten_classes, epochs=1, batch_size=32, device="cpu", progress=False)
    # A tuple without class names: the classes are only inferred from the labels (here 0-7), so
    # a 10-way model is fine, and a 5-way one is not.
    images, labels = ten_classes.images[:16], ten_classes.labels[:16] % 8
    assert 0 <= vgg_utils.evaluate(model, (images, labels)).accuracy <= 1
    with pytest.raises(ValueError, match="outputs 5 class scores but the data has 8"):
        vgg_utils.evaluate(_model(5), (images, labels))
    four = ShapesDataset(40, 32, num_classes=4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="train_data has 10 classes but test_data has 4"):
        vgg_utils.train(
            model, ten_classes, four, epochs=1, batch_size=32, device="cpu", progress=False
        )


# --- mutation-testing survivors: exact edges of the size and memory rules ---------------------


def test_a_large_png_is_reduced_to_between_two_and_four_times_the_target(tmp_path):
    """Box-reducing keeps the smaller side in [2, 4) x ``min_side``: never so small that the
    antialiased resize loses detail, and never 4x or more (decoding work wasted). 256 px asked
    for at 64 is exactly 4x: it must be halved."""
    for side in (128, 255, 256, 300, 383, 384, 600):
        _solid((9, 9, 9), (side + 10, side)).save(tmp_path / f"{side}.png")
        got = image_files.read_image(tmp_path / f"{side}.png", min_side=64)
        assert 128 <= min(got.shape[1:]) < 256, (side, tuple(got.shape))
        assert got.unique().tolist() == [9]


def test_a_folder_that_exactly_fits_in_memory_is_loaded(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    for i in range(2):
        _solid((i, i, i), (30, 20)).save(tmp_path / "a" / f"{i}.png")
    needed = 2 * 3 * 20 * 30
    monkeypatch.setattr(image_files, "available_memory", lambda: needed)  # just enough
    assert _load(tmp_path, progress=False)[0].images.shape == (2, 3, 20, 30)
    monkeypatch.setattr(image_files, "available_memory", lambda: needed - 1)
    with pytest.raises(MemoryError, match=r"2 images of 20x30 take 3\.6 kB"):
        _load(tmp_path, progress=False)
