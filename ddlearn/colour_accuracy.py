"""Does a text-to-image model draw the colours the prompt asks for? Measures by hue, no network.

The synthetic butterflies (`ddlearn.data.butterflies`) have light, unsaturated backgrounds and
dark bodies, so the saturated pixels of an image are its wings. Two measures build on that:

- **wing colour**: the most common hue among the saturated pixels, named by the nearest of six
  hue-separable colours, must be the prompt's colour ("a blue butterfly" -> "blue");
- **pattern colour**: for "a {wing} butterfly with {colour} {pattern}", the wing colour must
  dominate AND at least 5% of the wing pixels must have the pattern colour's hue. Its
  *coverage* (the mean fraction of wing pixels in the pattern colour) moves smoothly where the
  5% test flips.

`measures_on_data()` checks both against the synthetic butterflies, whose colours are known.
`benchmarks/colour_accuracy.py` prints them for several guidance scales; chapter 05 uses them.
"""

import colorsys

import numpy as np
import torch

HUE_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
PATTERN_PROMPTS = [("blue", "orange", "spots"), ("yellow", "purple", "stripes"),
                   ("red", "green", "eyespots"), ("green", "red", "spots"),
                   ("purple", "yellow", "stripes"), ("orange", "blue", "spots")]
MIN_PATTERN_FRACTION = 0.05


def reference_hues() -> dict:
    """Hue in [0, 1) of each HUE_COLOURS name, as the butterfly generator paints it."""
    from ddlearn.data.butterflies import COLOURS

    return {name: colorsys.rgb_to_hsv(*COLOURS[name])[0] for name in HUE_COLOURS}


def wing_hues(image) -> np.ndarray:
    """Hues of the saturated, not-too-dark pixels (the wings, not the pale background or body)."""
    rgb = np.asarray(image, dtype=np.float32).reshape(-1, 3) / 255.0  # (H·W, 3)
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
    return hsv[(hsv[:, 1] > 0.45) & (hsv[:, 2] > 0.25), 0]


def dominant_colour(image) -> str:
    """The HUE_COLOURS name nearest to the most common wing hue (or 'none': no wing pixels)."""
    hues = wing_hues(image)
    if len(hues) < 8:
        return "none"
    counts, edges = np.histogram(hues, bins=36, range=(0, 1))
    hue = (edges[counts.argmax()] + edges[counts.argmax() + 1]) / 2
    circular = lambda a, b: min(abs(a - b), 1 - abs(a - b))
    return min(reference_hues().items(), key=lambda kv: circular(hue, kv[1]))[0]


def hue_fractions(image) -> dict:
    """Fraction of the wing pixels whose hue is nearest to each HUE_COLOURS name."""
    hues = wing_hues(image)
    refs = reference_hues()
    distance = np.abs(hues[:, None] - np.array(list(refs.values()))[None])  # (pixels, 6)
    nearest = np.minimum(distance, 1 - distance).argmin(1)
    return {n: float((nearest == i).mean()) if len(hues) else 0.0 for i, n in enumerate(refs)}


def pattern_hit(image, wing: str, pattern_colour: str) -> bool:
    return (dominant_colour(image) == wing
            and hue_fractions(image)[pattern_colour] >= MIN_PATTERN_FRACTION)


def colour_accuracy(pipe, n: int, steps: int, guidance_scale: float, seed: int = 0) -> dict:
    """{colour: fraction of n images of "a {colour} butterfly" whose wing colour is right}."""
    result = {}
    for colour in HUE_COLOURS:
        images = pipe([f"a {colour} butterfly"] * n, num_inference_steps=steps,
                      guidance_scale=guidance_scale,
                      generator=torch.Generator().manual_seed(seed)).images
        result[colour] = sum(dominant_colour(im) == colour for im in images) / n
    return result


def pattern_accuracy(pipe, n: int, steps: int, guidance_scale: float, seed: int = 0) -> dict:
    """Over the six PATTERN_PROMPTS × n images: {"accuracy": fraction of pattern hits,
    "coverage": mean fraction of wing pixels in the pattern colour, "hits" and "coverages": the
    same per image, in a fixed order (the same seed gives the same starting noise at any w)}."""
    hits, coverage = [], []
    for wing, pattern_colour, pattern in PATTERN_PROMPTS:
        images = pipe([f"a {wing} butterfly with {pattern_colour} {pattern}"] * n,
                      num_inference_steps=steps, guidance_scale=guidance_scale,
                      generator=torch.Generator().manual_seed(seed)).images
        hits += [pattern_hit(im, wing, pattern_colour) for im in images]
        coverage += [hue_fractions(im)[pattern_colour] for im in images]
    return {"accuracy": float(np.mean(hits)), "coverage": float(np.mean(coverage)),
            "hits": hits, "coverages": coverage}


def measures_on_data(n: int = 900, vae=None) -> tuple:
    """Both measures on synthetic butterflies, whose colours are known: (wing, pattern colour).
    With a `vae`, on their round trips through it instead: the best a latent model can score."""
    from ddlearn.data.butterflies import make_butterfly
    from ddlearn.models.vae_wrapper import VAEWrapper

    round_trip = VAEWrapper(vae) if vae is not None else None
    wing, pattern = [], []
    for seed in range(n):
        image, attrs = make_butterfly(seed, 32)
        if round_trip is not None:
            image = round_trip.decode(round_trip.encode(image[None]))[0]
        if attrs["colour"] in HUE_COLOURS and attrs["pattern"] == "plain":
            wing.append(dominant_colour(image) == attrs["colour"])
        if attrs["colour"] in HUE_COLOURS and attrs["pattern_colour"] in HUE_COLOURS:
            pattern.append(pattern_hit(image, attrs["colour"], attrs["pattern_colour"]))
    return float(np.mean(wing)), float(np.mean(pattern))
