"""Checkers for chapter 01 (using a pipeline): your function against what ddlearn's pipeline does.

    from ddlearn.checks import ch01
    ch01.check_postprocess(postprocess)        # (B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8
    ch01.check_seeded_noise(seeded_noise)      # x_T with image i drawn from its own seed
    ch01.check_params_per_block(params_per_block)  # where a UNet keeps its parameters

Each check runs a few seeded cases through the reference (`DiffusionPipeline.postprocess`,
`randn_tensor` with a list of generators, `Module.parameters`) and through your function. When
yours is off, it also tries the usual mistakes and names the one your numbers match.
"""

import numpy as np
import torch
from torch import nn

from ddlearn.checks import (
    ExerciseError,
    as_tensor,
    compare,
    compare_with_mistakes,
    run_check,
    tiny_unet,
)
from ddlearn.noise import randn_tensor
from ddlearn.pipelines.pipeline import DiffusionPipeline


def as_tensors(mistakes: dict) -> dict:
    return {message: as_tensor(wrong) for message, wrong in mistakes.items()}


# --------------------------------------------------------------------------------------------------
# Exercise 1: from the model's [-1, 1] tensors to 8-bit images
# --------------------------------------------------------------------------------------------------
def check_postprocess(fn):
    """fn(images) -> uint8 array (B, H, W, C), for images (B, C, H, W) in (roughly) [-1, 1]."""

    def case(shape, seed):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.8
        x[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # the two ends of the range
        expected = (DiffusionPipeline().postprocess(x, "np") * 255).round().astype(np.uint8)
        channels_last = x.permute(0, 2, 3, 1).numpy()  # (B, C, H, W) -> (B, H, W, C)
        unit = np.clip(channels_last / 2 + 0.5, 0, 1)
        mistakes = {
            "`.astype(np.uint8)` truncates (254.9 becomes 254): round first, as diffusers' "
            "numpy_to_pil does with `(images * 255).round()`.": (unit * 255).astype(np.uint8),
            "[-1, 1] maps to [0, 1] with x / 2 + 0.5; (x + 1) alone gives [0, 2].":
                (np.clip(channels_last + 1, 0, 1) * 255).round().astype(np.uint8),
            "the model's images are in [-1, 1], not [0, 1]: map them with x / 2 + 0.5 first.":
                (np.clip(channels_last, 0, 1) * 255).round().astype(np.uint8),
            "values outside [-1, 1] wrapped around (a dark pixel became bright): clip to "
            "[0, 1] before scaling to 255.": _wrapped(channels_last / 2 + 0.5),
        }
        yours = fn(x.clone())
        if yours is None:
            raise ExerciseError("postprocess: your function returned None — did you forget "
                                "`return`?")
        yours = np.array(yours)
        if yours.shape == tuple(x.shape):
            raise ExerciseError("postprocess: your images are channels-first (B, C, H, W); PIL "
                                "and matplotlib want (B, H, W, C): `.permute(0, 2, 3, 1)`.")
        if yours.dtype != np.uint8:
            raise ExerciseError(f"postprocess: dtype {yours.dtype}, expected uint8 (whole "
                                f"numbers 0..255): finish with `.astype(np.uint8)`.")
        compare_with_mistakes("postprocess", as_tensor(yours), as_tensor(expected),
                              as_tensors(mistakes), "Steps: x / 2 + 0.5, clip to [0, 1], "
                              "(B, C, H, W) -> (B, H, W, C), * 255, round, uint8.")

    return run_check("postprocess", fn,
                     lambda: case((2, 3, 8, 8), seed=0),
                     lambda: case((1, 3, 5, 7), seed=1))


def _wrapped(unit: np.ndarray) -> np.ndarray:
    """What forgetting the clip gives: out-of-range values wrap around in uint8."""
    return (unit * 255).round().astype(np.int64).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Exercise 2: one seed per image
# --------------------------------------------------------------------------------------------------
def check_seeded_noise(fn):
    """fn(seeds, shape) -> (len(seeds), *shape) noise, image i drawn from its own seed."""

    def case(seeds, shape):
        expected = randn_tensor((len(seeds), *shape),
                                [torch.Generator().manual_seed(s) for s in seeds])
        one_generator = torch.Generator().manual_seed(seeds[0])
        mistakes = {
            "you drew the whole batch from one generator seeded with seeds[0]: then image i "
            "depends on the batch size and on the images before it. Give every image its own "
            "generator, `torch.Generator().manual_seed(seeds[i])`.":
                torch.randn((len(seeds), *shape), generator=one_generator),
            "every image starts from the same noise: seed a fresh generator for each image "
            "with its own seed, seeds[i].":
                torch.randn((1, *shape), generator=torch.Generator().manual_seed(seeds[0]))
                .expand(len(seeds), *shape),
        }
        yours = fn(list(seeds), tuple(shape))
        if isinstance(yours, (list, tuple)):
            raise ExerciseError("seeded_noise: you returned a list; join the images into one "
                                "batch tensor with torch.cat (of (1, C, H, W)) or torch.stack.")
        compare_with_mistakes("seeded_noise", as_tensor(yours), expected, mistakes,
                              "Image i is torch.randn(shape, generator=torch.Generator()"
                              ".manual_seed(seeds[i])); stack them into a (B, C, H, W) batch.")

    return run_check("seeded_noise", fn,
                     lambda: case([0, 1, 2, 3], (3, 8, 8)),
                     lambda: case([42, 7], (3, 4, 4)),
                     lambda: case([5], (1, 2, 2)))


# --------------------------------------------------------------------------------------------------
# Exercise 3: where the parameters are
# --------------------------------------------------------------------------------------------------
def params_per_block(unet: nn.Module) -> dict:
    """The reference: {child name: parameter count}, ModuleLists split into 'name.i' entries."""
    counts = {}
    for name, child in unet.named_children():
        blocks = child.named_children() if isinstance(child, nn.ModuleList) else [(None, child)]
        for i, block in blocks:
            counts[name if i is None else f"{name}.{i}"] = sum(p.numel()
                                                               for p in block.parameters())
    return counts


def check_params_per_block(fn):
    """fn(unet) -> {name: number of parameters}, one entry per block, summing to the total."""

    def case(unet):
        expected = {k: v for k, v in params_per_block(unet).items() if v > 0}
        yours = fn(unet)
        if not isinstance(yours, dict):
            raise ExerciseError(f"params_per_block: expected a dict {{name: count}}, got "
                                f"{type(yours).__name__}")
        yours = {k: v for k, v in yours.items() if v != 0}  # parameter-free blocks: optional
        missing, extra = sorted(set(expected) - set(yours)), sorted(set(yours) - set(expected))
        if missing:
            hint = (" `down_blocks` and `up_blocks` are nn.ModuleLists: loop over their children "
                    "and name them 'down_blocks.0', 'down_blocks.1', ..."
                    if any("." in k for k in missing) else "")
            raise ExerciseError(f"params_per_block: missing {missing}.{hint}")
        if extra:
            raise ExerciseError(f"params_per_block: unexpected keys {extra}; use the names from "
                                f"unet.named_children() (and 'name.i' for blocks in a ModuleList)")
        for name, count in expected.items():
            block = unet.get_submodule(name)
            if yours[name] == len(list(block.parameters())):
                raise ExerciseError(f"params_per_block[{name!r}]: {yours[name]} is the number of "
                                    f"parameter *tensors*; count their elements with p.numel().")
            compare(f"params_per_block[{name!r}]", yours[name], count,
                    "Sum p.numel() over block.parameters() (which recurses into sub-modules).")

    return run_check("params_per_block", fn,
                     lambda: case(tiny_unet((8, 16), layers_per_block=1, seed=0)),
                     lambda: case(tiny_unet((16, 16, 32), layers_per_block=2, seed=1)))
