"""Validate `ddlearn.sample_quality` and score every shipped model with it.

    python benchmarks/sample_quality.py                      # n = 500, 3 seeds, all rows
    python benchmarks/sample_quality.py --n 200 --only real noise blobs ddpm-butterflies-32

Rows: real against real (the floor), things that must score far (uniform noise, blurred blobs,
one image repeated n times, only red butterflies), and each shipped model's samples, each with
`--seeds` different seeds. Every row compares with the same n_real = 1000 test-split butterflies at
the samples' size. Prints a Markdown table: KID × 10³ (mean ± spread over the seeds), coverage of
the 45 classes, share of confident samples, seconds. The results are in
benchmarks/sample_quality.md.
"""

import argparse
import os
import time

import torch
import torch.nn.functional as F

import ddlearn
from ddlearn.data import shipped_model
from ddlearn.data.butterflies import make_butterfly
from ddlearn.sample_quality import butterfly_quality, real_butterflies


def blurred(x: torch.Tensor) -> torch.Tensor:
    """Down to 4 px and back: right colours and layout, no detail."""
    small = F.interpolate(x, size=(4, 4), mode="bilinear", antialias=True)
    return F.interpolate(small, size=x.shape[-2:], mode="bilinear")


def red_only(n: int, seed: int) -> torch.Tensor:
    """n real butterflies whose wings are red (5 of the 45 classes)."""
    from ddlearn.data.transforms import to_tensor

    images, i = [], seed * 1_000_000 + 950_000
    while len(images) < n:
        image, attrs = make_butterfly(i, 32)
        if attrs["colour"] == "red":
            images.append(to_tensor(image))
        i += 1
    return torch.stack(images)


def unconditional(name: str, steps: int):
    """Samples of a shipped DDPM folder with DDIM (its own config), in [-1, 1]."""
    pipe = ddlearn.DDPMPipeline.from_pretrained(shipped_model(name))
    scheduler = ddlearn.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe = ddlearn.DDIMPipeline(unet=pipe.unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)

    def draw(n, seed):
        with torch.no_grad():
            images = pipe(batch_size=n, num_inference_steps=steps, output_type="pt",
                          generator=torch.Generator().manual_seed(seed)).images
        return images * 2 - 1
    return draw


def text_to_image(name: str):
    """Samples of a shipped text-to-image folder at its defaults, prompted with the captions of
    real test butterflies (so the prompts follow the data's class distribution)."""
    pipe = ddlearn.DiffusionPipeline.from_pretrained(shipped_model(name))
    pipe.set_progress_bar_config(disable=True)

    def draw(n, seed):
        captions = [make_butterfly(seed * 1_000_000 + 970_000 + i, 8)[1]["caption"]
                    for i in range(n)]
        images = []
        with torch.no_grad():
            for start in range(0, n, 50):
                images.append(pipe(captions[start:start + 50], output_type="pt",
                                   generator=torch.Generator().manual_seed(seed + start)).images)
        return torch.cat(images) * 2 - 1
    return draw


def rows(steps: int) -> dict:
    """name -> draw(n, seed) giving (n, 3, H, W) in [-1, 1]. Real seeds start at 1: the reference
    is seed 0's test split."""
    return {
        "real": lambda n, seed: real_butterflies(n, 32, seed + 1),
        "real-16px": lambda n, seed: real_butterflies(n, 16, seed + 1),
        "noise": lambda n, seed: torch.rand(n, 3, 32, 32,
                                            generator=torch.Generator().manual_seed(seed)) * 2 - 1,
        "blobs": lambda n, seed: blurred(real_butterflies(n, 32, seed + 1)),
        "one-image": lambda n, seed: real_butterflies(1, 32, seed + 1).expand(n, -1, -1, -1),
        "red-only": red_only,
        "ddpm-butterflies-32": unconditional("ddpm-butterflies-32", steps),
        "ch04-cpu-butterflies": unconditional("ch04-cpu-butterflies", steps),
        "tiny-sd-butterflies": text_to_image("tiny-sd-butterflies"),
        "tiny-sd3-butterflies": text_to_image("tiny-sd3-butterflies"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="samples per seed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (unconditional rows)")
    parser.add_argument("--only", nargs="+", default=None, help="row names")
    args = parser.parse_args()

    table = rows(args.steps)
    print(f"load average {os.getloadavg()}; n = {args.n} per seed, {args.seeds} seeds, "
          f"DDIM-{args.steps} for the unconditional models, pipeline defaults for text-to-image")
    print("| samples | size | KID × 10³ | coverage | confident | seconds |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.only or table:
        start, scores = time.perf_counter(), []
        for seed in range(args.seeds):
            images = table[name](args.n, seed)
            scores.append(butterfly_quality(images))
        seconds = time.perf_counter() - start
        kid = torch.tensor([s["kid"] for s in scores]) * 1e3
        cover = torch.tensor([s["coverage"] for s in scores])
        confident = torch.tensor([s["confident"] for s in scores])
        spread = f" ± {kid.std().item():.2f}" if len(kid) > 1 else ""
        print(f"| {name} | {images.shape[-1]} px | {kid.mean().item():.2f}{spread} | "
              f"{cover.mean().item():.2f} | {confident.mean().item():.2f} | {seconds:.0f} |",
              flush=True)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
