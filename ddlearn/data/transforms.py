"""Images <-> model tensors: the two conversions every diffusion training loop and sampler needs.

A diffusion model works on tensors in [-1, 1], channels first; images are uint8 in [0, 255],
channels last. `to_tensor` is torchvision's `Compose([ToTensor(), Normalize([0.5], [0.5])])`
in one step (x / 127.5 - 1), and `to_pil` undoes it, as diffusers' pipelines do with
`(image / 2 + 0.5).clamp(0, 1)`.
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
    from PIL import Image

    if tensor.dim() == 4:
        return [to_pil(t) for t in tensor]
    array = ((tensor.detach().float().cpu() / 2 + 0.5).clamp(0, 1) * 255).round().byte()
    return Image.fromarray(array.permute(1, 2, 0).numpy())  # (C, H, W) -> (H, W, C)


def random_hflip(tensor: torch.Tensor, p: float = 0.5, generator=None) -> torch.Tensor:
    """Mirror left-right with probability p (torch's RNG, so DataLoader workers seed it)."""
    if torch.rand((), generator=generator) < p:
        return tensor.flip(-1)
    return tensor
