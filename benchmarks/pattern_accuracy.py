"""Does the tiny text-to-image model draw the *pattern* the prompt asks for? And does guidance help?

Colour can be read from hues (colour_accuracy.py); a pattern (plain, spots, stripes, eyespots,
edges) needs a classifier. This script trains a small CNN on synthetic butterflies sent through
the model's own VAE (generated images come out of that decoder, so it should judge those), checks
it on held-out ones, then names the pattern of N images per prompt for ten prompts (each pattern
with two colour pairs), at each guidance scale. With guidance 1 in the list, every guided image is
also compared with the unguided one from the same starting noise.

    python benchmarks/pattern_accuracy.py --n 16 --steps 25 --guidance 7.5 3 1    # ~6 min, 2 cores
"""

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from colour_accuracy import sign_test  # benchmarks/ is on the path when run as a script
from torch import nn

import ddlearn
from ddlearn.data.butterflies import PATTERNS, caption_for, make_butterfly
from ddlearn.models.vae_wrapper import VAEWrapper

PROMPTS = [(wing, pattern_colour, pattern)
           for pattern in PATTERNS
           for wing, pattern_colour in (("blue", "orange"), ("yellow", "black"))]


def classifier() -> nn.Module:
    """~0.1 M parameters: (B, 3, 32, 32) -> (B, 5) pattern logits."""
    block = lambda c_in, c_out: [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2),  # 32 -> 16 px
                         *block(32, 64), *block(64, 64), nn.MaxPool2d(2),  # 16 -> 8 px
                         *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, len(PATTERNS)))


@torch.no_grad()
def through_vae(vae, first_seed: int, n: int):
    """n synthetic butterflies after a VAE round trip: (images (n, 3, 32, 32), patterns)."""
    round_trip = VAEWrapper(vae)
    butterflies = [make_butterfly(seed, 32) for seed in range(first_seed, first_seed + n)]
    images = np.stack([image for image, _ in butterflies])  # (n, 32, 32, 3) uint8
    x = torch.cat([round_trip.decode(round_trip.encode(images[i:i + 256]), output_type="pt")
                   for i in range(0, n, 256)])  # in [0, 1]
    patterns = torch.tensor([PATTERNS.index(attrs["pattern"]) for _, attrs in butterflies])
    return x * 2 - 1, patterns


def train_classifier(vae, n_train=12_000, epochs=4, seed=0):
    torch.manual_seed(seed)
    x, y = through_vae(vae, 0, n_train)
    net, generator = classifier(), torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for batch in torch.randperm(n_train, generator=generator).split(128):
            flip = torch.rand(len(batch), generator=generator) < 0.5  # butterflies are symmetric
            inputs = torch.where(flip[:, None, None, None], x[batch].flip(-1), x[batch])
            loss = F.cross_entropy(net(inputs), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def predict_patterns(net, images, vae) -> np.ndarray:
    """PIL images -> the index of the predicted pattern of each."""
    return net(VAEWrapper(vae).to_tensor(images) * 2 - 1).argmax(1).numpy()  # in [-1, 1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="data/models/tiny-sd-butterflies")
    parser.add_argument("--n", type=int, default=16, help="images per prompt")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, nargs="+", default=[7.5, 3.0, 1.0])
    args = parser.parse_args()
    pipe = ddlearn.StableDiffusionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)

    start = time.perf_counter()
    net = train_classifier(pipe.vae)
    x, y = through_vae(pipe.vae, 500_000, 2_000)  # held out: other seeds
    with torch.no_grad():
        held_out = (net(x).argmax(1) == y).float().mean().item()
    print(f"pattern classifier: {held_out:.1%} right on 2,000 held-out butterflies after the VAE "
          f"round trip (trained in {time.perf_counter() - start:.0f} s)")

    print(f"{type(pipe.scheduler).__name__}, {args.steps} steps, {args.n} images per prompt")
    print(f"| guidance_scale | {' | '.join(PATTERNS)} | all |\n|---|{'---|' * (len(PATTERNS) + 1)}")
    hits = {}
    for guidance in args.guidance:
        start, right = time.perf_counter(), []
        for wing, pattern_colour, pattern in PROMPTS:
            images = pipe([caption_for(wing, pattern, pattern_colour)] * args.n,
                          num_inference_steps=args.steps, guidance_scale=guidance,
                          generator=torch.Generator().manual_seed(0)).images
            right.append(predict_patterns(net, images, pipe.vae) == PATTERNS.index(pattern))
        hits[guidance] = np.concatenate(right)
        per_pattern = [np.concatenate(right[2 * i:2 * i + 2]).mean()  # PROMPTS: 2 per pattern
                       for i in range(len(PATTERNS))]
        cells = " | ".join(f"{a:.0%}" for a in per_pattern)
        print(f"| {guidance} | {cells} | {hits[guidance].mean():.1%} |"
              f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    if 1.0 in hits:
        print("\npaired with guidance 1 (same prompts, same starting noise):")
        for guidance, right in hits.items():
            if guidance != 1.0:
                gained = int((right & ~hits[1.0]).sum())
                lost = int((~right & hits[1.0]).sum())
                print(f"  {guidance}: pattern right in {gained} more images, wrong in {lost} more "
                      f"(sign test p = {sign_test(gained, lost):.2g})")


if __name__ == "__main__":
    main()
