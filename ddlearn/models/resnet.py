"""The convolutional building blocks of every diffusion UNet and VAE: a residual block with a time
embedding, and the 2x down- and upsampling layers between resolutions.

Mirrors `diffusers.models.resnet.ResnetBlock2D` (with `time_embedding_norm="default"`, SiLU),
`diffusers.models.downsampling.Downsample2D` and `diffusers.models.upsampling.Upsample2D`; parameter
names are the same, so diffusers checkpoints load key for key.

References:
    He et al. 2016, "Deep Residual Learning for Image Recognition" (the residual connection).
    Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Appendix B: the Wide-ResNet
        block of the DDPM UNet; GroupNorm, and the time embedding added after the first conv.
    Wu & He 2018, "Group Normalization".

Notation:
    x       (B, C_in, H, W)   input feature map          h    the residual branch
    temb    (B, T)            time (+ class) embedding   C_out output channels
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class ResnetBlock2D(nn.Module):
    """GroupNorm → SiLU → conv → (+ time embedding) → GroupNorm → SiLU → dropout → conv, plus a
    shortcut (a 1x1 conv when the channel count changes); output = (shortcut + h) / scale."""

    def __init__(self, in_channels: int, out_channels: Optional[int] = None,
                 temb_channels: Optional[int] = 512, groups: int = 32,
                 groups_out: Optional[int] = None, eps: float = 1e-6, dropout: float = 0.0,
                 output_scale_factor: float = 1.0):
        super().__init__()
        out_channels = out_channels or in_channels
        groups_out = groups_out or groups
        self.output_scale_factor = output_scale_factor

        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        # the time embedding becomes a per-channel bias of the residual branch
        self.time_emb_proj = None
        if temb_channels is not None:
            self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups_out, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = None
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        # 1. first half of the residual branch
        h = self.conv1(F.silu(self.norm1(x)))
        # 2. add the time embedding to every pixel: (B, T) -> (B, C_out, 1, 1)
        if self.time_emb_proj is not None and temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        # 3. second half
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        # 4. residual connection
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        out = shortcut + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample2D(nn.Module):
    """Halve H and W: a stride-2 3x3 conv (`use_conv`), or 2x2 average pooling.

    `padding=0` reproduces the asymmetric padding of the Stable Diffusion VAE encoder: one row and
    column of zeros on the bottom/right only, (0, 1, 0, 1), then an unpadded conv.
    """

    def __init__(self, channels: int, use_conv: bool = True, out_channels: Optional[int] = None,
                 padding: int = 1):
        super().__init__()
        out_channels = out_channels or channels
        self.padding = padding
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, stride=2, padding=padding)
        elif out_channels != channels:
            raise ValueError(f"Downsample2D without a conv cannot change channels ({channels} -> "
                             f"{out_channels}); pass use_conv=True or out_channels=None")
        else:
            self.conv = nn.AvgPool2d(kernel_size=2, stride=2)
        self.use_conv = use_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_conv and self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))  # (left, right, top, bottom)
        return self.conv(x)  # (B, C, H, W) -> (B, C_out, H/2, W/2)


class Upsample2D(nn.Module):
    """Double H and W by nearest-neighbour interpolation, then (optionally) a 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool = True, out_channels: Optional[int] = None):
        super().__init__()
        out_channels = out_channels or channels
        self.conv = None
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, output_size: Optional[tuple] = None) -> torch.Tensor:
        # output_size lets a UNet match a skip connection of odd size; otherwise exactly 2x
        if output_size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C, H, W) -> (B, C, 2H, 2W)
        else:
            x = F.interpolate(x, size=output_size, mode="nearest")
        return x if self.conv is None else self.conv(x)
