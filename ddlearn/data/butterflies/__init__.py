"""Synthetic butterflies: a deterministic, offline stand-in for the Smithsonian butterflies dataset.

Two files, read in this order:

- drawing.py: `make_butterfly(seed, size)` -> a uint8 image and what was drawn (colour, pattern,
  shape, a class label and a caption), from a few signed distance fields in numpy.
- datasets.py: those images as a torch `ButterflyDataset` or a `datasets.Dataset`
  (`load_butterflies`), and the real huggan/smithsonian_butterflies_subset when online.

Everything is importable from here (`from ddlearn.data.butterflies import make_butterfly`) and from
`ddlearn.data`.
"""

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
           "load_butterflies", "to_hf_dataset"]
