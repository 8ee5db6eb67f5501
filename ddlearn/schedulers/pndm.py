"""PNDM: pseudo numerical methods (Runge-Kutta, then linear multistep) on the DDIM transfer.

Mirrors `diffusers.PNDMScheduler` (same config keys, defaults, timesteps and call sequence).
The sampler is stateful: `step()` must be called once per entry of `timesteps`, in order.
Without `skip_prk_steps` the first 12 calls are 3 pseudo Runge-Kutta (PRK) steps of 4 model
calls each (so N ≥ 4 inference steps, N + 9 calls); then each call is one pseudo linear
multistep (PLMS) step reusing the last 4 ε.
With `skip_prk_steps` (Stable Diffusion's setting) PLMS warms up with lower orders instead.

| code                  | paper                | meaning                                           |
|-----------------------|----------------------|---------------------------------------------------|
| `alpha_prod_t`        | ᾱ_t                  | signal kept after t forward steps                 |
| `model_output`        | ε_θ(x_t, t)          | predicted noise                                   |
| `ets`                 | e_{t}, e_{t+δ}, ...  | the last (up to 4) ε evaluated at step starts     |
| `cur_sample`          | x_t                  | the sample the current multi-call step started at |
| `T_over_n`            | δ                    | stride between inference timesteps, T // n        |
| `_transfer(...)`      | φ(x_t, e_t, t, t-δ)  | the DDIM-like transfer part (eq. 9)               |

References: Liu, Ren, Lin & Zhao 2022, "Pseudo Numerical Methods for Diffusion Models on
Manifolds": eq. (9) the transfer φ, eq. (12) PLMS, eq. (13) PRK, Algorithm 2.
"""

from typing import Optional

import numpy as np
import torch

from ddlearn.config import register_to_config
from ddlearn.schedulers.base import SchedulerMixin
from ddlearn.schedulers.common import (
    SchedulerOutput,
    add_noise,
    alpha_bar_coefficients,
    check_choice,
    check_ready,
    predict_epsilon,
)
from ddlearn.schedulers.schedules import TIMESTEP_SPACINGS, make_betas, spaced_timesteps


class PNDMScheduler(SchedulerMixin):
    """PRK warm-up + PLMS (Liu et al. 2022, Algorithm 2), or PLMS alone (`skip_prk_steps`)."""

    init_noise_sigma = 1.0  # x_T ~ N(0, I)

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[list] = None, skip_prk_steps: bool = False,
                 set_alpha_to_one: bool = False, prediction_type: str = "epsilon",
                 timestep_spacing: str = "leading", steps_offset: int = 0):
        check_choice("prediction_type", prediction_type, ("epsilon", "v_prediction"))
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                trained_betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.timesteps = None  # PNDM has none until set_timesteps, as in diffusers

    def set_timesteps(self, num_inference_steps: int, device=None):
        """PRK timesteps (4 per RK step, over the 4 highest t) then PLMS timesteps; resets state."""
        c, n = self.config, num_inference_steps
        if not c.skip_prk_steps and n < 4:
            raise ValueError(f"num_inference_steps={n} is too few for PNDM's Runge-Kutta warm-up, "
                             f"which spans the 4 highest timesteps (diffusers fails with a "
                             f"broadcast error); use at least 4 steps, or skip_prk_steps=True")
        ascending = spaced_timesteps(n, c.num_train_timesteps, c.timestep_spacing,
                                     c.steps_offset)[::-1]
        if c.skip_prk_steps:  # the 2nd call re-does the 1st step (see _step_plms)
            self.prk_timesteps = np.array([], dtype=np.int64)
            plms = np.concatenate([ascending[:-1], ascending[-2:-1], ascending[-1:]])[::-1]
        else:  # RK step from t: ε at t, t - δ/2, t - δ/2, t - δ
            half = c.num_train_timesteps // n // 2
            starts_and_halves = ascending[-4:].repeat(2) + np.tile([0, half], 4)
            self.prk_timesteps = starts_and_halves[:-1].repeat(2)[1:-1][::-1]
            plms = ascending[:-3][::-1]
        timesteps = np.concatenate([self.prk_timesteps, plms]).astype(np.int64)
        self.timesteps = torch.from_numpy(timesteps).to(device)
        self.num_inference_steps = n
        self.ets, self.counter, self.cur_model_output, self.cur_sample = [], 0, 0, None

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The network sees x_t unscaled."""
        return sample

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """One call of the PRK or PLMS sequence (deterministic: `generator` is unused)."""
        check_ready(self)
        if self.counter < len(self.prk_timesteps):
            prev_sample = self._step_prk(model_output, timestep, sample)
        else:
            prev_sample = self._step_plms(model_output, timestep, sample)
        self.counter += 1
        return SchedulerOutput(prev_sample).returned(return_dict)

    def _step_prk(self, model_output, timestep, sample):
        """Pseudo Runge-Kutta (eq. 13): 4 calls, ε weighted 1/6, 1/3, 1/3, 1/6."""
        # 1. this call's target: t - δ/2 (calls 0, 1), t - δ (calls 2, 3), from the RK step's t
        half = self.config.num_train_timesteps // self.num_inference_steps // 2
        prev_timestep = timestep - (0 if self.counter % 2 else half)
        timestep = self.prk_timesteps[self.counter // 4 * 4]
        # 2. accumulate the RK4 combination of the four ε
        stage = self.counter % 4
        if stage == 0:
            self.cur_model_output += 1 / 6 * model_output
            self.ets.append(model_output)
            self.cur_sample = sample
        elif stage in (1, 2):
            self.cur_model_output += 1 / 3 * model_output
        else:
            model_output = self.cur_model_output + 1 / 6 * model_output
            self.cur_model_output = 0
        # 3. every stage transfers from the step's starting sample x_t (eq. 9)
        return self._transfer(self.cur_sample, timestep, prev_timestep, model_output)

    def _step_plms(self, model_output, timestep, sample):
        """Pseudo linear multistep (eq. 12): Adams-Bashforth on ε, lower order while warming up."""
        # 1. the target t - δ; call 1 (PLMS only) instead redoes step t + δ -> t
        T_over_n = self.config.num_train_timesteps // self.num_inference_steps
        prev_timestep = timestep - T_over_n
        if self.counter != 1:
            self.ets = self.ets[-3:] + [model_output]
        else:
            prev_timestep, timestep = timestep, timestep + T_over_n
        # 2. combine ε: Euler, Heun-like average, then AB2, AB3, AB4
        ets = self.ets
        if len(ets) == 1 and self.counter == 0:
            self.cur_sample = sample
        elif len(ets) == 1 and self.counter == 1:
            model_output = (model_output + ets[-1]) / 2
            sample, self.cur_sample = self.cur_sample, None
        elif len(ets) == 2:
            model_output = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            model_output = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            model_output = (1 / 24) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
        # 3. transfer x_t -> x_{t-δ} (eq. 9)
        return self._transfer(sample, timestep, prev_timestep, model_output)

    def _transfer(self, sample, timestep, prev_timestep, model_output):
        """φ (eq. 9): x_{t-δ} = √(ᾱ_{t-δ}/ᾱ_t) x_t - (ᾱ_{t-δ} - ᾱ_t) ε / denominator."""
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = (self.alphas_cumprod[prev_timestep] if prev_timestep >= 0
                             else self.final_alpha_cumprod)
        beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
        model_output = predict_epsilon(model_output, sample, alpha_prod_t**0.5, beta_prod_t**0.5,
                                       self.config.prediction_type)  # v -> ε
        sample_coeff = (alpha_prod_t_prev / alpha_prod_t) ** 0.5
        denominator = (alpha_prod_t * beta_prod_t_prev**0.5
                       + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev) ** 0.5)
        return (sample_coeff * sample
                - (alpha_prod_t_prev - alpha_prod_t) * model_output / denominator)

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """Forward process (DDPM eq. 4): x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, at any training timesteps."""
        alpha_t, sigma_t = alpha_bar_coefficients(self.alphas_cumprod, timesteps, original_samples)
        return add_noise(original_samples, noise, alpha_t, sigma_t)
