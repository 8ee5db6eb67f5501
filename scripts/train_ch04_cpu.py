"""Chapter 04's CPU challenge: butterflies from scratch in 5 minutes on 2 CPU cores.

    python scripts/train_ch04_cpu.py --measure base narrow noattn b16  # s/step, side by side
    python scripts/train_ch04_cpu.py --measure base --speedups        # channels_last, bf16, compile
    python scripts/train_ch04_cpu.py --train base --seeds 0 1 2 --seconds 300 --out runs/ch04
    python scripts/train_ch04_cpu.py --table runs/ch04                # the search's tables
    python scripts/train_ch04_cpu.py --train chosen --seconds 300 \
        --export data/models/ch04-cpu-butterflies                    # the shipped checkpoint

Each config names a UNet2DModel, an image size, a batch size, a learning rate and its schedule, a
prediction target, a beta schedule, a loss weighting and a timestep distribution; each config in
the search changes one of them from `BASE`. `--train` trains one for a wall-clock budget (train's
max_seconds) once per seed (the seed sets the initial weights, the batches and the noise), then
samples 200 butterflies with DDIM-25 from the EMA weights (and from the raw weights, to measure
EMA) and scores them with ddlearn.sample_quality: KID x 10^3 against real butterflies (0 = as
real, lower is better) and coverage of the 45 colour x pattern classes. Measurements:
benchmarks/ch04_cpu_configs.md.
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
from ddlearn.sample_quality import butterfly_quality
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
NARROW_NOATTN_UNET = dict(NOATTN_UNET, block_out_channels=(16, 32, 64), norm_num_groups=8)
WIDE_UNET = dict(SMALL_UNET, block_out_channels=(64, 128, 256))
DEEP_UNET = dict(SMALL_UNET, layers_per_block=2)
# The search's baseline: one factor of it changes per config below (benchmarks/ch04_cpu_configs.md)
BASE = dict(unet=SMALL_UNET, size=32, batch_size=32, lr=2e-3, prediction_type="v_prediction",
            beta_schedule="squaredcos_cap_v2", snr_gamma=5.0, ema_decay=0.995, warmup=100,
            lr_schedule="constant", timesteps="uniform")
NARROW_EPS = dict(BASE, unet=NARROW_UNET, prediction_type="epsilon")
CONFIGS = {  # stage 1: one factor at a time from BASE
    "seeds": dict(BASE, unet=SEEDS_UNET, batch_size=64, lr=4e-4, ema_decay=None, warmup=0),
    "base": BASE,
    "narrow": dict(BASE, unet=NARROW_UNET),            # width
    "wide": dict(BASE, unet=WIDE_UNET),
    "deep": dict(BASE, unet=DEEP_UNET),                # depth
    "noattn": dict(BASE, unet=NOATTN_UNET),            # attention
    "b16": dict(BASE, batch_size=16),                  # batch size
    "b64": dict(BASE, batch_size=64),
    "cosine-lr": dict(BASE, lr_schedule="cosine"),     # learning-rate schedule
    "eps": dict(BASE, prediction_type="epsilon"),      # prediction target
    "no-minsnr": dict(BASE, snr_gamma=None),           # loss weighting
    "logit-normal": dict(BASE, timesteps="logit_normal"),  # timestep sampling
    "narrow-eps": NARROW_EPS,                          # stage 1's two winners at once
    # Stage 2: one factor at a time from narrow-eps
    "narrow-eps-b16": dict(NARROW_EPS, batch_size=16),
    "narrow-eps-noattn": dict(NARROW_EPS, unet=NARROW_NOATTN_UNET),
    "narrow-eps-cosine-lr": dict(NARROW_EPS, lr_schedule="cosine"),
    "narrow-eps16": dict(NARROW_EPS, size=16),         # chapter 04's 2-minute 16 px run
    "tiny16": dict(BASE, size=16),
    "narrow16": dict(BASE, unet=NARROW_UNET, size=16),
}
CHOSEN = "narrow-eps"  # picked by the measurements in benchmarks/ch04_cpu_configs.md
CHOSEN16 = "narrow-eps16"  # the 2-minute 16 px run


def build(name: str, seed: int = 0):
    """Config name -> (UNet2DModel, DDPMScheduler, config dict)."""
    config = CONFIGS[{"chosen": CHOSEN, "chosen16": CHOSEN16}.get(name, name)]
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=config["size"], in_channels=3, out_channels=3,
                       attention_head_dim=32, **config["unet"])
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=config["beta_schedule"],
                              prediction_type=config["prediction_type"])
    return unet, scheduler, config


def make_loss(scheduler, config):
    """diffusion_loss with the config's weighting (plain, or Min-SNR-γ) and timestep sampling."""
    weighting = {} if config["snr_gamma"] is None else dict(weighting="min_snr",
                                                            snr_gamma=config["snr_gamma"])
    return lambda model, batch, generator: diffusion_loss(
        model, scheduler, batch, generator, timestep_distribution=config["timesteps"],
        **weighting)


def measure(names, steps: int, speedups: bool):
    """Seconds per training step of each config, in one process, interleaved in rounds. With
    `speedups`, each config also runs in channels_last, under bf16 autocast, and torch.compile'd."""
    variants = ["plain", "channels_last", "bf16", "compile"] if speedups else ["plain"]
    runs = {}
    for name in names:
        for variant in variants:
            unet, scheduler, config = build(name)
            data = torch.rand(config["batch_size"], 3, config["size"], config["size"]) * 2 - 1
            if variant == "channels_last":
                unet, data = unet.to(memory_format=torch.channels_last), \
                    data.contiguous(memory_format=torch.channels_last)
            model = torch.compile(unet) if variant == "compile" else unet
            optimizer = torch.optim.AdamW(unet.parameters(), lr=config["lr"])
            runs[f"{name}/{variant}"] = (model, make_loss(scheduler, config), data, optimizer,
                                         variant == "bf16", [])
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    for round_ in range(steps + 2):
        for model, loss_fn, data, optimizer, bf16, times in runs.values():
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model, data, torch.Generator().manual_seed(round_))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if round_ > 1:  # rounds 0 and 1 warm up the allocator (and compile)
                times.append(time.perf_counter() - start)
    print(f"load average {os.getloadavg()}")
    for name, (model, _, data, _, _, times) in runs.items():
        median = sorted(times)[len(times) // 2]
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:24s} {params / 1e6:5.2f} M params  batch {len(data):3d}  "
              f"{median:.3f} s/step (median of {len(times)})  -> {300 / median:.0f} steps in 5 min")


@torch.no_grad()
def sample(unet, scheduler, n: int = 200, steps: int = 25, seed: int = 0):
    """n DDIM samples in [-1, 1], the evaluation's fixed noise (seed 0) for every run."""
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=n, generator=torch.Generator().manual_seed(seed),
                  num_inference_steps=steps, output_type="pt").images
    return images * 2 - 1  # output_type="pt" is in [0, 1]


def score(samples) -> dict:
    quality = butterfly_quality(samples)
    return dict(kid_e3=round(quality["kid"] * 1e3, 1), coverage=round(quality["coverage"], 3))


def train_config(name, seed, seconds, steps, out, export, n_images, raw):
    unet, scheduler, config = build(name, seed)
    images, _ = render_butterflies(n_images, config["size"], seed=0)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = train(unet, make_loss(scheduler, config), images, num_steps=steps,
                   batch_size=config["batch_size"], lr=config["lr"],
                   ema_decay=config["ema_decay"], warmup_steps=config["warmup"],
                   lr_schedule=config["lr_schedule"], seed=seed, max_seconds=seconds,
                   progress=False)
    elapsed, losses = time.perf_counter() - start, result["losses"]
    final = result["ema"].model if result["ema"] else unet
    samples = sample(final, scheduler)
    report = dict(config=name, seed=seed, steps=len(losses), seconds=round(elapsed, 1),
                  load_before=load_before, load_after=os.getloadavg()[0],
                  s_per_step=round(elapsed / len(losses), 3),
                  final_loss=round(sum(losses[-100:]) / len(losses[-100:]), 4), **score(samples))
    if raw and result["ema"]:  # the same run's weights without EMA
        report["raw"] = score(sample(unet.eval(), scheduler))
    print(json.dumps(report), flush=True)
    if out:
        folder = Path(out, f"{name}-s{seed}")
        folder.mkdir(parents=True, exist_ok=True)
        make_grid((samples[:16] + 1) / 2, nrow=8, size=64).save(folder / "samples.png")
        Path(folder, "report.json").write_text(json.dumps({**report, "losses": losses}))
        export = export or folder / "pipeline"  # every run's EMA weights, to ship one later
    if export:
        # float16 weights: half the size; from_pretrained loads them into float32
        pipe = DDPMPipeline(unet=copy.deepcopy(final).half(), scheduler=scheduler)
        pipe.save_pretrained(export)
        Path(export, "training.json").write_text(json.dumps(
            {**report, "settings": config, "command": " ".join(sys.argv), "losses": losses}))


def table(folder):
    """One markdown row per config: mean ± std over its seeds of steps, KID and coverage (and of
    the raw, non-EMA weights' KID where the runs measured it)."""
    reports = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*/report.json"))]
    print("| config | seeds | steps in the budget | load (before) | KID × 10³ | coverage "
          "| without EMA: KID × 10³ |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in dict.fromkeys(r["config"] for r in reports):
        rows = [r for r in reports if r["config"] == name]
        cell = lambda values, digits=0: " ± ".join(f"{v:.{digits}f}" for v in _mean_std(values))
        loads = [r["load_before"] for r in rows]
        raw = [r["raw"]["kid_e3"] for r in rows if "raw" in r]
        print(f"| {name} | {len(rows)} | {cell([r['steps'] for r in rows])} "
              f"| {min(loads):.1f}–{max(loads):.1f} | {cell([r['kid_e3'] for r in rows])} "
              f"| {cell([r['coverage'] for r in rows], 2)} | {cell(raw) if raw else '–'} |")


def _mean_std(values):
    values = torch.tensor(values, dtype=torch.float64)
    return values.mean().item(), (values.std().item() if len(values) > 1 else 0.0)


def strip(run_dirs, path):
    """One labelled row of samples per run (its samples.png and report.json) -> one PNG."""
    from PIL import Image, ImageDraw

    rows = [(json.loads(Path(d, "report.json").read_text()), Image.open(Path(d, "samples.png")))
            for d in run_dirs]
    width, label = max(im.width for _, im in rows), 14
    sheet = Image.new("RGB", (width, sum(im.height + label for _, im in rows)), "white")
    y = 0
    for report, im in rows:
        ImageDraw.Draw(sheet).text((4, y + 1), f"{report['config']} (seed {report['seed']}): "
                                   f"{report['steps']} steps, KID x 10^3 {report['kid_e3']:.0f}, "
                                   f"coverage {report['coverage']:.2f}", fill="black")
        sheet.paste(im, (0, y + label))
        y += im.height + label
    sheet.save(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure", nargs="*", help="config names to time side by side")
    parser.add_argument("--measure-steps", type=int, default=20)
    parser.add_argument("--speedups", action="store_true", help="also channels_last/bf16/compile")
    parser.add_argument("--train", nargs="*", help="config names (or 'chosen', 'chosen16')")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--seconds", type=float, default=300, help="wall-clock budget")
    parser.add_argument("--steps", type=int, default=100_000, help="step budget")
    parser.add_argument("--n-images", type=int, default=4000)
    parser.add_argument("--no-raw", action="store_true", help="skip scoring the non-EMA weights")
    parser.add_argument("--out", default=None)
    parser.add_argument("--export", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strip", nargs="*", help="run folders to put in one comparison PNG")
    parser.add_argument("--table", help="a folder of runs to summarise")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure:
        measure(args.measure, args.measure_steps, args.speedups)
    if args.strip:
        strip(args.strip, args.out)
    if args.table:
        table(args.table)
    for seed in args.seeds if args.train else []:  # seed-major: each pass has every config
        for name in args.train:
            train_config(name, seed, args.seconds, args.steps, args.out, args.export,
                         args.n_images, raw=not args.no_raw)


if __name__ == "__main__":
    main()
