"""Checkers for chapter 07 (flow matching and diffusion transformers).

    from ddlearn.checks import ch07
    ch07.check_flow_noised(fn)     # x_σ = (1 - σ) x_0 + σ ε            (the straight path)
    ch07.check_velocity_target(fn) # v = ε - x_0                         (diffusers' sign)
    ch07.check_euler_step(fn)      # x_{σ'} = x_σ + (σ' - σ) v           (one ODE step)
    ch07.check_patchify(fn)        # (B, C, h, w) -> (B, N, p·p·C), the order SD3 unpatchifies

Each check runs seeded cases through ddlearn's reference (`FlowMatchEulerDiscreteScheduler`'s
`scale_noise` and `step`, `flow_matching_loss`'s target, `transformer_sd3.patchify`) and through
your function, which may not call those: it fails if it does. When yours is off, the check tries
the usual mistakes (σ and 1 - σ swapped, the sign of the velocity, the step's direction, channels
first) and names the one your numbers match. `hidden=True` runs other cases (other shapes, dtypes,
σ's, shifts and patch sizes); in keep-going mode a failing check returns `reference_<x>` (see
`ddlearn.checks.runner`).
"""

from functools import partial

import torch

from ddlearn.checks import ExerciseError, compare_with_mistakes, guard, randn, run_check
from ddlearn.models.transformer_sd3 import patchify, unpatchify
from ddlearn.schedulers.common import add_noise
from ddlearn.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ddlearn.schedulers.flow_match_heun import FlowMatchHeunDiscreteScheduler


def compare_dtype(name: str, yours, expected, mistakes: dict, hint: str):
    """compare_with_mistakes, after checking that float64 inputs gave a float64 result."""
    if torch.is_tensor(yours) and yours.dtype != expected.dtype:
        raise ExerciseError(f"{name}: your result is {yours.dtype} for {expected.dtype} inputs; "
                            f"keep the inputs' dtype (no .float(), no new torch.tensor(...)).")
    compare_with_mistakes(name, yours, expected, mistakes, hint)


SIGMA_VIEW = ("sigma has one value per image, shape (B,); view it as (B, 1, 1, 1) to broadcast "
              "over the image: sigma.view(-1, *[1] * (x0.ndim - 1)).")


def broadcast_hint(error) -> str:
    return SIGMA_VIEW if "size of tensor" in str(error) else None


# --------------------------------------------------------------------------------------------------
# Exercise 1: a point on the straight path from data to noise
# --------------------------------------------------------------------------------------------------
def reference_flow_noised(x0, noise, sigma):
    """The answer the cells below use while yours is not solved: x_σ = (1 - σ) x_0 + σ ε."""
    sigma = sigma.view(-1, *[1] * (x0.ndim - 1))  # (B,) -> (B, 1, 1, 1)
    return (1 - sigma) * x0 + sigma * noise


def check_flow_noised(fn, hidden=False):
    """fn(x0, noise, sigma) -> x_σ = (1 - σ) x_0 + σ ε, one σ in [0, 1] per image (B,).

    Hidden cases: 2-D points and 5-D video latents, other batch sizes, σ's and float64."""
    yours = guard("flow_noised", fn, FlowMatchEulerDiscreteScheduler.scale_noise,
                  FlowMatchHeunDiscreteScheduler.scale_noise, add_noise, reference_flow_noised,
                  explain=broadcast_hint)
    scheduler = FlowMatchEulerDiscreteScheduler()

    def case(shape, sigmas, seed, dtype=torch.float32):
        x0, noise = randn(*shape, seed=seed).to(dtype), randn(*shape, seed=seed + 1).to(dtype)
        sigma = torch.tensor(sigmas, dtype=dtype)
        scheduler.set_timesteps(sigmas=sigmas)  # scale_noise looks σ up by its timestep
        expected = scheduler.scale_noise(x0, scheduler.timesteps, noise)
        s = sigma.view(-1, *[1] * (x0.ndim - 1))
        mistakes = {
            "you swapped the weights: σ = 1 must be pure noise, so x_σ = (1 - σ) x0 + σ ε.":
                s * x0 + (1 - s) * noise,
            "that is the variance-preserving path (DDPM's √ᾱ, √(1-ᾱ)); flow matching mixes "
            "linearly: (1 - σ) x0 + σ ε.": (1 - s).sqrt() * x0 + s.sqrt() * noise,
            "you added the noise without taking σ of it: x_σ = (1 - σ) x0 + σ ε.":
                (1 - s) * x0 + noise,
        }
        if x0.ndim < 4:  # (B, 1, 1, 1) with (B, 2) points broadcasts to (B, 1, B, 2)
            mistakes["x0 is not always (B, C, H, W): view σ as (B, 1, ..., 1), one 1 per other "
                     "axis: sigma.view(-1, *[1] * (x0.ndim - 1))."] = \
                (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise
        if shape[-1] == len(sigmas):  # then sigma (B,) broadcasts, wrongly, over the last axis
            mistakes[SIGMA_VIEW] = (1 - sigma) * x0 + sigma * noise
        compare_dtype("flow_noised", yours(x0.clone(), noise.clone(), sigma.clone()), expected,
                      mistakes, "x_σ = (1 - σ) x0 + σ ε, with σ viewed as (B, 1, 1, 1).")

    def hidden_cases(rng):
        cases = []
        for shape, dtype in (((rng.randint(2, 6), 2), torch.float64),  # 2-D points
                             ((rng.randint(2, 6), 4, rng.randint(2, 6), 5), torch.float32),
                             ((rng.randint(2, 4), 3, 2, 4, 4), torch.float64)):  # a video
            sigmas = [s / 1000 for s in sorted(rng.sample(range(1001), shape[0]), reverse=True)]
            cases.append(partial(case, shape, sigmas, rng.randrange(10_000), dtype))
        return cases

    return run_check("flow_noised", fn,
                     lambda: case((3, 3, 8, 8), [0.9, 0.5, 0.1], seed=0),
                     lambda: case((2, 16, 4, 4), [1.0, 0.25], seed=2),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_flow_noised)


# --------------------------------------------------------------------------------------------------
# Exercise 2: the velocity the model learns
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# Exercise 3: one Euler step of the sampling ODE
# --------------------------------------------------------------------------------------------------
def reference_euler_step(velocity, sigma, sigma_next, sample):
    """The answer the cells below use while yours is not solved: x + (σ_next - σ) v."""
    return sample + (sigma_next - sigma) * velocity


def euler_hint(error) -> str:
    if "'float' object" in str(error):
        return ("sigma and sigma_next are plain Python floats (the loop passes "
                "float(scheduler.sigmas[i])): (sigma_next - sigma) * velocity just works.")
    return None


def check_euler_step(fn, hidden=False):
    """fn(velocity, sigma, sigma_next, sample) -> sample + (σ_next - σ) velocity, as
    FlowMatchEulerDiscreteScheduler.step does, along a whole schedule.

    Hidden cases: other shifts, step counts, σ schedules, shapes and float64."""
    yours = guard("euler_step", fn, FlowMatchEulerDiscreteScheduler.step,
                  FlowMatchHeunDiscreteScheduler.step, reference_euler_step, explain=euler_hint)

    def case(shift, steps, seed, shape=(2, 4, 8, 8), dtype=torch.float32, sigmas=None):
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(steps, sigmas=sigmas)
        x = randn(*shape, seed=seed).to(dtype)
        for i, t in enumerate(scheduler.timesteps):
            v = randn(*shape, seed=seed + 10 + i).to(dtype)  # any model's velocity
            sigma, sigma_next = float(scheduler.sigmas[i]), float(scheduler.sigmas[i + 1])
            expected = scheduler.step(v, t, x).prev_sample
            mistakes = {
                "the step goes the wrong way: σ decreases while sampling, so σ_next - σ < 0 "
                "and x_next = x + (σ_next - σ) v.": x + (sigma - sigma_next) * v,
                "you stepped by σ_next · v; the step is the *change* in σ: (σ_next - σ) v.":
                    x + sigma_next * v,
                "you subtracted the whole velocity; scale it by the step size (σ_next - σ).":
                    x - v,
            }
            compare_dtype("euler_step", yours(v.clone(), sigma, sigma_next, x.clone()), expected,
                          mistakes, "x_next = x + (σ_next - σ) · v.")
            x = expected

    def hidden_cases(rng):
        points = (rng.randint(2, 50), 2)  # 2-D points, as in the chapter's toy
        sigmas = [s / 100 for s in sorted(rng.sample(range(1, 101), 4), reverse=True)]
        shift, steps = rng.choice((2.0, 4.0, 6.0)), rng.randint(2, 9)
        seeds = rng.sample(range(10_000), 3)
        return [partial(case, shift, steps, seeds[0], points, torch.float64),
                partial(case, 1.0, steps + 1, seeds[1], (1, 16, 4, 6)),  # SD3's 16-channel latents
                partial(case, 1.0, None, seeds[2], (3, 3, 4, 4), torch.float64, sigmas)]  # own σ's

    return run_check("euler_step", fn, lambda: case(3.0, 6, seed=0),
                     lambda: case(1.0, 3, seed=5),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_euler_step)


# --------------------------------------------------------------------------------------------------
# Exercise 4: patchify, the way SD3's transformer reads a latent
# --------------------------------------------------------------------------------------------------
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
