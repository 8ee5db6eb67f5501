"""Checkers for chapter 07 (flow matching and diffusion transformers).

    from ddlearn.checks import ch07
    ch07.check_flow_noised(fn)     # x_σ = (1 - σ) x_0 + σ ε            (the straight path)
    ch07.check_velocity_target(fn) # v = ε - x_0                         (diffusers' sign)
    ch07.check_euler_step(fn)      # x_{σ'} = x_σ + (σ' - σ) v           (one ODE step)
    ch07.check_patchify(fn)        # (B, C, h, w) -> (B, N, p·p·C), the order SD3 unpatchifies

Each check runs seeded cases through ddlearn's reference (`FlowMatchEulerDiscreteScheduler`'s
`scale_noise` and `step`, `flow_matching_loss`'s target, `transformer_sd3.patchify`) and through
your function; when yours is off it tries the usual mistakes (σ and 1 - σ swapped, the sign of the
velocity, the step's direction, channels first) and names the one your numbers match.
"""

import torch

from ddlearn.checks import ExerciseError, compare_with_mistakes, randn, run_check
from ddlearn.models.transformer_sd3 import patchify, unpatchify
from ddlearn.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler


def call(name: str, fn, *args, hint: str = ""):
    """fn(*args), with a broadcasting error turned into a hint about shapes."""
    try:
        return fn(*(a.clone() if torch.is_tensor(a) else a for a in args))
    except RuntimeError as error:
        if "size of tensor" not in str(error) and "shape" not in str(error):
            raise
        raise ExerciseError(f"{name}: your code raised `{error}`. {hint}") from None


# --------------------------------------------------------------------------------------------------
# Exercise 1: a point on the straight path from data to noise
# --------------------------------------------------------------------------------------------------
def check_flow_noised(fn):
    """fn(x0, noise, sigma) -> x_σ = (1 - σ) x_0 + σ ε, one σ in [0, 1] per image (B,)."""
    scheduler = FlowMatchEulerDiscreteScheduler()

    def case(shape, sigmas, seed):
        x0, noise = randn(*shape, seed=seed), randn(*shape, seed=seed + 1)
        sigma = torch.tensor(sigmas)
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
        yours = call("flow_noised", fn, x0, noise, sigma,
                     hint="sigma has one value per image, shape (B,); view it as (B, 1, 1, 1) "
                          "to broadcast over the image: sigma.view(-1, 1, 1, 1).")
        compare_with_mistakes("flow_noised", yours, expected, mistakes,
                              "x_σ = (1 - σ) x0 + σ ε, with σ viewed as (B, 1, 1, 1).")

    return run_check("flow_noised", fn,
                     lambda: case((3, 3, 8, 8), [0.9, 0.5, 0.1], seed=0),
                     lambda: case((2, 16, 4, 4), [1.0, 0.25], seed=2))


# --------------------------------------------------------------------------------------------------
# Exercise 2: the velocity the model learns
# --------------------------------------------------------------------------------------------------
def check_velocity_target(fn):
    """fn(x0, noise) -> v = dx_σ/dσ = ε - x_0, the target of `flow_matching_loss`."""

    def case(shape, seed):
        x0, noise = randn(*shape, seed=seed), randn(*shape, seed=seed + 1)
        expected = noise - x0
        mistakes = {
            "the sign is flipped: x_σ = (1 - σ) x0 + σ ε, so dx_σ/dσ = ε - x0 (diffusers' and "
            "SD3's convention; some papers run time the other way and use x0 - ε).": x0 - noise,
            "the velocity is the derivative of the whole path, ε - x0, not the noise alone.":
                noise,
            "the velocity is ε - x0, not the clean image.": x0,
        }
        compare_with_mistakes("velocity_target", call("velocity_target", fn, x0, noise),
                              expected, mistakes, "differentiate x_σ = (1 - σ) x0 + σ ε in σ.")

    return run_check("velocity_target", fn, lambda: case((2, 3, 8, 8), seed=0),
                     lambda: case((5, 2), seed=3))


# --------------------------------------------------------------------------------------------------
# Exercise 3: one Euler step of the sampling ODE
# --------------------------------------------------------------------------------------------------
def check_euler_step(fn):
    """fn(velocity, sigma, sigma_next, sample) -> sample + (σ_next - σ) velocity, as
    FlowMatchEulerDiscreteScheduler.step does, along a whole 6-step schedule (shift 3)."""

    def case(shift, steps, seed):
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(steps)
        x = randn(2, 4, 8, 8, seed=seed)
        for i, t in enumerate(scheduler.timesteps):
            v = randn(2, 4, 8, 8, seed=seed + 10 + i)  # any model's velocity
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
            yours = call("euler_step", fn, v, sigma, sigma_next, x)
            compare_with_mistakes("euler_step", yours, expected, mistakes,
                                  "x_next = x + (σ_next - σ) · v.")
            x = expected

    return run_check("euler_step", fn, lambda: case(3.0, 6, seed=0),
                     lambda: case(1.0, 3, seed=5))


# --------------------------------------------------------------------------------------------------
# Exercise 4: patchify, the way SD3's transformer reads a latent
# --------------------------------------------------------------------------------------------------
def check_patchify(fn):
    """fn(latents, p) -> (B, (h/p)(w/p), p·p·C) tokens, rows of patches left to right, top to
    bottom; in each token the patch's values in (row, column, channel) order, so that the
    model's `unpatchify` puts every value back where it came from."""

    def case(shape, p, seed):
        z = randn(*shape, seed=seed)
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
        yours = call("patchify", fn, z, p)
        compare_with_mistakes("patchify", yours, expected, mistakes,
                              "(B, C, h, w) -> (B, C, h/p, p, w/p, p) -> (B, h/p, w/p, p, p, C) "
                              "-> (B, N, p·p·C).")
        if not torch.equal(unpatchify(torch.as_tensor(yours), p, h, w), z):
            raise ExerciseError("patchify: unpatchify does not give the latent back")

    return run_check("patchify", fn, lambda: case((2, 4, 8, 8), 2, seed=0),
                     lambda: case((1, 3, 6, 4), 2, seed=1), lambda: case((1, 2, 4, 4), 1, seed=2))
