"""Chapter 01, exercise 1: from the model's [-1, 1] tensors to 8-bit images.

`postprocess(images)` turns a (B, C, H, W) batch in [-1, 1] into the (B, H, W, C) uint8 array that
PIL and matplotlib show: x / 2 + 0.5, clip to [0, 1], channels last, * 255, round (what
`DiffusionPipeline.postprocess` and diffusers' `numpy_to_pil` do). The check forbids those and
ddlearn's other converters (`denormalize`, `pt_to_numpy`, `to_pil`, `to_pil_list`), and names the
usual mistakes: truncating instead of rounding, (x + 1) without / 2, no mapping from [-1, 1], no
clipping. Hidden cases: other batch sizes, channels (1, 4), image sizes and float64.
"""

from functools import partial

import numpy as np
import torch

from ddlearn.checks import ExerciseError, as_tensor, compare_with_mistakes, guard, randn, run_check
from ddlearn.data.transforms import denormalize, numpy_to_pil, pt_to_numpy, to_pil
from ddlearn.pipelines.pipeline import DiffusionPipeline
from ddlearn.viz import to_pil_list


def reference_postprocess(images: torch.Tensor) -> np.ndarray:
    """The answer the cells below use while yours is not solved: [-1, 1] -> uint8 (B, H, W, C)."""
    images = (images / 2 + 0.5).clamp(0, 1)  # [-1, 1] -> [0, 1]
    images = images.permute(0, 2, 3, 1).detach().cpu().numpy()  # (B, C, H, W) -> (B, H, W, C)
    return (images * 255).round().astype(np.uint8)


def explain_postprocess(error) -> str:
    """A hint for the errors of mixing torch's and numpy's methods."""
    text = str(error)
    if "numpy.ndarray" in text and "attribute" in text:
        return ("That is a torch method on a numpy array: do the torch steps (.clamp, .permute) "
                "before .numpy(), or use numpy's (np.clip, .transpose(0, 2, 3, 1)).")
    if "'Tensor' object has no attribute" in text:
        return ("That is a numpy method on a tensor: convert with .cpu().numpy() first.")
    if "transpose()" in text:
        return "torch's .transpose swaps two axes; reorder all four with .permute(0, 2, 3, 1)."
    if isinstance(error, IndexError):
        return ("Images may have any number of channels (1 for grey, 4 for RGBA): reorder the "
                "axes with .permute(0, 2, 3, 1) rather than picking channels by hand.")
    return None


def check_postprocess(fn, hidden=False):
    """fn(images) -> uint8 np.ndarray (B, H, W, C), for images (B, C, H, W) in (roughly) [-1, 1].

    Hidden cases: other batch sizes, channels (1, 4), image sizes and float64."""
    yours = guard("postprocess", fn, DiffusionPipeline.postprocess, denormalize, pt_to_numpy,
                  numpy_to_pil, to_pil, to_pil_list, reference_postprocess,
                  explain=explain_postprocess)

    def case(shape, seed, dtype=torch.float32):
        x = randn(*shape, seed=seed).to(dtype) * 0.8
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
            "[0, 1] before scaling to 255.":  # (uint8 of -3 is 253)
                ((channels_last / 2 + 0.5) * 255).round().astype(np.int64).astype(np.uint8),
        }
        result = yours(x.clone())
        if result is None:
            raise ExerciseError("postprocess: your function returned None — did you forget "
                                "`return`?")
        if torch.is_tensor(result):
            raise ExerciseError("postprocess: you returned a torch tensor; return a numpy array "
                                "(np.ndarray), as diffusers' pipelines do for output_type='np' "
                                "and as PIL's Image.fromarray needs: convert with "
                                ".cpu().numpy(), then .astype(np.uint8).")
        if not isinstance(result, np.ndarray):
            raise ExerciseError(f"postprocess: return one numpy array (B, H, W, C), not a "
                                f"{type(result).__name__}.")
        if result.shape == tuple(x.shape):
            raise ExerciseError("postprocess: your images are channels-first (B, C, H, W); PIL "
                                "and matplotlib want (B, H, W, C): `.permute(0, 2, 3, 1)`.")
        if result.dtype != np.uint8:
            raise ExerciseError(f"postprocess: dtype {result.dtype}, expected uint8 (whole "
                                f"numbers 0..255): finish with `.astype(np.uint8)`.")
        compare_with_mistakes("postprocess", as_tensor(result), as_tensor(expected),
                              {m: as_tensor(wrong) for m, wrong in mistakes.items()},
                              "Steps: x / 2 + 0.5, clip to [0, 1], (B, C, H, W) -> (B, H, W, C), "
                              "* 255, round, uint8; any number of channels.")

    def hidden_cases(rng):
        cases = []
        for channels, dtype in ((1, torch.float32), (4, torch.float32), (3, torch.float64)):
            shape = (rng.randint(1, 4), channels, rng.randint(5, 12), rng.randint(2, 12))
            cases.append(partial(case, shape, rng.randrange(10_000), dtype))
        return cases

    return run_check("postprocess", fn,
                     lambda: case((2, 3, 8, 8), seed=0),
                     lambda: case((1, 3, 5, 7), seed=1),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_postprocess)
