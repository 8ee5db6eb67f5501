"""StableDiffusionPipeline: text -> CLIP embeddings -> denoise latents with guidance -> VAE decode.

Mirrors `diffusers.StableDiffusionPipeline` (Rombach et al. 2022, "High-Resolution Image Synthesis
with Latent Diffusion Models"), minus the safety checker. Classifier-free guidance (Ho & Salimans
2022, eq. 6) runs the UNet once on a batch that stacks the unconditional and the conditional halves:

    ε̂ = ε_θ(z_t, t, ∅) + w · (ε_θ(z_t, t, c) - ε_θ(z_t, t, ∅))        w = guidance_scale

| code                 | paper | meaning                                                         |
|----------------------|-------|-----------------------------------------------------------------|
| `latents`            | z_t   | noisy latent, (B, 4, H/f, W/f) with f = `vae_scale_factor`      |
| `prompt_embeds`      | c     | CLIP text-encoder output, (B, 77, d)                            |
| `guidance_scale`     | w     | 1 = no guidance; SD uses 7.5                                    |
| `guidance_rescale`   | φ     | 0 = off; pulls std(ε̂) back towards std(ε_c) (Lin et al. §3.4)   |
| `scaling_factor`     |       | latents are z / scaling_factor before `vae.decode` (≈ unit var) |

Every argument is checked before any model runs (`check_inputs`, `check_numbers`, `check_size`;
helpers in ddlearn/pipelines/checks.py). The output is diffusers' `StableDiffusionPipelineOutput`
(images, nsfw_content_detected=None); `output_type="latent"` returns the latents undecoded.
"""

import inspect
from typing import NamedTuple

import torch

from ddlearn.lora import lora_scale_from, scaled_lora_layers
from ddlearn.noise import randn_tensor
from ddlearn.pipelines.checks import (
    check_call_extras,
    check_image_size,
    check_number,
    check_prompts,
    check_steps,
    check_tensor,
    check_text_inputs,
)
from ddlearn.pipelines.lora_loading import StableDiffusionLoraLoaderMixin
from ddlearn.pipelines.pipeline import DiffusionPipeline
from ddlearn.textual_inversion import TextualInversionLoaderMixin


class StableDiffusionPipelineOutput(NamedTuple):
    """What diffusers returns: the images and `nsfw_content_detected` (None: ddlearn has no safety
    checker). A NamedTuple, so `images, nsfw = pipe(...)` also works as diffusers' tuple does."""

    images: object  # PIL list, (B, H, W, C) array, (B, C, H, W) tensor, or latents ("latent")
    nsfw_content_detected: object = None


class StableDiffusionPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin,
                              TextualInversionLoaderMixin):
    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        super().__init__(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                         scheduler=scheduler)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def __call__(self, prompt=None, height=None, width=None, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, negative_prompt=None, num_images_per_prompt: int = 1,
                 eta: float = 0.0, generator=None, latents=None, prompt_embeds=None,
                 negative_prompt_embeds=None, output_type: str = "pil", return_dict: bool = True,
                 guidance_rescale: float = 0.0, cross_attention_kwargs=None,
                 callback_on_step_end=None, **kwargs) -> StableDiffusionPipelineOutput:
        check_call_extras(self, kwargs)
        lora_scale = lora_scale_from(cross_attention_kwargs, f"{type(self).__name__}.__call__")
        # 0. defaults as in diffusers; every argument checked before any work
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        height, width = self.check_size(height, width)
        batch_size = self.check_inputs(prompt, negative_prompt, prompt_embeds,
                                       negative_prompt_embeds, num_images_per_prompt, generator,
                                       output_type, return_dict, callback_on_step_end)
        num_inference_steps, guidance_scale, eta = self.check_numbers(num_inference_steps,
                                                                      guidance_scale, eta)
        guidance_rescale = check_number("guidance_rescale", guidance_rescale, low=0.0,
                                        meaning="0 is off; Lin et al. use 0.7")
        shape = self.latent_shape(batch_size, height, width)
        if latents is not None:
            check_tensor("latents", latents, shape, "prompts x num_images_per_prompt, "
                         "in_channels, height and width / vae_scale_factor")
        do_cfg = guidance_scale > 1.0
        # 1. text -> embeddings c (and ∅ for guidance), a text-encoder LoRA weighted by s
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, num_images_per_prompt, do_cfg, negative_prompt, prompt_embeds,
            negative_prompt_embeds, lora_scale=lora_scale)
        # 2. timesteps and the starting noise z_T
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = self.prepare_latents(shape, prompt_embeds.dtype, generator, latents)
        # 3. denoise, then decode
        latents = self.denoise(latents, self.scheduler.timesteps, prompt_embeds,
                               negative_prompt_embeds, guidance_scale, generator, eta,
                               callback_on_step_end, guidance_rescale=guidance_rescale,
                               cross_attention_kwargs=cross_attention_kwargs)
        return self.output(latents, output_type, return_dict)

    # ---- 0. argument checks (diffusers' check_inputs, and what it leaves to break later) --------
    def check_inputs(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                     num_images_per_prompt, generator, output_type, return_dict,
                     callback_on_step_end) -> int:
        """Raise one clear error for a bad argument; return the batch size (prompts x images)."""
        return check_text_inputs(self, prompt, negative_prompt, prompt_embeds,
                                 negative_prompt_embeds, num_images_per_prompt, generator,
                                 output_type, return_dict, callback_on_step_end)

    @staticmethod
    def check_numbers(num_inference_steps, guidance_scale, eta) -> tuple:
        """-> (int steps, float w, float eta), each checked: NaN or inf would give NaN images."""
        return (check_steps(num_inference_steps),
                check_number("guidance_scale", guidance_scale, meaning="1 or less turns guidance "
                             "off; SD uses 7.5"),
                check_number("eta", eta, 0.0, 1.0, "DDIM's noise: 0 is deterministic, 1 DDPM-like"))

    def check_size(self, height, width, multiple_of: int = 8,
                   name: str = "height and width") -> tuple:
        """Multiples of 8 (diffusers' rule for height and width) and of what the VAE and
        ddlearn's UNet divide by."""
        unet_factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        return check_image_size(height, width, self.vae_scale_factor, unet_factor, multiple_of,
                                name)

    # ---- 1. prompts ----------------------------------------------------------------------------
    def encode_prompt(self, prompt, num_images_per_prompt=1, do_classifier_free_guidance=True,
                      negative_prompt=None, prompt_embeds=None, negative_prompt_embeds=None,
                      lora_scale=None):
        """-> (c, ∅): (B·n, 77, d) text embeddings, and the negative/empty ones (None without
        CFG). `lora_scale` weights the text encoder's LoRA layers meanwhile (s, as diffusers)."""
        with scaled_lora_layers(self.text_encoder, 1.0 if lora_scale is None else lora_scale):
            return self._encode_prompt(prompt, num_images_per_prompt, do_classifier_free_guidance,
                                       negative_prompt, prompt_embeds, negative_prompt_embeds)

    def _encode_prompt(self, prompt, num_images_per_prompt, do_classifier_free_guidance,
                       negative_prompt, prompt_embeds, negative_prompt_embeds):
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of `prompt` and `prompt_embeds`")
        if prompt is not None:
            prompt_embeds = self.embed_text(check_prompts("prompt", prompt))
        batch_size = prompt_embeds.shape[0]
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative = negative_prompt if negative_prompt is not None else ""
            negative = [negative] * batch_size if isinstance(negative, str) else list(negative)
            if len(negative) != batch_size:
                raise ValueError(f"negative_prompt has {len(negative)} entries but the batch has "
                                 f"{batch_size} prompts; give one per prompt, or a single string")
            negative_prompt_embeds = self.embed_text(negative)
        repeat = lambda e: None if e is None else e.repeat_interleave(num_images_per_prompt, dim=0)
        if not do_classifier_free_guidance:
            negative_prompt_embeds = None
        return repeat(prompt_embeds), repeat(negative_prompt_embeds)

    def embed_text(self, texts) -> torch.Tensor:
        """Texts -> token ids padded to the tokenizer's max length (77 for CLIP) -> (B, 77, d).
        A multi-vector textual-inversion token "S*" is first written "S* S*_1 ..." (diffusers)."""
        texts = self.maybe_convert_prompt(texts, self.tokenizer)
        max_length = self.tokenizer.model_max_length
        ids = self.tokenizer(texts, padding="max_length", max_length=max_length, truncation=True,
                             return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    # ---- 2. latents ----------------------------------------------------------------------------
    def latent_shape(self, batch_size: int, height: int, width: int) -> tuple:
        f = self.vae_scale_factor
        return (batch_size, self.unet.config.in_channels, height // f, width // f)

    def prepare_latents(self, shape, dtype, generator, latents=None):
        """z_T: drawn with `generator` (or the given `latents`), scaled by init_noise_sigma."""
        if latents is None:
            latents = randn_tensor(shape, generator, device=self.device, dtype=dtype)
        return latents.to(self.device) * self.scheduler.init_noise_sigma

    # ---- 3. the denoising loop -----------------------------------------------------------------
    def denoise(self, latents, timesteps, prompt_embeds, negative_prompt_embeds, guidance_scale,
                generator=None, eta=0.0, callback_on_step_end=None, after_step=None,
                guidance_rescale: float = 0.0, cross_attention_kwargs=None):
        """The sampler loop with classifier-free guidance over one batched uncond+cond UNet pass
        (`cross_attention_kwargs={"scale": s}` weights the UNet's LoRA layers)."""
        step_kwargs = self.step_kwargs(generator, eta)
        do_cfg = negative_prompt_embeds is not None
        context = torch.cat([negative_prompt_embeds, prompt_embeds]) if do_cfg else prompt_embeds
        for i, t in enumerate(self.progress_bar(timesteps)):
            model_input = torch.cat([latents] * 2) if do_cfg else latents  # (2B, 4, h, w)
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise_pred = self.unet(model_input, t, encoder_hidden_states=context,
                                   cross_attention_kwargs=cross_attention_kwargs).sample
            if do_cfg:  # ε̂ = ε_∅ + w (ε_c - ε_∅)
                noise_uncond, noise_text = noise_pred.chunk(2)
                noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
                if guidance_rescale > 0:
                    noise_pred = rescale_guided_noise(noise_pred, noise_text, guidance_rescale)
            latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
            if after_step is not None:  # e.g. inpainting re-imposes the known region
                latents = after_step(i, latents)
            if callback_on_step_end is not None:
                out = callback_on_step_end(self, i, t, {"latents": latents}) or {}
                latents = out.get("latents", latents)
        return latents

    def step_kwargs(self, generator, eta) -> dict:
        """Pass `eta` and `generator` only to schedulers whose step() takes them (as diffusers)."""
        accepted = inspect.signature(self.scheduler.step).parameters
        kwargs = {"eta": eta} if "eta" in accepted else {}
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs

    def decode_latents(self, latents) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] (B, 3, H, W)."""
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    def output(self, latents, output_type: str, return_dict: bool = True):
        """Decode and convert, or with output_type="latent" return the latents as they are (as
        diffusers does); `return_dict=False` gives diffusers' plain tuple (images, None)."""
        images = latents if output_type == "latent" else \
            self.postprocess(self.decode_latents(latents), output_type)
        output = StableDiffusionPipelineOutput(images)
        return output if return_dict else tuple(output)


def rescale_guided_noise(noise_cfg, noise_text, guidance_rescale: float) -> torch.Tensor:
    """Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", §3.4:
    guidance inflates the spread of ε̂ (over-exposed, over-saturated images). Rescale ε̂ to the
    per-sample std of the conditional ε_c, then mix: φ · rescaled + (1 - φ) · ε̂."""
    dims = list(range(1, noise_cfg.ndim))  # every axis but the batch
    rescaled = noise_cfg * (noise_text.std(dim=dims, keepdim=True)
                            / noise_cfg.std(dim=dims, keepdim=True))
    return guidance_rescale * rescaled + (1 - guidance_rescale) * noise_cfg
