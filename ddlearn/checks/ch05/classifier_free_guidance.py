"""Chapter 05, exercise 2: classifier-free guidance.

`classifier_free_guidance(noise_pred, guidance_scale)` splits the UNet's output on the doubled
batch [∅, c] with `noise_pred.chunk(2)` and returns ε̂ = ε_∅ + w (ε_c - ε_∅) (Ho & Salimans 2022,
eq. 6); it may not call `StableDiffusionPipeline.denoise`. The check wants noise_pred's dtype back
and names the usual mistakes (the halves swapped, the direction alone, starting from ε_c). Hidden
cases: other batch sizes, channels and latent sizes, float64, w = 1 and w = 0.
"""

from functools import partial

import torch

from ddlearn.checks import ExerciseError, compare_with_mistakes, guard, randn, run_check
from ddlearn.pipelines.stable_diffusion import StableDiffusionPipeline


def reference_classifier_free_guidance(noise_pred, guidance_scale):
    """The answer the cells below use while yours is not solved: ε_∅ + w (ε_c - ε_∅)."""
    eps_uncond, eps_text = noise_pred.chunk(2)  # (2B, 4, h, w) -> 2 x (B, 4, h, w)
    return eps_uncond + guidance_scale * (eps_text - eps_uncond)


def check_classifier_free_guidance(fn, hidden=False):
    """fn(noise_pred, guidance_scale) -> ε̂, where noise_pred = UNet output on the doubled batch
    (2B, 4, h, w): the B unconditional (empty prompt) predictions first, then the B conditional.

    Hidden cases: other batch sizes, channels and latent sizes, float64, w = 1 and w = 0."""
    def explain(error):
        if "unpack" in str(error):
            return ("split the batch with `noise_pred.chunk(2)`: unpacking the tensor itself goes "
                    "over its 2B rows.")
        if "invalid for input of size" in str(error):
            return "noise_pred.chunk(2) splits any (2B, C, h, w): do not hard-code B, C, h or w."
        return None
    yours = guard("classifier_free_guidance", fn, reference_classifier_free_guidance,
                  StableDiffusionPipeline.denoise, explain=explain)

    def case(batch, w, seed, shape=(4, 8, 8), dtype=torch.float32):
        noise_pred = randn(2 * batch, *shape, seed=seed).to(dtype)
        eps_uncond, eps_text = noise_pred.chunk(2)  # (2B, 4, h, w) -> 2 x (B, 4, h, w)
        expected = eps_uncond + w * (eps_text - eps_uncond)
        mistakes = {  # (at w = 0 the first and the last are both ε_c: w = 0 comes last)
            "the halves are swapped: the pipeline stacks [∅, c], so `noise_pred.chunk(2)` gives "
            "(ε_∅, ε_c) in that order.": eps_text + w * (eps_uncond - eps_text),
            "you returned only w (ε_c - ε_∅), the guidance *direction*; add it to the "
            "unconditional prediction ε_∅.": w * (eps_text - eps_uncond),
            "start from the unconditional ε_∅, not the conditional ε_c: "
            "ε̂ = ε_∅ + w (ε_c - ε_∅), so w = 1 gives exactly ε_c.":
                eps_text + w * (eps_text - eps_uncond),
        }
        guided = yours(noise_pred.clone(), w)
        if torch.is_tensor(guided) and guided.dtype != dtype:
            raise ExerciseError(f"classifier_free_guidance: dtype {guided.dtype}, expected "
                                f"{dtype}: compute in noise_pred's dtype (no .float(), no new "
                                f"float32 tensors).")
        compare_with_mistakes("classifier_free_guidance", guided, expected, mistakes,
                  "Split the batch with `noise_pred.chunk(2)` into (ε_∅, ε_c) and return "
                  "ε_∅ + guidance_scale · (ε_c - ε_∅), shape (B, 4, h, w).")

    def hidden_cases(rng):
        shape = lambda: (rng.choice((4, 16)), rng.choice((4, 6, 12)), rng.choice((4, 10)))
        scales = [round(rng.uniform(1.5, 12.0), 2), 1.0, 0.0]  # 0 last: it hides two mistakes
        dtypes = [torch.float32, torch.float64, torch.float64]
        return [partial(case, rng.randint(1, 4), w, rng.randrange(10_000), shape(), dtype)
                for w, dtype in zip(scales, dtypes, strict=True)]

    return run_check("classifier_free_guidance", fn,
                     lambda: case(2, 7.5, seed=0),
                     lambda: case(3, 3.0, seed=1),
                     lambda: case(1, 1.0, seed=2),  # w = 1: plain conditional prediction
                     hidden=hidden, hidden_cases=hidden_cases,
                     reference=reference_classifier_free_guidance)
