"""The spatial transformer of Stable Diffusion: how text enters the UNet.

Mirrors diffusers' `GEGLU`, `FeedForward`, `BasicTransformerBlock` and `Transformer2DModel` (the
continuous-input, `layer_norm` variant that SD 1.x / 2.x use). Attribute names equal the
checkpoint's keys (`transformer_blocks.0.attn2.to_k`, `ff.net.0.proj`, `proj_in`, ...).

A feature map is flattened into a sequence of H*W tokens; each token attends to the other tokens
(self-attention, `attn1`) and then to the text tokens (cross-attention, `attn2`: queries from the
image, keys and values from the text encoder), then passes through a gated MLP. Every sub-layer is
pre-LayerNorm with a residual connection, as in GPT-2.

Notation
    x      (B, N, C)  image tokens, N = H*W, C = inner_dim = heads * dim_head
    c      (B, L, D)  text tokens from the text encoder, D = cross_attention_dim
    GEGLU(x) = (x W + b) * GELU(x V + c)   (Shazeer 2020, eq. 5)

References
    Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", Sec. 3.3
        (cross-attention conditioning, eq. 3: Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V).
    Vaswani et al. 2017, "Attention Is All You Need", Sec. 3.2 (scaled dot-product attention).
    Shazeer 2020, "GLU Variants Improve Transformer", eq. 5 (GEGLU).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ddlearn.models.attention import Attention


class GEGLU(nn.Module):
    """Gated GELU unit: one Linear gives a value and a gate; output value * GELU(gate)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)  # (B, N, 2*dim_out) -> 2 x (B, N, dim_out)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """Position-wise MLP `net = [GEGLU(dim -> 4 dim), Dropout, Linear(4 dim -> dim)]`."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner_dim = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner_dim), nn.Dropout(dropout),
                                  nn.Linear(inner_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """x <- x + SelfAttn(LN(x));  x <- x + CrossAttn(LN(x), c);  x <- x + FF(LN(x))."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int,
                 cross_attention_dim: Optional[int] = None, dropout: float = 0.0,
                 attention_bias: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        heads, dim_head = num_attention_heads, attention_head_dim
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head, bias=attention_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn2 = Attention(dim, heads=heads, dim_head=dim_head, bias=attention_bias,
                               cross_attention_dim=cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(self, x: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None):
        # 1. self-attention: every image token looks at every other one
        x = self.attn1(self.norm1(x)) + x
        # 2. cross-attention: image tokens (queries) look at text tokens (keys, values); eq. 3
        x = self.attn2(self.norm2(x), encoder_hidden_states=encoder_hidden_states) + x
        # 3. gated feed-forward
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    """GroupNorm -> proj_in -> transformer blocks on H*W tokens -> proj_out, plus a residual.

    `use_linear_projection=False` (SD 1.x) makes proj_in/proj_out 1x1 convolutions applied before
    flattening; `True` (SD 2.x) makes them Linear layers applied after. Both compute the same kind
    of map; only the checkpoint's weight shapes differ.
    """

    def __init__(self, num_attention_heads: int, attention_head_dim: int, in_channels: int,
                 num_layers: int = 1, cross_attention_dim: Optional[int] = None,
                 norm_num_groups: int = 32, use_linear_projection: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6)
        proj = nn.Linear if use_linear_projection else lambda i, o: nn.Conv2d(i, o, kernel_size=1)
        self.proj_in = proj(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList([
            BasicTransformerBlock(inner_dim, num_attention_heads, attention_head_dim,
                                  cross_attention_dim=cross_attention_dim, dropout=dropout)
            for _ in range(num_layers)])
        self.proj_out = proj(inner_dim, in_channels)

    def forward(self, hidden_states: torch.Tensor,
                encoder_hidden_states: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, _, H, W = hidden_states.shape
        residual = hidden_states
        x = self.norm(hidden_states)
        # 1. (B, C, H, W) -> (B, H*W, inner_dim): conv projects before flattening, Linear after
        if not self.use_linear_projection:
            x = self.proj_in(x)
        x = x.permute(0, 2, 3, 1).reshape(B, H * W, x.shape[1])
        if self.use_linear_projection:
            x = self.proj_in(x)
        # 2. the transformer blocks
        for block in self.transformer_blocks:
            x = block(x, encoder_hidden_states=encoder_hidden_states)
        # 3. (B, H*W, inner_dim) -> (B, C, H, W), then the residual around the whole module
        if self.use_linear_projection:
            x = self.proj_out(x)
        x = x.reshape(B, H, W, x.shape[-1]).permute(0, 3, 1, 2).contiguous()
        if not self.use_linear_projection:
            x = self.proj_out(x)
        return x + residual
