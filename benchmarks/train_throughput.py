"""Training throughput: the course trainer vs a plain DataLoader + torchvision.transforms loop.

    python benchmarks/train_throughput.py [--config A] [--width 0.25] [--n-train 10000] [--rounds 3]
    python benchmarks/train_throughput.py --target-acc 0.93 --config D --width 1 --time-limit 60 ...

Throughput mode (default) trains the same model (same init), on the same images, with the same
batch size and the same augmentation (training scale S drawn from [32, 40], random 32x32 crop,
horizontal flip, mean subtraction; no colour shift, which torchvision lacks) two ways, one epoch
each, interleaved (course, baseline, course, ...) so background load hits both alike:

- the course trainer (:func:`vgg_utils.train`): images as one ``uint8`` tensor on the device,
  batches sliced from it and augmented there as tensor ops (:class:`vgg_utils.PaperAugment`);
- the usual PyTorch recipe: PIL images in a ``Dataset``, ``torchvision.transforms`` per image
  (``Resize``, ``RandomCrop``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``), batched by
  a ``DataLoader`` with ``--workers`` worker processes (default: 2 on a GPU, 0 on a CPU, whose
  cores are busy training), then copied to the device.

It prints images per second of each (median over rounds) and two ratios: against the textbook
loop with the trainer's own precision settings (bf16 autocast and channels-last where
:func:`vgg_utils.auto_bf16` says they pay), which isolates the data pipeline, and against the same
loop as it is usually written (fp32, NCHW), which is what a learner gains by using the trainer.

Time-to-accuracy mode (``--target-acc``) trains one of the paper's configurations (with batch
norm) on all of CIFAR-10 with :class:`vgg_utils.speedrun.FastRecipe` (every trick named in the
output) and reports the wall time from the decoded images in memory to the end of the final test
pass, and whether the test accuracy reached the target. ``--epochs auto`` (with
``--time-limit``) picks the number of epochs that fits the time limit from the step time
measured in an untimed warm-up (which also holds ``torch.compile``'s compilation). It needs
CIFAR-10 and a GPU to be meaningful. ``benchmarks/gpu_suite.py`` runs both modes (and the
ablation grid) on a GPU with budgets and provenance.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vgg_utils import (
    PaperAugment,
    auto_bf16,
    auto_channels_last,
    build_vgg,
    default_dataset,
    get_device,
    seed_everything,
    train,
)
from vgg_utils.speedrun import FastRecipe, choose_epochs


class PILImages(torch.utils.data.Dataset):
    """The same images as a torchvision-style dataset of PIL images with a per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        from PIL import Image

        arrays = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.images = [Image.fromarray(a) for a in arrays]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def baseline_epoch(model, loader, optimizer, device, bf16: bool, channels_last: bool) -> int:
    """One epoch of the textbook loop; returns the number of images trained on."""
    model.train()
    seen = 0
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    _sync(device)
    return seen


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(
    train_data,
    *,
    config: str = "A",
    width: float = 0.25,
    batch_size: int = 128,
    rounds: int = 3,
    workers: int | None = None,
    device: torch.device | str | None = None,
    deadline: float | None = None,
    on_round: Callable[[dict], None] | None = None,
) -> dict:
    """Images per second of the course trainer and of the textbook loop (same precision, and
    fp32/NCHW), one epoch each per round, interleaved. Returns the settings, one dict per round
    and the medians and ratios. ``deadline`` (``time.perf_counter()`` value): no new round starts
    that the last round's duration says would end after it (the first always runs);
    ``stopped`` then says why. ``on_round`` is called with each round's dict as it completes."""
    from torchvision import transforms

    device = get_device(device) if not isinstance(device, torch.device) else device
    workers = workers if workers is not None else (2 if device.type == "cuda" else 0)
    seed_everything(0)
    model = build_vgg(config, len(train_data.classes), batch_norm=True, width=width, head="compact")
    # Same init for all three: the course trainer, the textbook loop with the same precision
    # settings (isolates the data pipeline), and the textbook loop as usually written (fp32, NCHW).
    course_model, base_model, plain_model = model, copy.deepcopy(model), copy.deepcopy(model)
    augment = PaperAugment.from_data(train_data, 32, (32, 40), color=False)
    mean = augment.mean.tolist()
    tf = transforms.Compose([
        transforms.RandomChoice([transforms.Resize(s) for s in range(32, 41)]),  # S in [32, 40]
        transforms.RandomCrop(32),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, [1.0, 1.0, 1.0]),  # the paper subtracts the mean RGB only
    ])  # fmt: skip
    dataset = PILImages(train_data.images, train_data.labels, tf)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    bf16, channels_last = auto_bf16(device), auto_channels_last(device)
    base_model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = torch.optim.SGD(base_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    plain_model.to(device)
    plain_optimizer = torch.optim.SGD(plain_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    # Warm-up (kernel selection, worker start-up), untimed.
    warm = train_data.subset(slice(0, 4 * batch_size))
    train(copy.deepcopy(model), warm, epochs=1, batch_size=batch_size, augment=augment,
          device=device, progress=False)  # fmt: skip
    for i, _ in enumerate(loader):
        if i == 2:
            break

    result = {
        "config": config, "width": width, "batch_size": batch_size, "n_images": len(train_data),
        "dataset": train_data.source, "device": str(device), "threads": torch.get_num_threads(),
        "workers": workers, "bf16": bf16, "channels_last": channels_last, "rounds_asked": rounds,
        "rounds": [], "stopped": None,
    }  # fmt: skip
    for r in range(rounds):
        last = result["rounds"][-1]["seconds"] if result["rounds"] else 0.0
        if r and deadline is not None and time.perf_counter() + last > deadline:
            result["stopped"] = f"after {r} of {rounds} rounds: the next (~{last:.0f} s) would pass the budget"
            break
        start = tic = time.perf_counter()
        train(course_model, train_data, epochs=1, batch_size=batch_size, lr=0.01,
              schedule="constant", augment=augment, device=device, seed=r, progress=False)  # fmt: skip
        _sync(device)
        course = (len(train_data) // batch_size * batch_size) / (time.perf_counter() - tic)
        tic = time.perf_counter()
        base = baseline_epoch(base_model, loader, optimizer, device, bf16, channels_last) / (time.perf_counter() - tic)
        tic = time.perf_counter()
        plain = baseline_epoch(plain_model, loader, plain_optimizer, device, False, False) / (time.perf_counter() - tic)
        row = {"round": r + 1, "course_img_s": course, "textbook_img_s": base, "textbook_fp32_img_s": plain,
               "ratio": course / base, "ratio_fp32": course / plain, "seconds": time.perf_counter() - start}  # fmt: skip
        result["rounds"].append(row)
        if on_round is not None:
            on_round(row)
    for key in ("course_img_s", "textbook_img_s", "textbook_fp32_img_s"):
        result[key] = statistics.median(row[key] for row in result["rounds"])
    result["ratio"] = result["course_img_s"] / result["textbook_img_s"]
    result["ratio_fp32"] = result["course_img_s"] / result["textbook_fp32_img_s"]
    return result


def throughput(args) -> None:
    device = get_device(args.device)
    train_data, _ = default_dataset(args.n_train, 100)

    def show(row: dict) -> None:
        print(f"round {row['round']}: course {row['course_img_s']:.0f} img/s, DataLoader+transforms "
              f"{row['textbook_img_s']:.0f} img/s (same precision), {row['textbook_fp32_img_s']:.0f} img/s "
              f"(fp32, NCHW)", flush=True)  # fmt: skip

    res = measure_throughput(train_data, config=args.config, width=args.width, batch_size=args.batch_size,
                             rounds=args.rounds, workers=args.workers, device=device, on_round=show)  # fmt: skip
    c, b, p = res["course_img_s"], res["textbook_img_s"], res["textbook_fp32_img_s"]
    print(f"{args.config} width {args.width}, batch {args.batch_size}, {len(train_data)} images "
          f"({train_data.source}), {device}, {res['threads']} threads, bf16={res['bf16']}, "
          f"loader workers={res['workers']}")  # fmt: skip
    print(f"course trainer {c:.0f} img/s, DataLoader + torchvision.transforms {b:.0f} img/s: "
          f"ratio x{c / b:.2f} (data pipeline alone: both with bf16={res['bf16']}, channels_last={res['channels_last']})")
    print(f"course trainer {c:.0f} img/s, the same loop as usually written (fp32, NCHW) {p:.0f} img/s: "
          f"ratio x{c / p:.2f} (the trainer as shipped vs the textbook loop)")


# --- time to accuracy ----------------------------------------------------------------------------


def _build(config: str, width: float, head: str, train_data, fc_width: int):
    kwargs = {"input_size": int(train_data.images.shape[-1]), "fc_width": fc_width} if head == "paper" else {}
    return build_vgg(config, len(train_data.classes), batch_norm=True, width=width, head=head, **kwargs)


def _warm_up(net, recipe: FastRecipe, train_data, test_data, device, steps: int) -> dict:
    """Two short trainings and two test passes on small subsets, untimed for the result: the
    first of each compiles and autotunes, the second gives the step time and test time."""
    n = max(recipe.batch_size, min(len(train_data), steps * recipe.batch_size))
    sub = train_data.subset(slice(0, n))
    augment = recipe.augment(sub)
    m = min(len(test_data), recipe.eval_batch_size)
    chunk = test_data.subset(slice(0, m))
    times = []
    for _ in range(2):
        tic = time.perf_counter()
        recipe.fit(net, sub, augment=augment, device=device, epochs=1)
        _sync(device)
        mid = time.perf_counter()
        recipe.test(net, chunk, augment)
        _sync(device)
        times.append((mid - tic, time.perf_counter() - mid))
    return {"step_s": times[1][0] / (n // recipe.batch_size), "test_s_per_image": times[1][1] / m}


def time_to_accuracy_run(
    train_data,
    test_data,
    *,
    recipe: FastRecipe,
    targets: list[dict],
    config: str = "D",
    width: float = 1.0,
    head: str = "compact",
    fc_width: int = 512,
    device: torch.device | str | None = None,
    seed: int = 0,
    max_epochs: int = 200,
    warm_steps: int = 20,
    test_every_epoch: bool = False,
    deadline: float | None = None,
    on_result: Callable[[dict, dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], list[str]]:
    """Train one net per target with ``recipe`` and test it, each timed from the decoded images
    in memory to the end of the final test pass.

    ``targets``: dicts with ``name``, ``target_acc``, ``time_limit_s`` and optionally ``epochs``
    (default: the most that fit ``time_limit_s`` at the step time the warm-up measured, see
    :func:`choose_epochs`). One untimed warm-up first (``torch.compile``'s compilation when
    ``recipe.compile``, cuDNN autotuning, CUDA start-up) on the same model, whose weights are reset
    before every timed run. If compilation fails, the runs fall back to eager mode and say so.
    ``deadline`` (``time.perf_counter()`` value): a run predicted to end after it is shortened
    (the first) or skipped (the others). Returns ``(results, skipped)``: a dict per run
    (settings, times, accuracies, the named tricks, ``history``) and why runs were skipped.
    """
    device = get_device(device) if not isinstance(device, torch.device) else device
    tic_all = time.perf_counter()
    seed_everything(seed)
    model = _build(config, width, head, train_data, fc_width)
    model.to(device, memory_format=torch.channels_last if auto_channels_last(device) else torch.contiguous_format)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    net, compiled = model, "off"
    if recipe.compile:
        net, compiled = torch.compile(model), "on"
    try:
        warm = _warm_up(net, recipe, train_data, test_data, device, warm_steps)
    except Exception as err:  # noqa: BLE001 - any compiler failure: measure eagerly instead
        if net is model:
            raise
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        compiled = f"failed ({type(err).__name__}: {first}); ran eagerly"
        log(f"torch.compile failed, falling back to eager mode: {type(err).__name__}: {first}")
        torch._dynamo.reset()
        net = model
        warm = _warm_up(net, recipe, train_data, test_data, device, warm_steps)
    warmup_s = time.perf_counter() - tic_all
    steps = len(train_data) // recipe.batch_size
    test_s = warm["test_s_per_image"] * len(test_data)
    tricks = recipe.tricks(device)
    if recipe.compile and compiled != "on":
        tricks = [t for t in tricks if t != "torch.compile"]
    if test_every_epoch:
        tricks = [t if t != "no test pass between epochs" else "a plain test pass after every epoch (timed)" for t in tricks]
    results, skipped = [], []
    for target in targets:
        limit, note = target["time_limit_s"], ""
        epochs = target.get("epochs")
        rule = f"fixed {epochs}"
        if epochs is None:
            epochs = choose_epochs(limit, warm["step_s"], steps, test_s, max_epochs=max_epochs)
            rule = (f"auto: fits {limit:g} s at {1000 * warm['step_s']:.1f} ms/step x {steps} steps/epoch "
                    f"+ {test_s:.1f} s test, 8% margin")  # fmt: skip
        predicted = epochs * steps * warm["step_s"] + test_s
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and predicted > 0.95 * left:
            if results or 0.9 * left < test_s + steps * warm["step_s"]:
                skipped.append(f"{target['name']} skipped: predicted {predicted:.0f} s, {left:.0f} s of budget left")
                log(skipped[-1])
                continue
            epochs = choose_epochs(0.9 * left, warm["step_s"], steps, test_s, margin=0.0, max_epochs=max_epochs)
            predicted = epochs * steps * warm["step_s"] + test_s
            note = f"shortened to {epochs} epochs: only {left:.0f} s of the part's budget were left"
            log(note)
        log(f"{target['name']}: {config} width {width:g} ({head} head), {epochs} epochs of {steps} steps "
            f"(predicted {predicted:.1f} s; warm-up {warmup_s:.1f} s, torch.compile {compiled})")  # fmt: skip
        model.load_state_dict(init)  # every timed run starts from the same initial weights
        augment = recipe.augment(train_data, seed)
        _sync(device)
        tic = time.perf_counter()
        history = recipe.fit(net, train_data, test_data if test_every_epoch else None, augment=augment,
                             device=device, seed=seed, epochs=epochs)  # fmt: skip
        _sync(device)
        train_s = time.perf_counter() - tic
        acc = recipe.test(net, test_data, augment)
        _sync(device)
        wall_s = time.perf_counter() - tic
        result = {
            "name": target["name"], "target_acc": target["target_acc"], "time_limit_s": limit,
            "reached": acc["accuracy"] >= target["target_acc"], "within_time": wall_s <= limit,
            "config": config, "width": width, "head": head, "batch_size": recipe.batch_size, "lr": recipe.lr,
            "epochs": epochs, "epochs_rule": rule, "steps_per_epoch": steps, "n_train": len(train_data),
            "n_test": len(test_data), "test_acc": acc["accuracy"], "test_acc_plain": acc["accuracy_plain"],
            "tta_views": acc["views"], "train_s": train_s, "test_s": wall_s - train_s, "wall_s": wall_s,
            "predicted_s": predicted, "warmup_s": warmup_s, "step_ms": 1000 * warm["step_s"],
            "final_train_acc": float(history["train_acc"].iloc[-1]), "compile": compiled,
            "tricks": "; ".join(tricks), "device": str(device), "dataset": train_data.source,
            "note": note, "history": history,
        }  # fmt: skip
        results.append(result)
        if on_result is not None:
            on_result(target, result)
    return results, skipped


def time_to_accuracy(args) -> None:
    device = get_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_data, test_data = default_dataset(args.n_train, args.n_test)
    recipe = FastRecipe(batch_size=args.batch_size, compile=args.compile,
                        cudnn_benchmark=device.type == "cuda")  # fmt: skip
    if args.lr is not None:
        recipe.lr = args.lr
    epochs = None if args.epochs == "auto" else int(args.epochs)
    target = {"name": "run", "target_acc": args.target_acc, "time_limit_s": args.time_limit, "epochs": epochs}
    results, _ = time_to_accuracy_run(
        train_data, test_data, recipe=recipe, targets=[target], config=args.config, width=args.width,
        device=device, test_every_epoch=args.test_every_epoch,
    )  # fmt: skip
    res = results[0]
    print(res["history"].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    where = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    print(f"tricks: {res['tricks']}")
    verdict = "reached" if res["reached"] else "NOT reached"
    print(f"{res['test_acc']:.2%} test accuracy (plain view {res['test_acc_plain']:.2%}) after "
          f"{res['epochs']} epochs in {res['wall_s']:.1f} s on {where} (train {res['train_s']:.1f} s + test "
          f"{res['test_s']:.1f} s; untimed warm-up {res['warmup_s']:.1f} s): target {args.target_acc:.1%} "
          f"{verdict}, time limit {args.time_limit:g} s {'kept' if res['within_time'] else 'exceeded'}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="A", help="VGG configuration (A-E, A-LRN)")
    parser.add_argument("--width", type=float, default=0.25, help="channel multiplier")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch (default: 128 for throughput, 512 for --target-acc)")  # fmt: skip
    parser.add_argument("--n-train", type=int, default=None,
                        help="training images (default: 10,000 for throughput, all for --target-acc)")  # fmt: skip
    parser.add_argument("--n-test", type=int, default=None, help="test images (--target-acc)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved epochs of each loop")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 2 GPU, 0 CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best)")
    parser.add_argument("--target-acc", type=float, default=None,
                        help="time-to-accuracy mode: train on CIFAR-10 and check this test accuracy")  # fmt: skip
    parser.add_argument("--epochs", default="auto",
                        help="epochs (--target-acc), or 'auto' to fit --time-limit")  # fmt: skip
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds (--target-acc)")
    parser.add_argument("--lr", type=float, default=None, help="one-cycle peak lr (--target-acc)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (--target-acc)")
    parser.add_argument("--test-every-epoch", action="store_true",
                        help="a plain test pass after every epoch (--target-acc; counted in the time)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.target_acc is not None:
        args.batch_size = args.batch_size or 512
        time_to_accuracy(args)
    else:
        args.n_train = args.n_train or 10_000
        args.batch_size = args.batch_size or 128
        throughput(args)


if __name__ == "__main__":
    main()
