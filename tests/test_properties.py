"""Property-based tests (Hypothesis) where the inputs form a space: every configuration, width,
head and input size of build_vgg; receptive fields of random small nets; the augmentation's
invariants. Each property is checked against an independent formula, not the implementation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from vgg_utils import (
    CONFIGS,
    build_vgg,
    count_params,
    empirical_receptive_field,
    layer_table,
    linearise,
    parse_layer,
    receptive_field_table,
)
from vgg_utils.augment import PaperAugment, rescale_crop, sample_crop_offsets, sample_scales

# No example database in the repository; no deadline on a busy 2-core runner.
FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

PAPER_CONFIGS = ["A", "A-LRN", "B", "C", "D", "E"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small tensors, one thread


def _expected_counts(config, num_classes, width, head, fc_width, batch_norm, size, input_size):
    """Parameters and MACs of a VGG written out from Table 1 and the layer formulas."""
    params = macs = 0
    channels, side = 3, size
    for entry in CONFIGS[config]:
        spec = parse_layer(entry)
        if spec.kind == "conv":
            out = max(1, int(round(spec.channels * width)))
            params += channels * out * spec.kernel**2 + out + (2 * out if batch_norm else 0)
            macs += out * side * side * channels * spec.kernel**2
            channels = out
        elif spec.kind == "pool":
            side //= 2
    if head == "compact":
        return params + channels * num_classes + num_classes, macs + channels * num_classes, side
    fc6_in = channels * (7 * 7 if input_size is None else (input_size // 32) ** 2)
    for fan_in, fan_out in ((fc6_in, fc_width), (fc_width, fc_width), (fc_width, num_classes)):
        params += fan_in * fan_out + fan_out
        macs += fan_in * fan_out
    return params, macs, side


@FEW
@given(
    config=st.sampled_from(PAPER_CONFIGS),
    num_classes=st.integers(1, 50),
    width=st.sampled_from([0.03125, 0.0625, 0.1, 0.25, 0.5]),
    head=st.sampled_from(["paper", "compact"]),
    fc_width=st.integers(1, 64),
    batch_norm=st.booleans(),
    blocks=st.integers(1, 4),  # input side = 32 * blocks
    sized=st.booleans(),  # paper head: sized for the crop (input_size) or torchvision's 7x7 pool
)
def test_build_vgg_counts_shapes_and_macs_follow_table_1(
    config, num_classes, width, head, fc_width, batch_norm, blocks, sized
):
    size = 32 * blocks
    input_size = size if head == "paper" and sized else None
    with torch.device("meta"):
        model = build_vgg(config, num_classes, width=width, head=head, fc_width=fc_width,
                          batch_norm=batch_norm, input_size=input_size)  # fmt: skip
    params, macs, side = _expected_counts(config, num_classes, width, head, fc_width, batch_norm, size, input_size)
    assert count_params(model) == params
    table = layer_table(model, (3, size, size))
    assert table["params"].sum() == params
    # The adaptive pool of torchvision's head costs no MACs in the flop counter but resamples.
    assert table["macs"].sum() == macs
    assert table["output_shape"].iloc[-1] == (num_classes,)
    assert table.set_index("layer").loc["pool5", "output_shape"][1:] == (side, side)
    convs = table[table["type"] == "Conv2d"]
    assert len(convs) == sum(e.startswith("conv") for e in CONFIGS[config])
    assert (convs["layer"].str.match(r"conv\d_\d")).all()


def _random_net(draw_layers) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 2
    for kind, k, s in draw_layers:
        if kind == "conv":
            layers += [nn.Conv2d(channels, 3, k, stride=s, padding=k // 2), nn.ReLU()]
            channels = 3
        elif kind == "max":
            layers.append(nn.MaxPool2d(k, s))
        else:
            layers.append(nn.AvgPool2d(k, s))
    return nn.Sequential(*layers)


layer_strategy = st.tuples(st.sampled_from(["conv", "conv", "max", "avg"]), st.sampled_from([1, 2, 3, 5]), st.sampled_from([1, 2]))


@settings(max_examples=15, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(layer_strategy, min_size=1, max_size=5), st.data())
def test_receptive_field_table_matches_the_gradient_of_random_small_nets(spec, data):
    spec = [(kind, k if kind != "conv" or k % 2 else k + 1, s) for kind, k, s in spec]  # odd convs
    # A kernel narrower than its stride skips pixels: the field has holes, and its box clipped
    # to the image ends at the last pixel seen, not at the image edge. VGG never does that.
    assume(all(k >= s for _, k, s in spec))
    torch.manual_seed(0)
    net = _random_net(spec)
    size = 40
    try:
        out = net(torch.zeros(1, 2, size, size))
    except RuntimeError:  # the map shrank to nothing: not a net anyone builds
        assume(False)
    table = receptive_field_table(net, (2, size, size))
    assert table["output_size"].iloc[-1] == tuple(out.shape[-2:])
    rf = 1
    jump = 1
    for _, k, s in spec:  # the recurrence, written out: rf grows by (k - 1) * jump
        rf += (k - 1) * jump
        jump *= s
    assert table["rf"].iloc[-1] == rf and table["jump"].iloc[-1] == jump
    oh, ow = out.shape[-2:]
    unit = (data.draw(st.integers(0, oh - 1)), data.draw(st.integers(0, ow - 1)))
    erf = empirical_receptive_field(linearise(net, nonnegative=True), len(table) - 1, (2, size, size), unit)
    assert erf.matches_theory, (erf.rows, erf.theory_rows, erf.cols, erf.theory_cols)
    # Where the unit's unclipped field (centre +- (rf - 1) / 2) lies inside the image, the box is
    # exactly rf pixels wide; nearer the border it is cut, never wider.
    last = table.iloc[-1]
    for u, (lo, hi), side in zip(unit, (erf.rows, erf.cols), (erf.height, erf.width), strict=True):
        centre = last["start"] + u * last["jump"]
        if centre - (rf - 1) / 2 >= 0 and centre + (rf - 1) / 2 <= size - 1:
            assert side == rf and (lo, hi) == (centre - (rf - 1) / 2, centre + (rf - 1) / 2)
        assert side <= rf


@FEW
@given(
    n=st.integers(1, 6),
    height=st.integers(8, 40),
    width=st.integers(8, 40),
    crop=st.integers(4, 24),
    extra=st.tuples(st.integers(0, 16), st.integers(0, 16)),
    seed=st.integers(0, 2**16),
)
def test_augmentation_invariants(n, height, width, crop, extra, seed):
    crop = min(crop, height, width)
    scale = (crop + min(extra), crop + max(extra))  # S >= the crop, fixed or jittered
    images = torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))
    aug = PaperAugment(crop, scale, flip=True, seed=seed)
    out = aug(images)
    assert out.shape == (n, 3, crop, crop) and out.dtype == torch.float32
    # Bilinear resampling and flips only mix pixels: the values stay within the image's range.
    assert out.min() >= images.min() - 1e-5 and out.max() <= images.max() + 1e-5
    assert torch.equal(PaperAugment(crop, scale, flip=True, seed=seed)(images), out)  # seeded
    # Offsets always leave the crop inside the rescaled image.
    scales = sample_scales(200, scale, torch.Generator().manual_seed(seed))
    oy, ox = sample_crop_offsets(scales, (height, width), crop, torch.Generator().manual_seed(seed))
    factor = scales.double() / min(height, width)
    assert (oy >= 0).all() and (ox >= 0).all()
    assert (oy + crop <= (height * factor).floor()).all() and (ox + crop <= (width * factor).floor()).all()
    # A constant image stays constant under any rescale and crop.
    flat = torch.full((n, 3, height, width), 0.25)
    assert torch.allclose(rescale_crop(flat, crop, scales[:n], oy[:n], ox[:n]), torch.full((n, 3, crop, crop), 0.25))
    # Mean subtraction moves every pixel by exactly the mean, nothing else.
    mean = torch.tensor([0.1, 0.2, 0.3])
    centred = PaperAugment(crop, scale, flip=True, mean=mean, seed=seed)(images)
    assert torch.allclose(centred + mean[:, None, None], out, atol=1e-6)
    assert math.isfinite(out.sum().item())


def test_the_theoretical_box_of_a_border_unit_stops_where_the_maps_stop():
    """The counterexample Hypothesis once found (issue 14). pool1 (3x3, stride 2, floor mode) has no
    window over conv1's last column, so input columns 38-39 reach nothing; the right-border unit of
    the last conv hangs over pool1's zero padding and sees columns 27-37. The box clipped only at
    the image said 27-39: the theory's box, not the gradient, was wrong (max-pooling is already
    averaged by linearise, so no argmax hides anything)."""
    torch.manual_seed(0)
    net = _random_net([("conv", 3, 2), ("max", 3, 2), ("conv", 3, 2)])
    erf = empirical_receptive_field(linearise(net, nonnegative=True), -1, (2, 40, 40), (0, 4))
    assert erf.cols == erf.theory_cols == (27, 37)
    assert erf.rows == erf.theory_rows == (0, 9)
    assert erf.rf == 15 and erf.width < erf.rf  # cut by the border, never wider
