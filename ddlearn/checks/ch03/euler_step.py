"""Chapter 03, exercise 3: one Euler step in σ-space.

`euler_step(eps, x, sigma, sigma_next)` returns x + (σ_next - σ) ε̂: one Euler step of dx/dσ = ε̂,
the slope (x - x̂_0) / σ with x̂_0 = x - σ ε̂ (EDM Alg. 2, with x = x_0 + σ ε unscaled); checked
against `EulerDiscreteScheduler.step`, which it may not call (nor `common.denoise`). The check
names the usual mistakes (a flipped step, jumping to x̂_0, scaling x by √(σ²+1)) and wants the
inputs' dtype back. Hidden cases: other schedules, spacings, Karras σ's, step counts and steps
(the last one, σ_next = 0, among them), shapes, float64.
"""

import torch

from ddlearn.checks import check_dtype, compare_with_mistakes, guard, randn, run_check
from ddlearn.checks.ch03.common import explain_floats, step_cases
from ddlearn.schedulers import common
from ddlearn.schedulers.euler import EulerDiscreteScheduler
from ddlearn.schedulers.schedules import BETA_SCHEDULES


def reference_euler_step(eps, x, sigma, sigma_next):
    """One Euler step of dx/dσ = ε̂ from σ to sigma_next."""
    derivative = eps  # (x - x̂_0) / σ with x̂_0 = x - σ ε̂
    return x + (sigma_next - sigma) * derivative


def check_euler_step(fn, hidden=False):
    """fn(eps, x, sigma, sigma_next) -> x at σ_next, with x = x_0 + σ ε (Euler's scaling).

    Hidden: other schedules, Karras σ's, step counts and steps, shapes, float64."""
    yours = guard("euler_step", fn, reference_euler_step, EulerDiscreteScheduler.step,
                  common.denoise, explain=explain_floats)

    def case(num_inference_steps, index, seed, shape=(2, 3, 8, 8), dtype=torch.float32,
             **config):
        scheduler = EulerDiscreteScheduler(**config)
        scheduler.set_timesteps(num_inference_steps)
        sigma, sigma_next = (scheduler.sigmas[i].to(dtype) for i in (index, index + 1))
        x = randn(*shape, seed=seed).to(dtype) * (sigma**2 + 1) ** 0.5
        eps = randn(*shape, seed=seed + 1).to(dtype)
        scheduler.step_index = index
        expected = scheduler.step(eps, scheduler.timesteps[index], x).prev_sample
        mistakes = {
            "the step goes *down* in σ: x + (σ_next - σ) ε̂, and σ_next < σ (you added).":
                x + (sigma - sigma_next) * eps,
            "you returned the denoised x̂_0 = x - σ ε̂ (a jump straight to σ = 0); Euler moves "
            "only from σ to σ_next.": x - sigma * eps,
            "x is already the unscaled sample x_0 + σ ε: divide by √(σ²+1) only for the model's "
            "input (scale_model_input), not in the step.":
                x / (sigma**2 + 1) ** 0.5 + (sigma_next - sigma) * eps,
        }
        result = yours(eps.clone(), x.clone(), sigma.clone(), sigma_next.clone())
        compare_with_mistakes("euler_step", result, expected, mistakes,
                  "The slope is d = (x - x̂_0) / σ = ε̂, and one Euler step is "
                  "x_next = x + (σ_next - σ) d.")
        check_dtype("euler_step", result, dtype)

    def hidden_cases(rng):
        return step_cases(rng, case, lambda: dict(
            beta_schedule=rng.choice(BETA_SCHEDULES[:2]),
            timestep_spacing=rng.choice(("linspace", "leading", "trailing")),
            use_karras_sigmas=rng.choice((True, False))))

    return run_check("euler_step", fn,
                     lambda: case(10, 0, seed=0),
                     lambda: case(25, 12, seed=2),
                     lambda: case(10, 9, seed=4),  # the last step: σ_next = 0
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_euler_step)
