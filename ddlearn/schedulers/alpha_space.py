"""What the ᾱ-space samplers (DDPM, DDIM, PNDM) share: integer timesteps, unscaled inputs, x̂_0.

They step x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε directly, at a subset of the T training timesteps, and feed
x_t to the network as it is (the σ-space samplers scale it first; see `sigma_space.py`).

| code                   | paper   | meaning                                                |
|------------------------|---------|--------------------------------------------------------|
| `alphas_cumprod[t]`    | ᾱ_t     | signal kept after t forward steps                      |
| `alpha_prod_t`         | ᾱ_t     | the same, at the timestep being stepped from           |
| `pred_original_sample` | x̂_0     | the clean sample the network's output implies          |

References: Ho et al. 2020, "DDPM", eq. (15) (x̂_0 from ε); Salimans & Ho 2022, §4
(v-prediction); Saharia et al. 2022 (Imagen), §2.3 (dynamic thresholding); Lin et al. 2023,
Table 2 (timestep spacings).
"""

import numpy as np
import torch

from ddlearn.schedulers.common import (
    TIMESTEP_SPACINGS,
    SchedulerMixin,
    check_choice,
    check_num_inference_steps,
    dynamic_threshold,
)


def discrete_timesteps(num_inference_steps: int, num_train_timesteps: int, timestep_spacing: str,
                       steps_offset: int = 0) -> np.ndarray:
    """Integer timesteps t_1 > ... > t_N, as int64, by one of three spacings (Lin et al. 2023,
    Table 2): "linspace" (rounded), "leading" (multiples of T // N, + steps_offset), "trailing"."""
    n, T = num_inference_steps, num_train_timesteps
    check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
    check_num_inference_steps(n, T)
    if timestep_spacing == "linspace":
        return np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
    if timestep_spacing == "leading":
        return (np.arange(0, n) * (T // n))[::-1].astype(np.int64) + steps_offset
    return np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1  # "trailing"


def predict_x0(model_output, sample, alpha_prod_t, config) -> torch.Tensor:
    """x̂_0 from the network's prediction of ε (DDPM eq. 15), of x_0, or of v = √ᾱ ε - √(1-ᾱ) x_0,
    then kept in the data range: dynamic thresholding, or clipping to ±clip_sample_range."""
    beta_prod_t = 1 - alpha_prod_t
    if config.prediction_type == "epsilon":
        x0 = (sample - beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
    elif config.prediction_type == "sample":
        x0 = model_output
    else:
        x0 = alpha_prod_t**0.5 * sample - beta_prod_t**0.5 * model_output
    if config.thresholding:
        return dynamic_threshold(x0, config.dynamic_thresholding_ratio, config.sample_max_value)
    if config.clip_sample:
        return x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    return x0


class AlphaSchedulerMixin(SchedulerMixin):
    """ᾱ from β, timesteps by `config.timestep_spacing`, x_t fed to the network unscaled."""

    init_noise_sigma = 1.0  # x_T ~ N(0, I)

    def _init_schedule(self, betas: torch.Tensor):
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.timesteps = torch.arange(len(betas) - 1, -1, -1)  # until set_timesteps

    def set_timesteps(self, num_inference_steps: int, device=None):
        """Choose the timesteps to visit, descending, by `config.timestep_spacing`."""
        c = self.config
        steps = discrete_timesteps(num_inference_steps, c.num_train_timesteps, c.timestep_spacing,
                                   c.steps_offset)
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(steps).to(device)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The network sees x_t unscaled."""
        return sample
