"""DDPMPipeline and DDIMPipeline: unconditional image generation from a UNet2DModel and a scheduler.

Mirrors `diffusers.DDPMPipeline` / `diffusers.DDIMPipeline`. `__call__` checks its arguments
(ddlearn/pipelines/checks.py); the whole sampler is then the loop in `sample`, which chapter 02
rewrites by hand:

    x_T ~ N(0, I)
    for t in scheduler.timesteps:  ε̂ = unet(x_t, t);  x_{t-1} = scheduler.step(ε̂, t, x_t)
"""

import torch

from ddlearn.noise import randn_tensor
from ddlearn.pipelines.checks import (
    check_count,
    check_flag,
    check_generator,
    check_number,
    check_output_type,
    check_steps,
)
from ddlearn.pipelines.pipeline import DiffusionPipeline, ImagePipelineOutput


class DDPMPipeline(DiffusionPipeline):
    """`images = DDPMPipeline.from_pretrained(path)(batch_size=4, generator=g).images`."""

    def __init__(self, unet, scheduler):
        super().__init__(unet=unet, scheduler=scheduler)

    def image_shape(self, batch_size: int) -> tuple:
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        return (batch_size, self.unet.config.in_channels, height, width)

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, generator=None, num_inference_steps: int = 1000,
                 output_type: str = "pil", return_dict: bool = True) -> ImagePipelineOutput:
        """`return_dict=False` gives diffusers' plain tuple `(images,)`."""
        # 0. every argument checked before any work (diffusers takes [g] as g for any batch)
        batch_size, num_inference_steps = self.check_inputs(batch_size, num_inference_steps,
                                                            output_type, return_dict)
        check_generator(generator, batch_size, one_list_for_all=True)
        output = self.sample(batch_size, generator, num_inference_steps, output_type)
        return output if return_dict else tuple(output)

    def check_inputs(self, batch_size, num_inference_steps, output_type, return_dict) -> tuple:
        check_output_type(output_type)
        check_flag("return_dict", return_dict)
        return check_count("batch_size", batch_size), check_steps(num_inference_steps)

    def sample(self, batch_size: int, generator, num_inference_steps: int, output_type: str,
               **step_kwargs) -> ImagePipelineOutput:
        """The sampler itself, on checked arguments; `step_kwargs` go to every scheduler.step."""
        # 1. choose the timesteps first: σ-space samplers set init_noise_sigma from them
        self.scheduler.set_timesteps(num_inference_steps)
        # 2. start from pure noise x_T, scaled as the scheduler expects (σ_max for σ-space samplers)
        shape = self.image_shape(batch_size)
        image = randn_tensor(shape, generator, device=self.device, dtype=self.unet.dtype)
        image = image * self.scheduler.init_noise_sigma
        # 3. walk the timesteps: predict the noise, let the scheduler take one step
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(image, t)
            noise_pred = self.unet(model_input, t).sample
            image = self.scheduler.step(noise_pred, t, image, generator=generator,
                                        **step_kwargs).prev_sample
        # 4. [-1, 1] -> images
        return ImagePipelineOutput(self.postprocess(image, output_type))


class DDIMPipeline(DDPMPipeline):
    """DDPMPipeline with a DDIM scheduler and its `eta` (0: deterministic DDIM, 1: DDPM-like)."""

    def __init__(self, unet, scheduler):
        from ddlearn.schedulers.ddim import DDIMScheduler

        # as in diffusers: any scheduler config is turned into a DDIM scheduler
        super().__init__(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, generator=None, eta: float = 0.0,
                 num_inference_steps: int = 50, use_clipped_model_output=None,
                 output_type: str = "pil", return_dict: bool = True) -> ImagePipelineOutput:
        # 0. every argument checked before any work; a generator list must match the batch
        batch_size, num_inference_steps = self.check_inputs(batch_size, num_inference_steps,
                                                            output_type, return_dict)
        check_generator(generator, batch_size)
        # diffusers only warns outside [0, 1]; above 1, σ_t² can exceed 1 - ᾱ_{t-1}: NaN images
        eta = check_number("eta", eta, 0.0, 1.0, "0 is DDIM, 1 is DDPM-like")
        check_flag("use_clipped_model_output", use_clipped_model_output, allow_none=True)
        output = self.sample(batch_size, generator, num_inference_steps, output_type, eta=eta,
                             use_clipped_model_output=use_clipped_model_output)
        return output if return_dict else tuple(output)
