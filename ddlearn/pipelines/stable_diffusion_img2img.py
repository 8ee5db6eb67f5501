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

from ddlearn.lora import lora_scale_from
from ddlearn.models.vae_wrapper import VAEWrapper
from ddlearn.noise import randn_tensor
from ddlearn.pipelines.checks import check_call_extras, check_number, check_tensor
from ddlearn.pipelines.stable_diffusion import (
    StableDiffusionPipeline,
    StableDiffusionPipelineOutput,
)


class StableDiffusionImg2ImgPipeline(StableDiffusionPipeline):
    @torch.no_grad()
    def __call__(self, prompt=None, image=None, strength: float = 0.8,
                 num_inference_steps: int = 50, guidance_scale: float = 7.5, negative_prompt=None,
                 num_images_per_prompt: int = 1, eta: float = 0.0, generator=None,
                 prompt_embeds=None, negative_prompt_embeds=None, output_type: str = "pil",
                 return_dict: bool = True, cross_attention_kwargs=None,
                 callback_on_step_end=None, **kwargs) -> StableDiffusionPipelineOutput:
        check_call_extras(self, kwargs)
        lora_scale = lora_scale_from(cross_attention_kwargs, f"{type(self).__name__}.__call__")
        # 0. every argument checked before any work; the image in [-1, 1] (or given as latents)
        batch_size = self.check_inputs(prompt, negative_prompt, prompt_embeds,
                                       negative_prompt_embeds, num_images_per_prompt, generator,
                                       output_type, return_dict, callback_on_step_end)
        num_inference_steps, guidance_scale, eta = self.check_numbers(num_inference_steps,
                                                                      guidance_scale, eta)
        timesteps = self.get_timesteps(num_inference_steps, check_strength(strength))
        init_image = self.preprocess(image, batch_size, latents_allowed=True)
        # 1. text -> embeddings
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, num_images_per_prompt, guidance_scale > 1.0, negative_prompt, prompt_embeds,
            negative_prompt_embeds, lora_scale=lora_scale)
        # 2. z_0 noised to the first timestep of the part of the schedule that remains
        z_0 = self.encode_image(init_image, batch_size, generator)
        noise = randn_tensor(z_0.shape, generator, device=self.device, dtype=z_0.dtype)
        latents = self.scheduler.add_noise(z_0, noise, timesteps[:1].repeat(batch_size))
        # 3. denoise from there, then decode
        latents = self.denoise(latents, timesteps, prompt_embeds, negative_prompt_embeds,
                               guidance_scale, generator, eta, callback_on_step_end,
                               cross_attention_kwargs=cross_attention_kwargs)
        return self.output(latents, output_type, return_dict)

    def preprocess(self, image, batch_size: int = 1, latents_allowed: bool = False):
        """PIL image(s), a [0, 1] array or tensor, or a list of them -> (b, 3, H, W) in [-1, 1]
        on the pipeline device; b must divide the batch. With `latents_allowed`, a tensor with
        the VAE's latent channels is z_0 itself, as in diffusers."""
        if image is None:
            raise ValueError("image is missing: give a PIL image, a list of them, or a numpy "
                             "array / torch tensor with values in [0, 1]")
        image = stack_list(image)
        latent_channels = self.vae.config.latent_channels
        if isinstance(image, torch.Tensor) and image.ndim == 4 \
                and image.shape[1] == latent_channels != self.vae.config.in_channels:
            if not latents_allowed:
                raise ValueError(f"image has {latent_channels} channels, so it looks like "
                                 f"latents; {type(self).__name__} takes the image itself")
            x = check_tensor("image", image)
            self.check_size(*(n * self.vae_scale_factor for n in x.shape[-2:]), multiple_of=1,
                            name="image (latents) height and width x vae_scale_factor")
        else:
            x = VAEWrapper(self.vae).to_tensor(image) * 2 - 1  # checks channels and [0, 1]
            check_tensor("image", x)
            self.check_size(*x.shape[-2:], multiple_of=1, name="image height and width")
        if x.shape[0] > batch_size or batch_size % x.shape[0]:
            raise ValueError(f"image holds {x.shape[0]} images but the batch has {batch_size} "
                             f"(prompts x num_images_per_prompt); give one image, or a number "
                             f"that divides the batch")
        return x.to(self.device, self.vae.dtype)

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
        """(b, 3, H, W) in [-1, 1] -> z_0 · scaling_factor (a posterior sample drawn with
        `generator`), tiled to the batch as diffusers does: [a, b] -> [a, b, a, b]. A list of
        generators draws one sample per image of the batch. Latents pass as they are."""
        copies = batch_size // image.shape[0]
        if image.shape[1] == self.vae.config.latent_channels != self.vae.config.in_channels:
            return image.repeat(copies, 1, 1, 1)
        if isinstance(generator, list):
            image = image.repeat(copies, 1, 1, 1)
            z_0 = torch.cat([self.vae.encode(image[i:i + 1]).latent_dist.sample(g)
                             for i, g in enumerate(generator)])
        else:
            z_0 = self.vae.encode(image).latent_dist.sample(generator).repeat(copies, 1, 1, 1)
        return z_0 * self.vae.config.scaling_factor


class StableDiffusionInpaintPipeline(StableDiffusionImg2ImgPipeline):
    @torch.no_grad()
    def __call__(self, prompt=None, image=None, mask_image=None, height=None, width=None,
                 strength: float = 1.0, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, negative_prompt=None, num_images_per_prompt: int = 1,
                 eta: float = 0.0, generator=None, prompt_embeds=None,
                 negative_prompt_embeds=None, output_type: str = "pil", return_dict: bool = True,
                 cross_attention_kwargs=None, callback_on_step_end=None,
                 **kwargs) -> StableDiffusionPipelineOutput:
        check_call_extras(self, kwargs)
        lora_scale = lora_scale_from(cross_attention_kwargs, f"{type(self).__name__}.__call__")
        # 0. checks; image in [-1, 1], mask in {0, 1} at latent size (1 = regenerate)
        if self.unet.config.in_channels != 4:
            raise ValueError("ddlearn inpaints with a standard 4-channel UNet (latent blending); "
                             f"this UNet takes {self.unet.config.in_channels} channels")
        batch_size = self.check_inputs(prompt, negative_prompt, prompt_embeds,
                                       negative_prompt_embeds, num_images_per_prompt, generator,
                                       output_type, return_dict, callback_on_step_end)
        num_inference_steps, guidance_scale, eta = self.check_numbers(num_inference_steps,
                                                                      guidance_scale, eta)
        strength = check_strength(strength)
        timesteps = self.get_timesteps(num_inference_steps, strength)
        init_image = self.preprocess(image, batch_size)
        check_same_size(init_image.shape[-2:], height, width)
        mask = self.preprocess_mask(mask_image, init_image.shape[-2:])
        # 1. text -> embeddings
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, num_images_per_prompt, guidance_scale > 1.0, negative_prompt, prompt_embeds,
            negative_prompt_embeds, lora_scale=lora_scale)
        # 2. z_0 of the image; start from noise (strength 1) or from z_0 noised (strength < 1)
        z_0 = self.encode_image(init_image, batch_size, generator)
        noise = randn_tensor(z_0.shape, generator, device=self.device, dtype=z_0.dtype)
        latents = noise * self.scheduler.init_noise_sigma if strength == 1.0 else \
            self.scheduler.add_noise(z_0, noise, timesteps[:1].repeat(z_0.shape[0]))
        # diffusers now encodes the masked image too (its 9-channel inpainting UNets take it), with
        # a posterior sample per image; draw the same numbers so that stochastic steps match it
        images = init_image.shape[0]
        randn_tensor((images, *z_0.shape[1:]), generator[:images] if isinstance(generator, list)
                     else generator, device=self.device, dtype=z_0.dtype)

        # 3. denoise; after each step, keep the known region at the matching noise level
        def keep_known_region(i, latents):
            known = z_0
            if i < len(timesteps) - 1:
                known = self.scheduler.add_noise(z_0, noise, timesteps[i + 1:i + 2])
            return (1 - mask) * known + mask * latents

        latents = self.denoise(latents, timesteps, prompt_embeds, negative_prompt_embeds,
                               guidance_scale, generator, eta, callback_on_step_end,
                               after_step=keep_known_region,
                               cross_attention_kwargs=cross_attention_kwargs)
        return self.output(latents, output_type, return_dict)

    def encode_image(self, image, batch_size, generator) -> torch.Tensor:
        """As diffusers' inpainting: a list of generators encodes image i with generator i."""
        if not isinstance(generator, list):
            return super().encode_image(image, batch_size, generator)
        z_0 = torch.cat([self.vae.encode(image[i:i + 1]).latent_dist.sample(generator[i])
                         for i in range(image.shape[0])])
        return z_0.repeat(batch_size // z_0.shape[0], 1, 1, 1) * self.vae.config.scaling_factor

    def preprocess_mask(self, mask_image, image_size) -> torch.Tensor:
        """PIL (white = regenerate) or a [0, 1] array/tensor -> (1, 1, h, w) binary mask at latent
        size."""
        if mask_image is None:
            raise ValueError("mask_image is missing: give a PIL image (white where to paint) or "
                             "an (H, W) array / tensor in [0, 1]")
        if isinstance(mask_image, Image.Image):
            mask_image = np.asarray(mask_image.convert("L"), dtype=np.float32) / 255.0
        if not isinstance(mask_image, (np.ndarray, torch.Tensor)):
            raise TypeError(f"mask_image must be a PIL image, a numpy array or a torch tensor, "
                            f"got {type(mask_image).__name__}")
        mask = check_tensor("mask_image", torch.as_tensor(np.asarray(mask_image, np.float32)))
        if mask.ndim < 2 or mask.numel() != mask.shape[-2] * mask.shape[-1]:
            raise ValueError(f"mask_image has shape {tuple(mask.shape)}; give one mask, (H, W) "
                             f"or (1, 1, H, W)")
        mask = mask.reshape(1, 1, *mask.shape[-2:])  # (H, W) or (1, 1, H, W) -> (1, 1, H, W)
        if tuple(mask.shape[-2:]) != tuple(image_size):
            raise ValueError(f"mask_image is {tuple(mask.shape[-2:])} but the image is "
                             f"{tuple(image_size)}; give a mask of the same height and width")
        mask = (mask >= 0.5).float()
        f = self.vae_scale_factor
        latent_size = (image_size[0] // f, image_size[1] // f)
        return F.interpolate(mask, size=latent_size).to(self.device, self.vae.dtype)


def check_strength(strength) -> float:
    return check_number("strength", strength, 0.0, 1.0, "0 keeps the image, 1 ignores it")


def check_same_size(image_size, height, width):
    """diffusers' inpainting resizes the image to height x width; ddlearn takes it as it is."""
    wanted = (height or image_size[0], width or image_size[1])
    if tuple(wanted) != tuple(image_size):
        raise ValueError(f"height x width = {wanted[0]}x{wanted[1]} but the image is "
                         f"{image_size[0]}x{image_size[1]}; ddlearn does not resize: resize the "
                         f"image (and mask) first, or leave height and width out")


def stack_list(image):
    """A list of arrays or tensors -> one batch (diffusers takes those too); else unchanged."""
    if isinstance(image, list) and image and all(isinstance(im, np.ndarray) for im in image):
        return np.concatenate(image) if image[0].ndim == 4 else np.stack(image)
    if isinstance(image, list) and image and all(isinstance(im, torch.Tensor) for im in image):
        return torch.cat(image) if image[0].ndim == 4 else torch.stack(image)
    if not isinstance(image, (Image.Image, np.ndarray, torch.Tensor)) and not (
            isinstance(image, list) and image and all(isinstance(im, Image.Image) for im in image)):
        raise TypeError(f"image must be a PIL image, a list of them, or a numpy array / torch "
                        f"tensor with values in [0, 1] (or a list of those); got "
                        f"{type(image).__name__}")
    return image
