"""Does the tiny text-to-image model draw the colour the prompt asks for? And does guidance help?

For each of six hue-separable colours, generate N images of "a {colour} butterfly" and call an image
right when its dominant wing hue is that colour's. Harder: six "a {wing} butterfly with {colour}
{pattern}" prompts, right when the wing colour dominates AND the pattern colour covers ≥ 5% of the
wing pixels; "coverage" is the mean fraction of wing pixels in the pattern colour. The measures
live in `ddlearn/colour_accuracy.py` and are first checked on the synthetic butterflies themselves.

    python benchmarks/colour_accuracy.py --n 32 --steps 25 --guidance 7.5 3 1
    python benchmarks/colour_accuracy.py --n 32 --steps 25 --scheduler PNDMScheduler
    python benchmarks/colour_accuracy.py --model data/models/tiny-sd3-butterflies --steps 28 \
        --guidance 7 3 1                                   # the tiny SD3 (chapter 07)

`--scheduler` swaps the shipped scheduler (DDIM) for another one built from its config, e.g.
Stable Diffusion 1.x's PNDM (with `skip_prk_steps=True`, as SD 1.x's scheduler_config.json).
"""

import argparse
import math
import time

import numpy as np
import torch

import ddlearn
from ddlearn.colour_accuracy import (
    HUE_COLOURS,
    colour_accuracy,
    measures_on_data,
    pattern_accuracy,
)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="data/models/tiny-sd-butterflies")
    parser.add_argument("--n", type=int, default=32, help="images per prompt")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, nargs="+", default=[7.5, 3.0, 1.0],
                        help="7.5 is diffusers' default; 1 means no guidance")
    parser.add_argument("--scheduler", default=None, help="e.g. PNDMScheduler (SD 1.x's)")
    args = parser.parse_args()

    wing, pattern = measures_on_data()
    print(f"the measures on synthetic butterflies (truth known): wing colour {wing:.1%} right, "
          f"wing + pattern colour {pattern:.1%} right")
    pipe = ddlearn.DiffusionPipeline.from_pretrained(args.model)  # SD or SD3, by model_index
    if args.scheduler:  # PNDM as Stable Diffusion 1.x ships it: PLMS only, no Runge-Kutta warm-up
        overrides = {"skip_prk_steps": True} if args.scheduler == "PNDMScheduler" else {}
        pipe.scheduler = getattr(ddlearn, args.scheduler).from_config(pipe.scheduler.config,
                                                                      **overrides)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        wing, pattern = measures_on_data(vae=pipe.vae)
    print(f"the same, after a round trip through the model's VAE (the best it can do): wing colour "
          f"{wing:.1%}, wing + pattern colour {pattern:.1%}")
    print(f"{type(pipe.scheduler).__name__}, {args.steps} steps, {args.n} images per prompt")
    print(f"| guidance_scale | {' | '.join(HUE_COLOURS)} | wing colour | pattern colour | "
          f"pattern coverage |\n|---|{'---|' * 9}")
    patterns = {}
    for guidance in args.guidance:
        start = time.perf_counter()
        acc = colour_accuracy(pipe, args.n, args.steps, guidance)
        cells = " | ".join(f"{acc[c]:.0%}" for c in HUE_COLOURS)
        pattern = patterns[guidance] = pattern_accuracy(pipe, args.n, args.steps, guidance)
        print(f"| {guidance} | {cells} | {np.mean(list(acc.values())):.1%} | "
              f"{pattern['accuracy']:.1%} | {pattern['coverage']:.3f} |"
              f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    if 1.0 in patterns:
        print_paired(patterns)


def sign_test(ups: int, downs: int) -> float:
    """Two-sided exact sign test: how likely is a split this uneven if up and down were 50/50?"""
    n, k = ups + downs, min(ups, downs)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


def print_paired(patterns: dict):
    """Each guided image against the unguided one from the same starting noise."""
    print("\npaired with guidance 1 (same prompts, same starting noise):")
    base_hits, base_cover = np.array(patterns[1.0]["hits"]), np.array(patterns[1.0]["coverages"])
    for guidance, pattern in patterns.items():
        if guidance == 1.0:
            continue
        hits, cover = np.array(pattern["hits"]), np.array(pattern["coverages"])
        gained, lost = int((hits & ~base_hits).sum()), int((~hits & base_hits).sum())
        up, down = int((cover > base_cover).sum()), int((cover < base_cover).sum())
        print(f"  {guidance}: pattern colour gained in {gained} images, lost in {lost} "
              f"(sign test p = {sign_test(gained, lost):.2g}); coverage up in {up}, down in "
              f"{down} (p = {sign_test(up, down):.2g}), mean change "
              f"{np.mean(cover - base_cover):+.3f}")


if __name__ == "__main__":
    main()
