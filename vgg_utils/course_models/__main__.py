"""``python -m vgg_utils.course_models {list, verify, build NAME}``: see :mod:`vgg_utils.course_models`."""

from .build import main

main()
