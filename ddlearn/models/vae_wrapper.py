"""Images in, scaled latents out, and back: the conversions every latent-diffusion chapter needs.

    vae_wrapper = VAEWrapper(vae)
    latents = vae_wrapper.encode(pil_images)          # (B, 4, H/8, W/8), already x scaling_factor
    images = vae_wrapper.decode(latents)              # list of PIL images

No diffusers class matches it one to one: it bundles what `VaeImageProcessor` and the Stable
Diffusion pipelines do around `AutoencoderKL`:
    [0, 255] PIL  <->  [0, 1] tensor  <->  [-1, 1] VAE input  <->  z  <->  z * scaling_factor
The last step makes the latents roughly unit variance, the scale the diffusion schedule assumes
(Rombach et al. 2022, Appendix G); SD3's VAE also centres them, (z - shift_factor) *
scaling_factor, as its pipeline does. Runs without gradients: to backpropagate through the VAE, call
`vae.encode` / `vae.decode` yourself.
"""

from typing import List, Optional, Union

import numpy as np
import torch
from PIL import Image

from ddlearn.data.transforms import denormalize, numpy_to_pil, pt_to_numpy
from ddlearn.models.vae import AutoencoderKL

ImageInput = Union[Image.Image, List[Image.Image], np.ndarray, torch.Tensor]


class VAEWrapper:
    def __init__(self, vae: AutoencoderKL):
        self.vae = vae

    @property
    def scaling_factor(self) -> float:
        return self.vae.config.scaling_factor

    @property
    def shift_factor(self) -> float:
        return self.vae.config.shift_factor or 0.0  # None (SD 1.x / 2.x): no shift

    @torch.no_grad()
    def encode(self, images: ImageInput, generator: Optional[torch.Generator] = None):
        """Images -> scaled latents: the posterior mean, or a sample when a generator is given.

        Accepts a PIL image or a list of them; a numpy array (H, W, C) or (B, H, W, C) in [0, 1]
        (uint8 in [0, 255] also); a tensor (C, H, W) or (B, C, H, W) in [0, 1].
        """
        x = self.to_tensor(images)  # (B, C, H, W) in [0, 1]
        x = x.to(device=self.vae.device, dtype=self.vae.dtype) * 2 - 1  # [0, 1] -> [-1, 1]
        posterior = self.vae.encode(x).latent_dist
        z = posterior.mode() if generator is None else posterior.sample(generator)
        return (z - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, output_type: str = "pil"):
        """Scaled latents (B, L, h, w) -> a list of PIL images, or with output_type="pt" a
        (B, C, H, W) tensor in [0, 1], or with "np" a (B, H, W, C) float array in [0, 1]."""
        if output_type not in ("pil", "pt", "np"):
            raise ValueError(f"output_type should be 'pil', 'pt' or 'np', got {output_type!r}")
        if latents.ndim == 3:
            latents = latents[None]
        z = latents.to(device=self.vae.device, dtype=self.vae.dtype) / self.scaling_factor \
            + self.shift_factor
        x = self.vae.decode(z).sample
        x = denormalize(x).float().cpu()  # [-1, 1] -> [0, 1]
        if output_type == "pt":
            return x
        array = pt_to_numpy(x)  # (B, C, H, W) -> (B, H, W, C)
        return array if output_type == "np" else numpy_to_pil(array)

    def to_tensor(self, images: ImageInput) -> torch.Tensor:
        """Any accepted image input -> float (B, C, H, W) in [0, 1], checked against the VAE."""
        if isinstance(images, Image.Image):
            images = [images]
        if isinstance(images, (list, tuple)):
            if not images or not all(isinstance(im, Image.Image) for im in images):
                raise ValueError("a list given to encode() should hold PIL images only")
            mode = "RGB" if self.vae.config.in_channels == 3 else None
            images = np.stack([np.asarray(im.convert(mode) if mode else im) for im in images])
        if isinstance(images, np.ndarray):
            array = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
            if array.ndim == 2:  # a single grey image: (H, W) -> (H, W, 1)
                array = array[..., None]
            array = array[None] if array.ndim == 3 else array
            images = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"encode() takes PIL image(s), a numpy array or a tensor, got "
                             f"{type(images).__name__}")
        x = images[None] if images.ndim == 3 else images
        return self.check(x)

    def check(self, x: torch.Tensor) -> torch.Tensor:
        channels, f = self.vae.config.in_channels, self.vae.downscale_factor
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"images should have {channels} channels (the VAE's in_channels): a "
                             f"tensor (B, {channels}, H, W) or an array (B, H, W, {channels}); got "
                             f"shape {tuple(x.shape)}")
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"image height and width must be multiples of {f} (the VAE halves "
                             f"them {f.bit_length() - 1} times); got {tuple(x.shape[-2:])}: "
                             f"resize or crop first")
        if x.min() < -1e-3 or x.max() > 1 + 1e-3:
            raise ValueError(f"image values should be in [0, 1], got [{x.min():.3g}, "
                             f"{x.max():.3g}]; divide uint8 images by 255 (or (x + 1) / 2 for "
                             f"[-1, 1] images)")
        return x

