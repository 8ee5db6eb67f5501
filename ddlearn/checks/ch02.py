"""Checkers for chapter 02 (deconstructing the pipeline): your function against ddlearn's pieces.

    from ddlearn.checks import ch02
    ch02.check_predict_x0(predict_x0)   # x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t         (DDPM eq. 15)
    ch02.check_timesteps(timesteps)     # "leading", "trailing", "linspace"  (Lin et al. 2023, T. 2)
    ch02.check_sample(sample)           # the sampling loop, for any scheduler

Each check runs a few seeded cases through the reference (`DDPMScheduler.step`,
`set_timesteps`, the loop of `DDPMPipeline.__call__`) and through your function. When yours is
off, it also tries the usual mistakes and names the one your numbers match.
"""

import numpy as np
import torch

from ddlearn.checks import (
    ExerciseError,
    as_tensor,
    compare_with_mistakes,
    randn,
    run_check,
    tiny_unet,
)
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.euler import EulerDiscreteScheduler
from ddlearn.schedulers.schedules import spaced_timesteps


# --------------------------------------------------------------------------------------------------
# Exercise 1: the model's guess of the clean image
# --------------------------------------------------------------------------------------------------
def check_predict_x0(fn):
    """fn(x_t, eps, alpha_prod_t) -> x̂_0, no clipping; alpha_prod_t is ᾱ_t, a 0-d tensor."""

    def case(t, seed):
        scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)
        scheduler.set_timesteps(1000)
        x_t, eps = randn(2, 3, 8, 8, seed=seed), randn(2, 3, 8, 8, seed=seed + 1)
        expected = scheduler.step(eps, t, x_t).pred_original_sample
        a = scheduler.alphas_cumprod[t]
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
        yours = fn(x_t.clone(), eps.clone(), a.clone())
        compare_with_mistakes("predict_x0", as_tensor(yours), expected, mistakes,
                              "Solve x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε for x_0, with ε̂ in place of ε.")

    return run_check("predict_x0", fn,
                     lambda: case(500, seed=0),
                     lambda: case(950, seed=2),   # very noisy: small √ᾱ_t, big errors show
                     lambda: case(0, seed=4))


# --------------------------------------------------------------------------------------------------
# Exercise 2: which timesteps a sampler visits
# --------------------------------------------------------------------------------------------------
def check_timesteps(fn):
    """fn(num_inference_steps, num_train_timesteps, spacing) -> descending integer timesteps."""

    def case(n, T, spacing):
        expected = torch.from_numpy(spaced_timesteps(n, T, spacing))
        name = f"timesteps({n}, {T}, {spacing!r})"
        yours = fn(n, T, spacing)
        if yours is None:
            raise ExerciseError(f"{name}: your function returned None — did you forget `return`?")
        yours = as_tensor(yours)
        if yours.ndim != 1 or len(yours) != n:
            raise ExerciseError(f"{name}: expected {n} timesteps in a 1-D array, got shape "
                                f"{tuple(yours.shape)}")
        if len(yours) > 1 and torch.equal(yours.double(), expected.flip(0).double()):
            raise ExerciseError(f"{name}: right values, wrong order: sampling goes from noise "
                                f"to image, so the timesteps must be descending (`[::-1]`).")
        if yours.is_floating_point() and not torch.equal(yours, yours.round()):
            raise ExerciseError(f"{name}: {yours[:3].tolist()}... are not whole numbers; the "
                                f"UNet was trained on integer t: round them (np.round).")
        step = T // n
        mistakes = {
            "trailing": {
                "'trailing' ends at T-1 = the last training step, not at T: subtract 1.":
                    torch.from_numpy(np.round(np.arange(T, 0, -T / n))).long(),
                "'trailing' counts down from T in steps of T / n and rounds *afterwards* (you "
                "rounded the step size first).": torch.arange(T, 0, -round(T / n))[:n] - 1,
            },
            "leading": {
                "'leading' starts at 0 and goes up in steps of T // n (then reverse it); you "
                "started from T-1.": torch.arange(T - 1, -1, -step)[:n],
            },
            "linspace": {
                "'linspace' spans 0..T-1 (both ends included): np.linspace(0, T - 1, n).":
                    torch.from_numpy(np.linspace(0, T, n).round()[::-1].copy()).long(),
                "round the linspace values (np.round), don't truncate them with astype(int).":
                    torch.from_numpy(np.linspace(0, T - 1, n)[::-1].astype(np.int64).copy()),
            },
        }[spacing]
        compare_with_mistakes(name, yours, expected, mistakes,
                              f"'{spacing}' in Lin et al. 2023, Table 2; compare yours with "
                              f"{expected[:4].tolist()}...")

    cases = [(n, T, spacing) for n, T in ((10, 1000), (7, 1000), (3, 50))
             for spacing in ("leading", "trailing", "linspace")]
    return run_check("timesteps", fn, *[lambda c=c: case(*c) for c in cases])


# --------------------------------------------------------------------------------------------------
# Exercise 3: the sampling loop, for any scheduler
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample(unet, scheduler, x_T, num_inference_steps, generator=None) -> torch.Tensor:
    """The reference loop: what DDPMPipeline.__call__ does between the noise and postprocess."""
    scheduler.set_timesteps(num_inference_steps)
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        noise_pred = unet(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(noise_pred, t, x, generator=generator).prev_sample
    return x


def _sample_without(unet, scheduler, x_T, n, generator, scale_start=True, scale_input=True):
    scheduler.set_timesteps(n)
    x = x_T * scheduler.init_noise_sigma if scale_start else x_T
    for t in scheduler.timesteps:
        with torch.no_grad():
            noise_pred = unet(scheduler.scale_model_input(x, t) if scale_input else x, t).sample
        x = scheduler.step(noise_pred, t, x, generator=generator).prev_sample
    return x


def check_sample(fn):
    """fn(unet, scheduler, x_T, num_inference_steps, generator) -> x_0, for DDPM, DDIM, Euler."""
    unet = tiny_unet((8, 16), layers_per_block=1, seed=0)

    def case(scheduler_cls, seed, n=4):
        config = DDPMScheduler(beta_schedule="squaredcos_cap_v2").config
        x_T = randn(2, 3, 16, 16, seed=seed)
        gen = lambda: torch.Generator().manual_seed(seed + 1)
        expected = sample(unet, scheduler_cls.from_config(config), x_T.clone(), n, gen())
        wrong = lambda **kw: _sample_without(unet, scheduler_cls.from_config(config), x_T.clone(),
                                             n, gen(), **kw)
        mistakes = {
            "start from x_T * scheduler.init_noise_sigma: σ-space samplers like Euler start at "
            "σ_max, not at 1.": wrong(scale_start=False),
            "feed the UNet scheduler.scale_model_input(x, t), not x: Euler divides by √(σ²+1) "
            "so the UNet sees the scale it was trained on.": wrong(scale_input=False),
        }
        name = f"sample with {scheduler_cls.__name__}"
        yours = fn(unet, scheduler_cls.from_config(config), x_T.clone(), n, gen())
        compare_with_mistakes(name, as_tensor(yours), expected, mistakes,
                              "set_timesteps(n); x = x_T * init_noise_sigma; for t in "
                              "scheduler.timesteps: ε̂ = unet(scale_model_input(x, t), t).sample; "
                              "x = step(ε̂, t, x, generator=generator).prev_sample.")

    return run_check("sample", fn,
                     lambda: case(DDIMScheduler, seed=0),
                     lambda: case(DDPMScheduler, seed=2),  # step noise: pass the generator
                     lambda: case(EulerDiscreteScheduler, seed=4))
