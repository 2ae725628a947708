"""plot_image_grid: rows of images, boxes, true pixel scale, and clear errors."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from vgg_utils import plot_image_grid

matplotlib.use("Agg")


def test_grid_shape_titles_boxes_and_scale():
    small, big = torch.rand(3, 32, 32), torch.rand(3, 48, 48)
    fig = plot_image_grid(
        {"scales": [small, big], "one": [small]},
        titles={"scales": ["S = 32", "S = 48"]},
        boxes={"scales": [(0, 0, 32, 32), None]},
        same_scale=True,
        suptitle="test",
    )
    axes = fig.axes
    assert len(axes) == 4  # 2 rows x 2 columns; the missing cell is switched off
    assert axes[0].get_title() == "S = 32" and axes[1].get_title() == "S = 48"
    assert axes[0].get_xlim() == (0, 48)  # every axis spans the largest image: sizes compare
    assert len(axes[0].patches) == 2  # the image's outline and the crop box
    assert not axes[3].axison
    assert axes[0].get_ylabel() == "scales"


def test_values_outside_0_1_are_clipped_not_an_error():
    fig = plot_image_grid({"mean removed": [torch.randn(3, 32, 32)]})
    data = fig.axes[0].images[0].get_array()
    assert data.min() >= 0 and data.max() <= 1


@pytest.mark.parametrize("bad", [torch.rand(32, 32), torch.rand(4, 32, 32), "image"])
def test_bad_images_raise(bad):
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        plot_image_grid({"row": [bad]})
    with pytest.raises(ValueError, match="rows is empty"):
        plot_image_grid({})
