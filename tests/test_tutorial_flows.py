"""diffusers' own tutorials, pasted with `diffusers` swapped for `ddlearn`: same code, same numbers.

Each flow below is a diffusers tutorial's code in its own order, written once against a `lib`
that is either ddlearn or diffusers (with transformers' CLIP text model). Hub ids map to the
shipped checkpoints, and the few lines that only make the run short are marked "(short)":
- the quicktour ("Quicktour": pipeline, then model and scheduler by hand);
- "Understanding pipelines, models and schedulers" (the denoising loop);
- "Train a diffusion model" (the basic training tutorial: add_noise, `return_dict=False`,
  AdamW, then DDPMPipeline(unet=model, scheduler=noise_scheduler));
- "Load schedulers and models" / swapping schedulers (`compatibles`, chains of `from_config`,
  a scheduler passed to `from_pretrained`);
- "Deconstruct the Stable Diffusion pipeline" (tokenizer, text encoder, UNet, VAE by hand).
"""

from types import SimpleNamespace

import diffusers
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

import ddlearn
from ddlearn.data import shipped_model
from ddlearn.data.butterflies import make_butterfly

HUB = {"google/ddpm-cat-256": shipped_model("ddpm-butterflies-32"),
       "stable-diffusion-v1-5/stable-diffusion-v1-5": shipped_model("tiny-sd-butterflies")}
LIBRARIES = {
    "ddlearn": ddlearn,
    "diffusers": SimpleNamespace(**{n: getattr(diffusers, n) for n in dir(diffusers)
                                    if n[0].isupper()}, CLIPTextModel=transformers.CLIPTextModel),
}
SWAPS = ["DDIMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
         "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler"]


def as_array(x) -> np.ndarray:
    """Tensors, arrays and PIL images as numpy (uint8 images stay uint8)."""
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def quicktour(lib) -> dict:
    repo_id = HUB["google/ddpm-cat-256"]
    pipeline = lib.DDPMPipeline.from_pretrained(repo_id, use_safetensors=True)
    pipeline.to("cpu")
    pipeline.set_progress_bar_config(disable=True)
    torch.manual_seed(0)
    image = pipeline(num_inference_steps=5).images[0]  # (short)
    model = lib.UNet2DModel.from_pretrained(repo_id, subfolder="unet", use_safetensors=True)
    torch.manual_seed(0)
    noisy_sample = torch.randn(1, model.config.in_channels, model.config.sample_size,
                               model.config.sample_size)
    with torch.no_grad():
        noisy_residual = model(sample=noisy_sample, timestep=2).sample
    scheduler = lib.DDPMScheduler.from_pretrained(repo_id, subfolder="scheduler")
    less_noisy_sample = scheduler.step(model_output=noisy_residual, timestep=2,
                                       sample=noisy_sample).prev_sample
    return {"image": image, "residual": noisy_residual, "less_noisy": less_noisy_sample}


def denoising_loop(lib) -> dict:
    repo_id = HUB["google/ddpm-cat-256"]
    scheduler = lib.DDPMScheduler.from_pretrained(repo_id, subfolder="scheduler")
    model = lib.UNet2DModel.from_pretrained(repo_id, subfolder="unet", use_safetensors=True)
    model = model.to("cpu")
    scheduler.set_timesteps(50)
    sample_size = model.config.sample_size
    torch.manual_seed(0)
    noise = torch.randn((1, 3, sample_size, sample_size), device="cpu")
    input = noise
    for t in scheduler.timesteps:
        with torch.no_grad():
            noisy_residual = model(input, t).sample
        previous_noisy_sample = scheduler.step(noisy_residual, t, input).prev_sample
        input = previous_noisy_sample
    image = (input / 2 + 0.5).clamp(0, 1).squeeze()
    image = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
    return {"image": image, "timesteps": scheduler.timesteps}


def basic_training(lib, initial_state: dict) -> dict:
    model = lib.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                            block_out_channels=(32, 64),  # (short)
                            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                            up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    model.load_state_dict(initial_state)  # the same starting weights in both libraries
    clean_images = torch.stack([torch.from_numpy(make_butterfly(i, 16)[0]).permute(2, 0, 1)
                                for i in range(4)]).float() / 127.5 - 1
    noise_scheduler = lib.DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    torch.manual_seed(0)
    losses = []
    for _ in range(3):  # (short)
        noise = torch.randn(clean_images.shape, device=clean_images.device)
        bs = clean_images.shape[0]
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bs,),
                                  device=clean_images.device, dtype=torch.int64)
        noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
        noise_pred = model(noisy_images, timesteps, return_dict=False)[0]
        loss = F.mse_loss(noise_pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    pipeline = lib.DDPMPipeline(unet=model, scheduler=noise_scheduler)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=2, generator=torch.Generator(device="cpu").manual_seed(0),
                      num_inference_steps=20, output_type="np").images  # (short)
    return {"losses": losses, "images": images, "weight": model.conv_out.weight}


def swapping_schedulers(lib) -> dict:
    repo_id = HUB["stable-diffusion-v1-5/stable-diffusion-v1-5"]
    pipeline = lib.DiffusionPipeline.from_pretrained(repo_id, torch_dtype=torch.float32,
                                                     use_safetensors=True, safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)
    prompt = "a blue butterfly with orange spots"
    out = {"compatibles": {c.__name__ for c in pipeline.scheduler.compatibles} & set(SWAPS)}
    for name in SWAPS:
        pipeline.scheduler = getattr(lib, name).from_config(pipeline.scheduler.config)
        generator = torch.Generator(device="cpu").manual_seed(8)
        out[name] = pipeline(prompt, generator=generator, num_inference_steps=6).images[0]
    scheduler = lib.EulerDiscreteScheduler.from_pretrained(repo_id, subfolder="scheduler")
    pipeline = lib.DiffusionPipeline.from_pretrained(repo_id, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    out["passed in"] = pipeline(prompt, num_inference_steps=6, output_type="np",
                                generator=torch.Generator(device="cpu").manual_seed(8)).images
    return out


def deconstructed_stable_diffusion(lib) -> dict:
    repo_id = HUB["stable-diffusion-v1-5/stable-diffusion-v1-5"]
    vae = lib.AutoencoderKL.from_pretrained(repo_id, subfolder="vae", use_safetensors=True)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(repo_id, subfolder="tokenizer")
    text_encoder = lib.CLIPTextModel.from_pretrained(repo_id, subfolder="text_encoder",
                                                     use_safetensors=True)
    unet = lib.UNet2DConditionModel.from_pretrained(repo_id, subfolder="unet",
                                                    use_safetensors=True)
    scheduler = lib.UniPCMultistepScheduler.from_pretrained(repo_id, subfolder="scheduler")
    torch_device = "cpu"
    prompt = ["a red butterfly with yellow stripes"]
    height = width = 32  # the tiny SD's size (SD 1.5: 512)
    vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)  # SD 1.5: 8
    num_inference_steps, guidance_scale = 10, 7.5
    generator = torch.manual_seed(0)
    batch_size = len(prompt)
    text_input = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt")
    with torch.no_grad():
        text_embeddings = text_encoder(text_input.input_ids.to(torch_device))[0]
    max_length = text_input.input_ids.shape[-1]
    uncond_input = tokenizer([""] * batch_size, padding="max_length", max_length=max_length,
                             return_tensors="pt")
    uncond_embeddings = text_encoder(uncond_input.input_ids.to(torch_device))[0]
    text_embeddings = torch.cat([uncond_embeddings, text_embeddings])
    latents = torch.randn((batch_size, unet.config.in_channels, height // vae_scale_factor,
                           width // vae_scale_factor), generator=generator, device=torch_device)
    latents = latents * scheduler.init_noise_sigma
    scheduler.set_timesteps(num_inference_steps)
    for t in scheduler.timesteps:
        latent_model_input = torch.cat([latents] * 2)
        latent_model_input = scheduler.scale_model_input(latent_model_input, timestep=t)
        with torch.no_grad():
            noise_pred = unet(latent_model_input, t, encoder_hidden_states=text_embeddings).sample
        noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
        noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        latents = scheduler.step(noise_pred, t, latents).prev_sample
    latents = 1 / vae.config.scaling_factor * latents  # SD 1.5: 0.18215
    with torch.no_grad():
        image = vae.decode(latents).sample
    image = (image / 2 + 0.5).clamp(0, 1).squeeze()
    image = (image.permute(1, 2, 0) * 255).to(torch.uint8).cpu().numpy()
    return {"embeddings": text_embeddings, "latents": latents, "image": image}


def assert_same(ours: dict, theirs: dict, atol: float = 1e-4):
    """Numbers equal to `atol`; 8-bit images to one level (float rounding at 127.5 may flip)."""
    assert ours.keys() == theirs.keys()
    for key in ours:
        if isinstance(ours[key], set):
            assert ours[key] == theirs[key], key
            continue
        if isinstance(ours[key], list):
            assert ours[key] == pytest.approx(theirs[key], abs=atol), key
            continue
        a, b = as_array(ours[key]), as_array(theirs[key])
        assert a.shape == b.shape, (key, a.shape, b.shape)
        tolerance = 1 if a.dtype == np.uint8 else atol
        worst = np.abs(a.astype(np.float64) - b.astype(np.float64)).max()
        assert worst <= tolerance, f"{key}: differs by {worst}"


@pytest.mark.parametrize("flow", [quicktour, denoising_loop, swapping_schedulers,
                                  deconstructed_stable_diffusion], ids=lambda f: f.__name__)
def test_tutorial_gives_diffusers_numbers(flow):
    assert_same(flow(LIBRARIES["ddlearn"]), flow(LIBRARIES["diffusers"]))


def test_basic_training_tutorial_gives_diffusers_losses_weights_and_samples():
    torch.manual_seed(0)
    reference = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3,
                                      layers_per_block=1, block_out_channels=(32, 64),
                                      down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                      up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    ours = basic_training(LIBRARIES["ddlearn"], state)
    theirs = basic_training(LIBRARIES["diffusers"], state)
    assert_same(ours, theirs)
