"""What more than one chapter-03 check uses: a hint for float errors, hidden shapes and steps."""

import torch


def explain_floats(error) -> str:
    """A hint for the raw errors of a learner's tensor code."""
    if "not float" in str(error) or "'float' object has no attribute" in str(error):
        return "keep the coefficients tensors: `.sqrt()` or torch.sqrt of a tensor, not a float."
    return None


def draw_shape(rng) -> tuple:
    """A batch of 2, 3 or 5 images, 1-4 channels, 4-16 pixels (never as wide as the batch)."""
    return (rng.choice((2, 3, 5)), rng.choice((1, 3, 4)), rng.choice((4, 6, 16)),
            rng.choice((4, 6, 16)))


def step_cases(rng, case, draw_config) -> list:
    """Hidden cases of a one-step exercise, `case(n, index, seed, shape, dtype, **config)` with a
    scheduler config from `draw_config()`: float32, float64, and float64 at the last step."""
    def draw(dtype, last=False):
        n = rng.randint(2, 60)
        args = (n, n - 1 if last else rng.randrange(n), rng.randrange(10_000),
                draw_shape(rng), dtype)
        config = draw_config()
        return lambda: case(*args, **config)

    return [draw(torch.float32), draw(torch.float64), draw(torch.float64, last=True)]
