"""The hue measures behind benchmarks/colour_accuracy.py name colours right where truth is known."""

import numpy as np

from ddlearn.colour_accuracy import (
    HUE_COLOURS,
    dominant_colour,
    hue_fractions,
    measures_on_data,
    pattern_hit,
)
from ddlearn.data.butterflies import COLOURS


def painted(colour, spots=None):
    """A pale background with a block of wing colour (and a few spots of another colour)."""
    image = np.full((32, 32, 3), 235, dtype=np.uint8)
    image[8:24, 4:28] = np.array(COLOURS[colour]) * 255
    if spots:
        image[12:16, 8:12] = image[12:16, 20:24] = np.array(COLOURS[spots]) * 255
    return image


def test_a_painted_colour_is_named_and_the_background_is_ignored():
    for colour in HUE_COLOURS:
        assert dominant_colour(painted(colour)) == colour
    assert dominant_colour(np.full((32, 32, 3), 235, dtype=np.uint8)) == "none"


def test_pattern_colour_needs_both_the_wing_and_enough_pattern_pixels():
    image = painted("blue", spots="orange")  # 32 of 384 wing pixels: 8%
    assert abs(hue_fractions(image)["orange"] - 32 / 384) < 1e-6
    assert pattern_hit(image, "blue", "orange")
    assert not pattern_hit(image, "blue", "green") and not pattern_hit(image, "red", "orange")


def test_measures_on_the_synthetic_butterflies():
    wing, pattern = measures_on_data(n=300)
    assert wing == 1.0 and pattern > 0.9


def test_a_vae_round_trip_is_measured_through_the_vae():
    """An untrained VAE destroys the colours: the round-trip measure must see that."""
    import torch

    from ddlearn import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32,), norm_num_groups=8, sample_size=32)
    with torch.no_grad():
        wing, pattern = measures_on_data(n=60, vae=vae)
    assert wing < 0.5 and pattern < 0.5
