"""Sample grids of the shipped checkpoints -> benchmarks/results/{ddpm,tiny_sd}_samples.png.

    python benchmarks/sample_grids.py

DDPM: 16 butterflies, DDIM 50 steps, seed 0. Tiny SD: 8 prompts (rows: guidance 1, 3 and 7.5),
DDIM (the shipped scheduler) 25 steps, seed 0.
"""

import time
from pathlib import Path

import torch

from ddlearn import DDIMPipeline, StableDiffusionPipeline
from ddlearn.data import shipped_model
from ddlearn.viz import make_grid, upscale

OUT = Path(__file__).parent / "results"
PROMPTS = [f"a {c} butterfly" for c in ("red", "orange", "yellow", "green", "blue", "purple")] + [
    "a blue butterfly with orange spots", "a yellow butterfly with black stripes"]


def main():
    OUT.mkdir(exist_ok=True)
    start = time.perf_counter()
    ddpm = DDIMPipeline.from_pretrained(shipped_model("ddpm-butterflies-32"))
    ddpm.set_progress_bar_config(disable=True)
    images = ddpm(batch_size=16, num_inference_steps=50,
                  generator=torch.Generator().manual_seed(0)).images
    upscale(make_grid(images, nrow=8), 3).save(OUT / "ddpm_samples.png")
    print(f"ddpm_samples.png in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    sd = StableDiffusionPipeline.from_pretrained(shipped_model("tiny-sd-butterflies"))
    sd.set_progress_bar_config(disable=True)
    rows = []
    for guidance in (1.0, 3.0, 7.5):
        rows += sd(PROMPTS, num_inference_steps=25, guidance_scale=guidance,
                   generator=torch.Generator().manual_seed(0)).images
    upscale(make_grid(rows, nrow=8), 3).save(OUT / "tiny_sd_samples.png")
    print(f"tiny_sd_samples.png (rows: guidance 1, 3, 7.5) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
