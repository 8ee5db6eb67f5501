"""Models: the networks. Parameter names equal diffusers' (and transformers' for CLIP), so real
checkpoints load key for key."""

from ddlearn.models.modeling import ModelMixin
from ddlearn.models.text_encoder import CLIPTextModel
from ddlearn.models.unet_2d import UNet2DModel
from ddlearn.models.unet_2d_condition import UNet2DConditionModel
from ddlearn.models.vae import AutoencoderKL
from ddlearn.models.vae_wrapper import VAEWrapper

__all__ = ["ModelMixin", "UNet2DModel", "UNet2DConditionModel", "AutoencoderKL", "VAEWrapper",
           "CLIPTextModel"]
