"""Worked solutions of notebook 04's exercises (for instructors; see README.md).

Each ``# %% <id>`` block replaces the learner's answer cell of that exercise and runs in the
notebook's namespace (``model``, ``augment`` and ``test_data`` from section 3, ``results`` from
section 6).
"""
# ruff: noqa: F821, E402 - the names come from the notebook; each block is a cell

# %% 04.1
positions_40 = (40 - 32 + 1) ** 2  # offsets 0..8 along each side
positions_256 = (256 - 224 + 1) ** 2  # offsets 0..32 along each side

# %% 04.2
final_lr = 1e-2 / 10**3

# %% 04.3
from vgg_utils import predict

probs = []
for q in (32, 40, 48):
    augment.test_scale = q
    probs.append(predict(model, test_data, transform=augment.test).softmax(dim=1))
augment.test_scale = 40
multi_acc = (torch.stack(probs).mean(0).argmax(1).cpu() == test_data.labels).float().mean().item()
single = [(p.argmax(1).cpu() == test_data.labels).float().mean().item() for p in probs]
print("single scale:", ", ".join(f"Q={q}: {a:.1%}" for q, a in zip((32, 40, 48), single, strict=True)),
      f"| multi-scale: {multi_acc:.1%}")

# %% 04.4
q40 = results[results["test_scale"] == "40"]
mean_error = q40.groupby("config")["test_error"].mean()
gap_lrn = mean_error["A-LRN"] - mean_error["A"]
a_errors = q40[(q40["config"] == "A") & (q40["train_scale"] == q40["train_scale"].iloc[0])]["test_error"]
seed_spread = a_errors.max() - a_errors.min()
print(f"A-LRN - A: {gap_lrn:+.2f} points; seed spread of A: {seed_spread:.2f} points")
