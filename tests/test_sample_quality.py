"""The sample-quality measure (KID in the shipped classifier's features, and coverage) is validated:
real against real sits at the floor, noise, blobs, memorisation and a missing colour score far,
and the shipped GPU-trained 32 px DDPM scores close to real."""

import pytest
import torch
import torch.nn.functional as F

from ddlearn.data.butterflies import make_butterfly
from ddlearn.sample_quality import (
    butterfly_quality,
    coverage,
    embed,
    kid,
    load_classifier,
    real_butterflies,
    resize,
)


@pytest.fixture(scope="module")
def floor():
    """Real (seed 1) against the real reference (seed 0), 300 images at 32 px."""
    return butterfly_quality(real_butterflies(300, 32, seed=1))


def test_kid_is_unbiased_zero_for_one_distribution_and_grows_with_a_shift():
    """Over 60 independent pairs of samples of one distribution the estimates average to 0 (an
    estimator that kept the i = j terms would sit clearly above it); a shift moves it up."""
    g = torch.Generator().manual_seed(0)
    draw = lambda shift=0.0: torch.randn(100, 16, generator=g).double() + shift
    same = torch.tensor([kid(draw(), draw(), subsets=1)[0] for _ in range(60)])
    assert abs(same.mean()) < 3 * same.std() / 60 ** 0.5
    x, y = draw(), draw()
    assert kid(x, y + 0.5)[0] > kid(x, y + 0.25)[0] > 3 * same.std()
    with pytest.raises(ValueError, match="at least 2 images"):
        kid(x[:1], y)


def test_kid_equals_the_formula_on_one_full_subset():
    """With subset_size = n the estimator is the plain unbiased MMD² (Bińkowski et al., eq. 4)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 8, generator=g).double(), torch.randn(30, 8, generator=g).double() + 0.3
    k = lambda a, b: (a @ b.T / 8 + 1) ** 3
    n = 30
    expected = ((k(x, x).sum() - k(x, x).diag().sum()) / (n * (n - 1))
                + (k(y, y).sum() - k(y, y).diag().sum()) / (n * (n - 1)) - 2 * k(x, y).mean())
    value, spread = kid(x, y, subset_size=30, subsets=3)
    assert value == pytest.approx(expected.item(), rel=1e-9) and spread < 1e-9


def test_the_classifier_knows_the_45_classes_at_32_and_16_px():
    labels = torch.tensor([make_butterfly(900_000 + i, 8)[1]["label"] for i in range(300)])
    for size, at_least in ((32, 0.9), (16, 0.7)):
        _, probabilities = embed(real_butterflies(300, size))
        accuracy = (probabilities.argmax(-1) == labels).float().mean().item()
        assert accuracy >= at_least, (size, accuracy)


def test_real_against_real_sits_at_the_floor(floor):
    assert abs(floor["kid"]) < 0.02 and floor["coverage"] > 0.95 and floor["confident"] > 0.9
    at_16 = butterfly_quality(real_butterflies(300, 16, seed=1))  # compared with real 16 px
    assert abs(at_16["kid"]) < 0.02 and at_16["coverage"] > 0.9


def test_noise_blobs_memorisation_and_a_missing_colour_score_far(floor):
    real = real_butterflies(300, 32, seed=1)
    blobs = F.interpolate(F.interpolate(real, size=(4, 4), mode="bilinear", antialias=True),
                          size=(32, 32), mode="bilinear")
    noise = torch.rand(300, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    one_image = real[:1].expand(300, -1, -1, -1)
    reds = torch.stack([x for x, i in zip(real, range(300), strict=True)
                        if make_butterfly(1_000_000 + 900_000 + i, 8)[1]["colour"] == "red"])
    scores = {name: butterfly_quality(images) for name, images in
              [("blobs", blobs), ("noise", noise), ("one image", one_image), ("reds", reds)]}
    for name, score in scores.items():
        assert score["kid"] > 20 * max(abs(floor["kid"]), 0.005), (name, score, floor)
    assert scores["one image"]["coverage"] <= 1 / 45 and scores["reds"]["coverage"] <= 5 / 45


def test_the_gpu_trained_ddpm_scores_between_real_and_noise(floor):
    """Well above the floor, far below noise: the measure sees its tinted backgrounds, speckled
    samples and uneven classes, which put it near real butterflies blurred to 4 px
    (benchmarks/sample_quality.md shows the samples)."""
    import ddlearn
    from ddlearn.data import shipped_model

    pipe = ddlearn.DDPMPipeline.from_pretrained(shipped_model("ddpm-butterflies-32"))
    pipe = ddlearn.DDIMPipeline(unet=pipe.unet,
                                scheduler=ddlearn.DDIMScheduler.from_config(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        images = pipe(batch_size=100, num_inference_steps=20, output_type="pt",
                      generator=torch.Generator().manual_seed(0)).images
    score = butterfly_quality(images * 2 - 1)
    noise = butterfly_quality(torch.rand(100, 3, 32, 32,
                                         generator=torch.Generator().manual_seed(1)) * 2 - 1)
    assert 10 * abs(floor["kid"]) < score["kid"] < noise["kid"] / 5, (score, noise)
    assert score["coverage"] > 0.5 and score["confident"] > 0.8


def test_inputs_pil_and_sizes():
    images = [real_butterflies(1, 32, seed=2)[0] for _ in range(2)]
    from ddlearn.data.transforms import to_pil

    as_pil = butterfly_quality([to_pil(x) for x in images], subsets=2)
    as_tensor = butterfly_quality(torch.stack(images), subsets=2)
    assert as_pil["kid"] == pytest.approx(as_tensor["kid"], abs=1e-3)
    assert resize(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        butterfly_quality(torch.zeros(3, 32, 32))
    assert coverage(torch.eye(45)[:3]) == (3 / 45, 1.0)
    assert load_classifier() is load_classifier()  # loaded once
