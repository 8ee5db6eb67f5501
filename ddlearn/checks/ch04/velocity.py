"""Chapter 04, exercise 3: the v-prediction target.

`velocity(x0, noise, alphas_cumprod, t)` returns v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022),
ᾱ_t = alphas_cumprod[t] viewed as (B, 1, 1, 1); checked against `losses.target_for`, which it may
not call (nor `DDPMScheduler.get_velocity`). The check names the usual mistakes (a flipped sign,
swapped coefficients, x_t's plus sign, missing square roots). Hidden cases: other schedules, batch
sizes, image sizes and float64.
"""

import torch

from ddlearn import losses
from ddlearn.checks import compare_with_mistakes, guard, randn, run_check
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.schedules import BETA_SCHEDULES


def reference_velocity(x0, noise, alphas_cumprod, t):
    """The answer the cells below use while yours is not solved: v = √ᾱ_t ε - √(1-ᾱ_t) x_0."""
    alpha_bar = alphas_cumprod[t].view(-1, *[1] * (x0.ndim - 1))  # (B,) -> (B, 1, 1, 1)
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0


def check_velocity(fn, hidden=False):
    """fn(x0, noise, alphas_cumprod, t) -> v = √ᾱ_t ε - √(1-ᾱ_t) x_0 for a batch.

    Hidden cases: other schedules, batch sizes, image sizes and float64."""
    explain = lambda error: ("alphas_cumprod[t] has shape (B,): reshape it to (B, 1, 1, 1)."
                             if "size of tensor" in str(error) else None)
    yours = guard("velocity", fn, losses.target_for, DDPMScheduler.get_velocity, reference_velocity,
                  explain=explain)

    def case(beta_schedule, t, seed, size=8, dtype=torch.float32):
        scheduler = DDPMScheduler(beta_schedule=beta_schedule, prediction_type="v_prediction")
        abar, t = scheduler.alphas_cumprod.to(dtype), torch.tensor(t)
        x0 = randn(len(t), 3, size, size, seed=seed).to(dtype)
        noise = randn(len(t), 3, size, size, seed=seed + 1).to(dtype)
        expected = losses.target_for(scheduler, x0, noise, t)
        a = abar[t].view(-1, 1, 1, 1)
        mistakes = {
            "the sign is flipped: v = √ᾱ_t·ε - √(1-ᾱ_t)·x_0 (noise first).":
                (1 - a).sqrt() * x0 - a.sqrt() * noise,
            "the coefficients are swapped: ε gets √ᾱ_t and x_0 gets √(1-ᾱ_t).":
                (1 - a).sqrt() * noise - a.sqrt() * x0,
            "you returned x_t (a plus sign): v has a minus, v = √ᾱ_t ε - √(1-ᾱ_t) x_0.":
                a.sqrt() * noise + (1 - a).sqrt() * x0,
            "the coefficients are square roots: √ᾱ_t and √(1-ᾱ_t).": a * noise - (1 - a) * x0,
        }
        compare_with_mistakes("velocity", yours(x0.clone(), noise.clone(), abar.clone(),
                                                t.clone()), expected, mistakes,
                  "v = √ᾱ_t ε - √(1-ᾱ_t) x_0 with ᾱ_t = alphas_cumprod[t].view(-1, 1, 1, 1).")

    def hidden_cases(rng):
        def draw(dtype):
            schedule = rng.choice(BETA_SCHEDULES)
            t = [rng.randrange(1000) for _ in range(rng.randint(1, 5))]
            size, seed = rng.choice((4, 6, 16)), rng.randrange(10_000)
            return lambda: case(schedule, t, seed, size, dtype)
        return [draw(torch.float32), draw(torch.float64)]

    return run_check("velocity", fn,
                     lambda: case("linear", [0, 400, 999], seed=0),
                     lambda: case("squaredcos_cap_v2", [5, 500], seed=2),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_velocity)
