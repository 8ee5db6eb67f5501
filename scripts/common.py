"""What the training scripts share: device choice, rendering the synthetic data set, accelerate."""

import multiprocessing
import time

import numpy as np
import torch

from ddlearn.data.butterflies.drawing import make_butterfly


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.device(name)


def _render(args):
    seed, size = args
    image, attrs = make_butterfly(seed, size)
    return image, attrs["caption"]


def render_butterflies(n: int, size: int, seed: int = 0, workers: int = 0):
    """n synthetic butterflies -> (images (n, 3, size, size) in [-1, 1] float32, captions)."""
    start = time.perf_counter()
    jobs = [(seed * 1_000_000 + i, size) for i in range(n)]  # the seeds ButterflyDataset uses
    if workers > 1:
        with multiprocessing.Pool(workers) as pool:
            rows = pool.map(_render, jobs, chunksize=256)
    else:
        rows = [_render(job) for job in jobs]
    images = torch.from_numpy(np.stack([im for im, _ in rows])).permute(0, 3, 1, 2)  # NHWC->NCHW
    print(f"rendered {n} butterflies at {size} px in {time.perf_counter() - start:.1f} s")
    return images.float() / 127.5 - 1, [caption for _, caption in rows]


def make_accelerator(use_accelerate: bool):
    """An `accelerate.Accelerator` for multi-GPU runs (`accelerate launch scripts/...`), or None."""
    if not use_accelerate:
        return None
    from accelerate import Accelerator

    return Accelerator()
