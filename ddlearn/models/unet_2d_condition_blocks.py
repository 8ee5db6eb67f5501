"""The text-conditioned UNet stages: ResNet blocks interleaved with spatial transformers.

Mirrors diffusers' `CrossAttnDownBlock2D`, `UNetMidBlock2DCrossAttn` and `CrossAttnUpBlock2D` (the
"default" ResNet time embedding, one transformer layer per ResNet). The plain `DownBlock2D` /
`UpBlock2D` live in `unet_2d_blocks.py`; these add a `Transformer2DModel` after each ResNet.

    down:  [ResNet -> Transformer] x num_layers -> Downsample     (keeps every output as a skip)
    mid:   ResNet -> [Transformer -> ResNet] x num_layers
    up:    [cat(skip) -> ResNet -> Transformer] x num_layers -> Upsample

Each transformer gets `num_attention_heads` heads of `out_channels // num_attention_heads` dims.

References
    Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", Sec. 3.3
        and Appendix E (the SD UNet: ResNet + cross-attention at 3 of 4 resolutions).
    Ronneberger et al. 2015, "U-Net" (skip connections from the down path to the up path).
"""

from typing import Optional

import torch
from torch import nn

from ddlearn.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from ddlearn.models.transformer_2d import Transformer2DModel


def _transformer(channels: int, heads: int, cross_attention_dim: int, groups: int,
                 use_linear_projection: bool) -> Transformer2DModel:
    return Transformer2DModel(heads, channels // heads, in_channels=channels,
                              cross_attention_dim=cross_attention_dim, norm_num_groups=groups,
                              use_linear_projection=use_linear_projection)


class CrossAttnDownBlock2D(nn.Module):
    """One resolution of the down path: (ResNet, Transformer) pairs, then an optional /2."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int = 2,
                 resnet_eps: float = 1e-5, resnet_groups: int = 32, num_attention_heads: int = 8,
                 cross_attention_dim: int = 768, add_downsample: bool = True,
                 downsample_padding: int = 1, use_linear_projection: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels,
                          groups=resnet_groups, eps=resnet_eps, dropout=dropout)
            for i in range(num_layers)])
        self.attentions = nn.ModuleList([
            _transformer(out_channels, num_attention_heads, cross_attention_dim, resnet_groups,
                         use_linear_projection) for _ in range(num_layers)])
        self.downsamplers = nn.ModuleList([
            Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                         padding=downsample_padding)]) if add_downsample else None

    def forward(self, h: torch.Tensor, temb: torch.Tensor,
                encoder_hidden_states: torch.Tensor):
        skips = []
        for resnet, attn in zip(self.resnets, self.attentions, strict=True):
            h = resnet(h, temb)
            h = attn(h, encoder_hidden_states=encoder_hidden_states)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)  # (B, C, H, W) -> (B, C, H/2, W/2)
            skips.append(h)
        return h, tuple(skips)


class UNetMidBlock2DCrossAttn(nn.Module):
    """The bottleneck: ResNet, then (Transformer, ResNet) pairs, at the lowest resolution."""

    def __init__(self, in_channels: int, temb_channels: int, num_layers: int = 1,
                 resnet_eps: float = 1e-5, resnet_groups: int = 32, num_attention_heads: int = 8,
                 output_scale_factor: float = 1.0, cross_attention_dim: int = 768,
                 use_linear_projection: bool = False, dropout: float = 0.0):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels, in_channels, temb_channels, groups=resnet_groups,
                          eps=resnet_eps, dropout=dropout, output_scale_factor=output_scale_factor)
            for _ in range(num_layers + 1)])
        self.attentions = nn.ModuleList([
            _transformer(in_channels, num_attention_heads, cross_attention_dim, resnet_groups,
                         use_linear_projection) for _ in range(num_layers)])

    def forward(self, h: torch.Tensor, temb: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        h = self.resnets[0](h, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:], strict=True):
            h = attn(h, encoder_hidden_states=encoder_hidden_states)
            h = resnet(h, temb)
        return h


class CrossAttnUpBlock2D(nn.Module):
    """One resolution of the up path: concat a skip, ResNet, Transformer; then an optional x2.

    `prev_output_channel` is what arrives from below; the last ResNet's skip comes from the level
    above (`in_channels`), the others from this level (`out_channels`).
    """

    def __init__(self, in_channels: int, out_channels: int, prev_output_channel: int,
                 temb_channels: int, num_layers: int = 3, resnet_eps: float = 1e-5,
                 resnet_groups: int = 32, num_attention_heads: int = 8,
                 cross_attention_dim: int = 768, add_upsample: bool = True,
                 use_linear_projection: bool = False, dropout: float = 0.0):
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channel if i == 0 else out_channels
            resnets.append(ResnetBlock2D(resnet_in + skip_channels, out_channels, temb_channels,
                                         groups=resnet_groups, eps=resnet_eps, dropout=dropout))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList([
            _transformer(out_channels, num_attention_heads, cross_attention_dim, resnet_groups,
                         use_linear_projection) for _ in range(num_layers)])
        self.upsamplers = nn.ModuleList([
            Upsample2D(out_channels, use_conv=True, out_channels=out_channels)
        ]) if add_upsample else None

    def forward(self, h: torch.Tensor, skips: tuple, temb: torch.Tensor,
                encoder_hidden_states: torch.Tensor,
                upsample_size: Optional[tuple] = None) -> torch.Tensor:
        """`skips`: this level's encoder outputs in the order they were made; used last first."""
        for j, (resnet, attn) in enumerate(zip(self.resnets, self.attentions, strict=True)):
            h = torch.cat([h, skips[-1 - j]], dim=1)  # (B, C_h, H, W) -> (B, C_h + C_skip, H, W)
            h = resnet(h, temb)
            h = attn(h, encoder_hidden_states=encoder_hidden_states)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, upsample_size)  # (B, C, H, W) -> (B, C, 2H, 2W)
        return h
