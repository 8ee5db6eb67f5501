"""Stable Diffusion's variational autoencoder: images (B, 3, H, W) <-> latents (B, 4, H/8, W/8).

Mirrors `diffusers.AutoencoderKL` with its `Encoder`, `Decoder`, `UpDecoderBlock2D` and
`DiagonalGaussianDistribution`: same config keys and parameter names, so the SD 1.5 / 2.1 `vae/`
folders load key for key. diffusers' `DownEncoderBlock2D` is the UNet's `DownBlock2D` without a time
embedding, so the encoder builds that. Each of the len(block_out_channels) - 1 downsamplings halves
H and W (SD's 4 levels: /8).

    encode: x -> Encoder -> quant_conv -> [mu, log sigma^2]: the posterior q(z|x) = N(mu, sigma^2)
    decode: z -> post_quant_conv -> Decoder -> x_hat
Diffusion runs on z * scaling_factor (0.18215 for SD), which gives latents about unit variance;
SD3's VAE also centres them first, (z - shift_factor) * scaling_factor (its pipeline does that).

Notation
    x      (B, 3, H, W)            image in [-1, 1]
    mu, log sigma^2  (B, L, h, w)  posterior parameters, h = H / 2^(levels-1), L = latent_channels
    z      = mu + sigma * eps, eps ~ N(0, I)   (reparameterisation trick, Kingma & Welling eq. 10)
    KL(q || N(0, I)) = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2)   (Kingma & Welling, Appendix B)

References
    Kingma & Welling 2014, "Auto-Encoding Variational Bayes", Sec. 2.4 and Appendix B.
    Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", Sec. 3.1
        (perceptual compression) and Appendix G ("rescale the latent by a component-wise scale").
"""

from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from ddlearn.config import register_to_config
from ddlearn.models.modeling import ModelMixin
from ddlearn.models.resnet import ResnetBlock2D, Upsample2D
from ddlearn.models.unet_2d_blocks import DownBlock2D, UNetMidBlock2D
from ddlearn.noise import randn_tensor


class DiagonalGaussianDistribution:
    """q(z|x) = N(mu, diag(sigma^2)) from the encoder's 2L channels: first L mu, last L log var."""

    def __init__(self, parameters: torch.Tensor):
        self.parameters = parameters
        self.mean, logvar = parameters.chunk(2, dim=1)  # (B, 2L, h, w) -> 2 x (B, L, h, w)
        self.logvar = logvar.clamp(-30.0, 20.0)  # as diffusers: keeps exp() finite
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """z = mu + sigma * eps (reparameterisation); eps drawn as diffusers draws it (one
        generator, or a list with one per image)."""
        eps = randn_tensor(self.mean.shape, generator, device=self.mean.device,
                           dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per batch element, summed over latent pixels and channels."""
        return 0.5 * torch.sum(self.mean ** 2 + self.var - 1.0 - self.logvar, dim=[1, 2, 3])


class AutoencoderKLOutput(NamedTuple):
    latent_dist: DiagonalGaussianDistribution


class DecoderOutput(NamedTuple):
    sample: torch.Tensor  # (B, out_channels, H, W), roughly in [-1, 1]


class UpDecoderBlock2D(nn.Module):
    """num_layers ResNets (no time embedding, no skips), then an optional x2."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int,
                 add_upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels=None,
                          groups=groups) for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([
            Upsample2D(out_channels, use_conv=True)]) if add_upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


def mid_block(channels: int, groups: int) -> UNetMidBlock2D:
    """ResNet -> single-head self-attention over all pixels -> ResNet, at the lowest resolution."""
    return UNetMidBlock2D(channels, temb_channels=None, resnet_eps=1e-6, resnet_groups=groups,
                          attention_head_dim=channels)


class Encoder(nn.Module):
    """x (B, C, H, W) -> conv_in -> down blocks -> mid block -> GroupNorm, SiLU -> conv_out (2L)."""

    def __init__(self, in_channels: int, out_channels: int, block_out_channels: Tuple[int, ...],
                 layers_per_block: int, norm_num_groups: int):
        super().__init__()
        n = len(block_out_channels)
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList([
            # diffusers' DownEncoderBlock2D; padding=0: the asymmetric (0, 1, 0, 1) pad before /2
            DownBlock2D(block_out_channels[max(i - 1, 0)], block_out_channels[i],
                        temb_channels=None, num_layers=layers_per_block, add_downsample=i < n - 1,
                        resnet_groups=norm_num_groups, downsample_padding=0)
            for i in range(n)])
        self.mid_block = mid_block(block_out_channels[-1], norm_num_groups)
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[-1], 2 * out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x, _ = block(x)  # (B, C, H, W) -> (B, C', H/2, W/2); the skips are a UNet's, unused
        x = self.mid_block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class Decoder(nn.Module):
    """z (B, L, h, w) -> conv_in -> mid block -> up blocks (one more ResNet each) -> conv_out."""

    def __init__(self, in_channels: int, out_channels: int, block_out_channels: Tuple[int, ...],
                 layers_per_block: int, norm_num_groups: int):
        super().__init__()
        n, reversed_channels = len(block_out_channels), block_out_channels[::-1]
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[-1], kernel_size=3, padding=1)
        self.mid_block = mid_block(block_out_channels[-1], norm_num_groups)
        self.up_blocks = nn.ModuleList([
            UpDecoderBlock2D(reversed_channels[max(i - 1, 0)], reversed_channels[i],
                             layers_per_block + 1, norm_num_groups, add_upsample=i < n - 1)
            for i in range(n)])
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class AutoencoderKL(ModelMixin):
    # the SD 1.x / 2.x value of every diffusers key whose other values ddlearn leaves out
    only_supported = {"latents_mean": None, "latents_std": None, "mid_block_add_attention": True,
                      "act_fn": {"silu", "swish"},
                      "down_block_types": "DownEncoderBlock2D",
                      "up_block_types": "UpDecoderBlock2D"}

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: Tuple[str, ...] = ("DownEncoderBlock2D",),
        up_block_types: Tuple[str, ...] = ("UpDecoderBlock2D",),
        block_out_channels: Tuple[int, ...] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: Union[int, Tuple[int, int]] = 32,
        scaling_factor: float = 0.18215,
        shift_factor: Optional[float] = None,
        force_upcast: bool = True,  # a float16 hint for pipelines; ddlearn computes in vae.dtype
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
    ):
        super().__init__()  # refuses the `only_supported` keys at other values
        n = len(block_out_channels)
        if not len(down_block_types) == len(up_block_types) == n:
            raise ValueError(f"AutoencoderKL needs one 'DownEncoderBlock2D' and one "
                             f"'UpDecoderBlock2D' per block_out_channels ({n}); got "
                             f"{down_block_types} / {up_block_types}")
        L = latent_channels
        self.encoder = Encoder(in_channels, L, block_out_channels, layers_per_block,
                               norm_num_groups)
        self.decoder = Decoder(L, out_channels, block_out_channels, layers_per_block,
                               norm_num_groups)
        self.quant_conv = nn.Conv2d(2 * L, 2 * L, kernel_size=1) if use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(L, L, kernel_size=1) if use_post_quant_conv else None

    @property
    def downscale_factor(self) -> int:
        """How much smaller the latent is than the image: 2^(levels - 1), 8 for SD."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput:
        """Image in [-1, 1] (B, in_channels, H, W) -> posterior q(z|x) over (B, L, H/f, W/f)."""
        f = self.downscale_factor
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[-1] % f or \
                x.shape[-2] % f:
            raise ValueError(f"encode expects (B, {self.config.in_channels}, H, W) with H and W "
                             f"multiples of {f}, got shape {tuple(x.shape)}")
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        posterior = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None) -> DecoderOutput:
        """Latent (B, L, h, w), *unscaled*, -> image (B, out_channels, h*f, w*f), about [-1, 1]."""
        if z.ndim != 4 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"decode expects latents (B, {self.config.latent_channels}, h, w) "
                             f"(latent_channels), got shape {tuple(z.shape)}")
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        image = self.decoder(z)
        return DecoderOutput(image) if return_dict else (image,)

    def forward(self, sample: torch.Tensor, sample_posterior: bool = False,
                return_dict: bool = True,
                generator: Optional[torch.Generator] = None) -> DecoderOutput:
        """Encode, take the posterior's mode (or a sample), decode: diffusers' argument order."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z, return_dict=return_dict)
