"""Chapter 05, exercise 3: where img2img starts.

`img2img_timesteps(scheduler, num_inference_steps, strength)` calls set_timesteps itself and
returns `scheduler.timesteps[t_start:]`, t_start = (n - int(n · strength)) · scheduler.order: the
tail of the schedule img2img denoises through, as `StableDiffusionImg2ImgPipeline.get_timesteps`
(which it may not call) gives it. When yours is off, the check names the wrong recipe your
timesteps match (the first steps kept, ceil or round for int, off by one, order forgotten,
strength for 1 - strength), asking yours on `PROBES` when several do. Hidden cases: other
schedulers (order 1 and 2), step counts and strengths.
"""

import math
from functools import partial
from types import SimpleNamespace

import torch

from ddlearn import schedulers
from ddlearn.checks import ExerciseError, compare, guard, run_check
from ddlearn.checks.ch05.common import matches
from ddlearn.pipelines.stable_diffusion_img2img import StableDiffusionImg2ImgPipeline

SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
PNDM = partial(schedulers.PNDMScheduler, skip_prk_steps=True, **SD_BETAS)  # SD 1.x's scheduler
DDIM = partial(schedulers.DDIMScheduler, **SD_BETAS)
HEUN = partial(schedulers.HeunDiscreteScheduler, **SD_BETAS)


def reference_img2img_timesteps(scheduler, num_inference_steps, strength):
    """The answer the cells below use while yours is not solved: timesteps[t_start:]."""
    scheduler.set_timesteps(num_inference_steps)
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    t_start = (num_inference_steps - init_timestep) * scheduler.order
    return scheduler.timesteps[t_start:]


SET_TIMESTEPS = ("call scheduler.set_timesteps(num_inference_steps) first: before that, "
                 "scheduler.timesteps is None (PNDM) or all num_train_timesteps training "
                 "timesteps (DDIM, Euler, Heun...), not the n-step schedule.")
# inputs that tell every two recipes below apart: n · strength whole, a bit above, a bit below
PROBES = [(DDIM, 10, 0.5), (DDIM, 10, 0.33), (HEUN, 10, 0.33), (HEUN, 10, 0.37)]


def _wrong_recipes(scheduler, n, strength) -> dict:
    """The usual wrong recipes, on a scheduler whose set_timesteps(n) ran: hint -> timesteps."""
    timesteps, order, init = scheduler.timesteps, scheduler.order, int(n * strength)
    t_start = (n - init) * order
    down = "round down, as diffusers does: init_timestep = int(num_inference_steps · strength)."
    off = "return timesteps[t_start:], with t_start = (n - init_timestep) · scheduler.order."
    return {
        "you kept the *first* steps of the schedule (the noisiest); img2img skips them and runs "
        "the last ones: timesteps[t_start:].": timesteps[:init * order],
        f"you rounded n · strength up (math.ceil); {down}":
            timesteps[(n - math.ceil(n * strength)) * order:],
        f"you rounded n · strength to the nearest integer; {down}":
            timesteps[(n - round(n * strength)) * order:],
        f"you start one entry too late (one timestep too few): {off}": timesteps[t_start + 1:],
        f"you start one entry too early (one timestep too many): {off}":
            timesteps[max(t_start - 1, 0):],
        "t_start counts skipped *entries* of scheduler.timesteps: multiply by scheduler.order "
        "(2 for Heun, whose schedule visits most timesteps twice).": timesteps[n - init:],
        "you skipped strength of the schedule; img2img skips (1 - strength) of it: "
        "t_start = num_inference_steps - init_timestep.": timesteps[init * order:],
        f"you returned the whole schedule; img2img runs only its end: {off}": timesteps,
    }


def _named_mistake(yours, returned, make_scheduler, n, strength):
    """The hint of the wrong recipe that gives what you returned here; when several do, the one
    that also gives your answers on the most probes."""
    def recipes(make_scheduler, n, strength):
        scheduler = make_scheduler()
        scheduler.set_timesteps(n)
        return _wrong_recipes(scheduler, n, strength)

    def yours_on(make_scheduler, n, strength):
        try:
            return yours(make_scheduler(), n, strength)
        except ExerciseError:
            return None

    candidates = [hint for hint, wrong in recipes(make_scheduler, n, strength).items()
                  if matches(returned, wrong)]
    if len(candidates) < 2:
        return candidates[0] if candidates else None
    answers = [(yours_on(*probe), recipes(*probe)) for probe in PROBES]
    return max(candidates, key=lambda hint: sum(matches(answer, wrong[hint])
                                                for answer, wrong in answers))


def check_img2img_timesteps(fn, hidden=False):
    """fn(scheduler, num_inference_steps, strength) -> the timesteps img2img denoises through
    (after calling scheduler.set_timesteps(num_inference_steps) itself). Each case hands fn a
    fresh scheduler. Hidden cases: other schedulers (order 1 and 2), step counts, strengths."""
    def explain(error):
        if "NoneType" in str(error):
            return SET_TIMESTEPS
        if "slice indices" in str(error):
            return "t_start must be an int: init_timestep = int(num_inference_steps · strength)."
        return None
    yours = guard("img2img_timesteps", fn, reference_img2img_timesteps,
                  StableDiffusionImg2ImgPipeline.get_timesteps, explain=explain)

    def case(make_scheduler, n, strength):
        pipe = SimpleNamespace(scheduler=make_scheduler(), device="cpu")
        expected = StableDiffusionImg2ImgPipeline.get_timesteps(pipe, n, strength)
        returned = yours(make_scheduler(), n, strength)
        if torch.is_tensor(returned) and len(returned) > len(pipe.scheduler.timesteps):
            raise ExerciseError(f"img2img_timesteps: you returned {len(returned)} timesteps, "
                                f"more than the whole {n}-step schedule has: {SET_TIMESTEPS}")
        hint = None if matches(returned, expected) else \
            _named_mistake(yours, returned, make_scheduler, n, strength)
        if hint:
            raise ExerciseError(f"img2img_timesteps: {hint}")
        compare("img2img_timesteps", returned, expected,
                "init_timestep = int(n · strength), t_start = (n - init_timestep) · "
                "scheduler.order, return scheduler.timesteps[t_start:].")

    def hidden_cases(rng):
        order_1 = [partial(cls, num_train_timesteps=rng.choice((500, 1000)), **SD_BETAS) for cls in
                   (schedulers.DDIMScheduler, schedulers.EulerDiscreteScheduler,
                    schedulers.LMSDiscreteScheduler, schedulers.DPMSolverMultistepScheduler,
                    schedulers.UniPCMultistepScheduler)]
        makers = rng.sample(order_1, 2) + [  # and always PNDM and both order-2 schedulers
            PNDM, HEUN, partial(schedulers.FlowMatchHeunDiscreteScheduler, shift=3.0)]
        return [partial(case, make, rng.randint(5, 40), round(rng.uniform(0.2, 0.95), 2))
                for make in makers]

    return run_check("img2img_timesteps", fn,
                     lambda: case(PNDM, 25, 0.6),
                     lambda: case(DDIM, 10, 0.35),  # 3.5 -> 3
                     lambda: case(HEUN, 10, 0.5),  # order 2
                     hidden=hidden, hidden_cases=hidden_cases,
                     reference=reference_img2img_timesteps)
