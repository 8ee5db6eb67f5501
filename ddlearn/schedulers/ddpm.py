"""DDPM ancestral sampling: x_{t-1} ~ q(x_{t-1} | x_t, x̂_0), one model call per step.

Mirrors `diffusers.DDPMScheduler` (same config keys, defaults, timesteps, noise draws).

| code                   | paper              | meaning                                     |
|------------------------|--------------------|---------------------------------------------|
| `alpha_prod_t`         | ᾱ_t                | signal kept after t forward steps           |
| `alpha_prod_t_prev`    | ᾱ_{t'}             | same at the previous inference step t' < t  |
| `beta_prod_t`          | 1 - ᾱ_t            |                                             |
| `current_alpha_t`      | α_t = ᾱ_t / ᾱ_{t'} | one jump from t' to t (t' = t-1 with all T) |
| `current_beta_t`       | β_t = 1 - α_t      |                                             |
| `pred_original_sample` | x̂_0                | the model's guess of the clean sample       |
| `std`                  | σ_t = √β̃_t         | posterior std (eq. 7), or √β_t ("large")    |

References: Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models": eq. (6)-(7) the
posterior q(x_{t-1} | x_t, x_0), eq. (15) x̂_0 from ε. Nichol & Dhariwal 2021, eq. (15): learned
variance interpolating log β̃_t and log β_t. Saharia et al. 2022 (Imagen) §2.3: dynamic thresholding.
"""

from typing import Optional

import torch

from ddlearn.config import register_to_config
from ddlearn.schedulers.alpha_space import AlphaSchedulerMixin, predict_x0
from ddlearn.schedulers.common import (
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    SchedulerOutput,
    check_choice,
    index_for_timestep,
    make_betas,
    randn_like_output,
)

VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")


class DDPMScheduler(AlphaSchedulerMixin):
    """The sampler of Ho et al. 2020 (Algorithm 2), on any subset of the T training timesteps."""

    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[list] = None, variance_type: str = "fixed_small",
                 clip_sample: bool = True, prediction_type: str = "epsilon",
                 thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                 clip_sample_range: float = 1.0, sample_max_value: float = 1.0,
                 timestep_spacing: str = "leading", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False):
        check_choice("variance_type", variance_type, VARIANCE_TYPES)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self._init_schedule(make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                       trained_betas, rescale_betas_zero_snr))
        self.one = torch.tensor(1.0)

    def previous_timestep(self, timestep) -> torch.Tensor:
        """The inference step after `timestep`, or -1 after the last one."""
        index = index_for_timestep(self.timesteps, timestep)
        if index == len(self.timesteps) - 1:
            return torch.tensor(-1)
        return self.timesteps[index + 1]

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """x_t -> x_{t'}: mean of q(x_{t'} | x_t, x̂_0) plus σ_t z (no noise on the last step).
        Works before `set_timesteps` too, along all T training steps, as in diffusers."""
        c, t = self.config, timestep
        predicted_variance = None
        if c.variance_type == "learned_range":
            if model_output.shape[1] != 2 * sample.shape[1]:
                raise ValueError(f"variance_type='learned_range' needs a model that outputs 2x the "
                                 f"sample's {sample.shape[1]} channels (prediction and variance), "
                                 f"got {model_output.shape[1]}; use variance_type='fixed_small'")
            # (B, 2C, H, W) -> prediction (B, C, H, W) and variance interpolation v (B, C, H, W)
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)

        # 1. ᾱ_t, ᾱ_{t'}, α_t, β_t
        prev_t = self.previous_timestep(t)
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t

        # 2-3. predicted x_0 (eq. 15 for ε), thresholded or clipped to the data range
        pred_original_sample = predict_x0(model_output, sample, alpha_prod_t, c)

        # 4. posterior mean μ̃_t(x_t, x̂_0) (eq. 7)
        pred_original_sample_coeff = alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t
        current_sample_coeff = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
        prev_sample = (pred_original_sample_coeff * pred_original_sample
                       + current_sample_coeff * sample)

        # 5. add σ_t z, z ~ N(0, I), except when stepping to x_0
        if t > 0:
            noise = randn_like_output(model_output, generator)
            if c.variance_type == "learned_range":
                std = torch.exp(0.5 * self._log_variance(alpha_prod_t, alpha_prod_t_prev,
                                                         current_beta_t, predicted_variance))
            elif c.variance_type == "fixed_large":
                std = current_beta_t**0.5
            else:
                std = self._posterior_variance(alpha_prod_t, alpha_prod_t_prev, current_beta_t)**0.5
            prev_sample = prev_sample + std * noise
        return SchedulerOutput(prev_sample, pred_original_sample).returned(return_dict)

    @staticmethod
    def _posterior_variance(alpha_prod_t, alpha_prod_t_prev, current_beta_t):
        """β̃_t = (1 - ᾱ_{t'}) / (1 - ᾱ_t) · β_t (eq. 7), kept > 0 for the log."""
        variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t
        return torch.clamp(variance, min=1e-20)

    def _log_variance(self, alpha_prod_t, alpha_prod_t_prev, beta_t, v):
        """Improved DDPM eq. (15): log σ² = f log β_t + (1 - f) log β̃_t, f = (v + 1) / 2."""
        min_log = torch.log(self._posterior_variance(alpha_prod_t, alpha_prod_t_prev, beta_t))
        max_log = torch.log(beta_t)
        f = (v + 1) / 2
        return f * max_log + (1 - f) * min_log
