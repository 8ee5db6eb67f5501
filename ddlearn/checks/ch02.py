"""Checkers for chapter 02 (deconstructing the pipeline): your function against ddlearn's pieces.

    from ddlearn.checks import ch02
    ch02.check_predict_x0(predict_x0)   # x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t         (DDPM eq. 15)
    ch02.check_timesteps(timesteps)     # "leading", "trailing", "linspace"  (Lin et al. 2023, T. 2)
    ch02.check_sample(sample)           # the sampling loop, for any scheduler

Each check runs seeded cases through ddlearn (`common.predict_x0`, `spaced_timesteps`, the loop of
`DDPMPipeline`) and through your function, which may not call those (see `ddlearn.checks.runner`);
`hidden=True` runs other schedules, shapes, dtypes, step counts and schedulers. When yours is off,
it tries the usual mistakes and names the one your numbers match. `reference_*` are the answers
the notebook uses below a check that fails in keep-going mode.
"""

from fractions import Fraction

import numpy as np
import torch

import ddlearn.schedulers as schedulers
from ddlearn.checks import (
    ExerciseError,
    as_tensor,
    compare,
    compare_with_mistakes,
    guard,
    randn,
    run_check,
    tiny_unet,
)
from ddlearn.pipelines.ddpm import DDIMPipeline, DDPMPipeline
from ddlearn.schedulers import common
from ddlearn.schedulers.schedules import spaced_timesteps

#: every ddlearn scheduler class: each one's `step` computes x̂_0, its `set_timesteps` the spacings
SCHEDULERS = [getattr(schedulers, name) for name in schedulers.__all__ if name != "SchedulerOutput"]
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _check_dtype(name: str, yours, dtype):
    if torch.is_tensor(yours) and yours.dtype != dtype:
        raise ExerciseError(f"{name}: the inputs are {dtype} but your result is {yours.dtype}: "
                            f"compute in the inputs' dtype (no .float(), no new torch.tensor).")


# --------------------------------------------------------------------------------------------------
# Exercise 1: the model's guess of the clean image
# --------------------------------------------------------------------------------------------------
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
        _check_dtype("predict_x0", result, dtype)

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


# --------------------------------------------------------------------------------------------------
# Exercise 2: which timesteps a sampler visits
# --------------------------------------------------------------------------------------------------
SPACINGS = ("leading", "trailing", "linspace")


def reference_timesteps(num_inference_steps, num_train_timesteps, spacing):
    """Lin et al. 2023, Table 2, descending: what `set_timesteps` visits for each spacing."""
    n, T = num_inference_steps, num_train_timesteps
    if spacing == "leading":
        steps = np.arange(0, n) * (T // n)
    elif spacing == "trailing":
        steps = np.round(np.arange(T, 0, -T / n)) - 1
    else:  # "linspace"
        steps = np.round(np.linspace(0, T - 1, n))
    return np.sort(steps)[::-1].astype(np.int64)  # descending: from noise to image


def _distinct(mistakes: dict) -> dict:
    """Mistakes that give the same numbers share one message, true of each of them."""
    groups = {}  # the numbers -> (the wrong tensor, the messages of the mistakes that give it)
    for message, wrong in mistakes.items():
        groups.setdefault(tuple(wrong.tolist()), (wrong, []))[1].append(message)
    merged = {}
    for wrong, messages in groups.values():
        merged[messages[0] if len(messages) == 1 else
               "your numbers fit more than one mistake: " + " OR ".join(messages)] = wrong
    return merged


def _timestep_mistakes(n: int, T: int, spacing: str) -> dict:
    """The usual wrong recipes for one spacing, as descending int64 tensors."""
    down = np.arange(T, 0, -T / n)  # T, T - T/n, ..., T/n: the trailing values before rounding
    tensor = lambda steps: torch.from_numpy(np.asarray(steps)[:n].astype(np.int64))
    return _distinct({
        "trailing": {
            "'trailing' ends at T-1 = the last training step, not at T: subtract 1.":
                tensor(np.round(down)),
            "round the 'trailing' values to the nearest integer (np.round); you rounded them "
            "down (np.floor, int() and astype(int) all round down).": tensor(np.floor(down) - 1),
            "round the 'trailing' values to the nearest integer (np.round), not up (np.ceil).":
                tensor(np.ceil(down) - 1),
            "you rounded the step size T / n first (round(T / n)): count down from T in steps "
            "of exactly T / n and round the timesteps afterwards.":
                tensor(np.arange(T, 0, -round(T / n)) - 1),
            "you stepped by the whole number T // n (the 'leading' stride): 'trailing' counts "
            "down from T in steps of exactly T / n and rounds afterwards.":
                tensor(np.arange(T, 0, -(T // n)) - 1),
        },
        "leading": {
            "'leading' starts at 0 and goes up in steps of T // n (then reverse it); you "
            "started from T-1.": tensor(np.arange(T - 1, -1, -(T // n))),
            "'leading' steps by the whole number T // n (floor division); you stepped by T / n "
            "and rounded.": tensor(np.round(np.arange(n) * T / n)[::-1]),
        },
        "linspace": {
            "'linspace' spans 0..T-1 (both ends included): np.linspace(0, T - 1, n).":
                tensor(np.linspace(0, T, n).round()[::-1]),
            "round the linspace values (np.round), don't truncate them with astype(int).":
                tensor(np.linspace(0, T - 1, n)[::-1]),
        },
    }[spacing])


def _clear_cut(n: int, T: int) -> bool:
    """No trailing or linspace value is exactly k + 1/2 (float noise would round it), and
    np.arange(T, 0, -T / n) has n values (float noise can add one past the end)."""
    values = [Fraction(k * T, n) for k in range(n)] + [Fraction(k * (T - 1), n - 1)
                                                       for k in range(n)]
    return len(np.arange(T, 0, -T / n)) == n and all(v.denominator != 2 for v in values)


def check_timesteps(fn, hidden=False):
    """fn(num_inference_steps, num_train_timesteps, spacing) -> descending integer timesteps.

    Hidden: other step counts and num_train_timesteps, each with the three spacings."""
    explain = lambda error: ("range() takes whole numbers only: np.arange accepts a float step "
                             "(T / n)." if "interpreted as an integer" in str(error) else None)
    yours = guard("timesteps", fn, reference_timesteps, spaced_timesteps,
                  *[cls.set_timesteps for cls in SCHEDULERS], explain=explain)

    def case(n, T, spacing):
        expected = torch.from_numpy(spaced_timesteps(n, T, spacing))
        name = f"timesteps({n}, {T}, {spacing!r})"
        result = yours(n, T, spacing)
        if result is None:
            raise ExerciseError(f"{name}: your function returned None — did you forget `return`?")
        result = as_tensor(result)
        if result.ndim != 1 or len(result) != n:
            extra = (" np.arange(T, 0, -T / n) gives exactly n values; a rounded step gives more "
                     "or fewer." if spacing == "trailing" else "")
            raise ExerciseError(f"{name}: expected {n} timesteps in a 1-D array, got shape "
                                f"{tuple(result.shape)}.{extra}")
        if len(result) > 1 and torch.equal(result.double(), expected.flip(0).double()):
            raise ExerciseError(f"{name}: right values, wrong order: sampling goes from noise "
                                f"to image, so the timesteps must be descending (`[::-1]`).")
        if result.is_floating_point() and not torch.equal(result, result.round()):
            raise ExerciseError(f"{name}: {result[:3].tolist()}... are not whole numbers; the "
                                f"UNet was trained on integer t: round them (np.round).")
        compare_with_mistakes(name, result, expected, _timestep_mistakes(n, T, spacing),
                              f"'{spacing}' in Lin et al. 2023, Table 2; compare yours with "
                              f"{expected[:4].tolist()}...")

    def hidden_cases(rng):
        def draw():
            T = rng.choice((1000, 500, 250, 100))
            n = rng.choice([n for n in range(2, 60) if _clear_cut(n, T)])
            return lambda: [case(n, T, spacing) for spacing in SPACINGS]

        return [draw() for _ in range(3)]

    # (6, 1000) first: there each wrong 'trailing' recipe gives numbers of its own
    cases = [(n, T, spacing) for n, T in ((10, 1000), (6, 1000), (7, 1000), (3, 50))
             for spacing in SPACINGS]
    return run_check("timesteps", fn, *[lambda c=c: case(*c) for c in cases],
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_timesteps)


# --------------------------------------------------------------------------------------------------
# Exercise 3: the sampling loop, for any scheduler
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def reference_sample(unet, scheduler, x_T, num_inference_steps, generator=None) -> torch.Tensor:
    """The loop of DDPMPipeline.sample, between the noise and postprocess."""
    scheduler.set_timesteps(num_inference_steps)
    x = x_T * scheduler.init_noise_sigma  # σ_max for σ-space samplers, 1 for DDPM/DDIM
    for t in scheduler.timesteps:
        noise_pred = unet(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(noise_pred, t, x, generator=generator).prev_sample
    return x


sample = reference_sample  # its older name


@torch.no_grad()
def _sample_without(unet, scheduler, x_T, n, generator, scale_start=True, scale_input=True):
    scheduler.set_timesteps(n)
    x = x_T * scheduler.init_noise_sigma if scale_start else x_T
    for t in scheduler.timesteps:
        noise_pred = unet(scheduler.scale_model_input(x, t) if scale_input else x, t).sample
        x = scheduler.step(noise_pred, t, x, generator=generator).prev_sample
    return x


def _explain_sample(error) -> str:
    text = str(error)
    if "UNet2DOutput" in text:
        return "the UNet returns a UNet2DOutput: the prediction is its `.sample`."
    if "SchedulerOutput" in text:
        return "scheduler.step returns a SchedulerOutput: the next x is its `.prev_sample`."
    if "converted to an index" in text:  # tensor * tuple: a whole output object used as x
        return ("an output object was used as a tensor: the UNet's prediction is "
                "unet(...).sample, the next x is scheduler.step(...).prev_sample.")
    if "Generator" in text:
        return "pass the generator by name: scheduler.step(ε̂, t, x, generator=generator)."
    return None


def check_sample(fn, hidden=False):
    """fn(unet, scheduler, x_T, num_inference_steps, generator) -> x_0, for any scheduler.

    Hidden: σ-space, multistep and other schedulers, step counts, batch and image sizes."""
    unet = tiny_unet((8, 16), layers_per_block=1, seed=0)
    yours = guard("sample", fn, reference_sample, DDPMPipeline.__call__, DDIMPipeline.__call__,
                  DDPMPipeline.sample, explain=_explain_sample)

    def case(scheduler_cls, seed, n=4, batch=2, size=16, beta_schedule="squaredcos_cap_v2",
             timestep_spacing="leading"):
        config = schedulers.DDPMScheduler(beta_schedule=beta_schedule,
                                          timestep_spacing=timestep_spacing).config
        make = lambda: scheduler_cls.from_config(config)
        x_T = randn(batch, 3, size, size, seed=seed)
        gen = lambda: torch.Generator().manual_seed(seed + 1)
        expected = reference_sample(unet, make(), x_T.clone(), n, gen())
        name = f"sample with {scheduler_cls.__name__}"
        scheduler, ready = make(), make()
        ready.set_timesteps(n)
        result = as_tensor(yours(unet, scheduler, x_T.clone(), n, gen()))
        if result is not None and len(scheduler.timesteps) != len(ready.timesteps):
            raise ExerciseError(f"{name}: after your loop the scheduler has "
                                f"{len(scheduler.timesteps)} timesteps, not "
                                f"{len(ready.timesteps)}: call "
                                f"scheduler.set_timesteps(num_inference_steps) before the loop.")
        noisy = (schedulers.DDPMScheduler, schedulers.EulerAncestralDiscreteScheduler)
        hint = (f"{scheduler_cls.__name__} adds fresh noise at every step: pass "
                f"generator=generator to step. " if scheduler_cls in noisy else "")
        hint += ("set_timesteps(n); x = x_T * init_noise_sigma; for t in scheduler.timesteps: "
                "ε̂ = unet(scale_model_input(x, t), t).sample; "
                "x = step(ε̂, t, x, generator=generator).prev_sample.")
        try:
            compare(name, result, expected, hint)
        except ExerciseError:  # only then run the loops of the usual mistakes (they take time)
            wrong = lambda **kw: _sample_without(unet, make(), x_T.clone(), n, gen(), **kw)
            mistakes = {
                "start from x_T * scheduler.init_noise_sigma: σ-space samplers like Euler start "
                "at σ_max, not at 1.": wrong(scale_start=False),
                "feed the UNet scheduler.scale_model_input(x, t), not x: Euler divides by "
                "√(σ²+1) so the UNet sees the scale it was trained on.": wrong(scale_input=False),
            }
            compare_with_mistakes(name, result, expected, mistakes, hint)

    def hidden_cases(rng):
        def draw(classes, fewest_steps=2):
            cls = rng.choice(classes)
            args = dict(seed=rng.randrange(10_000), n=rng.randint(fewest_steps, 5),
                        batch=rng.randint(1, 3), size=rng.choice((8, 12, 16)),
                        beta_schedule=rng.choice(BETA_SCHEDULES[:2]),
                        timestep_spacing=rng.choice(("leading", "trailing")))
            return lambda: case(cls, **args)

        s = schedulers
        return [draw((s.EulerAncestralDiscreteScheduler, s.HeunDiscreteScheduler,
                      s.LMSDiscreteScheduler)),  # σ-space: init_noise_sigma, scale_model_input
                draw((s.DPMSolverMultistepScheduler, s.UniPCMultistepScheduler,
                      s.PNDMScheduler), fewest_steps=4),  # multistep: state kept between steps
                draw((s.DDPMScheduler, s.DDIMScheduler, s.EulerDiscreteScheduler))]

    return run_check("sample", fn,
                     lambda: case(schedulers.DDIMScheduler, seed=0),
                     lambda: case(schedulers.DDPMScheduler, seed=2),  # step noise: the generator
                     lambda: case(schedulers.EulerDiscreteScheduler, seed=4),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_sample)
