"""The objectives: what a network is trained to predict, and how hard each timestep counts.

A loss function takes (model, scheduler, x_0, generator) and returns one number; `train` (in
training.py) minimises whichever you hand it. Two families, as in diffusers' training examples:

DDPM (Ho et al. 2020, Algorithm 1; diffusers' train_unconditional.py):

    x_0 ~ data,  t ~ U{0..T-1},  ε ~ N(0, I)
    x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε              (scheduler.add_noise, eq. 4)
    loss = ‖ε - ε_θ(x_t, t)‖²                (eq. 14; or v / x_0 targets, see `target_for`)

optionally weighted per image by Min-SNR-γ (`weighting="min_snr"`, train_text_to_image.py's
`--snr_gamma`).

Flow matching (Lipman et al. 2023; SD3, Esser et al. 2024 §2-3; diffusers' train_dreambooth_sd3.py):

    σ = sigmoid(n), n ~ N(m, s)  (logit-normal: most effort on the middle noise levels)
    x_σ = (1 - σ) x_0 + σ ε                  (scheduler.scale_noise)
    loss = ‖(ε - x_0) - u_θ(x_σ, σ)‖²        (the velocity of the straight path, diffusers' sign)

References: Ho et al. 2020, "Denoising Diffusion Probabilistic Models"; Salimans & Ho 2022,
"Progressive Distillation" (v-prediction); Hang et al. 2023, "Efficient Diffusion Training via
Min-SNR Weighting Strategy"; Lipman et al. 2023, "Flow Matching for Generative Modeling"; Esser
et al. 2024, "Scaling Rectified Flow Transformers" §2 and §3.1 (logit-normal sampling).
"""

import math

import torch
import torch.nn.functional as F

from ddlearn.noise import randn_tensor
from ddlearn.schedulers.common import add_noise


# --------------------------------------------------------------------------------------------------
# Diffusion (DDPM): predict the noise, v or x_0
# --------------------------------------------------------------------------------------------------
def target_for(scheduler, x_0, noise, t) -> torch.Tensor:
    """What the network regresses on, by `scheduler.config.prediction_type`."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":  # v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022)
        return scheduler.get_velocity(x_0, noise, t)
    if kind == "sample":
        return x_0
    raise ValueError(f"unknown prediction_type {kind!r}")


def sample_timesteps(batch_size, num_train_timesteps, generator, distribution="uniform"):
    """t for each image: "uniform" over 0..T-1 (DDPM), or "logit_normal" (more mid-range t,
    Esser et al. 2024 §3.1): less effort on the nearly clean and nearly pure-noise ends."""
    if distribution == "uniform":
        return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator)
    if distribution == "logit_normal":
        u = torch.sigmoid(torch.randn(batch_size, generator=generator))
        return (u * (num_train_timesteps - 1)).round().long()
    raise ValueError(f"unknown timestep distribution {distribution!r}: 'uniform' or 'logit_normal'")


def min_snr_weights(scheduler, t, snr_gamma=5.0) -> torch.Tensor:
    """Per-image loss weights of Min-SNR-γ (Hang et al. 2023): the x_0-error weight min(SNR_t, γ),
    SNR_t = ᾱ_t / (1-ᾱ_t), rewritten for the target the network regresses on."""
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=snr_gamma)
    kind = scheduler.config.prediction_type
    # ‖ε - ε̂‖² = SNR ‖x_0 - x̂_0‖², ‖v - v̂‖² = (SNR + 1) ‖x_0 - x̂_0‖²
    return {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}[kind]


def prediction_and_target(unet, scheduler, x_0, generator, timestep_distribution="uniform",
                          **unet_kwargs) -> tuple:
    """Noise a batch and predict: -> (the UNet's prediction, its target, t), both float32.

    A fresh ε and t per example from `generator` (ε first, then t), x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε,
    the UNet's output at (x_t, t), and what it should have been (`target_for`). The losses below
    (and DreamBooth's, ddlearn/dreambooth.py) differ only in how they compare the two."""
    noise = torch.randn(x_0.shape, generator=generator).to(x_0.device, x_0.dtype)
    t = sample_timesteps(x_0.shape[0], scheduler.config.num_train_timesteps, generator,
                         timestep_distribution).to(x_0.device)
    x_t = scheduler.add_noise(x_0, noise, t)
    prediction = unet(x_t, t, **unet_kwargs).sample.float()
    return prediction, target_for(scheduler, x_0, noise, t).float(), t


def diffusion_loss(unet, scheduler, x_0, generator, weighting=None, snr_gamma=5.0,
                   timestep_distribution="uniform", **unet_kwargs):
    """One DDPM training loss on a batch of clean images (or latents) x_0 in [-1, 1].

    weighting=None: the plain MSE over every pixel of the batch (Ho et al. 2020, eq. 14).
    weighting="min_snr": each image's MSE times `min_snr_weights(scheduler, t, snr_gamma)`, so
    the easy, nearly clean timesteps stop dominating the gradient (Hang et al. 2023).
    Both draw the same noise and t from `generator`."""
    if weighting not in (None, "min_snr"):
        raise ValueError(f"unknown weighting {weighting!r}: None (plain MSE) or 'min_snr'")
    prediction, target, t = prediction_and_target(unet, scheduler, x_0, generator,
                                                  timestep_distribution, **unet_kwargs)
    if weighting is None:
        return F.mse_loss(prediction, target)
    per_image = F.mse_loss(prediction, target, reduction="none").flatten(1).mean(1)
    return (min_snr_weights(scheduler, t, snr_gamma).float() * per_image).mean()


# --------------------------------------------------------------------------------------------------
# Flow matching (rectified flow): predict the velocity ε - x_0
# --------------------------------------------------------------------------------------------------
def flow_sigmas(batch_size, generator, distribution="logit_normal", logit_mean=0.0,
                logit_std=1.0, mode_scale=1.29) -> torch.Tensor:
    """u in (0, 1) for each image, drawn as diffusers' `compute_density_for_timestep_sampling`
    draws it (SD3 §3.1): "logit_normal", sigmoid of N(m, s²); "mode", mode sampling with heavy
    tails, f(u) = 1 - u - s (cos²(πu/2) - 1 + u); or "uniform"."""
    if distribution == "logit_normal":
        n = torch.normal(logit_mean, logit_std, size=(batch_size,), generator=generator)
        return torch.sigmoid(n)
    if distribution not in ("mode", "uniform"):
        raise ValueError(f"unknown distribution {distribution!r}: 'logit_normal', 'mode' or "
                         f"'uniform'")
    u = torch.rand(batch_size, generator=generator)
    if distribution == "mode":
        u = 1 - u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    return u


def flow_matching_loss(model, scheduler, x_0, generator, distribution="logit_normal",
                       logit_mean=0.0, logit_std=1.0, mode_scale=1.29, **model_kwargs):
    """Conditional flow matching on a batch x_0, with a `FlowMatchEulerDiscreteScheduler` just
    built (its T training σ's): the σ of each image is the schedule's entry u·T, so a shifted
    scheduler shifts the training noise levels too, as in diffusers' SD3 training script."""
    noise = randn_tensor(x_0.shape, generator, device=x_0.device, dtype=x_0.dtype)
    u = flow_sigmas(x_0.shape[0], generator, distribution, logit_mean, logit_std, mode_scale)
    indices = (u * scheduler.config.num_train_timesteps).long()
    timesteps = scheduler.timesteps[indices].to(x_0.device)
    sigma = scheduler.sigmas[indices].to(x_0.device, x_0.dtype).view(-1, *[1] * (x_0.ndim - 1))
    x_sigma = add_noise(x_0, noise, 1.0 - sigma, sigma)  # (1 - σ) x_0 + σ ε
    prediction = model(x_sigma, timestep=timesteps, **model_kwargs).sample  # UNet or SD3
    return F.mse_loss(prediction.float(), (noise - x_0).float())
