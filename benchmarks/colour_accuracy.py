"""Does the tiny text-to-image model draw the colour the prompt asks for? And does guidance help?

For each of six hue-separable colours, generate N images of "a {colour} butterfly" and call an image
right when its dominant wing hue (the most common hue among saturated, non-background pixels) is
nearest to that colour's hue. Harder: for six "a {wing} butterfly with {colour} {pattern}" prompts,
the wing colour must dominate AND the pattern's colour must cover ≥ 5% of the wing pixels. Measured
with the default guidance and with guidance_scale=1 (none). The same classifier is first checked on
the synthetic butterflies themselves (ground truth known).

    python benchmarks/colour_accuracy.py --n 16 --steps 25 --guidance 7.5 3 1
"""

import argparse
import colorsys
import time

import numpy as np
import torch

HUE_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")


def reference_hues():
    from ddlearn.data.butterflies import COLOURS

    return {name: colorsys.rgb_to_hsv(*COLOURS[name])[0] for name in HUE_COLOURS}


def dominant_colour(image) -> str:
    """The HUE_COLOURS name nearest to the most common hue of the saturated pixels (or 'none')."""
    rgb = np.asarray(image, dtype=np.float32).reshape(-1, 3) / 255.0
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
    keep = (hsv[:, 1] > 0.45) & (hsv[:, 2] > 0.25)  # wings, not the pale background or the body
    if keep.sum() < 8:
        return "none"
    counts, edges = np.histogram(hsv[keep, 0], bins=36, range=(0, 1))
    hue = (edges[counts.argmax()] + edges[counts.argmax() + 1]) / 2
    circular = lambda a, b: min(abs(a - b), 1 - abs(a - b))
    return min(reference_hues().items(), key=lambda kv: circular(hue, kv[1]))[0]


def hue_fractions(image) -> dict:
    """Fraction of the saturated (wing) pixels whose hue is nearest to each HUE_COLOURS name."""
    rgb = np.asarray(image, dtype=np.float32).reshape(-1, 3) / 255.0
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
    hues = hsv[(hsv[:, 1] > 0.45) & (hsv[:, 2] > 0.25), 0]
    refs = reference_hues()
    names = list(refs)
    distance = np.abs(hues[:, None] - np.array([refs[n] for n in names])[None])
    nearest = np.minimum(distance, 1 - distance).argmin(1)
    return {n: float((nearest == i).mean()) if len(hues) else 0.0 for i, n in enumerate(names)}


PATTERN_PROMPTS = [("blue", "orange", "spots"), ("yellow", "purple", "stripes"),
                   ("red", "green", "eyespots"), ("green", "red", "spots"),
                   ("purple", "yellow", "stripes"), ("orange", "blue", "spots")]


def pattern_accuracy(pipe, n: int, steps: int, guidance_scale: float, seed: int = 0) -> float:
    """Harder than the wing colour: is the pattern's colour there too? An image counts when its
    wing colour dominates and ≥ 5% of the wing pixels have the pattern colour's hue."""
    hits = 0
    for wing, pattern_colour, pattern in PATTERN_PROMPTS:
        generator = torch.Generator().manual_seed(seed)
        images = pipe([f"a {wing} butterfly with {pattern_colour} {pattern}"] * n,
                      num_inference_steps=steps, guidance_scale=guidance_scale,
                      generator=generator).images
        for im in images:
            fractions = hue_fractions(im)
            hits += dominant_colour(im) == wing and fractions[pattern_colour] >= 0.05
    return hits / (n * len(PATTERN_PROMPTS))


def classifier_accuracy_on_data(n=900) -> tuple:
    """Both measures on synthetic butterflies, whose colours are known: (wing, pattern colour)."""
    from ddlearn.data.butterflies import make_butterfly

    wing = [0, 0]
    pattern = [0, 0]
    for seed in range(n):
        image, attrs = make_butterfly(seed, 32)
        if attrs["colour"] in HUE_COLOURS and attrs["pattern"] == "plain":
            wing[0] += dominant_colour(image) == attrs["colour"]
            wing[1] += 1
        if attrs["colour"] in HUE_COLOURS and attrs["pattern_colour"] in HUE_COLOURS:
            fractions = hue_fractions(image)
            pattern[0] += dominant_colour(image) == attrs["colour"] and \
                fractions[attrs["pattern_colour"]] >= 0.05
            pattern[1] += 1
    return wing[0] / wing[1], pattern[0] / pattern[1]


def colour_accuracy(pipe, n: int, steps: int, guidance_scale: float, seed: int = 0) -> dict:
    result = {}
    for colour in HUE_COLOURS:
        generator = torch.Generator().manual_seed(seed)
        images = pipe([f"a {colour} butterfly"] * n, num_inference_steps=steps,
                      guidance_scale=guidance_scale, generator=generator).images
        result[colour] = sum(dominant_colour(im) == colour for im in images) / n
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="data/models/tiny-sd-butterflies")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, nargs="+", default=[7.5, 3.0, 1.0],
                        help="7.5 is diffusers' default; 1 means no guidance")
    args = parser.parse_args()
    from ddlearn import StableDiffusionPipeline

    wing, pattern = classifier_accuracy_on_data()
    print(f"the measures on synthetic butterflies (truth known): wing colour {wing:.1%} right, "
          f"wing + pattern colour {pattern:.1%} right")
    pipe = StableDiffusionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    print(f"| guidance_scale | {' | '.join(HUE_COLOURS)} | all | pattern colour |\n"
          f"|---|{'---|' * 8}")
    for guidance in args.guidance:
        start = time.perf_counter()
        acc = colour_accuracy(pipe, args.n, args.steps, guidance)
        cells = " | ".join(f"{acc[c]:.0%}" for c in HUE_COLOURS)
        pattern = pattern_accuracy(pipe, args.n, args.steps, guidance)
        print(f"| {guidance} | {cells} | {np.mean(list(acc.values())):.1%} | {pattern:.1%} |"
              f"  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
