"""``python -m vgg_utils doctor | fetch | run``: the same as the ``vgg-course`` command."""

from .cli import main

raise SystemExit(main())
