"""The text-conditioned UNet of Stable Diffusion 1.x / 2.x: predicts the noise in a latent, given
the timestep and the text encoder's hidden states.

Mirrors `diffusers.UNet2DConditionModel` for the SD 1.5 / 2.1 layouts: same config keys and
defaults, same parameter names, so `unet/config.json` + `diffusion_pytorch_model.safetensors` of
either model load key for key. Options SD does not use (class / addition embeddings, dual or
cross-only attention, several transformer layers per block, ...) are refused with a message
rather than half-implemented.

    z_t (B, 4, h, w) -> conv_in -> down blocks (skips saved) -> mid block -> up blocks (skips
    consumed) -> GroupNorm, SiLU, conv_out -> (B, 4, h, w). The timestep embedding enters every
    ResNet; the text (B, L, cross_attention_dim) enters every transformer via cross-attention.
    The same skeleton as `UNet2DModel` (unet_2d.py), with the same names.

Naming quirk kept from diffusers: in SD configs `attention_head_dim` is really the number of heads
(8 for SD 1.5; [5, 10, 20, 20] for SD 2.1). `num_attention_heads` must stay None, as in diffusers.

Notation (as in unet_2d.py)
    x      sample (B, in_channels, h, w)      t   timestep(s): a number or a (B,) tensor
    C_l    block_out_channels[l], the width at level l (resolution h / 2**l)
    temb   (B, 4*C_0) time embedding, fed to every ResNet block
    text   encoder_hidden_states (B, L, cross_attention_dim), fed to every transformer

References
    Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", Sec. 3.3,
        eq. 3 (cross-attention conditioning) and eq. 2 (the noise-prediction loss it is trained on).
    Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Appendix B (the UNet backbone).
"""

from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ddlearn.config import register_to_config
from ddlearn.lora import lora_scale_from, scaled_lora_layers
from ddlearn.models.embeddings import TimestepEmbedding, Timesteps, timestep_batch
from ddlearn.models.modeling import ModelMixin
from ddlearn.models.unet_2d_blocks import (
    DownBlock2D,
    UpBlock2D,
    check_unet_sample,
    lookup_block_type,
)
from ddlearn.models.unet_2d_condition_blocks import (
    CrossAttnDownBlock2D,
    CrossAttnUpBlock2D,
    UNetMidBlock2DCrossAttn,
)
from ddlearn.options import refuse

DOWN_BLOCK_TYPES = {"DownBlock2D": DownBlock2D, "CrossAttnDownBlock2D": CrossAttnDownBlock2D}
UP_BLOCK_TYPES = {"UpBlock2D": UpBlock2D, "CrossAttnUpBlock2D": CrossAttnUpBlock2D}


class UNet2DConditionOutput(NamedTuple):
    sample: torch.Tensor  # (B, out_channels, H, W) the predicted noise (or v, per the scheduler)


class UNet2DConditionModel(ModelMixin):
    """z_t -> conv_in -> down blocks (keeping skips) -> mid block -> up blocks (concatenating the
    skips, last first) -> GroupNorm, SiLU, conv_out -> ε. The time embedding enters every ResNet,
    the text every transformer."""

    # the SD 1.x / 2.x value of every diffusers key whose other values ddlearn leaves out
    only_supported = {
        "mid_block_type": "UNetMidBlock2DCrossAttn", "num_attention_heads": None,
        "transformer_layers_per_block": 1, "dual_cross_attention": False,
        "only_cross_attention": False, "act_fn": {"silu", "swish"},
        "class_embed_type": None, "num_class_embeds": None, "addition_embed_type": None,
        "addition_time_embed_dim": None, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
        "resnet_time_scale_shift": "default", "resnet_skip_time_act": False,
        "resnet_out_scale_factor": 1.0, "time_embedding_type": "positional",
        "time_embedding_dim": None, "time_embedding_act_fn": None, "timestep_post_act": None,
        "time_cond_proj_dim": None, "conv_in_kernel": 3, "conv_out_kernel": 3,
        "projection_class_embeddings_input_dim": None, "attention_type": "default",
        "class_embeddings_concat": False, "mid_block_only_cross_attention": None,
        "cross_attention_norm": None, "addition_embed_type_num_heads": 64,
        "reverse_transformer_layers_per_block": None,
    }

    @register_to_config
    def __init__(
        self,
        sample_size: Optional[Union[int, Tuple[int, int]]] = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: Tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                             "CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type: str = "UNetMidBlock2DCrossAttn",
        up_block_types: Tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                           "CrossAttnUpBlock2D"),
        only_cross_attention: Union[bool, Tuple[bool, ...]] = False,
        block_out_channels: Tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        dropout: float = 0.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1280,
        transformer_layers_per_block: Union[int, Tuple[int, ...]] = 1,
        attention_head_dim: Union[int, Tuple[int, ...]] = 8,
        num_attention_heads: Optional[Union[int, Tuple[int, ...]]] = None,
        dual_cross_attention: bool = False,
        use_linear_projection: bool = False,
        upcast_attention: bool = False,  # accepted: fp16 SDPA keeps its softmax in fp32
    ):
        super().__init__()  # refuses the `only_supported` keys at other values
        C, n = list(block_out_channels), len(block_out_channels)
        # the quirk: `attention_head_dim` holds the number of heads, per level
        heads = [attention_head_dim] * n if isinstance(attention_head_dim, int) \
            else list(attention_head_dim)
        if not len(down_block_types) == len(up_block_types) == len(heads) == n:
            raise ValueError(f"UNet2DConditionModel: down_block_types, up_block_types and "
                             f"attention_head_dim (the heads per level) need one entry per "
                             f"block_out_channels ({n}), got {len(down_block_types)}, "
                             f"{len(up_block_types)} and {len(heads)}")
        temb_dim = 4 * C[0]
        common = dict(temb_channels=temb_dim, resnet_eps=norm_eps, resnet_groups=norm_num_groups,
                      dropout=dropout)
        cross = dict(cross_attention_dim=cross_attention_dim,
                     use_linear_projection=use_linear_projection)

        # 1. time embedding: t -> sinusoids (C_0) -> MLP -> temb (4 C_0)
        self.time_proj = Timesteps(C[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(C[0], temb_dim)

        # 2. stem: (B, in_channels, h, w) -> (B, C_0, h, w)
        self.conv_in = nn.Conv2d(in_channels, C[0], kernel_size=3, padding=1)

        # 3. encoder: level l works at h / 2**l with C_l channels, and halves h, w (but the last)
        self.down_blocks = nn.ModuleList()
        for l, block_type in enumerate(down_block_types):
            block = lookup_block_type(block_type, DOWN_BLOCK_TYPES, "UNet2DConditionModel")
            text = dict(num_attention_heads=heads[l], **cross) if block is CrossAttnDownBlock2D \
                else {}
            self.down_blocks.append(block(
                in_channels=C[max(l - 1, 0)], out_channels=C[l], num_layers=layers_per_block,
                add_downsample=l < n - 1, downsample_padding=downsample_padding, **text,
                **common))

        # 4. bottleneck at the coarsest resolution: ResNet, transformer, ResNet
        self.mid_block = UNetMidBlock2DCrossAttn(C[-1], num_attention_heads=heads[-1],
                                                 output_scale_factor=mid_block_scale_factor,
                                                 **cross, **common)

        # 5. decoder: the levels in reverse, each taking one more skip than the encoder level made
        self.up_blocks = nn.ModuleList()
        for i, block_type in enumerate(up_block_types):
            l = n - 1 - i  # the level (resolution) this block works at
            block = lookup_block_type(block_type, UP_BLOCK_TYPES, "UNet2DConditionModel")
            text = dict(num_attention_heads=heads[l], **cross) if block is CrossAttnUpBlock2D \
                else {}
            self.up_blocks.append(block(
                in_channels=C[max(l - 1, 0)], prev_output_channel=C[min(l + 1, n - 1)],
                out_channels=C[l], num_layers=layers_per_block + 1, add_upsample=l > 0, **text,
                **common))

        # 6. head: GroupNorm -> SiLU -> conv to (B, out_channels, h, w)
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, C[0], eps=norm_eps)
        self.conv_out = nn.Conv2d(C[0], out_channels, kernel_size=3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int],
                encoder_hidden_states: torch.Tensor, class_labels=None, timestep_cond=None,
                attention_mask=None, cross_attention_kwargs=None, added_cond_kwargs=None,
                down_block_additional_residuals=None, mid_block_additional_residual=None,
                down_intrablock_additional_residuals=None, encoder_attention_mask=None,
                return_dict: bool = True) -> UNet2DConditionOutput:
        """ε_θ(z_t, t, text): diffusers' arguments in diffusers' order; those of features ddlearn
        leaves out (ControlNet residuals, SDXL's added_cond_kwargs, ...) must stay None, and
        cross_attention_kwargs may hold only {"scale": s}, the weight of LoRA layers."""
        refuse("UNet2DConditionModel.forward", "ddlearn's UNet is SD 1.x/2.x's, text only",
               class_labels=class_labels, timestep_cond=timestep_cond,
               attention_mask=attention_mask, added_cond_kwargs=added_cond_kwargs,
               down_block_additional_residuals=down_block_additional_residuals,
               mid_block_additional_residual=mid_block_additional_residual,
               down_intrablock_additional_residuals=down_intrablock_additional_residuals,
               encoder_attention_mask=encoder_attention_mask)
        lora_scale = lora_scale_from(cross_attention_kwargs, "UNet2DConditionModel.forward")
        x, text = sample, encoder_hidden_states
        check_unet_sample(self, x)
        self._check_text(text, batch=x.shape[0])
        if self.config.center_input_sample:  # [0, 1] -> [-1, 1]
            x = 2 * x - 1.0

        with scaled_lora_layers(self, lora_scale):  # s times lora_scale in every LoRA layer
            # 1. time embedding
            t = timestep_batch(timestep, x)  # (B,)
            temb = self.time_embedding(self.time_proj(t).to(x.dtype))  # (B,) -> (B, 4 C_0)

            # 2. stem
            h = self.conv_in(x)
            skips = [h]
            # 3. encoder: remember every intermediate map for the decoder
            for block in self.down_blocks:
                h, block_skips = block(h, temb, text)
                skips.extend(block_skips)
            # 4. bottleneck
            h = self.mid_block(h, temb, text)
            # 5. decoder: each block consumes as many skips as it has ResNets, last made first
            for block in self.up_blocks:
                k = len(block.resnets)
                h = block(h, tuple(skips[-k:]), temb, text)
                del skips[-k:]
            # 6. head
            h = self.conv_out(F.silu(self.conv_norm_out(h)))
        return UNet2DConditionOutput(sample=h) if return_dict else (h,)

    def _check_text(self, text: Optional[torch.Tensor], batch: int):
        width = self.config.cross_attention_dim
        if text is None:
            raise ValueError("encoder_hidden_states is required: pass the text encoder's output, "
                             "shape (B, L, cross_attention_dim)")
        if text.ndim != 3 or text.shape[-1] != width:
            raise ValueError(f"encoder_hidden_states should be (B, L, {width}) "
                             f"(cross_attention_dim), got shape {tuple(text.shape)}")
        if text.shape[0] != batch:
            raise ValueError(f"encoder_hidden_states has batch {text.shape[0]} but sample has "
                             f"{batch}; repeat the text embedding per image")
