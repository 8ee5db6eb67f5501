"""DDPMPipeline and DDIMPipeline: unconditional image generation from a UNet2DModel and a scheduler.

Mirrors `diffusers.DDPMPipeline` / `diffusers.DDIMPipeline`; the whole sampler is the loop in
`__call__`, which chapter 02 rewrites by hand:

    x_T ~ N(0, I)
    for t in scheduler.timesteps:  ε̂ = unet(x_t, t);  x_{t-1} = scheduler.step(ε̂, t, x_t)
"""

import torch

from ddlearn.pipelines.pipeline import DiffusionPipeline, ImagePipelineOutput, randn_tensor


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
                 output_type: str = "pil", **step_kwargs) -> ImagePipelineOutput:
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

    def __call__(self, batch_size: int = 1, generator=None, eta: float = 0.0,
                 num_inference_steps: int = 50, use_clipped_model_output=None,
                 output_type: str = "pil") -> ImagePipelineOutput:
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta={eta} must be in [0, 1]: 0 is DDIM, 1 is DDPM-like")
        return super().__call__(batch_size, generator, num_inference_steps, output_type, eta=eta,
                                use_clipped_model_output=use_clipped_model_output)
