"""Pre-download torchvision's ImageNet VGG weights into the torch.hub cache (for offline workshops).

    python -m vgg_utils.download vgg16 [vgg16_bn vgg19 ...]

Run it on a connected machine; then copy ``$TORCH_HOME/hub/checkpoints`` to the offline laptops.
Used by :func:`vgg_utils.load_pretrained`, taught in ``01_architecture.ipynb``.
"""

from __future__ import annotations

import argparse

from .models import load_pretrained, weights_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="vgg11, vgg13, vgg16, vgg19, with optional _bn")
    args = parser.parse_args(argv)
    for name in args.names:
        bn = name.endswith("_bn")
        config = name.removesuffix("_bn")
        load_pretrained(config, batch_norm=bn, timeout=15.0)
        print(f"{name}: cached at {weights_path(config, batch_norm=bn)}")


if __name__ == "__main__":
    main()
