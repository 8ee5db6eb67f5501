"""Euler ancestral sampler: an Euler step down to σ_down, then fresh noise back up to σ_{i+1}.

Mirrors `diffusers.EulerAncestralDiscreteScheduler` (k-diffusion's `sample_euler_ancestral`, with
η = 1). Same σ-space picture as `euler.py`: the model sees x = x_0 + σ ε scaled by 1/√(σ²+1).

Each step splits the target variance σ_{i+1}² into a part reached by the ODE (σ_down²) and a part
re-injected as new noise (σ_up²), so that the marginal at σ_{i+1} is right and the path is a sample
of the reverse SDE rather than of the ODE.

Notation:

| code                   | symbol       | meaning                                                |
|------------------------|--------------|--------------------------------------------------------|
| `sigmas[i]`            | σ_i          | √((1-ᾱ_t)/ᾱ_t) at the i-th inference timestep; σ_N = 0 |
| `pred_original_sample` | x̂_0 = D(x_i) | the denoised estimate                                  |
| `sigma_up`             | σ_up         | fresh noise std: σ_{i+1} √(σ_i² - σ_{i+1}²) / σ_i      |
| `sigma_down`           | σ_down       | where the Euler step lands: √(σ_{i+1}² - σ_up²)        |

References: Karras et al. 2022, "EDM", eq. (6) (the SDE whose noise term this discretises) and
Alg. 2; Ho et al. 2020, "DDPM", eq. (7) (ancestral sampling: the posterior variance that σ_up
mirrors); Crowson, k-diffusion `sampling.py`, `get_ancestral_step`.
"""

from typing import Optional, Union

import numpy as np
import torch

from ddlearn.config import register_to_config
from ddlearn.noise import randn_tensor
from ddlearn.schedulers.base import SchedulerMixin
from ddlearn.schedulers.common import (
    SchedulerOutput,
    add_noise,
    check_choice,
    check_timestep_value,
    current_step_index,
    denoise,
    sigmas_at,
)
from ddlearn.schedulers.schedules import (
    TIMESTEP_SPACINGS,
    init_noise_sigma,
    make_betas,
    sigma_schedule,
    sigmas_from_alphas_cumprod,
)


class EulerAncestralDiscreteScheduler(SchedulerMixin):
    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[Union[list, np.ndarray]] = None,
                 prediction_type: str = "epsilon", timestep_spacing: str = "linspace",
                 steps_offset: int = 0, rescale_betas_zero_snr: bool = False):
        if prediction_type == "sample":
            raise ValueError("EulerAncestralDiscreteScheduler supports prediction_type 'epsilon' "
                             "or 'v_prediction' (diffusers fails at the first step); use "
                             "EulerDiscreteScheduler for 'sample'")
        check_choice("prediction_type", prediction_type, ("epsilon", "v_prediction"))
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                trained_betas, rescale_betas_zero_snr)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        if rescale_betas_zero_snr:
            self.alphas_cumprod[-1] = 2**-24  # ᾱ_T = 0 would make σ_T infinite
        # until set_timesteps: every training σ, large to small, then 0 (float64 timesteps)
        sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod).flip(0)
        self.sigmas = torch.cat([sigmas, torch.zeros(1)])
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float64)

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        return init_noise_sigma(self.sigmas, self.config.timestep_spacing)

    def set_timesteps(self, num_inference_steps: int, device=None):
        """Choose the N timesteps and their σ_i, interpolated in the training σ's; σ_N = 0."""
        self.num_inference_steps = num_inference_steps
        timesteps, sigmas = sigma_schedule(self.config, self.alphas_cumprod, num_inference_steps)
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps).to(device=device)
        self.step_index = self.begin_index = None

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """x_t / √(σ² + 1): EDM's c_in, the unit-variance input the network was trained on."""
        self.step_index = current_step_index(self, timestep)
        return sample / ((self.sigmas[self.step_index] ** 2 + 1) ** 0.5)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """Euler step σ_i -> σ_down, then add σ_up · fresh noise."""
        check_timestep_value(timestep)
        self.step_index = current_step_index(self, timestep)
        sample = sample.to(torch.float32)  # upcast, as diffusers does
        sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]

        # 1. denoised estimate x̂_0 = D(x; σ) from the network's prediction (EDM Table 1)
        pred_original_sample = denoise(model_output, sample, sigma, self.config.prediction_type)

        # 2. split σ_{i+1}² = σ_down² + σ_up² (k-diffusion get_ancestral_step, η = 1)
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5

        # 3. deterministic Euler step to σ_down: d = (x - x̂_0) / σ
        derivative = (sample - pred_original_sample) / sigma
        prev_sample = sample + derivative * (sigma_down - sigma)

        # 4. ancestral noise back up to σ_{i+1}
        noise = randn_tensor(model_output.shape, generator, device=model_output.device,
                             dtype=model_output.dtype)
        prev_sample = prev_sample + noise * sigma_up
        self.step_index += 1
        output = SchedulerOutput(prev_sample.to(model_output.dtype), pred_original_sample)
        return output.returned(return_dict)

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """x_t = x_0 + σ_t ε, with σ_t looked up in the inference schedule."""
        return add_noise(original_samples, noise, 1.0, sigmas_at(self, timesteps, original_samples))
