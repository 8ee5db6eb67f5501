"""Validate `ddlearn.concept_fidelity` on chapter 06's concept, the sks butterfly.

    python benchmarks/concept_fidelity.py                 # n = 200 per row, 64 samples per prompt
    python benchmarks/concept_fidelity.py --n 100 --samples 32
    python benchmarks/concept_fidelity.py --seed 1   # other held-out and real butterflies

Rows: held-out images of the concept (raw, and after a round trip through the shipped VAE, the
sharpest a fine-tuned model can draw), the same blurred and noised step by step, the nearest
training classes (the concept's own poses, shape and orange rim, with blue or green wings), every
one of the 45 training classes (40 real butterflies each, raw and round-tripped), and samples of
the shipped tiny Stable Diffusion (20 DDIM steps, guidance 7.5, generator seed 0), which has never
seen the concept. Prints a Markdown table of s(x) (mean, min, max) and the fidelity (share with
s ≥ τ), the τ these data suggest, and the base model's prior colour accuracy. The results are in
benchmarks/concept_fidelity.md.
"""

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import ddlearn
from ddlearn.concept_fidelity import THRESHOLD, concept_similarities, prior_colour_accuracy
from ddlearn.data import CLASS_PROMPT, CONCEPT_PROMPT, shipped_model
from ddlearn.data.butterflies import (
    CONCEPT,
    NUM_CLASSES,
    class_names,
    concept_images,
    make_butterfly,
    posed_butterfly,
)
from ddlearn.data.transforms import to_tensor


def as_tensor(images) -> torch.Tensor:
    """PIL images / uint8 arrays -> (N, 3, H, W) in [-1, 1]."""
    return torch.stack([to_tensor(np.asarray(image)) for image in images])


def blurred(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Down to `pixels` px (antialiased) and bilinear back up: less and less detail."""
    small = F.interpolate(x, size=(pixels, pixels), mode="bilinear", antialias=True)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear")


def noised(x: torch.Tensor, sigma: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def training_classes(per_class: int, seed: int) -> tuple:
    """`per_class` test-split butterflies (never trained on) of each of the 45 classes, and their
    labels: (N, 3, 32, 32) in [-1, 1], (N,)."""
    images, labels, counts, seed = [], [], [0] * NUM_CLASSES, seed * 1_000_000 + 900_000
    while min(counts) < per_class:
        image, attrs = make_butterfly(seed, 32)
        if counts[attrs["label"]] < per_class:
            counts[attrs["label"]] += 1
            images.append(image)
            labels.append(attrs["label"])
        seed += 1
    return as_tensor(images), np.array(labels)


def nearest_classes(n: int, colour: str, seed: int) -> torch.Tensor:
    """The held-out concept images' poses, shape and orange rim, with training-colour wings."""
    wings = dict(CONCEPT, colour=colour)
    return as_tensor([posed_butterfly(seed * 1_000_000 + 900_000 + i, **wings) for i in range(n)])


def tiny_sd_samples(pipe, prompt: str, n: int) -> list:
    return pipe([prompt] * n, num_inference_steps=20, guidance_scale=7.5,
                generator=torch.Generator().manual_seed(0)).images


def row(name: str, s: np.ndarray) -> str:
    return (f"| {name} | {len(s)} | {s.mean():.3f} | {s.min():.3f} | {s.max():.3f} | "
            f"{(s >= THRESHOLD).mean():.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="held-out concept images")
    parser.add_argument("--per-class", type=int, default=40, help="real butterflies per class")
    parser.add_argument("--samples", type=int, default=64, help="tiny SD samples per prompt")
    parser.add_argument("--seed", type=int, default=0, help="of the held-out and real images")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"load average {os.getloadavg()}; τ = THRESHOLD = {THRESHOLD}; seed {args.seed}")
    pipe = ddlearn.StableDiffusionPipeline.from_pretrained(shipped_model("tiny-sd-butterflies"))
    pipe.set_progress_bar_config(disable=True)
    vae = ddlearn.VAEWrapper(pipe.vae)
    round_trip = lambda x: vae.decode(vae.encode((x + 1) / 2), output_type="pt") * 2 - 1

    print("| images | n | s mean | s min | s max | fidelity |\n|---|---:|---:|---:|---:|---:|")
    # 1. the concept: held out, through the VAE, blurred, noised
    held_out = as_tensor(concept_images(args.n, seed=args.seed, split="test"))
    s_held, s_held_vae = concept_similarities(held_out), concept_similarities(round_trip(held_out))
    print(row("held-out concept (test split)", s_held))
    print(row("held-out concept, VAE round trip", s_held_vae))
    for pixels in (16, 12, 8, 4):
        print(row(f"held-out concept, blurred to {pixels} px", concept_similarities(
            blurred(held_out, pixels))))
    for sigma in (0.1, 0.2, 0.4, 0.8):
        print(row(f"held-out concept, Gaussian noise σ = {sigma}", concept_similarities(
            noised(held_out, sigma))))
    # 2. training butterflies: the nearest classes, then all 45
    for colour in ("blue", "green"):
        print(row(f"{colour} wings, orange rim, round (concept's poses)",
                  concept_similarities(nearest_classes(args.n, colour, args.seed))))
    real, labels = training_classes(args.per_class, args.seed)
    s_real, s_real_vae = concept_similarities(real), concept_similarities(round_trip(real))
    print(row(f"all 45 classes x {args.per_class} (test split)", s_real))
    print(row(f"all 45 classes x {args.per_class}, VAE round trip", s_real_vae))
    # 3. the shipped tiny SD, which never saw the concept
    for prompt in (CLASS_PROMPT, CONCEPT_PROMPT, "a blue butterfly with orange edges",
                   "a green butterfly with orange edges"):
        samples = tiny_sd_samples(pipe, prompt, args.samples)
        print(row(f'tiny SD, "{prompt}"', concept_similarities(samples)), flush=True)

    highest = np.maximum(s_real, s_real_vae)
    top = sorted(range(NUM_CLASSES), key=lambda k: -highest[labels == k].max())[:5]
    print("highest classes:", ", ".join(f"{class_names()[k]} {highest[labels == k].max():.3f}"
                                        for k in top))
    low, high = min(s_held.min(), s_held_vae.min()), highest.max()
    print(f"gap: lowest held-out concept {low:.3f}, highest training butterfly {high:.3f}, "
          f"midpoint {(low + high) / 2:.3f} (THRESHOLD {THRESHOLD})")
    reds = tiny_sd_samples(pipe, "a red butterfly", args.samples)
    print(f'prior colour accuracy of the base model, "a red butterfly": '
          f"{prior_colour_accuracy(reds, 'red'):.2f}")
    print(f"load average {os.getloadavg()}; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
