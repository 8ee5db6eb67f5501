"""DDIM: a non-Markovian sampler that skips timesteps, deterministic at η = 0.

Mirrors `diffusers.DDIMScheduler` (same config keys, defaults, timesteps, noise draws).

| code                    | paper            | meaning                                          |
|-------------------------|------------------|--------------------------------------------------|
| `alpha_prod_t`          | α_t (ᾱ_t)        | DDIM writes α_t for DDPM's ᾱ_t: signal kept      |
| `alpha_prod_t_prev`     | α_{t-1}          | same at the previous inference step              |
| `beta_prod_t`           | 1 - α_t          |                                                  |
| `pred_original_sample`  | x̂_0 = f_θ(x_t)   | "predicted x_0" (eq. 12)                         |
| `pred_epsilon`          | ε_θ(x_t)         | predicted noise                                  |
| `std_dev_t`             | σ_t(η)           | eq. (16); η = 0: DDIM, η = 1: DDPM's posterior   |
| `final_alpha_cumprod`   | α_0              | 1 if `set_alpha_to_one`, else ᾱ of step 0        |

References: Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models": eq. (12) the update,
eq. (16) σ_t(η). Lin et al. 2023 (zero terminal SNR, "trailing" spacing); Saharia et al. 2022
(Imagen) §2.3: dynamic thresholding; Salimans & Ho 2022 §4: v-prediction.
"""

from typing import Optional

import torch

from ddlearn.config import register_to_config
from ddlearn.noise import randn_tensor
from ddlearn.schedulers.base import SchedulerMixin
from ddlearn.schedulers.common import (
    PREDICTION_TYPES,
    SchedulerOutput,
    add_noise,
    alpha_bar_coefficients,
    check_choice,
    check_ready,
    dynamic_threshold,
    predict_epsilon,
    predict_x0,
)
from ddlearn.schedulers.schedules import TIMESTEP_SPACINGS, make_betas, spaced_timesteps


class DDIMScheduler(SchedulerMixin):
    """DDIM sampling (Song et al. 2021): eq. (12) with σ_t from eq. (16)."""

    init_noise_sigma = 1.0  # x_T ~ N(0, I)

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[list] = None, clip_sample: bool = True,
                 set_alpha_to_one: bool = True, steps_offset: int = 0,
                 prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, clip_sample_range: float = 1.0,
                 sample_max_value: float = 1.0, timestep_spacing: str = "leading",
                 rescale_betas_zero_snr: bool = False):
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                trained_betas, rescale_betas_zero_snr)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # the "previous" ᾱ of the last step: 1 (a clean x_0) or ᾱ at t = 0
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)  # until set_timesteps

    def set_timesteps(self, num_inference_steps: int, device=None):
        """Choose the timesteps to visit, descending, by `config.timestep_spacing`."""
        c = self.config
        steps = spaced_timesteps(num_inference_steps, c.num_train_timesteps, c.timestep_spacing,
                                 c.steps_offset)
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(steps).to(device)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The network sees x_t unscaled."""
        return sample

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False,
             generator: Optional[torch.Generator] = None,
             variance_noise: Optional[torch.Tensor] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """x_t -> x_{t-1} by eq. (12); η > 0 adds σ_t(η) z, z from `generator` (or given as
        `variance_noise`)."""
        check_ready(self)
        c = self.config

        # 1. α_t and α_{t-1}: as in diffusers, the previous step is t - T//n for every spacing
        prev_timestep = timestep - c.num_train_timesteps // self.num_inference_steps
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = (self.alphas_cumprod[prev_timestep] if prev_timestep >= 0
                             else self.final_alpha_cumprod)
        beta_prod_t = 1 - alpha_prod_t

        # 2. x̂_0 and ε̂ from the network's output (eq. 12; x_t = √α_t x_0 + √(1-α_t) ε)
        pred_original_sample = predict_x0(model_output, sample, alpha_prod_t**0.5,
                                          beta_prod_t**0.5, c.prediction_type)
        pred_epsilon = predict_epsilon(model_output, sample, alpha_prod_t**0.5, beta_prod_t**0.5,
                                       c.prediction_type)

        # 3. x̂_0 kept in the data range: dynamic thresholding, or clipping
        if c.thresholding:
            pred_original_sample = dynamic_threshold(pred_original_sample,
                                                     c.dynamic_thresholding_ratio,
                                                     c.sample_max_value)
        elif c.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-c.clip_sample_range,
                                                              c.clip_sample_range)

        # 4. σ_t(η) = η √((1 - α_{t-1}) / (1 - α_t)) √(1 - α_t / α_{t-1})  (eq. 16)
        variance = (1 - alpha_prod_t_prev) / beta_prod_t * (1 - alpha_prod_t / alpha_prod_t_prev)
        std_dev_t = eta * variance**0.5
        if use_clipped_model_output:  # ε consistent with the clipped x̂_0
            pred_epsilon = (sample - alpha_prod_t**0.5 * pred_original_sample) / beta_prod_t**0.5

        # 5. "direction pointing to x_t" of eq. (12): √(1 - α_{t-1} - σ_t²) ε
        pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** 0.5 * pred_epsilon

        # 6. x_{t-1} = √α_{t-1} x̂_0 + direction (+ σ_t z, "random noise")  (eq. 12)
        prev_sample = alpha_prod_t_prev**0.5 * pred_original_sample + pred_sample_direction
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("pass either generator or variance_noise, not both")
            if variance_noise is None:
                variance_noise = randn_tensor(model_output.shape, generator,
                                              device=model_output.device, dtype=model_output.dtype)
            prev_sample = prev_sample + std_dev_t * variance_noise
        return SchedulerOutput(prev_sample, pred_original_sample).returned(return_dict)

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """Forward process (DDPM eq. 4): x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, at any training timesteps."""
        alpha_t, sigma_t = alpha_bar_coefficients(self.alphas_cumprod, timesteps, original_samples)
        return add_noise(original_samples, noise, alpha_t, sigma_t)
