"""Telling a network when and where: sinusoidal features of the timestep (then a small MLP), and
for a transformer, patches of the latent with the 2-D sinusoidal position of each.

Mirrors `diffusers.models.embeddings`: `get_timestep_embedding`, `Timesteps`, `TimestepEmbedding`
(parameter names `linear_1`, `linear_2`), and for SD3's transformer `get_2d_sincos_pos_embed`,
`PatchEmbed` and `CombinedTimestepTextProjEmbeddings`, so diffusers checkpoints load key for key.

References:
    Vaswani et al. 2017, "Attention Is All You Need", Section 3.5 (sinusoidal position encoding).
    Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Appendix B: "diffusion time t is
        specified by adding the Transformer sinusoidal position embedding into each residual block".
    Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words" (ViT), Sec. 3.1: patch embeddings.
    Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (DiT), Sec. 3.2: patchify
        with frozen 2-D sin-cos positions; Esser et al. 2024 (SD3), Sec. 4: positions cropped
        from a larger grid, the pooled text added to the timestep embedding.

Notation:
    t        (B,)  timesteps, integers or fractions
    D        embedding dimension; half = D // 2 frequencies
    ω_i      = max_period ** (-i / (half - s)),  i = 0 .. half-1,  s = downscale_freq_shift
    emb(t)   = [sin(t ω_0), ..., sin(t ω_{half-1}), cos(t ω_0), ..., cos(t ω_{half-1})]
             (cos first when flip_sin_to_cos; one zero appended when D is odd)
    p        patch size: a (C, h, w) latent becomes N = (h/p)(w/p) tokens of size D
    pos(i,j) = [sincos_{D/2}(j · base/w'), sincos_{D/2}(i · base/h')]  (i row, j column of a
             h' x w' grid; the first half encodes the column, the second the row)
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def get_timestep_embedding(timesteps: torch.Tensor, embedding_dim: int,
                           flip_sin_to_cos: bool = False, downscale_freq_shift: float = 1,
                           scale: float = 1, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding of a (B,) tensor of timesteps -> (B, embedding_dim), float32."""
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps should be a 1-D tensor (one per batch element), "
                         f"got shape {tuple(timesteps.shape)}")
    half = embedding_dim // 2
    i = torch.arange(half, dtype=torch.float32, device=timesteps.device)
    omega = torch.exp(-math.log(max_period) * i / (half - downscale_freq_shift))  # ω_i
    angles = timesteps[:, None].float() * omega[None, :]  # (B, 1) * (1, half) -> (B, half)
    angles = scale * angles
    if flip_sin_to_cos:
        emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, 2*half)
    else:
        emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if embedding_dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class Timesteps(nn.Module):
    """`get_timestep_embedding` as a parameter-free module (diffusers' `time_proj`)."""

    def __init__(self, num_channels: int, flip_sin_to_cos: bool, downscale_freq_shift: float,
                 scale: float = 1):
        super().__init__()
        self.num_channels = num_channels
        self.flip_sin_to_cos = flip_sin_to_cos
        self.downscale_freq_shift = downscale_freq_shift
        self.scale = scale

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return get_timestep_embedding(timesteps, self.num_channels, self.flip_sin_to_cos,
                                      self.downscale_freq_shift, self.scale)


class TimestepEmbedding(nn.Module):
    """The MLP on top of the sinusoids: linear_1 → SiLU → linear_2."""

    def __init__(self, in_channels: int, time_embed_dim: int, out_dim: Optional[int] = None):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, out_dim or time_embed_dim)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(sample)))


def timestep_batch(timestep, sample: torch.Tensor) -> torch.Tensor:
    """A number, a 0-d tensor, or a (1,) / (B,) tensor -> a (B,) tensor on sample's device."""
    B = sample.shape[0]
    # (a Python float stays a float; diffusers would truncate 17.5 to 17)
    t = torch.as_tensor(timestep, device=sample.device)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, B)):
        raise ValueError(f"timestep should be a number or a tensor of shape () / (1,) / ({B},) "
                         f"for a batch of {B}, got shape {tuple(t.shape)}")
    return t.reshape(-1).expand(B)


# ---- where: patches and their 2-D positions (DiT, SD3) ------------------------------------------
def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, embed_dim): [sin(p ω_i), cos(p ω_i)], ω_i = 10000^(-2i/embed_dim)."""
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2))
    angles = torch.outer(positions.reshape(-1).double(), omega)  # (M, D/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int, base_size: int = 16,
                            interpolation_scale: float = 1.0) -> torch.Tensor:
    """The frozen position of each cell of a grid_size x grid_size grid, row by row -> (N, D)."""
    if embed_dim % 4:
        raise ValueError(f"the 2-D sin-cos position embedding needs a width divisible by 4 "
                         f"(two halves of sin and cos), got {embed_dim}")
    coordinate = torch.arange(grid_size, dtype=torch.float32) / (grid_size / base_size)
    coordinate = coordinate / interpolation_scale
    rows, columns = torch.meshgrid(coordinate, coordinate, indexing="ij")  # (G, G) each
    return torch.cat([sincos_1d(embed_dim // 2, columns), sincos_1d(embed_dim // 2, rows)], dim=1)


class PatchEmbed(nn.Module):
    """Patchify: a p x p convolution with stride p turns (B, C, h, w) into (B, h/p · w/p, D)
    tokens, plus each one's position. As in SD3, the positions are a fixed pos_embed_max_size²
    grid whose centre crop fits the latent, so one model takes several sizes."""

    def __init__(self, height: int, width: int, patch_size: int, in_channels: int,
                 embed_dim: int, pos_embed_max_size: int):
        super().__init__()
        self.patch_size, self.pos_embed_max_size = patch_size, pos_embed_max_size
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        pos = get_2d_sincos_pos_embed(embed_dim, pos_embed_max_size, base_size=height // patch_size)
        self.register_buffer("pos_embed", pos.float()[None])  # (1, G·G, D), saved as diffusers

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h, w = latent.shape[-2] // self.patch_size, latent.shape[-1] // self.patch_size
        G = self.pos_embed_max_size
        if h > G or w > G:
            raise ValueError(f"a latent of {latent.shape[-2]}x{latent.shape[-1]} is {h}x{w} "
                             f"patches, more than the {G}x{G} positions this model has "
                             f"(pos_embed_max_size); use a smaller height or width")
        tokens = self.proj(latent).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h·w, D)
        top, left = (G - h) // 2, (G - w) // 2  # the centre h x w of the G x G grid
        pos = self.pos_embed.reshape(1, G, G, -1)[:, top:top + h, left:left + w]
        return tokens + pos.reshape(1, h * w, -1)  # (1, h, w, D) -> (1, h·w, D)


class CombinedTimestepTextProjEmbeddings(nn.Module):
    """SD3's conditioning vector: MLP(sinusoids of t) + MLP(pooled text) -> (B, D)."""

    def __init__(self, embedding_dim: int, pooled_projection_dim: int):
        super().__init__()
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.timestep_embedder = TimestepEmbedding(256, embedding_dim)
        self.text_embedder = TimestepEmbedding(pooled_projection_dim, embedding_dim)  # the same
        # linear_1 -> SiLU -> linear_2 (diffusers calls it PixArtAlphaTextProjection)

    def forward(self, timestep: torch.Tensor, pooled_projection: torch.Tensor) -> torch.Tensor:
        t_emb = self.timestep_embedder(self.time_proj(timestep).to(pooled_projection.dtype))
        return t_emb + self.text_embedder(pooled_projection)
