"""The three kinds of stage a UNet is made of: encoder levels, the bottleneck, decoder levels.

Mirrors `diffusers.models.unets.unet_2d_blocks.{DownBlock2D, AttnDownBlock2D, UpBlock2D,
AttnUpBlock2D, UNetMidBlock2D}` (with `resnet_time_scale_shift="default"`, SiLU, conv resampling).
A level with attention is the same block with one self-attention layer after each ResNet block,
so one class does both: diffusers' `AttnDownBlock2D` is `DownBlock2D(..., add_attention=True)`,
its `AttnUpBlock2D` is `UpBlock2D(..., add_attention=True)`.
Parameter names are diffusers': `resnets.j`, `attentions.j`, `downsamplers.0.conv`,
`upsamplers.0.conv`.

References:
    Ronneberger et al. 2015, "U-Net", Fig. 1: a contracting path, an expanding path, and skip
        connections that concatenate encoder features onto the decoder's.
    Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Appendix B: two residual blocks per
        resolution, self-attention at the 16x16 resolution and in the middle.

Notation:
    h      (B, C, H, W) the feature map flowing through the block
    temb   (B, T) the time (+ class) embedding, given to every ResNet block
    skips  the feature maps the encoder hands to the decoder (one per ResNet block + downsampler)
"""

from typing import Optional

import torch
from torch import nn

from ddlearn.models.attention import Attention
from ddlearn.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D


def spatial_self_attention(channels: int, attention_head_dim: Optional[int], groups: int,
                           eps: float, output_scale_factor: float = 1.0) -> Attention:
    """The DDPM attention layer: GroupNorm, multi-head self-attention over the H*W pixels, residual.
    `attention_head_dim=None` means a single head as wide as the feature map."""
    dim_head = attention_head_dim or channels
    return Attention(channels, heads=channels // dim_head, dim_head=dim_head, bias=True,
                     norm_num_groups=groups, eps=eps, residual_connection=True,
                     rescale_output_factor=output_scale_factor)


class DownBlock2D(nn.Module):
    """One encoder level: `num_layers` × (ResNet block [→ attention]), then a stride-2 conv.
    Returns the output and the skips: every layer's output, and the downsampled map."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: Optional[int],
                 num_layers: int = 1, add_downsample: bool = True, add_attention: bool = False,
                 attention_head_dim: Optional[int] = None, resnet_eps: float = 1e-6,
                 resnet_groups: int = 32, dropout: float = 0.0, downsample_padding: int = 1,
                 output_scale_factor: float = 1.0):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels if j == 0 else out_channels, out_channels, temb_channels,
                          groups=resnet_groups, eps=resnet_eps, dropout=dropout,
                          output_scale_factor=output_scale_factor)
            for j in range(num_layers)])
        self.attentions = nn.ModuleList([
            spatial_self_attention(out_channels, attention_head_dim, resnet_groups, resnet_eps,
                                   output_scale_factor)
            for _ in range(num_layers if add_attention else 0)])
        self.downsamplers = None
        if add_downsample:
            self.downsamplers = nn.ModuleList(
                [Downsample2D(out_channels, use_conv=True, padding=downsample_padding)])

    def forward(self, h: torch.Tensor, temb: Optional[torch.Tensor] = None,
                encoder_hidden_states=None):
        """`encoder_hidden_states` is ignored: the cross-attention blocks take the same call."""
        skips = []
        for j, resnet in enumerate(self.resnets):
            h = resnet(h, temb)
            if self.attentions:
                h = self.attentions[j](h)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)  # (B, C, H, W) -> (B, C, H/2, W/2)
            skips.append(h)
        return h, tuple(skips)


class UNetMidBlock2D(nn.Module):
    """The bottleneck: ResNet block, then `num_layers` × ([attention →] ResNet block).
    `temb_channels=None` gives the VAE's time-free version."""

    def __init__(self, in_channels: int, temb_channels: Optional[int], num_layers: int = 1,
                 add_attention: bool = True, attention_head_dim: Optional[int] = None,
                 resnet_eps: float = 1e-6, resnet_groups: int = 32,
                 attn_groups: Optional[int] = None, dropout: float = 0.0,
                 output_scale_factor: float = 1.0):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels, in_channels, temb_channels, groups=resnet_groups,
                          eps=resnet_eps, dropout=dropout, output_scale_factor=output_scale_factor)
            for _ in range(num_layers + 1)])
        self.attentions = nn.ModuleList([
            spatial_self_attention(in_channels, attention_head_dim, attn_groups or resnet_groups,
                                   resnet_eps, output_scale_factor)
            for _ in range(num_layers if add_attention else 0)])

    def forward(self, h: torch.Tensor, temb: Optional[torch.Tensor] = None,
                encoder_hidden_states=None) -> torch.Tensor:
        h = self.resnets[0](h, temb)
        for j, resnet in enumerate(self.resnets[1:]):
            if self.attentions:
                h = self.attentions[j](h)
            h = resnet(h, temb)
        return h


class UpBlock2D(nn.Module):
    """One decoder level: `num_layers` × (concat a skip → ResNet block [→ attention]), then 2x
    nearest upsampling and a conv.

    Channels: the first ResNet block takes the previous level's output (`prev_output_channel`);
    the skips come from this level of the encoder (`out_channels`), except the last one, which is
    the encoder's input to this level and so has the next-finer level's width (`in_channels`).
    """

    def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int,
                 temb_channels: Optional[int], num_layers: int = 1, add_upsample: bool = True,
                 add_attention: bool = False, attention_head_dim: Optional[int] = None,
                 resnet_eps: float = 1e-6, resnet_groups: int = 32, dropout: float = 0.0,
                 output_scale_factor: float = 1.0):
        super().__init__()
        resnets = []
        for j in range(num_layers):
            h_channels = prev_output_channel if j == 0 else out_channels
            skip_channels = in_channels if j == num_layers - 1 else out_channels
            resnets.append(ResnetBlock2D(h_channels + skip_channels, out_channels, temb_channels,
                                         groups=resnet_groups, eps=resnet_eps, dropout=dropout,
                                         output_scale_factor=output_scale_factor))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList([
            spatial_self_attention(out_channels, attention_head_dim, resnet_groups, resnet_eps,
                                   output_scale_factor)
            for _ in range(num_layers if add_attention else 0)])
        self.upsamplers = None
        if add_upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True)])

    def forward(self, h: torch.Tensor, skips: tuple, temb: Optional[torch.Tensor] = None,
                encoder_hidden_states=None, upsample_size: Optional[tuple] = None) -> torch.Tensor:
        """`skips`: this level's encoder outputs in the order they were made; used last first.
        `encoder_hidden_states` is ignored, as in `DownBlock2D`."""
        for j, resnet in enumerate(self.resnets):
            h = torch.cat([h, skips[-1 - j]], dim=1)  # (B, C_h, H, W) -> (B, C_h + C_skip, H, W)
            h = resnet(h, temb)
            if self.attentions:
                h = self.attentions[j](h)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, upsample_size)  # (B, C, H, W) -> (B, C, 2H, 2W)
        return h


def check_unet_sample(model, sample: torch.Tensor):
    """A UNet's input is (B, in_channels, H, W) with H and W divisible by 2^(levels - 1)."""
    config = model.config
    if sample.ndim != 4 or sample.shape[1] != config.in_channels:
        raise ValueError(f"sample should have shape (B, {config.in_channels}, H, W) "
                         f"(in_channels={config.in_channels}), got {tuple(sample.shape)}")
    factor = 2 ** (len(config.block_out_channels) - 1)
    if sample.shape[-2] % factor or sample.shape[-1] % factor:
        raise ValueError(f"sample height and width should be multiples of {factor} (the UNet "
                         f"halves them {factor.bit_length() - 1} times), got "
                         f"{tuple(sample.shape[-2:])}; resize or pad the images")


def lookup_block_type(block_type: str, supported: dict, model: str):
    """What a config's block type name stands for in `supported` (a class, or whether the level
    has attention); a diffusers block ddlearn does not implement is refused by name."""
    if block_type not in supported:
        raise NotImplementedError(f"{model}: block type {block_type!r} is a diffusers block "
                                  f"ddlearn does not implement; use {', '.join(supported)}")
    return supported[block_type]
