"""VGG16 inference in fp32 vs bfloat16 autocast, measured in one run (companion to notebook 03).

    python benchmarks/bf16_inference.py [--size 224] [--batch 4] [--rounds 3] [--threads N] [--device cpu]

fp32 and bf16 are timed interleaved (A, B, A, B, ...) so background load hits both alike; prints
the median time per image of each, the speed ratio, and the output agreement on the same inputs.
Uses randomly initialised weights unless ImageNet weights are cached (no download is attempted
beyond what :func:`vgg_utils.load_pretrained` does).
"""

from __future__ import annotations

import argparse

import torch

from vgg_utils import (
    PretrainedUnavailableError,
    build_vgg,
    combine_results,
    cpu_bf16_support,
    load_pretrained,
    measure_latency,
    seed_everything,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height and width (pixels)")
    parser.add_argument("--batch", type=int, default=4, help="images per forward pass")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved fp32/bf16 rounds")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)

    seed_everything(0)
    try:
        model, source = load_pretrained("D", timeout=2.0), "pretrained"
    except PretrainedUnavailableError:
        model, source = build_vgg("D").eval(), "random init"
    device = torch.device(args.device)
    model.to(device)
    shape = (3, args.size, args.size)
    runs: dict[str, list] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            runs[name].append(measure_latency(model, shape, args.batch, repeats=2, warmup=1,
                                              autocast_dtype=dtype, threads=args.threads))
    fp32, bf16 = (combine_results(runs[k]) for k in ("fp32", "bf16"))

    x = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        ref = model(x).float()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = model(x).float()
    print(f"VGG16 ({source}) on {device} ({cpu_bf16_support()} CPU bf16), {fp32.threads} thread(s), "
          f"batch {args.batch}, {args.size}x{args.size}, median of {fp32.repeats} passes each")
    print(f"fp32 {fp32.per_image_ms:.1f} ms/img, bf16 {bf16.per_image_ms:.1f} ms/img, "
          f"speed-up x{fp32.median_ms / bf16.median_ms:.2f}")
    print(f"top-1 agreement {(ref.argmax(1) == low.argmax(1)).float().mean().item():.3f}, "
          f"max |d logit| {(ref - low).abs().max().item():.3g}, "
          f"mean |d logit| / std {((ref - low).abs().mean() / ref.std()).item():.3g}")


if __name__ == "__main__":
    main()
