"""make_grid's labels are drawn inside the picture, and the images are left as they were."""

import numpy as np
import pytest
import torch

from ddlearn.viz import make_grid


def test_labels_are_drawn_in_margins_and_images_are_untouched():
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = np.asarray(make_grid(images, nrow=3, size=16))
    labelled = make_grid(images, nrow=3, size=16, row_labels=["DDIM", "PLMS"],
                         col_labels=["w = 1", "w = 3", "w = 7.5"])
    array = np.asarray(labelled)
    top, left = array.shape[0] - plain.shape[0], array.shape[1] - plain.shape[1]
    assert top > 0 and left > 0
    assert np.array_equal(array[top:, left:], plain)          # the images, where they were
    assert (array[:top] < 128).any() and (array[:, :left] < 128).any()  # dark text in margins
    only_rows = np.asarray(make_grid(images, nrow=3, size=16, row_labels=["a", "b"]))
    assert only_rows.shape[0] == plain.shape[0] and only_rows.shape[1] > plain.shape[1]


def test_a_label_count_that_does_not_match_the_grid_is_refused():
    with pytest.raises(ValueError, match="2 rows"):
        make_grid(torch.zeros(6, 3, 8, 8), nrow=3, row_labels=["only one"])
    with pytest.raises(ValueError, match="3 columns"):
        make_grid(torch.zeros(6, 3, 8, 8), nrow=3, col_labels=["a", "b"])
