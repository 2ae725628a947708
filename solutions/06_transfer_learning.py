"""Worked solutions of notebook 06's exercises (for instructors; see README.md).

Each ``# %% <id>`` block replaces the learner's answer cell of that exercise and runs in the
notebook's namespace (``grid``, the transferability results of section 6).
"""
# ruff: noqa: F821 - the names come from the notebook

# %% 06.1
block5_trainable = 3 * (512 * 512 * 9 + 512) + (25_088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)

# %% 06.2
block3_lr = 0.02 * 0.5**4  # head, classifier, block5, block4, block3

# %% 06.3
passes_through = 20 * 1_000  # every epoch runs every image through the frozen layers
passes_cached = 1_000  # caching runs each image through them once

# %% 06.4
summary = summarize_transferability(grid)
worst_bnb_k = int(summary.loc["BnB", 1:].idxmin())
anb_gap_at_5 = summary.loc["BnB", 5] - summary.loc["AnB", 5]
