"""Worked solutions of notebook 07's exercises (for instructors; see README.md).

Each ``# %% <id>`` block replaces the learner's answer cell of that exercise and runs in the
notebook's namespace (``model``, ``x``, ``masks``, ``explained``, ``N_SANITY``, ... above).
"""
# ruff: noqa: F821, E402 - the names come from the notebook; each block is a cell

# %% 07.1
side_224 = 224 // 16  # four poolings before relu5_3
cell_224 = 16  # 2**4 input pixels per cell along each side

# %% 07.2
_, layer4 = resolve_layer(model, "relu4_3")
kept4 = {}


def keep4(module, inputs, output):
    kept4["A"] = output
    return output.clone()


hook = layer4.register_forward_hook(keep4)
try:
    scores4 = model(x[:4])
finally:
    hook.remove()
(dA4,) = torch.autograd.grad(scores4.gather(1, scores4.argmax(1, keepdim=True)).sum(), kept4["A"])
cam4 = F.relu((dA4.mean(dim=(2, 3), keepdim=True) * kept4["A"]).sum(dim=1, keepdim=True))
cam4 = F.interpolate(cam4, size=(96, 96), mode="bilinear", align_corners=False)[:, 0].detach()
cam4 = cam4 / cam4.flatten(1).amax(1).view(-1, 1, 1)

# %% 07.3
maps_gc = explained["grad-cam"]
energy_gc = ((maps_gc * masks).sum(dim=(1, 2)) / maps_gc.sum(dim=(1, 2))).mean().item()

# %% 07.4
import copy

from vgg_utils import randomise, rank_correlation

with torch.no_grad():
    original_classes = model(x[:N_SANITY]).argmax(1)
scrambled = randomise(copy.deepcopy(model), ["classifier.6"], seed=0)
before = guided_backprop(model, x[:N_SANITY], class_idx=original_classes)
after = guided_backprop(scrambled, x[:N_SANITY], class_idx=original_classes)
corr_fc8 = rank_correlation(before, after).mean().item()
