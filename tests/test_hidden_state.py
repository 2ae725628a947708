"""No hidden state (issue 15, reliability): what the notebooks call leaves nothing behind.

Every analysis function a notebook runs on a model (feature maps, the explanation methods and their
measures, receptive fields, layer tables, latency, dense evaluation, prediction) must return with
torch's global settings, random generators and matplotlib's rcParams as it found them, and the
model with no hook left and each module's own train/eval flag back -- also when the forward pass
raises half-way (a hook registered before the failure must still be removed). ``seed_everything``
must put Python's, NumPy's and torch's generators in the same state whatever ran before.
``tests/test_rerun.py`` checks the same at the scale of whole notebooks run in one kernel.
"""

from __future__ import annotations

import random

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from vgg_utils import (
    build_vgg,
    deletion_curve,
    dense_evaluation,
    effective_receptive_fields,
    empirical_receptive_field,
    evaluate,
    feature_maps,
    grad_cam,
    guided_backprop,
    insertion_curve,
    layer_table,
    measure_latency,
    multi_crop_evaluation,
    occlusion,
    peak_activation_memory,
    predict,
    saliency,
    sanity_check,
    score_maps,
    seed_everything,
    smoothgrad,
    train,
)

pytestmark = pytest.mark.usefixtures("one_thread")

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")  # fmt: skip


def global_state() -> dict:
    """Everything process-wide a function could change and forget to put back."""
    import torch.nn.modules.module as module_mod

    return {
        "threads": torch.get_num_threads(),
        "default dtype": torch.get_default_dtype(),
        "grad enabled": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "anomaly detection": torch.is_anomaly_enabled(),
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "cpu autocast": torch.is_autocast_enabled("cpu"),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "cudnn": (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic),
        # a FlopCounterMode or other mode left entered would intercept every later operation
        "torch function modes": torch._C._len_torch_function_stack(),
        "torch dispatch modes": torch._C._len_torch_dispatch_stack(),
        "global module hooks": {
            name: len(hooks) for name, hooks in vars(module_mod).items()
            if name.startswith("_global_") and isinstance(hooks, dict)
        },
        "torch generator": torch.get_rng_state().tolist(),
        "numpy generator": np.random.get_state()[1].tolist(),
        "python generator": random.getstate(),
        "rcParams": {k: repr(v) for k, v in matplotlib.rcParams.items()},
    }


def model_state(model: nn.Module) -> dict:
    return {
        "hooks": {(path, n): len(getattr(m, n, {})) for path, m in model.named_modules() for n in HOOK_DICTS},
        "training": {path: m.training for path, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
    }


def assert_same_model_state(model: nn.Module, before: dict) -> None:
    after = model_state(model)
    assert after["hooks"] == before["hooks"], "a hook was left on the model"
    assert after["training"] == before["training"], "a module's train/eval flag was not restored"
    assert after["requires_grad"] == before["requires_grad"]
    for key, value in before["weights"].items():
        assert torch.equal(value, after["weights"][key]), f"{key} changed"


def assert_same_global_state(before: dict, *, rng: bool = True) -> None:
    after = global_state()
    keys = [k for k in before if rng or "generator" not in k]
    changed = [k for k in keys if after[k] != before[k]]
    assert not changed, f"global state changed and not restored: {changed}"


class Boom(nn.Conv2d):
    """A conv that raises when run: a failure half-way through the forward pass, after the
    layers before it (and their hooks) have run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom: a layer failed half-way through the forward pass")


def small_vgg(*, fail: bool = False) -> nn.Module:
    """A tiny VGG-A (paper head at 32x32) in training mode with one module held in eval mode, so a
    function that restores modes by ``model.train(was_training)`` instead of module by module
    shows; with ``fail`` its conv3_1 raises."""
    torch.manual_seed(0)
    model = build_vgg("A", 5, batch_norm=True, width=1 / 16, input_size=32, fc_width=32)
    model.features[1].eval()  # bn1_1 held in eval mode by the caller (as freeze() does)
    if fail:
        i = [k for k, m in enumerate(model.features) if isinstance(m, nn.Conv2d)][2]  # conv3_1
        old = model.features[i]
        model.features[i] = Boom(old.in_channels, old.out_channels, 3, padding=1)
    return model


IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
UINT8 = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
MAPS = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(3))

#: What the notebooks run on a model: name -> call(model). None of them may change global state,
#: draw from the global random generators, leave a hook or change a module's mode.
CALLS = {
    "feature_maps": lambda m: feature_maps(m, IMAGES, ["conv1_1", "relu5_2", "fc6"]),
    "saliency": lambda m: saliency(m, IMAGES),
    "smoothgrad": lambda m: smoothgrad(m, IMAGES, samples=2),
    "guided_backprop": lambda m: guided_backprop(m, IMAGES),
    "grad_cam": lambda m: grad_cam(m, IMAGES),
    "occlusion": lambda m: occlusion(m, IMAGES, window=16, stride=16),
    "deletion_curve": lambda m: deletion_curve(m, IMAGES, MAPS, steps=2),
    "insertion_curve": lambda m: insertion_curve(m, IMAGES, MAPS, steps=2),
    "sanity_check": lambda m: sanity_check(m, IMAGES, ["gradient"]),
    "effective_receptive_fields": lambda m: effective_receptive_fields(m, ["conv1_1", "conv4_1"], (3, 32, 32), n_samples=2),
    "empirical_receptive_field": lambda m: empirical_receptive_field(m, "conv4_1", (3, 32, 32)),
    "layer_table": lambda m: layer_table(m, (3, 32, 32)),
    "peak_activation_memory": lambda m: peak_activation_memory(m, (3, 32, 32)),
    "measure_latency": lambda m: measure_latency(m, (3, 32, 32), repeats=1, warmup=0, threads=2),
    "dense_evaluation": lambda m: dense_evaluation(m, UINT8, 40),
    "multi_crop_evaluation": lambda m: multi_crop_evaluation(m, UINT8, 40, grid=2),
    "score_maps": lambda m: score_maps(m, UINT8),
    "predict": lambda m: predict(m, (IMAGES, torch.tensor([0, 1]))),
    "evaluate": lambda m: evaluate(m, (IMAGES, torch.tensor([0, 1]))),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_leaves_no_trace(name):
    model = small_vgg()
    seed_everything(5)
    before_global, before_model = global_state(), model_state(model)
    CALLS[name](model)
    assert_same_global_state(before_global)
    assert_same_model_state(model, before_model)


@pytest.mark.parametrize("name", list(CALLS))
def test_leaves_no_trace_when_the_forward_pass_fails(name):
    model = small_vgg(fail=True)
    seed_everything(5)
    before_global, before_model = global_state(), model_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        CALLS[name](model)
    assert_same_global_state(before_global)
    assert_same_model_state(model, before_model)


def test_train_restores_global_settings_even_when_it_fails():
    """train() seeds the global generator on purpose (dropout draws from it: documented); every
    other global setting, autocast and grad mode included, comes back, also after a failure."""
    data = (torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8) % 5)
    before = global_state()
    train(small_vgg(), data, epochs=1, batch_size=4, device="cpu", bf16=True, progress=False)
    assert_same_global_state(before, rng=False)
    with pytest.raises(RuntimeError, match="boom"):
        train(small_vgg(fail=True), data, epochs=1, batch_size=4, device="cpu", bf16=True, progress=False)
    assert_same_global_state(before, rng=False)


def test_seed_everything_sets_every_generator_whatever_ran_before():
    def states():
        return torch.get_rng_state(), np.random.get_state()[1], random.getstate()

    seed_everything(7)
    first = states()
    torch.rand(100), np.random.rand(100), random.random()  # use them all ...
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # ... and reseed them elsewhere
    generator = seed_everything(7)
    again = states()
    assert torch.equal(first[0], again[0]), "torch's global generator"
    assert np.array_equal(first[1], again[1]), "NumPy's global generator"
    assert first[2] == again[2], "Python's random module"
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(7).get_state())
    assert torch.equal(first[0], torch.Generator().manual_seed(7).get_state()), "the same as torch.manual_seed(7)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="seeds CUDA's generators: needs a CUDA device")
def test_seed_everything_seeds_cuda():
    seed_everything(7)
    first = torch.cuda.get_rng_state()
    torch.rand(10, device="cuda")
    seed_everything(7)
    assert torch.equal(first, torch.cuda.get_rng_state())
