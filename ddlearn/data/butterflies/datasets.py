"""The synthetic butterflies as datasets, and the real Smithsonian photos they stand in for.

Chapters 4-5 use one of two views of the images `make_butterfly` draws (see drawing.py here):

- `ButterflyDataset(n, size)`: a torch Dataset of ready tensors in [-1, 1] with label and caption,
  drawn on access: the fast path for training loops.
- `load_butterflies(source, n, size)`: a `datasets.Dataset` with `image`, `caption` and `label`
  columns, like huggan/smithsonian_butterflies_subset, so the same preprocessing serves both.
  `source="smithsonian"` downloads the real photos; offline it fails at once, naming the
  synthetic source instead.

Item i of a split is drawn from seed * 1_000_000 + the split's offset + i: any item can be redrawn
from its index alone, and a seed's "train" and "test" images never overlap.

References: huggan/smithsonian_butterflies_subset on the Hugging Face Hub; diffusers' "Train a
diffusion model" tutorial (the training loop these feed).
"""

import os
import socket
from urllib.parse import urlparse

import torch

from ddlearn.data.butterflies.drawing import class_names, make_butterfly
from ddlearn.data.transforms import random_hflip, to_tensor

SOURCES = ("synthetic", "smithsonian")
SPLIT_OFFSETS = {"train": 0, "test": 900_000}  # image seeds: seed * 1_000_000 + offset + index


def _first_seed(seed: int, split: str, n: int) -> int:
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"split must be one of {list(SPLIT_OFFSETS)}, got {split!r}")
    if not 0 < n <= 900_000:
        raise ValueError(f"n must be between 1 and 900000 images, got {n}")
    return seed * 1_000_000 + SPLIT_OFFSETS[split]


class ButterflyDataset(torch.utils.data.Dataset):
    """n synthetic butterflies as {"images": (3, size, size) in [-1, 1], "label", "caption"}.

    Images are drawn on access (deterministic per index). `transform`, if given, receives the PIL
    image instead (like a torchvision pipeline); `flip=True` mirrors half the images at random.
    """

    def __init__(self, n: int, size: int = 32, seed: int = 0, split: str = "train",
                 transform=None, flip: bool = False):
        self.n, self.size, self.transform, self.flip = n, size, transform, flip
        self.first_seed = _first_seed(seed, split, n)

    def __len__(self):
        return self.n

    def __getitem__(self, index: int) -> dict:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} butterflies")
        image, attrs = make_butterfly(self.first_seed + index % self.n, self.size)
        if self.transform is not None:
            from PIL import Image

            images = self.transform(Image.fromarray(image))
        else:
            images = random_hflip(to_tensor(image)) if self.flip else to_tensor(image)
        return {"images": images, "label": attrs["label"], "caption": attrs["caption"]}


def to_hf_dataset(n: int = 1000, size: int = 32, seed: int = 0, split: str = "train"):
    """A `datasets.Dataset` with columns image (PIL), caption, label (ClassLabel)."""
    import datasets  # imported late: only this function needs it
    from PIL import Image

    first = _first_seed(seed, split, n)
    rows = [make_butterfly(first + i, size) for i in range(n)]
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=class_names())})
    return datasets.Dataset.from_dict({"image": [Image.fromarray(im) for im, _ in rows],
                                       "caption": [a["caption"] for _, a in rows],
                                       "label": [a["label"] for _, a in rows]}, features=features)


def load_butterflies(source: str = "synthetic", n: int = 1000, size: int = 32, seed: int = 0,
                     split: str = "train"):
    """Butterflies as a `datasets.Dataset` with an `image` column, from either source.

    "synthetic" (default, offline): `to_hf_dataset(n, size, seed, split)`.
    "smithsonian": the first n rows of huggan/smithsonian_butterflies_subset (1000 photos, only a
    "train" split, full size: resize in your transform), downloaded by `datasets` when online.
    """
    if source == "synthetic":
        return to_hf_dataset(n, size, seed, split)
    if source != "smithsonian":
        raise ValueError(f"unknown source {source!r}; use one of {list(SOURCES)}")
    from ddlearn.hub import HubOfflineError

    hint = ('cannot load huggan/smithsonian_butterflies_subset ({}). Use the offline synthetic '
            'butterflies instead: load_butterflies(source="synthetic")')
    flags = [f for f in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
             if os.environ.get(f, "0").lower() in ("1", "true", "yes", "on")]
    if flags:
        raise HubOfflineError(hint.format(f"{flags[0]}=1 is set"))
    if not _hub_reachable():  # fail now rather than after the hub client's ~30 s of retries
        raise HubOfflineError(hint.format("the Hub is unreachable"))
    import datasets

    try:
        data = datasets.load_dataset("huggan/smithsonian_butterflies_subset", split=split)
    except (ConnectionError, OSError, TimeoutError) as e:
        raise HubOfflineError(hint.format(f"{type(e).__name__}: {str(e)[:120]}")) from None
    return data.select(range(min(n, len(data))))


def _hub_reachable(timeout: float = 2.0) -> bool:
    """Can we open a TCP connection to the Hub? (Behind a proxy we cannot tell: assume yes.)"""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
