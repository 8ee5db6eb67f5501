"""Chapter 07, exercise 3: one Euler step of the sampling ODE.

`euler_step(velocity, sigma, sigma_next, sample)` returns x_{σ'} = x_σ + (σ' - σ) v, as
`FlowMatchEulerDiscreteScheduler.step` (which it may not call, nor Heun's) does, step by step
along a whole schedule. The check wants the inputs' dtype back and names the usual mistakes (the
step the wrong way, σ' · v, the whole velocity subtracted). Hidden cases: other shifts, step
counts, σ schedules of one's own, shapes (2-D points, SD3's 16-channel latents) and float64.
"""

from functools import partial

import torch

from ddlearn.checks import guard, randn, run_check
from ddlearn.checks.ch07.common import compare_dtype
from ddlearn.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ddlearn.schedulers.flow_match_heun import FlowMatchHeunDiscreteScheduler


def reference_euler_step(velocity, sigma, sigma_next, sample):
    """The answer the cells below use while yours is not solved: x + (σ_next - σ) v."""
    return sample + (sigma_next - sigma) * velocity


def euler_hint(error) -> str:
    if "'float' object" in str(error):
        return ("sigma and sigma_next are plain Python floats (the loop passes "
                "float(scheduler.sigmas[i])): (sigma_next - sigma) * velocity just works.")
    return None


def check_euler_step(fn, hidden=False):
    """fn(velocity, sigma, sigma_next, sample) -> sample + (σ_next - σ) velocity, as
    FlowMatchEulerDiscreteScheduler.step does, along a whole schedule.

    Hidden cases: other shifts, step counts, σ schedules, shapes and float64."""
    yours = guard("euler_step", fn, FlowMatchEulerDiscreteScheduler.step,
                  FlowMatchHeunDiscreteScheduler.step, reference_euler_step, explain=euler_hint)

    def case(shift, steps, seed, shape=(2, 4, 8, 8), dtype=torch.float32, sigmas=None):
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(steps, sigmas=sigmas)
        x = randn(*shape, seed=seed).to(dtype)
        for i, t in enumerate(scheduler.timesteps):
            v = randn(*shape, seed=seed + 10 + i).to(dtype)  # any model's velocity
            sigma, sigma_next = float(scheduler.sigmas[i]), float(scheduler.sigmas[i + 1])
            expected = scheduler.step(v, t, x).prev_sample
            mistakes = {
                "the step goes the wrong way: σ decreases while sampling, so σ_next - σ < 0 "
                "and x_next = x + (σ_next - σ) v.": x + (sigma - sigma_next) * v,
                "you stepped by σ_next · v; the step is the *change* in σ: (σ_next - σ) v.":
                    x + sigma_next * v,
                "you subtracted the whole velocity; scale it by the step size (σ_next - σ).":
                    x - v,
            }
            compare_dtype("euler_step", yours(v.clone(), sigma, sigma_next, x.clone()), expected,
                          mistakes, "x_next = x + (σ_next - σ) · v.")
            x = expected

    def hidden_cases(rng):
        points = (rng.randint(2, 50), 2)  # 2-D points, as in the chapter's toy
        sigmas = [s / 100 for s in sorted(rng.sample(range(1, 101), 4), reverse=True)]
        shift, steps = rng.choice((2.0, 4.0, 6.0)), rng.randint(2, 9)
        seeds = rng.sample(range(10_000), 3)
        return [partial(case, shift, steps, seeds[0], points, torch.float64),
                partial(case, 1.0, steps + 1, seeds[1], (1, 16, 4, 6)),  # SD3's 16-channel latents
                partial(case, 1.0, None, seeds[2], (3, 3, 4, 4), torch.float64, sigmas)]  # own σ's

    return run_check("euler_step", fn, lambda: case(3.0, 6, seed=0),
                     lambda: case(1.0, 3, seed=5),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_euler_step)
