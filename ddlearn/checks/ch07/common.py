"""What more than one chapter-07 check uses: compare_with_mistakes, after a dtype check."""

import torch

from ddlearn.checks import ExerciseError, compare_with_mistakes


def compare_dtype(name: str, yours, expected, mistakes: dict, hint: str):
    """compare_with_mistakes, after checking that float64 inputs gave a float64 result."""
    if torch.is_tensor(yours) and yours.dtype != expected.dtype:
        raise ExerciseError(f"{name}: your result is {yours.dtype} for {expected.dtype} inputs; "
                            f"keep the inputs' dtype (no .float(), no new torch.tensor(...)).")
    compare_with_mistakes(name, yours, expected, mistakes, hint)
