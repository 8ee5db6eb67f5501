"""Train the shipped tiny text-to-image Stable Diffusion (data/models/tiny-sd-butterflies).

    python scripts/train_text2img.py                               # CPU or one GPU
    accelerate launch scripts/train_text2img.py --accelerate       # several GPUs (DDP)

Two stages, each seeded, with EMA, checkpoints and resume (rerun the same command to continue):
1. an AutoencoderKL with 3 levels (32 px images <-> 4 x 8 x 8 latents), trained on reconstruction
   (MSE + L1) with the tiny KL weight SD used; its `scaling_factor` is set to 1 / std(latents);
2. a CLIPTextModel and a UNet2DConditionModel trained together on the latents with captions,
   replacing 10% of captions by "" so classifier-free guidance works.
The result is saved in the Stable Diffusion layout (vae/, text_encoder/, tokenizer/, unet/,
scheduler/, model_index.json) and loads in diffusers' StableDiffusionPipeline too.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_accelerator, pick_device, render_butterflies  # noqa: E402

from ddlearn import (  # noqa: E402
    AutoencoderKL,
    CLIPTextModel,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from ddlearn.data.butterflies.drawing import caption_vocabulary  # noqa: E402
from ddlearn.data.tokenizer import build_clip_tokenizer  # noqa: E402
from ddlearn.losses import diffusion_loss  # noqa: E402
from ddlearn.training import train  # noqa: E402

MAX_TOKENS = 16  # captions are at most ~9 tokens; SD uses 77


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                         block_out_channels=(32, 64, 64), norm_num_groups=32,
                         down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, sample_size=32)


def build_text_encoder(vocab_size: int) -> CLIPTextModel:
    return CLIPTextModel(vocab_size=vocab_size, hidden_size=64, intermediate_size=256,
                         num_hidden_layers=3, num_attention_heads=4,
                         max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1)


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(64, 96, 128), norm_num_groups=32, cross_attention_dim=64,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


def build_scheduler() -> DDIMScheduler:
    """Stable Diffusion's noise schedule (scaled_linear β from 0.00085 to 0.012), sampled with DDIM,
    as SD 2.x ships it. SD 1.x's PNDM (PLMS) breaks this small model under guidance 7.5 at 25 steps
    (its 4-step extrapolation overshoots), DDIM does not: benchmarks/colour_accuracy.py shows both.
    clip_sample=False is written out, as in SD's own files, so that a scheduler swapped in with
    `from_config` does not clip the latents to [-1, 1] (DDIM's and DDPM's default)."""
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def vae_loss(vae, images, generator, kl_weight=1e-6):
    posterior = vae.encode(images).latent_dist
    reconstruction = vae.decode(posterior.sample(generator)).sample
    return (F.mse_loss(reconstruction, images) + 0.5 * F.l1_loss(reconstruction, images)
            + kl_weight * posterior.kl().mean())


def train_vae(images, args, accelerator, device, vae=None, shift=False):
    """Stage 1 -> (EMA VAE with its scaling_factor set, posterior means, scaling_factor, log).
    `shift`: also centre the latents with shift_factor = their mean, as SD3's VAE does."""
    seconds = lambda minutes: minutes * 60 if minutes else None
    out = Path(args.output)
    vae = (vae or build_vae()).to(device)
    start = time.perf_counter()
    result = train(vae, vae_loss, images, num_steps=args.vae_steps, batch_size=args.batch_size,
                   lr=1e-3, ema_decay=0.999, output_dir=out / "vae", save_every=1000,
                   seed=args.seed, warmup_steps=200, accelerator=accelerator,
                   max_seconds=seconds(args.vae_max_minutes))
    log = {"vae_losses": result["losses"], "vae_seconds": time.perf_counter() - start}
    if len(result["losses"]) < args.vae_steps:
        print(f"VAE stage stopped at step {len(result['losses'])} (time budget); going on with it")
    vae = result["ema"].model.to(device).eval()
    with torch.no_grad():  # posterior means of every image, then 1/std as SD's scaling factor
        latents = torch.cat([vae.encode(images[i:i + 512]).latent_dist.mode()
                             for i in range(0, len(images), 512)])
        reconstruction = torch.cat([vae.decode(latents[i:i + 512]).sample
                                    for i in range(0, len(latents), 512)])
    shift_factor = float(latents.mean()) if shift else None
    scaling_factor = float(1 / latents.std())
    log["vae_reconstruction_mse"] = F.mse_loss(reconstruction, images).item()
    vae = AutoencoderKL.from_config(vae.config, scaling_factor=scaling_factor,
                                    shift_factor=shift_factor).to(device)
    vae.load_state_dict(result["ema"].model.state_dict())
    print(f"VAE: reconstruction MSE {log['vae_reconstruction_mse']:.5f} (images in [-1, 1]), "
          f"scaling_factor {scaling_factor:.4f}")
    return vae, latents, scaling_factor, log


class TextToImage(torch.nn.Module):
    """The two trained parts in one module, so one optimizer and one EMA cover both."""

    def __init__(self, text_encoder, unet):
        super().__init__()
        self.text_encoder, self.unet = text_encoder, unet


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="runs/tiny-sd-butterflies")
    parser.add_argument("--export", default="data/models/tiny-sd-butterflies")
    parser.add_argument("--n-images", type=int, default=20_000)
    parser.add_argument("--vae-steps", type=int, default=4_000)
    parser.add_argument("--unet-steps", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--vae-max-minutes", type=float, default=None)
    parser.add_argument("--unet-max-minutes", type=float, default=None)
    parser.add_argument("--init-from", default=None,
                        help="reuse an exported pipeline's VAE and start its UNet + text encoder "
                             "from there (a second training round; the VAE stage is skipped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--accelerate", action="store_true")
    args = parser.parse_args(argv)
    accelerator = make_accelerator(args.accelerate)
    device = accelerator.device if accelerator else pick_device(args.device)
    seconds = lambda minutes: minutes * 60 if minutes else None
    out = Path(args.output)
    torch.manual_seed(args.seed)
    images, captions = render_butterflies(args.n_images, 32, args.seed, args.workers)
    images = images.to(device)

    # ---- stage 1: the VAE ------------------------------------------------------------------------
    log = {}
    if args.init_from:
        vae = AutoencoderKL.from_pretrained(args.init_from, subfolder="vae").to(device)
        scaling_factor = vae.config.scaling_factor
        with torch.no_grad():
            latents = torch.cat([vae.encode(images[i:i + 512]).latent_dist.mode()
                                 for i in range(0, len(images), 512)])
    else:
        vae, latents, scaling_factor, log = train_vae(images, args, accelerator, device)

    # ---- stage 2: text encoder + UNet on the latents ------------------------------------------
    tokenizer = build_clip_tokenizer(caption_vocabulary(), out / "tokenizer", MAX_TOKENS)
    ids = tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    empty_ids = tokenizer([""], padding="max_length", max_length=MAX_TOKENS,
                          return_tensors="pt").input_ids.to(device)
    data = {"latents": latents * scaling_factor, "ids": ids}
    dataset = [{"latents": data["latents"][i], "ids": data["ids"][i]} for i in range(len(ids))]
    scheduler = build_scheduler()  # training only uses its ᾱ_t, the same for every SD scheduler
    model = TextToImage(build_text_encoder(len(tokenizer)), build_unet())
    if args.init_from:
        model.text_encoder.load_state_dict(
            CLIPTextModel.from_pretrained(args.init_from, subfolder="text_encoder").state_dict())
        model.unet.load_state_dict(
            UNet2DConditionModel.from_pretrained(args.init_from, subfolder="unet").state_dict())
    model = model.to(device)
    print(f"text encoder {model.text_encoder.num_parameters() / 1e6:.2f} M, "
          f"UNet {model.unet.num_parameters() / 1e6:.2f} M parameters")

    def text2img_loss(model, batch, generator):
        drop = torch.rand(len(batch["ids"]), generator=generator) < 0.1  # 10%: unconditional
        ids = torch.where(drop.to(device)[:, None], empty_ids, batch["ids"])
        context = model.text_encoder(ids)[0]
        return diffusion_loss(model.unet, scheduler, batch["latents"], generator,
                              encoder_hidden_states=context)

    start = time.perf_counter()
    result = train(model, text2img_loss, dataset, num_steps=args.unet_steps,
                   batch_size=args.batch_size, lr=5e-4, ema_decay=0.999,
                   output_dir=out / "unet", save_every=1000, seed=args.seed, warmup_steps=500,
                   accelerator=accelerator, max_seconds=seconds(args.unet_max_minutes))
    log.update(unet_losses=result["losses"], unet_seconds=time.perf_counter() - start,
               device=str(device),
               gpu=torch.cuda.get_device_name() if device.type == "cuda" else None)
    (out / "train_log.json").write_text(json.dumps(log))
    if len(result["losses"]) < args.unet_steps:
        print(f"UNet stage stopped at step {len(result['losses'])} (time budget); rerun to go on")
    if args.export and (not accelerator or accelerator.is_main_process):
        trained = result["ema"].model.cpu()
        pipe = StableDiffusionPipeline(vae=vae.cpu(), text_encoder=trained.text_encoder,
                                       tokenizer=tokenizer, unet=trained.unet, scheduler=scheduler)
        pipe.save_pretrained(args.export)
        for name in ("vocab.json", "merges.txt"):  # newer transformers save only tokenizer.json
            shutil.copy(out / "tokenizer" / name, Path(args.export) / "tokenizer" / name)
        print(f"exported the pipeline to {args.export}")


if __name__ == "__main__":
    main()
