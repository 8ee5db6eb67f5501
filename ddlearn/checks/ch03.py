"""Checkers for chapter 03 (writing schedulers): your function against ddlearn's schedulers.

    from ddlearn.checks import ch03
    ch03.check_add_noise(add_noise)      # x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε          (DDPM eq. 4)
    ch03.check_ddim_step(ddim_step)      # one deterministic DDIM step, η = 0    (DDIM eq. 12)
    ch03.check_euler_step(euler_step)    # one Euler step of dx/dσ = ε̂ in σ-space (EDM Alg. 2)

Each check runs a few seeded cases through the matching ddlearn scheduler (`add_noise`, `step`)
and through your function. When yours is off, it also tries the usual mistakes (ᾱ where √ᾱ is
meant, the wrong ᾱ in a coefficient, a flipped sign) and names the one your numbers match.
"""

import torch

from ddlearn.checks import ExerciseError, compare_with_mistakes, randn, run_check
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.euler import EulerDiscreteScheduler


def _call(name: str, fn, *args, shape_hint: str = ""):
    """fn(*args), turning a shape error inside the learner's code into a hint."""
    try:
        return fn(*args)
    except RuntimeError as error:
        if "size of tensor" not in str(error) and "shape" not in str(error):
            raise
        raise ExerciseError(f"{name}: your code raised `{error}`. {shape_hint}") from None


# --------------------------------------------------------------------------------------------------
# Exercise 1: the forward process
# --------------------------------------------------------------------------------------------------
def check_add_noise(fn):
    """fn(x0, noise, alphas_cumprod, t) -> x_t for a batch (B, C, H, W) and timesteps t (B,)."""
    shape_hint = ("alphas_cumprod[t] has shape (B,): reshape it to (B, 1, 1, 1) so it multiplies "
                  "each image of the batch, e.g. `.view(-1, 1, 1, 1)` or `[:, None, None, None]`.")

    def case(beta_schedule, t, seed):
        scheduler = DDPMScheduler(beta_schedule=beta_schedule)
        abar = scheduler.alphas_cumprod
        t = torch.tensor(t)
        x0, noise = randn(len(t), 3, 8, 8, seed=seed), randn(len(t), 3, 8, 8, seed=seed + 1)
        expected = scheduler.add_noise(x0, noise, t)
        a = abar[t].view(-1, 1, 1, 1)
        mistakes = {
            "you multiplied by ᾱ_t and (1-ᾱ_t); the coefficients are their square roots, "
            "√ᾱ_t and √(1-ᾱ_t) (standard deviations, not variances).":
                a * x0 + (1 - a) * noise,
            "the noise coefficient is √(1-ᾱ_t), not 1-√ᾱ_t: the variances ᾱ_t and 1-ᾱ_t add "
            "up to 1, the square roots do not.": a.sqrt() * x0 + (1 - a.sqrt()) * noise,
            "x_0 and ε are swapped: x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·noise.":
                a.sqrt() * noise + (1 - a).sqrt() * x0,
        }
        yours = _call("add_noise", fn, x0.clone(), noise.clone(), abar.clone(), t.clone(),
                      shape_hint=shape_hint)
        compare_with_mistakes("add_noise", yours, expected, mistakes,
                  "Check x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε with ᾱ_t = alphas_cumprod[t], one per image.")

    return run_check("add_noise", fn,
                     lambda: case("linear", [0, 250, 999, 500], seed=0),
                     lambda: case("squaredcos_cap_v2", [10, 990, 600], seed=2))


# --------------------------------------------------------------------------------------------------
# Exercise 2: DDIM, η = 0
# --------------------------------------------------------------------------------------------------
def check_ddim_step(fn):
    """fn(eps, x_t, alpha_prod_t, alpha_prod_t_prev) -> x_{t-1} (η = 0, no clipping)."""

    def case(num_inference_steps, index, seed):
        scheduler = DDIMScheduler(clip_sample=False)
        scheduler.set_timesteps(num_inference_steps)
        t = scheduler.timesteps[index]
        prev_t = t - scheduler.config.num_train_timesteps // num_inference_steps
        a_t = scheduler.alphas_cumprod[t]
        a_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
        x_t, eps = randn(2, 3, 8, 8, seed=seed), randn(2, 3, 8, 8, seed=seed + 1)
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
        yours = _call("ddim_step", fn, eps.clone(), x_t.clone(), a_t.clone(), a_prev.clone())
        compare_with_mistakes("ddim_step", yours, expected, mistakes,
                  "First x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t (eq. 12's 'predicted x_0'), "
                  "then x_{t-1} = √ᾱ_{t-1} x̂_0 + √(1-ᾱ_{t-1}) ε̂.")

    return run_check("ddim_step", fn,
                     lambda: case(10, 0, seed=0),  # the first, noisiest step
                     lambda: case(50, 25, seed=2),
                     lambda: case(10, 9, seed=4))  # the last step: ᾱ_{t-1} = 1, x_{t-1} = x̂_0


# --------------------------------------------------------------------------------------------------
# Exercise 3: Euler in σ-space
# --------------------------------------------------------------------------------------------------
def check_euler_step(fn):
    """fn(eps, x, sigma, sigma_next) -> x at σ_next, with x = x_0 + σ ε (Euler's scaling)."""

    def case(num_inference_steps, index, seed):
        scheduler = EulerDiscreteScheduler()
        scheduler.set_timesteps(num_inference_steps)
        sigma, sigma_next = scheduler.sigmas[index], scheduler.sigmas[index + 1]
        x = randn(2, 3, 8, 8, seed=seed) * (sigma**2 + 1) ** 0.5
        eps = randn(2, 3, 8, 8, seed=seed + 1)
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
        yours = _call("euler_step", fn, eps.clone(), x.clone(), sigma.clone(), sigma_next.clone())
        compare_with_mistakes("euler_step", yours, expected, mistakes,
                  "The slope is d = (x - x̂_0) / σ = ε̂, and one Euler step is "
                  "x_next = x + (σ_next - σ) d.")

    return run_check("euler_step", fn,
                     lambda: case(10, 0, seed=0),
                     lambda: case(25, 12, seed=2),
                     lambda: case(10, 9, seed=4))  # the last step: σ_next = 0
