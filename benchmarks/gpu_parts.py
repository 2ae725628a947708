"""The three parts of ``benchmarks/gpu_suite.py``, each run in its own process with a budget.

- ``ratio``: images per second, course trainer vs the textbook ``DataLoader`` + PIL loop
  (:func:`train_throughput.measure_throughput`) -> ``loader_ratio.csv``;
- ``tta``: time to accuracy with :class:`vgg_utils.speedrun.FastRecipe`
  (:func:`train_throughput.time_to_accuracy_run`) -> ``time_to_accuracy.csv``;
- ``grid``: the ablation grid of notebook 04 (:func:`vgg_utils.run_grid`), epochs and seeds
  fitted to the budget from a measured epoch time -> ``ablations_gpu.csv``.

Each part writes its CSV as results come in (rows marked ``running``), then marks them
``complete`` or ``partial: <why>`` and leaves ``<part>.json`` in the work folder for the suite.
A part the suite had to stop at its budget is finalised by :func:`finalise_killed`.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pandas as pd
import torch
from train_throughput import measure_throughput, time_to_accuracy_run

from vgg_utils import (
    PaperAugment,
    auto_bf16,
    auto_channels_last,
    build_vgg,
    run_grid,
    total_macs,
    train,
)
from vgg_utils.ablations import COLUMNS, RUN_COLUMNS, SETTING_COLUMNS, parse_scale, plan_runs
from vgg_utils.speedrun import FastRecipe

#: Provenance columns of every CSV the suite writes (the grid's own columns already hold the
#: command, commit, device, date, torch version, wall time, dataset and size label).
PROVENANCE = [
    "suite_command", "git_commit", "device", "torch_version", "cuda_version", "date", "dataset",
    "size_label", "part_budget_s", "part_wall_time_s", "status",
]  # fmt: skip
RATIO_COLUMNS = [
    "round", "course_img_s", "textbook_img_s", "textbook_fp32_img_s", "ratio", "ratio_fp32",
    "seconds", "config", "width", "batch_size", "n_images", "workers", "bf16", "channels_last",
    "threads", "augmentation",
] + PROVENANCE  # fmt: skip
TTA_COLUMNS = [
    "run", "target_acc", "time_limit_s", "met", "test_acc", "test_acc_plain", "wall_s", "train_s",
    "test_s", "warmup_s", "load_s", "epochs", "epochs_rule", "predicted_s", "step_ms",
    "steps_per_epoch", "config", "width", "head", "batch_size", "lr", "n_train", "n_test",
    "tta_views", "final_train_acc", "compile", "tricks", "note",
] + PROVENANCE  # fmt: skip
GRID_EXTRA = ["cuda_version", "part_budget_s", "requested_epochs", "plan_note", "speed_settings", "status"]
GRID_COLUMNS = COLUMNS + GRID_EXTRA
RUNNING = "running"


def write_csv(rows: list[dict], columns: list[str], path: str | os.PathLike) -> None:
    """Write ``rows`` with exactly ``columns``, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(rows).reindex(columns=columns).to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)


def mark_status(path: str | os.PathLike, status: str, extra: dict | None = None) -> int:
    """Set ``status`` (and ``extra`` columns) on the rows of a CSV still marked ``running``;
    returns how many rows the file has (0 if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return 0
    table = pd.read_csv(path, dtype={"status": str, "train_scale": str, "test_scale": str})
    running = table["status"].astype(str) == RUNNING
    table.loc[running, "status"] = status
    for key, value in (extra or {}).items():
        table.loc[running, key] = value
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)
    return len(table)


def _provenance(plan: dict, budget: float, started: float, status: str) -> dict:
    prov = dict(plan["provenance"])
    return {**{k: prov.get(k) for k in PROVENANCE}, "part_budget_s": round(budget, 1),
            "part_wall_time_s": round(time.perf_counter() - started, 1), "status": status}  # fmt: skip


def _report(plan: dict, part: str, status: str, **result) -> None:
    path = Path(plan["work"]) / f"{part}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"status": status, **result}, indent=1, default=str))
    os.replace(tmp, path)


# --- part 2: loader ratio ------------------------------------------------------------------------


def ratio_part(plan: dict, train_data, test_data, device, deadline: float, budget: float, log) -> None:
    cfg, started = plan["ratio"], time.perf_counter()
    out = Path(plan["out"]) / "loader_ratio.csv"
    n = min(cfg["n_images"], len(train_data))
    subset = train_data.subset(torch.randperm(len(train_data), generator=torch.Generator().manual_seed(0))[:n])
    settings = {k: cfg[k] for k in ("config", "width", "batch_size", "workers")}
    settings |= {"n_images": n, "augmentation": "paper: S in [32, 40], 32x32 crop, flip, mean (both loops)"}
    rows: list[dict] = []

    def on_round(row: dict) -> None:
        rows.append({**row, **settings, **_provenance(plan, budget, started, RUNNING)})
        write_csv(rows, RATIO_COLUMNS, out)
        log(f"round {row['round']}: course {row['course_img_s']:.0f} img/s, textbook {row['textbook_img_s']:.0f} "
            f"img/s (same precision), {row['textbook_fp32_img_s']:.0f} img/s (fp32): x{row['ratio']:.2f}")  # fmt: skip

    res = measure_throughput(subset, config=cfg["config"], width=cfg["width"], batch_size=cfg["batch_size"],
                             rounds=cfg["rounds"], workers=cfg["workers"], device=device,
                             deadline=deadline, on_round=on_round)  # fmt: skip
    extra = {k: res[k] for k in ("bf16", "channels_last", "threads")}
    rows = [{**r, **extra} for r in rows]
    rows.append({"round": "median", **{k: res[k] for k in ("course_img_s", "textbook_img_s",
                 "textbook_fp32_img_s", "ratio", "ratio_fp32")}, **settings, **extra})  # fmt: skip
    status = "complete" if res["stopped"] is None else f"partial: {res['stopped']}"
    prov = _provenance(plan, budget, started, status)
    write_csv([{**r, **prov} for r in rows], RATIO_COLUMNS, out)
    keep = ("course_img_s", "textbook_img_s", "textbook_fp32_img_s", "ratio", "ratio_fp32", "workers",
            "bf16", "channels_last", "batch_size", "config", "width")  # fmt: skip
    _report(plan, "ratio", status, rounds=len(res["rounds"]), n_images=n, **{k: res[k] for k in keep})


# --- part 1: time to accuracy --------------------------------------------------------------------


def tta_part(plan: dict, train_data, test_data, device, deadline: float, budget: float, log) -> None:
    cfg, started = plan["tta"], time.perf_counter()
    out = Path(plan["out"]) / "time_to_accuracy.csv"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    recipe = FastRecipe(**cfg["recipe"])
    rows: list[dict] = []

    def on_result(run: dict, res: dict) -> None:
        row = {k: v for k, v in res.items() if k != "history"}
        row |= {"run": run["name"], "load_s": plan["load_s"], "note": res.get("note", "")}
        row["met"] = bool(res["reached"] and res["within_time"])
        rows.append({**row, **_provenance(plan, budget, started, RUNNING)})
        write_csv(rows, TTA_COLUMNS, out)
        log(f"{run['name']}: {res['test_acc']:.2%} in {res['wall_s']:.1f} s ({res['epochs']} epochs; target "
            f"{run['target_acc']:.0%} in {run['time_limit_s']:g} s: {'met' if row['met'] else 'not met'})")  # fmt: skip

    _, skipped = time_to_accuracy_run(
        train_data, test_data, recipe=recipe, config=cfg["config"], width=cfg["width"], head=cfg["head"],
        fc_width=cfg.get("fc_width", 4096), device=device, targets=cfg["runs"], max_epochs=cfg["max_epochs"], warm_steps=cfg["warm_steps"],
        deadline=deadline, on_result=on_result, log=log,
    )  # fmt: skip
    status = "complete" if not skipped else "partial: " + "; ".join(skipped)
    prov = _provenance(plan, budget, started, status)
    write_csv([{**r, **prov} for r in rows], TTA_COLUMNS, out)
    keep = ("run", "target_acc", "time_limit_s", "met", "test_acc", "test_acc_plain", "wall_s", "epochs",
            "config", "width", "head", "compile", "tricks", "warmup_s", "load_s", "batch_size")  # fmt: skip
    _report(plan, "tta", status, runs=[{k: r.get(k) for k in keep} for r in rows], skipped=skipped)


# --- part 3: the ablation grid -------------------------------------------------------------------


def run_weights(runs: list[tuple[str, str, list[str]]], width: float, num_classes: int) -> list[float]:
    """Each run's training cost relative to configuration D: forward MACs at 32x32
    (``torch.utils.flop_counter``), x1.5 for LRN, which the MAC count does not see."""
    macs = {}
    for config in {c for c, _, _ in runs} | {"D"}:
        model = build_vgg(config, num_classes, batch_norm=True, width=width, head="compact")
        macs[config] = total_macs(model, (3, 32, 32))
    return [macs[c] / macs["D"] * (1.5 if "LRN" in c else 1.0) for c, _, _ in runs]


def plan_grid(
    seed_seconds, room_s: float, max_epochs: int, min_epochs: int, seeds: list[int]
) -> tuple[int, list[int], str]:
    """Epochs and seeds that fit ``room_s``: the most epochs (<= ``max_epochs``) for all seeds;
    below ``min_epochs``, fewer seeds at ``min_epochs``. ``seed_seconds(epochs)`` predicts one
    seed's grid. Returns ``(epochs, seeds, note)``; the note says what was scaled down, if anything."""
    for epochs in range(max_epochs, min_epochs - 1, -1):
        if len(seeds) * seed_seconds(epochs) <= room_s:
            note = "" if epochs == max_epochs else (
                f"scaled down: {epochs} epochs instead of {max_epochs} to fit {room_s:.0f} s "
                f"(predicted {len(seeds) * seed_seconds(epochs):.0f} s)")  # fmt: skip
            return epochs, list(seeds), note
    k = max(1, min(len(seeds), int(room_s // seed_seconds(min_epochs))))
    note = (f"scaled down: {min_epochs} epochs instead of {max_epochs} and {k} of {len(seeds)} seeds "
            f"to fit {room_s:.0f} s (predicted {k * seed_seconds(min_epochs):.0f} s)")  # fmt: skip
    return min_epochs, list(seeds[:k]), note


def _calibrate(train_data, cfg: dict, device) -> dict:
    """Seconds per training image of configuration D (after a warm-up), and the per-run fixed
    cost: the training set's statistics, building the largest net, moving the images."""
    batch, crop = cfg["batch_size"], int(train_data.images.shape[-1])
    scale = parse_scale(cfg["default_scale"])
    n = min(len(train_data), cfg["calibration_steps"] * batch)
    sub = train_data.subset(slice(0, n))
    augment = PaperAugment.from_data(sub, crop, scale)
    model = build_vgg("D", len(train_data.classes), batch_norm=True, width=cfg["width"], head="compact")
    kwargs = dict(batch_size=batch, lr=cfg["lr"], schedule="onecycle", augment=augment, device=device, progress=False)
    train(model, sub.subset(slice(0, min(n, 3 * batch))), epochs=1, **kwargs)  # autotune, CUDA start-up
    _sync(device)
    tic = time.perf_counter()
    train(model, sub, epochs=1, **kwargs)
    _sync(device)
    per_image = (time.perf_counter() - tic) / (n // batch * batch)
    tic = time.perf_counter()
    PaperAugment.from_data(train_data, crop, scale)
    build_vgg("E", len(train_data.classes), batch_norm=True, width=cfg["width"], head="compact").to(device)
    train_data.images.to(device)
    _sync(device)
    return {"s_per_image": per_image, "overhead_s": time.perf_counter() - tic}


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def grid_part(plan: dict, train_data, test_data, device, deadline: float, budget: float, log) -> None:
    cfg, started, work = plan["grid"], time.perf_counter(), Path(plan["work"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    runs = plan_runs(cfg["experiments"], cfg["default_scale"])
    weights = run_weights(runs, cfg["width"], len(train_data.classes))
    calib = _calibrate(train_data, cfg, device)
    used = len(train_data) // cfg["batch_size"] * cfg["batch_size"]
    test_units = len(test_data) * sum((q / 32) ** 2 for q in cfg["test_scales"]) / 3  # forward ~ 1/3 step

    def seed_seconds(epochs: int) -> float:
        return sum(w * calib["s_per_image"] * (epochs * used + test_units) + calib["overhead_s"] for w in weights)

    room = (deadline - time.perf_counter()) * 0.92
    epochs, seeds, note = plan_grid(seed_seconds, room, cfg["max_epochs"], cfg["min_epochs"], cfg["seeds"])
    log(f"grid: {len(runs)} runs x {len(seeds)} seeds x {epochs} epochs, predicted {len(seeds) * seed_seconds(epochs):.0f} s "
        f"of {room:.0f} s (D: {1e6 * calib['s_per_image']:.1f} us/image, {calib['overhead_s']:.1f} s per run)"
        + (f"; {note}" if note else ""))  # fmt: skip
    speed = ", ".join(name for name, on in (("bf16 autocast", auto_bf16(device)), ("channels-last", auto_channels_last(device)),
                      ("cudnn.benchmark", device.type == "cuda")) if on) or "fp32, NCHW"  # fmt: skip
    meta = {"requested_epochs": cfg["max_epochs"], "plan_note": note or "as requested", "speed_settings": speed,
            "cuda_version": plan["provenance"]["cuda_version"], "part_budget_s": round(budget, 1),
            "epochs": epochs, "seeds": seeds}  # fmt: skip
    (work / "grid_meta.json").write_text(json.dumps(meta))
    prov = plan["provenance"]
    provenance = {
        "command": prov["suite_command"], "git_commit": prov["git_commit"], "device": prov["device"],
        "precision": prov["precision"], "dataset": prov["dataset"], "date": prov["date"],
        "torch_version": prov["torch_version"], "threads": torch.get_num_threads(),
        "size_label": f"{prov['size_label']}; grid: width {cfg['width']:g}, {len(train_data)} images, {epochs} epochs",
    }  # fmt: skip
    raw, out = work / "grid_raw.csv", Path(plan["out"]) / "ablations_gpu.csv"
    done, seed_times, stopped = None, [], None
    for i, seed in enumerate(seeds):
        if seed_times and time.perf_counter() + 1.05 * max(seed_times) > deadline:
            stopped = (f"stopped after {i} of {len(seeds)} seeds: another seed takes ~{max(seed_times):.0f} s, "
                       f"{deadline - time.perf_counter():.0f} s were left")  # fmt: skip
            break
        tic = time.perf_counter()
        table = run_grid(
            cfg["experiments"], train_data=train_data, test_data=test_data, seeds=[seed], epochs=epochs,
            width=cfg["width"], batch_size=cfg["batch_size"], lr=cfg["lr"], default_scale=cfg["default_scale"],
            test_scales=cfg["test_scales"], device=device, out=raw, done=done, log=log,
            provenance={**provenance, "wall_time_s": round(time.perf_counter() - started, 1)},
        )  # fmt: skip
        seed_times.append(time.perf_counter() - tic)
        done = table[RUN_COLUMNS + SETTING_COLUMNS]
        finalise_grid(work, out, RUNNING)
    status = "complete" if stopped is None and seeds == list(cfg["seeds"]) else (
        "partial: " + "; ".join(s for s in (note, stopped) if s))  # fmt: skip
    rows = finalise_grid(work, out, status)
    _report(plan, "grid", status, epochs=epochs, seeds=seeds[: len(seed_times)], runs=len(runs),
            rows=rows, plan_note=note, seed_seconds=[round(s, 1) for s in seed_times])  # fmt: skip


def finalise_grid(work: Path, out: Path, status: str) -> int:
    """``ablations_gpu.csv`` from run_grid's CSV plus the suite's columns; returns its rows."""
    raw = Path(work) / "grid_raw.csv"
    meta_path = Path(work) / "grid_meta.json"
    if not raw.is_file():
        return 0
    table = pd.read_csv(raw, dtype={"train_scale": str, "test_scale": str})
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    for key in GRID_EXTRA:
        table[key] = status if key == "status" else meta.get(key)
    write_csv(table.to_dict("records"), GRID_COLUMNS, out)
    return len(table)


def finalise_killed(plan: dict, part: str, status: str) -> int:
    """After the suite stopped a part: mark its rows with ``status``; returns the rows kept."""
    out, work = Path(plan["out"]), Path(plan["work"])
    if part == "grid":
        return finalise_grid(work, out / "ablations_gpu.csv", status)
    name = {"ratio": "loader_ratio.csv", "tta": "time_to_accuracy.csv"}[part]
    return mark_status(out / name, status)


PARTS = {"ratio": ratio_part, "tta": tta_part, "grid": grid_part}


def run_part(part: str, plan: dict, deadline_epoch: float, log=print) -> None:
    """Entry point of a part's process: load the decoded data, run the part until its deadline."""
    from vgg_utils import ImageTensors

    if plan.get("threads"):
        torch.set_num_threads(plan["threads"])
    device = torch.device(plan["device"])
    budget = deadline_epoch - time.time()
    deadline = time.perf_counter() + budget  # the suite's wall-clock deadline on this clock
    saved = torch.load(plan["data"], weights_only=True)
    train_data, test_data = (ImageTensors(**saved[k]) for k in ("train", "test"))
    log(f"[{part}] {len(train_data)} train / {len(test_data)} test images, {device}, budget {budget:.0f} s")
    PARTS[part](plan, train_data, test_data, device, deadline, budget, log)


def finite(value) -> float | None:
    """A float, or ``None`` for NaN/missing (JSON has no NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
