"""The exercise checks of notebooks 01-04 pass the shipped solution and fail a wrong answer.

Each check cell is read from the committed notebook by its cell id and run in a fresh namespace
that holds what the notebook defined before it; the answer comes from running the notebook's own
solution cell, and is then replaced by typical wrong answers. A check that passes a wrong answer
teaches nothing, and a check cell that sets the answer itself gives it away.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from vgg_utils import (
    REPO_ROOT,
    PaperAugment,
    ShapesDataset,
    build_vgg,
    count_params,
    layer_table,
    model_zoo_table,
    receptive_field_table,
    sample_crop_offsets,
    summarize,
)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@cache
def _cells(notebook: str) -> dict[str, dict]:
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    return {c["id"]: c for c in cells}


def _source(notebook: str, cell_id: str) -> str:
    cell = _cells(notebook)[cell_id]
    assert cell["cell_type"] == "code", f"{notebook} cell {cell_id} is not a code cell"
    return "".join(cell["source"])


def _run(notebook: str, cell_id: str, namespace: dict) -> None:
    exec(compile(_source(notebook, cell_id), f"{notebook}[{cell_id}]", "exec"), namespace)


@dataclass(frozen=True)
class Exercise:
    notebook: str
    solution: str  # the learner's cell (shipped with a worked answer)
    check: str  # the check cell the learner runs after it
    answers: tuple[str, ...]  # names the learner's cell defines and the check reads
    setup: Callable[[], dict]  # what the notebook defined before the exercise
    wrong: Callable[[dict], list[dict]]  # typical wrong answers, given the solved namespace


@cache
def _meta(config: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build_vgg(config, **kwargs)


@cache
def _table(head: str = "paper") -> pd.DataFrame:
    return layer_table("D", head=head)


@cache
def _zoo() -> pd.DataFrame:
    return model_zoo_table()


def _setup_01() -> dict:
    namespace = {"torch": torch, "count_params": count_params, "build_vgg": build_vgg, "layer_table": layer_table,
                 "models": {"C": _meta("C")}, "table": _table(), "vgg16": _meta("D")}
    _run("01_architecture.ipynb", "2f8dbc68", namespace)  # exercise 1's conv() and fc(), used again in exercise 3
    return namespace


def _setup_02() -> dict:
    return {"torch": torch, "nn": nn, "receptive_field_table": receptive_field_table}


def _setup_03() -> dict:
    return {"zoo": _zoo(), "table": _table(), "compact": _table("compact"), "count_params": count_params,
            "build_vgg": build_vgg}


def _setup_04_crops() -> dict:
    return {"torch": torch, "math": math, "sample_crop_offsets": sample_crop_offsets}


def _setup_04_multiscale() -> dict:
    torch.manual_seed(0)
    train = ShapesDataset(64, image_size=32, dtype=torch.uint8, split="train")
    test = ShapesDataset(48, image_size=32, dtype=torch.uint8, split="test")
    model = build_vgg("A", len(train.classes), batch_norm=True, width=1 / 16, head="compact").eval()
    augment = PaperAugment.from_data(train, 32, (32, 48), test_scale=40, seed=0)
    return {"torch": torch, "model": model, "augment": augment, "test_data": test}


def _setup_04_grid() -> dict:
    results = pd.read_csv(REPO_ROOT / "data" / "results" / "ablations_cifar10.csv",
                          dtype={"train_scale": str, "test_scale": str})
    return {"results": results, "summarize": summarize}


def _wrong_03_cheapest(ns: dict) -> list[dict]:
    # The mistake the old check let through: VGG16's row taken for VGG19's, the answer then consistent with it.
    zoo = ns["zoo"]
    vgg16 = zoo[(zoo["model"] == "vgg16") & zoo["default"]].iloc[0]
    cheapest = zoo[zoo["acc1"] >= vgg16["acc1"]].sort_values("gmacs").iloc[0]
    return [{"vgg19": vgg16, "answer_2": (cheapest["model"], round(vgg16["gmacs"] / cheapest["gmacs"]))},
            {"answer_2": (ns["answer_2"][0], ns["answer_2"][1] + 1)},
            {"answer_2": ("efficientnet_b0", ns["answer_2"][1])}]


EXERCISES = {
    "01 ex1 parameters of C": Exercise(
        "01_architecture.ipynb", "2f8dbc68", "cf1d40f3", ("params_C",), _setup_01,
        lambda ns: [{"params_C": count_params(_meta("D"))}, {"params_C": ns["params_C"] - 1000}]),
    "01 ex2 MACs of conv3_1": Exercise(
        "01_architecture.ipynb", "e5a37cd5", "c8974357", ("macs_conv3_1",), _setup_01,
        lambda ns: [{"macs_conv3_1": 56 * 56 * 256 * 3 * 3 * 256}, {"macs_conv3_1": 2 * ns["macs_conv3_1"]}]),
    "01 ex3 compact head": Exercise(
        "01_architecture.ipynb", "46cc1d6f", "7c46c656", ("params_compact",), _setup_01,
        lambda ns: [{"params_compact": ns["conv_params"]}, {"params_compact": ns["conv_params"] + 512 * 1000}]),
    "01 ex4 pool5 at 384": Exercise(
        "01_architecture.ipynb", "34126a65", "ed89a90c", ("pool5_side_384",), _setup_01,
        lambda ns: [{"pool5_side_384": 7}, {"pool5_side_384": 24}, {"pool5_side_384": 13}]),
    "02 ex1 rf of E's conv5_4": Exercise(
        "02_receptive_fields.ipynb", "a12d78fc", "5f0c2a91", ("answer_e",), _setup_02,
        lambda ns: [{"answer_e": 268}, {"answer_e": 196}, {"answer_e": ns["answer_e"] - 1}]),
    "02 ex2 rf of C's conv4_3": Exercise(
        "02_receptive_fields.ipynb", "0548a506", "6a1d3b82", ("answer_c", "answer_growth"), _setup_02,
        lambda ns: [{"answer_c": 84}, {"answer_c": 76}, {"answer_growth": 8}, {"answer_growth": 2}]),
    "02 ex3 layers to see 224": Exercise(
        "02_receptive_fields.ipynb", "ae473e40", "7b2e4c73", ("answer_layers",), _setup_02,
        lambda ns: [{"answer_layers": 111}, {"answer_layers": 113}, {"answer_layers": 224}, {"answer_layers": 1}]),
    "03 ex1 densest over 75%": Exercise(
        "03_efficiency.ipynb", "bd5dc69b", "835c45f0", ("answer_1",), _setup_03,
        lambda ns: [{"answer_1": ("regnet_y_400mf", "IMAGENET1K_V1")},
                    {"answer_1": ("mobilenet_v3_large", "IMAGENET1K_V2")}]),
    "03 ex2 cheapest as good as VGG19": Exercise(
        "03_efficiency.ipynb", "f7a3e422", "2bc7c961", ("answer_2",), _setup_03, _wrong_03_cheapest),
    "03 ex3 FC6 and compact head": Exercise(
        "03_efficiency.ipynb", "9a60d29d", "e6597144", ("fc6_params", "compact_params"), _setup_03,
        lambda ns: [{"fc6_params": 7 * 7 * 512 * 4096}, {"compact_params": 512 * 1000},
                    {"fc6_params": 7 * 7 * 512 * 4096 + 512}]),
    "04 ex1 crop positions": Exercise(
        "04_training.ipynb", "cbd2751f", "9cc2666c", ("positions_40", "positions_256"), _setup_04_crops,
        lambda ns: [{"positions_40": (40 - 32) ** 2}, {"positions_256": (256 - 224) ** 2},
                    {"positions_256": 256 - 224 + 1}, {"positions_40": 1089, "positions_256": 81}]),
    "04 ex2 final learning rate": Exercise(
        "04_training.ipynb", "3467369d", "55249eab", ("final_lr",), _setup_04_crops,
        lambda ns: [{"final_lr": 1e-4}, {"final_lr": 1e-6}, {"final_lr": 1e-2 / 3}]),
    "04 ex3 multi-scale by hand": Exercise(
        "04_training.ipynb", "918e54de", "dbf6d332", ("multi_acc",), _setup_04_multiscale,
        lambda ns: [{"multi_acc": ns["multi_acc"] + 1 / 48}, {"multi_acc": max(ns["single"]) + 1.0}]),
    "04 ex4 LRN gap vs seed noise": Exercise(
        "04_training.ipynb", "79c9da26", "39ff4dce", ("gap_lrn", "seed_spread"), _setup_04_grid,
        lambda ns: [{"gap_lrn": -ns["gap_lrn"]}, {"seed_spread": ns["seed_spread"] / 2}]),
}


def _solved(exercise: Exercise) -> dict:
    namespace = exercise.setup()
    _run(exercise.notebook, exercise.solution, namespace)
    return namespace


@pytest.mark.parametrize("name", list(EXERCISES))
def test_check_passes_the_shipped_solution_and_fails_wrong_answers(name: str) -> None:
    exercise = EXERCISES[name]
    solved = _solved(exercise)
    _run(exercise.notebook, exercise.check, dict(solved))  # the shipped solution passes
    wrong_answers = exercise.wrong(solved)
    assert wrong_answers
    for wrong in wrong_answers:
        namespace = {**solved, **wrong}
        with pytest.raises(AssertionError):
            _run(exercise.notebook, exercise.check, namespace)


def _assigned(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


@pytest.mark.parametrize("name", list(EXERCISES))
def test_check_cell_is_separate_and_does_not_set_the_answer(name: str) -> None:
    exercise = EXERCISES[name]
    ids = list(_cells(exercise.notebook))
    # the check follows the learner's cell directly, so the learner meets the answer cell first
    assert ids.index(exercise.check) == ids.index(exercise.solution) + 1
    solution, check = _source(exercise.notebook, exercise.solution), _source(exercise.notebook, exercise.check)
    assert set(exercise.answers) <= _assigned(solution)
    assert not set(exercise.answers) & _assigned(check), "the check cell must not compute the answer for the learner"


def _constants(source: str) -> list:
    """Every value the check cell writes down without computing it from the notebook: literals and
    arithmetic on literals only (``33 * 33``, ``1e-2 / 10**3``), and tuples of them."""
    values = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            continue
        try:
            values.append(eval(compile(ast.Expression(node), "<check>", "eval"), {"__builtins__": {}}))  # noqa: S307
        except Exception:  # noqa: BLE001 - a name, a call, a statement: not a literal expression
            continue
    return values


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", list(EXERCISES))
def test_check_does_not_write_down_the_answer(name: str) -> None:
    """A check that compares with ``33 * 33`` or ``1e-5`` hands the learner the answer as soon as
    they read it: the expected value must come from running something (the library, a scheduler,
    random draws), not from arithmetic written into the check."""
    exercise = EXERCISES[name]
    solved = _solved(exercise)
    answers = []
    for key in exercise.answers:
        value = solved[key]
        answers.extend(value if isinstance(value, tuple) else [value])
    literals = _constants(_source(exercise.notebook, exercise.check))
    given = [a for a in answers if any(_same(a, v) for v in literals)]
    assert not given, f"the check cell writes down the answer {given}"

