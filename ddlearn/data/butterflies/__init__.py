"""Synthetic butterflies: a deterministic, offline stand-in for the Smithsonian butterflies dataset.

Three files, read in this order:

- drawing.py: `make_butterfly(seed, size)` -> a uint8 image and what was drawn (colour, pattern,
  shape, a class label and a caption), from a few signed distance fields in numpy.
- datasets.py: those images as a torch `ButterflyDataset` or a `datasets.Dataset`
  (`load_butterflies`), and the real huggan/smithsonian_butterflies_subset when online.
- concept.py: chapter 06's "a sks butterfly", one butterfly outside all 45 classes
  (`make_concept_butterfly`, `concept_images`), for DreamBooth, LoRA and textual inversion.

Everything is importable from here (`from ddlearn.data.butterflies import make_butterfly`) and from
`ddlearn.data`.
"""

from ddlearn.data.butterflies.concept import (
    CLASS_PROMPT,
    CONCEPT,
    CONCEPT_DESCRIPTION,
    CONCEPT_PROMPT,
    CONCEPT_RGB,
    concept_images,
    make_concept_butterfly,
    posed_butterfly,
)
from ddlearn.data.butterflies.datasets import (
    SOURCES,
    SPLIT_OFFSETS,
    ButterflyDataset,
    load_butterflies,
    to_hf_dataset,
)
from ddlearn.data.butterflies.drawing import (
    BACKGROUND_RGB,
    BODY_RGB,
    COLOUR_NAMES,
    COLOURS,
    NUM_CLASSES,
    PATTERNS,
    SHAPE_NAMES,
    SHAPES,
    caption_for,
    caption_vocabulary,
    class_names,
    make_butterfly,
    render,
)

__all__ = ["BACKGROUND_RGB", "BODY_RGB", "COLOUR_NAMES", "COLOURS", "NUM_CLASSES", "PATTERNS",
           "SHAPE_NAMES", "SHAPES", "caption_for", "caption_vocabulary", "class_names",
           "make_butterfly", "render", "SOURCES", "SPLIT_OFFSETS", "ButterflyDataset",
           "load_butterflies", "to_hf_dataset", "CLASS_PROMPT", "CONCEPT", "CONCEPT_DESCRIPTION",
           "CONCEPT_PROMPT", "CONCEPT_RGB", "concept_images", "make_concept_butterfly",
           "posed_butterfly"]
