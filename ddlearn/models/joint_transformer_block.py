"""One MMDiT block: image tokens and text tokens, each with its own weights, attend jointly.

Mirrors diffusers' `JointTransformerBlock` with `Attention(added_kv_proj_dim=...)` and
`JointAttnProcessor2_0`, `AdaLayerNormZero`, `AdaLayerNormContinuous` and `FeedForward`
("gelu-approximate"): same parameter names (`norm1.linear`, `attn.to_q`, `attn.add_q_proj`,
`attn.to_add_out`, `ff.net.0.proj`, `ff_context.net.2`, ...), so SD3 checkpoints load key for key.

Two streams, x (image, N tokens) and c (text, M tokens), share one attention and nothing else:

    (shift, scale, gate)_{1,2} = Linear(SiLU(y))          y: timestep + pooled text, (B, D)
    x' = LN(x) (1 + scale_1) + shift_1                     adaLN (DiT eq. in Sec. 3.2)
    [a_x, a_c] = softmax(Q K^T / sqrt(d)) V,  Q = [x' W_q ; c' W'_q], K, V likewise
    x = x + gate_1 · a_x W_o                               adaLN-Zero: gates start at 0
    x = x + gate_2 · MLP(LN(x) (1 + scale_2) + shift_2)
and the same for c with its own weights (the primed W'). The last block only reads the text
(`context_pre_only`): c gets a plain adaLN (shift, scale) and is not updated.

Notation: B batch, N image tokens, M text tokens, D = heads · head_dim, H heads of size d.

References:
    Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"
        (SD3), Sec. 4 and Fig. 2: the MM-DiT block, separate weights per modality, joint attention.
    Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (DiT), Sec. 3.2: adaLN-Zero.
    Vaswani et al. 2017, eq. 1 (scaled dot-product attention).
"""

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, T, D) scaled and shifted per sample by (B, D) vectors: x (1 + scale) + shift."""
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLayerNormZero(nn.Module):
    """LN(x) modulated by y, plus the gate and MLP modulation for later: 6 vectors from y."""

    def __init__(self, dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, emb: torch.Tensor):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            self.linear(self.silu(emb)).chunk(6, dim=1)  # (B, 6D) -> 6 x (B, D)
        return modulate(self.norm(x), shift_msa, scale_msa), gate_msa, shift_mlp, scale_mlp, \
            gate_mlp


class AdaLayerNormContinuous(nn.Module):
    """LN(x) (1 + scale) + shift with (scale, shift) from y: no gate (the last layers)."""

    def __init__(self, dim: int, conditioning_dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(conditioning_dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(self.silu(emb)).chunk(2, dim=1)  # note: scale first
        return modulate(self.norm(x), shift, scale)


class GELUProjection(nn.Module):
    """Linear, then tanh-approximated GELU (diffusers' `GELU(approximate="tanh")`)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """The position-wise MLP D -> 4D -> D; `net.1` is diffusers' parameter-free dropout."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GELUProjection(dim, mult * dim), nn.Identity(),
                                  nn.Linear(mult * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class JointAttention(nn.Module):
    """One softmax over N image + M text tokens; each stream has its own q, k, v, out weights."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_pre_only: bool):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, inner) for _ in range(3))
        self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(dim, inner)
                                                             for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])  # `to_out.0`, as diffusers
        self.to_add_out = None if context_pre_only else nn.Linear(inner, dim)

    def heads_of(self, tokens: torch.Tensor) -> torch.Tensor:
        B, T, _ = tokens.shape
        return tokens.view(B, T, self.heads, -1).transpose(1, 2)  # (B, T, H·d) -> (B, H, T, d)

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        B, N, _ = x.shape
        # 1. queries, keys, values of both streams, concatenated along the tokens: image first
        q, k, v = (torch.cat([self.heads_of(image(x)), self.heads_of(text(c))], dim=2)
                   for image, text in ((self.to_q, self.add_q_proj), (self.to_k, self.add_k_proj),
                                       (self.to_v, self.add_v_proj)))  # (B, H, N+M, d)
        # 2. softmax(Q K^T / sqrt(d)) V over all N+M tokens (eq. 1), then split the streams again
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(B, out.shape[2], -1)  # (B, H, N+M, d) -> (B, N+M, H·d)
        out_x, out_c = out[:, :N], out[:, N:]
        return self.to_out[0](out_x), (None if self.to_add_out is None else
                                       self.to_add_out(out_c))


class JointTransformerBlock(nn.Module):
    """x, c -> (c, x) updated, as diffusers returns them (text first)."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int,
                 context_pre_only: bool = False):
        super().__init__()
        self.context_pre_only = context_pre_only
        self.norm1 = AdaLayerNormZero(dim)
        self.norm1_context = (AdaLayerNormContinuous(dim, dim) if context_pre_only
                              else AdaLayerNormZero(dim))
        self.attn = JointAttention(dim, num_attention_heads, attention_head_dim, context_pre_only)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim)
        if not context_pre_only:
            self.norm2_context = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.ff_context = FeedForward(dim)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                temb: torch.Tensor):
        x, c, y = hidden_states, encoder_hidden_states, temb
        # 1. adaLN of each stream, conditioned on y
        x_norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(x, y)
        if self.context_pre_only:
            c_norm = self.norm1_context(c, y)
        else:
            c_norm, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(c, y)
        # 2. joint attention
        attn_x, attn_c = self.attn(x_norm, c_norm)
        # 3. the image stream: gated attention, then the gated, modulated MLP (adaLN-Zero)
        x = x + gate_msa[:, None] * attn_x
        x = x + gate_mlp[:, None] * self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp))
        if self.context_pre_only:
            return None, x
        # 4. the text stream, the same with its own weights
        c = c + c_gate_msa[:, None] * attn_c
        c = c + c_gate_mlp[:, None] * self.ff_context(
            modulate(self.norm2_context(c), c_shift_mlp, c_scale_mlp))
        return c, x
