"""Pipelines: load a set of components from a diffusers-layout folder and sample from them."""

from ddlearn.pipelines.ddpm import DDIMPipeline, DDPMPipeline
from ddlearn.pipelines.pipeline import DiffusionPipeline, ImagePipelineOutput
from ddlearn.pipelines.stable_diffusion import (
    StableDiffusionPipeline,
    StableDiffusionPipelineOutput,
)
from ddlearn.pipelines.stable_diffusion_3 import (
    StableDiffusion3Pipeline,
    StableDiffusion3PipelineOutput,
)
from ddlearn.pipelines.stable_diffusion_img2img import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
)

__all__ = ["DiffusionPipeline", "ImagePipelineOutput", "DDPMPipeline", "DDIMPipeline",
           "StableDiffusionPipeline", "StableDiffusionPipelineOutput",
           "StableDiffusionImg2ImgPipeline",
           "StableDiffusionInpaintPipeline", "StableDiffusion3Pipeline",
           "StableDiffusion3PipelineOutput"]
