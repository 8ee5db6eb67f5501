"""Train the shipped tiny Stable Diffusion 3 (data/models/tiny-sd3-butterflies), on a CPU or a GPU.

    python scripts/train_tiny_sd3.py --vae-max-minutes 10 --transformer-max-minutes 40   # 2 cores

Two stages, each seeded, with EMA, checkpoints and resume (rerun the same command to continue the
transformer; the finished VAE, runs/.../vae-final, is reused as it is):
1. an AutoencoderKL in SD3's layout: 4 levels, so 8x downsampling (32 px images <-> 16 x 4 x 4
   latents, 16 channels as SD3's), no quant convs, with `shift_factor` = mean and
   `scaling_factor` = 1 / std of the latents;
2. two CLIPTextModelWithProjection and an SD3Transformer2DModel trained together with the
   flow-matching loss (`ddlearn.losses.flow_matching_loss`: velocity ε - x_0, logit-normal σ),
   the text embedded exactly as StableDiffusion3Pipeline embeds it (T5's 256 tokens are zeros,
   as the pipeline sends without T5); 10% of captions are "" so classifier-free guidance works.
The result is saved in the SD3 layout (transformer/, vae/, text_encoder/, text_encoder_2/,
tokenizer/, tokenizer_2/, scheduler/, model_index.json with text_encoder_3 = None) and loads in
diffusers' StableDiffusion3Pipeline too (with text_encoder_3=None, tokenizer_3=None).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pick_device, render_butterflies  # noqa: E402
from train_text2img import train_vae  # noqa: E402

from ddlearn import (  # noqa: E402
    AutoencoderKL,
    CLIPTextModelWithProjection,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from ddlearn.data.butterflies.drawing import caption_vocabulary  # noqa: E402
from ddlearn.data.tokenizer import build_clip_tokenizer  # noqa: E402
from ddlearn.losses import flow_matching_loss  # noqa: E402
from ddlearn.training import train  # noqa: E402

MAX_TOKENS = 16  # the CLIP tokenizers' model_max_length (SD3: 77); captions are ~9 tokens


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1,
                         block_out_channels=(32, 32, 64, 64), norm_num_groups=32,
                         down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=32,
                         use_quant_conv=False, use_post_quant_conv=False)


def build_text_encoder(vocab_size: int, width: int, layers: int) -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width,
        num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
        projection_dim=width, bos_token_id=0, eos_token_id=1, pad_token_id=1)


def build_transformer() -> SD3Transformer2DModel:
    """4 x 4 latents, one token per latent pixel (patch_size 1); positions up to 8 x 8 (64 px)."""
    return SD3Transformer2DModel(sample_size=4, patch_size=1, in_channels=16, out_channels=16,
                                 num_layers=4, num_attention_heads=3, attention_head_dim=32,
                                 joint_attention_dim=128, caption_projection_dim=96,
                                 pooled_projection_dim=64 + 32, pos_embed_max_size=8)


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """shift 1: SD3 shifts σ towards noise for big images (shift 3 at 1024 px, Esser et al.
    Sec. 5.3.2); a 4 x 4 latent needs no shift."""
    return FlowMatchEulerDiscreteScheduler(shift=1.0)


class TextToImage3(torch.nn.Module):
    """The three trained parts in one module, so one optimizer and one EMA cover them."""

    def __init__(self, text_encoder, text_encoder_2, transformer):
        super().__init__()
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.transformer = transformer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="runs/tiny-sd3-butterflies")
    parser.add_argument("--export", default="data/models/tiny-sd3-butterflies")
    parser.add_argument("--n-images", type=int, default=20_000)
    parser.add_argument("--vae-steps", type=int, default=4_000)
    parser.add_argument("--transformer-steps", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--vae-max-minutes", type=float, default=None)
    parser.add_argument("--transformer-max-minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    out = Path(args.output)
    torch.manual_seed(args.seed)
    images, captions = render_butterflies(args.n_images, 32, args.seed, args.workers)
    images = images.to(device)

    # ---- stage 1: the 8x VAE, with SD3's shift and scale (once: a rerun reuses it) ---------
    finished_vae = out / "vae-final"
    if finished_vae.is_dir():
        vae, log = AutoencoderKL.from_pretrained(finished_vae).to(device), {}
        with torch.no_grad():  # the posterior means z, as train_vae returns them
            latents = torch.cat([vae.encode(images[i:i + 512]).latent_dist.mode()
                                 for i in range(0, len(images), 512)])
    else:
        vae, latents, _, log = train_vae(images, args, None, device, vae=build_vae(), shift=True)
        vae.save_pretrained(finished_vae)
    # what the transformer sees: (z - shift) * scale
    latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor

    # ---- stage 2: two CLIPs + the transformer, flow matching -------------------------------
    tokenizer = build_clip_tokenizer(caption_vocabulary(), out / "tokenizer", MAX_TOKENS)
    scheduler = build_scheduler()
    model = TextToImage3(build_text_encoder(len(tokenizer), 64, 3),
                         build_text_encoder(len(tokenizer), 32, 2), build_transformer()).to(device)
    # the pipeline's own text embedding (both CLIPs, zero T5 tokens), with gradients
    pipe = StableDiffusion3Pipeline(model.transformer, scheduler, vae, model.text_encoder,
                                    tokenizer,
                                    model.text_encoder_2, tokenizer)
    dataset = [{"latents": latents[i], "caption": i} for i in range(len(latents))]
    print(f"text encoders {model.text_encoder.num_parameters() / 1e6:.2f} M + "
          f"{model.text_encoder_2.num_parameters() / 1e6:.2f} M, transformer "
          f"{model.transformer.num_parameters() / 1e6:.2f} M parameters")

    def text2img_loss(model, batch, generator):
        drop = torch.rand(len(batch["caption"]), generator=generator) < 0.1  # 10%: unconditional
        texts = ["" if d else captions[int(i)] for d, i in zip(drop, batch["caption"], strict=True)]
        c, y = pipe.embed_text(texts, texts, clip_skip=None, max_sequence_length=256)
        return flow_matching_loss(model.transformer, scheduler, batch["latents"], generator,
                                  encoder_hidden_states=c, pooled_projections=y)

    start = time.perf_counter()
    minutes = args.transformer_max_minutes
    result = train(model, text2img_loss, dataset, num_steps=args.transformer_steps,
                   batch_size=args.batch_size, lr=5e-4, ema_decay=0.998,
                   output_dir=out / "transformer", save_every=500, seed=args.seed,
                   warmup_steps=200, max_seconds=minutes * 60 if minutes else None)
    log.update(transformer_losses=result["losses"],
               transformer_seconds=time.perf_counter() - start, device=str(device),
               gpu=torch.cuda.get_device_name() if device.type == "cuda" else None,
               scaling_factor=vae.config.scaling_factor, shift_factor=vae.config.shift_factor)
    (out / "train_log.json").write_text(json.dumps(log))
    if len(result["losses"]) < args.transformer_steps:
        print(f"transformer stage stopped at step {len(result['losses'])} (time budget); rerun "
              f"to go on")
    if args.export:
        trained = result["ema"].model.cpu()
        pipe = StableDiffusion3Pipeline(trained.transformer, scheduler, vae.cpu(),
                                        trained.text_encoder,
                                        tokenizer, trained.text_encoder_2, tokenizer)
        pipe.save_pretrained(args.export)
        for folder in ("tokenizer", "tokenizer_2"):  # newer transformers save only tokenizer.json
            for name in ("vocab.json", "merges.txt"):
                shutil.copy(out / "tokenizer" / name, Path(args.export) / folder / name)
        print(f"exported the pipeline to {args.export}")


if __name__ == "__main__":
    main()
