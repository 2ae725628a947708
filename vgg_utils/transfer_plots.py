"""Figures of transfer learning: layer-wise transferability (Yosinski et al., 2014, Figure 2).

Taught in ``06_transfer_learning.ipynb`` (the runs of :func:`vgg_utils.run_transferability`).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .transferability import VARIANTS, _check_results

_COLOURS = {"BnB": "#1f5fbf", "BnB+": "#8fb3ef", "AnB": "#c0392b", "AnB+": "#f1948a"}


def plot_transferability(results: pd.DataFrame, *, ax=None, title: str | None = None):
    """Yosinski et al.'s Figure 2 for our nets: test accuracy on B (%) against the number of
    copied blocks k, one colour per variant, a dot per seed and a line through the means; the
    dashed line is ``baseB``. Returns the figure."""
    _check_results(results)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.2))
    else:
        fig = ax.figure
    acc = results.assign(acc=100 * results["test_acc"])
    base_b = acc[acc["variant"] == "baseB"]
    ax.axhline(base_b["acc"].mean(), color="gray", ls="--", lw=1, label="baseB (k = 0)")
    variants = [v for v in VARIANTS if (acc["variant"] == v).any()]
    for i, variant in enumerate(variants):
        runs = pd.concat([base_b.assign(k=0), acc[acc["variant"] == variant]])
        offset = 0.06 * (i - (len(variants) - 1) / 2)  # side by side, so dots do not hide each other
        ax.plot(runs["k"] + offset, runs["acc"], "o", ms=4, alpha=0.6, color=_COLOURS[variant])
        means = runs.groupby("k")["acc"].mean()
        ax.plot(means.index + offset, means.values, "-", lw=2, color=_COLOURS[variant], label=variant)
    ax.set_xticks(range(6))
    ax.set_xlabel("k: conv blocks copied (and frozen, unless '+')")
    ax.set_ylabel("test accuracy on B (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    seeds = results["seed"].nunique()
    ax.set_title(title or f"layer-wise transferability ({seeds} seed{'s' if seeds > 1 else ''}, dots: single runs)")
    fig.tight_layout()
    return fig
