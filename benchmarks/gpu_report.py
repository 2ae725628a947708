"""``summary.json`` and ``summary.md`` of ``benchmarks/gpu_suite.py``: every target, met or not,
with the numbers, read back from the CSVs the parts wrote (so the summary shows what is there)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
from gpu_parts import finite

from vgg_utils.ablations import MULTI, compare_with_paper, summarize

TARGETS = {
    "time_to_accuracy": "93% CIFAR-10 test accuracy in at most 60 s (one H100/H200), a Table 1 configuration with BN at full width",
    "time_to_accuracy_stretch": "94% in at most 30 s",
    "loader_ratio": "course trainer >= 10x the images/s of the DataLoader + PIL transforms loop (2 workers), same model, batch, precision",
    "ablation_grid": "the grid of notebook 04 at full width on all 50,000 training images, 3 seeds, enough epochs to converge",
}  # fmt: skip


def _read(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"train_scale": str, "test_scale": str, "status": str, "round": str})


def _tta(df: pd.DataFrame | None, name: str) -> dict:
    if df is None or df[df["run"] == name].empty:
        return {"measured": False}
    row = df[df["run"] == name].iloc[0]
    return {
        "measured": True, "met": bool(row["met"]), "test_acc": finite(row["test_acc"]),
        "test_acc_plain_view": finite(row["test_acc_plain"]), "wall_s": finite(row["wall_s"]),
        "train_s": finite(row["train_s"]), "test_s": finite(row["test_s"]), "epochs": int(row["epochs"]),
        "warmup_s_untimed": finite(row["warmup_s"]), "load_s_separate": finite(row["load_s"]),
        "network": f"{row['config']} + BN, width {row['width']:g}, {row['head']} head",
        "compile": row["compile"], "tricks": str(row["tricks"]).split("; "), "status": row["status"],
        "note": "" if pd.isna(row["note"]) else row["note"],
    }  # fmt: skip


def _ratio(df: pd.DataFrame | None) -> dict:
    if df is None or df[df["round"] == "median"].empty:
        return {"measured": False}
    row = df[df["round"] == "median"].iloc[0]
    return {
        "measured": True, "met": bool(row["ratio"] >= 10), "ratio": finite(row["ratio"]),
        "ratio_vs_fp32_loop": finite(row["ratio_fp32"]), "course_img_s": finite(row["course_img_s"]),
        "textbook_img_s": finite(row["textbook_img_s"]), "textbook_fp32_img_s": finite(row["textbook_fp32_img_s"]),
        "rounds": int((df["round"] != "median").sum()), "workers": int(row["workers"]),
        "model": f"{row['config']} width {row['width']:g}, batch {int(row['batch_size'])}", "status": row["status"],
    }  # fmt: skip


def _errors(summary: pd.DataFrame, config: str, scale: str, q: str) -> dict | None:
    row = summary[(summary["config"] == config) & (summary["train_scale"] == scale) & (summary["test_scale"] == q)]
    if row.empty:
        return None
    r = row.iloc[0]
    return {"mean": round(float(r["error_mean"]), 2), "min": round(float(r["error_min"]), 2),
            "max": round(float(r["error_max"]), 2), "seeds": int(r["seeds"])}  # fmt: skip


def _versus(a: dict | None, b: dict | None, name_a: str, name_b: str) -> str | None:
    """'D beats B by 1.2 points (every seed)' style comparison of two error summaries."""
    if a is None or b is None:
        return None
    gap = b["mean"] - a["mean"]
    if gap <= 0:
        return f"{name_a} does not beat {name_b} ({a['mean']:.2f}% vs {b['mean']:.2f}% error)"
    clear = a["max"] < b["min"]
    return (f"{name_a} beats {name_b} by {gap:.2f} points ({a['mean']:.2f}% vs {b['mean']:.2f}% error; "
            + ("every seed of one beats every seed of the other)" if clear else "seed ranges overlap: within noise)"))


def grid_findings(df: pd.DataFrame, default_scale: str) -> dict:
    """The questions notebook 04 left open, answered from the grid's rows."""
    s = summarize(df)
    q, findings = str(default_scale), {}
    arch = {c: _errors(s, c, q, q) for c in ("A", "A-LRN", "B", "C", "D", "E")}
    findings["errors_at_default_scale"] = {c: e for c, e in arch.items() if e is not None}
    findings["depth_D_vs_B"] = _versus(arch["D"], arch["B"], "D", "B")
    findings["depth_E_vs_B"] = _versus(arch["E"], arch["B"], "E", "B")
    findings["lrn"] = _versus(arch["A-LRN"], arch["A"], "A-LRN", "A")
    findings["3x3_vs_1x1"] = _versus(arch["D"], arch["C"], "D", "C")
    jitter, fixed = _errors(s, "D", "32-48", q), arch["D"]
    findings["jitter_at_one_scale"] = _versus(jitter, fixed, f"jittered S (Q={q})", f"fixed S={q}")
    findings["jitter_multi_scale"] = _versus(_errors(s, "D", "32-48", MULTI), _errors(s, "D", q, MULTI),
                                             "jittered S (multi-scale test)", f"fixed S={q} (multi-scale)")  # fmt: skip
    findings = {k: v for k, v in findings.items() if v}
    comparison = compare_with_paper(df)
    findings["beside_the_paper"] = comparison.round(2).to_dict("records") if not comparison.empty else []
    return findings


def _grid(df: pd.DataFrame | None, plan: dict) -> dict:
    if df is None or df.empty:
        return {"measured": False}
    first = df.iloc[0]
    seeds = sorted(df["seed"].unique().tolist())
    # Met only as asked: complete, full width, all images, 3 seeds and the epochs asked for (a grid
    # scaled down to fit its budget ran, but was not trained "enough epochs to converge").
    full = (float(first["width"]) == 1.0 and int(first["n_train"]) == 50_000 and len(seeds) >= 3
            and str(first["status"]) == "complete" and int(first["epochs"]) >= int(first["requested_epochs"]))  # fmt: skip
    return {
        "measured": True, "met": bool(full), "status": first["status"], "epochs": int(first["epochs"]),
        "requested_epochs": int(first["requested_epochs"]), "plan_note": first["plan_note"],
        "runs": int(df.groupby(["config", "train_scale", "seed"]).ngroups), "seeds": seeds,
        "width": float(first["width"]), "n_train": int(first["n_train"]),
        "mean_final_train_acc": round(float(df["train_acc"].mean()), 4),
        "findings": grid_findings(df, plan["grid"]["default_scale"]),
    }  # fmt: skip


def build_summary(plan: dict, states: dict, started: float, out: Path) -> dict:
    tta = _read(out / "time_to_accuracy.csv")
    results = {
        "time_to_accuracy": _tta(tta, "main"),
        "time_to_accuracy_stretch": _tta(tta, "stretch"),
        "loader_ratio": _ratio(_read(out / "loader_ratio.csv")),
        "ablation_grid": _grid(_read(out / "ablations_gpu.csv"), plan),
    }
    for key, result in results.items():
        result["target"] = TARGETS[key]
        if plan["smoke"]:
            result["met"] = None
            result["note_smoke"] = "smoke run: tiny sizes on a CPU; not a result, targets not evaluated"
    return {
        "suite": {**plan["provenance"], "load_s": plan["load_s"], "wall_time_s": round(time.time() - started, 1),
                  "smoke": plan["smoke"], "budgets_s": plan["budgets"]},  # fmt: skip
        "targets": results,
        "parts": states,
    }


def _fmt_met(result: dict) -> str:
    if not result.get("measured"):
        return "not measured"
    return {True: "**met**", False: "**not met**", None: "not evaluated (smoke)"}[result["met"]]


def _markdown(summary: dict) -> str:
    s, t = summary["suite"], summary["targets"]
    lines = [f"# GPU suite: {s['device']}", "",
             f"{s['size_label']}. Commit `{s['git_commit']}`, torch {s['torch_version']} (CUDA {s['cuda_version']}), "
             f"{s['date']}, {s['wall_time_s']:.0f} s in all (data decoded in {s['load_s']:.1f} s, not counted below).",
             f"Command: `{s['suite_command']}`", "", "| target | goal | measured | |", "|---|---|---|---|"]  # fmt: skip
    for key in ("time_to_accuracy", "time_to_accuracy_stretch"):
        r = t[key]
        got = (f"{100 * r['test_acc']:.2f}% in {r['wall_s']:.1f} s ({r['network']}, {r['epochs']} epochs; "
               f"plain view {100 * r['test_acc_plain_view']:.2f}%; warm-up {r['warmup_s_untimed']:.0f} s untimed)"
               if r.get("measured") else "-")  # fmt: skip
        lines.append(f"| {key.replace('_', ' ')} | {r['target']} | {got} | {_fmt_met(r)} |")
    r = t["loader_ratio"]
    got = (f"x{r['ratio']:.1f} ({r['course_img_s']:,.0f} vs {r['textbook_img_s']:,.0f} img/s; vs the fp32 loop "
           f"x{r['ratio_vs_fp32_loop']:.1f}; {r['model']}, {r['workers']} workers)" if r.get("measured") else "-")  # fmt: skip
    lines.append(f"| loader ratio | {r['target']} | {got} | {_fmt_met(r)} |")
    r = t["ablation_grid"]
    got = (f"{r['runs']} runs, seeds {r['seeds']}, {r['epochs']} epochs (asked {r['requested_epochs']}), width "
           f"{r['width']:g}, {r['n_train']} images; {r['status']}" if r.get("measured") else "-")  # fmt: skip
    lines.append(f"| ablation grid | {r['target']} | {got} | {_fmt_met(r)} |")
    tricks = t["time_to_accuracy"].get("tricks")
    if tricks:
        lines += ["", "Time-to-accuracy tricks: " + "; ".join(tricks) + "."]
    findings = t["ablation_grid"].get("findings", {})
    if findings:
        lines += ["", "## The grid's findings (test error %, mean over seeds)", ""]
        lines += [f"- {k}: {v}" for k, v in findings.items() if isinstance(v, str)]
        errs = findings.get("errors_at_default_scale", {})
        if errs:
            lines += ["", "| config | mean | min | max | seeds |", "|---|---|---|---|---|"]
            lines += [f"| {c} | {e['mean']:.2f} | {e['min']:.2f} | {e['max']:.2f} | {e['seeds']} |" for c, e in errs.items()]
    lines += ["", "## Parts", "", "| part | status | budget (s) | wall (s) |", "|---|---|---|---|"]
    for part, state in summary["parts"].items():
        lines.append(f"| {part} | {state['status']} | {state.get('budget_s', '')} | {state.get('wall_s', '')} |")
    return "\n".join(lines) + "\n"


def write_summary(plan: dict, states: dict, started: float, out: str | os.PathLike) -> dict:
    """Write ``summary.json`` and ``summary.md`` into ``out`` (atomically) and return the dict."""
    out = Path(out)
    summary = build_summary(plan, states, started, out)
    for name, text in (("summary.json", json.dumps(summary, indent=1, default=str)), ("summary.md", _markdown(summary))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    return summary
