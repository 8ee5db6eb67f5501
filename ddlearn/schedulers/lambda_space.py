"""What the multistep solvers in log-SNR time share (DPM-Solver, UniPC): their schedule and helpers.

Both write the diffusion as x_t = α_t x_0 + σ_t ε with α_t² + σ_t² = 1 (variance preserving) and
step in λ = log(α_t/σ_t), where the ODE's linear part integrates exactly. The schedule is kept as
the ratio `sigmas[i]` = σ_i/α_i (the σ of the σ-space samplers), one per timestep plus a final σ_N
(0, or the smallest training σ with final_sigmas_type="sigma_min").

| code                 | paper        | meaning                                                |
|----------------------|--------------|--------------------------------------------------------|
| `sigmas[i]`          | σ_i / α_i    | noise-to-signal ratio at step i                        |
| `alpha_t`, `sigma_t` | α_t, σ_t     | 1/√(1+σ²) and σ/√(1+σ²)                                |
| `_lambda(i)`         | λ = log(α/σ) | half the log-SNR at step i; grows as t -> 0            |

References: Lu et al. 2022a, "DPM-Solver" (arXiv 2206.00927), §3; Karras et al. 2022, "EDM",
eq. (5) for Karras σ.
"""

from typing import Optional

import numpy as np
import torch

from ddlearn.schedulers.common import (
    SchedulerMixin,
    check_num_inference_steps,
    dynamic_threshold,
    karras_sigmas,
    make_betas,
    sigma_to_t,
    sigmas_at,
    sigmas_from_alphas_cumprod,
)


def check_distinct_timesteps(timesteps: np.ndarray, timestep_spacing: str):
    """A multistep solver divides by the step h = λ_{i+1} - λ_i: a repeated timestep makes h = 0."""
    if len(np.unique(timesteps)) < len(timesteps):
        raise ValueError(f"num_inference_steps={len(timesteps)} with timestep_spacing="
                         f"{timestep_spacing!r} rounds two steps to the same timestep, and a step "
                         f"of size zero gives NaN (diffusers returns NaN or fails); take fewer "
                         f"steps, or use timestep_spacing='trailing' or use_karras_sigmas=True")


def multistep_timesteps(n: int, T: int, spacing: str, steps_offset: int = 0) -> np.ndarray:
    """N integer timesteps; "linspace" and "leading" space N+1 points and drop the last (t = 0)."""
    if spacing == "linspace":
        return np.linspace(0, T - 1, n + 1).round()[::-1][:-1].astype(np.int64)
    if spacing == "leading":
        return (np.arange(0, n + 1) * (T // (n + 1)))[::-1][:-1].astype(np.int64) + steps_offset
    return np.arange(T, 0, -T / n).round().astype(np.int64) - 1  # "trailing"


def alpha_sigma(sigma: torch.Tensor):
    """(α_t, σ_t) of x_t = α_t x_0 + σ_t ε, α_t² + σ_t² = 1, from their ratio `sigma` = σ_t/α_t."""
    alpha_t = 1 / ((sigma**2 + 1) ** 0.5)
    return alpha_t, sigma * alpha_t


def to_x0(model_output, x, alpha_t, sigma_t, prediction_type: str) -> torch.Tensor:
    """x̂_0 implied by the network's prediction of ε, of v = α_t ε - σ_t x_0, or of x_0."""
    if prediction_type == "epsilon":
        return (x - sigma_t * model_output) / alpha_t
    if prediction_type == "v_prediction":
        return alpha_t * x - sigma_t * model_output
    return model_output


def to_eps(model_output, x, alpha_t, sigma_t, prediction_type: str) -> torch.Tensor:
    """ε̂ implied by the network's prediction of ε, of v, or of x_0."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return alpha_t * model_output + sigma_t * x
    return (x - alpha_t * model_output) / sigma_t


class LambdaSchedulerMixin(SchedulerMixin):
    """The schedule of the λ-time multistep solvers; subclasses add `step` and their history."""

    init_noise_sigma = 1.0  # x_T ~ N(0, I): the network sees x_t unscaled

    def _init_schedule(self, num_train_timesteps, beta_start, beta_end, beta_schedule,
                       trained_betas, rescale_betas_zero_snr):
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                trained_betas, rescale_betas_zero_snr)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        if rescale_betas_zero_snr:
            self.alphas_cumprod[-1] = 2**-24  # ᾱ_T = 0 would make λ_T = -∞
        self.sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float32)

    def _set_schedule(self, n: int, device=None, sigma_min: Optional[float] = None,
                      sigma_max: Optional[float] = None, round_karras_timesteps: bool = True):
        """Set the N timesteps and σ_0..σ_N: spaced timesteps with their σ interpolated in the
        training σ's, or Karras σ over [sigma_min, sigma_max] (None: the training range) with
        the timesteps nearest to them; σ_N per final_sigmas_type."""
        config, T = self.config, self.config.num_train_timesteps
        check_num_inference_steps(n, T)
        timesteps = multistep_timesteps(n, T, config.timestep_spacing, config.steps_offset)
        train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod).numpy()
        lowest = train_sigmas[0].item() if sigma_min is None else sigma_min
        if config.use_karras_sigmas:  # EDM eq. (5), then the timesteps of those σ
            highest = train_sigmas[-1].item() if sigma_max is None else sigma_max
            sigmas = karras_sigmas(lowest, highest, n)
            timesteps = sigma_to_t(sigmas, np.log(train_sigmas))
            if round_karras_timesteps:
                timesteps = timesteps.round()
        else:
            check_distinct_timesteps(timesteps, config.timestep_spacing)
            sigmas = np.interp(timesteps, np.arange(0, len(train_sigmas)), train_sigmas)
            lowest = train_sigmas[0].item()
        sigma_last = lowest if config.final_sigmas_type == "sigma_min" else 0.0
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [sigma_last]]).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(timesteps)

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """No scaling: the network sees x_t itself."""
        return sample

    def _lambda(self, k: int) -> torch.Tensor:
        """λ_k = log(α_k / σ_k) at step k of the schedule."""
        alpha_k, sigma_k = alpha_sigma(self.sigmas[k])
        return torch.log(alpha_k) - torch.log(sigma_k)

    def _to_x0(self, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """x̂_0 at the current step, dynamically thresholded when the config asks for it."""
        c = self.config
        alpha_t, sigma_t = alpha_sigma(self.sigmas[self.step_index])
        x0 = to_x0(model_output, sample, alpha_t, sigma_t, c.prediction_type)
        if c.thresholding:
            x0 = dynamic_threshold(x0, c.dynamic_thresholding_ratio, c.sample_max_value)
        return x0

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """x_t = α_t x_0 + σ_t ε, with σ_t/α_t looked up in the inference schedule."""
        alpha_t, sigma_t = alpha_sigma(sigmas_at(self, timesteps, original_samples))
        return alpha_t * original_samples + sigma_t * noise
