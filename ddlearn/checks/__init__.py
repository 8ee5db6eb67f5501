"""Exercise checkers: compare a learner's function with the reference and say what is off.

Each chapter has a package (`ddlearn.checks.ch03`, ...), one file per exercise, whose `check_*`
functions call `compare`:

    from ddlearn.checks import ch03
    ch03.check_add_noise(my_add_noise)   # prints "✅ ..." or raises ExerciseError with a hint

How a check runs your function (honest calls, hidden cases, keep-going) is `ddlearn.checks.runner`.
"""

import numpy as np
import torch

from ddlearn.checks.runner import ExerciseError, guard, keep_going, run_check  # noqa: F401
from ddlearn.models.unet_2d import UNet2DModel


def randn(*shape, seed: int) -> torch.Tensor:
    """A fixed test input: N(0, I) of `shape` from its own seeded generator."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def as_tensor(x) -> torch.Tensor:
    """Tensor, array or list -> tensor (np.array copies: `[::-1]` views have negative strides)."""
    if x is None or isinstance(x, torch.Tensor):
        return x if x is None else x.detach()
    return torch.as_tensor(np.array(x))


def tiny_unet(block_out_channels=(16, 32), layers_per_block: int = 1, seed: int = 0):
    """A small random UNet2DModel (attention at the lowest level) to run answers through."""
    torch.manual_seed(seed)
    n = len(block_out_channels)
    return UNet2DModel(sample_size=16, block_out_channels=block_out_channels,
                       layers_per_block=layers_per_block, norm_num_groups=8,
                       down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
                       up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1)).eval()


def compare(name: str, yours, expected, hint: str = "", rtol: float = 1e-4, atol: float = 1e-5):
    """Raise ExerciseError unless `yours` matches `expected` (tensors, numbers or tuples)."""
    if yours is None:
        raise ExerciseError(f"{name}: your function returned None — did you forget `return`?")
    if isinstance(expected, (tuple, list)):
        if not isinstance(yours, (tuple, list)) or len(yours) != len(expected):
            raise ExerciseError(f"{name}: expected {len(expected)} values, got {yours!r:.80}")
        for i, (a, b) in enumerate(zip(yours, expected, strict=True)):
            compare(f"{name}[{i}]", a, b, hint, rtol, atol)
        return
    yours_t, expected_t = torch.as_tensor(yours), torch.as_tensor(expected)
    if yours_t.shape != expected_t.shape:
        raise ExerciseError(f"{name}: shape {tuple(yours_t.shape)}, expected "
                            f"{tuple(expected_t.shape)}. {hint}")
    if not torch.allclose(yours_t.double(), expected_t.double(), rtol=rtol, atol=atol):
        error = (yours_t.double() - expected_t.double()).abs().max().item()
        raise ExerciseError(f"{name}: values differ from the reference (max error {error:.3g}). "
                            f"{hint}")


def compare_with_mistakes(name: str, yours, expected, mistakes: dict, hint: str = ""):
    """compare(), but first: if `yours` equals a known wrong answer, name that mistake.

    `mistakes` maps a message ("you used ᾱ_t where √ᾱ_t belongs") to the wrong answer it gives."""
    if yours is not None and not isinstance(yours, (torch.Tensor, list, tuple)) \
            and not hasattr(yours, "__array__"):
        raise ExerciseError(f"{name}: return a tensor, not a {type(yours).__name__}. {hint}")
    ok = lambda a, b: (torch.as_tensor(a).shape == b.shape
                       and torch.allclose(torch.as_tensor(a).double(), b.double(), 1e-4, 1e-5))
    if yours is not None and not ok(yours, expected):
        for mistake, wrong in mistakes.items():
            if ok(yours, wrong):
                raise ExerciseError(f"{name}: {mistake}")
    compare(name, yours, expected, hint)


def check_dtype(name: str, yours, dtype):
    """Raise ExerciseError if `yours` is a tensor of another dtype than the inputs' `dtype`."""
    if torch.is_tensor(yours) and yours.dtype != dtype:
        raise ExerciseError(f"{name}: the inputs are {dtype} but your result is {yours.dtype}: "
                            f"compute in the inputs' dtype (no .float(), no new torch.tensor).")
