"""Images <-> model tensors: the conversions every training loop, sampler and figure needs.

A diffusion model works on tensors in [-1, 1], channels first; images are uint8 in [0, 255],
channels last. This is the one place ddlearn converts between them (pipelines, the VAE wrapper
and `viz` use it):

    uint8 (H, W, C)  --to_tensor-->  (C, H, W) in [-1, 1]  --to_pil-->  PIL
    (B, C, H, W) in [-1, 1]  --denormalize-->  [0, 1]  --pt_to_numpy-->  (B, H, W, C)
        --numpy_to_pil-->  PIL images                       (diffusers' VaeImageProcessor names)

`to_tensor` is torchvision's `Compose([ToTensor(), Normalize([0.5], [0.5])])` in one step
(x / 127.5 - 1); `denormalize` undoes it as diffusers' pipelines do, `(x / 2 + 0.5).clamp(0, 1)`.
"""

import numpy as np
import torch


def to_tensor(image) -> torch.Tensor:
    """uint8 image (H, W, 3), numpy or PIL -> float tensor (3, H, W) in [-1, 1]."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise ValueError(f"expected a uint8 image of shape (H, W, C), got {array.dtype} "
                         f"{array.shape}; convert with np.asarray(pil_image.convert('RGB'))")
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1  # (H,W,C)->(C,H,W)


def to_pil(tensor: torch.Tensor):
    """Tensor (3, H, W) or (B, 3, H, W) in [-1, 1] -> a PIL image or a list of them."""
    images = numpy_to_pil(pt_to_numpy(denormalize(tensor if tensor.dim() == 4 else tensor[None])))
    return images if tensor.dim() == 4 else images[0]


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clipped: (x / 2 + 0.5).clamp(0, 1)."""
    return (x / 2 + 0.5).clamp(0, 1)


def pt_to_numpy(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) tensor -> (B, H, W, C) float32 array."""
    return x.detach().cpu().permute(0, 2, 3, 1).float().numpy()


def numpy_to_pil(images: np.ndarray) -> list:
    """(B, H, W, C) floats in [0, 1] (or uint8) -> list of PIL images, greyscale when C = 1."""
    from PIL import Image

    images = images[None] if images.ndim == 3 else images
    if images.dtype != np.uint8:
        images = (images * 255).round().astype(np.uint8)
    return [Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im) for im in images]


def random_hflip(tensor: torch.Tensor, p: float = 0.5, generator=None) -> torch.Tensor:
    """Mirror left-right with probability p (torch's RNG, so DataLoader workers seed it)."""
    if torch.rand((), generator=generator) < p:
        return tensor.flip(-1)
    return tensor
