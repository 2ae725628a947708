"""The fully convolutional VGG (FC6 as a k x k conv) and the paper's test-time evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vgg_utils import ImageTensors, ShapesDataset, build_vgg, total_macs
from vgg_utils.course_models import CourseModelError, load_course_model
from vgg_utils.dense import FullyConvolutionalVGG, to_fully_convolutional
from vgg_utils.dense_eval import (
    PAPER_TABLE5,
    TestTimeResult,
    combine_evaluations,
    crop_grid,
    dense_evaluation,
    evaluation_table,
    multi_crop_evaluation,
    multi_scale_evaluation,
    rescale,
)

CONFIGS = ["A", "A-LRN", "B", "C", "D", "E"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small tensors, one thread


@pytest.fixture(scope="module")
def meta_vgg16() -> FullyConvolutionalVGG:
    with torch.device("meta"):
        return to_fully_convolutional(build_vgg("D"))


def _randomise_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from the identity, so BN is really tested."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(0.2 * torch.rand(m.num_features, generator=gen) - 0.1)
    return model


def _relative_difference(logits: torch.Tensor, score_map: torch.Tensor) -> float:
    assert score_map.shape[-2:] == (1, 1), f"expected a 1x1 score map on the training crop, got {tuple(score_map.shape)}"
    return ((logits - score_map[:, :, 0, 0]).abs().max() / logits.abs().max()).item()


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("config", CONFIGS)
def test_score_map_equals_logits_on_the_training_crop(config, batch_norm):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 64, 64)
    model = _randomise_batch_norm(build_vgg(config, 10, batch_norm=batch_norm, width=0.0625, fc_width=32, input_size=64)).eval()
    net = to_fully_convolutional(model)
    assert (net.kernel, net.crop_size) == (2, 64)
    with torch.no_grad():
        assert _relative_difference(model(x), net(x)) < 1e-5


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_score_map_equals_logits_at_every_width(width):
    torch.manual_seed(7)
    model = _randomise_batch_norm(build_vgg("D", 10, batch_norm=True, width=width, fc_width=256, input_size=32)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _relative_difference(model(x), to_fully_convolutional(model)(x)) < 1e-5


@pytest.mark.parametrize("config", ["A", "D", "E"])
def test_torchvision_head_becomes_a_7x7_conv_at_224(config):
    """``input_size=None`` is torchvision's head (AdaptiveAvgPool2d((7, 7))): the training crop is
    224 and FC6 a 7x7 conv over pool5, the adaptive pool dropped."""
    torch.manual_seed(1)
    model = _randomise_batch_norm(build_vgg(config, 7, batch_norm=True, width=0.0625, fc_width=32)).eval()
    net = to_fully_convolutional(model)
    assert (net.kernel, net.crop_size, net.num_classes) == (7, 224, 7)
    assert isinstance(net.head[0], nn.Conv2d) and net.head[0].kernel_size == (7, 7)
    assert all(m.kernel_size == (1, 1) for m in net.head[1:] if isinstance(m, nn.Conv2d))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert _relative_difference(model(x), net(x)) < 1e-5


def test_full_width_vgg16_fc6_is_4096_filters_of_512x7x7():
    with torch.device("meta"):  # the shapes only: no 550 MB of weights
        net = to_fully_convolutional(build_vgg("D"))
    assert [tuple(m.weight.shape) for m in net.head if isinstance(m, nn.Conv2d)] == [
        (4096, 512, 7, 7), (4096, 4096, 1, 1), (1000, 4096, 1, 1)
    ]  # fmt: skip


def test_compact_head_is_already_fully_convolutional():
    """GAP + Linear becomes a 1x1 conv; the averaged score map equals the original at any size."""
    torch.manual_seed(3)
    model = _randomise_batch_norm(build_vgg("B", 10, batch_norm=True, width=0.125, head="compact")).eval()
    net = to_fully_convolutional(model)
    assert net.compact and (net.kernel, net.crop_size) == (1, 32)
    for h, w in ((32, 32), (64, 96), (100, 70)):
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            maps = net(x)
            assert maps.shape == (2, 10, h // 32, w // 32)
            expected = model(x)
            assert ((maps.mean(dim=(2, 3)) - expected).abs().max() / expected.abs().max()) < 1e-5


def test_course_model_shapes96():
    course = load_course_model("shapes96")
    net = to_fully_convolutional(course.model)
    assert (net.kernel, net.crop_size) == (3, 96)
    x = course.preprocess(ShapesDataset(16, 96, split="test", dtype=torch.uint8).images)
    with torch.no_grad():
        assert _relative_difference(course.model(x), net(x)) < 1e-5
        assert net(course.preprocess(torch.zeros(1, 3, 192, 256))).shape == (1, 10, 4, 6)


def test_course_model_cifar10():
    try:
        course = load_course_model("cifar10")
    except CourseModelError as err:
        pytest.skip(f"the cifar10 course checkpoint is not built here ({str(err).splitlines()[0][:120]})")
    net = to_fully_convolutional(course.model)
    assert (net.kernel, net.crop_size) == (1, 32)
    x = course.preprocess(torch.rand(8, 3, 32, 32))
    with torch.no_grad():
        assert _relative_difference(course.model(x), net(x)) < 1e-5


@pytest.mark.parametrize(
    ("size", "expected"),
    [((224, 224), (1, 1)), ((384, 384), (6, 6)), ((256, 320), (2, 4)), ((255, 255), (1, 1)),
     ((512, 640), (10, 14)), ((480, 224), (9, 1))],
)  # fmt: skip
def test_score_map_sizes_of_vgg16(size, expected, meta_vgg16):
    net = meta_vgg16
    out = net(torch.zeros(1, 3, *size, device="meta"))
    assert tuple(out.shape) == (1, 1000, *expected)
    assert net.score_map_size(*size) == expected


def test_score_map_sizes_for_other_crops():
    with torch.device("meta"):
        net96 = to_fully_convolutional(build_vgg("D", 10, width=0.25, fc_width=64, input_size=96))
        net32 = to_fully_convolutional(build_vgg("D", 10, width=0.25, fc_width=64, input_size=32))
    assert (net96.kernel, net32.kernel) == (3, 1)
    for net, size, expected in ((net96, (96, 96), (1, 1)), (net96, (192, 256), (4, 6)), (net96, (128, 130), (2, 2)),
                                (net32, (32, 32), (1, 1)), (net32, (40, 72), (1, 2))):  # fmt: skip
        assert tuple(net(torch.zeros(1, 3, *size, device="meta")).shape[-2:]) == expected == net.score_map_size(*size)


def test_original_model_is_left_untouched():
    torch.manual_seed(4)
    model = build_vgg("A", 10, batch_norm=True, width=0.125, fc_width=32, input_size=64).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = to_fully_convolutional(model)
    assert model.training and not net.training  # the conversion is for test time; the original keeps its mode
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert isinstance(model.classifier[0], nn.Linear) and model.input_size == 64
    ours = {p.data_ptr() for p in model.parameters()} | {b.data_ptr() for b in model.buffers()}
    assert not ours & ({p.data_ptr() for p in net.parameters()} | {b.data_ptr() for b in net.buffers()})
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_clear_errors():
    model = build_vgg("A", 10, width=0.125, fc_width=32, input_size=96).eval()
    net = to_fully_convolutional(model)
    with pytest.raises(ValueError, match=r"at least 96x96.*got 64x128"):
        net(torch.zeros(1, 3, 64, 128))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.zeros(3, 96, 96))
    with pytest.raises(TypeError, match="expects a VGG.*got Linear"):
        to_fully_convolutional(nn.Linear(3, 3))
    with pytest.raises(TypeError, match="already fully convolutional"):
        to_fully_convolutional(net)
    headless = build_vgg("A", 10, width=0.125, input_size=96)
    headless.classifier = nn.Sequential()
    with pytest.raises(ValueError, match="no FC"):
        to_fully_convolutional(headless)
    headless.classifier = nn.Identity()
    with pytest.raises(ValueError, match="no FC"):
        to_fully_convolutional(headless)
    odd = build_vgg("A", 10, width=0.125, fc_width=32, input_size=96)
    odd.classifier.insert(1, nn.BatchNorm1d(32))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        to_fully_convolutional(odd)
    resized = build_vgg("A", 10, width=0.125, fc_width=32, input_size=96)
    resized.classifier[0] = nn.Linear(100, 32)
    with pytest.raises(ValueError, match="FC6 takes 100 inputs"):
        to_fully_convolutional(resized)
    with pytest.raises(ValueError, match="test scale Q.*at least the training crop 96"):
        dense_evaluation(net, torch.zeros(1, 3, 96, 96), 64)
    with pytest.raises(ValueError, match="grid must be a positive integer"):
        multi_crop_evaluation(net, torch.zeros(1, 3, 96, 96), 128, grid=0)


def test_clear_errors_for_real_non_vgg_models_and_small_inputs():
    """A ResNet (no .features), a CourseModel wrapper (pass its .model), and inputs below the crop
    everywhere an image enters: the converted net, the compact head, score maps."""
    import torchvision

    with torch.device("meta"):
        resnet = torchvision.models.resnet18()
    with pytest.raises(TypeError, match=r"expects a VGG.*\.features.*got ResNet"):
        to_fully_convolutional(resnet)
    course = load_course_model("shapes96")
    with pytest.raises(TypeError, match=r"CourseModel: pass its \.model"):
        to_fully_convolutional(course)
    compact = to_fully_convolutional(build_vgg("A", 10, width=0.0625, head="compact"))
    with pytest.raises(ValueError, match=r"at least 32x32.*got 31x64"):
        compact(torch.zeros(1, 3, 31, 64))
    from vgg_utils.scenes import score_maps

    with pytest.raises(ValueError, match=r"at least 96x96.*got 80x200"):
        score_maps(course.model, torch.zeros(1, 3, 80, 200))
    # A refused input loses nothing: the model and the input are as they were.
    x = torch.zeros(1, 3, 80, 200)
    before = {k: v.clone() for k, v in course.model.state_dict().items()}
    with pytest.raises(ValueError):
        to_fully_convolutional(course.model)(x)
    assert x.shape == (1, 3, 80, 200)
    assert all(torch.equal(v, before[k]) for k, v in course.model.state_dict().items())


def _small_model(seed: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise_batch_norm(build_vgg("A", 5, batch_norm=True, width=0.125, fc_width=32, input_size=64), seed).eval()


def test_dense_evaluation_follows_the_paper():
    """Rescale to Q, average the score map, softmax; with the flip, average the two posteriors."""
    model = _small_model()
    images = torch.rand(3, 3, 48, 60)
    result = dense_evaluation(model, images, 96, batch_size=2)
    x = rescale(images, 96)
    assert x.shape[-2:] == (96, 120)
    net = to_fully_convolutional(model)
    with torch.no_grad():
        plain = net(x).mean(dim=(2, 3)).softmax(dim=1)
        flipped = net(x.flip(-1)).mean(dim=(2, 3)).softmax(dim=1)
    assert torch.allclose(result.probs, (plain + flipped) / 2, atol=1e-6)
    assert result.views == 2 and result.scales == (96,)
    # At Q equal to the crop, dense evaluation is the classifier on the whole (square) image.
    square = torch.rand(3, 3, 48, 48)
    at_crop = dense_evaluation(model, square, 64, flip=False)
    with torch.no_grad():
        assert torch.allclose(at_crop.probs, model(rescale(square, 64)).softmax(dim=1), atol=1e-6)


def test_multi_crop_evaluation_follows_the_paper():
    model = _small_model(6)
    images = torch.rand(2, 3, 80, 80)
    assert crop_grid(96, 96, 64) == [(y, x) for y in (0, 8, 16, 24, 32) for x in (0, 8, 16, 24, 32)]
    assert crop_grid(64, 70, 64, 5) == [(0, x) for x in (0, 2, 3, 4, 6)]
    result = multi_crop_evaluation(model, images, 96)
    assert result.views == 50
    x = rescale(images, 96)
    expected = []
    with torch.no_grad():
        for y, c in crop_grid(96, 96, 64):
            crop = x[..., y : y + 64, c : c + 64]
            expected += [model(crop).softmax(dim=1), model(crop.flip(-1)).softmax(dim=1)]
    assert torch.allclose(result.probs, torch.stack(expected).mean(dim=0), atol=1e-6)
    # At Q equal to the crop, all 25 crops coincide: one crop and its flip, the same as dense.
    same = multi_crop_evaluation(model, images, 64)
    assert same.views == 2
    assert torch.allclose(same.probs, dense_evaluation(model, images, 64).probs, atol=1e-6)


def test_macs_are_counted_not_computed():
    """Dense evaluation on a 224 input costs exactly what the classifier costs (twice with the
    flip); 50 crops cost 50 classifier passes; combined and multi-scale results add up."""
    model = build_vgg("D", 10, width=0.125, fc_width=64).eval()  # torchvision's head, crop 224
    classifier = total_macs(model, (3, 224, 224))
    images = torch.rand(2, 3, 224, 224)
    dense = dense_evaluation(model, images, 224, flip=False)
    assert dense.macs_per_image == classifier and dense.macs == 2 * classifier
    assert dense_evaluation(model, images, 224).macs_per_image == 2 * classifier
    small = _small_model(7)
    one = total_macs(small, (3, 64, 64))
    crops = multi_crop_evaluation(small, torch.rand(2, 3, 64, 64), 80)
    assert crops.macs_per_image == 50 * one
    dense96 = dense_evaluation(small, torch.rand(2, 3, 64, 64), 96)
    fcn_macs = total_macs(to_fully_convolutional(small), (3, 96, 96))
    assert dense96.macs_per_image == 2 * fcn_macs > 2 * one  # the conv layers see 96x96
    both = combine_evaluations(dense96, crops)
    assert both.macs == dense96.macs + crops.macs and both.views == 52
    assert torch.allclose(both.probs, (dense96.probs + crops.probs) / 2)


def test_multi_scale_and_the_table():
    model = _small_model(8)
    data = ShapesDataset(4, 64, num_classes=5, split="test", dtype=torch.uint8)
    scales = (64, 72, 80)
    dense = [dense_evaluation(model, data, q) for q in scales]
    crops = [multi_crop_evaluation(model, data, q) for q in scales]
    multi = multi_scale_evaluation(model, data, scales, method="multi-crop & dense")
    expected = (torch.stack([d.probs for d in dense]).mean(0) + torch.stack([c.probs for c in crops]).mean(0)) / 2
    assert torch.allclose(multi.probs, expected, atol=1e-6)
    assert multi.macs == sum(r.macs for r in dense + crops) and multi.scales == scales
    table, results = evaluation_table(model, data, scales)
    assert table["evaluation"].tolist() == ["dense", "multi-crop", "multi-crop & dense"] * 2
    assert table["test scales"].tolist() == ["Q = 72"] * 3 + ["Q in {64, 72, 80}"] * 3
    assert torch.allclose(results["multi-crop & dense, Q in {64, 72, 80}"].probs, expected, atol=1e-6)
    assert torch.allclose(results["dense, Q = 72"].probs, dense[1].probs, atol=1e-6)
    assert table.loc[5, "views / image"] == sum(r.views for r in dense + crops)
    with pytest.raises(ValueError, match="method must be one of"):
        multi_scale_evaluation(model, data, scales, method="sparse")
    with pytest.raises(ValueError, match="same images"):
        combine_evaluations(dense[0], dense_evaluation(model, data.images[:2], 64))


def test_paper_table5_numbers():
    """Simonyan & Zisserman, Table 5 (ILSVRC-2012 val., S in [256, 512], Q in {256, 384, 512})."""
    assert PAPER_TABLE5[("D", "dense")] == (24.8, 7.5)
    assert PAPER_TABLE5[("D", "multi-crop")] == (24.6, 7.5)
    assert PAPER_TABLE5[("D", "multi-crop & dense")] == (24.4, 7.2)
    assert PAPER_TABLE5[("E", "multi-crop & dense")] == (24.4, 7.1)


def test_fully_convolutional_type_and_device_follow_the_model():
    net = to_fully_convolutional(_small_model().double())
    assert isinstance(net, FullyConvolutionalVGG)
    assert all(p.dtype == torch.float64 for p in net.parameters())


# Tests added for surviving mutants (mutation/README.md): each names the bug it catches.


class _PlainVGG(nn.Module):
    """A VGG-shaped module without build_vgg's extras (no .config): what a learner may write."""

    def __init__(self, *, pools: bool = True, bias: bool = True, head: nn.Module | None = None):
        super().__init__()
        torch.manual_seed(0)
        layers = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()] + ([nn.MaxPool2d(2)] * 2 if pools else [])
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = head if head is not None else nn.Sequential(nn.Linear(4, 5, bias=bias))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_a_headless_or_foreign_model_is_refused_with_what_it_holds():
    with pytest.raises(ValueError, match=r"it holds \['Dropout'\]\); pass the whole classifier network, e\.g\. build_vgg\('D'\)"):
        to_fully_convolutional(_PlainVGG(head=nn.Sequential(nn.Dropout())))
    with pytest.raises(ValueError, match=r"it holds nothing\)"):
        to_fully_convolutional(_PlainVGG(head=nn.Sequential()))
    with pytest.raises(ValueError, match=r"converts heads made of Linear, ReLU and Dropout layers \(the paper's FC6-FC8"):
        to_fully_convolutional(_PlainVGG(head=nn.Sequential(nn.Linear(4, 5), nn.Softmax(1))))
    no_convs = _PlainVGG()
    no_convs.features = nn.Sequential(nn.MaxPool2d(2))
    with pytest.raises(ValueError, match=r"has no nn\.Conv2d: this is not a VGG's convolutional part"):
        to_fully_convolutional(no_convs)
    odd_pool = _PlainVGG()
    odd_pool.avgpool = nn.AdaptiveMaxPool2d(1)
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d\(1\) \(the compact head\)$"):
        to_fully_convolutional(odd_pool)


def test_the_course_model_hint_only_for_a_course_model():
    class HasModel:
        model = None

    class Course(HasModel):
        preprocess = None

    with pytest.raises(TypeError, match=r"got HasModel$"):
        to_fully_convolutional(HasModel())
    with pytest.raises(TypeError, match=r"got Course \(a CourseModel: pass its \.model\)$"):
        to_fully_convolutional(Course())


def test_a_plain_vgg_without_pools_or_biases_converts_exactly():
    """No max-pool: the score map's cells are 1 pixel apart; an FC without bias becomes a conv
    without bias (not one with uninitialised memory as its bias)."""
    model = _PlainVGG(pools=False, bias=False).eval()
    fcn = to_fully_convolutional(model)
    assert fcn.stride == 1 and fcn.kernel == 1 and fcn.compact is True
    assert fcn.head[0].bias is None
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fcn(x).mean((2, 3)), model(x))
    assert fcn.config == ""
    with pytest.raises(ValueError, match=r"^the fully convolutional VGG expects a batch of images shaped \(N, 3, H, W\); got \(3, 8, 8\)$"):
        fcn(torch.randn(3, 8, 8))


def test_a_pool_module_used_twice_counts_twice():
    """``[nn.MaxPool2d(2)] * 2`` (one module, two uses) downsamples by 4: the score map's cells
    are 4 pixels apart and its mean is still the model's output."""
    model = _PlainVGG(pools=True).eval()
    assert model.features[2] is model.features[3]
    fcn = to_fully_convolutional(model)
    assert fcn.stride == 4
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fcn(x).mean((2, 3)), model(x))


def test_the_small_input_error_names_the_head():
    compact = to_fully_convolutional(build_vgg("A", num_classes=4, width=0.125, head="compact"))
    with pytest.raises(ValueError, match=r"^the fully convolutional VGG A needs inputs of at least 32x32 pixels, the training crop \(one pool5 cell\)"):
        compact(torch.randn(1, 3, 16, 40))
    paper = FullyConvolutionalVGG(nn.Sequential(), nn.Sequential(), kernel=3, stride=32, in_channels=3, num_classes=2)
    with pytest.raises(ValueError, match=r"\(FC6 is now a 3x3 conv over the pool5 map, 32 pixels a cell\); got 64x96"):
        paper(torch.randn(1, 3, 64, 96))


def _sensitive_model() -> nn.Module:
    """A tiny VGG-shaped net (crop 4, compact head) whose posteriors move with the image: the
    random build_vgg nets above give near-uniform posteriors (differences ~1e-6), too flat to
    tell a crop from its mirror image."""
    model = _PlainVGG(pools=False)
    model.features.extend([nn.MaxPool2d(2), nn.MaxPool2d(2)])  # two modules: the stride counts both
    model.eval()
    with torch.no_grad():
        model.classifier[0].weight.mul_(20)
    return model


def _images(n: int = 3, size: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("flip", [True, False])
def test_multi_crop_averages_every_crop_and_only_its_mirror_image(flip):
    """The mirror image of a crop is flipped left-right (not upside down, not in colour), and
    only when ``flip`` asks for it."""
    model, images = _sensitive_model(), _images()
    result = multi_crop_evaluation(model, images, 24, crop_size=16, grid=3, flip=flip)
    x = rescale(images, 24)
    expected = []
    with torch.no_grad():
        for y, c in crop_grid(24, 24, 16, 3):
            crop = x[..., y : y + 16, c : c + 16]
            expected += [model(crop).softmax(dim=1)] + (
                [model(crop.flip(-1)).softmax(dim=1)] if flip else []
            )
    assert result.views == len(expected) == (18 if flip else 9)
    torch.testing.assert_close(result.probs, torch.stack(expected).mean(dim=0))
    # The net is not flat: the centre crop alone gives other posteriors than the average.
    assert (result.probs - model(x[..., 4:20, 4:20]).softmax(1)).abs().max() > 0.01


def test_bad_grids_crops_and_batches_are_refused_by_name():
    model = _sensitive_model()
    for grid in (2.5, True, 0):
        with pytest.raises(
            ValueError,
            match=rf"^grid must be a positive integer \(the paper's multi-crop uses 5\); got {grid!r}$",
        ):
            crop_grid(24, 24, 16, grid)
    for crop in (16.0, True, 3, 25):
        with pytest.raises(
            ValueError,
            match=rf"^crop_size must lie between the training crop 4 and Q=24; got {crop!r}$",
        ):
            multi_crop_evaluation(model, _images(), 24, crop_size=crop)
    with pytest.raises(
        ValueError,
        match=r"^images must be a batch \(N, 3, H, W\) or an ImageTensors; got torch\.Size\(\[3, 20, 20\]\)$",
    ):
        dense_evaluation(model, _images()[0], 24)
    with pytest.raises(ValueError, match=r"; got list$"):
        dense_evaluation(model, [_images()], 24)
    with pytest.raises(ValueError, match=r"^give at least one TestTimeResult to combine$"):
        combine_evaluations()


def test_error_and_nll_of_known_posteriors():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.0, 0.2, 0.8]])
    result = TestTimeResult("known", (32,), probs, macs=0, views=1, seconds=0.0)
    labels = torch.tensor([1, 1, 0])
    assert result.error(labels) == pytest.approx(2 / 3)  # the default is top-1
    assert result.error(labels, 2) == pytest.approx(1 / 3)  # the third's true class has p = 0
    assert result.nll(labels[:2]) == pytest.approx(-(math.log(0.3) + math.log(0.6)) / 2)
    zero = -(math.log(0.3) + math.log(0.6) + math.log(1e-12)) / 3  # p = 0 counts as 1e-12: finite
    assert result.nll(labels) == pytest.approx(zero)


def test_combined_names_and_multi_scale_settings_pass_through():
    model, images = _sensitive_model(), _images()
    a, b = dense_evaluation(model, images, 20), dense_evaluation(model, images, 24)
    assert combine_evaluations(a, b).method == "dense Q=20 + dense Q=24"
    plain = multi_scale_evaluation(model, images, (20, 24), flip=False)
    assert plain.method == "dense, Q in {20, 24}"
    assert plain.views == 2  # one unflipped view per scale
    expected = (
        dense_evaluation(model, images, 20, flip=False).probs
        + dense_evaluation(model, images, 24, flip=False).probs
    ) / 2
    torch.testing.assert_close(plain.probs, expected)
    flipped = combine_evaluations(a, b).probs
    assert (plain.probs - flipped).abs().max() > 1e-3  # the flip matters here


def test_rescale_antialiases_when_it_shrinks():
    """A one-pixel checkerboard shrunk to 40/96 is a flat grey with antialiasing; plain bilinear
    sampling leaves a moiré of +-0.3."""
    i = torch.arange(96)
    board = ((i[:, None] + i[None, :]) % 2).float().expand(1, 3, 96, 96)
    small = rescale(board, 40)
    assert small.shape == (1, 3, 40, 40) and (small - 0.5).abs().max() < 0.05


def test_evaluation_table_passes_every_setting_and_reports_in_its_units():
    model = _sensitive_model()
    data = ImageTensors(_images(4), torch.tensor([0, 1, 2, 3]), [f"class {k}" for k in range(5)])

    def prep(x):
        return 2 * x - 1

    table, results = evaluation_table(
        model, data, (20, 24), single_scale=24, preprocess=prep, grid=2, top5=True
    )
    crops = multi_crop_evaluation(model, data, 24, preprocess=prep, grid=2)
    torch.testing.assert_close(results["multi-crop, Q = 24"].probs, crops.probs)
    assert (crops.probs - multi_crop_evaluation(model, data, 24, grid=2).probs).abs().max() > 1e-3
    assert table["views / image"].tolist() == [2, 8, 10, 4, 16, 20]  # 2x2 crops x 2 flips per scale
    assert (table["top-1 error %"] > 0).all()
    assert (table["top-5 error %"] == 0).all()  # 5 classes: the true one is always in the top 5
    for row, r in zip(table.itertuples(index=False), results.values(), strict=True):
        gmacs = row[table.columns.get_loc("GMACs / image")]
        assert r.macs_per_image > 0 and gmacs * 1e9 == pytest.approx(r.macs_per_image, rel=1e-12)


def test_conversion_errors_name_the_mismatch_in_full():
    """FC6 that does not fit the pool5 map, a model whose stated input size disagrees with its
    pool5 window (here pool5 removed: 16 pixels a cell, so FC6's 3x3 window is 48, not 96), and
    an input that is not a tensor: each message says exactly what was found."""
    resized = build_vgg("A", 10, width=0.125, fc_width=32, input_size=96)
    resized.classifier[0] = nn.Linear(100, 32)
    with pytest.raises(
        ValueError,
        match=r"^FC6 takes 100 inputs but the pool5 map has 64 channels: 64 x 1 x 1 = 64 "
        r"expected\. Is model\.classifier the VGG's own head\?$",
    ):
        to_fully_convolutional(resized)
    no_pool5 = build_vgg("A", 10, width=0.125, fc_width=32, input_size=96)
    assert isinstance(no_pool5.features[-1], nn.MaxPool2d)
    no_pool5.features[-1] = nn.Identity()
    with pytest.raises(
        ValueError, match=r"^model\.input_size=96 does not match FC6's 3x3 pool5 window$"
    ):
        to_fully_convolutional(no_pool5)
    net = to_fully_convolutional(build_vgg("A", 10, width=0.125, fc_width=32, input_size=96))
    with pytest.raises(ValueError, match=r"shaped \(N, 3, H, W\); got list$"):
        net([torch.zeros(3, 96, 96)])
