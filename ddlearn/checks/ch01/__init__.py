"""Checkers for chapter 01 (using a pipeline): your function against what ddlearn's pipeline does.

    from ddlearn.checks import ch01
    ch01.check_postprocess(postprocess)        # (B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8 array
    ch01.check_seeded_noise(seeded_noise)      # x_T with image i drawn from its own seed
    ch01.check_params_per_block(params_per_block)  # where a UNet keeps its parameters

Each check runs a few seeded cases through the reference (`DiffusionPipeline.postprocess`,
`randn_tensor` with a list of generators, `Module.parameters`) and through your function, which
may not call those: it fails if it does. When yours is off, the check tries the usual mistakes and
names the one your numbers match. `hidden=True` runs other cases (other seeds, shapes, dtypes and
UNets); in keep-going mode a failing check returns `reference_<x>` (see `ddlearn.checks.runner`).

One file per exercise: `postprocess.py`, `seeded_noise.py`, `params_per_block.py`.
"""

from ddlearn.checks.ch01.params_per_block import check_params_per_block, reference_params_per_block
from ddlearn.checks.ch01.postprocess import check_postprocess, reference_postprocess
from ddlearn.checks.ch01.seeded_noise import check_seeded_noise, reference_seeded_noise

__all__ = [
    "reference_postprocess",
    "check_postprocess",
    "reference_seeded_noise",
    "check_seeded_noise",
    "reference_params_per_block",
    "check_params_per_block",
]
