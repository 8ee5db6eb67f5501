"""DDIM: a non-Markovian sampler that skips timesteps, deterministic at η = 0.

Mirrors `diffusers.DDIMScheduler` (same config keys, defaults, timesteps, noise draws).

| code                    | paper            | meaning                                          |
|-------------------------|------------------|--------------------------------------------------|
| `alpha_prod_t`          | α_t (ᾱ_t)        | DDIM writes α_t for DDPM's ᾱ_t: signal kept      |
| `alpha_prod_t_prev`     | α_{t-1}          | same at the previous inference step              |
| `beta_prod_t`           | 1 - α_t          |                                                  |
| `pred_original_sample`  | x̂_0 = f_θ(x_t)   | "predicted x_0" (eq. 12)                         |
| `pred_epsilon`          | ε_θ(x_t)         | predicted noise                                  |
| `std_dev_t`             | σ_t(η)           | eq. (16); η = 0: DDIM, η = 1: DDPM's posterior   |
| `final_alpha_cumprod`   | α_0              | 1 if `set_alpha_to_one`, else ᾱ of step 0        |

References: Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models": eq. (12) the update,
eq. (16) σ_t(η). Lin et al. 2023 (zero terminal SNR, "trailing" spacing); Saharia et al. 2022
(Imagen) §2.3: dynamic thresholding.
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
    make_betas,
    randn_like_output,
)


class DDIMScheduler(AlphaSchedulerMixin):
    """DDIM sampling (Song et al. 2021): eq. (12) with σ_t from eq. (16)."""

    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[list] = None, clip_sample: bool = True,
                 set_alpha_to_one: bool = True, steps_offset: int = 0,
                 prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, clip_sample_range: float = 1.0,
                 sample_max_value: float = 1.0, timestep_spacing: str = "leading",
                 rescale_betas_zero_snr: bool = False):
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self._init_schedule(make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                       trained_betas, rescale_betas_zero_snr))
        # the "previous" ᾱ of the last step: 1 (a clean x_0) or ᾱ at t = 0
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

    def _alpha_prods(self, timestep):
        """(α_t, α_{t-1}). As in diffusers, the previous step is t - T//n for every spacing."""
        prev_timestep = timestep - self.config.num_train_timesteps // self.num_inference_steps
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = (self.alphas_cumprod[prev_timestep] if prev_timestep >= 0
                             else self.final_alpha_cumprod)
        return alpha_prod_t, alpha_prod_t_prev

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False,
             generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """x_t -> x_{t-1} by eq. (12); η > 0 adds σ_t(η) z with z drawn from `generator`."""
        self._check_ready()
        c = self.config

        # 1. α_t and α_{t-1} (the previous inference step)
        alpha_prod_t, alpha_prod_t_prev = self._alpha_prods(timestep)
        beta_prod_t = 1 - alpha_prod_t

        # 2. ε from the network's output (eq. 12; v-prediction: Salimans & Ho 2022)
        if c.prediction_type == "epsilon":
            pred_epsilon = model_output
        elif c.prediction_type == "sample":
            pred_epsilon = (sample - alpha_prod_t**0.5 * model_output) / beta_prod_t**0.5
        else:
            pred_epsilon = alpha_prod_t**0.5 * model_output + beta_prod_t**0.5 * sample

        # 3. predicted x_0, thresholded or clipped to the data range
        pred_original_sample = predict_x0(model_output, sample, alpha_prod_t, c)

        # 4. σ_t(η) = η √((1 - α_{t-1}) / (1 - α_t)) √(1 - α_t / α_{t-1})  (eq. 16)
        variance = (1 - alpha_prod_t_prev) / beta_prod_t * (1 - alpha_prod_t / alpha_prod_t_prev)
        std_dev_t = eta * variance**0.5
        if use_clipped_model_output:  # ε consistent with the clipped x̂_0
            pred_epsilon = (sample - alpha_prod_t**0.5 * pred_original_sample) / beta_prod_t**0.5

        # 5. "direction pointing to x_t" of eq. (12): √(1 - α_{t-1} - σ_t²) ε
        pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** 0.5 * pred_epsilon

        # 6. x_{t-1} = √α_{t-1} x̂_0 + direction (+ σ_t z, "random noise")  (eq. 12)
        prev_sample = alpha_prod_t_prev**0.5 * pred_original_sample + pred_sample_direction
        if eta > 0:
            prev_sample = prev_sample + std_dev_t * randn_like_output(model_output, generator)
        return SchedulerOutput(prev_sample, pred_original_sample).returned(return_dict)
