"""Every exercise's check accepts its worked solution and rejects typical wrong answers.

For each exercise id the notebook's own check cell (``check("01.1", params_C)``) is evaluated in a
namespace holding what the notebook defines before the exercise, with the answer taken from the
instructor's block in ``solutions/`` and then replaced by wrong answers: a wrong answer must get
``not yet`` and a hint that does not contain the correct value (both from ``verdict`` and as
``check`` prints it), the blank ``...`` must get ``not answered yet``. The notebooks, the registry and the solution files must name the same exercises,
and no notebook cell may hold a solution.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import json
import math
import re
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from vgg_utils import (
    REPO_ROOT,
    PaperAugment,
    ShapesDataset,
    build_vgg,
    check,
    count_params,
    exercises,
    grad_cam,
    guided_backprop,
    layer_table,
    load_course_model,
    model_zoo_table,
    resolve_layer,
    show_solution,
    summarize_transferability,
    to_fully_convolutional,
    total_macs,
    verdict,
)
from vgg_utils.exercise_checks_05_07 import REGISTRY

EXERCISES_MODULE = sys.modules["vgg_utils.exercises"]  # the attribute vgg_utils.exercises is the function
NOTEBOOKS = REPO_ROOT / "notebooks"
SOLUTIONS = REPO_ROOT / "solutions"
IDS = list(REGISTRY)


# --- reading the notebooks and the solutions -----------------------------------------------------


@cache
def _code_cells(stem: str) -> list[str]:
    cells = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _check_call(source: str) -> ast.Call | None:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check":
            return node
    return None


@cache
def _cells_of(exercise_id: str) -> tuple[str, str]:
    """(answer cell, check cell) of an exercise: the check cell calls ``check("<id>", ...)`` and
    the learner's cell is the code cell just before it."""
    cells = _code_cells(REGISTRY[exercise_id].notebook)
    found = [i for i, s in enumerate(cells) if (call := _check_call(s)) and ast.literal_eval(call.args[0]) == exercise_id]
    assert len(found) == 1, f"{exercise_id}: expected one check cell, found {len(found)}"
    return cells[found[0] - 1], cells[found[0]]


@cache
def _solution_blocks() -> dict[str, str]:
    blocks = {}
    for path in sorted(SOLUTIONS.glob("*.py")):
        for chunk in re.split(r"^# %% ", path.read_text(), flags=re.M)[1:]:
            exercise_id, _, body = chunk.partition("\n")
            assert exercise_id not in blocks, f"{exercise_id} has two solution blocks"
            blocks[exercise_id.strip()] = body
            assert path.stem == REGISTRY[exercise_id.strip()].notebook, f"{exercise_id} is in {path.name}"
    return blocks


def _assigned(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.Import | ast.ImportFrom):
            names |= {node.name} if isinstance(node, ast.FunctionDef) else {a.asname or a.name for a in node.names}
    return names


# --- what each notebook has defined before its exercises -----------------------------------------


def _meta(config: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return build_vgg(config, **kwargs)


@cache
def _setup_04() -> dict:
    torch.manual_seed(0)
    train = ShapesDataset(64, image_size=32, dtype=torch.uint8, split="train")
    test = ShapesDataset(48, image_size=32, dtype=torch.uint8, split="test")
    model = build_vgg("A", len(train.classes), batch_norm=True, width=1 / 16, head="compact").eval()
    augment = PaperAugment.from_data(train, 32, (32, 48), test_scale=40, seed=0)
    results = pd.read_csv(REPO_ROOT / "data" / "results" / "ablations_cifar10.csv",
                          dtype={"train_scale": str, "test_scale": str})
    return {"torch": torch, "model": model, "augment": augment, "test_data": test, "results": results}


@cache
def _setup_07() -> dict:
    shapes = load_course_model("shapes96")
    test = ShapesDataset(8, image_size=96, split="test", seed=0, dtype=torch.uint8, masks=True)
    x = shapes.preprocess(test.images)
    return {"torch": torch, "F": F, "model": shapes.model, "x": x, "boxes": test.boxes, "masks": test.masks,
            "explained": {"grad-cam": grad_cam(shapes.model, x).cpu()}, "N_SANITY": 2,
            "resolve_layer": resolve_layer, "guided_backprop": guided_backprop}


SETUPS: dict[str, Callable[[], dict]] = {
    "01": lambda: {"torch": torch, "table": layer_table("D"), "count_params": count_params},
    "02": dict,
    "03": lambda: {"zoo": model_zoo_table()},
    "04": _setup_04,
    "05": lambda: {"torch": torch, "meta16": to_fully_convolutional(_meta("D")), "total_macs": total_macs,
                   "build_vgg": build_vgg},
    "06": lambda: {"grid": pd.read_csv(REPO_ROOT / "data" / "results" / "transferability_cifar10.csv"),
                   "summarize_transferability": summarize_transferability},
    "07": _setup_07,
}


def _before(exercise_id: str) -> dict:
    """The notebook's namespace before the exercise: its setup, then the learner's cells of the
    notebook's earlier exercises as shipped (blank answers, plus what they define, e.g. 01's fc())."""
    namespace = dict(SETUPS[exercise_id[:2]]())
    for earlier in IDS[: IDS.index(exercise_id)]:
        if earlier[:2] == exercise_id[:2]:
            exec(_cells_of(earlier)[0], namespace)
    return namespace


@cache
def _solved(exercise_id: str) -> dict:
    namespace = _before(exercise_id)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(_solution_blocks()[exercise_id], namespace)
    return namespace


def _run_check(exercise_id: str, namespace: dict) -> tuple[bool, str]:
    """Evaluate the notebook's own check call in ``namespace``: (verdict, printed text). The call
    goes to ``check`` (which prints and returns None) and, with the same arguments, to ``verdict``."""
    call = _check_call(_cells_of(exercise_id)[1])
    verdicts = []

    def both(*args, **kwargs):
        verdicts.append(verdict(*args, **kwargs))
        return check(*args, **kwargs)

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        returned = eval(compile(ast.Expression(call), exercise_id, "eval"), {**namespace, "check": both})  # noqa: S307
    (ok, message), printed = verdicts[0], out.getvalue()
    assert returned is None and printed == message + "\n", "check prints the verdict's message, returns nothing"
    return ok, printed


# --- typical wrong answers -----------------------------------------------------------------------


def _wrong_03_2(ns: dict) -> list[dict]:
    # VGG16's row taken for VGG19's, the answer then consistent with it; the ratio off by one; another model
    zoo = ns["zoo"]
    vgg16 = zoo[(zoo["model"] == "vgg16") & zoo["default"]].iloc[0]
    cheapest = zoo[zoo["acc1"] >= vgg16["acc1"]].sort_values("gmacs").iloc[0]
    model, ratio = ns["answer_2"]
    return [{"answer_2": (cheapest["model"], round(vgg16["gmacs"] / cheapest["gmacs"]))},
            {"answer_2": (model, ratio + 1)}, {"answer_2": ("efficientnet_b0", ratio)}, {"answer_2": model}]


WRONG: dict[str, Callable[[dict], list[dict]]] = {
    "01.1": lambda ns: [{"params_C": count_params(_meta("D"))}, {"params_C": ns["params_C"] - 1000},
                        {"params_C": count_params(_meta("B"))}, {"params_C": str(ns["params_C"])}],
    "01.2": lambda ns: [{"macs_conv3_1": 56 * 56 * 256 * 3 * 3 * 256}, {"macs_conv3_1": 2 * ns["macs_conv3_1"]},
                        {"macs_conv3_1": 3 * 3 * 128}],
    "01.3": lambda ns: [{"params_compact": ns["params_compact"] - 513_000},
                        {"params_compact": ns["params_compact"] - 1000}, {"params_compact": count_params(_meta("D"))}],
    "01.4": lambda ns: [{"pool5_side_384": 7}, {"pool5_side_384": 24}, {"pool5_side_384": 11}],
    "02.1": lambda ns: [{"answer_e": 268}, {"answer_e": 196}, {"answer_e": ns["answer_e"] - 1}],
    "02.2": lambda ns: [{"answer_c": 84}, {"answer_c": 76}, {"answer_growth": 8}, {"answer_growth": 2}],
    "02.3": lambda ns: [{"answer_layers": 111}, {"answer_layers": 113}, {"answer_layers": 224},
                        {"answer_layers": 1}],
    "03.1": lambda ns: [{"answer_1": ("regnet_y_400mf", "IMAGENET1K_V1")},
                        {"answer_1": ("mobilenet_v3_large", "IMAGENET1K_V2")}, {"answer_1": "regnet_y_400mf"}],
    "03.2": _wrong_03_2,
    "03.3": lambda ns: [{"fc6_params": 7 * 7 * 512 * 4096}, {"compact_params": 512 * 1000},
                        {"fc6_params": 7 * 7 * 512 * 4096 + 512}],
    "04.1": lambda ns: [{"positions_40": (40 - 32) ** 2}, {"positions_256": (256 - 224) ** 2},
                        {"positions_256": 256 - 224 + 1}, {"positions_40": 1089, "positions_256": 81}],
    "04.2": lambda ns: [{"final_lr": 1e-4}, {"final_lr": 1e-6}, {"final_lr": 1e-2 / 3}],
    "04.3": lambda ns: [{"multi_acc": ns["multi_acc"] + 1 / 48}, {"multi_acc": 100 * ns["multi_acc"] + 1},
                        {"multi_acc": "63%"}] + [{"multi_acc": s} for s in {max(ns["single"])} - {ns["multi_acc"]}],
    "04.4": lambda ns: [{"gap_lrn": -ns["gap_lrn"]}, {"seed_spread": ns["seed_spread"] / 2},
                        {"gap_lrn": ns["gap_lrn"] + 1}],
    "05.1": lambda ns: [{"map_512x640": (16, 20)}, {"map_512x640": (14, 10)}, {"map_512x640": (11, 15)},
                        {"map_512x640": 140}],
    "05.2": lambda ns: [{"crops_over_dense": 2 * ns["crops_over_dense"]}, {"crops_over_dense": 1 / ns["crops_over_dense"]},
                        {"crops_over_dense": 150 / 6}],
    "05.3": lambda ns: [{"rf_cell": 212}, {"rf_cell": 212 + 7 * 32}, {"reach": 2 * ns["reach"]}, {"reach": 0}],
    "06.1": lambda ns: [{"block5_trainable": 123_642_856}, {"block5_trainable": 3 * (512 * 512 * 9 + 512)},
                        {"block5_trainable": ns["block5_trainable"] - 3 * 512}],
    "06.2": lambda ns: [{"block3_lr": 0.02 * 0.5**3}, {"block3_lr": 0.02 * 0.5**5}, {"block3_lr": 0.02 / 4}],
    "06.3": lambda ns: [{"passes_cached": 20_000}, {"passes_through": 1_000}, {"passes_cached": 20}],
    "06.4": lambda ns: [{"worst_bnb_k": ns["worst_bnb_k"] % 5 + 1}, {"anb_gap_at_5": -ns["anb_gap_at_5"]},
                        {"worst_bnb_k": 0}],
    "07.1": lambda ns: [{"side_224": 7, "cell_224": 32}, {"cell_224": 14}, {"side_224": 224 // 8}],
    "07.2": lambda ns: [{"cam4": 3 * ns["cam4"]}, {"cam4": ns["cam4"] - 0.5},  # not divided by the maximum; no ReLU
                        {"cam4": grad_cam(ns["model"], ns["x"][:4])}, {"cam4": ns["cam4"][:, None]},
                        {"cam4": ns["cam4"].tolist()}],
    "07.3": lambda ns: [{"energy_gc": ns["masks"].float().mean().item()}, {"energy_gc": 1 - ns["energy_gc"]},
                        {"energy_gc": ns["energy_gc"] + 0.01}],
    "07.4": lambda ns: [{"corr_fc8": -ns["corr_fc8"]}, {"corr_fc8": 0.5}, {"corr_fc8": ns["corr_fc8"] - 0.01}],
}


def _formats(value) -> list[str]:
    """How a correct value could appear in printed text."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple | list):
        return [f for v in value for f in _formats(v)]
    if isinstance(value, torch.Tensor):
        return [] if value.numel() > 1 else _formats(value.item())
    if isinstance(value, int) or float(value).is_integer():
        return [str(int(value)), f"{int(value):,}"]
    return [str(value), f"{value:g}", f"{value:.2f}", f"{value:.3f}"]


def _leaks(text: str, value) -> list[str]:
    return [f for f in _formats(value) if re.search(rf"(?<![\w.]){re.escape(f)}(?![\w]|\.\d|,\d)", text)]


def _assert_rejects_wrong_answers(exercise_id: str) -> None:
    solved = _solved(exercise_id)
    answers = {name: solved[name] for name in REGISTRY[exercise_id].answers}
    wrong_answers = WRONG[exercise_id](solved)
    assert len(wrong_answers) >= 2
    for wrong in wrong_answers:
        assert not all(_equal(wrong[k], answers[k]) for k in wrong), f"{exercise_id}: {wrong} is the solution"
        ok, printed = _run_check(exercise_id, {**solved, **wrong})
        assert ok is False, f"{exercise_id} accepted the wrong answer {wrong}"
        assert printed.startswith("not yet: ") and len(printed) > len("not yet: ") + 10, printed
        leaked = {name: _leaks(printed, value) for name, value in answers.items() if _leaks(printed, value)}
        assert not leaked, f"{exercise_id}: the hint for {wrong} gives the answer away {leaked}: {printed!r}"


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return type(a) is type(b) and a == b


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("exercise_id", IDS)
def test_check_accepts_the_solution(exercise_id: str) -> None:
    ok, printed = _run_check(exercise_id, _solved(exercise_id))
    assert ok is True and printed.startswith("correct: "), printed


@pytest.mark.parametrize("exercise_id", IDS)
def test_check_rejects_wrong_answers_without_giving_the_answer(exercise_id: str) -> None:
    _assert_rejects_wrong_answers(exercise_id)


@pytest.mark.parametrize("exercise_id", IDS)
def test_blank_answer_cell_is_not_answered_yet(exercise_id: str) -> None:
    namespace = _before(exercise_id)
    exec(_cells_of(exercise_id)[0], namespace)  # the learner's cell as shipped
    ok, printed = _run_check(exercise_id, namespace)
    assert ok is False and printed.startswith("not answered yet: replace the ... in "), printed
    answers = REGISTRY[exercise_id].answers
    assert all(name in printed for name in answers)
    if len(answers) > 1:  # one answer filled in, the other still blank: only the blank one is named
        ok, printed = _run_check(exercise_id, {**namespace, answers[0]: _solved(exercise_id)[answers[0]]})
        assert ok is False and answers[1] in printed and answers[0] not in printed, printed


def test_unknown_exercise_or_wrong_call_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown exercise '01\.9'.*01\.1, 01\.2"):
        check("01.9", 1)
    with pytest.raises(ValueError, match=r"unknown exercise '1\.1'"):
        verdict("1.1", 1)
    with pytest.raises(TypeError, match=r"missing \['model'.*check\('07\.2', cam4, model=model"):
        check("07.2", torch.zeros(4, 96, 96))
    with pytest.raises(TypeError, match="takes 1 answer"):
        check("01.1", 1, 2)


def test_notebooks_registry_and_solutions_name_the_same_exercises() -> None:
    in_notebooks = {}
    for stem in {e.notebook for e in REGISTRY.values()} | {p.stem for p in NOTEBOOKS.glob("0*.ipynb")}:
        for source in _code_cells(stem):
            for exercise_id in re.findall(r"""\bcheck\(\s*["'](\d\d\.\d+)["']""", source):
                assert exercise_id not in in_notebooks, f"{exercise_id} is checked twice"
                in_notebooks[exercise_id] = stem
    assert set(in_notebooks) == set(REGISTRY) == set(_solution_blocks())
    assert all(REGISTRY[i].notebook == stem and stem.startswith(i[:2]) for i, stem in in_notebooks.items())
    assert set(exercises()["id"]) == set(REGISTRY) and list(exercises("05")["id"]) == ["05.1", "05.2", "05.3"]
    with pytest.raises(ValueError, match="no checked exercises for notebook '99'"):
        exercises("99")


@pytest.mark.parametrize("exercise_id", IDS)
def test_cells_pass_the_answers_and_hold_no_solution(exercise_id: str) -> None:
    exercise = REGISTRY[exercise_id]
    answer_cell, check_cell = _cells_of(exercise_id)
    # the check cell only imports check and calls it, with the answers in the registry's order
    call = _check_call(check_cell)
    assert [a.id for a in call.args[1:]] == list(exercise.answers)
    assert [k.arg for k in call.keywords] == list(exercise.context)
    statements = ast.parse(check_cell).body
    assert len(statements) == 2 and isinstance(statements[0], ast.ImportFrom), "the check cell computes nothing"
    # the learner's cell holds the placeholder for every answer
    blanks = {t.id for node in ast.walk(ast.parse(answer_cell)) if isinstance(node, ast.Assign)
              for target in node.targets for t in (target.elts if isinstance(target, ast.Tuple) else [target])
              if all(isinstance(v, ast.Constant) and v.value is Ellipsis
                     for v in (node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]))}
    assert set(exercise.answers) <= blanks, f"{exercise_id}: the answer cell must leave {exercise.answers} as ..."
    # the solution defines what the learner's cell defines, and its answer lines are in no notebook cell
    solution = _solution_blocks()[exercise_id]
    assert _assigned(answer_cell) <= _assigned(solution)
    tree = ast.parse(solution)
    answer_lines = [ast.get_source_segment(solution, node) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
                    & set(exercise.answers)]
    assert answer_lines
    everywhere = [re.sub(r"\s+", "", c) for stem in {e.notebook for e in REGISTRY.values()} for c in _code_cells(stem)]
    for line in answer_lines:
        assert not any(re.sub(r"\s+", "", line) in cell for cell in everywhere), f"a notebook holds {line!r}"


def test_checks_leave_the_notebook_as_it_was() -> None:
    solved = _solved("04.3")
    solved["augment"].test_scale = 40
    _run_check("04.3", solved)
    assert solved["augment"].test_scale == 40  # evaluate_scales changes it; the check puts it back


def test_a_broken_check_fails_this_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests above catch a check that accepts everything, and one whose hint gives the answer."""
    original = REGISTRY["01.1"]
    monkeypatch.setitem(REGISTRY, "01.1", dataclasses.replace(original, judge=lambda **_: (True, "well done")))
    with pytest.raises(AssertionError, match="accepted the wrong answer"):
        _assert_rejects_wrong_answers("01.1")
    reference = _solved("01.1")["params_C"]
    leaky = dataclasses.replace(original, judge=lambda **kw: (kw["params_C"] == reference, f"it is {reference:,}"))
    monkeypatch.setitem(REGISTRY, "01.1", leaky)
    with pytest.raises(AssertionError, match="gives the answer away"):
        _assert_rejects_wrong_answers("01.1")


def test_show_solution_prints_one_block_and_says_when_solutions_are_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    show_solution("01.2")
    printed = capsys.readouterr().out
    assert printed.startswith("macs_conv3_1 = ") and "params_C" not in printed
    monkeypatch.setattr(EXERCISES_MODULE, "SOLUTIONS_DIR", tmp_path / "solutions")
    with pytest.raises(FileNotFoundError, match="not in the pip package; clone https://github.com/vgg-course"):
        show_solution("01.2")
    with pytest.raises(ValueError, match="unknown exercise"):
        show_solution("01.9")
