"""Transfer learning (notebook 06): replace_head, freeze by stage, frozen BN/dropout held in eval,
discriminative rates, feature caching equal to training through the frozen layers, source models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import vgg_utils
from vgg_utils import ImageTensors, build_vgg, count_params
from vgg_utils.configs import CONFIGS, parse_layer
from vgg_utils.shapes import ShapesDataset
from vgg_utils.transfer import (
    MODES,
    Preprocess,
    cache_features,
    discriminative_param_groups,
    fine_tune,
    freeze,
    load_source_model,
    replace_head,
    split_frozen,
    stage_table,
)
from vgg_utils.transfer_data import per_class_split

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small tensors, one thread


def _expected_trainable(config: str, width: float, batch_norm: bool, fc: list[tuple[int, int]]) -> dict[str, int]:
    """Trainable parameters per freeze mode, counted by hand from Table 1 (independent of freeze)."""
    blocks, block, cin = [0] * 5, 0, 3
    for entry in CONFIGS[config]:
        spec = parse_layer(entry)
        if spec.kind == "conv":
            cout = max(1, round(spec.channels * width))
            blocks[block] += cin * cout * spec.kernel**2 + cout + (2 * cout if batch_norm else 0)
            cin = cout
        elif spec.kind == "pool":
            block += 1
    fcs = [i * o + o for i, o in fc]
    expected = {"head": fcs[-1], "classifier": sum(fcs)}
    for k in range(5, 0, -1):
        expected[f"block{k}"] = sum(fcs) + sum(blocks[k - 1 :])
    expected["all"] = expected["block1"]
    return expected


def test_freeze_counts_on_vgg16():
    with torch.device("meta"):
        model = build_vgg("D")
    expected = _expected_trainable("D", 1.0, False, [(25088, 4096), (4096, 4096), (4096, 1000)])
    assert expected["head"] == 4_097_000 and expected["classifier"] == 123_642_856  # the numbers
    for mode in MODES:
        report = freeze(model, mode)
        assert report.trainable == expected[mode] == count_params(model, trainable_only=True), mode
        assert report.frozen == 138_357_544 - expected[mode], mode


@pytest.mark.parametrize("head", ["paper", "compact"])
def test_freeze_counts_and_exact_parameters_on_a_width_scaled_model(head):
    model = build_vgg("D", 7, batch_norm=True, width=0.25, head=head, fc_width=48,
                      input_size=32 if head == "paper" else None)  # fmt: skip
    fc = [(128, 48), (48, 48), (48, 7)] if head == "paper" else [(128, 7)]
    expected = _expected_trainable("D", 0.25, True, fc)
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    for mode in MODES:
        report = freeze(model, mode)
        assert report.trainable == expected[mode], mode
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        # Which names must train: the FC8 weight/bias, the classifier, or features from block k on.
        if mode == "head":
            want = {f"classifier.{len(model.classifier) - 1}.weight", f"classifier.{len(model.classifier) - 1}.bias"}
        elif mode == "classifier":
            want = {n for n, _ in model.named_parameters() if n.startswith("classifier.")}
        else:
            k = 1 if mode == "all" else int(mode[5:])
            first = 0 if k == 1 else pools[k - 2] + 1
            want = {n for n, _ in model.named_parameters()
                    if n.startswith("classifier.") or int(n.split(".")[1]) >= first}  # fmt: skip
        assert trainable == want, mode


def test_freeze_report_and_stage_table_name_the_layers():
    with torch.device("meta"):
        model = build_vgg("D")
    report = freeze(model, "block5")
    assert report.first_trainable == "conv5_1" and report.held_in_eval == 0
    assert "130,722,280 trainable" in str(report)
    assert freeze(model, "head").held_in_eval == 2  # the dropouts after FC6 and FC7 feed FC8
    table = stage_table(model).set_index("stage")
    assert table.loc["classifier", "layers"] == "fc6-fc7" and table.loc["head", "layers"] == "fc8"
    assert table.loc["block5", "layers"] == "conv5_1-conv5_3"
    assert table["params"].sum() == 138_357_544
    assert table.loc["head", "trainable"] == 4_097_000 and table["trainable"].sum() == 4_097_000


def test_replace_head_shape_fresh_init_and_untouched_backbone():
    torch.manual_seed(0)
    model = build_vgg("A", 10, batch_norm=True, width=0.125, head="paper", fc_width=32, input_size=32)
    before = copy.deepcopy(model.state_dict())
    assert replace_head(model, 3) is model
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    after = model.state_dict()
    head = f"classifier.{len(model.classifier) - 1}"
    for key, tensor in before.items():
        if key.startswith(head):
            continue
        assert torch.equal(after[key], tensor), key
    assert after[f"{head}.weight"].shape == (3, 32) and torch.all(after[f"{head}.bias"] == 0)
    assert 0.003 < after[f"{head}.weight"].std() < 0.03  # N(0, 0.01), as build_vgg initialises FC layers


def test_bad_input_gets_clear_errors():
    model = build_vgg("A", 4, width=0.125, head="compact")
    with pytest.raises(ValueError, match="unknown freeze mode 'fc7'.*valid modes"):
        freeze(model, "fc7")
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(ValueError, match="num_classes must be a positive integer"):
            replace_head(model, bad)
    torchvision = pytest.importorskip("torchvision")
    for not_vgg in (torchvision.models.resnet18(), nn.Linear(3, 4), nn.Sequential(nn.Conv2d(3, 8, 3))):
        for fn in (lambda m: freeze(m, "head"), lambda m: replace_head(m, 3), stage_table,
                   lambda m: discriminative_param_groups(m, 0.1)):  # fmt: skip
            with pytest.raises(TypeError, match="expects a VGG"):
                fn(not_vgg)

    class Wrapper:  # like a CourseModel: the net is in .model
        model = build_vgg("A", 4, width=0.125, head="compact")

    with pytest.raises(TypeError, match=r"pass Wrapper\.model"):
        freeze(Wrapper(), "head")
    with pytest.raises(ValueError, match="lr must be positive"):
        discriminative_param_groups(model, 0)
    with pytest.raises(ValueError, match="decay must be in"):
        discriminative_param_groups(model, 0.1, decay=1.5)
    with pytest.raises(ValueError, match="nothing is frozen"):
        freeze(model, "all")
        split_frozen(model)
    with pytest.raises(ValueError, match="prefer must be"):
        load_source_model("resnet")


def test_torchvision_vgg_is_accepted():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        model = torchvision.models.vgg16()
    assert freeze(model, "head").trainable == 4_097_000
    assert freeze(model, "classifier").trainable == 123_642_856


@pytest.fixture(scope="module")
def shapes():
    train = ShapesDataset(96, 32, num_classes=4, dtype=torch.uint8)
    test = ShapesDataset(40, 32, num_classes=4, split="test", dtype=torch.uint8)
    return train, test


def _bn_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_vgg("D", 4, batch_norm=True, width=0.125, head="paper", fc_width=32, input_size=32, dropout=0.5)
    with torch.no_grad():  # non-trivial running statistics, as a trained net has
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _bn_state(model):
    return {n: b.clone() for n, b in model.named_buffers()}


def test_frozen_batch_norm_keeps_its_statistics_in_train_mode(shapes):
    model = _bn_model()
    freeze(model, "block4")
    before = _bn_state(model)
    vgg_utils.train(model, shapes[0], epochs=1, batch_size=32, lr=0.05, device="cpu", progress=False)
    assert model.training  # train() leaves the model in train mode; the frozen BNs ignored it
    after = _bn_state(model)
    block4 = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)][2] + 1
    for name, value in before.items():
        index = int(name.split(".")[1])
        if index < block4:
            assert torch.equal(after[name], value), f"{name} changed: a frozen BN updated its statistics"
        elif name.endswith("num_batches_tracked"):
            assert after[name] > value, f"{name}: a trainable BN must still update"
    # Frozen layers compute the same function in train mode as in eval mode: no batch statistics.
    frozen, _ = split_frozen(model)
    x = torch.rand(8, 3, 32, 32)
    model.train()
    in_train = frozen(x)
    model.eval()
    assert torch.equal(in_train, frozen(x))
    # A less restrictive freeze releases them: train mode uses batch statistics again.
    freeze(model, "all")
    model.train()
    stats = model.features[1].running_mean.clone()
    model(x)
    assert not torch.equal(stats, model.features[1].running_mean)


def test_frozen_dropout_is_off_in_train_mode():
    model = _bn_model()
    freeze(model, "head")  # FC6, FC7 and both dropouts are frozen; only FC8 trains
    frozen, _ = split_frozen(model)
    model.train()
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(frozen(x), frozen(x))
    freeze(model, "classifier")  # now the dropouts belong to the trained part: active again
    model.train()
    out = model.classifier[:3](torch.ones(64, 64))
    assert (out == 0).float().mean() > 0.3


def test_split_frozen_composes_to_the_model():
    model = _bn_model().eval()
    x = torch.rand(3, 3, 32, 32)
    for mode in ("head", "classifier", "block3"):
        freeze(model, mode)
        frozen, rest = split_frozen(model)
        assert torch.allclose(rest(frozen(x)), model(x), atol=1e-6), mode
        assert {id(p) for p in rest.parameters()} >= {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("mode", ["head", "classifier", "block5"])
def test_feature_caching_gives_the_same_weights_as_training_through_the_frozen_layers(shapes, mode):
    train, test = shapes
    mean = torch.tensor([0.4, 0.5, 0.45])
    preprocess = Preprocess(lambda x: vgg_utils.subtract_mean(vgg_utils.to_float(x), mean))
    options = dict(epochs=2, batch_size=16, lr=0.05, device="cpu", seed=3, progress=False, bf16=False, channels_last=False)
    through = replace_head(_bn_model(), 4)
    cached = copy.deepcopy(through)
    start = copy.deepcopy(through.state_dict())

    freeze(through, mode)
    h1 = vgg_utils.train(through, train, test, augment=preprocess, **options)

    freeze(cached, mode)
    frozen, rest = split_frozen(cached)
    features = cache_features(frozen, train, transform=preprocess)
    h2 = vgg_utils.train(rest, features, cache_features(frozen, test, transform=preprocess), **options)

    for key, value in through.state_dict().items():
        assert torch.allclose(value, cached.state_dict()[key], atol=1e-5), key
    changed = [k for k in start if not torch.equal(start[k], through.state_dict()[k])]
    assert changed, "training changed nothing: the comparison would be empty"
    assert (h1["test_acc"] - h2["test_acc"]).abs().max() < 1e-6


def test_fine_tune_caches_by_default_and_matches_the_uncached_run(shapes):
    train, test = shapes
    a, b = replace_head(_bn_model(), 4), None
    b = copy.deepcopy(a)
    opts = dict(train="classifier", epochs=1, lr=0.02, batch_size=500, device="cpu", bf16=False, channels_last=False)
    ha = fine_tune(a, train, test, **opts)  # cached (default)
    hb = fine_tune(b, train, test, cache=False, **opts)
    assert len(ha) == 1 and ha["test_acc"].iloc[0] == pytest.approx(hb["test_acc"].iloc[0], abs=1e-6)
    for key, value in a.state_dict().items():
        assert torch.allclose(value, b.state_dict()[key], atol=1e-5), key


def test_discriminative_groups_rates_and_membership():
    model = _bn_model()
    freeze(model, "block4")
    groups = discriminative_param_groups(model, 0.1, decay=0.5)
    assert [g["name"] for g in groups] == ["head", "classifier", "block5", "block4"]
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    # The course's trainer takes them: a frozen layer stays, a slow group moves less than the head.
    data = ShapesDataset(64, 32, num_classes=4, dtype=torch.uint8)
    conv1 = model.features[0].weight.clone()
    vgg_utils.train(model, data, epochs=1, batch_size=32, device="cpu", progress=False, param_groups=groups, schedule="constant")
    assert torch.equal(conv1, model.features[0].weight)


def test_per_class_split():
    data = ShapesDataset(200, 32, num_classes=4, dtype=torch.uint8)
    few, rest = per_class_split(data, 5, seed=1)
    assert few.class_counts().tolist() == [5, 5, 5, 5] and len(rest) == 180
    assert torch.equal(per_class_split(data, 5, seed=1)[0].labels, few.labels)  # seeded
    with pytest.raises(ValueError, match="images per class"):
        per_class_split(data, 1000)


def test_source_model_falls_back_to_the_course_model(monkeypatch, capsys):
    from vgg_utils import transfer
    from vgg_utils.course_models import CourseModelError

    def offline(*args, **kwargs):
        raise vgg_utils.PretrainedUnavailableError("ImageNet weights for vgg16 are not cached (x) and h is unreachable. On a ...")

    monkeypatch.setattr(transfer, "load_pretrained", offline)
    try:
        source = load_source_model()
    except CourseModelError as err:
        pytest.skip(f"the cifar10 course model is not built on this machine ({str(err)[:80]}...)")
    line = capsys.readouterr().out.strip()
    assert line.startswith("source model: the course's cifar10 model") and "weights are unavailable" in line
    assert line.count("\n") == 0
    assert source.name == "cifar10" and source.input_size == 32 and len(source.classes) == 10
    assert source.preprocess(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).dtype == torch.float32


def test_imagenet_normalize():
    from vgg_utils.transfer import ImageNetNormalize

    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    y = ImageNetNormalize()(x)
    expected = (1 - torch.tensor(vgg_utils.IMAGENET_MEAN)) / torch.tensor(vgg_utils.IMAGENET_STD)
    assert torch.allclose(y[0, :, 0, 0], expected)


def test_cached_features_are_image_tensors():
    model = _bn_model().eval()
    freeze(model, "head")
    frozen, _ = split_frozen(model)
    data = ImageTensors(torch.zeros(6, 3, 32, 32, dtype=torch.uint8), torch.arange(6) % 2, ["a", "b"], "zeros")
    feats = cache_features(frozen, data, batch_size=4)
    assert feats.images.shape == (6, 32, 1, 1) and feats.images.dtype == torch.float32
    assert feats.classes == ["a", "b"] and feats.source == "features of zeros"


# --- Surviving mutants of transfer (mutation/README.md) --------------------------------------------


def test_fine_tune_forwards_rates_preprocessing_and_options_quietly(shapes, capsys):
    train, test = shapes
    mean = torch.tensor([0.4, 0.5, 0.45])

    def preprocess(x):
        return vgg_utils.subtract_mean(vgg_utils.to_float(x), mean)

    base = replace_head(_bn_model(), 4)
    opts = dict(train="classifier", epochs=1, lr=0.02, batch_size=500, device="cpu", preprocess=preprocess,
                bf16=False, channels_last=False)  # fmt: skip
    runs = {}
    for name, extra in (("cached", {}), ("through", {"cache": False}), ("decay 1", {"decay": 1.0})):
        runs[name] = copy.deepcopy(base)
        fine_tune(runs[name], train, test, **opts, **extra)
    assert capsys.readouterr() == ("", "")  # progress=False by default: no bar, no line
    # The preprocessing reaches the uncached run too, and decay=1 is one rate for all: same weights.
    for name in ("through", "decay 1"):
        for key, value in runs["cached"].state_dict().items():
            assert torch.allclose(value, runs[name].state_dict()[key], atol=1e-5), (name, key)
    # Other keywords go to vgg_utils.train, which checks them.
    with pytest.raises(ValueError, match="schedule"):
        fine_tune(copy.deepcopy(base), train, **opts, schedule="cosine")


def test_transfer_errors_name_the_call_and_what_is_wrong():
    not_vgg = nn.Linear(3, 4)
    calls = {
        "replace_head": lambda m: replace_head(m, 3),
        "stage_table": stage_table,
        "freeze": freeze,
        "split_frozen": split_frozen,
        "discriminative_param_groups": lambda m: discriminative_param_groups(m, 0.1),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"^{name} expects a VGG \(vgg_utils\.build_vgg"):
            call(not_vgg)
    model = build_vgg("A", 4, width=0.125, head="compact")
    with pytest.raises(
        ValueError, match=r"^decay must be in \(0, 1\] \(1: one rate for all\); got 0$"
    ):
        discriminative_param_groups(model, 0.1, decay=0)
    for p in model.parameters():  # frozen by hand, past what freeze() would ever do
        p.requires_grad_(False)
    with pytest.raises(
        ValueError,
        match=r"^every parameter is frozen: nothing to train \(call freeze\(model, train=\.\.\.\)\)$",
    ):
        split_frozen(model)


def test_freeze_report_share_and_layers_that_have_no_paper_name():
    with torch.device("meta"):
        model = build_vgg("D")
    assert str(freeze(model, "block5")) == (
        "freeze(train='block5'): 130,722,280 trainable (94.5%), 7,635,264 frozen; trainable from conv5_1 on"
    )
    compact = build_vgg("A", 4, width=0.125, head="compact")
    table = stage_table(compact).set_index("stage")
    assert table.loc["classifier", "layers"] == "-" and table.loc["head", "layers"] == "fc"
    # A hand-made head that starts with a layer the paper never named is called by its path.
    width = compact.classifier[0].in_features
    compact.classifier = nn.Sequential(nn.BatchNorm1d(width), nn.Linear(width, 4))
    report = freeze(compact, "classifier")
    assert report.first_trainable == "classifier.0"
    assert report.trainable == 2 * width + width * 4 + 4


def test_source_model_says_which_and_why(monkeypatch, capsys):
    from vgg_utils import transfer
    from vgg_utils.course_models import CourseModelError
    from vgg_utils.transfer import ImageNetNormalize

    try:
        direct = load_source_model("cifar10")
    except CourseModelError as err:
        pytest.skip(f"the cifar10 course model is not built on this machine ({str(err)[:80]}...)")
    assert direct.description.startswith(
        "the course's cifar10 model (VGG16-BN at width 0.5, 32x32 crops, "
    )
    # Asked for directly: no reason follows the description.
    assert capsys.readouterr().out == f"source model: {direct.description}\n"

    def offline(*args, **kwargs):
        raise vgg_utils.PretrainedUnavailableError(
            "ImageNet weights for vgg16 are not cached (/cache/vgg16.pth) and download.pytorch.org is "
            "unreachable (no answer within 5 s). On a connected machine run ..."
        )

    monkeypatch.setattr(transfer, "load_pretrained", offline)
    assert load_source_model().description == direct.description
    assert capsys.readouterr().out == (
        f"source model: {direct.description}; ImageNet VGG16 weights are unavailable (ImageNet weights "
        "for vgg16 are not cached), `python -m vgg_utils.download vgg16` on a connected machine fetches them\n"
    )
    with torch.device("meta"):
        vgg16 = build_vgg("D")
    monkeypatch.setattr(transfer, "load_pretrained", lambda *args, **kwargs: vgg16)
    imagenet = load_source_model()
    assert (imagenet.name, imagenet.model, imagenet.input_size) == ("imagenet-vgg16", vgg16, 224)
    assert isinstance(imagenet.preprocess, ImageNetNormalize) and len(imagenet.classes) == 1000
    assert capsys.readouterr().out == f"source model: {imagenet.description}\n"
    expected = "torchvision's ImageNet VGG16 (138,357,544 parameters, 224x224 crops)"
    assert imagenet.description == expected


def test_imagenet_normalize_stays_on_the_images_device():
    from vgg_utils.transfer import ImageNetNormalize

    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    devices = [device for device, ok in available.items() if ok]
    if not devices:
        pytest.skip(
            "no CUDA or MPS device here; this checks the mean and std follow the images there"
        )
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    on_cpu = ImageNetNormalize()(x)
    for device in devices:
        on_device = ImageNetNormalize()(x.to(device))
        assert on_device.device.type == device
        assert torch.allclose(on_device.cpu(), on_cpu, atol=1e-6)
