"""GPU-speed recipe (vgg_utils.speedrun): the device-side translate-and-flip augmentation, test-time
augmentation against a by-hand average, resumable training with it, and the named tricks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vgg_utils
from vgg_utils import ShapesDataset, build_vgg, evaluate, predict, train
from vgg_utils.speedrun import (
    FastRecipe,
    TranslateFlip,
    choose_epochs,
    evaluate_tta,
    predict_tta,
    tta_views,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small tensors, one thread


@pytest.fixture(scope="module")
def tiny():
    kwargs = dict(image_size=32, num_classes=4, dtype=torch.uint8)
    return ShapesDataset(64, **kwargs), ShapesDataset(24, split="test", **kwargs)


def test_every_augmented_image_is_a_window_of_the_padded_image_maybe_mirrored():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    augment = TranslateFlip(2, seed=3)
    out = augment(images)
    padded = F.pad(images.float() / 255, (2, 2, 2, 2), mode="reflect")
    found = set()
    for i in range(len(images)):
        matches = [
            (oy, ox, mirrored)
            for oy in range(5) for ox in range(5) for mirrored in (False, True)
            if torch.equal(out[i], (lambda w: w.flip(-1) if mirrored else w)(padded[i, :, oy : oy + 8, ox : ox + 8]))
        ]  # fmt: skip
        assert matches, f"image {i} is not a window of its padded original"
        found.update(matches)
    assert {m for _, _, m in found} == {False, True}  # both flipped and unflipped images occur
    assert {oy for oy, _, _ in found} >= {0, 4}  # the extreme offsets occur


def test_mean_is_subtracted_and_test_is_deterministic(tiny):
    train_data, _ = tiny
    augment = TranslateFlip.from_data(train_data, 0, flip=False)
    expected = train_data.images.float() / 255 - vgg_utils.mean_rgb(train_data.images)[:, None, None]
    assert torch.allclose(augment(train_data.images), expected, atol=1e-6)
    assert torch.allclose(augment.test(train_data.images), expected, atol=1e-6)
    with pytest.raises(ValueError, match="pad must be a non-negative integer"):
        TranslateFlip(-1)
    with pytest.raises(ValueError, match="padding_mode"):
        TranslateFlip(2, padding_mode="wrap")
    with pytest.raises(ValueError, match="3 numbers"):
        TranslateFlip(2, mean=[0.5, 0.5])


def test_random_numbers_come_from_a_generator_on_the_batch_device_and_restore():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    augment = TranslateFlip(2, seed=1)
    augment(images)
    assert augment.generator.device == images.device
    state = augment.state_dict()
    expected = augment(images)
    fresh = TranslateFlip(2, seed=99)
    fresh.load_state_dict(state)  # before its first batch: applied when its generator is made
    assert torch.equal(fresh(images), expected)
    assert not torch.equal(TranslateFlip(2, seed=99)(images), expected)


def test_training_with_it_resumes_exactly(tiny, tmp_path):
    train_data, _ = tiny

    def run(epochs, resume):
        torch.manual_seed(0)
        model = build_vgg("A", 4, batch_norm=True, width=0.0625, head="compact")
        train(model, train_data, epochs=epochs, batch_size=16, augment=TranslateFlip.from_data(train_data, 2),
              schedule="constant", checkpoint=tmp_path / ("r.pt" if resume else f"s{epochs}.pt"),
              resume=resume, progress=False)  # fmt: skip
        return model

    straight = run(2, False)
    run(1, True)
    resumed = run(2, True)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_tta_averages_the_posteriors_of_the_views(tiny):
    train_data, test_data = tiny
    torch.manual_seed(0)
    model = build_vgg("A", 4, batch_norm=True, width=0.0625, head="compact").eval()
    augment = TranslateFlip.from_data(train_data, 2)
    mean, plain = predict_tta(model, test_data, transform=augment.test, flip=True, translate=1, batch_size=10)
    x = augment.test(test_data.images)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    by_hand = []
    for shifted in (x, padded[..., :32, :32], padded[..., 2:, 2:]):  # (0,0), (+1,+1), (-1,-1)
        for view in (shifted, shifted.flip(-1)):
            by_hand.append(predict(model, (view, test_data.labels), transform=lambda t: t).softmax(1))
    assert torch.allclose(mean, torch.stack(by_hand).mean(0), atol=1e-5)
    assert torch.allclose(plain, by_hand[0], atol=1e-5)
    assert len(tta_views(True, 1)) == 6 and tta_views(False, 0) == [(False, 0, 0)]
    with pytest.raises(ValueError, match="translate must be a non-negative integer"):
        tta_views(True, -2)
    acc = evaluate_tta(model, test_data, transform=augment.test, flip=True, translate=1)
    assert acc["views"] == 6
    assert acc["accuracy_plain"] == pytest.approx(evaluate(model, test_data, transform=augment.test).accuracy)


def test_recipe_names_its_tricks_and_trains(tiny):
    train_data, test_data = tiny
    recipe = FastRecipe(epochs=2, batch_size=16, lr=0.05, compile=True, tta_translate=0)
    tricks = recipe.tricks("cpu")
    assert "torch.compile" in tricks and "Nesterov momentum" in tricks and "label smoothing 0.1" in tricks
    assert not any("translations" in t for t in tricks) and any("flip averaging" in t for t in tricks)
    assert "torch.compile" not in FastRecipe().tricks("cpu")
    torch.manual_seed(0)
    model = build_vgg("A", 4, batch_norm=True, width=0.0625, head="compact")
    history = recipe.fit(model, train_data, test_data)
    assert list(history["epoch"]) == [1, 2] and history["test_acc"].notna().all()
    result = recipe.test(model, test_data, recipe.augment(train_data))
    assert 0 <= result["accuracy"] <= 1 and result["views"] == 2


def test_choose_epochs_fits_the_limit():
    epochs = choose_epochs(60, 0.01, 98, 2.0)  # ~1 s an epoch, 2 s of testing, 8% margin
    assert epochs * 0.98 + 2.0 <= 60 * 0.92 < (epochs + 1) * 0.98 + 2.0
    assert choose_epochs(1, 1.0, 100, 5.0) == 1 and choose_epochs(1e6, 0.001, 10, 0, max_epochs=50) == 50
    with pytest.raises(ValueError, match="positive step time"):
        choose_epochs(60, 0.0, 98, 2.0)
