"""build_vgg: the paper's exact parameter counts, torchvision compatibility, clear errors."""

import functools
import threading
import time

import pytest
import torch
import torchvision

import vgg_utils
from vgg_utils import CONFIGS, PretrainedUnavailableError, build_vgg, count_params, load_pretrained

TABLE2_EXACT = {
    "A": 132_863_336,
    "A-LRN": 132_863_336,
    "B": 133_047_848,
    "C": 133_638_952,
    "D": 138_357_544,
    "E": 143_667_240,
}


def meta_model(config, **kw):
    with torch.device("meta"):
        return build_vgg(config, **kw)


@pytest.mark.parametrize("config, expected", TABLE2_EXACT.items())
def test_exact_parameter_counts(config, expected):
    assert count_params(meta_model(config)) == expected


def test_table2_rounded_millions():
    rounded = [round(count_params(meta_model(c)) / 1e6) for c in CONFIGS]
    assert rounded == [133, 133, 133, 134, 138, 144]


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vgg19"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_torchvision_weights_load_strictly_and_give_identical_outputs(name, batch_norm):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name + ("_bn" if batch_norm else ""))().eval()
    ours = build_vgg(name, batch_norm=batch_norm).eval()
    assert list(ours.state_dict()) == list(tv.state_dict())
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=0)


def test_width_scales_conv_channels_and_compact_head():
    model = build_vgg("D", num_classes=10, width=0.25, head="compact")
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs][:3] == [16, 16, 32]
    assert convs[-1].out_channels == 128
    assert isinstance(model.classifier[-1], torch.nn.Linear)
    assert model.classifier[-1].in_features == 128
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_batch_norm_and_lrn_layers():
    bn = build_vgg("A", batch_norm=True, width=0.125)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn.features) == 8
    lrn = build_vgg("A-LRN", width=0.125)
    kinds = [type(m).__name__ for m in lrn.features[:4]]
    assert kinds == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    one_by_one = [m for m in build_vgg("C", width=0.125).features if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(one_by_one) == 3


def _kurtosis(w: torch.Tensor) -> float:
    z = (w.flatten().double() - w.double().mean()) / w.double().std()
    return z.pow(4).mean().item()  # 3 for a normal distribution, 1.8 for a uniform one


@pytest.mark.parametrize("scheme", ["kaiming", "paper", "glorot"])
def test_init_schemes_give_the_stated_distributions(scheme):
    """Every conv and FC layer, measured: the standard deviation within 5 standard errors of the
    scheme's, and the shape of the distribution (normal or uniform) from its kurtosis. PyTorch's
    own default (uniform, std 1/sqrt(3 fan_in)) fails all three schemes."""
    torch.manual_seed(0)
    model = build_vgg("A", num_classes=10, width=0.25, fc_width=512, input_size=64, batch_norm=True, init=scheme)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 8 + 3
    for i, layer in enumerate(layers):
        w = layer.weight.detach()
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(w)
        conv = isinstance(layer, torch.nn.Conv2d)
        if scheme == "glorot":
            bound = (6 / (fan_in + fan_out)) ** 0.5
            std, shape = bound / 3**0.5, 1.8
            assert w.abs().max() <= bound
        elif scheme == "kaiming" and conv:
            std, shape = (2 / fan_out) ** 0.5, 3.0  # He et al., fan-out mode, for ReLU
        else:
            std, shape = 0.01, 3.0  # the paper's N(0, 0.01); FC layers under kaiming too
        error = std * (0.5 / w.numel()) ** 0.5  # standard error of a sample standard deviation
        assert abs(w.std().item() - std) < 5 * error + 1e-3 * std, (i, w.std().item(), std)
        assert abs(w.mean().item()) < 5 * std / w.numel() ** 0.5, i
        if w.numel() >= 20_000:
            assert abs(_kurtosis(w) - shape) < 0.25, (i, _kurtosis(w))
        assert torch.all(layer.bias == 0)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    with pytest.raises(ValueError, match="valid schemes"):
        build_vgg("A", width=0.25, init="xavier-ish")


def test_bad_inputs_give_clear_errors():
    model = build_vgg("D", num_classes=10, width=0.125, head="compact")
    with pytest.raises(ValueError, match=r"build_vgg\('D'\) expects inputs of at least 32x32 pixels \(five 2x2 poolings\); got 16x16"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="expects 3 input channels; got 1"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"add a batch dimension"):
        model(torch.randn(3, 64, 64))
    for width in (-1, 0, float("nan")):
        with pytest.raises(ValueError, match="width must be"):
            build_vgg("D", width=width)
    with pytest.raises(ValueError, match="unknown VGG configuration 'Z'.*valid names"):
        build_vgg("Z")
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        build_vgg("A", num_classes=0)
    with pytest.raises(ValueError, match="head must be"):
        build_vgg("A", head="tiny")


def test_load_pretrained_offline_fails_fast_and_says_how(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        # Simulate a machine without network even where the test runner has one.
        monkeypatch.setattr(vgg_utils.models, "_reachable", lambda url, timeout: False)
        start = time.monotonic()
        with pytest.raises(PretrainedUnavailableError, match=r"python -m vgg_utils.download vgg16"):
            load_pretrained("D")
        assert time.monotonic() - start < 10
        with pytest.raises(ValueError, match="no ImageNet weights for config 'C'"):
            load_pretrained("C")
    finally:
        torch.hub.set_dir(old)


def test_reachability_probe_is_bounded():
    start = time.monotonic()
    # A port nothing listens on: refused or timed out, never hanging past the bound.
    assert vgg_utils.models._reachable("https://127.0.0.1:9/x", timeout=2.0) is False
    assert time.monotonic() - start < 5


def test_a_damaged_or_malicious_weight_file_is_refused_without_running_it(tmp_path):
    """The cache is read with weights_only=True: a pickle that would run code is refused."""

    class Booby:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        path = vgg_utils.weights_path("A")
        path.parent.mkdir(parents=True)
        torch.save({"features.0.weight": Booby()}, path)
        with pytest.raises(PretrainedUnavailableError, match=r"(?s)is unreadable.*delete it"):
            load_pretrained("vgg11")
        assert not (tmp_path / "pwned").exists()
        path.write_bytes(b"half a download")
        with pytest.raises(PretrainedUnavailableError, match="is unreadable"):
            load_pretrained("vgg11")
    finally:
        torch.hub.set_dir(old)


def test_load_pretrained_reads_the_torch_hub_cache(tmp_path):
    """The real loading path, on a weight file the test writes where torch.hub caches downloads."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        torch.manual_seed(1)
        source = torchvision.models.vgg11().eval()
        path = vgg_utils.weights_path("A")
        path.parent.mkdir(parents=True)
        torch.save(source.state_dict(), path)
        model = load_pretrained("vgg11")
        assert not model.training
        x = torch.randn(1, 3, 64, 64)
        with torch.inference_mode():
            torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    finally:
        torch.hub.set_dir(old)


def test_imagenet_categories_ship_with_torchvision():
    cats = vgg_utils.imagenet_categories()
    assert len(cats) == 1000 and cats[0] == "tench"


# Tests added for surviving mutants (mutation/README.md): each names the bug it catches.


def test_dropout_and_input_size_are_checked_with_clear_errors():
    for dropout in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
            build_vgg("A", width=0.125, dropout=dropout)
    for size in (64.0, 48, 16, True):
        with pytest.raises(ValueError, match="input_size must be a multiple of 32"):
            build_vgg("A", width=0.125, input_size=size)


def test_an_input_too_small_on_one_side_only_is_refused():
    model = build_vgg("A", num_classes=10, width=0.125, head="compact")
    for shape in ((1, 3, 16, 64), (1, 3, 64, 16)):
        with pytest.raises(ValueError, match="at least 32x32 pixels"):
            model(torch.randn(*shape))


def test_a_paper_head_names_its_crop_and_pool5_map_when_the_size_is_wrong():
    model = build_vgg("A", num_classes=10, width=0.125, fc_width=32, input_size=96)
    with pytest.raises(
        ValueError,
        match=r"sized for 96x96 crops \(FC6 takes the 3x3 pool5 map\); got 64x64\. Resize or crop to 96, or "
        r"use vgg_utils\.to_fully_convolutional\(model\) for any size larger than that \(notebook 05\)$",
    ):
        model(torch.randn(1, 3, 64, 64))


def test_the_smallest_input_size_is_accepted():
    """32 is the smallest crop (five 2x2 poolings leave one pool5 cell), so the paper head takes it."""
    model = build_vgg("A", num_classes=10, width=0.125, fc_width=32, input_size=32)
    assert model.input_size == 32 and model.classifier[0].in_features == 64
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_hosts_are_probed_once_each_and_a_hung_probe_is_given_up(monkeypatch):
    """reachable_hosts: one key per host (the first URL of each stands for it); a probe that hangs
    (a DNS lookup the socket timeout does not cover) is reported unreachable after
    ``timeout + 1`` s, in a daemon thread that cannot keep Python alive."""
    release, probed = threading.Event(), []

    def probe(url, timeout):
        probed.append(url)
        if "hung" in url:
            release.wait()  # never set while reachable_hosts waits: only its own join can end this
        return "up" in url

    monkeypatch.setattr(vgg_utils.models, "_reachable", probe)
    before = set(threading.enumerate())
    try:
        answers = vgg_utils.models.reachable_hosts(
            ["http://up.example/a", "http://up.example/b", "http://down.example/", "http://hung.example/"], 0.05
        )
        hung = [t for t in threading.enumerate() if t not in before]
        assert len(hung) == 1 and hung[0].daemon
    finally:
        release.set()
    assert answers == {"up.example": True, "down.example": False, "hung.example": False}
    assert sorted(probed) == ["http://down.example/", "http://hung.example/", "http://up.example/a"]


def test_the_probe_thread_never_keeps_python_alive(monkeypatch):
    """A DNS lookup can hang for minutes: the probe runs in a daemon thread, so a notebook or
    script that gave up on it can still exit."""
    started: list[threading.Thread] = []

    class Recorded(threading.Thread):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(vgg_utils.models.threading, "Thread", Recorded)
    vgg_utils.models._reachable("http://127.0.0.1:9/", timeout=1.0)
    assert started and all(t.daemon for t in started)


def test_batch_norm_weights_offline_error_names_the_bn_file(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        monkeypatch.setattr(vgg_utils.models, "_reachable", lambda url, timeout: False)
        with pytest.raises(PretrainedUnavailableError) as err:
            load_pretrained("D", batch_norm=True)
        assert "python -m vgg_utils.download vgg16_bn" in str(err.value)
        assert str(vgg_utils.weights_path("D", batch_norm=True)) in str(err.value)
        with pytest.raises(PretrainedUnavailableError, match=r"download vgg16\n"):
            load_pretrained("D")
    finally:
        torch.hub.set_dir(old)


def test_a_download_is_unpickled_safely_and_its_failure_named(tmp_path, monkeypatch):
    """The download path reads with weights_only=True (no code runs from a pickle), and a broken
    connection is reported with its exception's name."""
    calls: list[dict] = []

    def broken(url, **kwargs):
        calls.append(kwargs)
        raise ConnectionResetError("connection reset by peer")

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        monkeypatch.setattr(vgg_utils.models, "_reachable", lambda url, timeout: True)
        monkeypatch.setattr(torch.hub, "load_state_dict_from_url", broken)
        with pytest.raises(PretrainedUnavailableError, match=r"failed \(ConnectionResetError: connection reset"):
            load_pretrained("vgg11", progress=False)
        assert calls and calls[0].get("weights_only") is True and calls[0].get("check_hash") is True
    finally:
        torch.hub.set_dir(old)


def test_a_cached_file_with_missing_weights_is_refused(tmp_path, monkeypatch):
    """A weight file that lacks a layer must not give a half-random network (a narrow VGG-A
    stands in for the 500 MB one: the loading path is the same)."""
    tiny = functools.partial(build_vgg, width=0.125, num_classes=10, fc_width=16)
    monkeypatch.setattr(vgg_utils.models, "build_vgg", tiny)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        state = tiny("A").state_dict()
        del state["classifier.6.bias"]
        path = vgg_utils.weights_path("A")
        path.parent.mkdir(parents=True)
        torch.save(state, path)
        with pytest.raises(RuntimeError, match=r"Missing key\(s\).*classifier\.6\.bias"):
            load_pretrained("vgg11")
    finally:
        torch.hub.set_dir(old)
