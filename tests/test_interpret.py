"""Explanation methods: shapes and ranges, agreement with captum, and a model left exactly as found."""

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from vgg_utils import build_vgg
from vgg_utils.interpret import (
    METHODS,
    block_outputs,
    default_cam_layer,
    feature_maps,
    grad_cam,
    guided_backprop,
    normalise,
    occlusion,
    resolve_layer,
    saliency,
    smoothgrad,
    window_starts,
)

captum_attr = pytest.importorskip("captum.attr", reason="captum (a dev dependency) checks the course's methods")

TOL = 1e-5


def small_vgg(batch_norm: bool = True, seed: int = 0) -> nn.Module:
    """A tiny VGG-A with the paper head at 32x32 and non-trivial batch-norm statistics, in eval."""
    torch.manual_seed(seed)
    model = build_vgg("A", 5, batch_norm=batch_norm, width=1 / 16, input_size=32, fc_width=32)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(params=[True, False], ids=["bn", "plain"])
def model(request):
    return small_vgg(request.param)


@pytest.fixture
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _targets(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _captum_ref(name, model, x, target):
    if name == "gradient":
        attr = captum_attr.Saliency(model).attribute(x.clone().requires_grad_(), target=target, abs=True)
        return normalise(attr.amax(dim=1))
    if name == "guided backprop":
        with warnings.catch_warnings():  # captum warns that it sets (and removes) ReLU hooks
            warnings.simplefilter("ignore")
            attr = captum_attr.GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=target)
        return normalise(attr.abs().amax(dim=1))
    raise KeyError(name)


@pytest.mark.parametrize("name, ours", [("gradient", saliency), ("guided backprop", guided_backprop)])
def test_gradient_methods_match_captum(model, images, name, ours):
    target = _targets(model, images)
    expected = _captum_ref(name, model, images, target)
    assert torch.allclose(ours(model, images), expected, atol=TOL, rtol=0)
    assert torch.allclose(ours(model, images, class_idx=target), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("layer", [None, "relu4_2", "pool4"])
def test_grad_cam_matches_captum(model, images, layer):
    target = torch.tensor([0, 1, 2, 3])
    _, module = resolve_layer(model, layer or default_cam_layer(model))
    attr = captum_attr.LayerGradCam(model, module).attribute(
        images.clone().requires_grad_(), target=target, relu_attributions=True
    )
    expected = normalise(captum_attr.LayerAttribution.interpolate(attr, (32, 32), "bilinear")[:, 0])
    ours = grad_cam(model, images, target_layer=layer, class_idx=target)
    assert torch.allclose(ours, expected, atol=TOL, rtol=0)


def test_grad_cam_on_a_conv_layer_sees_the_conv_output_not_the_in_place_relu():
    model = small_vgg(batch_norm=False)  # conv5_2 feeds ReLU(inplace=True) directly
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # nothing can overwrite the conv output here
    _, module = resolve_layer(reference, "conv5_2")
    attr = captum_attr.LayerGradCam(reference, module).attribute(
        images.clone().requires_grad_(), target=[0, 1, 2], relu_attributions=True
    )
    expected = normalise(captum_attr.LayerAttribution.interpolate(attr, (32, 32), "bilinear")[:, 0])
    assert torch.allclose(grad_cam(model, images, "conv5_2", class_idx=[0, 1, 2]), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("window, stride", [(8, 8), (12, 5), (32, 1)])  # (12, 5): the last window is cut
def test_occlusion_matches_captum(model, images, window, stride):
    target = _targets(model, images)
    attr = captum_attr.Occlusion(model).attribute(
        images, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), target=target,
        baselines=0.0, perturbations_per_eval=16,
    )  # fmt: skip
    assert torch.equal(attr, attr[:, :1].expand_as(attr)), "one window covers all channels"
    expected = normalise(attr[:, 0].clamp(min=0))
    ours = occlusion(model, images, window=window, stride=stride, batch_size=7)  # uneven batches too
    assert torch.allclose(ours, expected, atol=TOL, rtol=0)


def test_occlusion_with_a_tensor_baseline_matches_captum(images):
    model = small_vgg()
    baseline = images.mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()
    target = _targets(model, images)
    attr = captum_attr.Occlusion(model).attribute(
        images, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), target=target, baselines=baseline,
        perturbations_per_eval=16,
    )
    ours = occlusion(model, images, window=8, stride=8, baseline=baseline)
    assert torch.allclose(ours, normalise(attr[:, 0].clamp(min=0)), atol=TOL, rtol=0)


def test_window_starts_follow_captum():
    assert window_starts(32, 8, 8) == [0, 8, 16, 24]
    assert window_starts(32, 8, 6) == [0, 6, 12, 18, 24]
    assert window_starts(32, 8, 5) == [0, 5, 10, 15, 20, 25]  # the last window hangs over and is cut
    assert window_starts(96, 96, 10) == [0]


@pytest.mark.parametrize("name", list(METHODS))
def test_maps_have_the_input_size_and_lie_in_0_1(model, images, name):
    kwargs = {"samples": 3} if name == "smoothgrad" else {"window": 8, "stride": 8} if name == "occlusion" else {}
    maps = METHODS[name](model, images, **kwargs)
    assert maps.shape == (4, 32, 32) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1
    peaks = maps.flatten(1).amax(1)
    assert torch.all((peaks == 1) | (peaks == 0)), "each map is divided by its own maximum"


def test_normalise_keeps_all_zero_maps_at_zero():
    maps = torch.zeros(3, 5, 5)
    maps[1, 2, 2] = 4.0
    out = normalise(maps)
    assert not torch.isnan(out).any()
    assert out[0].eq(0).all() and out[2].eq(0).all() and out[1, 2, 2] == 1


def test_grad_cam_of_a_dead_layer_is_zero_not_nan(images):
    model = small_vgg()
    last_bn = [m for m in model.features if isinstance(m, nn.BatchNorm2d)][-1]
    last_bn.bias.data.fill_(-100.0)  # relu5_2 outputs only zeros: no evidence anywhere
    maps = grad_cam(model, images)
    assert maps.eq(0).all()


def test_smoothgrad_reduces_to_saliency_and_averages_noisy_gradient_maps(images):
    model = small_vgg()
    target = _targets(model, images)
    assert torch.allclose(smoothgrad(model, images, samples=1, noise=0.0), saliency(model, images), atol=TOL)
    ours = smoothgrad(model, images, samples=4, noise=0.2, seed=3)
    # The same noise, drawn by hand: captum's Saliency on each noisy copy, channel max, averaged.
    gen = torch.Generator().manual_seed(3)
    sigma = 0.2 * (images.flatten(1).amax(1) - images.flatten(1).amin(1)).view(-1, 1, 1, 1)
    total = 0
    for _ in range(4):
        noisy = images + sigma * torch.randn(images.shape, generator=gen)
        total = total + captum_attr.Saliency(model).attribute(noisy.requires_grad_(), target=target).amax(1)
    assert torch.allclose(ours, normalise(total / 4), atol=TOL)
    assert torch.equal(ours, smoothgrad(model, images, samples=4, noise=0.2, seed=3)), "seeded"
    assert not torch.equal(ours, smoothgrad(model, images, samples=4, noise=0.2, seed=4))


# --- the model is left exactly as it was ---------------------------------------------------------


def _hook_dicts(model):
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")  # fmt: skip
    return {(path, n): len(getattr(m, n, {})) for path, m in model.named_modules() for n in names}


def _snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": [(path, type(m), id(m), m.training) for path, m in model.named_modules()],
        "inplace": [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)],
        "requires_grad": [p.requires_grad for p in model.parameters()],
    }


def _assert_unchanged(model, before):
    after = _snapshot(model)
    assert after["modules"] == before["modules"], "same modules, same objects, same train/eval flags"
    assert after["inplace"] == before["inplace"]
    assert after["requires_grad"] == before["requires_grad"]
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    assert all(p.grad is None for p in model.parameters()), "no gradients left on the parameters"
    assert not any(_hook_dicts(model).values()), "every hook removed"


CALLS = {
    "feature_maps": lambda m, x: feature_maps(m, x, ["conv1_1", "relu5_2", "fc6"]),
    "gradient": saliency,
    "guided backprop": guided_backprop,
    "grad-cam": grad_cam,
    "smoothgrad": lambda m, x: smoothgrad(m, x, samples=2),
    "occlusion": lambda m, x: occlusion(m, x, window=16, stride=16),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_model_unchanged_after_success(images, name):
    model = small_vgg().train()  # a model in training mode comes back in training mode
    model.classifier[2].eval()  # ... and a module's own flag is kept
    before = _snapshot(model)
    x = images.clone()
    CALLS[name](model, x)
    _assert_unchanged(model, before)
    assert torch.equal(x, images) and not x.requires_grad, "the caller's images are untouched"


@pytest.mark.parametrize("name", list(CALLS))
def test_hooks_removed_when_the_forward_pass_fails(images, name):
    model = small_vgg()
    before = _snapshot(model)
    with pytest.raises(ValueError, match="32x32"):
        CALLS[name](model, torch.randn(2, 3, 40, 40))  # refused by the model's own input check
    _assert_unchanged(model, before)

    def broken(x):
        raise RuntimeError("FC6 broke")

    model.classifier[0].forward = broken  # fails after every hooked conv layer has run
    try:
        with pytest.raises(RuntimeError, match="FC6 broke"):
            CALLS[name](model, images)
    finally:
        del model.classifier[0].forward
    _assert_unchanged(model, before)


# --- feature maps and layer names ----------------------------------------------------------------


def test_feature_maps_accept_paper_names_and_module_paths(images):
    model = small_vgg(batch_norm=False)
    maps = feature_maps(model, images, ["conv1_1", "features.0", "relu1_1", "pool5", "fc6"])
    assert list(maps) == ["conv1_1", "features.0", "relu1_1", "pool5", "fc6"]
    assert torch.equal(maps["conv1_1"], maps["features.0"])
    # conv1_1 is followed by an in-place ReLU: what was kept is the conv's own output, negatives and all.
    assert maps["conv1_1"].min() < 0 and maps["relu1_1"].min() >= 0
    assert torch.equal(maps["relu1_1"], maps["conv1_1"].clamp(min=0))
    assert maps["pool5"].shape == (4, 32, 1, 1) and maps["fc6"].shape == (4, 32)
    assert not any(t.requires_grad for t in maps.values())


def test_feature_maps_default_to_each_blocks_last_relu(images):
    model = small_vgg()
    assert block_outputs(model) == ["relu1_1", "relu2_1", "relu3_2", "relu4_2", "relu5_2"]
    assert block_outputs(build_vgg("D", 10, batch_norm=True, width=0.25))[-1] == "relu5_3"
    maps = feature_maps(model, images)
    assert [m.shape[-1] for m in maps.values()] == [32, 16, 8, 4, 2]  # one halving per block


def test_bad_arguments_get_clear_errors(images):
    model = small_vgg()
    with pytest.raises(ValueError, match="conv5_3|paper name"):
        feature_maps(model, images, ["conv9_9"])
    with pytest.raises(ValueError, match="preprocess"):
        saliency(model, (images * 50).to(torch.uint8))
    with pytest.raises(ValueError, match="one per image"):
        grad_cam(model, images, class_idx=[0, 1])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        saliency(model, images, class_idx=7)
    with pytest.raises(ValueError, match="stride <= window"):
        occlusion(model, images, window=4, stride=8)
    with pytest.raises(ValueError, match="conv layer"):
        grad_cam(model, images, target_layer="fc6")
    with pytest.raises(ValueError, match="samples"):
        smoothgrad(model, images, samples=0)


# --- the figures: layout only, but they must draw what they are given ---------------------------


def test_figures_draw_what_they_are_given(images):
    import matplotlib.pyplot as plt

    from vgg_utils.explain_metrics import centre_maps, deletion_curve, insertion_curve, sanity_check
    from vgg_utils.interpret_plots import (
        plot_explanation_scores,
        plot_explanations,
        plot_feature_maps,
        plot_filters,
        plot_overlays,
        plot_sanity_check,
    )

    model = small_vgg()
    shown = (images[:2] - images.min()) / (images.max() - images.min())
    maps = feature_maps(model, images[:1])
    fig = plot_feature_maps(shown[0], {k: v[0] for k, v in maps.items()}, channels=3, box=(2, 2, 10, 10))
    assert len(fig.axes) == 4 * 6 and fig.axes[1].get_title() == "relu1_1 32x32"
    assert len(plot_filters(model.features[0].weight).axes) == 16  # 2 filters, one row of 16 slots
    with pytest.raises(ValueError, match="first conv layer"):
        plot_filters(model.features[4].weight)
    explained = {"gradient": saliency(model, images[:2]), "grad-cam": grad_cam(model, images[:2])}
    fig = plot_explanations(shown, explained, boxes=torch.tensor([[0, 0, 8, 8]] * 2), row_titles=["a", "b"])
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "gradient", "grad-cam"]
    assert len(plot_overlays(shown, explained["grad-cam"], ["a", "b"], columns=1).axes) == 2
    curves = {name: {"deletion": deletion_curve(model, images[:2], m, steps=2),
                     "insertion": insertion_curve(model, images[:2], m, steps=2)}
              for name, m in {**explained, "centre": centre_maps(2, 32, 32)}.items()}  # fmt: skip
    fig = plot_explanation_scores({"all": {"gradient": 1.0, "grad-cam": 0.5, "centre": 0.25}}, curves)
    assert len(fig.axes[1].get_lines()) == 3 and "(" in fig.axes[1].get_legend().get_texts()[0].get_text()
    check = sanity_check(model, images[:2], ["gradient"])
    fig = plot_sanity_check(check, shown[0])
    assert len(fig.axes) == 1 + len(check.stages) + 1
    plt.close("all")


# --- defaults, costs and messages ----------------------------------------------------------------

one_thread = pytest.mark.usefixtures("one_thread")  # conftest.py: small tensors, one thread


@one_thread
def test_grad_cam_defaults_to_the_last_blocks_relu(images):
    model = small_vgg()
    assert default_cam_layer(model) == "relu5_2"  # VGG-A's last block has two convs
    vgg16 = build_vgg("D", 10, width=0.0625, input_size=32, fc_width=16)
    assert default_cam_layer(vgg16) == "relu5_3"
    assert torch.equal(grad_cam(model, images), grad_cam(model, images, target_layer="relu5_2"))


@one_thread
def test_documented_defaults_of_occlusion_and_smoothgrad(images):
    """Defaults are part of the calling convention the notebook relies on: occlusion slides a
    16-pixel window by 8 pixels (captum's windows, as in ``test_occlusion_matches_captum``);
    SmoothGrad draws its noise with seed 0."""
    model = small_vgg()
    target = _targets(model, images)
    attr = captum_attr.Occlusion(model).attribute(
        images, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), target=target, baselines=0.0
    )
    assert torch.allclose(
        occlusion(model, images), normalise(attr[:, 0].clamp(min=0)), atol=TOL, rtol=0
    )
    assert torch.equal(
        smoothgrad(model, images, samples=2), smoothgrad(model, images, samples=2, seed=0)
    )


class _CountImages:
    """A forward hook that counts the images the model is run on."""

    def __init__(self, model):
        self.images = self.calls = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.calls += 1
        self.images += len(inputs[0])


@one_thread
def test_each_method_runs_the_model_no_more_than_it_needs(images):
    """Grad-CAM needs one forward pass (the predicted class comes from the same scores);
    occlusion one clean pass plus one per window per image, in as few calls as ``batch_size``
    allows, whatever the windows' overlap."""
    model = small_vgg()
    counter = _CountImages(model)
    try:
        grad_cam(model, images)
        assert (counter.calls, counter.images) == (1, 4)
        counter.calls = counter.images = 0
        windows = len(window_starts(32, 12, 5)) ** 2  # 36 overlapping windows
        # 16 windows of 4 images a call: 3 calls after the clean pass
        occlusion(model, images, window=12, stride=5, batch_size=64)
        assert counter.images == 4 * (1 + windows) and counter.calls == 1 + math.ceil(windows / 16)
    finally:
        counter.handle.remove()


@one_thread
def test_occlusion_with_overlapping_windows_in_large_batches_matches_captum(images):
    model = small_vgg()
    target = _targets(model, images)
    attr = captum_attr.Occlusion(model).attribute(
        images,
        sliding_window_shapes=(3, 12, 12),
        strides=(3, 5, 5),
        target=target,
        baselines=0.0,
        perturbations_per_eval=36,
    )
    ours = occlusion(model, images, window=12, stride=5, batch_size=64)
    assert torch.allclose(ours, normalise(attr[:, 0].clamp(min=0)), atol=TOL, rtol=0)


class _PixelSum(nn.Module):
    """Two logits: +/- the sum of all pixels, so a window's drop is its pixels' excess over the baseline."""

    def forward(self, x):
        s = x.sum(dim=(1, 2, 3))
        return torch.stack([s, -s], 1)


@one_thread
def test_a_number_as_occlusion_baseline_is_used_exactly_in_double_precision():
    x = torch.full((1, 1, 16, 16), 0.1 + 1e-9, dtype=torch.float64)
    maps = occlusion(_PixelSum(), x, class_idx=0, window=8, stride=8, baseline=0.1)
    assert torch.allclose(maps, torch.ones_like(maps), atol=1e-4), (
        "every window hides pixels 1e-9 above a baseline of 0.1: a positive drop"
    )


@one_thread
def test_errors_name_what_was_given_and_what_is_valid(images):
    model = small_vgg()
    with pytest.raises(ValueError, match=r"must be a batch \(N, C, H, W\) .*got \(3, 32, 32\)"):
        saliency(model, images[0])
    with pytest.raises(ValueError, match=r"paper name \(conv1_1, .*, fc8\)"):
        resolve_layer(model, "conv9_9")
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())  # no paper names to offer
    with pytest.raises(ValueError) as err:
        resolve_layer(plain, "conv1_1")
    expected = "unknown layer 'conv1_1'; use a paper name () or a module path such as 'features.0'"
    assert str(err.value) == expected
