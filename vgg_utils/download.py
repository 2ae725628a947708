"""Pre-download torchvision's ImageNet VGG weights (kept for old instructions; the same as
``vgg-course fetch``, which also fetches the datasets).

    python -m vgg_utils.download vgg16 [vgg16_bn vgg19 ...]

Run it on a connected machine; then copy ``$TORCH_HOME/hub/checkpoints`` to the offline laptops.
Used by :func:`vgg_utils.load_pretrained`, taught in ``01_architecture.ipynb``.
"""

from __future__ import annotations

from .cli import main as _cli_main


def main(argv: list[str] | None = None) -> int:
    """``python -m vgg_utils.download NAME ...`` = ``vgg-course fetch NAME ...``."""
    import sys

    return _cli_main(["fetch", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
