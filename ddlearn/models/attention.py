"""Multi-head (self- or cross-) attention over tokens or over the pixels of a feature map.

Mirrors `diffusers.models.attention_processor.Attention` with its default `AttnProcessor2_0`:
same constructor arguments (the ones the UNets and the VAE use) and the same parameter names
(`to_q`, `to_k`, `to_v`, `to_out.0`, `group_norm`), so diffusers checkpoints load key for key.

References:
    Vaswani et al. 2017, "Attention Is All You Need", eq. 1 (scaled dot-product attention) and
        Section 3.2.2 (multi-head attention).
    Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Appendix B: self-attention at the
        16x16 resolution of the UNet, with GroupNorm before and a residual connection after.
    Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models",
        Section 3.3: cross-attention from image tokens (queries) to text tokens (keys, values).

Notation:
    x        (B, N, C) tokens, or (B, C, H, W) a feature map seen as N = H*W tokens
    context  (B, M, C_ctx) tokens to attend to (text for cross-attention); x itself if None
    Q, K, V  (B, heads, N|M, d)   d = dim_head
    softmax(Q K^T / sqrt(d)) V   (eq. 1)
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention. With `norm_num_groups` it normalises its input first, and with
    `residual_connection` it adds the input back: out = (x + attn(norm(x))) / rescale_output_factor.
    """

    def __init__(self, query_dim: int, heads: int = 8, dim_head: int = 64,
                 cross_attention_dim: Optional[int] = None, bias: bool = False,
                 out_bias: bool = True, norm_num_groups: Optional[int] = None, eps: float = 1e-5,
                 residual_connection: bool = False, rescale_output_factor: float = 1.0):
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = cross_attention_dim or query_dim
        self.heads = heads
        self.residual_connection = residual_connection
        self.rescale_output_factor = rescale_output_factor

        self.group_norm = None
        if norm_num_groups is not None:
            self.group_norm = nn.GroupNorm(norm_num_groups, query_dim, eps=eps)
        self.to_q = nn.Linear(query_dim, inner_dim, bias=bias)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=bias)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=bias)
        # a ModuleList so the key is `to_out.0` as in diffusers (its `to_out.1` is a parameter-free
        # dropout, which we leave out)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim, bias=out_bias)])

    def forward(self, hidden_states: torch.Tensor,
                encoder_hidden_states: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = hidden_states
        residual = x
        spatial = x.ndim == 4
        # 1. normalise, and see a feature map as a sequence of pixels
        if self.group_norm is not None and spatial:
            x = self.group_norm(x)
        elif self.group_norm is not None:  # GroupNorm wants the channels in dim 1
            x = self.group_norm(x.transpose(1, 2)).transpose(1, 2)
        if spatial:
            B, C, H, W = x.shape
            x = x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
        context = x if encoder_hidden_states is None else encoder_hidden_states

        # 2. project to queries, keys, values and split the heads
        B, N, _ = x.shape
        q = self.to_q(x).view(B, N, self.heads, -1).transpose(1, 2)  # (B, N, h*d) -> (B, h, N, d)
        k = self.to_k(context).view(B, context.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(context).view(B, context.shape[1], self.heads, -1).transpose(1, 2)

        # 3. softmax(Q K^T / sqrt(d)) V  (eq. 1), one attention map per head
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, N, -1)  # (B, h, N, d) -> (B, N, h*d)

        # 4. merge the heads, back to a feature map, add the input
        out = self.to_out[0](out)
        if spatial:
            out = out.transpose(1, 2).reshape(B, C, H, W)  # (B, H*W, C) -> (B, C, H, W)
        if self.residual_connection:
            out = out + residual
        if self.rescale_output_factor != 1.0:
            out = out / self.rescale_output_factor
        return out
