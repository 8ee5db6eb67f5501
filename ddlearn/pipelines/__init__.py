"""Pipelines: load a set of components from a diffusers-layout folder and sample from them."""

from ddlearn.pipelines.ddpm import DDIMPipeline, DDPMPipeline
from ddlearn.pipelines.pipeline import DiffusionPipeline, ImagePipelineOutput

__all__ = ["DiffusionPipeline", "ImagePipelineOutput", "DDPMPipeline", "DDIMPipeline"]
