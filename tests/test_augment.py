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


def _accelerators() -> list[str]:
    """Devices other than the CPU (comparing the CPU with itself would test nothing)."""
    devices = ["cuda"] if torch.cuda.is_available() else []
    return devices + (["mps"] if torch.backends.mps.is_available() else [])


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


def test_same_result_on_every_device():
    """Random numbers come from a CPU generator, so an accelerator gives the CPU's result."""
    devices = _accelerators()
    if not devices:
        pytest.skip("no CUDA or MPS device here; this compares an accelerator's result with the CPU's")
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=_gen())
    on_cpu = PaperAugment.from_data(images, 32, (32, 48), seed=1)(images)
    for device in devices:
        on_device = PaperAugment.from_data(images, 32, (32, 48), seed=1)(images.to(device))
        assert on_device.device.type == device
        assert torch.allclose(on_device.cpu(), on_cpu, atol=1e-4)


# --- the composition: each step really happens inside PaperAugment.__call__ ------------------------


def _ramps(n: int, size: int = 32) -> torch.Tensor:
    """Images whose red channel rises by 1/size per pixel left to right and whose green channel
    rises down the rows: after rescaling by f, the slopes are 1/(size * f)."""
    ramp = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    image = torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size), torch.full((size, size), 0.5)])
    return image.expand(n, 3, size, size).clone()


def _slopes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the mean absolute step of the red channel along x and of green along y,
    away from the border (where grid_sample's border padding flattens the ramp)."""
    inner = x[:, :, 2:-2, 2:-2]
    return inner[:, 0].diff(dim=-1).abs().mean((1, 2)), inner[:, 1].diff(dim=-2).abs().mean((1, 2))


def test_jittered_crops_differ_in_scale_as_drawn():
    """Scale jittering S in [32, 64] on 32x32 images: each crop is a piece of the image enlarged
    by S/32, so the ramp's slope shrinks by 32/S; the slopes spread over [1/2, 1] x the original."""
    n = 2000
    aug = PaperAugment(32, (32, 64), flip=False, seed=0)
    sx, sy = _slopes(aug(_ramps(n)))
    factor = (1 / 32) / sx  # = S / 32 for each image
    assert torch.allclose(sx, sy, rtol=0.02)  # isotropic: the same S along both axes
    assert factor.min() > 0.98 and factor.max() < 2.02
    assert factor.min() < 1.03 and factor.max() > 1.95  # both ends of the range are drawn
    expected = torch.linspace(1, 2, 33)  # S uniform on the 33 integers 32..64
    assert abs(factor.mean() - expected.mean()) < 0.02 and abs(factor.std() - expected.std()) < 0.02
    # Where the crop starts varies too: the ramp's value at the first pixel differs between crops.
    start = aug(_ramps(n))[:, 0, 16, 0]
    assert start.std() > 0.05
    # A fixed S = 48 enlarges every crop by exactly 1.5.
    sx, _ = _slopes(PaperAugment(32, 48, flip=False)(_ramps(50)))
    assert torch.allclose((1 / 32) / sx, torch.full((50,), 1.5), rtol=0.01)


def test_crops_smaller_than_the_image_come_from_random_places():
    aug = PaperAugment(24, flip=False, seed=0)  # scale None: 24x24 crops of the stored 32x32
    x = aug(_ramps(3000))
    assert x.shape == (3000, 3, 24, 24)
    sx, _ = _slopes(x)
    assert torch.allclose(sx, torch.full_like(sx, 1 / 32), rtol=0.01)  # no rescaling
    left = torch.round(x[:, 0, 0, 0] * 32 - 0.5).long()  # the crop's left edge, from the ramp
    assert sorted(left.unique().tolist()) == list(range(9))  # 0..8: every position reached


def test_paper_augment_shifts_colours_along_the_pca_axes_by_the_stated_amount():
    eigvals = torch.tensor([0.3, 0.1, 0.02])
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=_gen(5)))
    images = torch.rand(8000, 3, 4, 4, generator=_gen(6))
    aug = PaperAugment(4, flip=False, color_pca=(eigvals, q), color_std=0.2, seed=1)
    shift = aug(images) - images
    per_image = shift[:, :, 0, 0]
    assert torch.allclose(shift, per_image[:, :, None, None].expand_as(shift), atol=1e-6)  # one shift per image
    along = per_image @ q  # coordinates along p_1, p_2, p_3
    assert torch.allclose(along.std(0), 0.2 * eigvals, rtol=0.05)
    assert along.mean(0).abs().max() < 5 * 0.2 * eigvals[0] / math.sqrt(8000)
    assert torch.equal(PaperAugment(4, flip=False, seed=1)(images), images)  # off without color_pca


def test_paper_augment_output_has_zero_mean_after_mean_subtraction():
    images = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, generator=_gen(2))
    images[:, 0] //= 2  # a red channel darker than the others, so the means differ
    out = PaperAugment.from_data(images, 32, (32, 48), seed=0)(images)
    assert out.mean((0, 2, 3)).abs().max() < 0.01
    kept = PaperAugment.from_data(images, 32, (32, 48), subtract_mean=False, seed=0)(images)
    assert torch.allclose(kept.mean((0, 2, 3)), mean_rgb(images), atol=0.01)


def test_flips_happen_inside_paper_augment():
    x = PaperAugment(32, flip=True, seed=0)(_ramps(2000))
    mirrored = x[:, 0, 0, 0] > x[:, 0, 0, -1]  # the red ramp falls instead of rising
    assert abs(mirrored.float().mean() - 0.5) < 5 * 0.5 / math.sqrt(2000)
    assert not PaperAugment(32, flip=False)(_ramps(10))[:, 0, 0, 0].gt(0.5).any()


# --- found by mutation testing (mutation/README.md) --------------------------------------------------


def test_a_crop_must_fit_on_both_sides():
    # A landscape image rescaled to S = 24: 24 high (too low for a 32 crop) but 36 wide (fits).
    with pytest.raises(ValueError, match="at least the crop size"):
        sample_crop_offsets(torch.tensor([24]), (32, 48), 32)
    with pytest.raises(ValueError, match="at least the crop size"):
        sample_crop_offsets(torch.tensor([24]), (48, 32), 32)


def test_from_data_defaults_and_shorthand():
    images = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8, generator=_gen())
    aug = PaperAugment.from_data(images)  # crop = the stored size, colour and mean measured
    assert aug.crop_size == 20 and aug.color_pca is not None and aug.mean is not None
    from vgg_utils.augment import train_transform

    plain = train_transform(images, 16, color=False, subtract_mean=False, flip=False)
    assert (plain.crop_size, plain.color_pca, plain.mean, plain.flip) == (16, None, None, False)


def test_repr_says_what_is_on():
    assert repr(PaperAugment(32)) == "PaperAugment(crop_size=32, scale=None, flip=True, color_pca=off, mean=off)"
    on = PaperAugment(32, (32, 48), flip=False, color_pca=(torch.ones(3), torch.eye(3)), mean=[0.5, 0.25, 0.125])
    assert repr(on) == "PaperAugment(crop_size=32, scale=(32, 48), flip=False, color_pca=on, mean=[0.5, 0.25, 0.125])"


def test_state_dict_restores_the_measured_statistics():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=_gen())
    measured = PaperAugment.from_data(images, seed=3)
    blank = PaperAugment(8, seed=9)
    blank.load_state_dict(measured.state_dict())
    assert torch.equal(blank.mean, measured.mean)
    assert all(torch.equal(a, b) for a, b in zip(blank.color_pca, measured.color_pca, strict=True))
    assert torch.equal(blank(images), measured(images))  # and the generator's state


def test_test_time_rescaling_is_antialiased():
    """Shrinking 32 -> 8 averages about 4 x 4 pixels of noise (std / 4 or so); bilinear sampling
    without antialiasing averages only 2 x 2 (std / 2) and aliases."""
    noise = torch.rand(4, 3, 32, 32, generator=_gen())
    small = PaperAugment(8, test_scale=8).test(noise)
    assert small.shape == (4, 3, 8, 8)
    assert small.std() < 0.4 * noise.std()
    assert abs(small.mean() - noise.mean()) < 0.01
