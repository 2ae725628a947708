"""layer_table and memory: MACs from torch.utils.flop_counter, checked against the conv formula."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from vgg_utils import build_vgg, count_params, layer_table, peak_activation_memory, total_macs
from vgg_utils.profiling import paper_layer_names, summary


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
    meta = layer_table(
        "A", (3, 32, 32), batch_norm=True, width=0.25, num_classes=10, head="compact"
    )
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


# Tests added for surviving mutants (mutation/README.md): each names the bug it catches.


def test_layer_table_of_a_parameter_free_chain_falls_back_to_the_cpu():
    """No parameter to take the device from: the probe input goes to the CPU, and a module that is
    not a VGG keeps its module paths as layer names (catches a broken fallback device, and paper
    naming applied to a plain Sequential)."""
    net = torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.ReLU(), torch.nn.AvgPool2d(3, 1))
    table = layer_table(net, (2, 12, 12))
    assert list(table["layer"]) == list(table["module"]) == ["0", "1", "2"]
    assert list(table["output_shape"]) == [(2, 6, 6), (2, 6, 6), (2, 4, 4)]
    assert (table["params"] == 0).all() and (table["macs"] == 0).all()


@pytest.mark.parametrize(
    "config, kw", [("A-LRN", {}), ("B", {"batch_norm": True, "input_size": 64})]
)
def test_every_row_counts_whole_fp32_maps_and_whole_macs(config, kw):
    """act_bytes is 4 bytes per element of the whole output map; MACs are integers (FLOPs // 2)."""
    model = build_vgg(config, width=0.125, num_classes=10, fc_width=64, **kw)
    table = layer_table(model, (3, 64, 64))
    for row in table.itertuples():
        assert row.act_bytes == 4 * math.prod(row.output_shape), row.layer
        assert isinstance(row.macs, (int, np.integer)), (row.layer, row.macs)


def test_paper_names_of_every_layer_of_a_batch_norm_vgg():
    """conv{block}_{i} / bn / relu, pool{block}, avgpool, then fc6-fc8 with their ReLU and dropout;
    the compact head's single Linear is just "fc"."""
    model = build_vgg("A", batch_norm=True, width=0.125, num_classes=10, fc_width=64)
    names = paper_layer_names(model)
    feats = [names[f"features.{i}"] for i in range(len(model.features))]
    assert feats[:8] == [
        "conv1_1",
        "bn1_1",
        "relu1_1",
        "pool1",
        "conv2_1",
        "bn2_1",
        "relu2_1",
        "pool2",
    ]
    assert feats[8:15] == ["conv3_1", "bn3_1", "relu3_1", "conv3_2", "bn3_2", "relu3_2", "pool3"]
    assert feats[-1] == "pool5" and names["avgpool"] == "avgpool"
    head = [names[f"classifier.{i}"] for i in range(len(model.classifier))]
    assert head == ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
    assert "avgpool" in list(layer_table(model, (3, 32, 32))["layer"])
    compact = build_vgg("A", width=0.125, num_classes=10, head="compact")
    assert paper_layer_names(compact)["classifier.0"] == "fc"


def test_a_forward_pass_that_creates_no_tensor_holds_no_activation_memory():
    class PassThrough(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x

    assert peak_activation_memory(PassThrough(), (3, 8, 8)) == 0


def test_summary_is_torchinfo_for_one_image_with_shapes_params_and_macs():
    model = build_vgg("A", width=0.125, num_classes=10, head="compact")
    stats = summary(model, (3, 32, 32))
    text = str(stats)
    assert "Output Shape" in text and "Param #" in text and "Mult-Adds" in text
    assert "[1, 8, 32, 32]" in text  # conv1_1's output for one image, two levels down
    assert stats.total_params == count_params(model)
    # torchinfo also counts the bias additions; flop_counter's MACs are the multiplies.
    macs = total_macs(model, (3, 32, 32))
    assert macs <= stats.total_mult_adds <= 1.01 * macs


def test_totals_row_is_the_next_row_of_a_plain_zero_based_index():
    """The totals row continues the 0..n-1 index, so ``table.loc[i]`` still names one row (catches
    a concat that keeps the appended row's own index 0, giving two rows labelled 0)."""
    model = build_vgg("A", width=0.125, num_classes=10, head="compact")
    table = layer_table(model, (3, 32, 32), totals=True)
    assert table.index.equals(pd.RangeIndex(len(table)))
    assert table.loc[0, "layer"] == "conv1_1"
    assert table.loc[len(table) - 1, "layer"] == "total"


class _Float64Buffer(torch.nn.Module):
    """A float32 model whose forward pass makes one float64 map the size of its input."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.zeros_like(x, dtype=torch.float64)


def test_peak_memory_counts_a_float64_map_at_8_bytes_per_element():
    """The tracker runs every op as asked: a map made in float64 holds 8 bytes per element
    (catches dropping an op's keyword arguments, such as its ``dtype``, inside the tracker)."""
    assert peak_activation_memory(_Float64Buffer(), (3, 8, 8), batch_size=2) == 2 * 3 * 8 * 8 * 8


def test_peak_memory_probe_follows_the_model_not_torchs_default_device():
    """A learner may have set another default device (Colab: ``torch.set_default_device("cuda")``);
    the probe input must still go where the model's weights are."""
    model = build_vgg("D", width=0.25, num_classes=10, head="compact")
    with torch.device("meta"):
        peak = peak_activation_memory(model, (3, 64, 64))
    assert peak == 2 * 16 * 64 * 64 * 4


def test_peak_memory_on_cuda_is_the_allocators_peak_above_the_weights():
    """The CUDA branch: at least the two largest maps (cuDNN/cuBLAS workspaces may add to it), and
    nothing like a GiB (catches a probe left on the CPU, or a missing baseline, which raise)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; the CPU tracker is tested above")
    model = build_vgg("D", width=0.25, num_classes=10, head="compact").cuda()
    peak = peak_activation_memory(model, (3, 64, 64))
    assert isinstance(peak, int)
    assert 2 * 16 * 64 * 64 * 4 <= peak < 2**30
