"""Telling the network which timestep it is denoising: sinusoidal features, then a small MLP.

Mirrors `diffusers.models.embeddings.get_timestep_embedding`, `Timesteps` and `TimestepEmbedding`
(parameter names `linear_1`, `linear_2`), so diffusers checkpoints load key for key.

References:
    Vaswani et al. 2017, "Attention Is All You Need", Section 3.5 (sinusoidal position encoding).
    Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Appendix B: "diffusion time t is
        specified by adding the Transformer sinusoidal position embedding into each residual block".

Notation:
    t        (B,)  timesteps, integers or fractions
    D        embedding dimension; half = D // 2 frequencies
    ω_i      = max_period ** (-i / (half - s)),  i = 0 .. half-1,  s = downscale_freq_shift
    emb(t)   = [sin(t ω_0), ..., sin(t ω_{half-1}), cos(t ω_0), ..., cos(t ω_{half-1})]
             (cos first when flip_sin_to_cos; one zero appended when D is odd)
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
