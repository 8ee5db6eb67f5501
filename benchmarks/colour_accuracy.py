"""Does the tiny text-to-image model draw the colour the prompt asks for? And does guidance help?

For each of six hue-separable colours, generate N images of "a {colour} butterfly" and call an image
right when its dominant wing hue (the most common hue among saturated, non-background pixels) is
nearest to that colour's hue. Measured with the default guidance and with guidance_scale=1 (none).
The same classifier is first checked on the synthetic butterflies themselves (ground truth known).

    python benchmarks/colour_accuracy.py --n 16 --steps 25
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


def classifier_accuracy_on_data(n=300) -> float:
    from ddlearn.data.butterflies import make_butterfly

    hits = total = 0
    for seed in range(n * 3):
        image, attrs = make_butterfly(seed, 32)
        if attrs["colour"] in HUE_COLOURS and attrs["pattern"] == "plain":
            hits += dominant_colour(image) == attrs["colour"]
            total += 1
    return hits / total


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
    parser.add_argument("--guidance", type=float, default=7.5)
    args = parser.parse_args()
    from ddlearn import StableDiffusionPipeline

    print(f"classifier on plain synthetic butterflies: {classifier_accuracy_on_data():.1%} correct")
    pipe = StableDiffusionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    print(f"| guidance_scale | {' | '.join(HUE_COLOURS)} | all |\n|---|{'---|' * 7}")
    for guidance in (args.guidance, 1.0):
        start = time.perf_counter()
        acc = colour_accuracy(pipe, args.n, args.steps, guidance)
        cells = " | ".join(f"{acc[c]:.0%}" for c in HUE_COLOURS)
        print(f"| {guidance} | {cells} | {np.mean(list(acc.values())):.1%} |"
              f"  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
