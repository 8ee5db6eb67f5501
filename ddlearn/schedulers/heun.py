"""Heun's 2nd-order sampler for the probability-flow ODE in σ-space (EDM Algorithm 1).

Mirrors `diffusers.HeunDiscreteScheduler` (same config keys, defaults, timesteps and sigmas).
Each Heun step needs two model calls, so `timesteps` lists every timestep but the first twice
and `step()` alternates: an Euler predictor (first order), then the trapezoidal corrector.

| code                   | paper           | meaning                                              |
|------------------------|-----------------|------------------------------------------------------|
| `alphas_cumprod[t]`    | ᾱ_t             | signal kept after t training steps                   |
| `sigmas`               | σ_0, σ_1, σ_1.. | √((1-ᾱ_t)/ᾱ_t), inner ones twice; ends at 0          |
| `pred_original_sample` | D(x; σ)         | the denoised estimate                                |
| `prev_derivative`      | d_i             | (x_i - D(x_i; σ_i)) / σ_i, from the predictor call   |
| `derivative`           | d'_i            | (x_{i+1} - D(x_{i+1}; σ_{i+1})) / σ_{i+1}           |
| `dt`                   | σ_{i+1} - σ_i   | the step in σ                                        |
| `sample` (state)       | x_i             | where the step started, kept for the corrector       |

References: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models" ("EDM"): Algorithm 1 (deterministic Heun sampler, lines 4-8), eq. (5) Karras σ.
"""

from typing import Optional

import numpy as np
import torch

from ddlearn.config import register_to_config
from ddlearn.schedulers.common import (
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    SchedulerOutput,
    check_choice,
    index_for_timestep,
    make_betas,
    sigmas_at,
)
from ddlearn.schedulers.sigma_space import SigmaSchedulerMixin


class HeunDiscreteScheduler(SigmaSchedulerMixin):
    """EDM's deterministic Heun sampler on a DDPM-trained model's σ schedule."""

    order = 2

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                 beta_end: float = 0.012, beta_schedule: str = "linear",
                 trained_betas: Optional[list] = None, prediction_type: str = "epsilon",
                 use_karras_sigmas: bool = False, clip_sample: bool = False,
                 clip_sample_range: float = 1.0, timestep_spacing: str = "linspace",
                 steps_offset: int = 0):
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self._init_schedule(make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                       trained_betas))
        self.alphas = 1.0 - self.betas
        self.prev_derivative = self.dt = self.sample = self.step_index = None

    @property
    def state_in_first_order(self) -> bool:
        """True when the next `step()` is a predictor (Euler) call, False for a corrector."""
        return self.dt is None

    def set_timesteps(self, num_inference_steps: int, device=None):
        """N timesteps and σ_i, then every inner one duplicated: 2N - 1 model calls in all."""
        c, n = self.config, num_inference_steps
        timesteps, sigmas = self._sigma_schedule(n, c.use_karras_sigmas)  # EDM eq. (5) if Karras
        sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
        # (σ_0, σ_1, ..., σ_N=0) -> (σ_0, σ_1, σ_1, ..., σ_{N-1}, σ_{N-1}, 0)
        self.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        timesteps = torch.from_numpy(timesteps)
        timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
        self.timesteps = timesteps.to(device=device, dtype=torch.float32)
        self.num_inference_steps = n
        self.prev_derivative = self.dt = self.sample = self.step_index = None

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """Predictor call: Euler to σ_{i+1}. Corrector call: redo it with the mean slope."""
        self._check_ready()
        if self.step_index is None:
            self.step_index = index_for_timestep(self.timesteps, timestep)
        first_order = self.state_in_first_order

        # 1. the step σ_i -> σ_{i+1}; the model was just evaluated at σ_i (predictor) or σ_{i+1}
        if first_order:
            sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        else:
            sigma, sigma_next = self.sigmas[self.step_index - 1], self.sigmas[self.step_index]
        sigma_input = sigma if first_order else sigma_next

        # 2. denoised estimate D(x; σ) from the network's prediction
        if self.config.prediction_type == "epsilon":  # x = x_0 + σ ε
            pred_original_sample = sample - sigma_input * model_output
        elif self.config.prediction_type == "v_prediction":
            pred_original_sample = (model_output * (-sigma_input / (sigma_input**2 + 1) ** 0.5)
                                    + sample / (sigma_input**2 + 1))
        else:  # "sample"
            pred_original_sample = model_output
        if self.config.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-self.config.clip_sample_range,
                                                              self.config.clip_sample_range)

        # 3. predictor (Alg. 1 lines 4-5): d_i = (x_i - D) / σ_i, x_{i+1} = x_i + dt d_i
        if first_order:
            derivative = (sample - pred_original_sample) / sigma
            dt = sigma_next - sigma
            self.prev_derivative, self.dt, self.sample = derivative, dt, sample
        # 4. corrector (lines 6-8): x_{i+1} = x_i + dt (d_i + d'_i) / 2, dt = σ_{i+1} - σ_i
        else:
            derivative = (sample - pred_original_sample) / sigma_next
            derivative = (self.prev_derivative + derivative) / 2
            dt, sample = self.dt, self.sample
            self.prev_derivative = self.dt = self.sample = None
        prev_sample = sample + derivative * dt
        self.step_index += 1
        return SchedulerOutput(prev_sample, pred_original_sample).returned(return_dict)

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """x_t = x_0 + σ_t ε, with σ_t looked up in the inference schedule."""
        return original_samples + noise * sigmas_at(self, timesteps, original_samples)
