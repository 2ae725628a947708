"""Figures of the ablations: one experiment's test error per configuration (or per test scale).

Taught in ``04_training.ipynb`` (the grid of :mod:`vgg_utils.ablations`, run by
``python -m vgg_utils.experiments``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .ablations import EXPERIMENTS, MULTI


def plot_experiment(results: pd.DataFrame, experiment: str, *, ax=None, test_scale: str | None = None):
    """One experiment's test error (%) per configuration: mean over seeds (diamond), each seed
    (dots) and their range (line). ``jitter`` plots error against the test scale Q, one line per
    training scale, with the multi-scale error (diamond) set apart: it is not a point on the Q axis."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; valid: {list(EXPERIMENTS)}")
    df = results[results["experiments"].astype(str).str.split(";").apply(lambda e: experiment in e)].copy()
    if df.empty:
        raise ValueError(f"the results have no runs of experiment {experiment!r}")
    df["test_scale"] = df["test_scale"].astype(str)
    df["train_scale"] = df["train_scale"].astype(str)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6))
    if experiment == "jitter":
        # Error against Q joined by lines; multi-scale (an average over the Qs, not a test scale) is
        # drawn apart, past a divider, and not joined to the Q axis.
        qs = sorted((q for q in df["test_scale"].unique() if q != MULTI), key=int)
        has_multi = bool((df["test_scale"] == MULTI).any())
        x_multi = len(qs) + 0.5
        where = {q: i for i, q in enumerate(qs)} | {MULTI: x_multi}
        for train_scale, group in df.groupby("train_scale", sort=False):
            label = f"train S in [{train_scale.replace('-', ', ')}]" if "-" in train_scale else f"train S = {train_scale}"
            mean = group.groupby("test_scale")["test_error"].mean()
            line = ax.plot(range(len(qs)), mean.reindex(qs).values, "-o", label=label)[0]
            if has_multi and MULTI in mean.index:
                ax.plot(x_multi, mean[MULTI], "D", color=line.get_color(), ms=7)
            for _, row in group.iterrows():
                ax.plot(where[row["test_scale"]], row["test_error"], ".", color=line.get_color(), alpha=0.5)
        ticks, labels = list(range(len(qs))), [f"Q={q}" for q in qs]
        if has_multi:
            ax.axvline(len(qs) - 0.25, color="grey", linewidth=0.8, linestyle=":")
            ticks.append(x_multi)
            labels.append("multi-scale\n(avg. over Q)")
        ax.set_xticks(ticks, labels)
        ax.set_xlabel("test scale Q (pixels); right of the dotted line: multi-scale")
        ax.legend(fontsize=8)
    else:
        q = str(test_scale or df["test_scale"][df["test_scale"] != MULTI].iloc[0])
        df = df[df["test_scale"] == q]
        configs = [c for c, _ in EXPERIMENTS[experiment]]
        labelled = False
        for i, config in enumerate(configs):
            errors = df[df["config"] == config]["test_error"]
            if errors.empty:  # a grid still running: leave the slot empty
                continue
            ax.plot([i, i], [errors.min(), errors.max()], "-", color="tab:blue", lw=2, alpha=0.4,
                    label=None if labelled else "range over seeds")  # fmt: skip
            ax.plot([i] * len(errors), errors, "k.", ms=5, label=None if labelled else "one seed")
            ax.plot(i, errors.mean(), "D", color="tab:blue", ms=8, label=None if labelled else "mean")
            labelled = True
            ax.annotate(f"{errors.mean():.1f}", (i, errors.mean()), xytext=(8, -3),
                        textcoords="offset points", fontsize=8)  # fmt: skip
        ax.set_xticks(range(len(configs)), configs)
        ax.set_xlim(-0.5, len(configs) - 0.5)
        ax.set_xlabel(f"configuration (train S = {df['train_scale'].iloc[0]}, test Q = {q})")
        low, high = df["test_error"].min(), df["test_error"].max()
        pad = max(0.5, 0.15 * (high - low))
        ax.set_ylim(low - pad, high + pad)
        ax.legend(fontsize=8)
    ax.set_ylabel("test error (%)")
    ax.set_title(f"experiment: {experiment}")
    ax.grid(axis="y", alpha=0.3)
    return ax.figure
