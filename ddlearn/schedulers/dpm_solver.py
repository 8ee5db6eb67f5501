"""DPM-Solver and DPM-Solver++ multistep samplers: exponential integrators in log-SNR time λ.

Mirrors `diffusers.DPMSolverMultistepScheduler`: algorithm_type "dpmsolver++" (the default, as in
Stable Diffusion), "dpmsolver", "sde-dpmsolver++" and "sde-dpmsolver"; solver_order 1-3; Karras,
exponential, beta or λ-uniform (`use_lu_lambdas`) σ; `lambda_min_clipped`; learned-variance
models (`variance_type`). The ODE is linear in x
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

from typing import List, Optional, Union

import numpy as np
import torch

from ddlearn.config import register_to_config
from ddlearn.noise import randn_tensor
from ddlearn.schedulers.base import SchedulerMixin
from ddlearn.schedulers.common import (
    FLOW_PREDICTION_TYPES,
    SchedulerOutput,
    add_noise,
    alpha_sigma,
    check_choice,
    check_ready,
    current_step_index,
    dynamic_threshold,
    predict_epsilon,
    predict_x0,
    sigmas_at,
)
from ddlearn.schedulers.schedules import (
    TIMESTEP_SPACINGS,
    check_sigma_options,
    make_betas,
    multistep_schedule,
    respacing,
    shifted_sigmas,
    sigmas_from_alphas_cumprod,
)

ALGORITHM_TYPES = ("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver")
# a learned-variance model's output holds the variance too; DDPM's fixed variances, kept in a
# config swapped from DDPM, change nothing here (as in diffusers)
VARIANCE_TYPES = (None, "learned", "learned_range", "fixed_small", "fixed_small_log",
                  "fixed_large", "fixed_large_log")


class DPMSolverMultistepScheduler(SchedulerMixin):
    init_noise_sigma = 1.0  # x_T ~ N(0, I): the network sees x_t unscaled

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[Union[list, np.ndarray]] = None, solver_order: int = 2,
                 prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, sample_max_value: float = 1.0,
                 algorithm_type: str = "dpmsolver++", solver_type: str = "midpoint",
                 lower_order_final: bool = True, euler_at_final: bool = False,
                 use_karras_sigmas: Optional[bool] = False,
                 use_exponential_sigmas: Optional[bool] = False,
                 use_beta_sigmas: Optional[bool] = False, use_lu_lambdas: Optional[bool] = False,
                 use_flow_sigmas: Optional[bool] = False, flow_shift: Optional[float] = 1.0,
                 final_sigmas_type: Optional[str] = "zero",
                 lambda_min_clipped: float = -float("inf"), variance_type: Optional[str] = None,
                 timestep_spacing: str = "linspace", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False, use_dynamic_shifting: bool = False,
                 time_shift_type: str = "exponential"):
        check_sigma_options(self.config)
        if algorithm_type == "deis":  # diffusers records DEIS as DPM-Solver++
            self._register(algorithm_type="dpmsolver++")
        if solver_type in ("logrho", "bh1", "bh2"):  # DEIS's and UniPC's: their closest here
            self._register(solver_type="midpoint")
        c = self.config
        for name, value, choices in [
                ("solver_order", solver_order, (1, 2, 3)),
                ("prediction_type", prediction_type, FLOW_PREDICTION_TYPES),
                ("algorithm_type", c.algorithm_type, ALGORITHM_TYPES),
                ("solver_type", c.solver_type, ("midpoint", "heun")),
                ("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min")),
                ("variance_type", variance_type, VARIANCE_TYPES),
                ("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)]:
            check_choice(name, value, choices)
        if c.algorithm_type in ("dpmsolver", "sde-dpmsolver") and final_sigmas_type == "zero":
            raise ValueError(f"algorithm_type={c.algorithm_type!r} cannot step to σ = 0 (its "
                             f"update has σ_t (e^h - 1) = 0·∞ there); pass "
                             f"final_sigmas_type='sigma_min'")
        if prediction_type == "flow_prediction" and (c.algorithm_type in ("dpmsolver",
                                                                          "sde-dpmsolver")
                                                     or not use_flow_sigmas):
            raise ValueError("prediction_type='flow_prediction' needs use_flow_sigmas=True and "
                             "a data-prediction algorithm_type ('dpmsolver++', 'sde-dpmsolver++')")
        if c.algorithm_type == "sde-dpmsolver" and solver_order == 3:
            raise ValueError("algorithm_type='sde-dpmsolver' has no 3rd-order update (diffusers "
                             "fails at the third step); use solver_order=2")
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                trained_betas, rescale_betas_zero_snr)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        if rescale_betas_zero_snr:
            self.alphas_cumprod[-1] = 2**-24  # ᾱ_T = 0 would make λ_T = -∞
        self.alpha_t, self.sigma_t = self.alphas_cumprod**0.5, (1 - self.alphas_cumprod) ** 0.5
        self.lambda_t = torch.log(self.alpha_t) - torch.log(self.sigma_t)
        self.sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float32)
        self.model_outputs, self.lower_order_nums = [None] * solver_order, 0
        self.flow_shift = flow_shift  # set_timesteps(mu=...) replaces it by e^μ, as diffusers

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      mu: Optional[float] = None, timesteps: Optional[List[int]] = None):
        """Choose the N timesteps (spaced below λ_min_clipped, or yours) and their σ_i
        (interpolated, Karras, exponential, beta or even in λ), then σ_N; clear the history."""
        c, T = self.config, self.config.num_train_timesteps
        if mu is not None:  # dynamic shifting: the flow shift e^μ, from now on
            if not (c.use_dynamic_shifting and c.time_shift_type == "exponential"):
                raise ValueError("set_timesteps(mu=...) needs use_dynamic_shifting=True and "
                                 "time_shift_type='exponential'")
            self.flow_shift = float(np.exp(mu))
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod).numpy()
        respaced = (c.use_karras_sigmas or c.use_lu_lambdas or c.use_exponential_sigmas
                    or c.use_beta_sigmas)
        if timesteps is not None:
            if respaced or c.use_flow_sigmas:
                raise ValueError("custom timesteps cannot be combined with use_karras_sigmas, "
                                 "use_lu_lambdas, use_exponential_sigmas, use_beta_sigmas or "
                                 "use_flow_sigmas")
            timesteps = np.array(timesteps).astype(np.int64)
            sigmas = np.interp(timesteps, np.arange(0, len(train_sigmas)), train_sigmas)
        elif c.use_flow_sigmas and not respaced:  # σ_t of x_t = (1-σ_t) x_0 + σ_t ε, shifted
            n = num_inference_steps
            sigmas = shifted_sigmas(1.0 - np.linspace(1, 1 / T, n + 1), self.flow_shift)
            sigmas = sigmas[::-1][:-1].copy()  # from high noise down; σ = 0 dropped
            timesteps = sigmas * T
        else:  # λ_min_clipped: leave out the noisiest steps, whose λ is below it
            clipped = torch.searchsorted(torch.flip(self.lambda_t, [0]), c.lambda_min_clipped)
            respace = respacing(c)  # diffusers' order: Karras, then λ-uniform, then the others
            if c.use_lu_lambdas and respace != "karras":
                respace = "lu"
            timesteps, sigmas = multistep_schedule(
                c, self.alphas_cumprod, num_inference_steps, respace, last=T - clipped.item(),
                round_respaced=c.beta_schedule != "squaredcos_cap_v2")
        sigma_last = train_sigmas[0] if c.final_sigmas_type == "sigma_min" else 0.0
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [sigma_last]]).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(timesteps)
        self.model_outputs = [None] * c.solver_order
        self.lower_order_nums, self.step_index, self.begin_index = 0, None, None

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """No scaling: the network sees x_t itself."""
        return sample

    def convert_model_output(self, model_output: torch.Tensor, sample: torch.Tensor):
        """The network's output as x̂_0 ("++": data prediction) or as ε̂ ("dpmsolver"), with
        x̂_0 dynamically thresholded when the config asks."""
        c = self.config
        if c.variance_type in ("learned", "learned_range") and c.prediction_type == "epsilon":
            model_output = model_output[:, :sample.shape[1]]  # (B, 2C, H, W): drop the variance
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[self.step_index])
        if c.algorithm_type in ("dpmsolver++", "sde-dpmsolver++"):
            x0 = predict_x0(model_output, sample, alpha_t, sigma_t, c.prediction_type)
            if c.thresholding:
                x0 = dynamic_threshold(x0, c.dynamic_thresholding_ratio, c.sample_max_value)
            return x0
        eps = predict_epsilon(model_output, sample, alpha_t, sigma_t, c.prediction_type)
        if c.thresholding:  # threshold the x̂_0 that this ε̂ implies, then convert back
            x0 = dynamic_threshold((sample - sigma_t * eps) / alpha_t,
                                   c.dynamic_thresholding_ratio, c.sample_max_value)
            eps = (sample - alpha_t * x0) / sigma_t
        return eps

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: Optional[torch.Generator] = None,
             variance_noise: Optional[torch.Tensor] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """One multistep DPM-Solver update from σ_i to σ_{i+1}."""
        check_ready(self)
        self.step_index = current_step_index(self, timestep)
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
        if c.algorithm_type.startswith("sde-"):  # the noise of this step: drawn, or given
            noise = (variance_noise.to(device=model_output.device, dtype=torch.float32)
                     if variance_noise is not None else
                     randn_tensor(model_output.shape, generator, device=model_output.device,
                                  dtype=torch.float32))

        # 3. the update (below), then bookkeeping
        prev_sample = self._update(sample, order, noise)
        self.lower_order_nums = min(self.lower_order_nums + 1, c.solver_order)
        self.step_index += 1
        return SchedulerOutput(prev_sample.to(model_output.dtype)).returned(return_dict)

    def _update(self, x: torch.Tensor, order: int, noise: Optional[torch.Tensor]):
        """x_{i+1} = c_x x_i + c_0 D0 [+ c_1 D1 [+ c_2 D2]] [+ c_z z]: Taylor terms of order 1-3."""
        i, m = self.step_index, self.model_outputs
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[i + 1])
        alpha_s0, sigma_s0 = self._alpha_sigma(self.sigmas[i])
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
        if self.config.algorithm_type == "sde-dpmsolver":  # ε form, drift doubled, fresh noise
            e = torch.exp(h) - 1.0
            return (alpha_t / alpha_s0, -2.0 * (sigma_t * e), -(sigma_t * e),
                    -2.0 * (sigma_t * (e / h - 1.0)), None,
                    sigma_t * torch.sqrt(torch.exp(2 * h) - 1.0))
        e = 1.0 - torch.exp(-2.0 * h)  # sde-dpmsolver++: drift doubled, fresh noise √(1 - e^-2h)
        return (sigma_t / sigma_s0 * torch.exp(-h), alpha_t * e, 0.5 * (alpha_t * e),
                alpha_t * (e / (-2.0 * h) + 1.0),
                alpha_t * ((1.0 - torch.exp(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5),
                sigma_t * torch.sqrt(1.0 - torch.exp(-2 * h)))

    def _alpha_sigma(self, sigma):
        """(α_t, σ_t) at a schedule σ: VP, or flow matching's (1 - σ, σ) with use_flow_sigmas."""
        return alpha_sigma(sigma, self.config.use_flow_sigmas)

    def _lambda(self, k: int) -> torch.Tensor:
        """λ_k = log(α_k / σ_k) at step k of the schedule."""
        alpha_k, sigma_k = self._alpha_sigma(self.sigmas[k])
        return torch.log(alpha_k) - torch.log(sigma_k)

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """x_t = α_t x_0 + σ_t ε, with σ_t/α_t looked up in the inference schedule."""
        alpha_t, sigma_t = self._alpha_sigma(sigmas_at(self, timesteps, original_samples))
        return add_noise(original_samples, noise, alpha_t, sigma_t)
