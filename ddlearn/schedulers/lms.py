"""Linear multistep (LMS) sampler for the probability-flow ODE in σ-space.

Mirrors `diffusers.LMSDiscreteScheduler` (same config keys, defaults, timesteps and sigmas).
The ODE dx/dσ = (x - x̂_0) / σ is integrated with an Adams-Bashforth step that reuses the last
`order` derivatives: the Lagrange polynomial through them is integrated from σ_i to σ_{i+1}.

| code                   | paper          | meaning                                                |
|------------------------|----------------|--------------------------------------------------------|
| `alphas_cumprod[t]`    | ᾱ_t            | signal kept after t training steps                     |
| `sigmas[i]`            | σ_i            | √((1-ᾱ_t)/ᾱ_t) at the i-th inference timestep; σ_N = 0 |
| `pred_original_sample` | x̂_0 = D(x; σ)  | the denoised estimate                                  |
| `derivatives`          | d_i, d_{i-1}.. | (x - x̂_0) / σ at the last `order` steps                |
| `coefficients[j]`      | ∫ ℓ_j(σ) dσ    | j-th Lagrange basis integrated over [σ_i, σ_{i+1}]     |

References: Karras et al. 2022 ("EDM") eq. (3) for the ODE and eq. (5) for Karras σ; the
`sample_lms` sampler of k-diffusion (Crowson, `k_diffusion/sampling.py`), linear multistep method
as in Hairer, Nørsett & Wanner, "Solving ODEs I", §III.1 (Adams methods).
"""

from typing import Optional

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
    sigmas_from_alphas_cumprod,
)


class LMSDiscreteScheduler(SchedulerMixin):
    """k-diffusion's LMS sampler on a DDPM-trained model's σ schedule."""

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[list] = None, use_karras_sigmas: Optional[bool] = False,
                 use_exponential_sigmas: Optional[bool] = False,
                 use_beta_sigmas: Optional[bool] = False, prediction_type: str = "epsilon",
                 timestep_spacing: str = "linspace", steps_offset: int = 0):
        check_sigma_options(self.config)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                trained_betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # until set_timesteps: every training σ, large to small, then 0
        sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod).flip(0)
        self.sigmas = torch.cat([sigmas, torch.zeros(1)])
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float32)
        self.derivatives = []

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        return init_noise_sigma(self.sigmas, self.config.timestep_spacing)

    def set_timesteps(self, num_inference_steps: int, device=None):
        """Choose the N timesteps and their σ_i (interpolated in the training σ's, or Karras',
        exponential, beta); σ_N = 0."""
        timesteps, sigmas = sigma_schedule(self.config, self.alphas_cumprod, num_inference_steps,
                                           respace=respacing(self.config))
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.float32)
        self.num_inference_steps = num_inference_steps
        self.derivatives, self.step_index, self.begin_index = [], None, None

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """x_t / √(σ² + 1): EDM's c_in, the unit-variance input the network was trained on."""
        self.step_index = current_step_index(self, timestep)
        return sample / ((self.sigmas[self.step_index] ** 2 + 1) ** 0.5)

    def lms_coefficients(self, order: int) -> list:
        """∫_{σ_i}^{σ_{i+1}} ℓ_j(σ) dσ, ℓ_j the Lagrange basis through σ_i, σ_{i-1}, ..., j < order.

        Gauss-Legendre quadrature with `order` points is exact for these degree order-1
        polynomials (diffusers approximates the same integrals with scipy's adaptive quad).
        """
        i = self.step_index
        nodes = np.array([self.sigmas[i - k].item() for k in range(order)])  # σ_i, σ_{i-1}, ...
        lo, hi = self.sigmas[i].item(), self.sigmas[i + 1].item()
        x, w = np.polynomial.legendre.leggauss(order)  # quadrature on [-1, 1]
        tau = (hi - lo) / 2 * x + (hi + lo) / 2  # ... mapped onto [σ_i, σ_{i+1}]
        coefficients = []
        for j in range(order):
            others = np.delete(nodes, j)  # ℓ_j(τ) = Π_{k≠j} (τ - σ_{i-k}) / (σ_{i-j} - σ_{i-k})
            basis = np.prod((tau[:, None] - others) / (nodes[j] - others), axis=1)
            coefficients.append(float((hi - lo) / 2 * np.sum(w * basis)))
        return coefficients

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, order: int = 4,
             generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """One LMS step σ_i -> σ_{i+1} of order min(i + 1, `order`) (deterministic)."""
        self.step_index = current_step_index(self, timestep)
        sigma = self.sigmas[self.step_index]

        # 1. denoised estimate x̂_0 = D(x; σ) from the network's prediction (EDM Table 1)
        pred_original_sample = denoise(model_output, sample, sigma, self.config.prediction_type)

        # 2. ODE derivative d_i = (x - x̂_0) / σ_i (EDM eq. 3); keep the last `order` of them
        self.derivatives.append((sample - pred_original_sample) / sigma)
        if len(self.derivatives) > order:
            self.derivatives.pop(0)

        # 3. x_{i+1} = x_i + Σ_j c_j d_{i-j}: integrate the interpolating polynomial
        order = min(self.step_index + 1, order)
        coefficients = self.lms_coefficients(order)
        prev_sample = sample + sum(coefficient * derivative for coefficient, derivative
                                   in zip(coefficients, reversed(self.derivatives), strict=False))
        self.step_index += 1
        return SchedulerOutput(prev_sample, pred_original_sample).returned(return_dict)

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """x_t = x_0 + σ_t ε, with σ_t looked up in the inference schedule."""
        return add_noise(original_samples, noise, 1.0, sigmas_at(self, timesteps, original_samples))
