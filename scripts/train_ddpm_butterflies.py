"""Train the shipped 32 px butterfly DDPM (data/models/ddpm-butterflies-32).

    python scripts/train_ddpm_butterflies.py                       # CPU or one GPU, defaults below
    python scripts/train_ddpm_butterflies.py --steps 200 --export ""  # a quick look
    accelerate launch scripts/train_ddpm_butterflies.py --accelerate  # several GPUs (DDP)

Seeded; EMA weights; a checkpoint every --save-every steps in --output, and a rerun of the same
command resumes from the last one (the loss log `loss_log.json` continues too). At the end the EMA
UNet and the scheduler are exported in the diffusers layout to --export.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_accelerator, pick_device, render_butterflies  # noqa: E402

from ddlearn import DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402
from ddlearn.losses import diffusion_loss  # noqa: E402
from ddlearn.training import train  # noqa: E402


def build_unet() -> UNet2DModel:
    """The seeds' butterfly layout, slimmed to the 20 MB budget: attention only at 8 and 4 px."""
    return UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(32, 64, 64, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="runs/ddpm-butterflies-32")
    parser.add_argument("--export", default="data/models/ddpm-butterflies-32")
    parser.add_argument("--n-images", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--init-from", default=None,
                        help="start from an exported pipeline's UNet (a second training round)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--accelerate", action="store_true")
    args = parser.parse_args(argv)

    accelerator = make_accelerator(args.accelerate)
    device = accelerator.device if accelerator else pick_device(args.device)
    torch.manual_seed(args.seed)
    images, _ = render_butterflies(args.n_images, 32, args.seed, args.workers)
    images = images.to(device)
    unet = build_unet()
    if args.init_from:
        first_round = UNet2DModel.from_pretrained(args.init_from, subfolder="unet")
        unet.load_state_dict(first_round.state_dict())
    unet = unet.to(device)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    print(f"UNet2DModel: {unet.num_parameters() / 1e6:.2f} M parameters on {device}")

    start = time.perf_counter()
    loss_fn = lambda model, batch, generator: diffusion_loss(model, scheduler, batch, generator)
    result = train(unet, loss_fn, images, num_steps=args.steps, batch_size=args.batch_size,
                   lr=args.lr, ema_decay=args.ema_decay, output_dir=args.output,
                   save_every=args.save_every, seed=args.seed, warmup_steps=500,
                   accelerator=accelerator,
                   max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    losses = result["losses"]
    print(f"trained to step {len(losses)} in {time.perf_counter() - start:.0f} s this run; "
          f"mean loss of the last 500 steps {sum(losses[-500:]) / len(losses[-500:]):.4f}")
    Path(args.output, "loss_log.json").write_text(json.dumps(losses))
    if len(losses) < args.steps:
        print(f"stopped at step {len(losses)} of {args.steps} (time budget); rerun to go on")
    if args.export and (not accelerator or accelerator.is_main_process):
        pipe = DDPMPipeline(unet=result["ema"].model.float().cpu(), scheduler=scheduler)
        pipe.save_pretrained(args.export)
        print(f"exported the EMA pipeline to {args.export}")


if __name__ == "__main__":
    main()
