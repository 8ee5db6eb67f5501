"""Euler sampler for the probability-flow ODE in σ-space, with EDM's optional "churn" noise.

Mirrors `diffusers.EulerDiscreteScheduler` (the options a learner meets: beta schedules, prediction
types, timestep spacings, Karras sigmas (over [sigma_min, sigma_max] when given), zero-terminal-SNR
betas, final σ, s_churn).

The model sees x_t = x_0 + σ ε (scaled down by 1/√(σ²+1) so it gets the unit-variance input it was
trained on); the ODE dx/dσ = (x - x̂_0) / σ is integrated with one Euler step per timestep.

Notation (Karras et al. 2022, "EDM"):

| code                   | paper       | meaning                                                   |
|------------------------|-------------|-----------------------------------------------------------|
| `alphas_cumprod[t]`    | ᾱ_t         | signal kept after t training steps                        |
| `sigmas[i]`            | σ_i         | √((1-ᾱ_t)/ᾱ_t) at the i-th inference timestep; σ_N = 0    |
| `gamma`, `sigma_hat`   | γ_i, σ̂_i    | churn: raise σ_i to σ̂_i = (1 + γ_i) σ_i by adding noise   |
| `pred_original_sample` | x̂_0 = D(x)  | the denoised estimate                                     |
| `derivative`           | d_i         | (x̂ - D(x̂)) / σ̂_i, EDM eq. (3) with σ(t) = t               |

References: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", Alg. 2 (stochastic sampler: lines 4-8), eq. (5) (Karras σ schedule); Lin et al. 2023,
Table 2 (timestep spacing) and Alg. 1 (zero terminal SNR).
"""

from typing import Optional, Union

import numpy as np
import torch

from ddlearn.config import register_to_config
from ddlearn.schedulers.common import (
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    SchedulerOutput,
    check_choice,
    check_sigma_range,
    index_for_timestep,
    make_betas,
    randn_like_output,
    sigmas_at,
    sigmas_from_alphas_cumprod,
)
from ddlearn.schedulers.sigma_space import SigmaSchedulerMixin


class EulerDiscreteScheduler(SigmaSchedulerMixin):
    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[Union[list, np.ndarray]] = None,
                 prediction_type: str = "epsilon", use_karras_sigmas: Optional[bool] = False,
                 timestep_spacing: str = "linspace", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False, final_sigmas_type: str = "zero",
                 sigma_min: Optional[float] = None, sigma_max: Optional[float] = None):
        super().__init__()
        check_sigma_range(sigma_min, sigma_max)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min"))
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self._init_schedule(make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                       trained_betas, rescale_betas_zero_snr),
                            rescale_betas_zero_snr)
        self.step_index = None

    def set_timesteps(self, num_inference_steps: int, device=None):
        """Choose the N timesteps and their σ_i (interpolated in the training σ's, or Karras')."""
        self.num_inference_steps = num_inference_steps
        timesteps, sigmas = self._sigma_schedule(num_inference_steps, self.config.use_karras_sigmas,
                                                 self.config.sigma_min, self.config.sigma_max)
        sigma_last = 0.0
        if self.config.final_sigmas_type == "sigma_min":  # stop at the smallest training σ
            sigma_last = sigmas_from_alphas_cumprod(self.alphas_cumprod)[0].item()
        sigmas = np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
        self.sigmas = torch.from_numpy(sigmas)  # stays on the CPU: read one at a time
        self.timesteps = torch.from_numpy(timesteps.astype(np.float32)).to(device=device)
        self.step_index = None

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
             s_noise: float = 1.0, generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """One Euler step σ_i -> σ_{i+1}, after optional churn (EDM Alg. 2 lines 4-8)."""
        self._check_ready()
        self._check_timestep_value(timestep)
        if self.step_index is None:
            self.step_index = index_for_timestep(self.timesteps, timestep)
        sample = sample.to(torch.float32)  # upcast, as diffusers does
        sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]

        # 1. churn (lines 4-6): γ = min(S_churn/N, √2-1) in [S_tmin, S_tmax]; x̂ = x + √(σ̂²-σ²) ε
        in_range = s_tmin <= sigma <= s_tmax
        gamma = min(s_churn / (len(self.sigmas) - 1), 2**0.5 - 1) if in_range else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            eps = randn_like_output(model_output, generator) * s_noise
            sample = sample + eps * (sigma_hat**2 - sigma**2) ** 0.5

        # 2. denoised estimate x̂_0 = D(x̂) from the network's prediction
        if self.config.prediction_type == "epsilon":  # x = x_0 + σ ε
            pred_original_sample = sample - sigma_hat * model_output
        elif self.config.prediction_type == "v_prediction":  # EDM Table 1 c_skip, c_out for v
            pred_original_sample = (model_output * (-sigma / (sigma**2 + 1) ** 0.5)
                                    + sample / (sigma**2 + 1))
        else:  # "sample"
            pred_original_sample = model_output

        # 3. Euler step (lines 7-8): d_i = (x̂ - D(x̂)) / σ̂, x_{i+1} = x̂ + (σ_{i+1} - σ̂) d_i
        derivative = (sample - pred_original_sample) / sigma_hat
        prev_sample = sample + derivative * (sigma_next - sigma_hat)
        self.step_index += 1
        output = SchedulerOutput(prev_sample.to(model_output.dtype), pred_original_sample)
        return output.returned(return_dict)

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """x_t = x_0 + σ_t ε, with σ_t looked up in the inference schedule."""
        return original_samples + noise * sigmas_at(self, timesteps, original_samples)
