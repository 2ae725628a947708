"""The GPU suite (issue 12): the paper's proportions on a GPU, three targets in one command.

    python benchmarks/gpu_suite.py --cifar10 PATH [--out DIR] [--commit HASH]   # one GPU, ~8-9 min
    python benchmarks/gpu_suite.py --smoke [--out DIR]                         # CPU, ~1 min, tiny sizes
    make gpu-suite GPU_SUITE_ARGS="--smoke"

Parts, in this order, each in its own process with its own time budget (``--budget PART=S``),
so a slow or hung part is stopped and cannot starve the others; unused time goes to the grid:

1. ``ratio`` (60 s): the course trainer against the textbook ``DataLoader`` + PIL
   ``torchvision.transforms`` loop with 2 workers, same model (D, full width), batch (512) and
   precision, 3 interleaved rounds on 20,000 images (``benchmarks/train_throughput.py``).
   Target: at least 10x images per second.
2. ``tta`` (170 s): time to accuracy. VGG configuration D (16 layers) with batch norm at full
   width, compact head (at 32x32 pool5 is 1x1, so this is one linear layer), trained with
   :class:`vgg_utils.speedrun.FastRecipe`; every trick is named in the output. Timed from the
   decoded images in memory to the end of the final test pass; loading and an untimed warm-up
   (``torch.compile``, cuDNN autotuning) are reported separately. The number of epochs is chosen
   from the warm-up's step time to fit the time limit. Target: 93% test accuracy in at most
   60 s; stretch: 94% in 30 s. If the part produces no result with ``torch.compile`` on, it is
   run once more without it when enough time is left.
3. ``grid`` (the rest, about 240 s): the ablation grid of notebook 04 (A, A-LRN, B, C, D, E at
   S = 40; D at S = 32 and S in [32, 48]; 3 seeds) at full width on all 50,000 training images,
   through :func:`vgg_utils.run_grid`. The epochs (at most 30) are chosen from a measured epoch
   time so that the grid fits its budget; when they are fewer than asked, or seeds had to go,
   the CSV and the summary say so ("scaled down: ...").

Output (``--out``, default ``data/results/gpu_suite``; ``--smoke``: ``data/cache/gpu_suite_smoke``),
six files, each with provenance (command, commit, GPU name, torch/CUDA versions, date, wall
time, dataset, budget, status ``complete`` / ``partial: <why>`` / ``failed: <why>``):
``time_to_accuracy.csv``, ``loader_ratio.csv``, ``ablations_gpu.csv`` (the columns of
``data/results/ablations_cifar10.csv`` plus cuda_version, part_budget_s, requested_epochs,
plan_note, speed_settings, status), ``summary.json`` and ``summary.md`` (every target, met or
not, with the numbers; the grid's findings), and ``suite.log``. The summary is rewritten after
every part, so a run stopped from outside still leaves one.

On the course's lent GPU machine (no internet, no course venv: it runs the machine's own
``python3``/torch from a plain copy of the repository): copy the CIFAR-10 JPEG tarball
(``cifar10-jpeg-imagefolder.tar.gz``, 20 MB) into a git-ignored folder of the checkout, e.g.
``.gpu_data/`` listed in ``.git/info/exclude``, name that folder in the device tool's ``carry``
and pass ``--cifar10 .gpu_data/cifar10-jpeg-imagefolder.tar.gz --out $OUT/gpu_suite --commit
<git rev-parse HEAD>`` (the copy has no ``.git``). ``--smoke`` runs the same code on tiny sizes
on a CPU (CIFAR-10 subsets if available, else the shapes dataset); its numbers are not results.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # train_throughput, gpu_parts, gpu_report
if importlib.util.find_spec("vgg_utils") is None:  # a plain copy of the repository, no install
    sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from vgg_utils.ablations import EXPERIMENTS  # noqa: E402

PARTS = ("ratio", "tta", "grid")
GPU_SIZES = {
    "n_train": None, "n_test": None, "threads": None, "total_s": None,
    "budgets": {"ratio": 60, "tta": 170, "grid": 240},
    "ratio": {"config": "D", "width": 1.0, "batch_size": 512, "n_images": 20_000, "rounds": 3, "workers": 2},
    "tta": {"config": "D", "width": 1.0, "head": "compact", "fc_width": 4096, "max_epochs": 200, "warm_steps": 20,
            "runs": [{"name": "main", "target_acc": 0.93, "time_limit_s": 60.0},
                     {"name": "stretch", "target_acc": 0.94, "time_limit_s": 30.0}],
            "recipe": {"batch_size": 512, "lr": 0.2, "compile": True, "cudnn_benchmark": True}},
    "grid": {"experiments": list(EXPERIMENTS), "seeds": [0, 1, 2], "width": 1.0, "batch_size": 256,
             "lr": 0.1, "max_epochs": 30, "min_epochs": 3, "default_scale": "40",
             "test_scales": [32, 40, 48], "calibration_steps": 30},
}  # fmt: skip
SMOKE_SIZES = {
    "n_train": 256, "n_test": 64, "threads": 1, "total_s": None,
    "budgets": {"ratio": 60, "tta": 60, "grid": 90},
    "ratio": {"config": "A", "width": 0.125, "batch_size": 32, "n_images": 128, "rounds": 2, "workers": 2},
    "tta": {"config": "A", "width": 0.125, "head": "compact", "fc_width": 64, "max_epochs": 2, "warm_steps": 2,
            "runs": [{"name": "main", "target_acc": 0.93, "time_limit_s": 4.0},
                     {"name": "stretch", "target_acc": 0.94, "time_limit_s": 2.0}],
            "recipe": {"batch_size": 32, "lr": 0.05, "eval_batch_size": 32, "compile": False,
                       "cudnn_benchmark": False}},
    "grid": {"experiments": ["lrn"], "seeds": [0, 1], "width": 0.125, "batch_size": 32, "lr": 0.05,
             "max_epochs": 1, "min_epochs": 1, "default_scale": "40", "test_scales": [32, 40],
             "calibration_steps": 2},
}  # fmt: skip
GRACE_S = 15  # past its budget a part gets this long to finish a round before it is stopped


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_suite.py", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (~1 min): the code paths, not results")
    p.add_argument("--cifar10", default=None, help="CIFAR-10 image-folder copy (folder or .tar.gz); sets VGG_CIFAR10_DIR")
    p.add_argument("--out", default=None, help="output folder (default: data/results/gpu_suite; --smoke: data/cache/gpu_suite_smoke)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--budget", nargs="+", default=[], metavar="PART=S", help="a part's budget in seconds, e.g. grid=300")
    p.add_argument("--commit", default=None, help="git commit for the provenance (where the copy has no .git)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda; --smoke: cpu)")
    p.add_argument("--no-compile", action="store_true", help="time to accuracy without torch.compile")
    p.add_argument("--grid-epochs", type=int, default=None, help="the grid's epochs, at most (scaled down to fit)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="the grid's seeds (default 0 1 2)")
    p.add_argument("--tta-config", default=None, help="time-to-accuracy configuration: A, B, D or E (default D)")
    p.add_argument("--tta-head", choices=["compact", "paper"], default=None,
                   help="time-to-accuracy head: compact (default; pool5 is 1x1 at 32x32, so one linear layer) "
                   "or paper (FC6-FC8 with dropout, FC width 4096)")  # fmt: skip
    p.add_argument("--run-part", choices=PARTS, help=argparse.SUPPRESS)  # the suite's own child processes
    p.add_argument("--plan", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    return p


def resolve_sizes(args) -> dict:
    """The sizes and budgets of this run: the GPU or smoke defaults with the command's overrides."""
    sizes = json.loads(json.dumps(SMOKE_SIZES if args.smoke else GPU_SIZES))  # a deep copy
    for item in args.budget:
        part, _, seconds = item.partition("=")
        if part not in PARTS or not seconds.replace(".", "", 1).isdigit():
            raise SystemExit(f"--budget takes PART=SECONDS with PART in {PARTS}; got {item!r}")
        sizes["budgets"][part] = float(seconds)
    if args.no_compile:
        sizes["tta"]["recipe"]["compile"] = False
    if args.grid_epochs is not None:
        sizes["grid"]["max_epochs"] = args.grid_epochs
        sizes["grid"]["min_epochs"] = min(sizes["grid"]["min_epochs"], args.grid_epochs)
    if args.seeds:
        sizes["grid"]["seeds"] = args.seeds
    if args.tta_config:
        sizes["tta"]["config"] = args.tta_config
    if args.tta_head:
        sizes["tta"]["head"] = args.tta_head
    return sizes


def load_data(smoke: bool, n_train: int | None, n_test: int | None):
    """``(train, test)``: CIFAR-10 (required for a GPU run); a smoke run falls back to shapes."""
    from vgg_utils import DatasetUnavailableError, ShapesDataset, load_cifar10

    try:
        return load_cifar10("train", n_train), load_cifar10("test", n_test)
    except DatasetUnavailableError as err:
        if not smoke:
            raise SystemExit(f"CIFAR-10 is needed for the GPU suite: {err}\nPass --cifar10 PATH "
                             "(the image-folder tarball, see this script's docstring).") from err  # fmt: skip
        kwargs = dict(image_size=32, dtype=torch.uint8)
        return ShapesDataset(n_train, split="train", **kwargs), ShapesDataset(n_test, split="test", **kwargs)


def run_child(cmd: list[str], timeout: float, log, env: dict | None = None) -> tuple[int | None, bool, str]:
    """Run ``cmd`` in its own process group, echoing its output to ``log``; stop the group at
    ``timeout`` seconds. Returns ``(exit code, stopped at the timeout?, last lines of output)``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True, env=env)  # fmt: skip
    tail: collections.deque[str] = collections.deque(maxlen=30)

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            tail.append(line.rstrip())
            log(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    killed = False
    try:
        proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        killed = True
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)  # the part and its DataLoader workers
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=5)
    return proc.returncode, killed, "\n".join(tail)


def collect(plan: dict, part: str, code: int | None, killed: bool, tail: str, budget: float, wall: float) -> dict:
    """The state of a finished part: its own report, or (stopped or crashed) its CSV marked."""
    from gpu_parts import finalise_killed

    report = Path(plan["work"]) / f"{part}.json"
    if report.is_file() and not killed:
        state = json.loads(report.read_text())
    else:
        if killed:
            status = f"partial: stopped at its budget ({budget:.0f} s + {GRACE_S} s grace)"
        else:
            last = tail.strip().splitlines()[-1] if tail.strip() else ""
            status = f"failed: exit code {code}: {last[:300]}"
        rows = finalise_killed(plan, part, status)
        state = {"status": status, "rows_kept": rows}
    state.update(budget_s=round(budget, 1), wall_s=round(wall, 1))
    return state


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.run_part:  # inside a part's own process
        from gpu_parts import run_part

        run_part(args.run_part, json.loads(Path(args.plan).read_text()), args.deadline,
                 log=lambda line: print(line, flush=True))  # fmt: skip
        return 0
    from gpu_report import write_summary

    from vgg_utils import REPO_ROOT, auto_bf16, get_device
    from vgg_utils.provenance import device_name, git_commit

    started = time.time()
    sizes = resolve_sizes(args)
    device = get_device(args.device or ("cpu" if args.smoke else None))
    if not args.smoke and device.type != "cuda":
        print(f"the GPU suite needs a CUDA GPU (found {device}); its numbers are meaningless elsewhere. "
              "Run `python benchmarks/gpu_suite.py --smoke` to check the code on a CPU.", file=sys.stderr)  # fmt: skip
        return 2
    if args.cifar10:
        os.environ["VGG_CIFAR10_DIR"] = str(Path(args.cifar10).resolve())
    out = Path(args.out) if args.out else REPO_ROOT / ("data/cache/gpu_suite_smoke" if args.smoke else "data/results/gpu_suite")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("time_to_accuracy.csv", "loader_ratio.csv", "ablations_gpu.csv", "summary.json", "summary.md"):
        (out / name).unlink(missing_ok=True)  # no stale results from an earlier run
    log_file = open(out / "suite.log", "w", buffering=1)  # noqa: SIM115 - open for the whole run
    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            print(line, flush=True)
            log_file.write(line + "\n")

    work = Path(tempfile.mkdtemp(prefix="vgg_gpu_suite_"))
    try:
        tic = time.perf_counter()
        train_data, test_data = load_data(args.smoke, sizes["n_train"], sizes["n_test"])
        load_s = time.perf_counter() - tic
        log(f"data: {train_data.source}: {len(train_data)} train / {len(test_data)} test images, "
            f"decoded in {load_s:.1f} s")  # fmt: skip
        torch.save({name: {"images": d.images, "labels": d.labels, "classes": d.classes, "source": d.source}
                    for name, d in (("train", train_data), ("test", test_data))}, work / "data.pt")  # fmt: skip
        provenance = {
            "suite_command": "python benchmarks/gpu_suite.py " + shlex.join(sys.argv[1:] if argv is None else argv),
            "git_commit": args.commit or git_commit(), "device": device_name(device),
            "torch_version": torch.__version__, "cuda_version": torch.version.cuda or "none",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "dataset": train_data.source, "precision": "bf16 autocast" if auto_bf16(device) else "fp32",
            "size_label": "smoke test (tiny sizes, CPU): not a result" if args.smoke else "GPU-sized (issue 12 suite)",
        }  # fmt: skip
        plan = {**sizes, "smoke": args.smoke, "out": str(out), "work": str(work), "data": str(work / "data.pt"),
                "device": str(device), "provenance": provenance, "load_s": round(load_s, 2)}  # fmt: skip
        (work / "plan.json").write_text(json.dumps(plan, indent=1))
        states: dict[str, dict] = {p: {"status": "pending"} for p in args.parts}
        total_deadline = time.time() + (sizes["total_s"] or sum(sizes["budgets"][p] for p in args.parts))
        write_summary(plan, states, started, out)
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}  # fmt: skip
        for i, part in enumerate(args.parts):
            last = i == len(args.parts) - 1
            left = total_deadline - time.time()
            budget = max(left, 30.0) if last else min(sizes["budgets"][part], max(left, 30.0))
            states[part] = run_part_process(plan, part, budget, log, env)
            gave_nothing = not states[part].get("runs") and not states[part].get("rows_kept")
            if part == "tta" and gave_nothing and plan["tta"]["recipe"]["compile"]:
                spare = total_deadline - time.time() - 0.6 * sizes["budgets"].get("grid", 0) * ("grid" in args.parts)
                if spare >= 100:
                    log("time to accuracy gave no result with torch.compile: once more without it")
                    plan["tta"]["recipe"]["compile"] = False
                    (work / "plan.json").write_text(json.dumps(plan, indent=1))
                    retry = run_part_process(plan, part, 100.0, log, env)
                    retry["note"] = f"rerun without torch.compile after: {states[part]['status']}"
                    states[part] = retry
            write_summary(plan, states, started, out)
        log(f"suite done in {time.time() - started:.0f} s: " + ", ".join(f"{p} {s['status']}" for p, s in states.items()))
        log((out / "summary.md").read_text())  # the end of the output is what a remote run shows
    finally:
        log_file.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_part_process(plan: dict, part: str, budget: float, log, env: dict) -> dict:
    """One part in its own process, stopped ``GRACE_S`` seconds after its budget."""
    Path(plan["work"], f"{part}.json").unlink(missing_ok=True)
    deadline = time.time() + budget
    cmd = [sys.executable, str(HERE / "gpu_suite.py"), "--run-part", part, "--plan",
           str(Path(plan["work"]) / "plan.json"), "--deadline", repr(deadline)]  # fmt: skip
    log(f"== part {part}: budget {budget:.0f} s")
    tic = time.perf_counter()
    code, killed, tail = run_child(cmd, budget + GRACE_S, log, env)
    state = collect(plan, part, code, killed, tail, budget, time.perf_counter() - tic)
    log(f"== part {part}: {state['status']} ({state['wall_s']:.0f} s)")
    return state


if __name__ == "__main__":
    sys.exit(main())
