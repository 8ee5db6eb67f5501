"""Chapter 03, exercise 2: one deterministic DDIM step, η = 0.

`ddim_step(eps, x_t, alpha_prod_t, alpha_prod_t_prev)` returns x_{t-1} = √ᾱ_{t-1} x̂_0 +
√(1-ᾱ_{t-1}) ε̂ with x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t (DDIM eq. 12), no clipping; checked against
`DDIMScheduler.step`, which it may not call (nor `common.predict_x0`). The check names the usual
mistakes (returning x̂_0, ᾱ_t where ᾱ_{t-1} belongs, a missing square root, multiplying by √ᾱ_t)
and wants the inputs' dtype back. Hidden cases: other schedules, spacings, set_alpha_to_one, step
counts and steps (the last one among them), shapes, float64.
"""

import torch

from ddlearn.checks import check_dtype, compare_with_mistakes, guard, randn, run_check
from ddlearn.checks.ch03.common import explain_floats, step_cases
from ddlearn.schedulers import common
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.schedules import BETA_SCHEDULES


def reference_ddim_step(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    """One DDIM step (eq. 12, η = 0): x_t -> x_{t-1} through the predicted x_0."""
    x0_hat = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    return alpha_prod_t_prev.sqrt() * x0_hat + (1 - alpha_prod_t_prev).sqrt() * eps


def check_ddim_step(fn, hidden=False):
    """fn(eps, x_t, alpha_prod_t, alpha_prod_t_prev) -> x_{t-1} (η = 0, no clipping).

    Hidden: other schedules, spacings, step counts and steps, shapes, float64."""
    yours = guard("ddim_step", fn, reference_ddim_step, DDIMScheduler.step, common.predict_x0,
                  explain=explain_floats)

    def case(num_inference_steps, index, seed, shape=(2, 3, 8, 8), dtype=torch.float32,
             **config):
        scheduler = DDIMScheduler(clip_sample=False, **config)
        scheduler.set_timesteps(num_inference_steps)
        t = scheduler.timesteps[index]
        prev_t = t - scheduler.config.num_train_timesteps // num_inference_steps
        a_t = scheduler.alphas_cumprod[t].to(dtype)
        a_prev = (scheduler.alphas_cumprod[prev_t] if prev_t >= 0
                  else scheduler.final_alpha_cumprod).to(dtype)
        x_t, eps = randn(*shape, seed=seed).to(dtype), randn(*shape, seed=seed + 1).to(dtype)
        expected = scheduler.step(eps, t, x_t, eta=0.0).prev_sample
        x0_hat = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        mistakes = {
            "you returned x̂_0 itself; eq. (12) goes on: √ᾱ_{t-1} x̂_0 + √(1-ᾱ_{t-1}) ε̂.": x0_hat,
            "the direction term uses ᾱ of the *previous* step: √(1-ᾱ_{t-1}) ε̂, not √(1-ᾱ_t) ε̂.":
                a_prev.sqrt() * x0_hat + (1 - a_t).sqrt() * eps,
            "x̂_0 needs √ᾱ_{t-1} in front of it (you used ᾱ_{t-1} without the square root).":
                a_prev * x0_hat + (1 - a_prev).sqrt() * eps,
            "x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t: divide by √ᾱ_t (you multiplied).":
                a_prev.sqrt() * (x_t - (1 - a_t).sqrt() * eps) * a_t.sqrt()
                + (1 - a_prev).sqrt() * eps,
        }
        result = yours(eps.clone(), x_t.clone(), a_t.clone(), a_prev.clone())
        compare_with_mistakes("ddim_step", result, expected, mistakes,
                  "First x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t (eq. 12's 'predicted x_0'), "
                  "then x_{t-1} = √ᾱ_{t-1} x̂_0 + √(1-ᾱ_{t-1}) ε̂.")
        check_dtype("ddim_step", result, dtype)

    def hidden_cases(rng):
        return step_cases(rng, case, lambda: dict(
            beta_schedule=rng.choice(BETA_SCHEDULES[:2]),
            timestep_spacing=rng.choice(("leading", "trailing")),
            set_alpha_to_one=rng.choice((True, False))))

    return run_check("ddim_step", fn,
                     lambda: case(10, 0, seed=0),  # the first, noisiest step
                     lambda: case(50, 25, seed=2),
                     lambda: case(10, 9, seed=4),  # the last step: ᾱ_{t-1} = 1, x_{t-1} = x̂_0
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_ddim_step)
