"""DreamBooth: teach a text-to-image model one new subject from a few images, under a rare token.

Ruiz et al. 2023 fine-tune the whole model on 3-5 images of one subject captioned with a rare
token ("a sks dog"). Alone, that makes the model forget its class: every "dog" becomes the
subject ("language drift"), and outputs lose variety. Their fix is a second term, the
**prior-preservation loss**: images the model itself drew for the class prompt ("a dog") before
fine-tuning are trained on alongside, so it keeps drawing them (Ruiz et al., eq. 2):

    loss = E‖x̂_θ(α_t x + σ_t ε, c) - x‖²  +  λ E‖x̂_θ(α_t' x_pr + σ_t' ε', c_pr) - x_pr‖²
           └─ instance images, "a sks butterfly" ─┘    └─── class images, "a butterfly" ───┘

(the paper's per-timestep weights w_t are 1 here, as in diffusers' script). With ε-prediction
both terms are the usual ‖ε - ε_θ(x_t, t, c)‖². As in diffusers'
examples/dreambooth/train_dreambooth.py, one batch holds the instance examples first and the class
examples after them; the prediction is split in two halves (`prior_preservation_loss`).

Which weights change is the caller's choice, and the point of chapter 06: all of the UNet (full
fine-tuning, the paper's), LoRA matrices only (`ddlearn.lora`), or one token embedding (textual
inversion, `ddlearn.textual_inversion`; usually without the prior term, which cannot drift).

| code                 | paper  | meaning                                                        |
|----------------------|--------|----------------------------------------------------------------|
| `instance_latents`   | x      | VAE latents of the subject's images (× scaling_factor)         |
| `class_latents`      | x_pr   | latents of the model's own samples of the class prompt         |
| `instance_prompt`    | c      | "a sks butterfly": the rare token names the subject            |
| `class_prompt`       | c_pr   | "a butterfly"                                                  |
| `prior_loss_weight`  | λ      | 1.0 in the paper and in diffusers' script                      |

Latents are encoded once, before training (the VAE is frozen): the posterior mean, not a sample.

References: Ruiz et al. 2023, "DreamBooth: Fine Tuning Text-to-Image Diffusion Models for
Subject-Driven Generation", Sec. 3.3 and eq. 2; diffusers' examples/dreambooth/train_dreambooth.py.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ddlearn.losses import prediction_and_target
from ddlearn.models.vae_wrapper import VAEWrapper


def prior_preservation_loss(model_pred, target, prior_loss_weight: float = 1.0) -> torch.Tensor:
    """MSE on the first half of the batch (instance) + λ · MSE on the second half (class)."""
    model_pred, model_pred_prior = torch.chunk(model_pred, 2, dim=0)  # (2B, ...) -> 2 x (B, ...)
    target, target_prior = torch.chunk(target, 2, dim=0)
    instance_loss = F.mse_loss(model_pred.float(), target.float())
    prior_loss = F.mse_loss(model_pred_prior.float(), target_prior.float())
    return instance_loss + prior_loss_weight * prior_loss


class TextToImageModel(nn.Module):
    """The text encoder and the UNet in one module, so `ddlearn.training.train` (one optimizer,
    one set of parameters) fine-tunes whichever of their weights require gradients."""

    def __init__(self, text_encoder, unet):
        super().__init__()
        self.text_encoder, self.unet = text_encoder, unet


@torch.no_grad()
def generate_class_images(pipe, class_prompt: str, num_images: int, seed: int = 0,
                          num_inference_steps: int = 20, batch_size: int = 16) -> list:
    """The prior: `num_images` PIL images the model draws for `class_prompt` before any
    fine-tuning (diffusers' script does the same when --class_data_dir has too few)."""
    images = []
    for start in range(0, num_images, batch_size):
        n = min(batch_size, num_images - start)
        generator = torch.Generator().manual_seed(seed + start)
        images += pipe(class_prompt, num_images_per_prompt=n, generator=generator,
                       num_inference_steps=num_inference_steps).images
    return images


def tokenize(tokenizer, prompts) -> torch.Tensor:
    """Prompts -> (B, L) token ids padded to the tokenizer's length, as the pipelines pad them."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def dreambooth_dataset(pipe, instance_images, instance_prompt: str, class_images=(),
                       class_prompt=None) -> list:
    """One training example per class image (or per instance image without a prior): a dict of
    instance latents and token ids, plus class latents and ids when there are class images.
    Instance images repeat, as diffusers' DreamBoothDataset repeats them."""
    if len(instance_images) == 0:
        raise ValueError("instance_images is empty: give the 3-10 images of the new subject")
    if len(class_images) and not class_prompt:
        raise ValueError("class_images need a class_prompt (e.g. 'a butterfly')")
    vae = VAEWrapper(pipe.vae)
    instance = vae.encode(list(instance_images)).cpu()  # (N, 4, h, w)
    instance_ids = tokenize(pipe.tokenizer, [instance_prompt])[0]
    if not len(class_images):
        return [{"instance_latents": z, "instance_ids": instance_ids} for z in instance]
    prior = vae.encode(list(class_images)).cpu()  # (M, 4, h, w)
    class_ids = tokenize(pipe.tokenizer, [class_prompt])[0]
    return [{"instance_latents": instance[i % len(instance)], "instance_ids": instance_ids,
             "class_latents": prior[i], "class_ids": class_ids} for i in range(len(prior))]


def dreambooth_loss(model, scheduler, batch, generator, prior_loss_weight: float = 1.0):
    """One step's loss for a batch of `dreambooth_dataset` examples: eq. 2 of Ruiz et al. with
    the class half when the batch has one, else the plain diffusion loss on the instances."""
    # 1. the batch: instance examples first, class examples after them (as diffusers' collate_fn)
    latents, ids = batch["instance_latents"], batch["instance_ids"]
    with_prior = "class_latents" in batch
    if with_prior:
        latents = torch.cat([latents, batch["class_latents"]])  # (B, 4, h, w) -> (2B, 4, h, w)
        ids = torch.cat([ids, batch["class_ids"]])
    device = next(model.unet.parameters()).device
    latents, ids = latents.to(device), ids.to(device)
    # 2. the text of each example (gradients reach the text encoder if it trains)
    context = model.text_encoder(ids)[0]  # (2B, T, d)
    # 3. noise: x_t = √ᾱ_t x + √(1-ᾱ_t) ε, a fresh t and ε per example; predict at (x_t, t, text)
    model_pred, target, _ = prediction_and_target(model.unet, scheduler, latents, generator,
                                                  encoder_hidden_states=context)
    # 4. instance MSE (+ λ · prior MSE)
    if with_prior:
        return prior_preservation_loss(model_pred, target, prior_loss_weight)
    return F.mse_loss(model_pred, target)
