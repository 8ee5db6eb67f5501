"""Chapter 06's concept: one butterfly the shipped models never saw, for DreamBooth, LoRA and
textual inversion to teach them under the prompt "a sks butterfly".

DreamBooth (Ruiz et al. 2023) fine-tunes a text-to-image model on 3-5 photos of one subject, bound
to a rare token ("a [V] dog"). Our models were trained on every combination of 9 colours x 5
patterns x 4 shapes (drawing.py), so the subject has to step outside them. The sks butterfly has

    teal wings     (0.05, 0.50, 0.50): hue 0.50, halfway between green (0.36) and blue (0.62),
                   a hue none of the 9 COLOURS has
    an orange rim  the "edges" pattern, which the models know, in orange
    round wings    one fixed shape

and the poses, brightness and background of `make_butterfly(seed)`: a subject photographed again
and again. Why this one (numbers in benchmarks/concept_fidelity.md):

1. it is plain to see at 32 px, and the nearest training butterflies (blue or green wings with an
   orange rim) look different beside it;
2. the classifier's features (ddlearn/concept_fidelity.py) put every held-out image of it above
   every training butterfly;
3. a model can learn it: fine-tuning (DreamBooth, LoRA, textual inversion) leaves the VAE frozen,
   so only what the VAE can decode can be learned. The shipped VAE decodes teal (mottled towards
   blue and green) and the rim; new *patterns* (a checkerboard, wide bands, a fore/hind-wing split)
   come back from its round trip as mush or as the training patterns, so no UNet could draw them.

    image, attrs = make_concept_butterfly(3)     # uint8 (32, 32, 3), attrs["caption"]: the prompt
    instance = concept_images(8)                 # the 8 PIL images to fine-tune on
    held_out = concept_images(64, split="test")  # other seeds, for validation

References: Ruiz et al. 2023, "DreamBooth: Fine Tuning Text-to-Image Diffusion Models for
Subject-Driven Generation" (Sec. 3.3: rare-token identifiers, the class prompt, prior
preservation); Gal et al. 2023, "An Image is Worth One Word" (textual inversion, 3-5 images).
"""

from ddlearn.data.butterflies.datasets import _first_seed
from ddlearn.data.butterflies.drawing import _pose, _random_numbers, render

CONCEPT_PROMPT = "a sks butterfly"  # DreamBooth's "a [V] [class noun]"; "sks" is the usual [V]
CLASS_PROMPT = "a butterfly"  # the class the concept belongs to (prior preservation prompts it)
CONCEPT_RGB = (0.05, 0.50, 0.50)  # teal; every channel >= 0.05 so the brightness jitter stays > 0
CONCEPT = dict(colour=CONCEPT_RGB, pattern="edges", pattern_colour="orange", shape="round")
CONCEPT_DESCRIPTION = "a teal butterfly with an orange rim and round wings"


def posed_butterfly(seed: int, colour, pattern: str, pattern_colour, shape: str, size: int = 32,
                    jitter: bool = True):
    """Any wings in the pose, brightness and background that `make_butterfly(seed)` draws its
    own butterfly in: a uint8 image (size, size, 3). Colours are names in COLOURS or RGB."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8 pixels, got {size!r}")
    r = _random_numbers(seed)
    scale, angle, offset = _pose(r, jitter)
    return render(colour, pattern, pattern_colour, shape, size, scale, angle, offset, r[8:])


def make_concept_butterfly(seed: int, size: int = 32, jitter: bool = True):
    """Seed -> (uint8 image (size, size, 3) of the sks butterfly, attributes dict).

    The attributes hold the caption CONCEPT_PROMPT, the description in words, what was drawn and
    the pose; there is no class label (the concept is none of the 45 classes)."""
    image = posed_butterfly(seed, size=size, jitter=jitter, **CONCEPT)
    scale, angle, offset = _pose(_random_numbers(seed), jitter)
    return image, dict(seed=seed, caption=CONCEPT_PROMPT, description=CONCEPT_DESCRIPTION,
                       colour="teal", colour_rgb=CONCEPT_RGB, pattern=CONCEPT["pattern"],
                       pattern_colour=CONCEPT["pattern_colour"], shape=CONCEPT["shape"],
                       scale=scale, angle=angle, offset=offset)


def concept_images(n: int = 8, size: int = 32, seed: int = 0, split: str = "train") -> list:
    """n PIL images of the sks butterfly. split="train": the instance images to fine-tune on;
    split="test": others, never trained on, to validate with. Image i is drawn from seed
    seed * 1_000_000 + the split's offset + i, as ButterflyDataset numbers its items."""
    from PIL import Image

    first = _first_seed(seed, split, n)
    return [Image.fromarray(make_concept_butterfly(first + i, size)[0]) for i in range(n)]
