"""Receptive fields (notebook 02): the recurrence, its empirical check, ERFs and kernel composition."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vgg_utils import (
    CONFIGS,
    build_vgg,
    compose_kernels,
    effective_receptive_fields,
    empirical_receptive_field,
    layer_table,
    linearise,
    parse_layer,
    receptive_field_table,
)

PAPER_CONFIGS = ("A", "A-LRN", "B", "C", "D", "E")


def closed_form(config: str) -> tuple[int, int]:
    """rf of the last conv and of pool5, written independently of the recurrence.

    In block b (1-based) the jump is 2**(b-1): a 3x3 conv adds 2 * 2**(b-1) = 2**b pixels, a 1x1
    conv nothing, and each of the first four 2x2 pools adds 2**(b-1) (in all 1 + 2 + 4 + 8 = 15).
    """
    block, grow = 1, 0
    for entry in CONFIGS[config]:
        spec = parse_layer(entry)
        if spec.kind == "conv":
            grow += (spec.kernel - 1) * 2 ** (block - 1)
        elif spec.kind == "pool":
            block += 1
    last_conv = 1 + grow + 15
    return last_conv, last_conv + 16


def rows(table, kind: str):
    return table[table["type"] == kind]


def test_vgg16_numbers() -> None:
    t = receptive_field_table("D").set_index("layer")
    assert t.loc["conv1_1", "rf"] == 3
    assert t.loc["conv1_2", "rf"] == 5
    assert (t.loc["conv5_3", "rf"], t.loc["conv5_3", "jump"]) == (196, 16)
    assert (t.loc["pool5", "rf"], t.loc["pool5", "jump"]) == (212, 32)
    assert t.loc["pool5", "start"] == 15.5  # centre of the first pool5 unit, in input pixels
    assert t.loc["pool5", "output_size"] == (7, 7)
    # A model and its features give the same numbers (the table stops at pool5 either way).
    model = build_vgg("D", width=0.0625)
    assert receptive_field_table(model)["rf"].tolist() == receptive_field_table("D")["rf"].tolist()
    features_table = receptive_field_table(model.features)
    assert features_table["rf"].tolist() == receptive_field_table("D")["rf"].tolist()
    assert features_table["layer"].tolist() == receptive_field_table("D")["layer"].tolist()


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_last_conv_and_pool5(config: str) -> None:
    table = receptive_field_table(config)
    expected_conv, expected_pool = closed_form(config)
    assert rows(table, "Conv2d")["rf"].iloc[-1] == expected_conv
    assert table["layer"].iloc[-1] == "pool5"
    assert table["rf"].iloc[-1] == expected_pool
    assert table["jump"].iloc[-1] == 32


def test_closed_form_values() -> None:
    # The closed form itself, pinned to hand-worked numbers (so a bug in it cannot hide one above).
    assert {c: closed_form(c) for c in PAPER_CONFIGS} == {
        "A": (134, 150),
        "A-LRN": (134, 150),
        "B": (140, 156),
        "C": (140, 156),
        "D": (196, 212),
        "E": (252, 268),
    }


def test_pointwise_layers_keep_rf() -> None:
    c = receptive_field_table("C")
    conv = rows(c, "Conv2d")
    one_by_one = conv[conv["kernel"] == 1]
    assert one_by_one["layer"].tolist() == ["conv3_3", "conv4_3", "conv5_3"]
    for idx in one_by_one.index:
        assert c.loc[idx, "rf"] == c.loc[idx - 2, "rf"]  # the 3x3 conv two rows above (conv, ReLU)
        assert c.loc[idx, "jump"] == c.loc[idx - 2, "jump"]
    lrn = receptive_field_table("A-LRN").set_index("layer")
    assert lrn.loc["lrn1", "rf"] == lrn.loc["conv1_1", "rf"] == 3
    plain = receptive_field_table("D")
    bn = receptive_field_table(build_vgg("D", batch_norm=True, width=0.0625))
    keep = ["layer", "rf", "jump", "start"]
    bn_rows = bn[bn["type"].isin(["Conv2d", "MaxPool2d"])][keep].reset_index(drop=True)
    plain_rows = plain[plain["type"].isin(["Conv2d", "MaxPool2d"])][keep].reset_index(drop=True)
    assert bn_rows.equals(plain_rows)
    assert (
        bn[bn["type"] == "BatchNorm2d"]["rf"].to_numpy() == rows(bn, "Conv2d")["rf"].to_numpy()
    ).all()


def test_output_sizes_match_pytorch() -> None:
    for size in ((3, 224, 224), (3, 100, 150)):
        ours = receptive_field_table("E", size)
        torch_table = layer_table("E", size)
        torch_sizes = dict(zip(torch_table["module"], torch_table["output_shape"], strict=True))
        for module, out in zip(ours["module"], ours["output_size"], strict=True):
            assert torch_sizes[module][1:] == out


def test_empirical_equals_theory_on_linearised_vgg16() -> None:
    torch.manual_seed(0)
    lin = linearise(build_vgg("D", width=0.0625))
    assert not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in lin.modules())
    table = receptive_field_table(lin).set_index("layer")
    for layer in (
        "conv1_1",
        "conv1_2",
        "pool1",
        "conv2_2",
        "conv3_3",
        "pool3",
        "conv4_3",
        "conv5_3",
        "pool5",
    ):
        e = empirical_receptive_field(lin, layer)
        assert e.matches_theory, (layer, e.rows, e.theory_rows)
        assert e.height == e.width == table.loc[layer, "rf"], layer  # centre unit: not clipped
    # Off-centre units, including a corner one whose field is cut by the image border.
    e = empirical_receptive_field(lin, "conv4_1", unit=(10, 20))
    assert e.matches_theory and e.height == e.width == 60
    corner = empirical_receptive_field(lin, "conv3_2", unit=(0, 0))
    assert corner.matches_theory and corner.rows == corner.cols == (0, 17)  # 1.5 + 15.5
    # Non-negative weights: no cancellation possible, same box.
    pos = linearise(build_vgg("D", width=0.0625), nonnegative=True)
    assert empirical_receptive_field(pos, "conv5_1").height == 132


def test_empirical_rf_other_configs() -> None:
    torch.manual_seed(1)
    e_net = linearise(build_vgg("E", width=0.03125))
    e = empirical_receptive_field(e_net, "conv5_4", input_size=(3, 288, 288))
    assert e.matches_theory and e.height == closed_form("E")[0] == 252
    c_net = linearise(build_vgg("C", width=0.0625))
    assert empirical_receptive_field(c_net, "conv3_3", input_size=(3, 64, 64)).height == 32
    assert empirical_receptive_field(c_net, "conv3_2", input_size=(3, 64, 64)).height == 32


def test_empirical_on_a_strided_padded_net() -> None:
    # Strides, odd pool windows and padding that VGG lacks: start and jump must be right too.
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 5, stride=2, padding=2),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Conv2d(3, 4, 3, padding=0),
        nn.Conv2d(4, 2, 4, stride=3, padding=1),
    )
    table = receptive_field_table(net, (2, 61, 61))
    assert table["rf"].tolist() == [5, 9, 17, 29]
    assert table["jump"].tolist() == [2, 4, 4, 12]
    for layer in range(4):
        size = table["output_size"][layer][0]
        for unit in ((0, 0), (size // 2, size - 1), (size - 1, 1)):
            e = empirical_receptive_field(net, layer, (2, 61, 61), unit=unit)
            assert e.matches_theory, (layer, unit, e.rows, e.theory_rows, e.cols, e.theory_cols)


def test_real_vgg_gradient_stays_inside_theory() -> None:
    torch.manual_seed(3)
    e = empirical_receptive_field(build_vgg("A", width=0.0625), "conv3_2", input_size=(3, 64, 64))
    assert e.theory_rows[0] <= e.rows[0] <= e.rows[1] <= e.theory_rows[1]
    assert e.theory_cols[0] <= e.cols[0] <= e.cols[1] <= e.theory_cols[1]


@pytest.mark.parametrize(
    ("shape1", "shape2"),
    [((4, 3, 3, 3), (5, 4, 3, 3)), ((6, 2, 3, 1), (3, 6, 1, 3)), ((2, 2, 3, 3), (2, 2, 3, 3))],
)
def test_compose_kernels_matches_two_convs(shape1, shape2) -> None:
    g = torch.Generator().manual_seed(4)
    k1, k2 = torch.randn(shape1, generator=g), torch.randn(shape2, generator=g)
    x = torch.randn(2, shape1[1], 17, 19, generator=g)
    twice = F.conv2d(F.conv2d(x, k1), k2)
    once = F.conv2d(x, compose_kernels(k1, k2))
    k = compose_kernels(k1, k2)
    assert k.shape == (shape2[0], shape1[1], shape1[2] + shape2[2] - 1, shape1[3] + shape2[3] - 1)
    assert ((once - twice).norm() / twice.norm()).item() < 1e-5
    # With zero padding the identity still holds away from the outer ring of pixels.
    padded = F.conv2d(F.conv2d(x, k1, padding="same"), k2, padding="same")
    if shape1[-2:] == shape2[-2:] == (3, 3):
        single = F.conv2d(x, k, padding=2)
        inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
        assert torch.allclose(single[inner], padded[inner], rtol=1e-4, atol=1e-4)
        assert not torch.allclose(single, padded, rtol=1e-4, atol=1e-4)


def test_compose_kernels_single_channel_and_errors() -> None:
    a, b = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    k = compose_kernels(a, b)
    assert k.shape == (5, 5)
    # Hand-written full convolution: K[s, t] = sum_{p+u=s, q+v=t} b[p, q] a[u, v].
    ref = torch.zeros(5, 5, dtype=torch.float64)
    for p in range(3):
        for q in range(3):
            ref[p : p + 3, q : q + 3] += b[p, q] * a
    assert torch.allclose(k, ref)
    col, row = torch.randn(3, 1), torch.randn(1, 3)
    assert torch.linalg.matrix_rank(compose_kernels(col, row)) == 1  # 3x1 then 1x3: separable
    with pytest.raises(ValueError, match="input channels"):
        compose_kernels(torch.randn(4, 3, 3, 3), torch.randn(5, 2, 3, 3))
    with pytest.raises(ValueError, match="shaped"):
        compose_kernels(torch.randn(3, 3), torch.randn(1, 1, 3, 3))


def test_unsupported_modules_are_refused() -> None:
    dilated = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, dilation=2))
    with pytest.raises(ValueError, match=r"2 \(Conv2d.*dilat.*Supported: Conv2d"):
        receptive_field_table(dilated)
    with pytest.raises(TypeError, match=r"1 \(Upsample\): unknown module type. Supported"):
        receptive_field_table(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Upsample(scale_factor=2)))
    with pytest.raises(TypeError, match="global"):
        receptive_field_table(nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1)))
    with pytest.raises(ValueError, match="not square"):
        receptive_field_table(nn.Sequential(nn.Conv2d(3, 8, (3, 1))))
    with pytest.raises(TypeError, match="VGG model"):
        receptive_field_table(nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match="too small"):
        receptive_field_table("D", (3, 16, 16))
    with pytest.raises(ValueError, match="unknown layer 'conv6_1'"):
        empirical_receptive_field(nn.Sequential(nn.Conv2d(3, 4, 3)), "conv6_1", (3, 9, 9))


def test_erf_of_a_linear_box_stack_is_binomial() -> None:
    # n all-ones 3x3 convs: the gradient map is the n-fold convolution of a box, a discrete
    # Gaussian with sigma = sqrt(2n / 3) (variance of a uniform step in {-1, 0, 1} is 2/3).
    n = 6
    convs = [nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(n)]
    for conv in convs:
        nn.init.ones_(conv.weight)
    net = nn.Sequential(*convs)
    layers = [f"conv1_{i}" for i in (n, 2, 1)]
    erfs = effective_receptive_fields(net, layers, (1, 31, 31), n_samples=2, batch_size=1)
    assert [e.layer for e in erfs] == layers
    for e, depth in zip(erfs, (n, 2, 1), strict=True):
        assert math.isclose(float(e.map.sum()), 1.0, rel_tol=1e-5)
        assert math.isclose(e.sigma, math.sqrt(2 * depth / 3), rel_tol=1e-4)
        assert e.rf == 2 * depth + 1 and e.size_at(1.0) == e.rf and not e.clipped
    one_d = torch.tensor([1.0])
    for _ in range(n):
        one_d = torch.nn.functional.conv1d(
            one_d.view(1, 1, -1), torch.ones(1, 1, 3), padding=2
        ).flatten()
    expected = torch.outer(one_d, one_d) / one_d.sum() ** 2
    assert torch.allclose(erfs[0].map[15 - n : 16 + n, 15 - n : 16 + n], expected, atol=1e-6)
    assert erfs[0].size_at(0.5) < erfs[0].rf


def test_erf_of_vgg_is_smaller_than_rf() -> None:
    torch.manual_seed(5)
    erfs = effective_receptive_fields(
        build_vgg("B", width=0.0625), ["conv3_2", "conv4_2"], (3, 96, 96), n_samples=2, batch_size=2
    )
    for e in erfs:
        assert not e.clipped
        assert e.sigma < e.rf / 4
        assert e.size_at(0.5) < e.size <= e.rf
    # Inputs passed explicitly decide the size (the default input_size is 224).
    given = effective_receptive_fields(
        build_vgg("B", width=0.0625), ["conv3_2"], inputs=torch.randn(2, 3, 96, 96)
    )
    assert given[0].map.shape == (96, 96) and given[0].unit == (11, 11)


def test_gradient_maps_show_input_coordinates_of_a_zoomed_map() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vgg_utils import plot_gradient_maps

    grad = torch.zeros(224, 224)
    grad[90:130, 90:130] = 1.0
    try:
        fig = plot_gradient_maps(
            {"zoom": grad[80:140, 80:140]}, {"zoom": ((90, 129), (90, 129))}, origin=(80, 80)
        )
        ax = fig.axes[0]
        # the axes span input pixels 80..139 (pixel edges at +-0.5), not 0..59
        assert ax.get_xlim() == (79.5, 139.5) and ax.get_ylim() == (139.5, 79.5)
        box = ax.patches[0]
        assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (89.5, 89.5, 40, 40)
    finally:
        plt.close("all")


def test_plots_draw_titled_labelled_figures() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vgg_utils import (
        plot_erf_growth,
        plot_erf_maps,
        plot_erf_profile,
        plot_gradient_maps,
        plot_kernels,
        plot_path_counts,
        plot_rf_by_layer,
    )

    grid = torch.zeros(7, 7)
    grid[2:5, 2:5] = 1
    convs = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(3)])
    erfs = effective_receptive_fields(convs, ["conv1_1", "conv1_3"], (1, 21, 21), n_samples=1)
    df = pd.DataFrame([e.summary() for e in erfs])
    figures = [
        plot_path_counts([grid, grid]),
        plot_kernels({"a": torch.randn(3, 3), "b": torch.randn(5, 5)}, title="kernels"),
        plot_rf_by_layer(receptive_field_table("D")),
        plot_gradient_maps({"g": grid}, {"g": ((2, 4), (2, 4))}),
        plot_erf_maps(erfs, title="maps", columns=2),
        plot_erf_profile(erfs[1]),
        plot_erf_growth(df, other=df),
    ]
    try:
        for fig in figures:
            axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.axison]
            assert axes
            for ax in axes:
                assert ax.get_title() and ax.get_ylabel(), fig
            assert axes[-1].get_xlabel(), fig  # shared x axes are labelled at the bottom
        assert len(figures[2].axes[0].patches) == 18  # one bar per conv/pool layer of VGG16
    finally:
        plt.close("all")


# Tests added for surviving mutants (mutation/README.md): each names the bug it catches.


@pytest.mark.parametrize(
    "module, match",
    [
        (
            nn.MaxPool2d(2, dilation=(1, 2)),
            r"through 0 \(MaxPool2d.*its dilation \(1, 2\) is not square",
        ),
        (nn.MaxPool2d(2, dilation=2), r"through 0 \(MaxPool2d.*dilated pooling is not supported"),
        (nn.Conv2d(1, 1, (1, 3)), r"through 0 \(Conv2d.*its kernel_size \(1, 3\) is not square"),
        (
            nn.Conv2d(1, 1, 3, padding=(0, 1)),
            r"through 0 \(Conv2d.*its padding \(0, 1\) is not square",
        ),
        (
            nn.AvgPool2d(2, stride=(1, 2)),
            r"through 0 \(AvgPool2d.*its stride \(1, 2\) is not square",
        ),
        (nn.AvgPool2d((2, 3)), r"through 0 \(AvgPool2d.*its kernel_size \(2, 3\) is not square"),
        (
            nn.AdaptiveAvgPool2d(1),
            r"every unit sees the whole input \(a global receptive field\), so the table stops",
        ),
    ],
)
def test_each_unsupported_layer_is_named_with_what_is_wrong(module, match):
    with pytest.raises((ValueError, TypeError), match=match):
        receptive_field_table(nn.Sequential(module), (1, 16, 16))


def test_string_paddings_and_nested_sequentials():
    table = receptive_field_table(
        nn.Sequential(
            nn.Conv2d(1, 1, 3, padding="valid"), nn.Sequential(nn.Conv2d(1, 1, 4, padding="same"))
        ),
        (1, 16, 16),
    )
    assert list(table["module"]) == ["0", "1.0"]
    assert list(table["padding"]) == [0, 1]  # "same", even kernel: PyTorch pads 1 left, 2 right
    assert list(table["output_size"]) == [(14, 14), (14, 14)]
    assert list(table["start"]) == [1.0, 1.5] and list(table["rf"]) == [3, 6]


def test_compose_kernels_errors_say_what_was_given():
    with pytest.raises(TypeError, match=r"^k1 and k2 must be torch tensors \(conv weights\)$"):
        compose_kernels([[1.0]], torch.ones(3, 3))
    with pytest.raises(
        ValueError, match=r"or both 2-D kernels; got shapes \(3, 3\) and \(1, 1, 3, 3\)"
    ):
        compose_kernels(torch.ones(3, 3), torch.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"k2 takes 3 input channels but k1 produces 2"):
        compose_kernels(torch.ones(2, 1, 3, 3), torch.ones(4, 3, 5, 5))


# Surviving mutants of receptive_measured (mutation/README.md).


def test_a_vgg_layer_can_be_named_by_the_module_path_its_table_shows():
    # receptive_field_table(model) lists a VGG's layers as features.N; the measured fields take
    # those paths too (they were once looked up among model.features' own paths, "N").
    model = build_vgg("A", width=0.0625).train()
    path = receptive_field_table(model, (3, 32, 32)).set_index("layer").loc["conv2_1", "module"]
    assert path == "features.3"
    by_path = empirical_receptive_field(model, path, (3, 32, 32))
    assert by_path.layer == "conv2_1"
    by_name = empirical_receptive_field(model, "conv2_1", (3, 32, 32))
    assert (by_path.rows, by_path.cols) == (by_name.rows, by_name.cols)
    (erf,) = effective_receptive_fields(model, [path], (3, 32, 32), n_samples=1)
    assert erf.layer == "conv2_1" and erf.rf == 8
    assert all(m.training for m in model.modules())  # every module's own mode is given back


def test_measured_fields_refuse_bad_arguments_saying_what_is_valid():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU())  # conv1_1 (7x7 on a 9x9 input), relu1_1
    with pytest.raises(
        TypeError, match=r"^gradients need real weights: pass a model \(e\.g\. build_vgg"
    ):
        empirical_receptive_field("D", "conv1_1")
    with pytest.raises(
        TypeError, match=r"^layers is a list of layer names, e\.g\. \['conv1_2', 'conv5_3'\]$"
    ):
        effective_receptive_fields(net, "conv1_1", (1, 9, 9))
    for unit in ((7, 0), (0, 7), (-1, 3)):
        with pytest.raises(
            ValueError, match=rf"unit \({unit[0]}, {unit[1]}\) is outside conv1_1's 7x7 output"
        ):
            empirical_receptive_field(net, "conv1_1", (1, 9, 9), unit=unit)
    # Negative rows count from the end, as in a list: -2 is the first of two rows, -3 is refused.
    assert empirical_receptive_field(net, -2, (1, 9, 9)).layer == "conv1_1"
    assert effective_receptive_fields(net, [-2], (1, 9, 9), n_samples=1)[0].layer == "conv1_1"
    with pytest.raises(ValueError, match=r"layer index -3 is out of range for 2 layers"):
        empirical_receptive_field(net, -3, (1, 9, 9))
    nn.init.ones_(net[0].weight)
    nn.init.zeros_(net[0].bias)
    with pytest.raises(
        ValueError, match=r"of relu1_1 is zero everywhere \(all its ReLUs are off for this input\)"
    ):
        empirical_receptive_field(net, "relu1_1", x=-torch.ones(1, 9, 9))


def test_fields_of_a_network_without_parameters():
    # Two 2x2 average pools: the centre unit (1, 1) of the second averages input rows/cols 4..7
    # evenly, so its map is 1/16 there and sigma is that of a uniform step over 4 pixels.
    net = nn.Sequential(nn.AvgPool2d(2), nn.AvgPool2d(2))
    (erf,) = effective_receptive_fields(net, ["pool2"], (1, 16, 16), n_samples=2)
    expected = torch.zeros(16, 16)
    expected[4:8, 4:8] = 1 / 16
    assert erf.rf == 4 and torch.allclose(erf.map, expected)
    assert math.isclose(erf.sigma, math.sqrt(1.25), rel_tol=1e-6)
    e = empirical_receptive_field(net, "pool2", (1, 16, 16))
    assert e.matches_theory and e.rows == e.cols == (4, 7)


def test_erf_sigma_and_summary_on_a_wide_image():
    # All-ones 3x3 convs on a 21x41 image: each axis is a binomial-like spread of variance 2n/3
    # (see the test above), whatever the image's aspect; summary() rounds what it shows, no more.
    convs = [nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(6)]
    for conv in convs:
        nn.init.ones_(conv.weight)
    erfs = effective_receptive_fields(
        nn.Sequential(*convs), ["conv1_2", "conv1_6"], (1, 21, 41), n_samples=1
    )
    assert [e.unit for e in erfs] == [(10, 20)] * 2 and erfs[0].map.shape == (21, 41)
    assert [e.summary() for e in erfs] == [
        {
            "layer": "conv1_2",
            "rf": 5,
            "erf_95%": 5,
            "erf_50%": 3,
            "sigma": 1.15,
            "ratio": 1.0,
            "clipped": False,
        },
        # 13 taps of (1 + x + x^2)^6 / 729: +-4 holds (715/729)^2 = 96%, +-2 holds (573/729)^2 = 62%
        {
            "layer": "conv1_6",
            "rf": 13,
            "erf_95%": 9,
            "erf_50%": 5,
            "sigma": 2.0,
            "ratio": 0.692,
            "clipped": False,
        },
    ]
    assert math.isclose(erfs[0].sigma, math.sqrt(4 / 3), rel_tol=1e-6)


# Second round of surviving mutants (mutation/README.md).


@pytest.mark.parametrize("size", [(1, 1, 16), (1, 16, 1)])
def test_an_input_too_thin_in_one_axis_is_refused(size):
    # One axis alone emptying is enough (the other stays 8 wide); the error names the layer.
    with pytest.raises(
        ValueError,
        match=rf"^input_size \(1, {size[1]}, {size[2]}\) is too small: 0 \(MaxPool2d\) would have "
        r"an empty output$",
    ):
        receptive_field_table(nn.Sequential(nn.MaxPool2d(2)), size)


def test_linearise_refuses_a_layer_by_its_path():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2)))
    with pytest.raises(
        ValueError, match=r"^cannot compute the receptive field through 1\.0 \(Conv2d"
    ):
        linearise(net)


def test_default_erf_inputs_are_the_seeded_normal_draw():
    # The default inputs are torch.randn(n, *size) from a generator seeded with `seed`, not from
    # the global RNG: the same seed gives the same map whatever ran before, another seed another.
    torch.manual_seed(6)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 3))  # the map depends on x
    erf = effective_receptive_fields(net, ["conv1_2"], (1, 9, 9), n_samples=2, seed=7)[0]
    drawn = torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(8)  # a different global RNG state must not matter
    again = effective_receptive_fields(net, ["conv1_2"], (1, 9, 9), n_samples=2, seed=7)[0]
    given = effective_receptive_fields(net, ["conv1_2"], inputs=drawn)[0]
    other = effective_receptive_fields(net, ["conv1_2"], (1, 9, 9), n_samples=2, seed=9)[0]
    assert torch.equal(erf.map, again.map) and torch.equal(erf.map, given.map)
    assert not torch.equal(erf.map, other.map)
    with pytest.raises(ValueError, match=r"^n_samples must be a positive integer; got 0$"):
        effective_receptive_fields(net, ["conv1_2"], (1, 9, 9), n_samples=0)


def test_size_at_takes_a_mass_in_the_half_open_unit_interval():
    net = nn.Sequential(nn.AvgPool2d(2), nn.AvgPool2d(2))  # centre unit: 1/16 on rows/cols 4..7
    (erf,) = effective_receptive_fields(net, ["pool2"], (1, 16, 16), n_samples=1)
    assert erf.size_at(1.0) == 4 and erf.size_at(0.25) == 2  # centre (5.5, 5.5): +-0.5 holds 4/16
    for mass in (0, 0.0, -0.1, 1.0001, 1.5, 2):
        with pytest.raises(
            ValueError, match=rf"^mass is a fraction of the gradient in \(0, 1\]; got {mass}$"
        ):
            erf.size_at(mass)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="moves a model to CUDA: needs a CUDA device"
)
def test_measured_fields_of_a_model_on_cuda_match_the_cpu():
    # The default input is drawn on the CPU (seeded) and must follow the model to its device.
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(2, 1, 3))
    cpu = empirical_receptive_field(net, "conv2_1", (1, 16, 16))
    cpu_erf = effective_receptive_fields(net, ["conv2_1"], (1, 16, 16), n_samples=2)[0]
    net = net.to("cuda")
    gpu = empirical_receptive_field(net, "conv2_1", (1, 16, 16))
    gpu_erf = effective_receptive_fields(net, ["conv2_1"], (1, 16, 16), n_samples=2)[0]
    assert (gpu.rows, gpu.cols) == (cpu.rows, cpu.cols) and gpu.matches_theory == cpu.matches_theory
    assert torch.allclose(gpu.grad, cpu.grad, atol=1e-5)
    assert torch.allclose(gpu_erf.map, cpu_erf.map, atol=1e-5)
