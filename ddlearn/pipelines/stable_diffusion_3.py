"""StableDiffusion3Pipeline: two CLIPs -> joint tokens -> flow-matching Euler with a transformer.

Mirrors `diffusers.StableDiffusion3Pipeline` (Esser et al. 2024, "Scaling Rectified Flow
Transformers for High-Resolution Image Synthesis"), without the T5 encoder: ddlearn's SD3
folders ship `text_encoder_3` = None, and then diffusers feeds the transformer zeros in T5's
place, as this pipeline does. With the same components, seed and arguments, the same images.

    tokens  c = [pad(CLIP_1(p)[-2] ⊕ CLIP_2(p)[-2]) ; T5(p) or 0]     (B, 77 + 256, D_j)
    pooled  y = CLIP_1(p).text_embeds ⊕ CLIP_2(p).text_embeds             (B, P)
    z_1 ~ N(0, I);  for each σ_i:  v̂ = v_∅ + w (v_c - v_∅);  z ← z + (σ_{i+1} - σ_i) v̂
    image = VAE.decode(z / scaling_factor + shift_factor)

| code                   | paper | meaning                                                     |
|------------------------|-------|-------------------------------------------------------------|
| `latents`              | z_σ   | (B, 16, H/8, W/8) for SD3's VAE; σ = 1 is pure noise        |
| `prompt_embeds`        | c     | (B, M, joint_attention_dim): CLIP (penultimate) ++ T5 tokens |
| `pooled_prompt_embeds` | y     | (B, pooled_projection_dim): both CLIPs' projected EOS rows  |
| `guidance_scale`       | w     | classifier-free guidance (Ho & Salimans 2022, eq. 6); SD3: 7 |
| `max_sequence_length`  |       | T5's tokens (zeros here); 256 by default, as in diffusers   |
"""

from typing import NamedTuple

import torch

from ddlearn.noise import randn_tensor
from ddlearn.options import refuse
from ddlearn.pipelines.checks import (
    IMAGE_OUTPUT_TYPES,
    LATENT_OUTPUT_TYPE,
    check_call_extras,
    check_callback,
    check_count,
    check_flag,
    check_generator,
    check_number,
    check_output_type,
    check_prompts,
    check_steps,
    check_tensor,
)
from ddlearn.pipelines.pipeline import DiffusionPipeline
from ddlearn.schedulers.flow_match_euler import calculate_shift


class StableDiffusion3PipelineOutput(NamedTuple):
    images: object  # PIL list, (B, H, W, C) array, (B, C, H, W) tensor, or latents ("latent")


class StableDiffusion3Pipeline(DiffusionPipeline):
    def __init__(self, transformer, scheduler, vae, text_encoder, tokenizer, text_encoder_2,
                 tokenizer_2, text_encoder_3=None, tokenizer_3=None):
        if text_encoder_3 is not None or tokenizer_3 is not None:
            raise NotImplementedError("ddlearn's StableDiffusion3Pipeline has no T5 encoder: "
                                      "load it with text_encoder_3=None, tokenizer_3=None (the "
                                      "transformer then gets zeros in T5's place, as in "
                                      "diffusers)")
        super().__init__(transformer=transformer, scheduler=scheduler, vae=vae,
                         text_encoder=text_encoder, tokenizer=tokenizer,
                         text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                         text_encoder_3=None, tokenizer_3=None)

    vae_scale_factor = property(lambda self: 2 ** (len(self.vae.config.block_out_channels) - 1))
    tokenizer_max_length = property(lambda self: self.tokenizer.model_max_length)
    default_sample_size = property(lambda self: self.transformer.config.sample_size)
    patch_size = property(lambda self: self.transformer.config.patch_size)

    @torch.no_grad()
    def __call__(self, prompt=None, prompt_2=None, prompt_3=None, height=None, width=None,
                 num_inference_steps: int = 28, sigmas=None, guidance_scale: float = 7.0,
                 negative_prompt=None, negative_prompt_2=None, negative_prompt_3=None,
                 num_images_per_prompt: int = 1, generator=None, latents=None,
                 prompt_embeds=None, negative_prompt_embeds=None, pooled_prompt_embeds=None,
                 negative_pooled_prompt_embeds=None, output_type: str = "pil",
                 return_dict: bool = True, joint_attention_kwargs=None, clip_skip=None,
                 callback_on_step_end=None, max_sequence_length: int = 256,
                 skip_guidance_layers=None, skip_layer_guidance_scale: float = 2.8,
                 skip_layer_guidance_stop: float = 0.2, skip_layer_guidance_start: float = 0.01,
                 mu=None, **kwargs) -> StableDiffusion3PipelineOutput:
        check_call_extras(self, kwargs)
        refuse("StableDiffusion3Pipeline.__call__", "ddlearn's transformer has no LoRA or "
               "IP-Adapter", joint_attention_kwargs=joint_attention_kwargs)
        # 0. defaults as in diffusers; every argument checked before any work
        f = self.vae_scale_factor
        height = check_count("height", height or self.default_sample_size * f, whole_floats=True)
        width = check_count("width", width or self.default_sample_size * f, whole_floats=True)
        if height % (f * self.patch_size) or width % (f * self.patch_size):
            raise ValueError(f"height and width must be multiples of {f * self.patch_size} (the "
                             f"VAE's {f} x the patch size {self.patch_size}), got "
                             f"{height}x{width}")
        if max_sequence_length > 512:
            raise ValueError(f"max_sequence_length cannot be greater than 512 but is "
                             f"{max_sequence_length}")
        num_inference_steps = check_steps(num_inference_steps)
        guidance_scale = check_number("guidance_scale", guidance_scale,
                                      meaning="1 or less turns guidance off; SD3 uses 7")
        check_output_type(output_type, {**IMAGE_OUTPUT_TYPES, **LATENT_OUTPUT_TYPE})
        check_flag("return_dict", return_dict)
        check_callback(callback_on_step_end)
        do_cfg = guidance_scale > 1.0
        # 1. text -> tokens c and pooled y (and the negative ones for guidance)
        c, c_neg, y, y_neg = self.encode_prompt(
            prompt, prompt_2, prompt_3, num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=do_cfg, negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2, negative_prompt_3=negative_prompt_3,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds, clip_skip=clip_skip,
            max_sequence_length=max_sequence_length)
        # 2. the starting noise z_1 and the σ schedule (μ from the image size if dynamic)
        check_generator(generator, c.shape[0])
        shape = (c.shape[0], self.transformer.config.in_channels, height // f, width // f)
        if latents is None:
            latents = randn_tensor(shape, generator, device=self.device, dtype=c.dtype)
        latents = check_tensor("latents", latents, shape, "batch, in_channels, height / "
                               "vae_scale_factor, width / vae_scale_factor").to(self.device)
        if self.scheduler.config.get("use_dynamic_shifting") and mu is None:
            c_ = self.scheduler.config
            mu = calculate_shift((shape[2] // self.patch_size) * (shape[3] // self.patch_size),
                                 c_.get("base_image_seq_len", 256),
                                 c_.get("max_image_seq_len", 4096), c_.get("base_shift", 0.5),
                                 c_.get("max_shift", 1.16))
        extra = {"mu": mu} if mu is not None else {}
        self.scheduler.set_timesteps(None if sigmas is not None else num_inference_steps,
                                     device=self.device, sigmas=sigmas, **extra)
        # 3. denoise, then decode
        slg = (skip_guidance_layers, skip_layer_guidance_scale, skip_layer_guidance_start,
               skip_layer_guidance_stop)
        latents = self.denoise(latents, c, c_neg, y, y_neg, guidance_scale, slg,
                               callback_on_step_end)
        if output_type == "latent":
            images = latents
        else:
            shift = self.vae.config.shift_factor or 0.0
            decoded = self.vae.decode(latents / self.vae.config.scaling_factor + shift).sample
            images = self.postprocess(decoded, output_type)
        output = StableDiffusion3PipelineOutput(images)
        return output if return_dict else tuple(output)

    # ---- 1. prompts ----------------------------------------------------------------------------
    def encode_prompt(self, prompt, prompt_2=None, prompt_3=None, device=None,
                      num_images_per_prompt: int = 1, do_classifier_free_guidance: bool = True,
                      negative_prompt=None, negative_prompt_2=None, negative_prompt_3=None,
                      prompt_embeds=None, negative_prompt_embeds=None,
                      pooled_prompt_embeds=None, negative_pooled_prompt_embeds=None,
                      clip_skip=None, max_sequence_length: int = 256, lora_scale=None):
        """-> (c, c_∅, y, y_∅) as diffusers returns them (the negatives None without CFG)."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of `prompt` and `prompt_embeds`")
        if prompt_embeds is not None and pooled_prompt_embeds is None:
            raise ValueError("prompt_embeds needs pooled_prompt_embeds too, from the same text "
                             "encoders (encode_prompt returns both)")
        n = check_count("num_images_per_prompt", num_images_per_prompt)
        repeat = lambda e: e.repeat_interleave(n, dim=0)  # each prompt's n copies together
        if prompt is not None:
            prompts = check_prompts("prompt", prompt)
            prompt_embeds, pooled_prompt_embeds = self.embed_text(
                prompts, check_prompts("prompt_2", prompt_2 or prompts), clip_skip,
                max_sequence_length)
        batch = prompt_embeds.shape[0]
        c, y = repeat(prompt_embeds), repeat(pooled_prompt_embeds)
        if not do_classifier_free_guidance:
            return c, None, y, None
        if negative_prompt_embeds is None:
            negative = negative_prompt or ""
            negative = [negative] * batch if isinstance(negative, str) else \
                check_prompts("negative_prompt", negative)
            negative_2 = negative_prompt_2 or negative
            negative_2 = [negative_2] * batch if isinstance(negative_2, str) else negative_2
            if len(negative) != batch or len(negative_2) != batch:
                raise ValueError(f"negative_prompt has {len(negative)} entries but the batch has "
                                 f"{batch} prompts; give one per prompt, or a single string")
            negative_prompt_embeds, negative_pooled_prompt_embeds = self.embed_text(
                negative, negative_2, None, max_sequence_length)
        elif negative_pooled_prompt_embeds is None:
            raise ValueError("negative_prompt_embeds needs negative_pooled_prompt_embeds too")
        return c, repeat(negative_prompt_embeds), y, repeat(negative_pooled_prompt_embeds)

    def embed_text(self, prompts, prompts_2, clip_skip, max_sequence_length):
        """Both CLIPs' penultimate hidden states side by side, zero-padded to T5's width, then
        T5's tokens (zeros without T5) -> (B, 77 + max_sequence_length, D_j); pooled (B, P)."""
        hidden, pooled = [], []
        for tokenizer, encoder, texts in ((self.tokenizer, self.text_encoder, prompts),
                                          (self.tokenizer_2, self.text_encoder_2, prompts_2)):
            ids = tokenizer(texts, padding="max_length", max_length=self.tokenizer_max_length,
                            truncation=True, return_tensors="pt").input_ids.to(self.device)
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-(2 if clip_skip is None else clip_skip + 2)])
            pooled.append(out.text_embeds)
        clip = torch.cat(hidden, dim=-1)  # (B, 77, D_1 + D_2)
        width = self.transformer.config.joint_attention_dim
        t5 = torch.zeros(len(prompts), max_sequence_length, width, device=self.device,
                         dtype=clip.dtype)
        clip = torch.nn.functional.pad(clip, (0, width - clip.shape[-1]))  # (B, 77, D_j)
        return torch.cat([clip, t5], dim=-2), torch.cat(pooled, dim=-1)

    # ---- 3. the denoising loop -----------------------------------------------------------------
    def denoise(self, latents, c, c_neg, y, y_neg, guidance_scale, slg, callback_on_step_end):
        """Flow-matching sampling with guidance over one batched uncond+cond transformer pass;
        `slg` = (layers, scale, start, stop) of skip-layer guidance (SD 3.5), off if None."""
        layers, slg_scale, slg_start, slg_stop = slg
        do_cfg = c_neg is not None
        context = torch.cat([c_neg, c]) if do_cfg else c
        pooled = torch.cat([y_neg, y]) if do_cfg else y
        timesteps = self.scheduler.timesteps
        for i, t in enumerate(self.progress_bar(timesteps)):
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            v = self.transformer(model_input, context, pooled, t.expand(model_input.shape[0])
                                 ).sample
            if do_cfg:  # v̂ = v_∅ + w (v_c - v_∅)
                v_uncond, v_text = v.chunk(2)
                v = v_uncond + guidance_scale * (v_text - v_uncond)
                n = len(timesteps)
                if layers is not None and n * slg_start < i < n * slg_stop:
                    v_skip = self.transformer(latents, c, y, t.expand(latents.shape[0]),
                                              skip_layers=layers).sample
                    v = v + (v_text - v_skip) * slg_scale
            latents = self.scheduler.step(v, t, latents).prev_sample
            if callback_on_step_end is not None:
                out = callback_on_step_end(self, i, t, {"latents": latents}) or {}
                latents = out.get("latents", latents)
        return latents
