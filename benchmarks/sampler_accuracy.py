"""How accurate is each sampler, with the network's error taken out?

Every scheduler samples the 8-Gaussian ring (radius 2, std 0.15) with the *exact* ε-prediction
ε*(x_t, t) = -√(1-ᾱ_t) ∇log p_t(x_t) of `ddlearn.data.toy2d` (flow matching's Euler: the exact
velocity u*(x, σ) = E[ε - x_0 | x_σ]), so the only error left is the sampler's. We report the
sliced Wasserstein distance (SW1) of its samples to a fixed set of true samples, against the
number of model evaluations (Heun costs 2 per step, PNDM's Runge-Kutta warm-up 4 per step), next
to the "floor": the SWD of independent true sample sets of the same size.

    python benchmarks/sampler_accuracy.py                        # all schedulers, diffusers oracle
    python benchmarks/sampler_accuracy.py --backend ddlearn --schedulers DDIM "DPM++ 2M" \
        --evals 5 10 20 --config use_karras_sigmas=true final_sigmas_type=sigma_min

`--config key=value` (JSON values) is applied to every scheduler whose config has that key.
Writes a markdown table to stdout and a log-log plot to benchmarks/results/.
"""

import argparse
import importlib
import inspect
import json
import time
from pathlib import Path

import torch

from ddlearn.data.toy2d import ring_of_gaussians, sliced_wasserstein

# label -> (class name, ddlearn module, config beyond the common one)
SCHEDULERS = {
    "DDPM": ("DDPMScheduler", "ddpm", {"clip_sample": False}),
    "DDPM clip": ("DDPMScheduler", "ddpm", {"clip_sample": True}),
    "DDIM": ("DDIMScheduler", "ddim", {"clip_sample": False}),
    "DDIM clip": ("DDIMScheduler", "ddim", {"clip_sample": True}),
    "Euler": ("EulerDiscreteScheduler", "euler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", "euler_ancestral", {}),
    "Heun": ("HeunDiscreteScheduler", "heun", {}),
    "LMS": ("LMSDiscreteScheduler", "lms", {}),
    "PNDM": ("PNDMScheduler", "pndm", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", "dpm_solver", {}),
    "UniPC": ("UniPCMultistepScheduler", "unipc", {}),
    # flow matching: the straight path x_σ = (1-σ) x_0 + σ ε, fed the exact velocity u*
    "Flow Euler": ("FlowMatchEulerDiscreteScheduler", "flow_match_euler", {}),
    "Flow Euler s=3": ("FlowMatchEulerDiscreteScheduler", "flow_match_euler", {"shift": 3.0}),
    "Flow Heun": ("FlowMatchHeunDiscreteScheduler", "flow_match_heun", {}),
}
COMMON = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
          "beta_schedule": "linear"}
EVALS = [5, 8, 10, 12, 15, 20, 30, 50, 100, 250, 1000]


def make_scheduler(label, backend, overrides):
    """Build `label` from diffusers or ddlearn, keeping only the config keys its __init__ takes."""
    class_name, module, extra = SCHEDULERS[label]
    where = "diffusers" if backend == "diffusers" else f"ddlearn.schedulers.{module}"
    cls = getattr(importlib.import_module(where), class_name)
    accepted = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in {**COMMON, **overrides, **extra}.items() if k in accepted}
    return cls(**config)


def steps_for(scheduler, evals):
    """Largest num_inference_steps whose loop makes at most `evals` model calls (1 per timestep)."""
    n = evals
    while True:
        scheduler.set_timesteps(n)
        calls = len(scheduler.timesteps)
        if calls <= evals or n == 1:
            return n, calls
        n -= max(1, (calls - evals) // 2)


def sample_with(scheduler, model, x_T, seed):
    """The standard loop: x_T · init_noise_sigma, then scale → model → step for every timestep
    (flow matching starts at x_1 = ε and feeds the model x itself)."""
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    kwargs = {"generator": torch.Generator().manual_seed(seed)} if takes_generator else {}
    x = x_T * getattr(scheduler, "init_noise_sigma", 1.0)
    scale = getattr(scheduler, "scale_model_input", lambda sample, t: sample)
    for t in scheduler.timesteps:
        output = model(scale(x, t), t)
        x = scheduler.step(output, t, x, **kwargs).prev_sample
    return x


def parse_config(pairs):
    config = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:  # bare strings: timestep_spacing=trailing
            config[key] = value
    return config


def run(args):
    toy = ring_of_gaussians(8, radius=2.0, std=0.15)
    reference = toy.sample(args.n_samples, torch.Generator().manual_seed(args.seed + 1))
    floors = [sliced_wasserstein(toy.sample(args.n_samples, torch.Generator().manual_seed(s)),
                                 reference) for s in range(args.seed + 2, args.seed + 7)]
    x_T = torch.randn(args.n_samples, 2, generator=torch.Generator().manual_seed(args.seed))
    overrides = parse_config(args.config)
    results = {}  # label -> list of (evals asked, model calls made, swd)
    for label in args.schedulers:
        try:
            scheduler = make_scheduler(label, args.backend, overrides)
        except (ImportError, AttributeError) as error:
            print(f"skipping {label}: {error}")
            continue
        use = scheduler if args.model_sigma == "scheduler" else None
        model = (toy.exact_velocity_model(scheduler) if label.startswith("Flow") else
                 toy.exact_eps_model(scheduler.alphas_cumprod, scheduler=use))
        results[label] = []
        for evals in args.evals:
            start = time.time()
            try:
                n, calls = steps_for(scheduler, evals)
                x_0 = sample_with(scheduler, model, x_T, args.seed)
            except Exception as error:  # e.g. a solver that needs more steps than `evals`
                print(f"{label} @ {evals} evals failed: {type(error).__name__}: {error}")
                continue
            swd = sliced_wasserstein(x_0, reference)
            results[label].append((evals, calls, swd))
            if args.verbose:
                print(f"{label:10s} steps={n:4d} evals={calls:4d} swd={swd:.4f} "
                      f"({time.time() - start:.1f}s)", flush=True)
    return results, floors


def markdown_table(results, floors, evals):
    lines = ["| scheduler | " + " | ".join(str(e) for e in evals) + " |",
             "|---|" + "---:|" * len(evals)]
    for label, rows in results.items():
        done = {asked: (calls, swd) for asked, calls, swd in rows}
        cells = ["–" if e not in done else f"{done[e][1]:.4f}" if done[e][0] == e
                 else f"{done[e][1]:.4f} ({done[e][0]})" for e in evals]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    mean = sum(floors) / len(floors)
    lines.append("(n): the scheduler made n < asked model calls (Heun, PNDM step granularity); "
                 "–: the scheduler failed at that size")
    lines.append(f"floor (independent true sets): mean {mean:.4f}, "
                 f"range {min(floors):.4f}–{max(floors):.4f} over {len(floors)} sets")
    return "\n".join(lines)


def plot(results, floors, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=90)
    colours = plt.cm.tab20(range(len(results)))
    for colour, (label, rows) in zip(colours, results.items(), strict=True):
        if rows:
            ax.loglog([c for _, c, _ in rows], [d for _, _, d in rows], marker="o", ms=3,
                      color=colour, ls="--" if "clip" in label else "-", label=label)
    ax.axhspan(min(floors), max(floors), color="grey", alpha=0.3, label="floor (true vs true)")
    ax.set(xlabel="model evaluations", ylabel="sliced Wasserstein-1 to true samples", title=title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot saved to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedulers", nargs="+", default=list(SCHEDULERS), choices=SCHEDULERS)
    parser.add_argument("--evals", nargs="+", type=int, default=EVALS)
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("ddlearn", "diffusers"), default="ddlearn")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model-sigma", choices=("scheduler", "timestep"), default="scheduler",
                        help="noise level the exact model assumes: the scheduler's current σ, or "
                             "ᾱ read off the (possibly fractional) timestep like a network would")
    parser.add_argument("--plot", type=Path,
                        default=Path(__file__).parent / "results" / "sampler_accuracy.png")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    results, floors = run(args)
    print(markdown_table(results, floors, args.evals))
    if not args.no_plot:
        title = f"{args.backend}, exact ε, {args.n_samples} samples " + " ".join(args.config)
        plot(results, floors, args.plot, title)


if __name__ == "__main__":
    main()
