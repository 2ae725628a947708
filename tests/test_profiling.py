"""layer_table and memory: MACs from torch.utils.flop_counter, checked against the conv formula."""

import pytest
import torch

from vgg_utils import build_vgg, count_params, layer_table, peak_activation_memory, total_macs


@pytest.fixture(scope="module")
def vgg16_table():
    return layer_table("D")


def test_vgg16_mac_total(vgg16_table):
    assert int(vgg16_table["macs"].sum()) == 15_470_264_320
    assert total_macs("vgg16") == 15_470_264_320


def test_macs_match_the_convolution_formula(vgg16_table):
    """Library count vs hand formula: Cout * H * W * Cin * k * k per conv, in * out per Linear."""
    model = build_vgg("D", batch_norm=False)
    modules = dict(model.named_modules())
    for row in vgg16_table.itertuples():
        module = modules[row.module]
        if isinstance(module, torch.nn.Conv2d):
            c, h, w = row.output_shape
            k = module.kernel_size[0] * module.kernel_size[1]
            assert row.macs == c * h * w * module.in_channels * k, row.layer
        elif isinstance(module, torch.nn.Linear):
            assert row.macs == module.in_features * module.out_features, row.layer
        else:
            assert row.macs == 0, row.layer


def test_table_rows_and_params(vgg16_table):
    assert vgg16_table["params"].sum() == 138_357_544
    fc6 = vgg16_table.set_index("layer").loc["fc6"]
    assert fc6["params"] == 102_764_544
    names = list(vgg16_table["layer"])
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert "conv5_3" in names and "pool5" in names and names[-1] == "fc8"
    assert vgg16_table.set_index("layer").loc["pool5", "output_shape"] == (512, 7, 7)
    assert vgg16_table.set_index("layer").loc["conv1_1", "act_bytes"] == 64 * 224 * 224 * 4


def test_totals_row_and_real_model_agree():
    model = build_vgg("A", batch_norm=True, width=0.25, num_classes=10, head="compact")
    table = layer_table(model, (3, 32, 32), totals=True)
    assert table.iloc[-1]["layer"] == "total"
    assert table.iloc[-1]["params"] == count_params(model)
    assert table.iloc[:-1]["macs"].sum() == table.iloc[-1]["macs"]
    # the same on the meta device, built from the name
    meta = layer_table("A", (3, 32, 32), batch_norm=True, width=0.25, num_classes=10, head="compact")
    assert meta["macs"].sum() == table.iloc[:-1]["macs"].sum()


def test_all_six_configs_analysed_from_their_names():
    """Built on the meta device: six 550 MB models analysed without allocating their weights."""
    for config in ["A", "A-LRN", "B", "C", "D", "E"]:
        table = layer_table(config)
        assert table["params"].sum() > 130e6


def test_bad_input_size():
    with pytest.raises(ValueError, match="at least 32x32"):
        layer_table("D", (3, 16, 16))
    with pytest.raises(ValueError, match="channels, height, width"):
        layer_table("D", (224, 224))
    with pytest.raises(TypeError, match="only apply when model is a config name"):
        layer_table(build_vgg("A", width=0.125), width=0.5)


def test_peak_inference_memory_is_two_largest_maps():
    """In inference only the conv output and its successor are alive at once (ReLU is in place)."""
    model = build_vgg("D", width=0.25, num_classes=10, head="compact")
    peak = peak_activation_memory(model, (3, 64, 64))
    first_map = 16 * 64 * 64 * 4
    assert peak == 2 * first_map
