"""Euler sampler for the probability-flow ODE in σ-space, with EDM's optional "churn" noise.

Mirrors `diffusers.EulerDiscreteScheduler`: beta schedules, prediction types, timestep spacings,
Karras / exponential / beta σ (over [sigma_min, sigma_max] when given), log-linear σ,
continuous timesteps (0.25 log σ, for v-prediction models), zero-terminal-SNR betas, final σ,
s_churn, your own timesteps or σ's. Right after construction it steps along all T training σ's.

The model sees x_t = x_0 + σ ε scaled by 1/√(σ²+1) (the unit-variance input it was trained on);
the ODE dx/dσ = (x - x̂_0) / σ is integrated with one Euler step per timestep.

| code                   | paper       | meaning                                                   |
|------------------------|-------------|-----------------------------------------------------------|
| `alphas_cumprod[t]`    | ᾱ_t         | signal kept after t training steps                        |
| `sigmas[i]`            | σ_i         | √((1-ᾱ_t)/ᾱ_t) at the i-th inference timestep; σ_N = 0    |
| `gamma`, `sigma_hat`   | γ_i, σ̂_i    | churn: raise σ_i to σ̂_i = (1 + γ_i) σ_i by adding noise   |
| `pred_original_sample` | x̂_0 = D(x)  | the denoised estimate                                     |
| `derivative`           | d_i         | (x̂ - D(x̂)) / σ̂_i, EDM eq. (3) with σ(t) = t               |

References: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", Alg. 2 (stochastic sampler: lines 4-8), eq. (5) (Karras σ), Table 1 (c_in, c_skip,
c_out); Lin et al. 2023, Table 2 (timestep spacing) and Alg. 1 (zero terminal SNR).
"""

from typing import List, Optional, Union

import numpy as np
import torch

from ddlearn.config import register_to_config
from ddlearn.noise import randn_tensor
from ddlearn.schedulers.base import SchedulerMixin
from ddlearn.schedulers.common import (
    PREDICTION_TYPES,
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
    check_sigma_options,
    init_noise_sigma,
    make_betas,
    respacing,
    sigma_schedule,
    sigma_to_t,
    sigmas_from_alphas_cumprod,
)


class EulerDiscreteScheduler(SchedulerMixin):
    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[Union[list, np.ndarray]] = None,
                 prediction_type: str = "epsilon", interpolation_type: str = "linear",
                 use_karras_sigmas: Optional[bool] = False,
                 use_exponential_sigmas: Optional[bool] = False,
                 use_beta_sigmas: Optional[bool] = False, sigma_min: Optional[float] = None,
                 sigma_max: Optional[float] = None, timestep_spacing: str = "linspace",
                 timestep_type: str = "discrete", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False, final_sigmas_type: str = "zero"):
        check_sigma_options(self.config)
        for name, value, choices in [
                ("prediction_type", prediction_type, PREDICTION_TYPES),
                ("interpolation_type", interpolation_type, ("linear", "log_linear")),
                ("timestep_type", timestep_type, ("discrete", "continuous")),
                ("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min")),
                ("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)]:
            check_choice(name, value, choices)
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                trained_betas, rescale_betas_zero_snr)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        if rescale_betas_zero_snr:
            self.alphas_cumprod[-1] = 2**-24  # ᾱ_T = 0 would make σ_T infinite
        # until set_timesteps: every training σ, large to small, then 0
        sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod).flip(0)
        self.sigmas = torch.cat([sigmas, torch.zeros(1)])
        self.timesteps = self._timesteps_for(sigmas, np.arange(num_train_timesteps)[::-1])

    def _timesteps_for(self, sigmas: torch.Tensor, timesteps: np.ndarray) -> torch.Tensor:
        """What the network is told: the timesteps, or with timestep_type="continuous" and
        v-prediction EDM's c_noise = 0.25 log σ (Table 1)."""
        c = self.config
        if c.timestep_type == "continuous" and c.prediction_type == "v_prediction":
            return 0.25 * sigmas.log()
        return torch.from_numpy(np.ascontiguousarray(timesteps).astype(np.float32))

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        return init_noise_sigma(self.sigmas, self.config.timestep_spacing)

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      timesteps: Optional[List[float]] = None,
                      sigmas: Optional[List[float]] = None):
        """The N timesteps and their σ_i: interpolated in the training σ's (or Karras',
        exponential, beta), then σ_N (0, or the smallest training σ). Or your own `timesteps`,
        or your own σ's (N + 1 of them, the last one included)."""
        c = self.config
        if sum(x is not None for x in (num_inference_steps, timesteps, sigmas)) != 1:
            raise ValueError("pass exactly one of num_inference_steps, timesteps or sigmas")
        respaced = c.use_karras_sigmas or c.use_exponential_sigmas or c.use_beta_sigmas
        if timesteps is not None and (respaced or c.timestep_type == "continuous"):
            raise ValueError("custom timesteps cannot be combined with use_karras_sigmas, "
                             "use_exponential_sigmas, use_beta_sigmas or continuous timesteps")
        n = num_inference_steps or (len(timesteps) if timesteps is not None else len(sigmas) - 1)
        self.num_inference_steps = n
        if sigmas is not None:  # yours, final σ included; timesteps found from them
            sigmas = np.array(sigmas, dtype=np.float32)
            log_sigmas = np.log(sigmas_from_alphas_cumprod(self.alphas_cumprod).numpy())
            timesteps = sigma_to_t(sigmas[:-1], log_sigmas)
        else:
            timesteps, sigmas = sigma_schedule(c, self.alphas_cumprod, n, timesteps, respacing(c),
                                               c.interpolation_type == "log_linear")
            sigma_last = 0.0
            if c.final_sigmas_type == "sigma_min":  # stop at the smallest training σ
                sigma_last = sigmas_from_alphas_cumprod(self.alphas_cumprod)[0].item()
            sigmas = np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
        self.sigmas = torch.from_numpy(sigmas)  # stays on the CPU: read one at a time
        self.timesteps = self._timesteps_for(self.sigmas[:-1], timesteps).to(device=device)
        self.step_index = self.begin_index = None

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """x_t / √(σ² + 1): EDM's c_in, the unit-variance input the network was trained on."""
        self.step_index = current_step_index(self, timestep)
        return sample / ((self.sigmas[self.step_index] ** 2 + 1) ** 0.5)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
             s_noise: float = 1.0, generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """One Euler step σ_i -> σ_{i+1}, after optional churn (EDM Alg. 2 lines 4-8)."""
        check_timestep_value(timestep)
        self.step_index = current_step_index(self, timestep)
        sample = sample.to(torch.float32)  # upcast, as diffusers does
        sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]

        # 1. churn (lines 4-6): γ = min(S_churn/N, √2-1) in [S_tmin, S_tmax]; x̂ = x + √(σ̂²-σ²) ε
        in_range = s_tmin <= sigma <= s_tmax
        gamma = min(s_churn / (len(self.sigmas) - 1), 2**0.5 - 1) if in_range else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            eps = randn_tensor(model_output.shape, generator, device=model_output.device,
                               dtype=model_output.dtype) * s_noise
            sample = sample + eps * (sigma_hat**2 - sigma**2) ** 0.5

        # 2. denoised estimate x̂_0 = D(x̂) (EDM Table 1; diffusers takes σ, not σ̂, for v)
        prediction = self.config.prediction_type
        pred_original_sample = denoise(model_output, sample,
                                       sigma if prediction == "v_prediction" else sigma_hat,
                                       prediction)

        # 3. Euler step (lines 7-8): d_i = (x̂ - D(x̂)) / σ̂, x_{i+1} = x̂ + (σ_{i+1} - σ̂) d_i
        derivative = (sample - pred_original_sample) / sigma_hat
        prev_sample = sample + derivative * (sigma_next - sigma_hat)
        self.step_index += 1
        output = SchedulerOutput(prev_sample.to(model_output.dtype), pred_original_sample)
        return output.returned(return_dict)

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """x_t = x_0 + σ_t ε, with σ_t looked up in the inference schedule."""
        return add_noise(original_samples, noise, 1.0, sigmas_at(self, timesteps, original_samples))
