"""Is flow matching's Euler better than DDIM because its paths are straighter, or because of where
its steps sit?

Rewrite x_σ = (1-σ) x_0 + σ ε with x̂_0, ε̂ from the velocity: one flow Euler step lands on
(1-σ_{i+1}) x̂_0 + σ_{i+1} ε̂, which is DDIM's η = 0 update (eq. 12) in other coordinates. So with
the same noise levels (the same signal-to-noise ratios (1-σ)²/σ² = ᾱ/(1-ᾱ)) and the same start,
the two samplers should give the same samples, and any gap in sampler_accuracy.py's table is the
schedule of noise levels, not the straightness of the paths. This script checks that on the
8-Gaussian ring with the exact ε* / u* of `ddlearn.data.toy2d`.

    python benchmarks/flow_vs_ddim.py --steps 5 10 20
"""

import argparse

import torch

from ddlearn.data.toy2d import ring_of_gaussians, sliced_wasserstein
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler


def ddim_samples(toy, x_T, steps):
    scheduler = DDIMScheduler(clip_sample=False)
    scheduler.set_timesteps(steps)
    model, x = toy.exact_eps_model(scheduler.alphas_cumprod), x_T
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x).prev_sample
    return x, scheduler


def flow_samples_on_ddim_levels(toy, x_T, ddim):
    """Flow Euler on σ = 1 / (1 + √SNR) of DDIM's timesteps (SNR = ᾱ / (1 - ᾱ)), from the same
    x_T rescaled to flow coordinates (x_flow = x_VP σ / √(1 - ᾱ))."""
    abar = ddim.alphas_cumprod[ddim.timesteps].double()
    sigmas = 1 / (1 + (abar / (1 - abar)).sqrt())
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(sigmas=sigmas.tolist())  # shift 1 leaves them as they are
    model = toy.exact_velocity_model(scheduler)
    x = (x_T.double() * sigmas[0] / (1 - abar[0]).sqrt()).float()
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x).prev_sample
    return x


def flow_samples(toy, x_T, steps):
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(steps)
    model, x = toy.exact_velocity_model(scheduler), x_T
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x).prev_sample
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", nargs="+", type=int, default=[5, 10, 20, 50])
    parser.add_argument("--n-samples", type=int, default=20_000)
    args = parser.parse_args()
    toy = ring_of_gaussians(8, radius=2.0, std=0.15)
    reference = toy.sample(args.n_samples, torch.Generator().manual_seed(1))
    x_T = torch.randn(args.n_samples, 2, generator=torch.Generator().manual_seed(0))
    print("| steps | DDIM | flow Euler, DDIM's noise levels | max gap | flow Euler, its own |")
    print("|---:|---:|---:|---:|---:|")
    for steps in args.steps:
        ddim, scheduler = ddim_samples(toy, x_T, steps)
        same_levels = flow_samples_on_ddim_levels(toy, x_T, scheduler)
        own = flow_samples(toy, x_T, steps)
        gap = (ddim - same_levels).abs().max()
        print(f"| {steps} | {sliced_wasserstein(ddim, reference):.4f} | "
              f"{sliced_wasserstein(same_levels, reference):.4f} | {gap:.1e} | "
              f"{sliced_wasserstein(own, reference):.4f} |")


if __name__ == "__main__":
    main()
