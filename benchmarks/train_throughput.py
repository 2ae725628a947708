"""Training throughput: the course trainer vs a plain DataLoader + torchvision.transforms loop.

    python benchmarks/train_throughput.py [--config A] [--width 0.25] [--n-train 10000] [--rounds 3]
    python benchmarks/train_throughput.py --target-acc 0.93 --config A --width 1 --epochs 16 ...

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

Time-to-accuracy mode (``--target-acc``) trains with the course trainer on all of CIFAR-10 and
prints the wall time until the test accuracy first reaches the target (e.g. 0.93 in under 60 s
is the goal on an H100/H200). It needs CIFAR-10 and a GPU to be meaningful; the course has not
measured it yet (no GPU was available when this was written).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

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
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen


def throughput(args) -> None:
    from torchvision import transforms

    device = get_device(args.device)
    workers = args.workers if args.workers is not None else (2 if device.type == "cuda" else 0)
    train_data, _ = default_dataset(args.n_train, 100)
    seed_everything(0)
    model = build_vgg(args.config, len(train_data.classes), batch_norm=True, width=args.width,
                      head="compact")  # fmt: skip
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
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    bf16, channels_last = auto_bf16(device), auto_channels_last(device)
    base_model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = torch.optim.SGD(base_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    plain_model.to(device)
    plain_optimizer = torch.optim.SGD(plain_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    # Warm-up (kernel selection, worker start-up), untimed.
    warm = train_data.subset(slice(0, 4 * args.batch_size))
    train(copy.deepcopy(model), warm, epochs=1, batch_size=args.batch_size, augment=augment,
          device=device, progress=False)  # fmt: skip
    for i, _ in enumerate(loader):
        if i == 2:
            break

    course, base, plain = [], [], []
    for r in range(args.rounds):
        tic = time.perf_counter()
        train(course_model, train_data, epochs=1, batch_size=args.batch_size, lr=0.01,
              schedule="constant", augment=augment, device=device, seed=r, progress=False)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
        course.append((len(train_data) // args.batch_size * args.batch_size) / (time.perf_counter() - tic))
        tic = time.perf_counter()
        seen = baseline_epoch(base_model, loader, optimizer, device, bf16, channels_last)
        base.append(seen / (time.perf_counter() - tic))
        tic = time.perf_counter()
        seen = baseline_epoch(plain_model, loader, plain_optimizer, device, False, False)
        plain.append(seen / (time.perf_counter() - tic))
        print(f"round {r + 1}: course {course[-1]:.0f} img/s, DataLoader+transforms {base[-1]:.0f} img/s "
              f"(same precision), {plain[-1]:.0f} img/s (fp32, NCHW)", flush=True)  # fmt: skip
    c, b, p = statistics.median(course), statistics.median(base), statistics.median(plain)
    print(f"{args.config} width {args.width}, batch {args.batch_size}, {len(train_data)} images "
          f"({train_data.source}), {device}, {torch.get_num_threads()} threads, bf16={bf16}, "
          f"loader workers={workers}")  # fmt: skip
    print(f"course trainer {c:.0f} img/s, DataLoader + torchvision.transforms {b:.0f} img/s: "
          f"ratio x{c / b:.2f} (data pipeline alone: both with bf16={bf16}, channels_last={channels_last})")
    print(f"course trainer {c:.0f} img/s, the same loop as usually written (fp32, NCHW) {p:.0f} img/s: "
          f"ratio x{c / p:.2f} (the trainer as shipped vs the textbook loop)")


def time_to_accuracy(args) -> None:
    device = get_device(args.device)
    train_data, test_data = default_dataset(args.n_train, args.n_test)
    augment = PaperAugment.from_data(train_data, 32, (32, 40), color=False)
    seed_everything(0)
    # Warm-up on a throwaway copy so kernel selection / lazy CUDA init is not in the timing.
    warm = build_vgg(args.config, len(train_data.classes), batch_norm=True, width=args.width, head="compact")
    train(warm, train_data.subset(slice(0, 4 * args.batch_size)), epochs=1, batch_size=args.batch_size,
          augment=augment, device=device, progress=False)  # fmt: skip
    model = build_vgg(args.config, len(train_data.classes), batch_norm=True, width=args.width, head="compact")
    if device.type == "cuda":
        torch.cuda.synchronize()
    history = train(model, train_data, test_data, epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, schedule="onecycle", augment=augment, device=device, progress=False)  # fmt: skip
    elapsed = history["seconds"].cumsum()
    reached = history[history["test_acc"] >= args.target_acc]
    print(history.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    where = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    if reached.empty:
        print(f"target {args.target_acc:.1%} not reached in {args.epochs} epochs "
              f"({elapsed.iloc[-1]:.1f} s on {where}; best {history['test_acc'].max():.2%})")  # fmt: skip
    else:
        first = reached.index[0]
        print(f"reached {history['test_acc'][first]:.2%} >= {args.target_acc:.1%} after epoch "
              f"{int(history['epoch'][first])}: {elapsed[first]:.1f} s on {where} "
              f"(training + one test pass per epoch)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="A", help="VGG configuration (A-E, A-LRN)")
    parser.add_argument("--width", type=float, default=0.25, help="channel multiplier")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=None,
                        help="training images (default: 10,000 for throughput, all for --target-acc)")  # fmt: skip
    parser.add_argument("--n-test", type=int, default=None, help="test images (--target-acc)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved epochs of each loop")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 2 GPU, 0 CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best)")
    parser.add_argument("--target-acc", type=float, default=None,
                        help="time-to-accuracy mode: train on CIFAR-10 until this test accuracy")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=16, help="epochs (--target-acc)")
    parser.add_argument("--lr", type=float, default=0.1, help="one-cycle peak lr (--target-acc)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.target_acc is not None:
        time_to_accuracy(args)
    else:
        args.n_train = args.n_train or 10_000
        throughput(args)


if __name__ == "__main__":
    main()
