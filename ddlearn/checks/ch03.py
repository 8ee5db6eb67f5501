"""Checkers for chapter 03 (writing schedulers): your function against ddlearn's schedulers.

    from ddlearn.checks import ch03
    ch03.check_add_noise(add_noise)      # x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε          (DDPM eq. 4)
    ch03.check_ddim_step(ddim_step)      # one deterministic DDIM step, η = 0    (DDIM eq. 12)
    ch03.check_euler_step(euler_step)    # one Euler step of dx/dσ = ε̂ in σ-space (EDM Alg. 2)

Each check runs seeded cases through the matching ddlearn scheduler (`add_noise`, `step`) and
through your function, which may not call those (see `ddlearn.checks.runner`); `hidden=True` runs
other schedules, step counts, shapes and float64. When yours is off, it tries the usual mistakes
(ᾱ where √ᾱ is meant, the wrong ᾱ in a coefficient, a flipped sign) and names the one your
numbers match. `reference_*` are the answers the notebook uses below a check that fails in
keep-going mode.
"""

import torch

import ddlearn.schedulers as schedulers
from ddlearn.checks import ExerciseError, compare_with_mistakes, guard, randn, run_check
from ddlearn.schedulers import common
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.euler import EulerDiscreteScheduler

#: every ddlearn scheduler with an `add_noise`: each one is the answer to exercise 1
NOISING = [getattr(schedulers, name) for name in schedulers.__all__
           if hasattr(getattr(schedulers, name), "add_noise")]
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _explain(error) -> str:
    """A hint for the raw errors of a learner's tensor code."""
    if "not float" in str(error) or "'float' object has no attribute" in str(error):
        return "keep the coefficients tensors: `.sqrt()` or torch.sqrt of a tensor, not a float."
    return None


def _explain_broadcast(error) -> str:
    if "size of tensor" in str(error) or "is invalid for input of size" in str(error):
        return ("alphas_cumprod[t] has shape (B,): reshape it to (B, 1, 1, 1) so it multiplies "
                "each image of the batch, e.g. `.view(-1, 1, 1, 1)` or `[:, None, None, None]` "
                "(no fixed batch or image size).")
    return _explain(error)


def _check_dtype(name: str, yours, dtype):
    if torch.is_tensor(yours) and yours.dtype != dtype:
        raise ExerciseError(f"{name}: the inputs are {dtype} but your result is {yours.dtype}: "
                            f"compute in the inputs' dtype (no .float(), no new torch.tensor).")


def _draw_shape(rng) -> tuple:
    """A batch of 2, 3 or 5 images, 1-4 channels, 4-16 pixels (never as wide as the batch)."""
    return (rng.choice((2, 3, 5)), rng.choice((1, 3, 4)), rng.choice((4, 6, 16)),
            rng.choice((4, 6, 16)))


# --------------------------------------------------------------------------------------------------
# Exercise 1: the forward process
# --------------------------------------------------------------------------------------------------
def reference_add_noise(x0, noise, alphas_cumprod, t):
    """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, with ᾱ_t = alphas_cumprod[t] for each image of the batch."""
    abar_t = alphas_cumprod[t].view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * noise


def check_add_noise(fn, hidden=False):
    """fn(x0, noise, alphas_cumprod, t) -> x_t for a batch (B, C, H, W) and timesteps t (B,).

    Hidden: other schedules, num_train_timesteps, batch and image sizes, float64."""
    yours = guard("add_noise", fn, reference_add_noise, common.add_noise,
                  common.alpha_bar_coefficients, *[cls.add_noise for cls in NOISING],
                  explain=_explain_broadcast)

    def case(beta_schedule, t, seed, image=(3, 8, 8), dtype=torch.float32, T=1000):
        scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule)
        abar, t = scheduler.alphas_cumprod.to(dtype), torch.tensor(t)
        x0 = randn(len(t), *image, seed=seed).to(dtype)  # (B, C, H, W)
        noise = randn(len(t), *image, seed=seed + 1).to(dtype)
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
        result = yours(x0.clone(), noise.clone(), abar.clone(), t.clone())
        compare_with_mistakes("add_noise", result, expected, mistakes,
                  "Check x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε with ᾱ_t = alphas_cumprod[t], one per image.")
        _check_dtype("add_noise", result, dtype)

    def hidden_cases(rng):
        def draw(dtype):
            T, (batch, *image) = rng.choice((1000, 500, 200)), _draw_shape(rng)
            t = [rng.randrange(T) for _ in range(batch)]
            args = (rng.choice(BETA_SCHEDULES), t, rng.randrange(10_000), image, dtype, T)
            return lambda: case(*args)

        return [draw(torch.float32), draw(torch.float64), draw(torch.float64)]

    return run_check("add_noise", fn,
                     lambda: case("linear", [0, 250, 999, 500], seed=0),
                     lambda: case("squaredcos_cap_v2", [10, 990, 600], seed=2),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_add_noise)


# --------------------------------------------------------------------------------------------------
# Exercise 2: DDIM, η = 0
# --------------------------------------------------------------------------------------------------
def reference_ddim_step(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    """One DDIM step (eq. 12, η = 0): x_t -> x_{t-1} through the predicted x_0."""
    x0_hat = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    return alpha_prod_t_prev.sqrt() * x0_hat + (1 - alpha_prod_t_prev).sqrt() * eps


def check_ddim_step(fn, hidden=False):
    """fn(eps, x_t, alpha_prod_t, alpha_prod_t_prev) -> x_{t-1} (η = 0, no clipping).

    Hidden: other schedules, spacings, step counts and steps, shapes, float64."""
    yours = guard("ddim_step", fn, reference_ddim_step, DDIMScheduler.step, common.predict_x0,
                  explain=_explain)

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
        _check_dtype("ddim_step", result, dtype)

    def hidden_cases(rng):
        def draw(dtype, last=False):
            n = rng.randint(2, 60)
            args = (n, n - 1 if last else rng.randrange(n), rng.randrange(10_000),
                    _draw_shape(rng), dtype)
            config = dict(beta_schedule=rng.choice(BETA_SCHEDULES[:2]),
                          timestep_spacing=rng.choice(("leading", "trailing")),
                          set_alpha_to_one=rng.choice((True, False)))
            return lambda: case(*args, **config)

        return [draw(torch.float32), draw(torch.float64), draw(torch.float64, last=True)]

    return run_check("ddim_step", fn,
                     lambda: case(10, 0, seed=0),  # the first, noisiest step
                     lambda: case(50, 25, seed=2),
                     lambda: case(10, 9, seed=4),  # the last step: ᾱ_{t-1} = 1, x_{t-1} = x̂_0
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_ddim_step)


# --------------------------------------------------------------------------------------------------
# Exercise 3: Euler in σ-space
# --------------------------------------------------------------------------------------------------
def reference_euler_step(eps, x, sigma, sigma_next):
    """One Euler step of dx/dσ = ε̂ from σ to sigma_next."""
    derivative = eps  # (x - x̂_0) / σ with x̂_0 = x - σ ε̂
    return x + (sigma_next - sigma) * derivative


def check_euler_step(fn, hidden=False):
    """fn(eps, x, sigma, sigma_next) -> x at σ_next, with x = x_0 + σ ε (Euler's scaling).

    Hidden: other schedules, Karras σ's, step counts and steps, shapes, float64."""
    yours = guard("euler_step", fn, reference_euler_step, EulerDiscreteScheduler.step,
                  common.denoise, explain=_explain)

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
        _check_dtype("euler_step", result, dtype)

    def hidden_cases(rng):
        def draw(dtype, last=False):
            n = rng.randint(2, 60)
            args = (n, n - 1 if last else rng.randrange(n), rng.randrange(10_000),
                    _draw_shape(rng), dtype)
            config = dict(beta_schedule=rng.choice(BETA_SCHEDULES[:2]),
                          timestep_spacing=rng.choice(("linspace", "leading", "trailing")),
                          use_karras_sigmas=rng.choice((True, False)))
            return lambda: case(*args, **config)

        return [draw(torch.float32), draw(torch.float64), draw(torch.float64, last=True)]

    return run_check("euler_step", fn,
                     lambda: case(10, 0, seed=0),
                     lambda: case(25, 12, seed=2),
                     lambda: case(10, 9, seed=4),  # the last step: σ_next = 0
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_euler_step)
