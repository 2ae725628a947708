"""The ablation grid (notebook 04) beyond test_experiments.py: multi-scale testing averages every
scale, an interrupted grid resumes where it stopped, and bad arguments are refused clearly."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from vgg_utils import ImageTensors, PaperAugment, ablations
from vgg_utils.ablations import evaluate_scales, run_grid
from vgg_utils.shapes import ShapesDataset

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: small tensors, one thread


class _ByScale(torch.nn.Module):
    """Logits that depend only on the input size: a different answer at each test scale Q."""

    def __init__(self, logits: dict[int, list[float]]):
        super().__init__()
        self.logits = logits
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.tensor(self.logits[x.shape[-1]]).expand(len(x), -1) + self.w


def test_multi_scale_averages_the_posteriors_of_every_scale():
    """Class 3 is never the top class at any single scale (each scale prefers another class),
    but it has the highest posterior on average: only an average over all the scales picks it
    (not the last scale, not the first, not a vote)."""
    classes = ["a", "b", "c", "d"]
    data = ImageTensors(torch.zeros(6, 3, 32, 32), torch.full((6,), 3), classes)
    model = _ByScale({32: [3.0, 0.0, -3.0, 2.6], 40: [-3.0, 3.0, 0.0, 2.6], 48: [0.0, -3.0, 3.0, 2.6]})
    accuracy = evaluate_scales(model, PaperAugment(32), data, [32, 40, 48])
    assert accuracy == {"32": 0.0, "40": 0.0, "48": 0.0, "multi": 1.0}
    # Posteriors (softmax), not logits, are averaged: one over-confident scale does not outvote
    # two that agree. The mean logit would pick class 1 here; the mean posterior picks class 0.
    sharp = _ByScale({32: [0.0, 20.0, 0.0, 0.0], 40: [5.0, 0.0, 0.0, 0.0], 48: [5.0, 0.0, 0.0, 0.0]})
    zeros = ImageTensors(torch.zeros(6, 3, 32, 32), torch.zeros(6, dtype=torch.int64), classes)
    assert evaluate_scales(sharp, PaperAugment(32), zeros, [32, 40, 48])["multi"] == 1.0


@pytest.fixture(scope="module")
def tiny():
    train = ShapesDataset(64, 32, num_classes=4, dtype=torch.uint8)
    test = ShapesDataset(32, 32, num_classes=4, split="test", dtype=torch.uint8)
    return train, test


GRID = {"epochs": 1, "width": 0.0625, "batch_size": 32, "lr": 0.05, "test_scales": (32, 40), "device": "cpu"}


def test_an_interrupted_grid_resumes_where_it_stopped(tiny, tmp_path, monkeypatch):
    """Seeds 0 and 1 of the lrn experiment (A, A-LRN): the grid is interrupted after its third
    run; resuming from the CSV trains only the fourth and keeps the three finished ones."""
    train, test = tiny
    out = tmp_path / "grid.csv"
    real_run_one, trained = ablations.run_one, []

    def run_one_then_crash(config, scale, seed, *args, **kwargs):
        if len(trained) == 3:
            raise KeyboardInterrupt  # Ctrl-C, a closed laptop, a Colab time-out
        trained.append((config, seed))
        return real_run_one(config, scale, seed, *args, **kwargs)

    monkeypatch.setattr(ablations, "run_one", run_one_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_grid(["lrn"], train_data=train, test_data=test, seeds=(0, 1), out=out, log=lambda _: None, **GRID)
    partial = pd.read_csv(out)
    assert trained == [("A", 0), ("A-LRN", 0), ("A", 1)]
    assert len(partial) == 3 * 3  # three runs x (two test scales + multi-scale)

    trained.clear()
    lines: list[str] = []
    table = run_grid(["lrn"], train_data=train, test_data=test, seeds=(0, 1), out=out, done=partial,
                     log=lines.append, **GRID)  # fmt: skip
    assert trained == [("A-LRN", 1)]  # only the missing run
    assert sum("already in the CSV, skipped" in line for line in lines) == 3
    assert len(table) == 4 * 3 and len(pd.read_csv(out)) == 4 * 3
    runs = table.groupby(["config", "seed"]).size()
    assert runs.to_dict() == {("A", 0): 3, ("A", 1): 3, ("A-LRN", 0): 3, ("A-LRN", 1): 3}
    kept = table.iloc[: len(partial)][partial.columns]
    pd.testing.assert_frame_equal(
        kept.drop(columns=["wall_time_s"]).reset_index(drop=True),
        partial.drop(columns=["wall_time_s"]),
        check_dtype=False,
    )
    # A run resumed is the run it would have been: seeded, so the same numbers as a fresh one.
    fresh = run_grid(["lrn"], train_data=train, test_data=test, seeds=(1,), log=lambda _: None, **GRID)
    resumed = table[(table["config"] == "A-LRN") & (table["seed"] == 1)]["test_acc"].tolist()
    assert resumed == fresh[fresh["config"] == "A-LRN"]["test_acc"].tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"epochs": 1.5}, "epochs must be a positive integer"),
        ({"batch_size": True}, "batch_size must be a positive integer"),
        ({"seeds": ()}, "seeds is empty"),
        ({"test_scales": ()}, "test_scales must be integers >= 32"),
        ({"test_scales": (32, 16)}, "test_scales must be integers >= 32"),
        ({"test_scales": (32.0,)}, "test_scales must be integers >= 32"),
        ({"experiments": ["width"]}, "unknown experiments"),
        ({"default_scale": "48-32"}, "training scale needs 0 < S_min <= S_max"),
    ],
)
def test_run_grid_refuses_bad_arguments_before_training(tiny, monkeypatch, kwargs, match):
    train, test = tiny
    monkeypatch.setattr(ablations, "run_one", lambda *a, **k: pytest.fail("trained despite a bad argument"))
    args = {"train_data": train, "test_data": test, "log": lambda _: None} | GRID | kwargs
    experiments = args.pop("experiments", ["lrn"])
    with pytest.raises(ValueError, match=match):
        run_grid(experiments, **args)
