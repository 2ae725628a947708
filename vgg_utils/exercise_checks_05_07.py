"""Exercise checks of notebooks 05-07 (the judges behind :func:`vgg_utils.check`; the registry
and the conventions are in :mod:`vgg_utils.exercise_checks`). ``REGISTRY`` here holds every
notebook's checks: those of 01-04, and these, registered on import."""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import torch
from torch import nn

from .exercise_checks import (
    REGISTRY,
    Verdict,
    _exercise,
    _meta_fcn16,
    _meta_vgg,
    _pair,
    _parts,
    _same,
)
from .explain_metrics import pointing_game, randomisation_stages, randomise, rank_correlation
from .interpret import feature_maps, grad_cam, guided_backprop
from .profiling import total_macs
from .receptive import receptive_field_table
from .transfer import discriminative_param_groups, freeze
from .transferability import summarize_transferability

# --- 05 dense evaluation -------------------------------------------------------------------------


@_exercise("05.1", "size of VGG16's class score map for a 512x640 input", ("map_512x640",))
def _score_map(map_512x640: Any) -> Verdict:
    measured = tuple(_meta_fcn16()(torch.zeros(1, 3, 512, 640, device="meta")).shape[-2:])
    answer = _pair(map_512x640)
    if answer is not None and all(_same(a, m) for a, m in zip(answer, measured, strict=True)):
        return True, f"{measured} - {measured[0] * measured[1]} windows of 224x224"
    if answer is None:
        return False, "give a pair (height, width)"
    if all(_same(a, m) for a, m in zip(answer, reversed(measured), strict=True)):
        return False, "the order is (height, width): 512 rows, 640 columns"
    return False, "pool5 has 512/32 x 640/32 cells; a 7x7 filter fits (cells - 7 + 1) times along each side"


@_exercise("05.2", "MACs of 150 multi-crop views over dense evaluation at Q = 256, 384, 512", ("crops_over_dense",))
def _crops_over_dense(crops_over_dense: Any) -> Verdict:
    per_crop = total_macs(_meta_vgg("D"), (3, 224, 224))
    dense = total_macs(_meta_fcn16(), (3, 256, 256)), total_macs(_meta_fcn16(), (3, 384, 384)), \
        total_macs(_meta_fcn16(), (3, 512, 512))
    reference = 150 * per_crop / (2 * sum(dense))
    if _same(crops_over_dense, reference, rel=1e-3):
        return True, f"multi-crop costs {reference:.1f}x dense evaluation on a square image"
    if _same(crops_over_dense, 2 * reference, rel=1e-3):
        return False, "dense evaluation runs each scale twice: the image and its mirror"
    if _same(crops_over_dense, 1 / reference, rel=1e-3):
        return False, "the other way round: the 150 crops' MACs over dense evaluation's"
    return False, "150 crops x one 224x224 pass, over (2 flips x the three dense passes at Q = 256, 384, 512)"


@_exercise("05.3", "receptive field of a score-map cell, and its reach past the 224 window", ("rf_cell", "reach"))
def _cell_rf(rf_cell: Any, reach: Any) -> Verdict:
    fcn = _meta_fcn16()
    rf = int(receptive_field_table(nn.Sequential(*fcn.features, fcn.head[0]))["rf"].iloc[-1])  # FC6 as 7x7 conv
    return _parts(
        f"{rf} pixels, {(rf - 224) // 2} pixels past each side of the window: context a crop sees as zeros",
        (_same(rf_cell, rf),
         "rf_cell: a 7x7 filter over pool5 adds 6 pool5 steps of 32 pixels to pool5's 212"),
        (_same(reach, (rf - 224) // 2),
         "reach: the window is 224 wide; the field is wider by the same on each side"))


# --- 06 transfer learning ------------------------------------------------------------------------


@_exercise("06.1", "parameters left trainable by freeze(vgg16, train='block5')", ("block5_trainable",))
def _block5(block5_trainable: Any) -> Verdict:
    reference = freeze(_meta_vgg("D"), train="block5").trainable
    if _same(block5_trainable, reference):
        return True, f"{reference:,} trainable parameters"
    if _same(block5_trainable, freeze(_meta_vgg("D"), train="classifier").trainable):
        return False, "that is the classifier alone: block 5's convolutions train too"
    return False, "three 3x3 convs from 512 to 512 channels with biases, plus FC6-FC8 with theirs"


@_exercise("06.2", "block 3's learning rate with discriminative_param_groups(lr=0.02, decay=0.5)", ("block3_lr",))
def _block3_lr(block3_lr: Any) -> Verdict:
    net = _meta_vgg("D", num_classes=10, batch_norm=True, width=0.125, input_size=32, fc_width=32)
    freeze(net, train="all")
    rates = {g["name"]: g["lr"] for g in discriminative_param_groups(net, lr=0.02, decay=0.5)}
    if _same(block3_lr, rates["block3"], rel=1e-9):
        return True, f"block3 trains at {rates['block3']:g}"
    return False, "count the stages from the head down: head, classifier, block5, block4, block3"


PROBE_EPOCHS, PROBE_IMAGES = 20, 1_000  # exercise 06.3's linear probe, as the question states it


@_exercise("06.3", "passes through the frozen layers: without and with feature caching",
           ("passes_through", "passes_cached"))
def _passes(passes_through: Any, passes_cached: Any) -> Verdict:
    through, cached = PROBE_EPOCHS * PROBE_IMAGES, PROBE_IMAGES
    return _parts(
        f"{through:,} passes without caching, {cached:,} with it: {through // cached}x fewer",
        (_same(passes_through, through),
         "passes_through: without caching, every epoch runs every image through the frozen part"),
        (_same(passes_cached, cached),
         "passes_cached: caching runs every image through the frozen part exactly once"))


@_exercise("06.4", "k where frozen BnB is lowest; AnB's gap to BnB at k = 5", ("worst_bnb_k", "anb_gap_at_5"),
           ("grid",))
def _transferability(worst_bnb_k: Any, anb_gap_at_5: Any, grid: pd.DataFrame) -> Verdict:
    summary = summarize_transferability(grid)
    worst = int(summary.loc["BnB", 1:].idxmin())
    gap = summary.loc["BnB", 5] - summary.loc["AnB", 5]
    return _parts(
        f"BnB is lowest at k = {worst}; AnB trails BnB by {gap:.1f} points at k = 5",
        (_same(worst_bnb_k, worst),
         "worst_bnb_k: look along the BnB row of summarize_transferability(grid), k = 1 to 5"),
        (_same(anb_gap_at_5, gap, abs_=0.05), "anb_gap_at_5: BnB minus AnB in column k = 5, in points"))


# --- 07 interpretability -------------------------------------------------------------------------


@_exercise("07.1", "relu5_3's cells per side at 224, and pixels per cell", ("side_224", "cell_224"))
def _relu5_3(side_224: Any, cell_224: Any) -> Verdict:
    probe = _meta_vgg("D", num_classes=10, width=1 / 16)  # any width: only the geometry matters
    side = feature_maps(probe, torch.zeros(1, 3, 224, 224, device="meta"), ["relu5_3"])["relu5_3"].shape[-1]
    return _parts(
        f"relu5_3 is {side}x{side} at 224, one cell per {224 // side}x{224 // side} pixels",
        (_same(side_224, side), "side_224: count the poolings before relu5_3 (pool5 comes after it)"),
        (_same(cell_224, 224 // side), "cell_224: cells x pixels per cell = the input side"))


@_exercise("07.2", "Grad-CAM at relu4_3 by hand", ("cam4",), ("model", "images", "boxes", "masks"))
def _cam4(cam4: Any, model: nn.Module, images: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor) -> Verdict:
    if not isinstance(cam4, torch.Tensor):
        return False, "cam4 should be a tensor of maps, one per image: (N, H, W)"
    reference = grad_cam(model, images, "relu4_3").cpu()
    if tuple(cam4.shape) != tuple(reference.shape):
        return False, "one map per image at the input's size (N, H, W): upsample bilinearly, drop the channel axis"
    answer = cam4.detach().cpu().float()
    if torch.allclose(answer, reference, atol=1e-4):
        hits4 = pointing_game(reference, boxes, masks=masks).on_object_rate
        hits5 = pointing_game(grad_cam(model, images).cpu(), boxes, masks=masks).on_object_rate
        return True, (f"maximum on the shape itself, relu4_3 {hits4:.0%} vs relu5_3 {hits5:.0%} "
                      f"({len(images)} images)")
    peak = answer.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    if torch.allclose(answer / peak, reference, atol=1e-4):
        return False, "the right maps: now divide each by its maximum"
    return False, ("hook relu4_3, gradient of the predicted class's score, channel weights = mean gradient, "
         "weighted sum, ReLU, bilinear upsampling, divide by the maximum")


@_exercise("07.3", "Grad-CAM's mean share of energy on the shapes' masks", ("energy_gc",), ("maps", "boxes", "masks"))
def _energy(energy_gc: Any, maps: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor) -> Verdict:
    reference = pointing_game(maps, boxes, masks=masks).mean_energy
    if _same(energy_gc, reference, abs_=1e-4):
        return True, (f"{reference:.3f} of Grad-CAM's mass lies on the shapes, which cover "
                      f"{masks.float().mean():.3f} of the pixels")
    if _same(energy_gc, float(masks.float().mean()), abs_=1e-4):
        return False, "that is the shapes' share of the pixels: weight each pixel by the map"
    return False, "per image: (map x mask).sum() / map.sum(); then the mean over images"


@_exercise("07.4", "guided backprop's rank correlation after re-initialising FC8", ("corr_fc8",),
           ("model", "images"))
def _corr_fc8(corr_fc8: Any, model: nn.Module, images: torch.Tensor) -> Verdict:
    stage, paths = randomisation_stages(model)[0]  # the top of the cascade: FC8
    with torch.no_grad():
        classes = model(images).argmax(1)
    scrambled = randomise(copy.deepcopy(model), paths, seed=0)
    reference = rank_correlation(guided_backprop(model, images, class_idx=classes),
                                 guided_backprop(scrambled, images, class_idx=classes)).mean().item()
    if _same(corr_fc8, reference, abs_=1e-4):
        return True, (f"{reference:.3f}. Guided backprop zeroes every negative gradient on the way down, so whatever "
                      f"{stage.upper()}'s random weights send back, the map keeps the image's own positive paths: "
                      "it barely depends on the top layers.")
    return False, (f"randomise {stage.upper()} only (seed 0) in a copy, explain the original model's predicted "
         "classes with both, compare with rank_correlation and take the mean")

__all__ = ["REGISTRY"]
