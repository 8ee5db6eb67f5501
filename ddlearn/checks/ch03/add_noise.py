"""Chapter 03, exercise 1: the forward process.

`add_noise(x0, noise, alphas_cumprod, t)` returns x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (DDPM eq. 4) for a
batch (B, C, H, W) with one timestep per image, ᾱ_t = alphas_cumprod[t] viewed as (B, 1, 1, 1);
checked against `DDPMScheduler.add_noise`. It may not call any scheduler's `add_noise` or
`common.add_noise`; the check names the usual mistakes (ᾱ where √ᾱ is meant, 1-√ᾱ_t, x_0 and ε
swapped) and wants the inputs' dtype back. Hidden cases: other schedules, num_train_timesteps,
batch and image sizes, float64.
"""

import torch

import ddlearn.schedulers as schedulers
from ddlearn.checks import check_dtype, compare_with_mistakes, guard, randn, run_check
from ddlearn.checks.ch03.common import draw_shape, explain_floats
from ddlearn.schedulers import common
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.schedules import BETA_SCHEDULES

#: every ddlearn scheduler with an `add_noise`: each one is the answer to this exercise
NOISING = [getattr(schedulers, name) for name in schedulers.__all__
           if hasattr(getattr(schedulers, name), "add_noise")]


def _explain_broadcast(error) -> str:
    if "size of tensor" in str(error) or "is invalid for input of size" in str(error):
        return ("alphas_cumprod[t] has shape (B,): reshape it to (B, 1, 1, 1) so it multiplies "
                "each image of the batch, e.g. `.view(-1, 1, 1, 1)` or `[:, None, None, None]` "
                "(no fixed batch or image size).")
    return explain_floats(error)


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
        check_dtype("add_noise", result, dtype)

    def hidden_cases(rng):
        def draw(dtype):
            T, (batch, *image) = rng.choice((1000, 500, 200)), draw_shape(rng)
            t = [rng.randrange(T) for _ in range(batch)]
            args = (rng.choice(BETA_SCHEDULES), t, rng.randrange(10_000), image, dtype, T)
            return lambda: case(*args)

        return [draw(torch.float32), draw(torch.float64), draw(torch.float64)]

    return run_check("add_noise", fn,
                     lambda: case("linear", [0, 250, 999, 500], seed=0),
                     lambda: case("squaredcos_cap_v2", [10, 990, 600], seed=2),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_add_noise)
