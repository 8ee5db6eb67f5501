"""Chapter 07, exercise 2: the velocity the model learns.

`velocity_target(x0, noise)` returns v = dx_σ/dσ = ε - x_0, the target of `flow_matching_loss`
(diffusers' and SD3's sign). The check wants the inputs' dtype back and names the usual mistakes
(x_0 - ε, the noise alone, the clean image). Hidden cases: other shapes (points, latents, video)
and float64.
"""

from functools import partial

import torch

from ddlearn.checks import guard, randn, run_check
from ddlearn.checks.ch07.common import compare_dtype


def reference_velocity_target(x0, noise):
    """The answer the cells below use while yours is not solved: v = dx_σ/dσ = ε - x_0."""
    return noise - x0  # d/dσ [(1 - σ) x0 + σ ε]


def check_velocity_target(fn, hidden=False):
    """fn(x0, noise) -> v = dx_σ/dσ = ε - x_0, the target of `flow_matching_loss`.

    Hidden cases: other shapes (points, latents, video) and float64."""
    yours = guard("velocity_target", fn, reference_velocity_target)

    def case(shape, seed, dtype=torch.float32):
        x0, noise = randn(*shape, seed=seed).to(dtype), randn(*shape, seed=seed + 1).to(dtype)
        expected = noise - x0
        mistakes = {
            "the sign is flipped: x_σ = (1 - σ) x0 + σ ε, so dx_σ/dσ = ε - x0 (diffusers' and "
            "SD3's convention; some papers run time the other way and use x0 - ε).": x0 - noise,
            "the velocity is the derivative of the whole path, ε - x0, not the noise alone.":
                noise,
            "the velocity is ε - x0, not the clean image.": x0,
        }
        compare_dtype("velocity_target", yours(x0.clone(), noise.clone()), expected, mistakes,
                      "differentiate x_σ = (1 - σ) x0 + σ ε in σ.")

    def hidden_cases(rng):
        shapes = ((rng.randint(2, 50), 2), (rng.randint(1, 3), 16, 4, rng.randint(2, 6)),
                  (1, 4, 3, 4, 4))
        dtypes = (torch.float64, torch.float32, torch.float64)
        return [partial(case, shape, rng.randrange(10_000), dtype)
                for shape, dtype in zip(shapes, dtypes, strict=True)]

    return run_check("velocity_target", fn, lambda: case((2, 3, 8, 8), seed=0),
                     lambda: case((5, 2), seed=3),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_velocity_target)
