"""Chapter 02, exercise 3: the sampling loop, for any scheduler.

`sample(unet, scheduler, x_T, num_inference_steps, generator)` runs set_timesteps, scales x_T by
`init_noise_sigma`, and for each t feeds `scale_model_input(x, t)` to the UNet and steps with
`scheduler.step(..., generator=generator)`: the loop of `DDPMPipeline`, which the check forbids.
When yours is off it names the usual mistakes (no init_noise_sigma, no scale_model_input, no
set_timesteps). Hidden cases: σ-space, multistep and other schedulers, step counts, batch and
image sizes, beta schedules and spacings.
"""

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
from ddlearn.schedulers.schedules import BETA_SCHEDULES


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
