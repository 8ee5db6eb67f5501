"""Stable Diffusion 3's denoiser: a transformer over latent patches and text tokens (MMDiT).

Mirrors `diffusers.SD3Transformer2DModel` (SD 3.0's layout): same config keys and defaults, same
parameter names (`pos_embed.proj`, `time_text_embed.*`, `context_embedder`,
`transformer_blocks.{i}.*`, `norm_out.linear`, `proj_out`), so `transformer/config.json` +
`diffusion_pytorch_model.safetensors` load key for key, both ways. Read order = build order:

    x = patchify(z_t) + pos                        (B, C, h, w) -> (B, N, D), N = (h/p)(w/p)
    y = MLP(sinusoids(t)) + MLP(pooled text)       (B, D): what adaLN modulates with
    c = context_embedder(text tokens)              (B, M, joint_attention_dim) -> (B, M, D)
    (c, x) = JointTransformerBlock_l(x, c, y)      l = 1 .. num_layers (the last: x only)
    v = unpatchify(proj_out(adaLN(x, y)))          (B, N, p·p·C) -> (B, C, h, w)

The output is what the flow-matching scheduler steps with: the velocity v = ε - x_0.

Notation: p patch_size, C in_channels (16 for SD3's VAE), D = num_attention_heads ·
attention_head_dim, M text tokens (SD3: 77 CLIP + 256 T5), h x w the latent's size.

References:
    Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"
        (SD3), Sec. 4 and Fig. 2 (MM-DiT).
    Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (DiT), Sec. 3.2: patchify,
        adaLN-Zero, the linear decoder and its rearrangement back to the latent's shape.
"""

from typing import NamedTuple, Optional

import torch
from torch import nn

from ddlearn.config import register_to_config
from ddlearn.models.embeddings import (
    CombinedTimestepTextProjEmbeddings,
    PatchEmbed,
    timestep_batch,
)
from ddlearn.models.joint_transformer_block import AdaLayerNormContinuous, JointTransformerBlock
from ddlearn.models.modeling import ModelMixin
from ddlearn.options import refuse


def patchify(z: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, N, p·p·C): token i·(w/p) + j is the p x p patch at rows i·p.., columns
    j·p.., its values in (row, column, channel) order. `PatchEmbed`'s stride-p convolution is a
    Linear layer on these tokens (chapter 07 shows it); `unpatchify` undoes it."""
    B, C, h, w = z.shape
    z = z.reshape(B, C, h // p, p, w // p, p)
    z = torch.einsum("nchpwq->nhwpqc", z)  # (B, C, h/p, p, w/p, p) -> (B, h/p, w/p, p, p, C)
    return z.reshape(B, (h // p) * (w // p), p * p * C)


def unpatchify(tokens: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """(B, N, p·p·C) -> (B, C, h, w), the inverse of `patchify` (DiT's final rearrangement)."""
    B, N, D = tokens.shape
    x = tokens.reshape(B, h // p, w // p, p, p, D // (p * p))
    x = torch.einsum("nhwpqc->nchpwq", x)  # (B, h/p, w/p, p, p, C) -> (B, C, h/p, p, w/p, p)
    return x.reshape(B, D // (p * p), h, w)


class Transformer2DModelOutput(NamedTuple):
    sample: torch.Tensor  # (B, out_channels, h, w): the predicted velocity


class SD3Transformer2DModel(ModelMixin):
    """Patchify -> joint transformer blocks over image and text tokens -> unpatchify."""

    # SD 3.5's extra self-attention layers and q/k RMS norms are left out
    only_supported = {"dual_attention_layers": (), "qk_norm": None}

    @register_to_config
    def __init__(self, sample_size: int = 128, patch_size: int = 2, in_channels: int = 16,
                 num_layers: int = 18, attention_head_dim: int = 64,
                 num_attention_heads: int = 18, joint_attention_dim: int = 4096,
                 caption_projection_dim: int = 1152, pooled_projection_dim: int = 2048,
                 out_channels: int = 16, pos_embed_max_size: int = 96,
                 dual_attention_layers=(), qk_norm: Optional[str] = None):
        super().__init__()  # refuses the `only_supported` keys at other values
        D = num_attention_heads * attention_head_dim
        if caption_projection_dim != D:
            raise ValueError(f"caption_projection_dim={caption_projection_dim} must equal "
                             f"num_attention_heads x attention_head_dim = {D}: text and image "
                             f"tokens share one attention")
        self.out_channels = out_channels if out_channels is not None else in_channels
        # 1. inputs: patches with positions, the conditioning vector y, the text tokens
        self.pos_embed = PatchEmbed(sample_size, sample_size, patch_size, in_channels, D,
                                    pos_embed_max_size)
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(D, pooled_projection_dim)
        self.context_embedder = nn.Linear(joint_attention_dim, caption_projection_dim)
        # 2. the MM-DiT blocks; the last one updates only the image tokens
        self.transformer_blocks = nn.ModuleList([
            JointTransformerBlock(D, num_attention_heads, attention_head_dim,
                                  context_pre_only=i == num_layers - 1)
            for i in range(num_layers)])
        # 3. head: adaLN, then each token back to a p x p x C patch
        self.norm_out = AdaLayerNormContinuous(D, D)
        self.proj_out = nn.Linear(D, patch_size * patch_size * self.out_channels)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor = None,
                pooled_projections: torch.Tensor = None, timestep=None,
                block_controlnet_hidden_states=None, joint_attention_kwargs=None,
                return_dict: bool = True, skip_layers=None) -> Transformer2DModelOutput:
        """v_θ(z_t, t, text): diffusers' arguments in its order. `skip_layers` leaves those
        blocks out (SD 3.5's skip-layer guidance); ControlNet residuals must stay None."""
        refuse("SD3Transformer2DModel.forward", "ddlearn's transformer has no ControlNet, "
               "IP-Adapter or LoRA", block_controlnet_hidden_states=block_controlnet_hidden_states,
               joint_attention_kwargs=joint_attention_kwargs)
        z = hidden_states
        self._check_inputs(z, encoder_hidden_states, pooled_projections, timestep)
        p, (h, w) = self.config.patch_size, z.shape[-2:]
        # 1. tokens and conditioning
        x = self.pos_embed(z)  # (B, N, D)
        y = self.time_text_embed(timestep_batch(timestep, z), pooled_projections)  # (B, D)
        c = self.context_embedder(encoder_hidden_states)  # (B, M, D)
        # 2. the blocks
        for i, block in enumerate(self.transformer_blocks):
            if skip_layers is None or i not in skip_layers:
                c, x = block(x, c, y)
        # 3. head: adaLN, each token to a p x p x C patch, patches back in place
        sample = unpatchify(self.proj_out(self.norm_out(x, y)), p, h, w)  # (B, C_out, h, w)
        return Transformer2DModelOutput(sample) if return_dict else (sample,)

    def _check_inputs(self, z, text, pooled, timestep):
        config = self.config
        if z.ndim != 4 or z.shape[1] != config.in_channels:
            raise ValueError(f"hidden_states should have shape (B, {config.in_channels}, h, w) "
                             f"(in_channels), got {tuple(z.shape)}")
        p = config.patch_size
        if z.shape[-2] % p or z.shape[-1] % p:
            raise ValueError(f"the latent's height and width {tuple(z.shape[-2:])} must be "
                             f"multiples of patch_size={p}; for images, height and width must "
                             f"be multiples of {p} x the VAE's downsampling factor")
        for name, tensor, shape in (
                ("encoder_hidden_states", text, f"(B, M, {config.joint_attention_dim}) "
                                                f"(joint_attention_dim)"),
                ("pooled_projections", pooled, f"(B, {config.pooled_projection_dim}) "
                                               f"(pooled_projection_dim)")):
            width = config.joint_attention_dim if tensor is text else config.pooled_projection_dim
            ndim = 3 if tensor is text else 2
            if tensor is None:
                raise ValueError(f"{name} is required: the text encoders' output, shape {shape}")
            if tensor.ndim != ndim or tensor.shape[-1] != width or tensor.shape[0] != z.shape[0]:
                hint = ("; the SD3 pipeline zero-pads the CLIP embeddings to that width"
                        if tensor is text else "; the two CLIP encoders' pooled outputs, joined")
                raise ValueError(f"{name} should have shape {shape} with B = {z.shape[0]} as "
                                 f"hidden_states, got {tuple(tensor.shape)}{hint}")
        if timestep is None:
            raise ValueError("timestep is required: the scheduler's t (σ x 1000 for flow "
                             "matching)")
