"""DPM-Solver and DPM-Solver++ multistep samplers: exponential integrators in log-SNR time λ.

Mirrors `diffusers.DPMSolverMultistepScheduler`: algorithm_type "dpmsolver++" (the default, as in
Stable Diffusion), "dpmsolver" and "sde-dpmsolver++"; solver_order 1-3. The ODE is linear in x
apart from the network term, so the linear part is integrated exactly and only the prediction is
approximated, by a Taylor polynomial in λ through the last 1-3 predictions (multistep: one
network call per step, the history is reused).

Notation (Lu et al. 2022; x_t = α_t x_0 + σ_t ε with α_t² + σ_t² = 1):

| code                 | paper        | meaning                                                |
|----------------------|--------------|--------------------------------------------------------|
| `sigmas[i]`          | σ_i / α_i    | noise-to-signal ratio at step i; σ_N: final_sigmas_type |
| `alpha_t`, `sigma_t` | α_t, σ_t     | 1/√(1+σ²) and σ/√(1+σ²) at the target step i+1         |
| `_lambda(i)`         | λ = log(α/σ) | half the log-SNR; grows as t -> 0                      |
| `h`, `r0`, `r1`      | h_i, r_i     | step size λ_{i+1} - λ_i; previous step sizes / h       |
| `model_outputs`      | x̂_θ or ε̂_θ   | converted predictions, oldest first; D0 = the last     |
| `D1`, `D2`           | D_i          | 1st and 2nd divided differences of those in λ          |

References: Lu et al. 2022a, "DPM-Solver" (arXiv 2206.00927), eq. (3.4) (exact solution in λ)
and §3.2 (Taylor terms in λ, DPM-Solver-1); Lu et al. 2022b, "DPM-Solver++" (arXiv 2211.01095),
§4 (the same in data prediction x̂_θ) and Alg. 2 (DPM-Solver++(2M) = solver_type "midpoint");
"sde-dpmsolver++" as k-diffusion's `sample_dpmpp_2m_sde`.
"""

import warnings
from typing import Optional, Union

import numpy as np
import torch

from ddlearn.config import register_to_config
from ddlearn.schedulers.common import (
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    SchedulerOutput,
    check_choice,
    dynamic_threshold,
    index_for_timestep,
    randn_like_output,
)
from ddlearn.schedulers.lambda_space import LambdaSchedulerMixin, alpha_sigma, to_eps


class DPMSolverMultistepScheduler(LambdaSchedulerMixin):
    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[Union[list, np.ndarray]] = None, solver_order: int = 2,
                 prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, sample_max_value: float = 1.0,
                 algorithm_type: str = "dpmsolver++", solver_type: str = "midpoint",
                 lower_order_final: bool = True, euler_at_final: bool = False,
                 use_karras_sigmas: Optional[bool] = False, final_sigmas_type: str = "zero",
                 timestep_spacing: str = "linspace", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False):
        super().__init__()
        for name, value, choices in [
                ("solver_order", solver_order, (1, 2, 3)),
                ("prediction_type", prediction_type, PREDICTION_TYPES),
                ("algorithm_type", algorithm_type, ("dpmsolver++", "dpmsolver", "sde-dpmsolver++")),
                ("solver_type", solver_type, ("midpoint", "heun")),
                ("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min")),
                ("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)]:
            check_choice(name, value, choices)
        if algorithm_type == "dpmsolver" and final_sigmas_type == "zero":
            raise ValueError("algorithm_type='dpmsolver' cannot step to σ = 0 (its update has "
                             "σ_t (e^h - 1) = 0·∞ there); pass final_sigmas_type='sigma_min'")
        self._init_schedule(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas,
                            rescale_betas_zero_snr)
        self.model_outputs, self.lower_order_nums, self.step_index = [None] * solver_order, 0, None

    @classmethod
    def extract_init_kwargs(cls, config, **overrides) -> dict:
        """As ConfigMixin's, but a UniPC config's solver_type ("bh1"/"bh2") becomes "midpoint"."""
        kwargs = super().extract_init_kwargs(config, **overrides)
        given = {**dict(config), **overrides}
        if given.get("sigma_min") is not None or given.get("sigma_max") is not None:
            warnings.warn(f"{cls.__name__} has no sigma_min/sigma_max: its Karras σ keep the "
                          f"training range (diffusers' DPM would read them from this config)",
                          stacklevel=3)
        if kwargs.get("solver_type") in ("bh1", "bh2", "logrho"):
            kwargs["solver_type"] = "midpoint"
        return kwargs

    def set_timesteps(self, num_inference_steps: int, device=None):
        """Choose the N timesteps, their σ_i (interpolated or Karras) and σ_N; clear the history."""
        self._set_schedule(num_inference_steps, device, round_karras_timesteps=(
            self.config.beta_schedule != "squaredcos_cap_v2"))
        self.model_outputs = [None] * self.config.solver_order
        self.lower_order_nums, self.step_index = 0, None

    def convert_model_output(self, model_output: torch.Tensor, sample: torch.Tensor):
        """The network's output as x̂_0 ("++": data prediction) or as ε̂ ("dpmsolver")."""
        c = self.config
        if c.algorithm_type != "dpmsolver":
            return self._to_x0(model_output, sample)
        alpha_t, sigma_t = alpha_sigma(self.sigmas[self.step_index])
        eps = to_eps(model_output, sample, alpha_t, sigma_t, c.prediction_type)
        if c.thresholding:  # threshold the x̂_0 that this ε̂ implies, then convert back
            x0 = dynamic_threshold((sample - sigma_t * eps) / alpha_t,
                                   c.dynamic_thresholding_ratio, c.sample_max_value)
            eps = (sample - alpha_t * x0) / sigma_t
        return eps

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """One multistep DPM-Solver update from σ_i to σ_{i+1}."""
        self._check_ready()
        if self.step_index is None:
            self.step_index = index_for_timestep(self.timesteps, timestep)
        i, N, c = self.step_index, len(self.timesteps), self.config

        # 1. order: warm up from 1st order; lower it at the end (stabler with few steps, σ_N = 0)
        final = i == N - 1 and (c.euler_at_final or (c.lower_order_final and N < 15)
                                or c.final_sigmas_type == "zero")
        second_last = i == N - 2 and c.lower_order_final and N < 15
        order = (1 if c.solver_order == 1 or self.lower_order_nums < 1 or final else
                 2 if c.solver_order == 2 or self.lower_order_nums < 2 or second_last else 3)

        # 2. push the converted prediction into the history; noise for the SDE variant
        model_output = self.convert_model_output(model_output, sample)
        self.model_outputs = self.model_outputs[1:] + [model_output]
        sample = sample.to(torch.float32)  # upcast, as diffusers does
        noise = None
        if c.algorithm_type == "sde-dpmsolver++":
            noise = randn_like_output(model_output, generator, dtype=torch.float32)

        # 3. the update (below), then bookkeeping
        prev_sample = self._update(sample, order, noise)
        self.lower_order_nums = min(self.lower_order_nums + 1, c.solver_order)
        self.step_index += 1
        return SchedulerOutput(prev_sample.to(model_output.dtype)).returned(return_dict)

    def _update(self, x: torch.Tensor, order: int, noise: Optional[torch.Tensor]):
        """x_{i+1} = c_x x_i + c_0 D0 [+ c_1 D1 [+ c_2 D2]] [+ c_z z]: Taylor terms of order 1-3."""
        i, m = self.step_index, self.model_outputs
        alpha_t, sigma_t = alpha_sigma(self.sigmas[i + 1])
        alpha_s0, sigma_s0 = alpha_sigma(self.sigmas[i])
        h = self._lambda(i + 1) - self._lambda(i)
        c_x, c_0, c_1_midpoint, c_1, c_2, c_z = self._coefficients(alpha_t, sigma_t, alpha_s0,
                                                                   sigma_s0, h)
        x_t = c_x * x + c_0 * m[-1]  # order 1 (DPM-Solver-1 = DDIM): prediction held constant
        if order >= 2:  # D1_0 = (m0 - m1) / r0: the slope in λ from the last two predictions
            r0 = (self._lambda(i) - self._lambda(i - 1)) / h
            D1 = D1_0 = (1.0 / r0) * (m[-1] - m[-2])
        if order == 2:
            x_t = x_t + (c_1_midpoint if self.config.solver_type == "midpoint" else c_1) * D1
        elif order == 3:  # slope and curvature from the last three predictions
            r1 = (self._lambda(i - 1) - self._lambda(i - 2)) / h
            D1_1 = (1.0 / r1) * (m[-2] - m[-3])
            D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
            D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
            x_t = x_t + c_1 * D1 + c_2 * D2
        return x_t if noise is None else x_t + c_z * noise

    def _coefficients(self, alpha_t, sigma_t, alpha_s0, sigma_s0, h):
        """Exact integrals of the Taylor terms over the step (φ-functions of h), per algorithm."""
        if self.config.algorithm_type == "dpmsolver++":  # x_t = σ_t/σ_s x_s + σ_t ∫ e^λ x̂_θ dλ
            e = torch.exp(-h) - 1.0
            return (sigma_t / sigma_s0, -(alpha_t * e), -(0.5 * (alpha_t * e)),
                    alpha_t * (e / h + 1.0),
                    -(alpha_t * ((torch.exp(-h) - 1.0 + h) / h**2 - 0.5)), None)
        if self.config.algorithm_type == "dpmsolver":  # x_t = α_t/α_s x_s - α_t ∫ e^-λ ε̂_θ dλ
            e = torch.exp(h) - 1.0
            return (alpha_t / alpha_s0, -(sigma_t * e), -(0.5 * (sigma_t * e)),
                    -(sigma_t * (e / h - 1.0)),
                    -(sigma_t * ((torch.exp(h) - 1.0 - h) / h**2 - 0.5)), None)
        e = 1.0 - torch.exp(-2.0 * h)  # sde-dpmsolver++: drift doubled, fresh noise √(1 - e^-2h)
        return (sigma_t / sigma_s0 * torch.exp(-h), alpha_t * e, 0.5 * (alpha_t * e),
                alpha_t * (e / (-2.0 * h) + 1.0),
                alpha_t * ((1.0 - torch.exp(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5),
                sigma_t * torch.sqrt(1.0 - torch.exp(-2 * h)))
