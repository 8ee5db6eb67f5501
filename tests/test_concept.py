"""Chapter 06's concept (the sks butterfly) and its fidelity measure: images deterministic per
seed, the existing butterflies unchanged, held-out concept images above the threshold and every
training class below it (benchmarks/concept_fidelity.md has the full-size numbers)."""

import colorsys
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ddlearn
from ddlearn.concept_fidelity import (
    THRESHOLD,
    concept_fidelity,
    concept_similarities,
    concept_similarity,
    prior_colour_accuracy,
)
from ddlearn.data import shipped_model
from ddlearn.data.butterflies import (
    CLASS_PROMPT,
    COLOURS,
    CONCEPT,
    CONCEPT_PROMPT,
    NUM_CLASSES,
    concept_images,
    make_butterfly,
    make_concept_butterfly,
    posed_butterfly,
)
from ddlearn.data.transforms import to_tensor
from ddlearn.sample_quality import embed


@pytest.fixture(scope="module")
def pipe():
    pipe = ddlearn.StableDiffusionPipeline.from_pretrained(shipped_model("tiny-sd-butterflies"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def as_tensor(images) -> torch.Tensor:
    return torch.stack([to_tensor(np.asarray(image)) for image in images])


def test_existing_butterflies_draw_exactly_the_same_bytes():
    """A hash of 400 jittered and 3 unjittered butterflies with their attributes, taken before
    the concept was added to the drawing code."""
    h = hashlib.sha256()
    for size in (32, 48):
        for seed in range(200):
            image, attrs = make_butterfly(seed, size)
            h.update(image.tobytes())
            h.update(repr(sorted(attrs.items())).encode())
    for seed in (900_000, 1_900_123, 5_000_007):
        h.update(make_butterfly(seed, 32, jitter=False)[0].tobytes())
    assert h.hexdigest() == "285181ce121f25de313dc65847641a1a4183aba4cedaef3aae5f5e091d76c6cc"


def test_concept_images_are_deterministic_per_seed_with_make_butterflys_poses():
    image, attrs = make_concept_butterfly(5)
    again, attrs_again = make_concept_butterfly(5)
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    assert image.tobytes() == again.tobytes() and attrs == attrs_again
    assert len({make_concept_butterfly(seed)[0].tobytes() for seed in range(20)}) == 20
    assert attrs["caption"] == CONCEPT_PROMPT == "a sks butterfly" and CLASS_PROMPT == "a butterfly"
    butterfly = make_butterfly(5)[1]
    assert [attrs[k] for k in ("scale", "angle", "offset")] == \
        [butterfly[k] for k in ("scale", "angle", "offset")]
    instance, held_out = concept_images(8), concept_images(4, split="test")
    assert len(instance) == 8 and instance[0].size == (32, 32) and instance[0].mode == "RGB"
    assert np.array_equal(np.asarray(instance[3]), make_concept_butterfly(3)[0])
    assert np.array_equal(np.asarray(held_out[0]), make_concept_butterfly(900_000)[0])
    unjittered = make_concept_butterfly(5, 48, jitter=False)[0]
    assert np.array_equal(unjittered, unjittered[:, ::-1])
    with pytest.raises(ValueError, match="size must be an integer >= 8"):
        make_concept_butterfly(0, size=4)
    with pytest.raises(ValueError, match="split must be one of"):
        concept_images(8, split="validation")


def test_posed_butterfly_draws_what_make_butterfly_draws():
    for seed in (11, 900_004):
        image, attrs = make_butterfly(seed)
        same = posed_butterfly(seed, attrs["colour"], attrs["pattern"],
                               attrs["pattern_colour"] or "black", attrs["shape"])
        assert np.array_equal(image, same)


def test_the_concepts_wing_hue_is_far_from_every_training_colour():
    """At an unjittered forewing centre, the hue is teal's (0.5), >= 0.1 from every saturated
    COLOURS hue (black, white and brown have no hue the eye names)."""
    pixel = make_concept_butterfly(0, 32, jitter=False)[0][13, 22] / 255
    hue, saturation, _ = colorsys.rgb_to_hsv(*pixel)
    assert abs(hue - 0.5) < 0.02 and saturation > 0.8
    for name in ("red", "orange", "yellow", "green", "blue", "purple"):
        other = colorsys.rgb_to_hsv(*COLOURS[name])[0]
        assert min(abs(hue - other), 1 - abs(hue - other)) >= 0.1, name


def test_similarity_is_the_mean_pairwise_cosine_for_every_input_type():
    images = concept_images(6, split="test")
    references = concept_images(3, seed=2)
    f, r = embed(images)[0], embed(references)[0]
    expected = (F.normalize(f, dim=1) @ F.normalize(r, dim=1).T).mean()
    assert concept_similarity(images, references) == pytest.approx(expected.item(), abs=1e-9)
    as_array = np.stack([np.asarray(image) for image in images])
    default = concept_similarities(images)  # the 8 instance images as references
    np.testing.assert_allclose(concept_similarities(as_array), default, atol=1e-9)
    np.testing.assert_allclose(concept_similarities(as_tensor(images)), default, atol=1e-9)
    np.testing.assert_allclose(default, concept_similarities(images, concept_images(8)))


def test_held_out_concept_images_score_high_also_through_the_vae(pipe):
    held_out = as_tensor(concept_images(48, seed=3, split="test"))
    s = concept_similarities(held_out)
    assert s.min() > THRESHOLD + 0.1 and concept_fidelity(held_out) == 1.0
    vae = ddlearn.VAEWrapper(pipe.vae)
    round_trip = vae.decode(vae.encode((held_out + 1) / 2), output_type="pt") * 2 - 1
    assert concept_fidelity(round_trip) >= 0.95  # the sharpest a fine-tuned model can draw


def test_every_training_class_and_the_nearest_ones_score_low():
    images, counts, seed = [], [0] * NUM_CLASSES, 2_900_000
    while min(counts) < 3:
        image, attrs = make_butterfly(seed, 32)
        if counts[attrs["label"]] < 3:
            counts[attrs["label"]] += 1
            images.append(image)
        seed += 1
    assert concept_fidelity(np.stack(images)) == 0.0
    assert concept_similarities(np.stack(images)).max() < THRESHOLD
    for colour in ("blue", "green"):  # the concept's poses, shape and orange rim
        nearest = np.stack([posed_butterfly(2_900_000 + i, **dict(CONCEPT, colour=colour))
                            for i in range(24)])
        assert concept_similarities(nearest).max() < THRESHOLD - 0.05, colour


def test_blur_and_noise_lower_the_similarity_step_by_step():
    x = as_tensor(concept_images(32, seed=4, split="test"))
    blur = lambda p: F.interpolate(F.interpolate(x, size=(p, p), mode="bilinear", antialias=True),
                                   size=(32, 32), mode="bilinear")
    g = torch.Generator().manual_seed(0)
    noise = lambda sigma: (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    blurred = [concept_similarity(blur(p)) for p in (16, 8, 4)]
    noised = [concept_similarity(noise(sigma)) for sigma in (0.2, 0.4, 0.8)]
    assert concept_similarity(x) > blurred[0] > blurred[1] > blurred[2]
    assert concept_similarity(x) > noised[0] > noised[1] > noised[2]
    assert concept_fidelity(blur(16)) == 1.0 and concept_fidelity(blur(4)) == 0.0
    assert concept_fidelity(noise(0.8)) < 0.1


def test_the_shipped_tiny_sd_has_never_seen_the_concept(pipe):
    for prompt in (CLASS_PROMPT, CONCEPT_PROMPT):
        samples = pipe([prompt] * 8, num_inference_steps=20, guidance_scale=7.5,
                       generator=torch.Generator().manual_seed(0)).images
        assert concept_fidelity(samples) == 0.0, prompt
        assert concept_similarity(samples) < 0.4, prompt


def test_prior_colour_accuracy_names_the_wing_colour():
    reds, blues, seed = [], [], 900_000
    while len(reds) < 5 or len(blues) < 5:
        image, attrs = make_butterfly(seed, 32)
        if attrs["pattern"] == "plain" and attrs["colour"] in ("red", "blue"):
            (reds if attrs["colour"] == "red" else blues).append(image)
        seed += 1
    assert prior_colour_accuracy(reds[:5], "red") == 1.0
    assert prior_colour_accuracy(np.stack(blues[:5]), "red") == 0.0


def test_clear_errors():
    image = concept_images(1)[0]
    with pytest.raises(ValueError, match="no images given"):
        concept_fidelity([])
    with pytest.raises(ValueError, match=r"one PIL image; pass a list of them, \[image\]"):
        concept_similarity(image)
    with pytest.raises(ValueError, match=r"one image of shape \(32, 32, 3\).*image\[None\]"):
        concept_similarity(np.asarray(image))
    with pytest.raises(ValueError, match="'black' has no hue.*red, orange"):
        prior_colour_accuracy([image], "black")
