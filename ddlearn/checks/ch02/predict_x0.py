"""Chapter 02, exercise 1: the model's guess of the clean image.

`predict_x0(x_t, eps, alpha_prod_t)` returns x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t (DDPM eq. 15), no
clipping, checked against `common.predict_x0`. It may not call that, `common.denoise` or any
scheduler's `step`; the check names the usual mistakes (ᾱ_t for √ᾱ_t, a missing square root, a
flipped sign, dividing only the noise term) and wants the inputs' dtype back. Hidden cases: other
beta schedules, timesteps, shapes and float64.
"""

import torch

import ddlearn.schedulers as schedulers
from ddlearn.checks import as_tensor, check_dtype, compare_with_mistakes, guard, randn, run_check
from ddlearn.checks.ch02.common import SCHEDULERS
from ddlearn.schedulers import common
from ddlearn.schedulers.schedules import BETA_SCHEDULES


def reference_predict_x0(x_t, eps, alpha_prod_t):
    """x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t (DDPM eq. 15); alpha_prod_t is ᾱ_t, a 0-d tensor."""
    return (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()


def check_predict_x0(fn, hidden=False):
    """fn(x_t, eps, alpha_prod_t) -> x̂_0, no clipping. Hidden: other schedules, shapes, float64."""
    floats = ("not float", "'float' object has no attribute")
    explain = lambda error: ("alpha_prod_t is a 0-d tensor: keep it one and take `.sqrt()` (or "
                             "torch.sqrt) of tensors, not of floats."
                             if any(words in str(error) for words in floats) else None)
    yours = guard("predict_x0", fn, reference_predict_x0, common.predict_x0, common.denoise,
                  *[cls.step for cls in SCHEDULERS], explain=explain)

    def case(beta_schedule, t, seed, shape=(2, 3, 8, 8), dtype=torch.float32):
        a = schedulers.DDPMScheduler(beta_schedule=beta_schedule).alphas_cumprod[t].to(dtype)
        x_t, eps = randn(*shape, seed=seed).to(dtype), randn(*shape, seed=seed + 1).to(dtype)
        expected = common.predict_x0(eps, x_t, a.sqrt(), (1 - a).sqrt(), "epsilon")
        mistakes = {
            "you divided by ᾱ_t; eq. (15) divides by its square root √ᾱ_t.":
                (x_t - (1 - a).sqrt() * eps) / a,
            "the noise term is √(1-ᾱ_t) ε̂ (you used (1-ᾱ_t) ε̂ without the square root).":
                (x_t - (1 - a) * eps) / a.sqrt(),
            "subtract the noise: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε solved for x_0 has a minus sign.":
                (x_t + (1 - a).sqrt() * eps) / a.sqrt(),
            "divide the whole difference (x_t - √(1-ᾱ_t) ε̂) by √ᾱ_t, not only the noise term.":
                x_t - (1 - a).sqrt() * eps / a.sqrt(),
        }
        result = as_tensor(yours(x_t.clone(), eps.clone(), a.clone()))
        compare_with_mistakes("predict_x0", result, expected, mistakes,
                              "Solve x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε for x_0, with ε̂ in place of ε.")
        check_dtype("predict_x0", result, dtype)

    def hidden_cases(rng):
        def draw(dtype):
            shape = (rng.randint(1, 4), rng.choice((1, 3, 4)), rng.choice((4, 6, 16)),
                     rng.choice((4, 6, 16)))
            args = (rng.choice(BETA_SCHEDULES), rng.randrange(980), rng.randrange(10_000), shape)
            return lambda: case(*args, dtype=dtype)

        return [draw(torch.float32), draw(torch.float64), draw(torch.float64)]

    return run_check("predict_x0", fn,
                     lambda: case("squaredcos_cap_v2", 500, seed=0),
                     lambda: case("squaredcos_cap_v2", 950, seed=2),  # small √ᾱ_t: errors show
                     lambda: case("squaredcos_cap_v2", 0, seed=4),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_predict_x0)
