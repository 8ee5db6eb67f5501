"""The shipped checkpoints load offline, generate, stay small, and load in diffusers too."""

import numpy as np
import pytest
import torch

import ddlearn
from ddlearn.colour_accuracy import HUE_COLOURS, dominant_colour
from ddlearn.data import shipped_model


def folder_megabytes(folder) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def generate(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images


def test_ddpm_butterflies_loads_offline_and_generates():
    folder = shipped_model("ddpm-butterflies-32")
    assert folder_megabytes(folder) <= 20
    pipe = ddlearn.DDIMPipeline.from_pretrained(folder)
    images = generate(pipe, batch_size=2, num_inference_steps=4)
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()
    assert images.std() > 0.05  # not a blank image


def test_tiny_sd_loads_offline_and_generates_the_same_images_in_diffusers():
    import diffusers

    folder = shipped_model("tiny-sd-butterflies")
    assert folder_megabytes(folder) <= 40
    ours = ddlearn.StableDiffusionPipeline.from_pretrained(folder)
    theirs = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    call = dict(prompt=["a red butterfly", "a blue butterfly with yellow spots"],
                num_inference_steps=5, guidance_scale=2.0)
    a, b = generate(ours, **call), generate(theirs, **call)
    assert a.shape == (2, 32, 32, 3)
    assert np.abs(a - b).max() <= 2e-3


def test_ch04_cpu_butterflies_is_the_32px_run_and_generates_the_same_images_in_diffusers():
    """Chapter 04's 5-minute CPU checkpoint: the chosen 32 px config, small, and what ddlearn draws
    from it diffusers draws too."""
    import diffusers

    folder = shipped_model("ch04-cpu-butterflies")
    assert folder_megabytes(folder) <= 2
    ours = ddlearn.DDIMPipeline.from_pretrained(folder)
    assert ours.unet.config.sample_size == 32
    assert tuple(ours.unet.config.block_out_channels) == (16, 32, 64)
    assert ours.scheduler.config.prediction_type == "epsilon"
    theirs = diffusers.DDIMPipeline.from_pretrained(folder)
    a, b = (generate(pipe, batch_size=2, num_inference_steps=10) for pipe in (ours, theirs))
    assert a.shape == (2, 32, 32, 3) and np.abs(a - b).max() <= 1e-4


def test_ch04_cpu_butterflies_scores_near_the_gpu_ddpm():
    """Its KID on 100 DDIM-25 samples sits well below blurred blobs (766 on 200 samples) and the
    previous 16 px checkpoint (2,016), far from noise, with most classes covered
    (benchmarks/ch04_cpu_configs.md: 653 on 200 samples, 699 on these 100)."""
    from ddlearn.sample_quality import butterfly_quality

    pipe = ddlearn.DDIMPipeline.from_pretrained(shipped_model("ch04-cpu-butterflies"))
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        images = pipe(batch_size=100, num_inference_steps=25, output_type="pt",
                      generator=torch.Generator().manual_seed(0)).images
    score = butterfly_quality(images * 2 - 1)
    assert score["kid"] < 0.9 and score["coverage"] >= 0.4, score


def test_shipped_model_names_a_missing_one():
    with pytest.raises(FileNotFoundError, match="no shipped model 'nope'.*ddpm-butterflies-32"):
        shipped_model("nope")


def test_tiny_sd_draws_the_prompts_colour_at_the_default_guidance():
    """Guidance 7.5 (the pipeline's default) must not break the shipped model: with SD 1.x's
    PNDM at 25 steps it did (orange and purple came out as other colours or smears)."""
    pipe = ddlearn.StableDiffusionPipeline.from_pretrained(shipped_model("tiny-sd-butterflies"))
    pipe.set_progress_bar_config(disable=True)
    images = pipe([f"a {colour} butterfly" for colour in HUE_COLOURS], num_inference_steps=25,
                  generator=torch.Generator().manual_seed(0)).images
    assert [dominant_colour(image) for image in images] == list(HUE_COLOURS)


def test_tiny_sd3_is_in_the_sd3_layout_and_gives_diffusers_images():
    """Chapter 07's model: SD3's folder (two CLIPs with projection, no T5, an 8x VAE with 16
    latent channels and a shift, the MMDiT, flow-matching Euler), loaded by diffusers' own
    StableDiffusion3Pipeline, the same images for the same seed at the pipeline's defaults."""
    import diffusers

    folder = shipped_model("tiny-sd3-butterflies")
    assert folder_megabytes(folder) <= 20
    ours = ddlearn.StableDiffusion3Pipeline.from_pretrained(folder)
    assert ours.vae_scale_factor == 8 and ours.vae.config.latent_channels == 16
    assert ours.vae.config.shift_factor is not None and ours.text_encoder_3 is None
    theirs = diffusers.StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None,
                                                                tokenizer_3=None)
    call = dict(prompt=["a red butterfly", "a blue butterfly with yellow spots"],
                num_inference_steps=6)
    a, b = generate(ours, **call), generate(theirs, **call)
    assert a.shape == (2, 32, 32, 3)  # height // 8 = 4 x 4 latents
    assert np.abs(a - b).max() <= 2e-3


def test_tiny_sd3_draws_the_prompts_colour_at_the_pipelines_defaults():
    """28 flow-matching Euler steps, guidance 7, as a learner pasting SD3 code gets them."""
    pipe = ddlearn.StableDiffusion3Pipeline.from_pretrained(shipped_model("tiny-sd3-butterflies"))
    pipe.set_progress_bar_config(disable=True)
    images = pipe([f"a {colour} butterfly" for colour in HUE_COLOURS] * 2,
                  generator=torch.Generator().manual_seed(0)).images
    right = sum(dominant_colour(image) == colour
                for image, colour in zip(images, list(HUE_COLOURS) * 2, strict=True))
    assert right >= 11, f"only {right} of 12 images have the prompt's wing colour"
