"""Models: the networks. Parameter names equal diffusers' (and transformers' for CLIP), so real
checkpoints load key for key."""

from ddlearn.models.modeling import ModelMixin
from ddlearn.models.text_encoder import CLIPTextModel, CLIPTextModelWithProjection
from ddlearn.models.transformer_sd3 import SD3Transformer2DModel
from ddlearn.models.unet_2d import UNet2DModel
from ddlearn.models.unet_2d_condition import UNet2DConditionModel
from ddlearn.models.vae import AutoencoderKL
from ddlearn.models.vae_wrapper import VAEWrapper

__all__ = ["ModelMixin", "UNet2DModel", "UNet2DConditionModel", "AutoencoderKL", "VAEWrapper",
           "CLIPTextModel", "CLIPTextModelWithProjection", "SD3Transformer2DModel"]
