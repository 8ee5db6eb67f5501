"""Image-to-image and inpainting: start the text-to-image loop part-way, from a noised real image.

Mirrors `diffusers.StableDiffusionImg2ImgPipeline` (SDEdit, Meng et al. 2022) and the
latent-blending `StableDiffusionInpaintPipeline` path for a standard 4-channel UNet.

img2img: encode the image to z_0, noise it to the timestep where `strength` of the schedule remains,
z_t = √ᾱ_t z_0 + √(1-ᾱ_t) ε (`scheduler.add_noise`), and denoise from there. strength 1 ignores the
image; strength 0 returns it. The number of steps actually run is ⌊num_inference_steps · strength⌋.

inpainting: the same, plus after every step the region to keep (mask = 0) is replaced by the
original latents noised to the next timestep, so only the masked region (mask = 1) is generated.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ddlearn.models.vae_wrapper import VAEWrapper
from ddlearn.pipelines.pipeline import ImagePipelineOutput, randn_tensor
from ddlearn.pipelines.stable_diffusion import StableDiffusionPipeline


class StableDiffusionImg2ImgPipeline(StableDiffusionPipeline):
    @torch.no_grad()
    def __call__(self, prompt=None, image=None, strength: float = 0.8,
                 num_inference_steps: int = 50, guidance_scale: float = 7.5, negative_prompt=None,
                 num_images_per_prompt: int = 1, eta: float = 0.0, generator=None,
                 prompt_embeds=None, negative_prompt_embeds=None, output_type: str = "pil",
                 callback_on_step_end=None) -> ImagePipelineOutput:
        # 0. checks; the image in [-1, 1]
        check_strength(strength)
        init_image = self.preprocess(image)
        # 1. text -> embeddings
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, num_images_per_prompt, guidance_scale > 1.0, negative_prompt, prompt_embeds,
            negative_prompt_embeds)
        # 2. the part of the schedule that remains, and z_0 noised to its first timestep
        timesteps = self.get_timesteps(num_inference_steps, strength)
        z_0 = self.encode_image(init_image, prompt_embeds.shape[0], generator)
        noise = randn_tensor(z_0.shape, generator, device=self.device, dtype=z_0.dtype)
        latents = self.scheduler.add_noise(z_0, noise, timesteps[:1].repeat(z_0.shape[0]))
        # 3. denoise from there, then decode
        latents = self.denoise(latents, timesteps, prompt_embeds, negative_prompt_embeds,
                               guidance_scale, generator, eta, callback_on_step_end)
        return ImagePipelineOutput(self.postprocess(self.decode_latents(latents), output_type))

    def preprocess(self, image) -> torch.Tensor:
        """PIL image(s), a [0, 1] array or tensor -> (B, 3, H, W) in [-1, 1] on the pipeline
        device."""
        if image is None:
            raise ValueError("img2img needs an `image` (PIL image, list of them, or a tensor)")
        x = VAEWrapper(self.vae).to_tensor(image)  # checks channels and divisibility
        self.check_size(*x.shape[-2:])
        return (x * 2 - 1).to(self.device, self.vae.dtype)

    def get_timesteps(self, num_inference_steps: int, strength: float) -> torch.Tensor:
        """Skip the first (1 - strength) of the schedule: run ⌊n·strength⌋ of the n steps."""
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
        t_start = max(num_inference_steps - init_timestep, 0) * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start)
        if t_start >= len(self.scheduler.timesteps):
            raise ValueError(f"strength={strength} with num_inference_steps={num_inference_steps} "
                             f"leaves no step to run; raise one of them")
        return self.scheduler.timesteps[t_start:]

    def encode_image(self, image, batch_size, generator) -> torch.Tensor:
        """(b, 3, H, W) in [-1, 1] -> z_0 · scaling_factor, repeated to the batch (a posterior
        sample drawn with `generator`, as diffusers does)."""
        if batch_size % image.shape[0]:
            raise ValueError(f"cannot spread {image.shape[0]} images over a batch of {batch_size}")
        z_0 = self.vae.encode(image).latent_dist.sample(generator) * self.vae.config.scaling_factor
        return z_0.repeat_interleave(batch_size // image.shape[0], dim=0)


class StableDiffusionInpaintPipeline(StableDiffusionImg2ImgPipeline):
    @torch.no_grad()
    def __call__(self, prompt=None, image=None, mask_image=None, strength: float = 1.0,
                 num_inference_steps: int = 50, guidance_scale: float = 7.5, negative_prompt=None,
                 num_images_per_prompt: int = 1, eta: float = 0.0, generator=None,
                 prompt_embeds=None, negative_prompt_embeds=None, output_type: str = "pil",
                 callback_on_step_end=None) -> ImagePipelineOutput:
        # 0. checks; image in [-1, 1], mask in {0, 1} at latent size (1 = regenerate)
        check_strength(strength)
        if self.unet.config.in_channels != 4:
            raise ValueError("ddlearn inpaints with a standard 4-channel UNet (latent blending); "
                             f"this UNet takes {self.unet.config.in_channels} channels")
        init_image = self.preprocess(image)
        mask = self.preprocess_mask(mask_image, init_image.shape[-2:])
        # 1. text -> embeddings
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, num_images_per_prompt, guidance_scale > 1.0, negative_prompt, prompt_embeds,
            negative_prompt_embeds)
        # 2. z_0 of the image; start from noise (strength 1) or from z_0 noised (strength < 1)
        timesteps = self.get_timesteps(num_inference_steps, strength)
        z_0 = self.encode_image(init_image, prompt_embeds.shape[0], generator)
        noise = randn_tensor(z_0.shape, generator, device=self.device, dtype=z_0.dtype)
        latents = noise * self.scheduler.init_noise_sigma if strength == 1.0 else \
            self.scheduler.add_noise(z_0, noise, timesteps[:1].repeat(z_0.shape[0]))

        # 3. denoise; after each step, keep the known region at the matching noise level
        def keep_known_region(i, latents):
            known = z_0
            if i < len(timesteps) - 1:
                known = self.scheduler.add_noise(z_0, noise, timesteps[i + 1:i + 2])
            return (1 - mask) * known + mask * latents

        latents = self.denoise(latents, timesteps, prompt_embeds, negative_prompt_embeds,
                               guidance_scale, generator, eta, callback_on_step_end,
                               after_step=keep_known_region)
        return ImagePipelineOutput(self.postprocess(self.decode_latents(latents), output_type))

    def preprocess_mask(self, mask_image, image_size) -> torch.Tensor:
        """PIL (white = regenerate) or a [0, 1] array/tensor -> (1, 1, h, w) binary mask at latent
        size."""
        if mask_image is None:
            raise ValueError("inpainting needs a `mask_image` (white where to paint)")
        if isinstance(mask_image, Image.Image):
            mask_image = np.asarray(mask_image.convert("L"), dtype=np.float32) / 255.0
        mask = torch.as_tensor(np.asarray(mask_image, dtype=np.float32))
        mask = mask.reshape(1, 1, *mask.shape[-2:])  # (H, W) or (1, 1, H, W) -> (1, 1, H, W)
        if tuple(mask.shape[-2:]) != tuple(image_size):
            raise ValueError(f"mask_image is {tuple(mask.shape[-2:])} but the image is "
                             f"{tuple(image_size)}; give a mask of the same height and width")
        mask = (mask >= 0.5).float()
        f = self.vae_scale_factor
        latent_size = (image_size[0] // f, image_size[1] // f)
        return F.interpolate(mask, size=latent_size).to(self.device, self.vae.dtype)


def check_strength(strength: float):
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength={strength} must be in [0, 1]: 0 keeps the image, 1 ignores it")
