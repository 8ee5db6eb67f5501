"""Chapter 06's concept (the sks butterfly) and its fidelity measure: the images are fixed by
their seed and new to the training data, and the measure tells the concept from every training
class (the full validation: benchmarks/concept_fidelity.md)."""

import numpy as np
import pytest
from PIL import Image

from ddlearn.concept_fidelity import (
    THRESHOLD,
    concept_fidelity,
    concept_similarities,
    prior_colour_accuracy,
)
from ddlearn.data.butterflies import (
    COLOURS,
    CONCEPT,
    PATTERNS,
    concept_images,
    make_butterfly,
    make_concept_butterfly,
    posed_butterfly,
)


def test_concept_images_are_fixed_by_seed_and_splits_differ():
    a, b = concept_images(3), concept_images(3)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))
    test = concept_images(3, split="test")
    assert not np.array_equal(np.asarray(a[0]), np.asarray(test[0]))
    image, attrs = make_concept_butterfly(5)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert attrs["caption"] == "a sks butterfly"


def test_concept_is_outside_the_training_distribution():
    """Teal is none of the 9 colours: no training butterfly has the concept's wing colour."""
    assert CONCEPT["colour"] not in COLOURS.values() and CONCEPT["pattern"] in PATTERNS


def test_posed_butterfly_draws_what_make_butterfly_draws():
    image, attrs = make_butterfly(11)
    same = posed_butterfly(11, attrs["colour"], attrs["pattern"],
                           attrs["pattern_colour"] or "black", attrs["shape"])
    assert np.array_equal(image, same)


def test_measure_separates_held_out_concept_from_training_classes():
    held_out = concept_images(16, split="test")
    assert concept_fidelity(held_out) == 1.0
    real = [Image.fromarray(make_butterfly(900_000 + i)[0]) for i in range(90)]
    s = concept_similarities(real)
    assert s.max() < THRESHOLD and concept_fidelity(real) == 0.0
    # the nearest impostor: the concept's own poses and orange rim, with blue wings
    blue = [posed_butterfly(900_000 + i, "blue", "edges", "orange", "round") for i in range(16)]
    assert concept_fidelity(np.stack(blue)) == 0.0


def test_measure_degrades_with_blur():
    held_out = concept_images(16, split="test")
    blurred = [im.resize((4, 4), Image.BILINEAR).resize((32, 32), Image.BILINEAR)
               for im in held_out]
    assert concept_similarities(blurred).mean() < concept_similarities(held_out).mean() - 0.2


def test_prior_colour_accuracy_on_real_butterflies():
    reds = [posed_butterfly(i, "red", "plain", "black", "round") for i in range(8)]
    assert prior_colour_accuracy(reds, "red") == 1.0
    assert prior_colour_accuracy(reds, "blue") == 0.0


@pytest.mark.parametrize("bad, words", [
    ([], "no images"), (np.zeros((32, 32, 3), np.uint8), "one image"),
])
def test_bad_input_gets_a_clear_error(bad, words):
    with pytest.raises(ValueError, match=words):
        concept_fidelity(bad)
    with pytest.raises(ValueError, match="no hue"):
        prior_colour_accuracy(concept_images(1), "teal")
