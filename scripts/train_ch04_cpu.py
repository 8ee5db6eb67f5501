"""Chapter 04's CPU challenge: butterflies from scratch in 5 minutes on 2 CPU cores.

    python scripts/train_ch04_cpu.py --measure seeds small small-noattn tiny16  # s/step
    python scripts/train_ch04_cpu.py --train small --seconds 90 --out runs/ch04/small
    python scripts/train_ch04_cpu.py --train chosen --seconds 300 \
        --export data/models/ch04-cpu-butterflies                   # the shipped checkpoint

Each config names a UNet2DModel, an image size, a batch size, a learning rate, a prediction target,
a beta schedule and a loss weighting. `--train` trains one for a wall-clock budget (train's
max_seconds), samples 16 butterflies with DDIM-50 from the EMA weights, saves the strip as a PNG
and prints: steps done, s/step, final loss, and the RMS distance of each sample to its nearest
training image (lower: closer to a real butterfly). Measurements: benchmarks/ch04_cpu_configs.md.
"""

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

from ddlearn.losses import diffusion_loss
from ddlearn.models.unet_2d import UNet2DModel
from ddlearn.pipelines.ddpm import DDIMPipeline, DDPMPipeline
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.training import train
from ddlearn.viz import make_grid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import render_butterflies  # noqa: E402

SEEDS_UNET = dict(  # the seeds' (diffusers tutorial's) butterfly UNet: 18 M parameters
    block_out_channels=(64, 128, 128, 256), layers_per_block=2,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
SMALL_UNET = dict(  # three levels 32 -> 16 -> 8 px, one ResNet per level, attention only at 8 px
    block_out_channels=(32, 64, 128), layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
NOATTN_UNET = dict(SMALL_UNET, down_block_types=("DownBlock2D",) * 3,
                   up_block_types=("UpBlock2D",) * 3, add_attention=False)
NARROW_UNET = dict(SMALL_UNET, block_out_channels=(16, 32, 64), norm_num_groups=8)
BASE = dict(unet=SMALL_UNET, size=32, batch_size=32, lr=2e-3, prediction_type="epsilon",
            beta_schedule="squaredcos_cap_v2", snr_gamma=None, ema_decay=0.995, warmup=100)
CONFIGS = {
    "seeds": dict(BASE, unet=SEEDS_UNET, batch_size=64, lr=4e-4, ema_decay=None, warmup=0),
    "small": BASE,
    "small-b64": dict(BASE, batch_size=64),
    "small-noattn": dict(BASE, unet=NOATTN_UNET),
    "small-linear": dict(BASE, beta_schedule="linear"),
    "small-lr1e-3": dict(BASE, lr=1e-3),
    "small-v": dict(BASE, prediction_type="v_prediction"),
    "small-v-minsnr": dict(BASE, prediction_type="v_prediction", snr_gamma=5.0),
    "small-eps-minsnr": dict(BASE, snr_gamma=5.0),
    "tiny16": dict(BASE, size=16),
    "tiny16-v-minsnr": dict(BASE, size=16, prediction_type="v_prediction", snr_gamma=5.0),
    "narrow32-v-minsnr": dict(BASE, unet=NARROW_UNET, prediction_type="v_prediction",
                              snr_gamma=5.0),
}
CHOSEN = "tiny16-v-minsnr"  # picked by the measurements in benchmarks/ch04_cpu_configs.md


def build(name: str):
    """Config name -> (UNet2DModel, DDPMScheduler, config dict)."""
    config = CONFIGS[CHOSEN if name == "chosen" else name]
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=config["size"], in_channels=3, out_channels=3,
                       attention_head_dim=32, **config["unet"])
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=config["beta_schedule"],
                              prediction_type=config["prediction_type"])
    return unet, scheduler, config


def make_loss(scheduler, snr_gamma):
    """The plain loss, or Min-SNR-γ weighted when the config names a γ."""
    weighting = {} if snr_gamma is None else dict(weighting="min_snr", snr_gamma=snr_gamma)
    return lambda model, batch, generator: diffusion_loss(model, scheduler, batch, generator,
                                                          **weighting)


def measure(names, steps: int):
    """Seconds per training step of each config, in one process, interleaved in rounds."""
    runs = {}
    for name in names:
        unet, scheduler, config = build(name)
        data = torch.rand(config["batch_size"], 3, config["size"], config["size"]) * 2 - 1
        optimizer = torch.optim.AdamW(unet.parameters(), lr=config["lr"])
        runs[name] = (unet, make_loss(scheduler, config["snr_gamma"]), data, optimizer, [])
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    for round_ in range(steps + 1):
        for unet, loss_fn, data, optimizer, times in runs.values():
            start = time.perf_counter()
            loss = loss_fn(unet, data, torch.Generator().manual_seed(round_))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if round_ > 0:  # round 0 warms up the allocator
                times.append(time.perf_counter() - start)
        print(f"round {round_}: " + "  ".join(f"{name} {run[-1][-1]:.2f} s" for name, run in
                                             runs.items() if run[-1]), flush=True)
    print(f"load average {os.getloadavg()}")
    for name, (unet, _, data, _, times) in runs.items():
        median = sorted(times)[len(times) // 2]
        print(f"{name:18s} {unet.num_parameters() / 1e6:5.2f} M params  batch {len(data):3d}  "
              f"{median:.3f} s/step (median of {len(times)})  -> {300 / median:.0f} steps in 5 min")

@torch.no_grad()
def sample(unet, scheduler, n: int = 16, steps: int = 50, seed: int = 0):
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=n, generator=torch.Generator().manual_seed(seed),
                num_inference_steps=steps, output_type="pt").images


def nearest_rms(samples, images):
    """RMS distance (in [-1, 1] units) of each sample to its nearest training image."""
    flat = images.flatten(1)
    return torch.stack([((flat - s.flatten()) ** 2).mean(1).min().sqrt() for s in samples])


def train_config(name, seconds, steps, out, export, n_images):
    unet, scheduler, config = build(name)
    images, _ = render_butterflies(n_images, config["size"], seed=0)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = train(unet, make_loss(scheduler, config["snr_gamma"]), images, num_steps=steps,
                   batch_size=config["batch_size"], lr=config["lr"],
                   ema_decay=config["ema_decay"], warmup_steps=config["warmup"], seed=0,
                   max_seconds=seconds, progress=False)
    elapsed, losses = time.perf_counter() - start, result["losses"]
    cpu = time.process_time() - cpu_start  # all threads: ≈ 2 × wall on an idle 2-core machine
    final = result["ema"].model if result["ema"] else unet
    samples = sample(final, scheduler) * 2 - 1  # output_type="pt" is in [0, 1]
    distance = nearest_rms(samples, images).mean().item()
    report = dict(config=name, steps=len(losses), seconds=round(elapsed), load=os.getloadavg()[0],
                  s_per_step=round(elapsed / len(losses), 3), cpu_seconds=round(cpu),
                  final_loss=round(sum(losses[-100:]) / len(losses[-100:]), 4),
                  nearest_rms=round(distance, 3))
    print(json.dumps(report))
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        make_grid(samples, nrow=8, size=64).save(Path(out) / "samples.png")
        Path(out, "report.json").write_text(json.dumps({**report, "losses": losses}))
    if export:
        # float16 weights: half the size (5.5 MB); from_pretrained loads them into float32
        pipe = DDPMPipeline(unet=copy.deepcopy(final).half(), scheduler=scheduler)
        pipe.save_pretrained(export)
        Path(export, "training.json").write_text(json.dumps({**report, "losses": losses}))

def strip(run_dirs, path):
    """One labelled row of samples per run (its samples.png and report.json) -> one PNG."""
    from PIL import Image, ImageDraw

    rows = [(json.loads(Path(d, "report.json").read_text()), Image.open(Path(d, "samples.png")))
            for d in run_dirs]
    width, label = max(im.width for _, im in rows), 14
    sheet = Image.new("RGB", (width, sum(im.height + label for _, im in rows)), "white")
    y = 0
    for report, im in rows:
        ImageDraw.Draw(sheet).text((4, y + 1), f"{report['config']}: {report['steps']} steps, "
                                   f"nearest-image RMS {report['nearest_rms']}", fill="black")
        sheet.paste(im, (0, y + label))
        y += im.height + label
    sheet.save(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure", nargs="*", help="config names to time side by side")
    parser.add_argument("--measure-steps", type=int, default=20)
    parser.add_argument("--train", help="a config name (or 'chosen')")
    parser.add_argument("--seconds", type=float, default=300, help="wall-clock budget")
    parser.add_argument("--steps", type=int, default=100_000, help="step budget")
    parser.add_argument("--n-images", type=int, default=4000)
    parser.add_argument("--out", default=None)
    parser.add_argument("--export", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strip", nargs="*", help="run folders to put in one comparison PNG")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure:
        measure(args.measure, args.measure_steps)
    if args.strip:
        strip(args.strip, args.out)
    if args.train:
        train_config(args.train, args.seconds, args.steps, args.out, args.export, args.n_images)


if __name__ == "__main__":
    main()
