"""DDPM ancestral sampling: x_{t-1} ~ q(x_{t-1} | x_t, x̂_0), one model call per step.

Mirrors `diffusers.DDPMScheduler` (same config keys, defaults, timesteps, noise draws). Right
after construction `timesteps` is the whole training schedule T-1, ..., 0 and `step` works along
it, as in diffusers; `set_timesteps` picks a subset (or takes a custom, descending list).

| code                   | paper              | meaning                                     |
|------------------------|--------------------|---------------------------------------------|
| `alpha_prod_t`         | ᾱ_t                | signal kept after t forward steps           |
| `alpha_prod_t_prev`    | ᾱ_{t'}             | same at the previous inference step t' < t  |
| `beta_prod_t`          | 1 - ᾱ_t            |                                             |
| `current_alpha_t`      | α_t = ᾱ_t / ᾱ_{t'} | one jump from t' to t (t' = t-1 with all T) |
| `current_beta_t`       | β_t = 1 - α_t      |                                             |
| `pred_original_sample` | x̂_0                | the model's guess of the clean sample       |
| `std`                  | σ_t = √β̃_t         | posterior std (eq. 7), or √β_t ("large")    |

References: Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models": eq. (4) the
forward process, eq. (6)-(7) the posterior q(x_{t-1} | x_t, x_0), eq. (15) x̂_0 from ε. Nichol &
Dhariwal 2021, eq. (15): learned variance interpolating log β̃_t and log β_t. Saharia et al. 2022
(Imagen) §2.3: dynamic thresholding.
"""

from typing import List, Optional

import numpy as np
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
    dynamic_threshold,
    index_for_timestep,
    predict_x0,
)
from ddlearn.schedulers.schedules import TIMESTEP_SPACINGS, make_betas, spaced_timesteps

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range")


class DDPMScheduler(SchedulerMixin):
    """The sampler of Ho et al. 2020 (Algorithm 2), on any subset of the T training timesteps."""

    init_noise_sigma = 1.0  # x_T ~ N(0, I)

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[list] = None, variance_type: str = "fixed_small",
                 clip_sample: bool = True, prediction_type: str = "epsilon",
                 thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                 clip_sample_range: float = 1.0, sample_max_value: float = 1.0,
                 timestep_spacing: str = "leading", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False):
        if variance_type == "fixed_large_log":
            raise ValueError("variance_type='fixed_large_log' takes √(log β_t) of a negative "
                             "number (diffusers samples NaN); use 'fixed_large'")
        check_choice("variance_type", variance_type, VARIANCE_TYPES)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                trained_betas, rescale_betas_zero_snr)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.one = torch.tensor(1.0)
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)  # all T, until set_timesteps
        self.custom_timesteps = False

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      timesteps: Optional[List[int]] = None):
        """The timesteps to visit, descending: by `config.timestep_spacing`, or your own list."""
        c = self.config
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        if timesteps is not None:
            if any(b >= a for a, b in zip(timesteps, timesteps[1:], strict=False)) or \
                    timesteps[0] >= c.num_train_timesteps:
                raise ValueError(f"timesteps must descend from below num_train_timesteps="
                                 f"{c.num_train_timesteps}, got {list(timesteps)}")
            steps, self.custom_timesteps = np.array(timesteps, dtype=np.int64), True
        else:
            steps = spaced_timesteps(num_inference_steps, c.num_train_timesteps,
                                     c.timestep_spacing, c.steps_offset)
            self.num_inference_steps, self.custom_timesteps = num_inference_steps, False
        self.timesteps = torch.from_numpy(steps).to(device)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The network sees x_t unscaled."""
        return sample

    def previous_timestep(self, timestep) -> torch.Tensor:
        """The inference step after `timestep` (-1 after the last); t - 1 before set_timesteps."""
        if not (self.custom_timesteps or self.num_inference_steps):
            return timestep - 1
        index = index_for_timestep(self.timesteps, timestep)
        return torch.tensor(-1) if index == len(self.timesteps) - 1 else self.timesteps[index + 1]

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """x_t -> x_{t'}: mean of q(x_{t'} | x_t, x̂_0) plus σ_t z (no noise on the last step)."""
        c, t = self.config, timestep
        predicted_variance = None
        if c.variance_type in ("learned", "learned_range"):
            if model_output.shape[1] != 2 * sample.shape[1]:
                raise ValueError(f"variance_type={c.variance_type!r} needs a model that outputs "
                                 f"2x the sample's {sample.shape[1]} channels (prediction and "
                                 f"variance), got {model_output.shape[1]}; use 'fixed_small'")
            # (B, 2C, H, W) -> prediction (B, C, H, W) and variance v (B, C, H, W)
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)

        # 1. ᾱ_t, ᾱ_{t'}, α_t, β_t
        prev_t = self.previous_timestep(t)
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t

        # 2. predicted x_0 (eq. 15 for ε), then kept in the data range
        pred_original_sample = predict_x0(model_output, sample, alpha_prod_t**0.5,
                                          beta_prod_t**0.5, c.prediction_type)
        if c.thresholding:
            pred_original_sample = dynamic_threshold(pred_original_sample,
                                                     c.dynamic_thresholding_ratio,
                                                     c.sample_max_value)
        elif c.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-c.clip_sample_range,
                                                              c.clip_sample_range)

        # 3. posterior mean μ̃_t(x_t, x̂_0) (eq. 7)
        pred_original_sample_coeff = alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t
        current_sample_coeff = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
        prev_sample = (pred_original_sample_coeff * pred_original_sample
                       + current_sample_coeff * sample)

        # 4. add σ_t z, z ~ N(0, I), except when stepping to x_0
        if t > 0:
            noise = randn_tensor(model_output.shape, generator, device=model_output.device,
                                 dtype=model_output.dtype)
            # β̃_t = (1 - ᾱ_{t'}) / (1 - ᾱ_t) · β_t (eq. 7), kept > 0 for the log
            variance = torch.clamp(beta_prod_t_prev / beta_prod_t * current_beta_t, min=1e-20)
            if c.variance_type == "learned_range":  # log σ² = f log β_t + (1-f) log β̃_t
                f = (predicted_variance + 1) / 2
                std = torch.exp(0.5 * (f * torch.log(current_beta_t)
                                       + (1 - f) * torch.log(variance)))
            elif c.variance_type == "learned":  # the network predicts σ² itself
                std = predicted_variance**0.5
            elif c.variance_type == "fixed_large":
                std = current_beta_t**0.5
            elif c.variance_type == "fixed_small_log":
                std = torch.exp(0.5 * torch.log(variance))
            else:  # "fixed_small"
                std = variance**0.5
            prev_sample = prev_sample + std * noise
        return SchedulerOutput(prev_sample, pred_original_sample).returned(return_dict)

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """Forward process (eq. 4): x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, at any training timesteps."""
        alpha_t, sigma_t = alpha_bar_coefficients(self.alphas_cumprod, timesteps, original_samples)
        return add_noise(original_samples, noise, alpha_t, sigma_t)
