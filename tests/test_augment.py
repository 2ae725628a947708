"""The paper's augmentation: each step's statistics, checked against its definition or a library."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vgg_utils.augment import (
    PaperAugment,
    mean_rgb,
    pca_color_shift,
    random_flip,
    rescale_crop,
    rgb_pca,
    sample_crop_offsets,
    sample_scales,
    subtract_mean,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def test_jittered_scales_are_uniform_integers_in_range():
    n, lo, hi = 33_000, 32, 64
    scales = sample_scales(n, (lo, hi), _gen())
    assert scales.dtype == torch.int64 and scales.min() == lo and scales.max() == hi
    counts = torch.bincount(scales - lo, minlength=hi - lo + 1).double()
    expected = n / (hi - lo + 1)  # 1000 per value
    assert (counts - expected).abs().max() < 5 * math.sqrt(expected)
    assert torch.equal(sample_scales(5, 48), torch.full((5,), 48))  # single-scale training


def test_crop_offsets_cover_every_allowed_position():
    # S = 48 for a 32x32 image: the rescaled image is 48x48, so a 32 crop starts at 0..16.
    scales = torch.full((17_000,), 48)
    oy, ox = sample_crop_offsets(scales, (32, 32), 32, _gen())
    for offsets in (oy, ox):
        counts = torch.bincount(offsets, minlength=17).double()
        assert len(counts) == 17 and counts.min() > 0  # 0 and 16 both reached, nothing beyond
        assert (counts - 1000).abs().max() < 5 * math.sqrt(1000)
    assert abs(torch.corrcoef(torch.stack([oy.double(), ox.double()]))[0, 1]) < 0.05  # independent


def test_crop_offsets_respect_each_images_own_scale_and_aspect():
    scales = sample_scales(5000, (32, 64), _gen(1))
    oy, ox = sample_crop_offsets(scales, (32, 48), 32, _gen(2))  # landscape: width is 1.5x
    assert (oy >= 0).all() and (ox >= 0).all()
    assert (oy <= scales - 32).all()
    assert (ox <= (scales * 1.5).floor().long() - 32).all()
    assert (ox == (scales * 1.5).floor().long() - 32).any()  # the far edge is reachable
    with pytest.raises(ValueError, match="at least the crop size"):
        sample_crop_offsets(torch.tensor([24]), (32, 32), 32)


@pytest.mark.parametrize(("size", "scale"), [((32, 32), 48), ((32, 32), 64), ((24, 36), 40)])
def test_rescale_crop_equals_interpolate_then_slice(size, scale):
    images = torch.rand(3, 3, *size, generator=_gen())
    h, w = size
    new = (scale * h // min(h, w), scale * w // min(h, w))
    resized = F.interpolate(images, size=new, mode="bilinear", align_corners=False)
    oy, ox = torch.tensor([0, 3, new[0] - 20]), torch.tensor([new[1] - 20, 5, 0])
    out = rescale_crop(images, 20, torch.full((3,), scale), oy, ox)
    for i in range(3):
        expected = resized[i, :, oy[i] : oy[i] + 20, ox[i] : ox[i] + 20]
        assert torch.allclose(out[i], expected, atol=1e-5)


def test_rescale_crop_at_the_stored_size_is_the_identity():
    images = torch.rand(4, 3, 32, 32, generator=_gen())
    out = rescale_crop(images, 32, torch.full((4,), 32), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    assert torch.allclose(out, images, atol=1e-6)


def test_flip_rate_is_one_half_and_flips_are_exact_mirrors():
    n = 4000
    images = torch.rand(n, 3, 4, 5, generator=_gen())  # no image equals its mirror
    out = random_flip(images, 0.5, _gen(1))
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert (flipped ^ kept).all()  # each output is the image or its mirror, nothing else
    assert abs(flipped.sum().item() - n / 2) < 5 * math.sqrt(n / 4)  # binomial, 5 sigma
    assert torch.equal(random_flip(images, 0.0), images)
    assert torch.equal(random_flip(images, 1.0), images.flip(-1))
    with pytest.raises(ValueError, match="flip probability"):
        random_flip(images, 1.5)


def test_rgb_pca_matches_numpy_eigendecomposition():
    mix = torch.tensor([[0.20, 0.05, 0.00], [0.10, 0.15, 0.02], [0.05, 0.02, 0.08]])
    pixels = (torch.randn(3, 200 * 64, generator=_gen()).T @ mix.T + 0.5).T  # correlated channels
    images = pixels.reshape(3, 200, 8, 8).permute(1, 0, 2, 3)
    eigvals, eigvecs = rgb_pca(images)
    cov = np.cov(pixels.double().numpy())
    ref_vals, ref_vecs = np.linalg.eigh(cov)
    assert np.allclose(eigvals.numpy(), ref_vals[::-1], rtol=1e-4)
    assert (eigvals[:-1] >= eigvals[1:]).all()  # descending: p_1 is the main component
    assert np.allclose(np.abs(eigvecs.numpy().T @ ref_vecs[:, ::-1]), np.eye(3), atol=1e-4)
    rebuilt = eigvecs @ torch.diag(eigvals) @ eigvecs.T
    assert np.allclose(rebuilt.numpy(), cov, atol=1e-6)


def test_pca_colour_shift_has_the_covariance_of_the_eigendecomposition():
    eigvals = torch.tensor([0.3, 0.1, 0.02])
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=_gen()))
    n, std = 40_000, 0.1
    images = torch.zeros(n, 3, 2, 2)
    out = pca_color_shift(images, eigvals, q, std=std, generator=_gen(1))
    shift = out[:, :, 0, 0]
    assert torch.equal(out, shift[:, :, None, None].expand_as(out))  # one shift per image
    expected = q @ torch.diag((std * eigvals) ** 2) @ q.T  # Cov(sum a_i l_i p_i), a_i ~ N(0, std)
    measured = torch.cov(shift.T.double()).float()
    assert torch.allclose(measured, expected, atol=0.03 * expected.abs().max())
    assert shift.mean(0).abs().max() < 5 * std * eigvals[0] / math.sqrt(n)
    # Along each eigenvector the shift's standard deviation is std * lambda_i.
    along = shift @ q
    assert torch.allclose(along.std(0), std * eigvals, rtol=0.03)


def test_mean_subtraction_leaves_zero_mean():
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=_gen())
    mean = mean_rgb(images)
    assert torch.allclose(mean, images.double().mean((0, 2, 3)).float() / 255, atol=1e-6)
    centred = subtract_mean(images.float() / 255, mean)
    assert centred.mean((0, 2, 3)).abs().max() < 1e-6


def test_paper_augment_composes_the_steps():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=_gen())
    aug = PaperAugment.from_data(images, 32, (32, 64), seed=3)
    out = aug(images)
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(aug.mean, mean_rgb(images))
    assert torch.equal(PaperAugment.from_data(images, 32, (32, 64), seed=3)(images), out)  # seeded
    assert torch.allclose(aug.test(images).mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    # uint8 and float inputs give the same result; the state dict replays the generator.
    state = aug.state_dict()
    first = aug(images)
    aug.load_state_dict(state)
    assert torch.allclose(aug(images.float() / 255), first, atol=1e-6)
    # Turning everything off leaves the images as floats.
    plain = PaperAugment(32, flip=False)
    assert torch.equal(plain(images), images.float() / 255)
    assert "crop_size=32" in repr(aug)


def test_paper_augment_test_scale_rescales_without_cropping():
    aug = PaperAugment(32, (32, 64), test_scale=48)
    assert aug.test(torch.rand(2, 3, 32, 32)).shape == (2, 3, 48, 48)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"crop_size": 0}, "crop_size"),
        ({"crop_size": 32, "scale": (64, 32)}, "S_min <= S_max"),
        ({"crop_size": 32, "scale": 24}, "smaller than the crop"),
        ({"crop_size": 32, "mean": [0.5, 0.5]}, "mean must be 3 numbers"),
        ({"crop_size": 32, "color_pca": (torch.ones(2), torch.eye(2))}, "color_pca"),
    ],
)
def test_paper_augment_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PaperAugment(**kwargs)


@pytest.mark.parametrize("device", _devices())
def test_same_result_on_every_device(device):
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=_gen())
    on_cpu = PaperAugment.from_data(images, 32, (32, 48), seed=1)(images)
    on_device = PaperAugment.from_data(images, 32, (32, 48), seed=1)(images.to(device))
    assert on_device.device.type == device
    assert torch.allclose(on_device.cpu(), on_cpu, atol=1e-4)
