"""The checks behind :func:`vgg_utils.check`: the registry, and the judges of notebooks 01-04
(those of 05-07 are in :mod:`vgg_utils.exercise_checks_05_07`).

A judge gets the learner's answers (and, for exercises about a trained model or a results table,
the notebook's object by keyword) and returns ``(True, explanation)`` or ``(False, hint)``. It
computes the reference itself from the library, on the meta device where only shapes matter, and
a hint never contains the reference: a hint says what to recount, not what to get.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from .ablations import evaluate_scales, summarize
from .augment import sample_crop_offsets
from .dense import to_fully_convolutional
from .models import build_vgg, count_params
from .profiling import layer_table
from .receptive import receptive_field_table
from .zoo import model_zoo_table

Verdict = tuple[bool, str]


@dataclass(frozen=True)
class Exercise:
    """One checked exercise: ``answers`` are the names the learner's cell defines (passed to
    ``check`` in this order), ``context`` the notebook objects the check needs (by keyword)."""

    id: str
    notebook: str
    question: str
    answers: tuple[str, ...]
    context: tuple[str, ...]
    judge: Callable[..., Verdict]


REGISTRY: dict[str, Exercise] = {}
NOTEBOOKS = {"01": "01_architecture", "02": "02_receptive_fields", "03": "03_efficiency", "04": "04_training",
             "05": "05_dense_evaluation", "06": "06_transfer_learning", "07": "07_interpretability"}


def _exercise(id_: str, question: str, answers: tuple[str, ...], context: tuple[str, ...] = ()):
    def register(judge: Callable[..., Verdict]) -> Callable[..., Verdict]:
        REGISTRY[id_] = Exercise(id_, NOTEBOOKS[id_[:2]], question, answers, context, judge)
        return judge

    return register


# --- comparing answers ---------------------------------------------------------------------------


def _number(x: Any) -> float | None:
    """A real number from an int, float, NumPy or one-element tensor answer; None for anything
    else (a bool is not a count)."""
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    return float(x)


def _same(answer: Any, reference: float, rel: float = 0.0, abs_: float = 0.0) -> bool:
    a = _number(answer)
    return a is not None and math.isclose(a, float(reference), rel_tol=rel, abs_tol=abs_)


def _pair(answer: Any) -> tuple | None:
    return tuple(answer) if isinstance(answer, tuple | list) and len(answer) == 2 else None


def _parts(correct: str, *parts: tuple[bool, str]) -> Verdict:
    """Several answers judged at once: ``(is this one right, its hint)`` each; the hints of the wrong
    ones, or ``correct`` when all are right."""
    hints = [hint for ok, hint in parts if not ok]
    return (False, "; ".join(hints)) if hints else (True, correct)


def _meta_vgg(config: str, **kwargs: Any) -> nn.Module:
    with torch.device("meta"):  # shapes and counts only: no weights stored, no arithmetic
        return build_vgg(config, **kwargs)


def _meta_fcn16() -> nn.Module:
    with torch.device("meta"):
        return to_fully_convolutional(build_vgg("D"))


# --- 01 architecture -----------------------------------------------------------------------------


@_exercise("01.1", "parameters of configuration C, counted by hand", ("params_C",))
def _params_c(params_C: Any) -> Verdict:
    reference = count_params(_meta_vgg("C"))
    if _same(params_C, reference):
        return True, f"config C has {reference:,} parameters"
    if _same(params_C, count_params(_meta_vgg("D"))):
        return False, "that is config D (VGG16): C has 1x1 convs where D has its third 3x3 conv of blocks 3-5"
    return False, ("count every conv of Table 1's column C (its three 1x1 convs too) and the three FC layers, "
         "each with its biases")


@_exercise("01.2", "MACs of conv3_1, by hand", ("macs_conv3_1",))
def _macs_conv3_1(macs_conv3_1: Any) -> Verdict:
    reference = int(layer_table("D").set_index("layer").loc["conv3_1", "macs"])
    if _same(macs_conv3_1, reference):
        return True, f"conv3_1 does {reference:,} MACs (the FLOP counter agrees)"
    if _same(macs_conv3_1, 2 * reference):
        return False, "that counts FLOPs (a multiply and an add); count multiply-accumulates"
    return False, ("output values x MACs per output value; conv3_1's input is block 2's output "
         "(how many channels?)")


@_exercise("01.3", "parameters of VGG16 with the compact head (GAP + one Linear)", ("params_compact",))
def _params_compact(params_compact: Any) -> Verdict:
    compact = _meta_vgg("D", head="compact")
    reference = count_params(compact)
    if _same(params_compact, reference):
        return True, f"{reference:,} parameters, {reference / count_params(_meta_vgg('D')):.0%} of VGG16's"
    if _same(params_compact, reference - count_params(compact.classifier)):
        return False, "that is the conv layers alone: add the one 512 -> 1000 layer, weights and biases"
    return False, "the 13 convs' weights and biases, plus one 512 -> 1000 layer with its biases"


@_exercise("01.4", "side of pool5's output for a 384x384 input", ("pool5_side_384",))
def _pool5_384(pool5_side_384: Any) -> Verdict:
    shape = layer_table("D", input_size=(3, 384, 384)).set_index("layer").loc["pool5", "output_shape"]
    side = shape[-1]
    if _same(pool5_side_384, side):
        return True, (f"pool5 gives {shape} for a 384x384 input. There the paper's FC6, as a 7x7 conv, fits at "
                      f"{side - 6}x{side - 6} positions, whose class scores are averaged (dense evaluation); "
                      f"torchvision's AdaptiveAvgPool2d would instead average the {side}x{side} map down to 7x7 "
                      "and apply FC6 once")
    return False, "how many 2x2 poolings are there, and what do the padded 3x3 convs do to the size?"


# --- 02 receptive fields -------------------------------------------------------------------------


@_exercise("02.1", "receptive field of config E's conv5_4, by hand", ("answer_e",))
def _rf_e(answer_e: Any) -> Verdict:
    rf = int(receptive_field_table("E").set_index("layer").loc["conv5_4", "rf"])
    if _same(answer_e, rf):
        return True, f"conv5_4 of config E sees {rf} pixels, more than the 224-pixel crop"
    return False, "recount the convs per block (2, 2, 4, 4, 4) and the pools before block 5; start from 1 pixel"


@_exercise("02.2", "receptive field of C's conv4_3, and its growth as a 3x3 conv", ("answer_c", "answer_growth"))
def _rf_c(answer_c: Any, answer_growth: Any) -> Verdict:
    t = receptive_field_table("C").set_index("layer")
    rf_c, growth = int(t.loc["conv4_3", "rf"]), int(t.loc["conv4_2", "rf"] - t.loc["conv4_1", "rf"])
    return _parts(
        f"C's conv4_3 sees {rf_c} pixels; as a 3x3 conv it would see {rf_c + growth}",
        (_same(answer_c, rf_c), "answer_c: what does a 1x1 conv add to the field of the layer below?"),
        (_same(answer_growth, growth),
         "answer_growth: a 3x3 conv adds (3 - 1) x the jump (distance between units) of block 4"))


@_exercise("02.3", "stride-1 3x3 conv layers needed to see 224 pixels without pooling", ("answer_layers",))
def _layers_224(answer_layers: Any) -> Verdict:
    with torch.device("meta"):
        plain = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(200)])
    rfs = receptive_field_table(plain, (1, 224, 224))["rf"].tolist()
    needed = next(n for n, rf in enumerate(rfs, start=1) if rf >= 224)
    if _same(answer_layers, needed):
        return True, f"{needed} layers see {rfs[needed - 1]} pixels; pooling makes VGG's growth exponential in depth"
    return False, "how much does each stride-1 3x3 conv add to the field, starting from 1 pixel?"


# --- 03 efficiency -------------------------------------------------------------------------------


@_exercise("03.1", "best top-1 accuracy per parameter among weight sets with >= 75% top-1", ("answer_1",))
def _densest(answer_1: Any) -> Verdict:
    zoo = model_zoo_table()
    ref = max((r for r in zoo.itertuples() if r.acc1 >= 75), key=lambda r: r.acc1 / r.params)
    answer = _pair(answer_1)
    if answer == (ref.model, ref.weights):
        return True, f"{answer} ({ref.acc1}% with {ref.params / 1e6:.2f} M parameters)"
    if answer is None:
        return False, "give a pair (model, weights), e.g. two strings from the zoo's first two columns"
    if answer[0] == ref.model:
        return False, "the right model: which of its weight sets?"
    return False, "keep the weight sets with acc1 >= 75, then take the largest acc1 / params"


@_exercise("03.2", "cheapest weight set at least as accurate as VGG19, and how many times fewer GMACs",
           ("answer_2",))
def _cheapest(answer_2: Any) -> Verdict:
    zoo = model_zoo_table()
    vgg19 = next(r for r in zoo.itertuples() if r.model == "vgg19" and r.default)
    ref = min((r for r in zoo.itertuples() if r.acc1 >= vgg19.acc1), key=lambda r: r.gmacs)
    ratio = round(vgg19.gmacs / ref.gmacs)
    answer = _pair(answer_2)
    if answer is not None and answer[0] == ref.model and _same(answer[1], ratio):
        return True, f"{answer[0]} needs {ratio}x fewer GMACs than VGG19"
    if answer is None:
        return False, "give a pair (model, ratio rounded to a whole number)"
    if answer[0] != ref.model:
        return False, ("compare with vgg19's default weights, keep the weight sets at least as accurate, and take "
                       "the one with the fewest GMACs")
    return False, "the right model; the ratio is VGG19's GMACs divided by its GMACs, rounded"


@_exercise("03.3", "parameters of FC6 and of the compact head's Linear", ("fc6_params", "compact_params"))
def _head_params(fc6_params: Any, compact_params: Any) -> Verdict:
    fc6 = int(layer_table("D").set_index("layer").loc["fc6", "params"])
    fc = int(layer_table("D", head="compact").set_index("layer").loc["fc", "params"])
    hints = [f"{name}: weights (in x out) plus one bias per output"
             for name, answer, ref in (("fc6_params", fc6_params, fc6), ("compact_params", compact_params, fc))
             if not _same(answer, ref)]
    if hints:
        return False, "; ".join(hints)
    return True, f"FC6 has {fc6:,} parameters, {fc6 / fc:.0f}x the compact head"


# --- 04 training ---------------------------------------------------------------------------------


def _distinct_offsets(side: int, crop: int, draws: int, generator: torch.Generator) -> int:
    oy, ox = sample_crop_offsets(torch.full((draws,), side), (side, side), crop, generator)
    return len(set(zip(oy.tolist(), ox.tolist(), strict=True)))


@_exercise("04.1", "crop positions: 32x32 at S = 40, 224x224 at S = 256", ("positions_40", "positions_256"))
def _positions(positions_40: Any, positions_256: Any) -> Verdict:
    gen = torch.Generator().manual_seed(0)  # enough random crops, as training draws them, to hit every position
    ref_40, ref_256 = _distinct_offsets(40, 32, 20_000, gen), _distinct_offsets(256, 224, 50_000, gen)
    wrong = [name for name, answer, ref in (("positions_40", positions_40, ref_40),
                                            ("positions_256", positions_256, ref_256)) if not _same(answer, ref)]
    if wrong:
        return False, (f"{' and '.join(wrong)}: count the positions along one side (a crop flush with the left "
                       "edge counts too), then square")
    return True, f"{ref_40} positions at S = 40, {ref_256} at S = 256"


@_exercise("04.2", "final learning rate after three divisions by 10 from 1e-2", ("final_lr",))
def _final_lr(final_lr: Any) -> Verdict:
    # PyTorch's plateau scheduler does it: the validation accuracy never improves, so every step is a plateau.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-2)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=0)
    rates = [opt.param_groups[0]["lr"]]
    while len(rates) < 4:
        plateau.step(0.5)
        if opt.param_groups[0]["lr"] != rates[-1]:
            rates.append(opt.param_groups[0]["lr"])
    if _same(final_lr, rates[3], rel=1e-9):
        return True, f"{rates[3]:g} (the scheduler's rates: {', '.join(f'{r:g}' for r in rates)})"
    return False, "start at 1e-2 and divide by 10 three times"


@_exercise("04.3", "multi-scale test accuracy (softmax averaged over Q = 32, 40, 48)", ("multi_acc",),
           ("model", "augment", "test_data"))
def _multi_scale(multi_acc: Any, model: nn.Module, augment: Any, test_data: Any) -> Verdict:
    kept = augment.test_scale
    try:
        reference = evaluate_scales(model, augment, test_data, [32, 40, 48])
    finally:
        augment.test_scale = kept  # the notebook's own setting, as it was
    if _same(multi_acc, reference["multi"], abs_=1e-6):
        return True, f"multi-scale accuracy {reference['multi']:.1%}"
    if _same(multi_acc, 100 * reference["multi"], abs_=1e-4):
        return False, "give the accuracy as a fraction between 0 and 1, not in percent"
    if any(_same(multi_acc, reference[q], abs_=1e-6) for q in ("32", "40", "48")):
        return False, "that is one scale's accuracy: average the three softmax outputs, then take the argmax"
    return False, "average the softmax outputs (not the logits) over the three scales, then compare the argmax"


@_exercise("04.4", "A-LRN minus A test error at Q = 40, and the seed spread of A", ("gap_lrn", "seed_spread"),
           ("results",))
def _lrn_gap(gap_lrn: Any, seed_spread: Any, results: pd.DataFrame) -> Verdict:
    table = summarize(results, test_scale="40").set_index("config")
    gap = table.loc["A-LRN", "error_mean"] - table.loc["A", "error_mean"]
    spread = table.loc["A", "error_max"] - table.loc["A", "error_min"]
    return _parts(
        ("the gap is within the seed noise" if abs(gap) <= spread else "the gap exceeds the seed noise"),
        (_same(gap_lrn, gap, abs_=1e-9),
         "gap_lrn: mean over seeds of A-LRN's test error minus A's, at Q = 40 (A-LRN first)"),
        (_same(seed_spread, spread, abs_=1e-9),
         "seed_spread: the largest minus the smallest test error of A's seeds at Q = 40"))
