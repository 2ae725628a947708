"""The trainer: exact resume from checkpoints, bad checkpoints, init from config A, evaluation,
and (where the shared copy exists) learning real CIFAR-10 images."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch

import vgg_utils
from vgg_utils import training
from vgg_utils.shapes import ShapesDataset

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small tensors, one thread


@pytest.fixture(scope="module")
def tiny_data():
    train = ShapesDataset(96, 32, num_classes=4, dtype=torch.uint8)
    test = ShapesDataset(40, 32, num_classes=4, split="test", dtype=torch.uint8)
    return train, test


def _tiny_model(seed: int = 0, **kwargs) -> vgg_utils.VGG:
    torch.manual_seed(seed)
    options = {"width": 0.125, "head": "paper", "fc_width": 16} | kwargs  # paper head: dropout
    return vgg_utils.build_vgg("A", 4, **options)


def _run(data, path, *, epochs=2, resume=False, schedule="plateau", model=None, **kwargs):
    train, test = data
    model = model or _tiny_model()
    augment = vgg_utils.PaperAugment.from_data(train, 32, (32, 40), seed=1)
    history = vgg_utils.train(
        model, train, test, epochs=epochs, batch_size=32, lr=0.02, schedule=schedule, augment=augment,
        device="cpu", checkpoint=path, resume=resume, progress=False, **kwargs,
    )  # fmt: skip
    return model, history


def test_train_returns_the_history(tiny_data):
    model, history = _run(tiny_data, None, epochs=2)
    assert list(history.columns) == training.HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2]
    assert history[["train_loss", "test_loss"]].notna().all().all()
    assert ((0 <= history["test_acc"]) & (history["test_acc"] <= 1)).all()
    assert history["lr"].tolist() == [0.02, 0.02]  # plateau: no drop within patience
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("schedule", ["plateau", "onecycle"])
def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch, schedule):
    straight, straight_history = _run(tiny_data, tmp_path / "straight.pt", schedule=schedule)

    # Interrupt the same run right after its first checkpoint, as Ctrl-C or a crash would.
    save = training._save

    def save_then_stop(*args):
        save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_data, tmp_path / "resumed.pt", schedule=schedule)
    monkeypatch.setattr(training, "_save", save)
    assert vgg_utils.load_checkpoint(tmp_path / "resumed.pt")["epoch"] == 1

    # A fresh process would build a differently initialised model: resume must overwrite it all.
    resumed, resumed_history = _run(
        tiny_data, tmp_path / "resumed.pt", schedule=schedule, resume=True, model=_tiny_model(seed=9)
    )
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    cols = [c for c in training.HISTORY_COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(straight_history[cols], resumed_history[cols])

    # A finished run resumes to itself without training.
    again, again_history = _run(tiny_data, tmp_path / "resumed.pt", schedule=schedule, resume=True)
    pd.testing.assert_frame_equal(again_history[cols], straight_history[cols])


def test_corrupt_checkpoints_give_a_clear_error(tiny_data, tmp_path):
    path = tmp_path / "run.pt"
    _run(tiny_data, path, epochs=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:2000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for bad in (truncated, garbage):
        with pytest.raises(vgg_utils.CheckpointError, match=f"checkpoint {bad}.*unreadable"):
            vgg_utils.load_checkpoint(bad)
        with pytest.raises(vgg_utils.CheckpointError, match="corrupt"):
            _run(tiny_data, bad, resume=True)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(vgg_utils.CheckpointError, match="not a vgg_utils training checkpoint"):
        vgg_utils.load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vgg_utils.load_checkpoint(tmp_path / "missing.pt")


def test_mismatched_checkpoints_say_what_differs(tiny_data, tmp_path):
    path = tmp_path / "run.pt"
    _run(tiny_data, path, epochs=1)
    wider = _tiny_model(width=0.25)
    with pytest.raises(vgg_utils.CheckpointError, match=r"different architecture(.|\n)*shape mismatches"):
        vgg_utils.load_checkpoint(path, wider)
    with pytest.raises(vgg_utils.CheckpointError, match=str(path)):
        _run(tiny_data, path, resume=True, model=wider)
    with pytest.raises(vgg_utils.CheckpointError, match="tensors missing"):
        vgg_utils.load_checkpoint(path, _tiny_model(batch_norm=True))
    with pytest.raises(vgg_utils.CheckpointError, match="schedule='plateau' \\(now 'onecycle'\\)"):
        _run(tiny_data, path, resume=True, schedule="onecycle")
    model = _tiny_model(seed=5)
    state = vgg_utils.load_checkpoint(path, model)  # the right architecture loads
    assert torch.equal(model.features[0].weight, state["model"]["features.0.weight"])
    assert pd.DataFrame(state["history"])["epoch"].tolist() == [1]


def test_missing_checkpoint_with_resume_starts_from_scratch(tiny_data, tmp_path, capsys):
    train, test = tiny_data
    vgg_utils.train(_tiny_model(), train, test, epochs=1, batch_size=32, device="cpu",
                    checkpoint=tmp_path / "new.pt", resume=True)  # fmt: skip
    assert "training from scratch" in capsys.readouterr().out
    assert (tmp_path / "new.pt").is_file()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"schedule": "cosine"}, ValueError, "schedule must be one of"),
        ({"batch_size": 1000}, ValueError, "exceeds the 96 training images"),
        ({"epochs": 0}, ValueError, "epochs must be a positive integer"),
        ({"lr": -1.0}, ValueError, "lr must be positive"),
    ],
)
def test_train_rejects_bad_arguments(tiny_data, kwargs, error, match):
    train, test = tiny_data
    args = {"epochs": 1, "batch_size": 32, "device": "cpu", "progress": False} | kwargs
    with pytest.raises(error, match=match):
        vgg_utils.train(_tiny_model(), train, test, **args)
    with pytest.raises(TypeError, match="ImageTensors"):
        vgg_utils.train(_tiny_model(), train.images, epochs=1)


def test_train_accepts_tensor_tuples_and_bf16(tiny_data):
    train, _ = tiny_data
    model = _tiny_model(batch_norm=True, head="compact")
    history = vgg_utils.train(model, (train.images, train.labels), epochs=1, batch_size=32,
                              device="cpu", bf16=True, channels_last=True, progress=False)  # fmt: skip
    assert history["train_loss"].notna().all() and history["test_acc"].isna().all()


def test_evaluate_and_confusion_matrix_agree(tiny_data):
    _, test = tiny_data
    model = _tiny_model()
    cm = vgg_utils.confusion_matrix(model, test, batch_size=16)
    assert cm.shape == (4, 4) and cm.dtype == torch.int64 and cm.sum() == len(test)
    assert cm.sum(1).tolist() == test.class_counts().tolist()  # rows are the true classes
    logits = vgg_utils.predict(model, test)
    naive = torch.zeros(4, 4, dtype=torch.int64)
    for truth, guess in zip(test.labels.tolist(), logits.argmax(1).tolist(), strict=True):
        naive[truth, guess] += 1
    assert torch.equal(cm, naive)
    result = vgg_utils.evaluate(model, test, batch_size=16)
    assert result.accuracy == pytest.approx(cm.diag().sum().item() / len(test))
    assert result.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, test.labels).item(), rel=1e-5)
    assert model.training  # evaluate restores the mode it found


def test_plots_have_labelled_axes(tiny_data):
    _, history = _run(tiny_data, None, epochs=2)
    history.loc[1, "lr"] = 0.002  # pretend the plateau schedule stepped down
    fig = vgg_utils.plot_history(history, title="tiny run")
    loss_ax, acc_ax = fig.axes
    assert [ax.get_ylabel() for ax in fig.axes] == ["cross-entropy loss (nats)", "accuracy (%)"]
    assert loss_ax.get_title() == "loss (dotted: lr x0.1)" and acc_ax.get_title() == "accuracy"
    assert loss_ax.get_position().x1 < acc_ax.get_position().x0  # side by side
    assert loss_ax.get_position().y0 == pytest.approx(acc_ax.get_position().y0)
    curves = [line for line in loss_ax.get_lines() if line.get_label() in ("train", "test")]
    assert [c.get_label() for c in curves] == ["train", "test"]
    assert list(curves[0].get_ydata()) == history["train_loss"].tolist()
    accs = [line for line in acc_ax.get_lines() if line.get_label() in ("train", "test")]
    assert list(accs[1].get_ydata()) == pytest.approx((100 * history["test_acc"]).tolist())
    dotted = [line for line in loss_ax.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in dotted] == [1.5]  # between epochs 1 and 2
    cm = torch.tensor([[6, 2, 0, 0], [0, 1, 3, 0], [0, 0, 5, 0], [1, 0, 0, 0]])
    fig = vgg_utils.plot_confusion_matrix(cm, ["a", "b", "c", "d"])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted class" and ax.get_title() == "confusion matrix"
    shown = ax.get_images()[0].get_array()
    assert shown[0].tolist() == [75.0, 25.0, 0.0, 0.0] and shown[1].tolist() == [0.0, 25.0, 75.0, 0.0]  # % of each row
    assert shown[3, 0] == 100.0
    texts = {t.get_text(): t.get_color() for t in ax.texts}
    assert texts["75"] == "white" and texts["25"] == "black"  # readable on dark and light cells
    matplotlib.pyplot.close("all")


def test_training_evaluates_with_the_augmentations_test_transform(tiny_data):
    # A barely trained net gives nearly the same loss for any input scaling, so comparing losses
    # alone cannot tell the transforms apart: record which images went through augment.test.
    train, test = tiny_data
    augment = vgg_utils.PaperAugment.from_data(train, 32, (32, 40), seed=1)  # as in _run
    seen = []
    original_test = augment.test

    def spy(images):
        seen.append(images.shape[0])
        return original_test(images)

    augment.test = spy
    model = _tiny_model()
    history = vgg_utils.train(
        model, train, test, epochs=2, batch_size=32, lr=0.02, augment=augment, device="cpu", progress=False
    )
    assert sum(seen) == 2 * len(test)  # every test image, once per epoch, and nothing else
    expected = vgg_utils.evaluate(model, test, transform=original_test)
    assert history["test_loss"].iloc[-1] == pytest.approx(expected.loss, rel=1e-5)


def test_tuples_with_class_names_and_the_progress_bar(tiny_data, capsys):
    train, test = tiny_data
    model = _tiny_model()
    named = (test.images, test.labels, test.classes)
    history = vgg_utils.train(model, (train.images, train.labels, train.classes), named, epochs=1,
                              batch_size=32, device="cpu")  # fmt: skip
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "3/3" in err  # 96 images, 32 per batch
    assert "loss=" in err and "acc=" in err and "test_acc=" in err
    assert vgg_utils.evaluate(model, named).accuracy == history["test_acc"].iloc[-1]


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_cpus_bf16_support(monkeypatch, native):
    """bf16 and channels-last on a CPU exactly when it multiplies bf16 natively (whether this
    one does is checked against /proc/cpuinfo in test_latency); never bf16 on MPS."""
    monkeypatch.setattr(training, "cpu_fast_bf16", lambda: native)
    assert vgg_utils.auto_bf16("cpu") is native
    assert vgg_utils.auto_channels_last("cpu") is native
    assert vgg_utils.auto_bf16("mps") is False and vgg_utils.auto_channels_last("mps") is False


# --- init from a trained configuration A ------------------------------------------------------------


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("config", ["B", "D", "E"])
def test_init_from_shallower_copies_exactly_the_papers_layers(config, batch_norm):
    torch.manual_seed(0)
    net_a = vgg_utils.build_vgg("A", 10, width=0.125, fc_width=32, batch_norm=batch_norm)
    deep = vgg_utils.build_vgg(config, 10, width=0.125, fc_width=32, batch_norm=batch_norm)
    if batch_norm:  # make BN statistics distinguishable from their defaults
        for m in net_a.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_()
                m.num_batches_tracked += 7
    before = {k: v.clone() for k, v in deep.state_dict().items()}
    copied = vgg_utils.init_from_shallower(deep, net_a)

    convs = ["conv1_1", "conv2_1", "conv3_1", "conv3_2"]
    assert copied == convs + ([n.replace("conv", "bn") for n in convs] if batch_norm else []) + ["fc6", "fc7", "fc8"]
    # Which state-dict entries should have come from A, by module path in each net.
    names_a = {v: k for k, v in vgg_utils.paper_layer_names(net_a).items()}
    names_deep = {v: k for k, v in vgg_utils.paper_layer_names(deep).items()}
    state_a, state_deep = net_a.state_dict(), deep.state_dict()
    expected = set()
    for name in copied:
        for key in net_a.get_submodule(names_a[name]).state_dict():
            expected.add(f"{names_deep[name]}.{key}")
            assert torch.equal(state_deep[f"{names_deep[name]}.{key}"], state_a[f"{names_a[name]}.{key}"])
    for key, value in state_deep.items():
        if key not in expected:
            assert torch.equal(value, before[key]), f"{key} should have kept its random init"
    assert len(expected) == 4 * (2 + 5 * batch_norm) + 3 * 2  # conv w, b (+ BN: w, b, mean, var, count)


def test_init_from_shallower_rejects_mismatches():
    net_a = vgg_utils.build_vgg("A", 10, width=0.125, fc_width=32)
    with pytest.raises(ValueError, match=r"conv1_1.weight has shape .* build both with the same width, num_classes, fc_width and input size"):
        vgg_utils.init_from_shallower(vgg_utils.build_vgg("D", 10, width=0.25, fc_width=32), net_a)
    with pytest.raises(ValueError, match="batch norm differs"):
        vgg_utils.init_from_shallower(vgg_utils.build_vgg("D", 10, width=0.125, fc_width=32, batch_norm=True), net_a)
    with pytest.raises(ValueError, match="heads differ"):
        vgg_utils.init_from_shallower(vgg_utils.build_vgg("D", 10, width=0.125, head="compact"), net_a)
    deep = vgg_utils.build_vgg("D", 10, width=0.125, fc_width=64)
    before = {k: v.clone() for k, v in deep.state_dict().items()}
    with pytest.raises(ValueError, match="fc6"):
        vgg_utils.init_from_shallower(deep, net_a)
    assert all(torch.equal(v, before[k]) for k, v in deep.state_dict().items())  # nothing half-copied
    compact_a = vgg_utils.build_vgg("A", 10, width=0.125, head="compact")
    compact_d = vgg_utils.build_vgg("D", 10, width=0.125, head="compact")
    assert vgg_utils.init_from_shallower(compact_d, compact_a)[-1] == "fc"


# --- real data ---------------------------------------------------------------------------------------


def test_vgg_a_learns_real_cifar10_images():
    """Config A (batch norm, width 0.25, compact head) on 10,000 JPEG CIFAR-10 images: two epochs
    reach well above chance (10%); the bar of 45% leaves room below the ~52% it reaches."""
    if vgg_utils.local_cifar10_folder() is None:
        pytest.skip("VGG_CIFAR10_DIR is not set (conftest sets it on machines that keep a JPEG copy)")
    start = time.perf_counter()
    train = vgg_utils.load_cifar10("train", 10_000, source="folder")
    test = vgg_utils.load_cifar10("test", 2_000, source="folder")
    torch.manual_seed(0)
    model = vgg_utils.build_vgg("A", 10, batch_norm=True, width=0.25, head="compact")
    augment = vgg_utils.PaperAugment.from_data(train, 32, color=False)  # flip + mean subtraction
    history = vgg_utils.train(model, train, test, epochs=2, batch_size=128, lr=0.1, schedule="onecycle",
                              augment=augment, device="cpu", progress=False)  # fmt: skip
    accuracy = history["test_acc"].iloc[-1]
    print(f"CIFAR-10 (JPEG copy) test accuracy {accuracy:.1%} in {time.perf_counter() - start:.0f} s")
    assert accuracy >= 0.45


def test_param_groups_give_each_group_its_rate_and_frozen_parameters_stay_out():
    torch.manual_seed(0)
    data = ShapesDataset(64, 32, dtype=torch.uint8)
    model = vgg_utils.build_vgg("A", 10, batch_norm=True, width=0.125, head="compact")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    convs = [p for n, p in model.named_parameters() if n.startswith("features")]
    head = list(model.classifier.parameters())
    # Block-wise rates: features barely move at lr 1e-9, the head moves at 0.1; lr is the default.
    history = vgg_utils.train(model, data, epochs=1, batch_size=32, lr=0.1, schedule="constant",
                              weight_decay=0.0, device="cpu", progress=False,
                              param_groups=[{"params": convs, "lr": 1e-9}, {"params": head}])  # fmt: skip
    after = model.state_dict()
    assert torch.allclose(after["features.0.weight"], before["features.0.weight"], atol=1e-6)
    assert (after["classifier.0.weight"] - before["classifier.0.weight"]).abs().max() > 1e-3
    assert history["lr"].iloc[0] == pytest.approx(0.1)  # the largest group's rate
    # Frozen parameters are not handed to the optimiser: with weight decay they would still move.
    for p in model.features.parameters():
        p.requires_grad_(False)
    frozen = model.features[0].weight.clone()
    vgg_utils.train(model, data, epochs=1, batch_size=32, lr=0.1, device="cpu", progress=False)
    assert torch.equal(model.features[0].weight, frozen)
    with pytest.raises(ValueError, match="repeats a parameter"):
        vgg_utils.train(model, data, epochs=1, batch_size=32, device="cpu", progress=False,
                        param_groups=[{"params": head}, {"params": head[:1]}])  # fmt: skip
    with pytest.raises(ValueError, match="must be a dict with 'params'"):
        vgg_utils.train(model, data, epochs=1, batch_size=32, device="cpu", progress=False, param_groups=[head])
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        vgg_utils.train(model, data, epochs=1, batch_size=32, device="cpu", progress=False)
    with pytest.raises(ValueError, match="label_smoothing"):
        vgg_utils.train(model, data, epochs=1, batch_size=32, device="cpu", progress=False, label_smoothing=1.0)


# --- the optimiser and the schedules, as properties of the trajectory --------------------------------


class _Probe(torch.nn.Module):
    """A linear classifier on the mean colour, plus one parameter whose gradient is always zero:
    only weight decay moves it, so its value shows what the optimiser does."""

    def __init__(self, k: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3, k)
        self.idle = torch.nn.Parameter(torch.ones(5))

    def forward(self, x):
        return self.fc(x.mean((2, 3))) + 0.0 * self.idle.sum()


def _fit(data, **kwargs):
    model = _Probe()
    options = {"epochs": 1, "batch_size": 32, "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
               "schedule": "constant", "device": "cpu", "bf16": False, "channels_last": False,
               "progress": False} | kwargs  # fmt: skip
    history = vgg_utils.train(model, data, **options)
    return model, history


def test_weight_decay_shrinks_by_the_stated_factor_and_momentum_accumulates(tiny_data):
    train, _ = tiny_data  # 96 images, batch 32: 3 steps per epoch
    lr, wd, steps = 0.1, 0.5, 3
    model, _ = _fit(train, lr=lr, weight_decay=wd)
    # SGD with weight decay and no gradient: p <- p (1 - lr wd) at every step.
    assert torch.allclose(model.idle, torch.full((5,), (1 - lr * wd) ** steps))
    # With momentum 0.9 the decay accumulates: v <- 0.9 v + wd p, p <- p - lr v.
    p, v = 1.0, 0.0
    for _ in range(steps):
        v = 0.9 * v + wd * p
        p -= lr * v
    model, _ = _fit(train, lr=lr, weight_decay=wd, momentum=0.9)
    assert torch.allclose(model.idle, torch.full((5,), p))
    # Nesterov looks ahead: a third trajectory.
    nesterov, _ = _fit(train, lr=lr, weight_decay=wd, momentum=0.9, nesterov=True)
    assert not torch.allclose(nesterov.idle, model.idle)
    untouched, _ = _fit(train, lr=lr)
    assert torch.equal(untouched.idle, torch.ones(5))  # no decay: only gradients move weights


def test_momentum_changes_the_trajectory_of_the_trained_weights(tiny_data):
    train, _ = tiny_data
    plain, _ = _fit(train, epochs=2)
    heavy, _ = _fit(train, epochs=2, momentum=0.9)
    moved_plain = (plain.fc.weight - _Probe().fc.weight).norm()
    moved_heavy = (heavy.fc.weight - _Probe().fc.weight).norm()
    assert moved_heavy > 1.5 * moved_plain  # 6 steps of a steady gradient: momentum goes further


def _scripted(monkeypatch, accuracies):
    """The validation accuracy each epoch reports (the model is real; only its score is set)."""
    scores = iter(accuracies)
    monkeypatch.setattr(training, "evaluate", lambda *a, **k: training.Evaluation(1.0, next(scores)))


@pytest.mark.parametrize(
    ("accuracies", "patience", "factors"),
    [
        ([0.5, 0.4, 0.3, 0.2, 0.1], 1, [1, 1, 1, 0.1, 0.1]),  # falling: x0.1 after 2 bad epochs
        ([0.1, 0.2, 0.3, 0.4, 0.5], 1, [1, 1, 1, 1, 1]),  # improving: the rate is kept
        ([0.5, 0.5, 0.5, 0.5, 0.5], 0, [1, 1, 0.1, 0.01, 0.001]),  # flat, no patience: every epoch
        ([0.5, 0.4, 0.45, 0.6, 0.3], 2, [1, 1, 1, 1, 1]),  # a new best resets the count
        ([0.5, 0.4, 0.4, 0.4, 0.4], None, [1, 1, 1, 1, 0.1]),  # the default patience: 2
    ],
)
def test_plateau_divides_the_rate_by_ten_when_accuracy_stops_improving(
    tiny_data, monkeypatch, accuracies, patience, factors
):
    train, test = tiny_data
    _scripted(monkeypatch, accuracies)
    options = {} if patience is None else {"patience": patience}
    _, history = _fit(train, test_data=test, epochs=5, schedule="plateau", **options)
    assert history["lr"].tolist() == pytest.approx([0.1 * f for f in factors])
    assert history["test_acc"].tolist() == accuracies


def test_constant_schedule_keeps_the_rate_and_onecycle_warms_up_then_anneals(tiny_data, monkeypatch):
    train, test = tiny_data
    _scripted(monkeypatch, [0.5, 0.4, 0.3, 0.2, 0.1])
    _, history = _fit(train, test_data=test, epochs=5, schedule="constant")
    assert history["lr"].tolist() == pytest.approx([0.1] * 5)  # even while the accuracy falls
    _, history = _fit(train, epochs=6, schedule="onecycle")
    lrs = history["lr"].tolist()
    peak = lrs.index(max(lrs))
    assert 0 < peak < 5 and max(lrs) <= 0.1 and lrs[-1] < lrs[0] < max(lrs) / 2  # up, then far down
    assert lrs[:peak + 1] == sorted(lrs[:peak + 1]) and lrs[peak:] == sorted(lrs[peak:], reverse=True)


def test_patience_must_be_a_non_negative_integer(tiny_data):
    train, _ = tiny_data
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="patience must be a non-negative integer"):
            _fit(train, patience=bad)


def test_evaluate_applies_the_given_transform(tiny_data):
    _, test = tiny_data
    model = _Probe()  # logits scale with the brightness the transform gives
    seen = []

    def darker(images):
        seen.append(images.dtype)
        return 1 - images.float() / 255  # a negative: not what to_float gives
    result = vgg_utils.evaluate(model, test, transform=darker, batch_size=16, bf16=False)
    assert seen == [torch.uint8] * 3  # the raw batches, once each (40 images, 16 per batch)
    logits = model(1 - test.images.float() / 255)
    assert result.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, test.labels).item(), rel=1e-5)
    plain = vgg_utils.evaluate(model, test, bf16=False)
    assert abs(result.loss - plain.loss) > 0.01
    cm = vgg_utils.confusion_matrix(model, test, transform=darker)
    guesses = vgg_utils.predict(model, test, transform=darker).argmax(1)
    assert cm.diag().sum() == (guesses == test.labels).sum()


@pytest.mark.parametrize(
    "change",
    [{"lr": 0.03}, {"batch_size": 16}, {"momentum": 0.5}, {"weight_decay": 0.0}, {"seed": 1},
     {"label_smoothing": 0.1}, {"nesterov": True}, {"n_train": 64}],
)  # fmt: skip
def test_resume_refuses_a_run_with_other_settings(tiny_data, tmp_path, change):
    path = tmp_path / "run.pt"
    _run(tiny_data, path, epochs=1)
    train, test = tiny_data
    kwargs = dict(change)
    if "n_train" in kwargs:
        train = train.subset(slice(0, kwargs.pop("n_train")))
    name = next(iter(change))
    args = {"epochs": 2, "batch_size": 32, "lr": 0.02, "schedule": "plateau", "device": "cpu",
            "checkpoint": path, "resume": True, "progress": False} | kwargs  # fmt: skip
    with pytest.raises(vgg_utils.CheckpointError, match=rf"different run: it was saved with {name}="):
        vgg_utils.train(_tiny_model(), train, test, **args)


class _Booby:
    """Unpickling this runs code: a checkpoint must never be able to do that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoints_are_read_without_running_their_code(tiny_data, tmp_path):
    path, marker = tmp_path / "run.pt", tmp_path / "pwned"
    _run(tiny_data, path, epochs=1)
    state = torch.load(path, weights_only=True)
    state["settings"]["note"] = _Booby(marker)
    torch.save(state, path)
    with pytest.raises(vgg_utils.CheckpointError, match="unreadable"):
        vgg_utils.load_checkpoint(path)
    assert not marker.exists()


# Tests added for surviving mutants (mutation/README.md): each names the bug it catches.


def test_the_defaults_are_the_papers_momentum_and_weight_decay(tiny_data):
    """Sec. 3.1: momentum 0.9, weight decay 5e-4. Measured on the weight no gradient reaches."""
    train, _ = tiny_data
    model = _Probe()
    vgg_utils.train(model, train, epochs=1, batch_size=32, lr=0.1, schedule="constant", device="cpu",
                    bf16=False, channels_last=False, progress=False)  # fmt: skip
    p, v = 1.0, 0.0
    for _ in range(3):  # 96 images, batch 32
        v = 0.9 * v + 5e-4 * p
        p -= 0.1 * v
    assert torch.allclose(model.idle, torch.full((5,), p), rtol=0, atol=1e-7)


def test_an_existing_checkpoint_is_only_read_when_resume_is_asked(tiny_data, tmp_path):
    path = tmp_path / "run.pt"
    path.write_bytes(b"not a checkpoint")  # what a new run overwrites, and resume would refuse
    train, _ = tiny_data
    history = vgg_utils.train(_Probe(), train, epochs=1, batch_size=32, lr=0.1, device="cpu",
                              checkpoint=path, progress=False)  # fmt: skip
    assert history["epoch"].tolist() == [1] and path.stat().st_size > 100


def test_train_loss_and_accuracy_are_the_epochs_means_over_its_images(tiny_data):
    """With a learning rate too small to move the weights, the epoch's training loss and accuracy
    are those of evaluate() on the same images (a per-batch sum divided, not multiplied, by the
    batch size would be off by a factor of the batch size squared)."""
    train, _ = tiny_data
    model, history = _fit(train, lr=1e-12)
    loss, acc = vgg_utils.evaluate(model, train)
    assert history["train_loss"].iloc[0] == pytest.approx(loss, rel=1e-4)  # float32 sums
    assert history["train_acc"].iloc[0] == pytest.approx(acc)


def test_channels_last_converts_the_weights_too(tiny_data):
    """channels_last=True must lay out the conv weights in NHWC as well as the inputs (the memory
    format pays only when both are)."""
    train, _ = tiny_data
    model = _tiny_model()
    vgg_utils.train(model, train, epochs=1, batch_size=32, lr=0.01, device="cpu", bf16=False,
                    channels_last=True, progress=False)  # fmt: skip
    conv = model.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_a_checkpoint_goes_into_a_folder_that_does_not_exist_yet(tiny_data, tmp_path):
    path = tmp_path / "runs" / "monday" / "run.pt"
    _fit(tiny_data[0], checkpoint=path)
    assert vgg_utils.load_checkpoint(path)["epoch"] == 1


def test_an_unreadable_checkpoint_says_why_and_what_to_do(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(Exception) as raw:
        torch.load(garbage, weights_only=True)
    cause = f"{type(raw.value).__name__}: {str(raw.value).splitlines()[0][:200]}"
    with pytest.raises(vgg_utils.CheckpointError) as err:
        vgg_utils.load_checkpoint(garbage)
    assert str(err.value) == (
        f"checkpoint {garbage} is unreadable ({cause}); "
        "the file is corrupt or not a torch checkpoint: delete it to train from scratch"
    )


def test_an_architecture_mismatch_lists_what_differs_one_line_each(tiny_data, tmp_path):
    path = tmp_path / "run.pt"
    train, _ = tiny_data
    vgg_utils.train(
        _tiny_model(), train, epochs=1, batch_size=32, device="cpu", checkpoint=path, progress=False
    )
    head = f"checkpoint {path} was saved from a different architecture than this model:"
    hint = "  build the model with the same config/width/batch_norm/head, or delete the file"
    with pytest.raises(vgg_utils.CheckpointError) as err:
        vgg_utils.load_checkpoint(path, _tiny_model(width=0.25))
    lines = str(err.value).split("\n")
    assert len(lines) == 3 and lines[0] == head and lines[2] == hint
    count = int(lines[1].split()[0])
    assert count > 3 and lines[1].startswith(f"  {count} shape mismatches, e.g. ")
    assert lines[1].count(" vs model ") == 3  # three examples, not all of them
    longer = _tiny_model()
    longer.classifier.append(torch.nn.Linear(4, 4))  # only tensors the checkpoint lacks
    with pytest.raises(vgg_utils.CheckpointError) as err:
        vgg_utils.load_checkpoint(path, longer)
    assert str(err.value).split("\n")[1:] == [
        "  2 tensors missing from the checkpoint, e.g. ['classifier.7.weight', 'classifier.7.bias']",
        hint,
    ]
    shorter = _tiny_model()
    del shorter.classifier[6]  # only tensors the model lacks
    with pytest.raises(vgg_utils.CheckpointError) as err:
        vgg_utils.load_checkpoint(path, shorter)
    assert str(err.value).split("\n")[1:] == [
        "  2 tensors the model lacks, e.g. ['classifier.6.weight', 'classifier.6.bias']",
        hint,
    ]


def test_resume_refusals_say_how_to_go_on(tiny_data, tmp_path):
    train, _ = tiny_data
    cycle = tmp_path / "cycle.pt"
    _fit(train, schedule="onecycle", checkpoint=cycle)
    with pytest.raises(
        vgg_utils.CheckpointError,
        match=r"is a one-cycle run planned for a different number of epochs; a one-cycle schedule cannot be extended: train with the same epochs$",
    ):
        _fit(train, schedule="onecycle", checkpoint=cycle, resume=True, epochs=2)
    with pytest.raises(
        vgg_utils.CheckpointError,
        match=r"saved with lr=0\.1 \(now 0\.05\); resume with the same settings, or delete the file to start over$",
    ):
        _fit(train, schedule="onecycle", checkpoint=cycle, resume=True, lr=0.05)


def test_gpu_and_mps_generators_are_saved_and_restored(tiny_data, tmp_path, monkeypatch):
    """On a GPU (CUDA or Apple's MPS) dropout draws from the device's generator: a checkpoint must
    hold its state and resume must put it back. Faked here, since the tests run on CPUs."""
    cuda, mps = [torch.tensor([1, 2], dtype=torch.uint8)], torch.tensor([3, 4], dtype=torch.uint8)
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: cuda)
    monkeypatch.setattr(
        torch.cuda, "set_rng_state_all", lambda states: restored.setdefault("cuda", states)
    )
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: mps)
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda state: restored.setdefault("mps", state))
    path = tmp_path / "run.pt"
    _fit(tiny_data[0], checkpoint=path)
    rng = vgg_utils.load_checkpoint(path)["rng"]
    assert torch.equal(rng["cuda"][0], cuda[0]) and torch.equal(rng["mps"], mps)
    _fit(tiny_data[0], checkpoint=path, resume=True, epochs=2)
    assert list(restored) == ["cuda", "mps"]
    assert torch.equal(restored["cuda"][0], cuda[0]) and torch.equal(restored["mps"], mps)


# --- what a learner reads: messages, the progress bar, and the precision actually used -----------


def test_a_head_of_the_wrong_size_names_the_caller_and_the_classes(tiny_data):
    """The message says who failed and lists the classes: inferred from tuple labels they are
    "0", "1", ...; four are listed in full, more end with "..."."""
    train, _ = tiny_data
    with pytest.raises(
        ValueError,
        match=r"^train: the model outputs 3 class scores but the data has 4 classes \(0, 1, 2, 3\)\. Build",
    ):
        vgg_utils.train(_Probe(3), (train.images, train.labels), epochs=1, batch_size=32,
                        device="cpu", progress=False)  # fmt: skip
    ten = (torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10))
    with pytest.raises(
        ValueError,
        match=r"^evaluate: the model outputs 4 class scores but the data has 10 classes "
        r"\(0, 1, 2, 3, \.\.\.\)\. Build",
    ):
        vgg_utils.evaluate(_Probe(4), ten)


def test_a_fully_frozen_model_gets_the_whole_message(tiny_data):
    model = _Probe()
    model.requires_grad_(False)
    with pytest.raises(
        ValueError,
        match=r"^every parameter of the model is frozen \(requires_grad=False\): nothing to train$",
    ):
        vgg_utils.train(model, tiny_data[0], epochs=1, batch_size=32, device="cpu", progress=False)


def test_a_class_never_predicted_still_gets_its_column(tiny_data):
    """A net that always answers class 0 (as an untrained one may): the matrix is still K x K."""
    _, test = tiny_data
    model = _Probe()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    cm = vgg_utils.confusion_matrix(model, test)
    assert cm.shape == (4, 4)
    assert cm[:, 0].tolist() == test.class_counts().tolist() and cm[:, 1:].sum() == 0


def test_batch_norm_mismatch_says_which_net_has_it():
    net_a = vgg_utils.build_vgg("A", 10, width=0.125, fc_width=32)
    deep_bn = vgg_utils.build_vgg("D", 10, width=0.125, fc_width=32, batch_norm=True)
    message = r"deep net batch_norm=True, shallow net batch_norm=False;"
    with pytest.raises(ValueError, match=message):
        vgg_utils.init_from_shallower(deep_bn, net_a)


@pytest.mark.parametrize("supported", [True, False])
def test_auto_bf16_on_cuda_asks_the_gpu(monkeypatch, supported):
    """On CUDA the GPU decides (the CPU's bf16 support does not matter); faked: tests run on CPUs."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    monkeypatch.setattr(training, "cpu_fast_bf16", lambda: not supported)
    assert vgg_utils.auto_bf16("cuda") is supported
    assert vgg_utils.auto_channels_last("cuda") is True


@pytest.mark.parametrize("native", [True, False])
def test_an_explicit_bf16_choice_wins_over_the_default(tiny_data, monkeypatch, native):
    """predict(bf16=...) and the test evaluation inside train(bf16=...) use the precision asked
    for, whatever the CPU's default would be."""
    train, test = tiny_data
    monkeypatch.setattr(training, "cpu_fast_bf16", lambda: native)  # the default: bf16 iff native
    model = _Probe()
    with torch.no_grad():
        model.fc.weight.mul_(30)  # confident logits: bf16 rounding shows in the loss
    fp32 = vgg_utils.predict(model, test, bf16=False)
    bf16 = vgg_utils.predict(model, test, bf16=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        by_hand = model(test.images.float() / 255).float()
    assert torch.equal(bf16, by_hand) and not torch.equal(fp32, bf16)
    asked = not native
    history = vgg_utils.train(model, train, test, epochs=1, batch_size=32, lr=1e-12, device="cpu",
                              bf16=asked, channels_last=False, progress=False)  # fmt: skip
    expected, other = (vgg_utils.evaluate(model, test, bf16=b).loss for b in (asked, native))
    assert expected != other  # the two precisions give distinguishable losses
    assert history["test_loss"].iloc[0] == expected


def test_label_smoothing_reaches_the_training_loss(tiny_data):
    """With a rate too small to move the weights, the epoch's loss is the smoothed cross-entropy
    of the untouched model's logits (and differs from the unsmoothed one)."""
    train, _ = tiny_data
    model, history = _fit(train, lr=1e-12, label_smoothing=0.3)
    logits = vgg_utils.predict(model, train, bf16=False)
    smoothed = torch.nn.functional.cross_entropy(logits, train.labels, label_smoothing=0.3).item()
    plain = torch.nn.functional.cross_entropy(logits, train.labels).item()
    assert history["train_loss"].iloc[0] == pytest.approx(smoothed, rel=1e-5)
    assert abs(smoothed - plain) > 1e-3


def test_the_progress_bar_counts_batches_and_shows_running_then_final_numbers(tiny_data, capsys):
    """Text bar (as in a terminal): unit "batch"; the running loss and accuracy after the first
    batch and at the end of the epoch; then the epoch's numbers with the test accuracy."""
    train, test = tiny_data
    model = _tiny_model()
    history = vgg_utils.train(model, train, test, epochs=1, batch_size=32, device="cpu",
                              bf16=False, channels_last=False)  # fmt: skip
    frames = [f for f in capsys.readouterr().err.split("\r") if f.strip()]
    assert all("batch/s" in f for f in frames)  # tqdm's rate, in the unit given
    row = history.iloc[0]
    running = [f for f in frames if "loss=" in f and "test_acc=" not in f]
    assert running[0].startswith("epoch 1/1:  33%") and " 1/3 " in running[0]
    correct = float(running[0].split("acc=")[1].split(",")[0]) * 32  # of the first 32 images
    assert abs(correct - round(correct)) < 0.02
    end_of_epoch = running[-1].rstrip()  # the running means over all its images
    assert " 3/3 " in end_of_epoch
    assert end_of_epoch.endswith(f"acc={row.train_acc:.3f}, loss={row.train_loss:.3f}]")
    final = f"acc={row.train_acc:.3f}, loss={row.train_loss:.3f}, test_acc={row.test_acc:.3f}]"
    assert frames[-1].rstrip().endswith(final)
