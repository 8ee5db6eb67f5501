"""Does a generated butterfly show the concept? DreamBooth's subject fidelity, in the butterfly
classifier's features; and the hooks that tell whether fine-tuning made the model forget.

DreamBooth (Ruiz et al. 2023, Sec. 4.1) scores subject fidelity by DINO and CLIP-I: the mean
pairwise cosine similarity between the embeddings of generated and of real subject images. Our
embedding is the one KID uses (ddlearn/sample_quality.py): the 128 penultimate features of the
shipped butterfly classifier, which sees exactly what tells butterflies apart (wing colour,
pattern, shape). The real subject images are chapter 06's 8 instance images
(`concept_images(8)`, ddlearn/data/butterflies/concept.py).

Notation:

    φ(x)            the classifier's standardised penultimate features of image x
                    (`sample_quality.embed`)
    r_1 .. r_M      real images of the concept: by default the M = 8 instance images
    s(x)            (1/M) Σ_j cos(φ(x), φ(r_j)): how much one image looks like the concept
    similarity      (1/N) Σ_i s(x_i) over N images: DreamBooth's DINO score with φ for DINO
    fidelity        (1/N) Σ_i [s(x_i) ≥ τ]: the share of images that show the concept
    τ               THRESHOLD = 0.70

Why a threshold. s is a cosine in [-1, 1] whose scale says little by itself: real butterflies of
the 45 training classes, which share body, background and pose with the concept, reach s = 0.67
at most (blue wings with an orange rim), held-out concept images score 0.87-0.96, and 0.72-0.95
after a round trip through the shipped VAE (a fine-tuned model's samples are decoded by it and
can be no sharper). A share reads at once ("9 of 10 samples show the sks butterfly") and moves
from 0 to 1 as a model learns the concept. τ = 0.70 sits in that gap: its midpoint is 0.70 on the
validation data of seed 0 and 0.68 on seed 1 (each: 200 held-out concept images and 45 classes x
40 real butterflies, raw and round-tripped; benchmarks/concept_fidelity.md).

Prior drift (Ruiz et al., Sec. 3.3: fine-tuning on one subject can make the class prompt forget
the class): `concept_fidelity` of samples of CLASS_PROMPT ("a butterfly") should stay near 0,
and `prior_colour_accuracy(samples of "a red butterfly", "red")` near the base model's.

References: Ruiz et al. 2023, "DreamBooth" (Sec. 4.1: DINO and CLIP-I subject fidelity; Sec. 3.3:
language drift and prior preservation); Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers" (DINO).
"""

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ddlearn.colour_accuracy import HUE_COLOURS, dominant_colour
from ddlearn.data.butterflies.concept import concept_images
from ddlearn.sample_quality import embed

THRESHOLD = 0.70


def _unit_features(images) -> torch.Tensor:
    """Images -> φ(x) / |φ(x)|: (N, 128), so that a dot product is a cosine."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError(f"got one image of shape {images.shape}; pass a batch, image[None]")
    if hasattr(images, "convert"):
        raise ValueError("got one PIL image; pass a list of them, [image]")
    if len(images) == 0:
        raise ValueError("no images given: pass a list of PIL images, a uint8 array "
                         "(B, H, W, 3) or a tensor (B, 3, H, W) in [-1, 1]")
    return F.normalize(embed(images)[0], dim=1)


@lru_cache(maxsize=1)
def _instance_features() -> torch.Tensor:
    return _unit_features(concept_images(8))


def concept_similarities(images, references=None) -> np.ndarray:
    """s(x_i) for each image: its mean cosine similarity to the references' features. -> (N,)

    `images` and `references`: lists of PIL images, uint8 arrays (B, H, W, 3) or tensors
    (B, 3, H, W) in [-1, 1], any size (resized to 32 px). references=None: the instance images."""
    # 1. unit feature vectors of the images and of the real concept images
    x = _unit_features(images)  # (N, 128)
    r = _instance_features() if references is None else _unit_features(references)  # (M, 128)
    # 2. all N x M cosines, averaged over the references
    return (x @ r.T).mean(1).numpy()  # (N, M) -> (N,)


def concept_similarity(images, references=None) -> float:
    """Mean pairwise cosine similarity of images and references: DreamBooth's DINO score."""
    return float(concept_similarities(images, references).mean())


def concept_fidelity(images, references=None, threshold: float = THRESHOLD) -> float:
    """The share of images whose similarity s(x) to the concept is at least `threshold`."""
    return float((concept_similarities(images, references) >= threshold).mean())


def prior_colour_accuracy(images, colour: str) -> float:
    """The share of images whose wing colour (`colour_accuracy.dominant_colour`) is `colour`:
    call it on samples of f"a {colour} butterfly" before and after fine-tuning."""
    if colour not in HUE_COLOURS:
        raise ValueError(f"{colour!r} has no hue the measure can name; choose one of "
                         f"{', '.join(HUE_COLOURS)}")
    if len(images) == 0:
        raise ValueError("no images given: pass a list of PIL images or a uint8 array")
    return float(np.mean([dominant_colour(image) == colour for image in images]))
