"""Pipelines give the same images as diffusers for the same seed, and load each other's folders."""

import json
import warnings

import diffusers
import numpy as np
import pytest
import torch
import transformers
from model_harness import assert_close, randomise
from PIL import Image

import ddlearn
from ddlearn.data.tokenizer import build_clip_tokenizer
from ddlearn.hub import HubOfflineError

TOLERANCE = 2e-3  # max pixel difference, images in [0, 1]
CAPTION_WORDS = ["a blue butterfly with orange spots", "a red moth", "green stripes"]


def images_of(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images


def assert_same_images(ours, theirs):
    assert_close(ours, theirs, rtol=0, atol=TOLERANCE, what="images")


# ---- DDPM / DDIM -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    unet = randomise(diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D")), seed=1)
    folder = tmp_path_factory.mktemp("ddpm")
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(folder)
    return folder


def test_ddpm_pipeline_matches_diffusers(ddpm_folder):
    ours = ddlearn.DDPMPipeline.from_pretrained(ddpm_folder)
    theirs = diffusers.DDPMPipeline.from_pretrained(ddpm_folder)
    assert isinstance(ours.unet, ddlearn.UNet2DModel)
    assert isinstance(ours.scheduler, ddlearn.DDPMScheduler)
    assert_same_images(images_of(ours, batch_size=2, num_inference_steps=8),
                       images_of(theirs, batch_size=2, num_inference_steps=8))


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_pipeline_matches_diffusers(ddpm_folder, eta):
    ours = ddlearn.DDIMPipeline.from_pretrained(ddpm_folder)
    theirs = diffusers.DDIMPipeline.from_pretrained(ddpm_folder)
    assert isinstance(ours.scheduler, ddlearn.DDIMScheduler)  # converted, as diffusers does
    assert_same_images(images_of(ours, batch_size=2, num_inference_steps=6, eta=eta),
                       images_of(theirs, batch_size=2, num_inference_steps=6, eta=eta))


def test_ddlearn_saved_ddpm_pipeline_loads_in_diffusers(ddpm_folder, tmp_path):
    ours = ddlearn.DDPMPipeline.from_pretrained(ddpm_folder)
    ours.save_pretrained(tmp_path)
    theirs = diffusers.DDPMPipeline.from_pretrained(tmp_path)
    assert_same_images(images_of(ours, num_inference_steps=5),
                       images_of(theirs, num_inference_steps=5))


def test_output_types_and_components(ddpm_folder):
    pipe = ddlearn.DiffusionPipeline.from_pretrained(ddpm_folder)  # class from model_index.json
    assert type(pipe) is ddlearn.DDPMPipeline
    assert set(pipe.components) == {"unet", "scheduler"}
    pil = images_of(pipe, num_inference_steps=2).shape
    assert pil == (1, 16, 16, 3)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(num_inference_steps=2, output_type="pil").images
    assert isinstance(images[0], Image.Image) and images[0].size == (16, 16)
    tensor = pipe(num_inference_steps=2, output_type="pt").images
    assert tensor.shape == (1, 3, 16, 16) and 0 <= tensor.min() and tensor.max() <= 1
    with pytest.raises(ValueError, match="output_type"):
        pipe(num_inference_steps=2, output_type="jpeg")
    assert pipe.to(dtype=torch.float64).dtype == torch.float64


# ---- Stable Diffusion ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd")
    tokenizer = build_clip_tokenizer(CAPTION_WORDS, folder / "tokenizer", model_max_length=16)
    text_encoder = randomise(transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
        pad_token_id=1)), seed=2)
    unet = randomise(diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")), seed=3)
    vae = randomise(diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2), 4)
    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                        beta_end=0.012, clip_sample=False, set_alpha_to_one=False)
    diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


def sd_pair(folder, scheduler_name, cls_name="StableDiffusionPipeline"):
    ours = getattr(ddlearn, cls_name).from_pretrained(folder)
    theirs = getattr(diffusers, cls_name).from_pretrained(folder, safety_checker=None)
    ours.scheduler = getattr(ddlearn, scheduler_name).from_config(ours.scheduler.config)
    theirs.scheduler = getattr(diffusers, scheduler_name).from_config(theirs.scheduler.config)
    return ours, theirs


SD_CALL = dict(prompt=["a blue butterfly with orange spots", "a red moth"],
               negative_prompt=["green stripes", ""], num_inference_steps=4, guidance_scale=6.0,
               height=16, width=16)


@pytest.mark.parametrize("scheduler_name", ["DDIMScheduler", "EulerDiscreteScheduler",
                                            "DPMSolverMultistepScheduler",
                                            "EulerAncestralDiscreteScheduler", "PNDMScheduler",
                                            "UniPCMultistepScheduler"])
def test_stable_diffusion_matches_diffusers(sd_folder, scheduler_name):
    ours, theirs = sd_pair(sd_folder, scheduler_name)
    assert isinstance(ours.text_encoder, ddlearn.CLIPTextModel)
    assert_same_images(images_of(ours, **SD_CALL), images_of(theirs, **SD_CALL))


def test_stable_diffusion_options_match_diffusers(sd_folder):
    ours, theirs = sd_pair(sd_folder, "DDIMScheduler")
    call = dict(prompt="a red moth", num_images_per_prompt=2, guidance_scale=1.0,
                num_inference_steps=3, height=16, width=16)
    assert_same_images(images_of(ours, **call), images_of(theirs, **call))


def test_guidance_rescale_matches_diffusers(sd_folder):
    ours, theirs = sd_pair(sd_folder, "DDIMScheduler")
    rescaled = images_of(ours, **SD_CALL, guidance_rescale=0.7)
    assert_same_images(rescaled, images_of(theirs, **SD_CALL, guidance_rescale=0.7))
    assert np.abs(rescaled - images_of(ours, **SD_CALL)).max() > 1e-3  # it does change the image


def test_prompt_embeds_and_latents_give_the_same_image(sd_folder):
    pipe = ddlearn.StableDiffusionPipeline.from_pretrained(sd_folder)
    embeds, negative = pipe.encode_prompt("a red moth", 1, True)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    a = images_of(pipe, prompt="a red moth", latents=latents, num_inference_steps=3)
    b = images_of(pipe, prompt_embeds=embeds, negative_prompt_embeds=negative, latents=latents,
                  num_inference_steps=3)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_callback_sees_every_step(sd_folder):
    pipe = ddlearn.StableDiffusionPipeline.from_pretrained(sd_folder)
    seen = []
    record = lambda pipe, i, t, kwargs: seen.append((i, int(t), kwargs["latents"].shape))
    images_of(pipe, prompt="a red moth", num_inference_steps=3, callback_on_step_end=record)
    assert [s[0] for s in seen] == [0, 1, 2] and seen[0][2] == (1, 4, 8, 8)


def test_img2img_matches_diffusers(sd_folder):
    ours, theirs = sd_pair(sd_folder, "DDIMScheduler", "StableDiffusionImg2ImgPipeline")
    image = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    call = dict(prompt="a red moth", image=image, strength=0.6, num_inference_steps=5)
    assert_same_images(images_of(ours, **call), images_of(theirs, **call))


def test_inpaint_matches_diffusers_and_keeps_the_unmasked_region(sd_folder):
    ours, theirs = sd_pair(sd_folder, "DDIMScheduler", "StableDiffusionInpaintPipeline")
    image = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:12, 4:12] = 255
    call = dict(prompt="a red moth", image=image, mask_image=Image.fromarray(mask),
                num_inference_steps=4, height=16, width=16)
    call_ours = {k: v for k, v in call.items() if k not in ("height", "width")}
    assert_same_images(images_of(ours, **call_ours), images_of(theirs, **call))


def test_ddlearn_saved_sd_pipeline_loads_in_diffusers(sd_folder, tmp_path):
    ours = ddlearn.StableDiffusionPipeline.from_pretrained(sd_folder)
    ours.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    theirs = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path, safety_checker=None)
    call = dict(prompt="a red moth", num_inference_steps=3, height=16, width=16)
    assert_same_images(images_of(ours, **call), images_of(theirs, **call))


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_inputs_get_clear_errors(sd_folder):
    pipe = ddlearn.StableDiffusionImg2ImgPipeline.from_pretrained(sd_folder)
    txt2img = ddlearn.StableDiffusionPipeline(**pipe.components)
    with pytest.raises(ValueError, match="negative_prompt has 1 entries but the batch has 2"):
        txt2img(prompt=["a", "b"], negative_prompt=["c"], num_inference_steps=2)
    with pytest.raises(ValueError, match="height and width must be multiples of 8"):
        txt2img(prompt="a red moth", height=18, width=16, num_inference_steps=2)
    with pytest.raises(ValueError, match="exactly one of `prompt` and `prompt_embeds`"):
        txt2img(num_inference_steps=2)
    image = Image.new("RGB", (16, 16))
    for strength in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"strength=.* must be in \[0, 1\]"):
            pipe(prompt="a red moth", image=image, strength=strength)
    inpaint = ddlearn.StableDiffusionInpaintPipeline(**pipe.components)
    with pytest.raises(ValueError, match=r"mask_image is \(8, 8\) but the image is \(16, 16\)"):
        inpaint(prompt="a red moth", image=image, mask_image=Image.new("L", (8, 8)))


def test_missing_component_and_offline_hub_id(sd_folder, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(sd_folder, tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    del index["vae"]
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="has no 'vae' entry"):
        ddlearn.StableDiffusionPipeline.from_pretrained(tmp_path / "pipe")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(HubOfflineError, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        ddlearn.StableDiffusionPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_safety_checker_entries_are_skipped_with_a_note(sd_folder, tmp_path):
    import shutil

    shutil.copytree(sd_folder, tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps(index))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ddlearn.StableDiffusionPipeline.from_pretrained(tmp_path / "pipe")
    assert any("skipping safety_checker" in str(w.message) for w in caught)
