"""Flow matching's Heun sampler: an Euler predictor along the velocity, then the trapezoidal
corrector with the velocity at the predicted point (2 model calls per step).

Mirrors `diffusers.FlowMatchHeunDiscreteScheduler`: same config keys and defaults, timesteps,
σ's and step. The path and the velocity are those of `flow_match_euler.py`, x_σ = (1-σ) x_0 + σ ε
and u = ε - x_0; the integrator is EDM's Algorithm 1 (as in `heun.py`), on σ ∈ [1, 0], so
`timesteps` lists every timestep but the first twice and `step()` alternates predictor and
corrector.

| code              | paper         | meaning                                                |
|-------------------|---------------|--------------------------------------------------------|
| `sigmas`          | σ_0, σ_1, σ_1 | noise levels, the inner ones twice; ends at 0          |
| `denoised`        | D(x; σ)       | x̂_0 = x - σ u_θ(x, σ)                                  |
| `prev_derivative` | d_i           | (x_i - D(x_i; σ_i)) / σ_i = u_θ at the step's start    |
| `derivative`      | d'_i          | the same at the Euler prediction x_{i+1}              |
| `dt`              | σ_{i+1} - σ_i | the step in σ                                          |
| `gamma`           | γ_i           | EDM's churn (Alg. 2), off unless `s_churn > 0`         |

References: Karras et al. 2022, "EDM", Algorithm 1 (Heun's 2nd-order sampler) and Algorithm 2
(churn); Esser et al. 2024 (SD3), eq. (23) for the shift; Lipman et al. 2023 (flow matching).
"""

from typing import Optional

import numpy as np
import torch

from ddlearn.config import register_to_config
from ddlearn.noise import randn_tensor
from ddlearn.schedulers.base import SchedulerMixin
from ddlearn.schedulers.common import (
    SchedulerOutput,
    add_noise,
    check_timestep_value,
    current_step_index,
    predict_x0,
)
from ddlearn.schedulers.schedules import shifted_sigmas


class FlowMatchHeunDiscreteScheduler(SchedulerMixin):
    """EDM's Heun sampler along a flow-matching velocity (2 model calls per step)."""

    order = 2
    compatible_family = "flow_match_heun"  # diffusers lists only the class itself

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0):
        T = num_train_timesteps
        # until set_timesteps: σ = 1, (T-1)/T, ..., 1/T (shifted), as diffusers
        sigmas = shifted_sigmas(torch.from_numpy(
            np.linspace(1, T, T, dtype=np.float32)[::-1].copy()) / T, shift)
        self.timesteps, self.sigmas = sigmas * T, sigmas
        self.sigma_min, self.sigma_max = sigmas[-1].item(), sigmas[0].item()
        self.prev_derivative = self.dt = self.sample = None

    @property
    def state_in_first_order(self) -> bool:
        """True when the next `step()` is a predictor (Euler) call, False for a corrector."""
        return self.dt is None

    def set_timesteps(self, num_inference_steps: int, device=None):
        """N σ's evenly from σ_max to σ_min, shifted, then every inner one duplicated (and its
        timestep): 2N - 1 model calls in all."""
        c, T = self.config, self.config.num_train_timesteps
        self.num_inference_steps = num_inference_steps
        sigmas = np.linspace(self.sigma_max * T, self.sigma_min * T, num_inference_steps) / T
        sigmas = torch.from_numpy(shifted_sigmas(sigmas, c.shift)).to(torch.float32)
        timesteps = sigmas * T
        # (t_0, t_1, ..., t_{N-1}) -> (t_0, t_1, t_1, ..., t_{N-1}, t_{N-1})
        self.timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)]).to(device)
        sigmas = torch.cat([sigmas, torch.zeros(1)])
        # (σ_0, σ_1, ..., σ_N=0) -> (σ_0, σ_1, σ_1, ..., σ_{N-1}, σ_{N-1}, 0)
        self.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        self.prev_derivative = self.dt = self.sample = None
        self.step_index = self.begin_index = None

    def scale_noise(self, sample: torch.Tensor, timestep, noise: torch.Tensor) -> torch.Tensor:
        """The forward process x_σ = (1 - σ) x_0 + σ ε, at the σ of the step the loop is at (as
        diffusers' Heun: one σ for the batch)."""
        self.step_index = current_step_index(self, timestep)
        sigma = self.sigmas[self.step_index]
        return add_noise(sample, noise, 1.0 - sigma, sigma)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
             s_noise: float = 1.0, generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """Predictor call: Euler to σ_{i+1}. Corrector call: redo it with the mean slope."""
        check_timestep_value(timestep)
        self.step_index = current_step_index(self, timestep)
        sample = sample.to(torch.float32)  # upcast, as diffusers does
        first_order = self.state_in_first_order

        # 1. the step σ_i -> σ_{i+1}; the model was just evaluated at σ_i (predictor) or σ_{i+1}
        if first_order:
            sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        else:
            sigma, sigma_next = self.sigmas[self.step_index - 1], self.sigmas[self.step_index]

        # 2. churn (EDM Alg. 2): raise σ to σ̂ = (1 + γ) σ with fresh noise; γ = 0 by default
        in_range = s_tmin <= sigma <= s_tmax
        gamma = min(s_churn / (len(self.sigmas) - 1), 2**0.5 - 1) if in_range else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            noise = randn_tensor(model_output.shape, generator, device=model_output.device,
                                 dtype=model_output.dtype)
            sample = sample + noise * s_noise * (sigma_hat**2 - sigma**2) ** 0.5

        if first_order:
            # 3. predictor (Alg. 1 lines 4-5): d_i = (x - D(x; σ)) / σ̂, x_{i+1} = x + dt d_i
            denoised = predict_x0(model_output, sample, 1 - sigma, sigma, "flow_prediction")
            derivative = (sample - denoised) / sigma_hat
            dt = sigma_next - sigma_hat
            self.prev_derivative, self.dt, self.sample = derivative, dt, sample
        else:
            # 4. corrector (lines 6-8): x_{i+1} = x_i + dt (d_i + d'_i) / 2
            denoised = predict_x0(model_output, sample, 1 - sigma_next, sigma_next,
                                  "flow_prediction")
            derivative = 0.5 * (self.prev_derivative + (sample - denoised) / sigma_next)
            dt, sample = self.dt, self.sample
            self.prev_derivative = self.dt = self.sample = None
        prev_sample = sample + derivative * dt
        self.step_index += 1
        return SchedulerOutput(prev_sample.to(model_output.dtype)).returned(return_dict)
