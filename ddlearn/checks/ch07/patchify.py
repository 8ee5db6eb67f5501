"""Chapter 07, exercise 4: patchify, the way SD3's transformer reads a latent.

`patchify(latents, p)` turns (B, C, h, w) into (B, N, p·p·C) tokens, N = (h/p)(w/p), rows of
patches left to right, top to bottom, each token's values in (row, column, channel) order, so
that `transformer_sd3.unpatchify` puts every value back; checked against
`transformer_sd3.patchify`, which it may not call. The check wants the inputs' dtype back and
names the usual mistakes (channels first, column by column, pixels not grouped into patches).
Hidden cases: other batch sizes, channels (16, as SD3's latents), sizes, p = 1, 3, 4, float64.
"""

from functools import partial

import torch

from ddlearn.checks import ExerciseError, guard, randn, run_check
from ddlearn.checks.ch07.common import compare_dtype
from ddlearn.models.transformer_sd3 import patchify, unpatchify


def reference_patchify(latents, p):
    """The answer the cells below use while yours is not solved: (B, C, h, w) -> (B, N, p·p·C)."""
    B, C, h, w = latents.shape
    x = latents.reshape(B, C, h // p, p, w // p, p)  # split rows and columns into patches
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h/p, w/p, p, p, C)
    return x.reshape(B, (h // p) * (w // p), p * p * C)


def patchify_hint(error) -> str:
    text = str(error)
    if "is invalid for input of size" in text:
        return ("Split rows and columns first: reshape to (B, C, h/p, p, w/p, p), permute, then "
                "flatten to (B, (h/p)·(w/p), p·p·C).")
    if "view size is not compatible" in text:
        return "After a permute the values are not contiguous: use .reshape, not .view."
    if "permute" in text:
        return "The 6-D (B, C, h/p, p, w/p, p) tensor takes six indices: .permute(0, 2, 4, 3, 5, 1)"
    if "float" in text and "int" in text:
        return "Sizes are whole numbers: h // p, not h / p."
    return None


def check_patchify(fn, hidden=False):
    """fn(latents, p) -> (B, (h/p)(w/p), p·p·C) tokens, rows of patches left to right, top to
    bottom; in each token the patch's values in (row, column, channel) order, so that the
    model's `unpatchify` puts every value back where it came from.

    Hidden cases: other batch sizes, channels (16, as SD3's latents), sizes, p = 3, 4, float64."""
    yours = guard("patchify", fn, patchify, unpatchify, reference_patchify, explain=patchify_hint)

    def case(shape, p, seed, dtype=torch.float32):
        z = randn(*shape, seed=seed).to(dtype)
        B, C, h, w = shape
        expected = patchify(z, p)
        grid = z.reshape(B, C, h // p, p, w // p, p)
        mistakes = {
            "the values inside each token are channel first; SD3's unpatchify reads them as "
            "(row, column, channel): permute to (B, h/p, w/p, p, p, C) before flattening.":
                grid.permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * p),
            "the tokens go column by column; they go row by row (token i·(w/p) + j is the patch "
            "in row i, column j).": grid.permute(0, 4, 2, 3, 5, 1).reshape(B, -1, p * p * C),
            "you flattened without grouping the pixels into patches: reshape to (B, C, h/p, p, "
            "w/p, p) first, so each patch's p·p pixels stay together.":
                z.permute(0, 2, 3, 1).reshape(B, -1, p * p * C),
        }
        result = yours(z.clone(), p)
        compare_dtype("patchify", result, expected, mistakes,
                      "(B, C, h, w) -> (B, C, h/p, p, w/p, p) -> (B, h/p, w/p, p, p, C) "
                      "-> (B, N, p·p·C).")
        if not torch.equal(unpatchify(torch.as_tensor(result), p, h, w), z):
            raise ExerciseError("patchify: unpatchify does not give the latent back")

    def hidden_cases(rng):
        cases = []
        for channels, p, dtype in ((16, 2, torch.float32),
                                   (rng.randint(1, 5), rng.choice((3, 4)), torch.float64),
                                   (rng.randint(1, 4), 1, torch.float64)):
            shape = (rng.randint(1, 3), channels, p * rng.randint(1, 4), p * rng.randint(1, 4))
            cases.append(partial(case, shape, p, rng.randrange(10_000), dtype))
        return cases

    return run_check("patchify", fn, lambda: case((2, 4, 8, 8), 2, seed=0),
                     lambda: case((1, 3, 6, 4), 2, seed=1), lambda: case((1, 2, 4, 4), 1, seed=2),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_patchify)
