"""The DDPM UNet: predicts the noise ε in a noisy image x_t, given the timestep t (and a class).

Mirrors `diffusers.UNet2DModel` for its common configurations (positional time embedding, SiLU,
"default" ResNet time conditioning, DownBlock2D/AttnDownBlock2D, UpBlock2D/AttnUpBlock2D): the
same config keys and defaults and the same parameter names, so checkpoints in the layouts of
google/ddpm-cifar10-32, google/ddpm-cat-256 or the diffusers butterflies tutorial load key for
key, and ours load in diffusers.

References:
    Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Section 4 and Appendix B (the UNet
        ε_θ(x_t, t) of eq. 12 and Algorithm 1: PixelCNN++ backbone, GroupNorm, attention at 16x16).
    Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation".

Notation:
    x_t     sample (B, in_channels, H, W)       t     timestep(s): a number or a (B,) tensor
    C_l     block_out_channels[l], the width at level l (resolution H / 2**l)
    temb    (B, 4*C_0) time embedding (+ class embedding), fed to every ResNet block
"""

from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ddlearn.config import register_to_config
from ddlearn.models.embeddings import TimestepEmbedding, Timesteps, timestep_batch
from ddlearn.models.modeling import ModelMixin
from ddlearn.models.unet_2d_blocks import (
    DownBlock2D,
    UNetMidBlock2D,
    UpBlock2D,
    check_unet_sample,
    lookup_block_type,
)

# block type in config -> does that level have self-attention?
DOWN_BLOCK_TYPES = {"DownBlock2D": False, "AttnDownBlock2D": True}
UP_BLOCK_TYPES = {"UpBlock2D": False, "AttnUpBlock2D": True}


class UNet2DOutput(NamedTuple):
    sample: torch.Tensor


class UNet2DModel(ModelMixin):
    """x_t -> conv_in -> down blocks (keeping skips) -> mid block -> up blocks (concatenating the
    skips, last first) -> GroupNorm, SiLU, conv_out -> ε. The time embedding enters every ResNet."""

    ignore_for_config = ("num_train_timesteps",)  # only for time_embedding_type="learned"
    only_supported = {"time_embedding_type": "positional", "act_fn": {"silu", "swish"},
                      "resnet_time_scale_shift": "default", "class_embed_type": None,
                      "time_embedding_dim": None, "mid_block_type": "UNetMidBlock2D",
                      "downsample_type": "conv", "upsample_type": "conv"}

    @register_to_config
    def __init__(self, sample_size: Union[int, Tuple[int, int], None] = None,
                 in_channels: int = 3, out_channels: int = 3, center_input_sample: bool = False,
                 time_embedding_type: str = "positional", freq_shift: int = 0,
                 flip_sin_to_cos: bool = True,
                 down_block_types: Tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D",
                                                      "AttnDownBlock2D", "AttnDownBlock2D"),
                 up_block_types: Tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D",
                                                    "AttnUpBlock2D", "UpBlock2D"),
                 block_out_channels: Tuple[int, ...] = (224, 448, 672, 896),
                 layers_per_block: int = 2, mid_block_scale_factor: float = 1,
                 downsample_padding: int = 1, dropout: float = 0.0, act_fn: str = "silu",
                 attention_head_dim: Optional[int] = 8, norm_num_groups: int = 32,
                 attn_norm_num_groups: Optional[int] = None, norm_eps: float = 1e-5,
                 resnet_time_scale_shift: str = "default", add_attention: bool = True,
                 class_embed_type: Optional[str] = None, num_class_embeds: Optional[int] = None):
        super().__init__()  # refuses the `only_supported` keys at other values
        if not len(down_block_types) == len(up_block_types) == len(block_out_channels):
            raise ValueError(f"UNet2DModel: down_block_types, up_block_types and "
                             f"block_out_channels need one entry per level, got "
                             f"{len(down_block_types)}, {len(up_block_types)} and "
                             f"{len(block_out_channels)}")
        C = list(block_out_channels)
        n = len(C)
        temb_dim = 4 * C[0]
        common = dict(temb_channels=temb_dim, resnet_eps=norm_eps, resnet_groups=norm_num_groups,
                      dropout=dropout, attention_head_dim=attention_head_dim)

        # 1. time embedding: t -> sinusoids (C_0) -> MLP -> temb (4 C_0); + a class embedding
        self.time_proj = Timesteps(C[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(C[0], temb_dim)
        self.class_embedding = None
        if num_class_embeds is not None:
            self.class_embedding = nn.Embedding(num_class_embeds, temb_dim)

        # 2. stem: (B, in_channels, H, W) -> (B, C_0, H, W)
        self.conv_in = nn.Conv2d(in_channels, C[0], kernel_size=3, padding=1)

        # 3. encoder: level l works at H / 2**l with C_l channels, and halves H, W (but the last)
        self.down_blocks = nn.ModuleList()
        for l, block_type in enumerate(down_block_types):
            self.down_blocks.append(DownBlock2D(
                C[max(l - 1, 0)], C[l], num_layers=layers_per_block, add_downsample=l < n - 1,
                add_attention=lookup_block_type(block_type, DOWN_BLOCK_TYPES, "UNet2DModel"),
                downsample_padding=downsample_padding, **common))

        # 4. bottleneck at the coarsest resolution: ResNet, attention, ResNet
        self.mid_block = UNetMidBlock2D(C[-1], add_attention=add_attention,
                                        attn_groups=attn_norm_num_groups,
                                        output_scale_factor=mid_block_scale_factor, **common)

        # 5. decoder: the levels in reverse, each taking one more skip than the encoder level made
        self.up_blocks = nn.ModuleList()
        for i, block_type in enumerate(up_block_types):
            l = n - 1 - i  # the level (resolution) this block works at
            self.up_blocks.append(UpBlock2D(
                in_channels=C[max(l - 1, 0)], prev_output_channel=C[min(l + 1, n - 1)],
                out_channels=C[l], num_layers=layers_per_block + 1, add_upsample=l > 0,
                add_attention=lookup_block_type(block_type, UP_BLOCK_TYPES, "UNet2DModel"),
                **common))

        # 6. head: GroupNorm -> SiLU -> conv to (B, out_channels, H, W)
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, C[0], eps=norm_eps)
        self.conv_out = nn.Conv2d(C[0], out_channels, kernel_size=3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int],
                class_labels: Optional[torch.Tensor] = None,
                return_dict: bool = True) -> UNet2DOutput:
        """ε_θ(x_t, t[, class]): sample (B, C, H, W), timestep a number or a (B,) tensor.
        `return_dict=False` gives diffusers' plain tuple `(sample,)`."""
        x = sample
        check_unet_sample(self, x)
        if self.class_embedding is not None and class_labels is None:
            raise ValueError(f"this UNet is class-conditional (num_class_embeds="
                             f"{self.config.num_class_embeds}): pass class_labels, a (B,) "
                             f"tensor of ints")
        if self.class_embedding is None and class_labels is not None:
            raise ValueError("class_labels given, but this UNet is unconditional "
                             "(num_class_embeds is None)")
        if self.config.center_input_sample:  # [0, 1] -> [-1, 1]
            x = 2 * x - 1.0

        # 1. time (+ class) embedding
        t = timestep_batch(timestep, x)  # (B,)
        temb = self.time_embedding(self.time_proj(t).to(self.dtype))  # (B,) -> (B, 4 C_0)
        if self.class_embedding is not None:
            temb = temb + self.class_embedding(class_labels).to(temb.dtype)

        # 2. stem
        h = self.conv_in(x)
        skips = [h]
        # 3. encoder: remember every intermediate map for the decoder
        for block in self.down_blocks:
            h, block_skips = block(h, temb)
            skips.extend(block_skips)
        # 4. bottleneck
        h = self.mid_block(h, temb)
        # 5. decoder: each block consumes as many skips as it has ResNet blocks, last made first
        for block in self.up_blocks:
            k = len(block.resnets)
            h = block(h, tuple(skips[-k:]), temb)
            del skips[-k:]
        # 6. head
        h = self.conv_out(F.silu(self.conv_norm_out(h)))
        return UNet2DOutput(sample=h) if return_dict else (h,)
