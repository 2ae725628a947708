"""Figures of training: learning curves and the confusion matrix.

Taught in ``04_training.ipynb``. Each function draws on the axes it is given (or a new figure) and
returns the figure.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator


def plot_history(history: pd.DataFrame, *, title: str | None = None, axes=None):
    """Learning curves: loss and accuracy (%) per epoch, train and test; dotted lines at lr drops.

    Returns the figure. ``axes``: two matplotlib axes to draw into (default: a new figure).
    """
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    else:
        fig = axes[0].figure
    for split, style in (("train", "-o"), ("test", "-s")):
        axes[0].plot(history["epoch"], history[f"{split}_loss"], style, ms=3, label=split)
        axes[1].plot(history["epoch"], 100 * history[f"{split}_acc"], style, ms=3, label=split)
    # A step schedule's epoch-mean lr falls by exactly x0.1; one-cycle's falls smoothly: no lines.
    drops = history["epoch"][((history["lr"] / history["lr"].shift(1)) - 0.1).abs() < 1e-6]
    for ax, ylabel in zip(axes, ("cross-entropy loss (nats)", "accuracy (%)"), strict=True):
        for epoch in drops:
            ax.axvline(epoch - 0.5, color="gray", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title("loss" + (" (dotted: lr x0.1)" if len(drops) else ""))
    axes[1].set_title("accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm: torch.Tensor, classes: list[str], *, title: str | None = None, ax=None):
    """Row-normalised confusion matrix (% of each true class) as an annotated image."""
    if ax is None:
        k = len(classes)
        fig, ax = plt.subplots(figsize=(max(4.8, 1.8 + 0.55 * k), max(4.0, 1.2 + 0.5 * k)))
    else:
        fig = ax.figure
    pct = 100 * cm.double() / cm.sum(dim=1, keepdim=True).clamp(min=1)
    im = ax.imshow(pct.numpy(), cmap="Blues", vmin=0, vmax=100)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if pct[i, j] > 50 else "black")  # fmt: skip
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix")
    fig.colorbar(im, ax=ax, label="% of true class")
    fig.tight_layout()
    return fig
