"""Checkers for chapter 05 (Stable Diffusion internals): your function against ddlearn's pipeline.

    from ddlearn.checks import ch05
    ch05.check_classifier_free_guidance(cfg)       # ε̂ = ε_∅ + w (ε_c - ε_∅)  (Ho & Salimans eq. 6)
    ch05.check_encode_latents(encode_latents)      # images in [0, 1] -> z · scaling_factor
    ch05.check_decode_latents(decode_latents)      # z · scaling_factor -> images in [0, 1]
    ch05.check_img2img_timesteps(img2img_timesteps)  # the tail of the schedule img2img runs

The references are ddlearn's own code: `VAEWrapper.encode/decode` (run on the shipped tiny SD's
VAE and synthetic butterflies) and `StableDiffusionImg2ImgPipeline.get_timesteps`. When yours is
off, each check also tries the usual mistakes and names the one your numbers match.
"""

from functools import lru_cache
from types import SimpleNamespace

import numpy as np
import torch

from ddlearn.checks import compare_with_mistakes, randn, run_check
from ddlearn.data import shipped_model
from ddlearn.data.butterflies import make_butterfly
from ddlearn.models.vae import AutoencoderKL
from ddlearn.models.vae_wrapper import VAEWrapper
from ddlearn.pipelines.stable_diffusion_img2img import StableDiffusionImg2ImgPipeline
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.heun import HeunDiscreteScheduler
from ddlearn.schedulers.pndm import PNDMScheduler

SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
SD_PNDM = dict(SD_BETAS, skip_prk_steps=True)  # Stable Diffusion 1.x's scheduler_config.json



# --------------------------------------------------------------------------------------------------
# Exercise 1: classifier-free guidance
# --------------------------------------------------------------------------------------------------
def check_classifier_free_guidance(fn):
    """fn(noise_pred, guidance_scale) -> ε̂, where noise_pred = UNet output on the doubled batch
    (2B, 4, h, w): the B unconditional (empty prompt) predictions first, then the B conditional."""

    def case(batch, w, seed):
        noise_pred = randn(2 * batch, 4, 8, 8, seed=seed)
        eps_uncond, eps_text = noise_pred.chunk(2)  # (2B, 4, h, w) -> 2 x (B, 4, h, w)
        expected = eps_uncond + w * (eps_text - eps_uncond)
        mistakes = {
            "the halves are swapped: the pipeline stacks [∅, c], so `noise_pred.chunk(2)` gives "
            "(ε_∅, ε_c) in that order.": eps_text + w * (eps_uncond - eps_text),
            "you returned only w (ε_c - ε_∅), the guidance *direction*; add it to the "
            "unconditional prediction ε_∅.": w * (eps_text - eps_uncond),
            "start from the unconditional ε_∅, not the conditional ε_c: "
            "ε̂ = ε_∅ + w (ε_c - ε_∅), so w = 1 gives exactly ε_c.":
                eps_text + w * (eps_text - eps_uncond),
        }
        yours = fn(noise_pred.clone(), w)
        compare_with_mistakes("classifier_free_guidance", yours, expected, mistakes,
                  "Split the batch with `noise_pred.chunk(2)` into (ε_∅, ε_c) and return "
                  "ε_∅ + guidance_scale · (ε_c - ε_∅), shape (B, 4, h, w).")

    return run_check("classifier_free_guidance", fn,
                     lambda: case(2, 7.5, seed=0),
                     lambda: case(3, 3.0, seed=1),
                     lambda: case(1, 1.0, seed=2))  # w = 1: plain conditional prediction


# --------------------------------------------------------------------------------------------------
# Exercise 2: latent scaling
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _vae() -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(shipped_model("tiny-sd-butterflies"), subfolder="vae")


def _butterflies(seeds) -> torch.Tensor:
    """Synthetic butterflies as a (B, 3, 32, 32) tensor in [0, 1]."""
    arrays = [np.asarray(make_butterfly(seed, 32)[0], dtype=np.float32) / 255 for seed in seeds]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def check_encode_latents(fn):
    """fn(vae, images) -> scaled latents: images (B, 3, H, W) in [0, 1], the posterior mean."""
    vae = _vae()
    s = vae.config.scaling_factor

    def case(seeds):
        images = _butterflies(seeds)
        with torch.no_grad():
            expected = VAEWrapper(vae).encode(images)
            z = expected / s
            mistakes = {
                "these are the raw VAE latents z; the diffusion model works on z · "
                "scaling_factor (`vae.config.scaling_factor`).": z,
                "multiply by the scaling factor when encoding (you divided).": z / s,
                "the VAE expects pixels in [-1, 1]: map x ↦ 2x - 1 before `vae.encode`.":
                    vae.encode(images).latent_dist.mode() * s,
            }
            yours = fn(vae, images.clone())
        compare_with_mistakes("encode_latents", yours, expected, mistakes,
                  "z = vae.encode(2 · images - 1).latent_dist.mode() (the mean; .sample() adds "
                  "noise), then return z · vae.config.scaling_factor.")

    return run_check("encode_latents", fn, lambda: case([4, 9]), lambda: case([14]))


def check_decode_latents(fn):
    """fn(vae, latents) -> images (B, 3, H, W) in [0, 1] from scaled latents."""
    vae = _vae()
    s = vae.config.scaling_factor

    def case(latents):
        with torch.no_grad():
            expected = VAEWrapper(vae).decode(latents, output_type="pt")
            to_01 = lambda x: (x / 2 + 0.5).clamp(0, 1)
            mistakes = {
                "divide by the scaling factor before `vae.decode` (you multiplied): "
                "z = latents / scaling_factor.": to_01(vae.decode(latents * s).sample),
                "the latents are scaled: decode z = latents / vae.config.scaling_factor, not "
                "the latents themselves.": to_01(vae.decode(latents).sample),
                "the decoder returns pixels in [-1, 1]: map them to [0, 1] with x / 2 + 0.5 "
                "(then clamp).": vae.decode(latents / s).sample.clamp(0, 1),
                "clamp the result to [0, 1]: the decoder can overshoot a little.":
                    vae.decode(latents / s).sample / 2 + 0.5,
            }
            yours = fn(vae, latents.clone())
        compare_with_mistakes("decode_latents", yours, expected, mistakes,
                  "x = vae.decode(latents / vae.config.scaling_factor).sample is in [-1, 1]; "
                  "return (x / 2 + 0.5).clamp(0, 1).")

    with torch.no_grad():
        real_latents = VAEWrapper(vae).encode(_butterflies([4, 9]))
    return run_check("decode_latents", fn,
                     lambda: case(real_latents),
                     lambda: case(1.5 * randn(1, 4, 8, 8, seed=3)))  # overshoots: clamp matters


# --------------------------------------------------------------------------------------------------
# Exercise 3: where img2img starts
# --------------------------------------------------------------------------------------------------
def check_img2img_timesteps(fn):
    """fn(scheduler, num_inference_steps, strength) -> the timesteps img2img denoises through
    (after calling scheduler.set_timesteps(num_inference_steps) itself)."""

    def case(make_scheduler, n, strength):
        reference = SimpleNamespace(scheduler=make_scheduler(), device="cpu")
        expected = StableDiffusionImg2ImgPipeline.get_timesteps(reference, n, strength)
        full = reference.scheduler.timesteps
        init_timestep, order = int(n * strength), reference.scheduler.order
        mistakes = {
            "you kept the *first* steps of the schedule (the noisiest); img2img skips them and "
            "runs the last ones: timesteps[t_start:].": full[:init_timestep * order],
            "round down: init_timestep = int(num_inference_steps · strength), as diffusers "
            "does (you rounded to nearest).": full[(n - round(n * strength)) * order:],
            "t_start counts skipped *entries* of scheduler.timesteps: multiply by "
            "scheduler.order (2 for Heun, whose schedule visits most timesteps twice).":
                full[n - init_timestep:],
            "you skipped strength of the schedule; img2img skips (1 - strength) of it: "
            "t_start = num_inference_steps - init_timestep.": full[init_timestep * order:],
        }
        yours = fn(make_scheduler(), n, strength)
        compare_with_mistakes("img2img_timesteps", yours, expected, mistakes,
                  "init_timestep = int(n · strength), t_start = (n - init_timestep) · "
                  "scheduler.order, return scheduler.timesteps[t_start:].")

    return run_check("img2img_timesteps", fn,
                     lambda: case(lambda: PNDMScheduler(**SD_PNDM), 25, 0.6),
                     lambda: case(lambda: DDIMScheduler(**SD_BETAS), 10, 0.35),  # 3.5 -> 3
                     lambda: case(lambda: HeunDiscreteScheduler(**SD_BETAS), 10, 0.5))  # order 2
