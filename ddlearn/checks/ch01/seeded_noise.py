"""Chapter 01, exercise 2: one seed per image.

`seeded_noise(seeds, shape)` draws x_T of shape (len(seeds), *shape) with image i from its own
generator, `torch.Generator().manual_seed(seeds[i])`, so an image does not depend on the batch it
is in (what `randn_tensor` does with a list of generators, which the check forbids). It names the
usual mistakes: one generator for the whole batch, the same noise for every image, torch.cat of
unbatched draws. Hidden cases: other seeds and batch sizes; shapes of one, three and four
dimensions.
"""

from functools import partial

import torch

from ddlearn.checks import ExerciseError, as_tensor, compare_with_mistakes, guard, run_check
from ddlearn.noise import randn_tensor


def reference_seeded_noise(seeds: list, shape: tuple) -> torch.Tensor:
    """The answer the cells below use while yours is not solved: image i from seeds[i]."""
    noise = [torch.randn((1, *shape), generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.cat(noise)  # B x (1, *shape) -> (B, *shape)


def explain_seeded_noise(error) -> str:
    text = str(error)
    if "manual_seed" in text:
        return "Seed each image's own generator with one number: loop over seeds."
    if "randn()" in text:
        return "Pass the size as one tuple: torch.randn((1, *shape), generator=g)."
    if isinstance(error, IndexError):
        return ("`shape` may have any length ((2,) for points, (C, H, W) for images): draw "
                "torch.randn((1, *shape), ...) rather than indexing it.")
    return None


def check_seeded_noise(fn, hidden=False):
    """fn(seeds, shape) -> (len(seeds), *shape) noise, image i drawn from its own seed.

    Hidden cases: other seeds and batch sizes; shapes of one, three and four dimensions."""
    yours = guard("seeded_noise", fn, randn_tensor, reference_seeded_noise,
                  explain=explain_seeded_noise)

    def case(seeds, shape):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        expected = randn_tensor((len(seeds), *shape), generators)
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
            "torch.cat joins along the first axis, so images of `shape` became one long "
            "tensor: draw each as (1, *shape), or join them with torch.stack.":
                torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s))
                           for s in seeds]),
        }
        result = yours(list(seeds), tuple(shape))
        if isinstance(result, (list, tuple)):
            raise ExerciseError("seeded_noise: you returned a list; join the images into one "
                                "batch tensor with torch.cat (of (1, C, H, W)) or torch.stack.")
        compare_with_mistakes("seeded_noise", as_tensor(result), expected, mistakes,
                              "Image i is torch.randn(shape, generator=torch.Generator()"
                              ".manual_seed(seeds[i])); stack them into a (B, *shape) batch.")

    def hidden_cases(rng):
        # 2-D points (chapter 03's toy), 4-channel latents, a short video (C, frames, H, W)
        shapes = ((2,), (4, rng.randint(2, 9), rng.randint(2, 9)), (3, 2, 5, 7))
        return [partial(case, rng.sample(range(2**31), rng.randint(2, 6)), shape)
                for shape in shapes]

    return run_check("seeded_noise", fn,
                     lambda: case([0, 1, 2, 3], (3, 8, 8)),
                     lambda: case([42, 7], (3, 4, 4)),
                     lambda: case([5], (1, 2, 2)),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_seeded_noise)
