"""How good are generated butterflies? KID in a small classifier's feature space, and coverage.

The nearest-image RMS distance rewards a model that memorises one training image and says nothing
about diversity. FID and KID (Heusel et al. 2017; Bińkowski et al. 2018) compare *distributions*:
embed many samples and many real images with a network, and measure how far apart the two clouds
of features are. Their usual network, Inception-v3, is 100 MB, trained on ImageNet photos and
needs a download. Our butterflies come with labels (9 colours × 5 patterns = 45 classes), so a
tiny CNN trained on those labels (`ButterflyClassifier`, shipped in data/models/
butterfly-classifier, trained by scripts/train_butterfly_classifier.py) gives features that see
exactly what differs between butterflies: wing colour, pattern, shape, sharpness.

Notation:

    φ(x)         the classifier's 128 penultimate features of image x (resized to 32 px),
                 standardised by their mean and std over real training images
    X, Y         features of m generated and m real butterflies (real: the test split)
    k(x, y)      (x·y / d + 1)³, the cubic polynomial kernel, d = 128 (Bińkowski et al., §3)
    KID          unbiased MMD²(X, Y) = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j)
                                        - 2 mean_{i,j} k(x_i, y_j)
                 averaged over random subsets of m = 100; 0 when both come from one
                 distribution (an unbiased estimate, so it can dip slightly below 0)
    coverage     share of the 45 classes that at least one confidently classified sample
                 (softmax ≥ 0.5) falls in: a model that draws only red butterflies covers 5/45
    confident    share of the samples classified with softmax ≥ 0.5 (recognisable at all)

Validation (tests/test_sample_quality.py; the numbers in benchmarks/sample_quality.md): real
against real sits at the floor; noise, blurred blobs, one memorised image and a single colour score
far away; the shipped text-to-image models score close to real, and the GPU-trained 32 px DDPM
in between (its tinted backgrounds and uneven classes are real faults the measure sees).

References: Bińkowski et al. 2018, "Demystifying MMD GANs" (KID, its kernel and estimator);
Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule" (FID); Naeem et al. 2020,
"Reliable Fidelity and Diversity Metrics" (coverage).
"""

import json
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ddlearn.data import shipped_model
from ddlearn.data.butterflies import NUM_CLASSES, ButterflyDataset
from ddlearn.data.transforms import to_tensor

CLASSIFIER_SIZE = 32  # pixels: every image is resized to this before the classifier sees it
CONFIDENT = 0.5


class ButterflyClassifier(nn.Module):
    """Three conv stages (32 → 16 → 8 → 4 px), global average pooling, one linear layer."""

    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.config = dict(width=width, feature_dim=feature_dim, num_classes=num_classes)

        def stage(c_in, c_out):  # 3×3 conv, GroupNorm, SiLU, then halve the resolution
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
                    nn.AvgPool2d(2)]

        self.body = nn.Sequential(*stage(3, width), *stage(width, 2 * width),
                                  *stage(2 * width, 4 * width),
                                  nn.Conv2d(4 * width, feature_dim, 3, padding=1), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)
        # per-feature mean and std over real training images (set after training), so that the
        # kernel's x·y / d is a correlation of order 1 whatever scale the features came out at
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 32, 32) in [-1, 1] -> the pooled activations: (N, feature_dim)."""
        return self.body(x).mean((2, 3))  # (N, D, 4, 4) -> (N, D)

    def standardised(self, features: torch.Tensor) -> torch.Tensor:
        """φ(x) = (features - mean) / std, the statistics of real training images."""
        return (features - self.feature_mean) / self.feature_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # class logits (N, num_classes)


@lru_cache(maxsize=1)
def load_classifier() -> ButterflyClassifier:
    """The shipped classifier (data/models/butterfly-classifier), in eval mode."""
    folder = shipped_model("butterfly-classifier")
    model = ButterflyClassifier(**json.loads((folder / "config.json").read_text()))
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval().requires_grad_(False)


def as_batch(images) -> torch.Tensor:
    """A (N, 3, H, W) tensor in [-1, 1], or a list of PIL images / uint8 arrays -> the tensor."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W) in [-1, 1], got "
                             f"{tuple(images.shape)}")
        return images.float()
    return torch.stack([to_tensor(np.asarray(im.convert("RGB") if hasattr(im, "convert") else im))
                        for im in images])


def resize(x: torch.Tensor) -> torch.Tensor:
    """Any size -> 32 px (bilinear; antialiased when shrinking), so 16 and 64 px models compare."""
    if x.shape[-1] == CLASSIFIER_SIZE and x.shape[-2] == CLASSIFIER_SIZE:
        return x
    return F.interpolate(x, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode="bilinear",
                         antialias=x.shape[-1] > CLASSIFIER_SIZE, align_corners=False)


@torch.no_grad()
def embed(images, batch_size: int = 256) -> tuple:
    """Images -> (features φ (N, 128) float64, class probabilities (N, 45))."""
    model, x = load_classifier(), resize(as_batch(images).clamp(-1, 1))
    features = torch.cat([model.features(chunk) for chunk in x.split(batch_size)])
    return model.standardised(features).double(), model.head(features).softmax(-1)


def real_butterflies(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """n test-split butterflies (never trained on) at `size` px, in [-1, 1]: (n, 3, size, size)."""
    test = ButterflyDataset(n, size, seed=seed, split="test")
    return torch.stack([test[i]["images"] for i in range(n)])


@lru_cache(maxsize=8)
def _real_features(n: int, size: int, seed: int) -> torch.Tensor:
    return embed(real_butterflies(n, size, seed))[0]


def kid(x: torch.Tensor, y: torch.Tensor, subset_size: int = 100, subsets: int = 100,
        seed: int = 0) -> tuple:
    """Unbiased MMD² with the cubic kernel, averaged over `subsets` random subsets of
    `subset_size` from each side (Bińkowski et al. 2018, eq. 4 and §4). -> (mean, std)."""
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 images on each side, got {len(x)} and {len(y)}")
    d = x.shape[1]
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        a = x[torch.randperm(len(x), generator=g)[:m]]  # (m, d)
        b = y[torch.randperm(len(y), generator=g)[:m]]
        k_aa, k_bb, k_ab = [(p @ q.T / d + 1) ** 3 for p, q in ((a, a), (b, b), (a, b))]
        within = (k_aa.sum() - k_aa.trace() + k_bb.sum() - k_bb.trace()) / (m * (m - 1))
        values.append((within - 2 * k_ab.mean()).item())
    return float(np.mean(values)), float(np.std(values))


def coverage(probabilities: torch.Tensor) -> tuple:
    """(share of the 45 classes with ≥ 1 confident sample, share of confident samples)."""
    confidence, label = probabilities.max(-1)
    confident = confidence >= CONFIDENT
    share = label[confident].unique().numel() / probabilities.shape[1]
    return share, confident.float().mean().item()


def butterfly_quality(images, n_real: int = 1000, real_seed: int = 0, subset_size: int = 100,
                      subsets: int = 100) -> dict:
    """Score generated butterflies against `n_real` real ones drawn at the same size.

    `images`: (N, 3, H, W) in [-1, 1] (the training convention), or a pipeline's PIL images.
    Returns {"kid", "kid_std" (over subsets), "coverage", "confident", "n"}: lower KID is better,
    real against real scores ≈ 0; coverage and confident are shares in [0, 1]."""
    x = as_batch(images)
    features, probabilities = embed(x)
    real = _real_features(n_real, x.shape[-1], real_seed)
    kid_mean, kid_std = kid(features, real, subset_size, subsets)
    share, confident = coverage(probabilities)
    return dict(kid=kid_mean, kid_std=kid_std, coverage=share, confident=confident, n=len(x))
