"""Chapter 07, exercise 1: a point on the straight path from data to noise.

`flow_noised(x0, noise, sigma)` returns x_σ = (1 - σ) x_0 + σ ε, one σ in [0, 1] per image viewed
as (B, 1, ..., 1); checked against `FlowMatchEulerDiscreteScheduler.scale_noise`, which it may not
call (nor Heun's, nor `common.add_noise`). The check wants the inputs' dtype back and names the
usual mistakes (σ and 1 - σ swapped, the variance-preserving path, σ left off the noise, σ viewed
as (B, 1, 1, 1) for points). Hidden cases: 2-D points and 5-D video latents, other batch sizes,
σ's and float64.
"""

from functools import partial

import torch

from ddlearn.checks import guard, randn, run_check
from ddlearn.checks.ch07.common import compare_dtype
from ddlearn.schedulers.common import add_noise
from ddlearn.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ddlearn.schedulers.flow_match_heun import FlowMatchHeunDiscreteScheduler

SIGMA_VIEW = ("sigma has one value per image, shape (B,); view it as (B, 1, 1, 1) to broadcast "
              "over the image: sigma.view(-1, *[1] * (x0.ndim - 1)).")


def broadcast_hint(error) -> str:
    return SIGMA_VIEW if "size of tensor" in str(error) else None


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
