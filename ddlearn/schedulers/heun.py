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

from typing import List, Optional

import numpy as np
import torch

from ddlearn.config import register_to_config
from ddlearn.schedulers.base import SchedulerMixin
from ddlearn.schedulers.common import (
    PREDICTION_TYPES,
    SchedulerOutput,
    add_noise,
    check_choice,
    current_step_index,
    denoise,
    sigmas_at,
)
from ddlearn.schedulers.schedules import (
    TIMESTEP_SPACINGS,
    check_sigma_options,
    init_noise_sigma,
    make_betas,
    respacing,
    sigma_schedule,
)


class HeunDiscreteScheduler(SchedulerMixin):
    """EDM's deterministic Heun sampler on a DDPM-trained model's σ schedule."""

    order = 2

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                 beta_end: float = 0.012, beta_schedule: str = "linear",
                 trained_betas: Optional[list] = None, prediction_type: str = "epsilon",
                 use_karras_sigmas: Optional[bool] = False,
                 use_exponential_sigmas: Optional[bool] = False,
                 use_beta_sigmas: Optional[bool] = False, clip_sample: Optional[bool] = False,
                 clip_sample_range: float = 1.0, timestep_spacing: str = "linspace",
                 steps_offset: int = 0):
        check_sigma_options(self.config)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                trained_betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.set_timesteps(num_train_timesteps)  # all T steps until set_timesteps, as diffusers

    @property
    def state_in_first_order(self) -> bool:
        """True when the next `step()` is a predictor (Euler) call, False for a corrector."""
        return self.dt is None

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        return init_noise_sigma(self.sigmas, self.config.timestep_spacing)

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      num_train_timesteps: Optional[int] = None,
                      timesteps: Optional[List[float]] = None):
        """N timesteps and σ_i (or your own timesteps), then every inner one duplicated: 2N - 1
        model calls in all."""
        c = self.config
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        if timesteps is not None and (c.use_karras_sigmas or c.use_exponential_sigmas
                                      or c.use_beta_sigmas):
            raise ValueError("custom timesteps cannot be combined with use_karras_sigmas, "
                             "use_exponential_sigmas or use_beta_sigmas")
        if num_train_timesteps not in (None, c.num_train_timesteps):
            raise NotImplementedError("set_timesteps(num_train_timesteps=...) other than the "
                                      "config's: build the scheduler with that many instead")
        n = num_inference_steps or len(timesteps)
        timesteps, sigmas = sigma_schedule(c, self.alphas_cumprod, n, timesteps, respacing(c))
        sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
        # (σ_0, σ_1, ..., σ_N=0) -> (σ_0, σ_1, σ_1, ..., σ_{N-1}, σ_{N-1}, 0)
        self.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        timesteps = torch.from_numpy(np.asarray(timesteps))
        timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
        self.timesteps = timesteps.to(device=device, dtype=torch.float32)
        self.num_inference_steps = n
        self.prev_derivative = self.dt = self.sample = None
        self.step_index = self.begin_index = None

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """x_t / √(σ² + 1): EDM's c_in, the unit-variance input the network was trained on."""
        self.step_index = current_step_index(self, timestep)
        return sample / ((self.sigmas[self.step_index] ** 2 + 1) ** 0.5)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """Predictor call: Euler to σ_{i+1}. Corrector call: redo it with the mean slope."""
        self.step_index = current_step_index(self, timestep)
        first_order = self.state_in_first_order

        # 1. the step σ_i -> σ_{i+1}; the model was just evaluated at σ_i (predictor) or σ_{i+1}
        if first_order:
            sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        else:
            sigma, sigma_next = self.sigmas[self.step_index - 1], self.sigmas[self.step_index]
        sigma_input = sigma if first_order else sigma_next

        # 2. denoised estimate D(x; σ) from the network's prediction (EDM Table 1)
        pred_original_sample = denoise(model_output, sample, sigma_input,
                                       self.config.prediction_type)
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
        return add_noise(original_samples, noise, 1.0, sigmas_at(self, timesteps, original_samples))
