import numpy as np
import pytest
import torch
from PIL import Image

from gentool.images import image_grid, save_grid


def test_images_are_tiled_row_by_row_with_gaps():
    images = torch.stack(
        [torch.full((3, 2, 2), value, dtype=torch.uint8) for value in (10, 20, 30)]
    )
    grid = image_grid(images, columns=2, padding=1)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 3)
    assert (grid[1:3, 1:3] == 10).all() and (grid[1:3, 4:6] == 20).all()
    assert (grid[4:6, 1:3] == 30).all() and (grid[4:6, 4:6] == 255).all()  # empty cell
    assert (grid[0] == 255).all()


def test_square_grid_by_default_and_grey_images_stay_grey(tmp_path):
    images = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    path = save_grid(images, tmp_path / "sub" / "grid.png")
    with Image.open(path) as grid:
        assert grid.mode == "L" and grid.size == (4 * 6 + 2, 3 * 6 + 2)
    assert np.asarray(Image.open(path)).min() == 0


def test_only_uint8_images_are_accepted():
    with pytest.raises(ValueError, match=r"expected .* uint8 images"):
        image_grid(torch.zeros(1, 3, 2, 2))
