"""The text-conditioned UNet of Stable Diffusion 1.x / 2.x: predicts the noise in a latent, given
the timestep and the text encoder's hidden states.

Mirrors `diffusers.UNet2DConditionModel` for the SD 1.5 / 2.1 layouts: same config keys and
defaults, same parameter names, so `unet/config.json` + `diffusion_pytorch_model.safetensors` of
either model load key for key. Options SD does not use (class / addition embeddings, dual or
cross-only attention, several transformer layers per block, ...) are refused with a message
rather than half-implemented.

    sample (B, 4, h, w) -> conv_in -> down blocks (skips saved) -> mid block -> up blocks (skips
    consumed) -> GroupNorm, SiLU, conv_out -> (B, 4, h, w). The timestep embedding enters every
    ResNet; the text (B, L, cross_attention_dim) enters every transformer via cross-attention.

Naming quirk kept from diffusers: in SD configs `attention_head_dim` is really the number of heads
(8 for SD 1.5; [5, 10, 20, 20] for SD 2.1). `num_attention_heads` must stay None, as in diffusers.

References
    Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", Sec. 3.3,
        eq. 3 (cross-attention conditioning) and eq. 2 (the noise-prediction loss it is trained on).
    Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Appendix B (the UNet backbone).
"""

from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from ddlearn.config import register_to_config
from ddlearn.models.embeddings import TimestepEmbedding, Timesteps, timestep_batch
from ddlearn.models.modeling import ModelMixin
from ddlearn.models.unet_2d_blocks import DownBlock2D, UpBlock2D
from ddlearn.models.unet_2d_condition_blocks import (
    CrossAttnDownBlock2D,
    CrossAttnUpBlock2D,
    UNetMidBlock2DCrossAttn,
)
from ddlearn.options import refuse

# diffusers keys whose SD 1.5 / 2.1 value is the only one ddlearn implements: accepted silently at
# that value, refused with a message at any other
DIFFUSERS_ONLY_DEFAULTS = {
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


class UNet2DConditionOutput(NamedTuple):
    sample: torch.Tensor  # (B, out_channels, H, W) the predicted noise (or v, per the scheduler)


class UNet2DConditionModel(ModelMixin):
    ignore_for_config = tuple(DIFFUSERS_ONLY_DEFAULTS)

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
        super().__init__()
        check_supported(self.config)
        n = len(block_out_channels)
        # the quirk: `attention_head_dim` holds the number of heads, per level
        heads = [attention_head_dim] * n if isinstance(attention_head_dim, int) \
            else list(attention_head_dim)
        time_embed_dim = block_out_channels[0] * 4
        common = dict(temb_channels=time_embed_dim, resnet_eps=norm_eps,
                      resnet_groups=norm_num_groups, dropout=dropout)
        cross = dict(cross_attention_dim=cross_attention_dim,
                     use_linear_projection=use_linear_projection)

        # 1. input convolution and the timestep embedding t -> sinusoid -> MLP
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)

        # 2. down path: one block per resolution, all but the last halve H and W
        self.down_blocks = nn.ModuleList()
        for i, block_type in enumerate(down_block_types):
            c_in, c_out = block_out_channels[max(i - 1, 0)], block_out_channels[i]
            args = dict(in_channels=c_in, out_channels=c_out, num_layers=layers_per_block,
                        add_downsample=i < n - 1, downsample_padding=downsample_padding, **common)
            if block_type == "CrossAttnDownBlock2D":
                block = CrossAttnDownBlock2D(num_attention_heads=heads[i], **cross, **args)
            else:
                block = DownBlock2D(**args)
            self.down_blocks.append(block)

        # 3. the bottleneck at the lowest resolution
        self.mid_block = UNetMidBlock2DCrossAttn(
            block_out_channels[-1], num_attention_heads=heads[-1],
            output_scale_factor=mid_block_scale_factor, **cross, **common)

        # 4. up path: mirrors the down path with one more ResNet per block (it eats a skip each)
        reversed_channels, reversed_heads = block_out_channels[::-1], heads[::-1]
        self.up_blocks = nn.ModuleList()
        for i, block_type in enumerate(up_block_types):
            args = dict(in_channels=reversed_channels[min(i + 1, n - 1)],
                        out_channels=reversed_channels[i],
                        prev_output_channel=reversed_channels[max(i - 1, 0)],
                        num_layers=layers_per_block + 1, add_upsample=i < n - 1, **common)
            if block_type == "CrossAttnUpBlock2D":
                block = CrossAttnUpBlock2D(num_attention_heads=reversed_heads[i], **cross, **args)
            else:
                block = UpBlock2D(**args)
            self.up_blocks.append(block)

        # 5. output head
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    @classmethod
    def extract_init_kwargs(cls, config, **overrides) -> dict:
        """Like ConfigMixin's, but refuse a diffusers feature that a config turns on."""
        merged = {**dict(config), **overrides}
        for key, default in DIFFUSERS_ONLY_DEFAULTS.items():
            if key in merged and merged[key] != default:
                raise ValueError(f"this UNet config sets {key}={merged[key]!r}; ddlearn implements "
                                 f"the SD 1.x/2.x UNet only ({key}={default!r})")
        return super().extract_init_kwargs(config, **overrides)

    def forward(self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int],
                encoder_hidden_states: torch.Tensor, class_labels=None, timestep_cond=None,
                attention_mask=None, cross_attention_kwargs=None, added_cond_kwargs=None,
                down_block_additional_residuals=None, mid_block_additional_residual=None,
                down_intrablock_additional_residuals=None, encoder_attention_mask=None,
                return_dict: bool = True) -> UNet2DConditionOutput:
        """ε_θ(z_t, t, text): diffusers' arguments in diffusers' order; those of features ddlearn
        leaves out (ControlNet residuals, SDXL's added_cond_kwargs, ...) must stay None."""
        refuse("UNet2DConditionModel.forward", "ddlearn's UNet is SD 1.x/2.x's, text only",
               class_labels=class_labels, timestep_cond=timestep_cond,
               attention_mask=attention_mask, cross_attention_kwargs=cross_attention_kwargs,
               added_cond_kwargs=added_cond_kwargs,
               down_block_additional_residuals=down_block_additional_residuals,
               mid_block_additional_residual=mid_block_additional_residual,
               down_intrablock_additional_residuals=down_intrablock_additional_residuals,
               encoder_attention_mask=encoder_attention_mask)
        check_inputs(self, sample, encoder_hidden_states)
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0

        # 1. timestep embedding, one per batch element: (B,) -> (B, 4 * C0)
        t = timestep_batch(timestep, sample)
        emb = self.time_embedding(self.time_proj(t).to(sample.dtype))

        # 2. down, keeping every intermediate result for the skip connections
        sample = self.conv_in(sample)
        skips = (sample,)
        for block in self.down_blocks:
            if isinstance(block, CrossAttnDownBlock2D):
                sample, block_skips = block(sample, emb, encoder_hidden_states)
            else:
                sample, block_skips = block(sample, emb)
            skips += block_skips

        # 3. middle
        sample = self.mid_block(sample, emb, encoder_hidden_states)

        # 4. up, each block consuming as many skips (from the end) as it has ResNets
        for block in self.up_blocks:
            block_skips, skips = skips[-len(block.resnets):], skips[:-len(block.resnets)]
            if isinstance(block, CrossAttnUpBlock2D):
                sample = block(sample, block_skips, emb, encoder_hidden_states)
            else:
                sample = block(sample, block_skips, emb)

        # 5. output head
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        return UNet2DConditionOutput(sample=sample) if return_dict else (sample,)


# ------------------------------------------------------------------------------------------------
# Config and input checks: what ddlearn supports, said in words a learner can act on
# ------------------------------------------------------------------------------------------------
def check_supported(config):
    n = len(config.block_out_channels)
    down_ok, up_ok = {"CrossAttnDownBlock2D", "DownBlock2D"}, {"CrossAttnUpBlock2D", "UpBlock2D"}
    if len(config.down_block_types) != n or len(config.up_block_types) != n:
        raise ValueError(f"down_block_types and up_block_types need one entry per "
                         f"block_out_channels ({n}), got {len(config.down_block_types)} and "
                         f"{len(config.up_block_types)}")
    if not set(config.down_block_types) <= down_ok or not set(config.up_block_types) <= up_ok:
        raise ValueError(f"UNet2DConditionModel builds {sorted(down_ok)} going down and "
                         f"{sorted(up_ok)} going up; got {config.down_block_types} / "
                         f"{config.up_block_types}")
    heads = config.attention_head_dim
    if not isinstance(heads, int) and len(heads) != n:
        raise ValueError(f"attention_head_dim (the number of heads per level) needs {n} entries, "
                         f"got {heads}")
    unsupported = {
        "mid_block_type": (config.mid_block_type, "UNetMidBlock2DCrossAttn"),
        "num_attention_heads": (config.num_attention_heads, None),
        "transformer_layers_per_block": (config.transformer_layers_per_block, 1),
        "dual_cross_attention": (config.dual_cross_attention, False),
        "act_fn": (config.act_fn if config.act_fn != "swish" else "silu", "silu"),
    }
    only_cross = config.only_cross_attention
    unsupported["only_cross_attention"] = (any(only_cross) if isinstance(only_cross, list)
                                           else only_cross, False)
    for key, (value, supported) in unsupported.items():
        if value != supported:
            raise ValueError(f"{key}={value!r} is not supported by ddlearn's UNet2DConditionModel "
                             f"(SD 1.x/2.x use {supported!r}); remove it from the config")


def check_inputs(unet: UNet2DConditionModel, sample: torch.Tensor, context: torch.Tensor):
    cfg = unet.config
    if sample.ndim != 4 or sample.shape[1] != cfg.in_channels:
        raise ValueError(f"sample should be (B, {cfg.in_channels}, H, W) (in_channels="
                         f"{cfg.in_channels}), got shape {tuple(sample.shape)}")
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    if sample.shape[-2] % factor or sample.shape[-1] % factor:
        raise ValueError(f"sample height and width must be multiples of {factor} (the UNet halves "
                         f"them {factor.bit_length() - 1} times), got {tuple(sample.shape[-2:])}")
    if context is None:
        raise ValueError("encoder_hidden_states is required: pass the text encoder's output, "
                         "shape (B, L, cross_attention_dim)")
    if context.ndim != 3 or context.shape[-1] != cfg.cross_attention_dim:
        raise ValueError(f"encoder_hidden_states should be (B, L, {cfg.cross_attention_dim}) "
                         f"(cross_attention_dim), got shape {tuple(context.shape)}")
    if context.shape[0] != sample.shape[0]:
        raise ValueError(f"encoder_hidden_states has batch {context.shape[0]} but sample has "
                         f"{sample.shape[0]}; repeat the text embedding per image")

