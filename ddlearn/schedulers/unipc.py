"""UniPC: a multistep predictor (UniP) plus a corrector (UniC) that reuses the next network call.

Mirrors `diffusers.UniPCMultistepScheduler` (with Karras, exponential or beta σ). Each step
first *corrects* the previous step's result x_i with the prediction the network just made at x_i
(no extra network call), then *predicts* x_{i+1} from the history, like DPM-Solver++
(`dpm_solver.py` explains the λ-time picture they share).

Notation (Zhao et al. 2023; x_t = α_t x_0 + σ_t ε, λ = log(α/σ)):

| code               | paper      | meaning                                                     |
|--------------------|------------|-------------------------------------------------------------|
| `h`, `hh`          | h, ±h      | λ_t - λ_s0; hh = -h for data prediction (predict_x0)        |
| `rks`              | r_k        | (λ_{s_k} - λ_s0) / h for the earlier steps, and r_p = 1     |
| `D1s`              | D_k / r_k  | (m_{s_k} - m_0) / r_k: divided differences of predictions   |
| `B_h`              | B(h)       | bh1: B(h) = h; bh2: B(h) = e^h - 1                          |
| `R`, `b`           | R_p, g_p/B | rows r_k^(i-1) and b_i = i! h φ_{i+1}(h) / B(h), i = 1..p   |
| `rhos_p`, `rhos_c` | a_k        | weights solving R a = b (predictor / corrector)             |

References: Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models" (arXiv 2302.04867), §3 and Alg. 1-2 (UniC corrector, UniP predictor; order p,
R_p a = g_p / B(h)), with B(h) = h ("bh1") or e^h - 1 ("bh2"); Lu et al. 2022b, "DPM-Solver++",
for the data-prediction (predict_x0) form.
"""

from typing import List, Optional, Union

import numpy as np
import torch

from ddlearn.config import register_to_config
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
    stretch_to_terminal,
    time_shift,
)


class UniPCMultistepScheduler(SchedulerMixin):
    init_noise_sigma = 1.0  # x_T ~ N(0, I): the network sees x_t unscaled

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear",
                 trained_betas: Optional[Union[list, np.ndarray]] = None, solver_order: int = 2,
                 prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, sample_max_value: float = 1.0,
                 predict_x0: bool = True, solver_type: str = "bh2", lower_order_final: bool = True,
                 disable_corrector: List[int] = [], solver_p=None,  # noqa: B006 (diffusers')
                 use_karras_sigmas: Optional[bool] = False,
                 use_exponential_sigmas: Optional[bool] = False,
                 use_beta_sigmas: Optional[bool] = False, use_flow_sigmas: Optional[bool] = False,
                 flow_shift: Optional[float] = 1.0, timestep_spacing: str = "linspace",
                 steps_offset: int = 0, final_sigmas_type: Optional[str] = "zero",
                 rescale_betas_zero_snr: bool = False, use_dynamic_shifting: bool = False,
                 time_shift_type: str = "exponential", sigma_min: Optional[float] = None,
                 sigma_max: Optional[float] = None, shift_terminal: Optional[float] = None):
        self._only_default("solver_p")  # another scheduler as UniP: not in ddlearn
        check_sigma_options(self.config)
        if shift_terminal is not None and not use_flow_sigmas:
            raise ValueError("shift_terminal needs use_flow_sigmas=True (as in diffusers)")
        if solver_type in ("midpoint", "heun", "logrho"):  # DPM-Solver's and DEIS's, as diffusers
            self._register(solver_type="bh2")
        c = self.config
        for name, value, choices in [
                ("solver_order", solver_order, (1, 2, 3)),
                ("prediction_type", prediction_type, FLOW_PREDICTION_TYPES),
                ("solver_type", c.solver_type, ("bh1", "bh2")),
                ("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min")),
                ("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)]:
            check_choice(name, value, choices)
        if prediction_type == "flow_prediction" and not (predict_x0 and use_flow_sigmas):
            raise ValueError("prediction_type='flow_prediction' needs use_flow_sigmas=True and "
                             "predict_x0=True")
        if final_sigmas_type == "zero" and (c.solver_type == "bh1" or not predict_x0
                                            or (solver_order > 1 and not lower_order_final)):
            raise ValueError("UniPC can step to σ = 0 only with predict_x0=True, solver_type='bh2' "
                             "and lower_order_final=True (otherwise the last update is 0·∞ = NaN, "
                             "in diffusers too); pass final_sigmas_type='sigma_min'")
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule,
                                trained_betas, rescale_betas_zero_snr)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        if rescale_betas_zero_snr:
            self.alphas_cumprod[-1] = 2**-24  # ᾱ_T = 0 would make λ_T = -∞
        self.sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float32)
        self._reset_history()

    def _reset_history(self):
        """Forget the multistep history: predictions, warm-up count, last sample, step index."""
        self.model_outputs = [None] * self.config.solver_order
        self.lower_order_nums, self.last_sample, self.this_order = 0, None, 0
        self.step_index = self.begin_index = None

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      sigmas: Optional[List[float]] = None, mu: Optional[float] = None):
        """Choose the N timesteps and their σ_i: interpolated, Karras / exponential / beta over
        [sigma_min, sigma_max], or flow matching's σ (yours, or even in [1, 1/T)) shifted; then
        σ_N. Clears the history."""
        c, T = self.config, self.config.num_train_timesteps
        if c.use_dynamic_shifting and mu is None:
            raise ValueError("use_dynamic_shifting=True needs set_timesteps(..., mu=...)")
        respaced = c.use_karras_sigmas or c.use_exponential_sigmas or c.use_beta_sigmas
        if sigmas is not None and not (c.use_flow_sigmas and not respaced):
            raise ValueError("set_timesteps(sigmas=...) needs use_flow_sigmas=True (as in "
                             "diffusers) without Karras, exponential or beta σ")
        n = len(sigmas) if sigmas is not None else num_inference_steps
        if c.use_flow_sigmas and not respaced:  # x_t = (1 - σ_t) x_0 + σ_t ε
            sigmas = np.linspace(1, 1 / T, n + 1)[:-1] if sigmas is None else np.array(sigmas)
            sigmas = (time_shift(mu, sigmas, c.time_shift_type) if c.use_dynamic_shifting
                      else shifted_sigmas(sigmas, c.flow_shift))
            if c.shift_terminal:  # stretch so that the last σ is shift_terminal
                sigmas = stretch_to_terminal(sigmas, c.shift_terminal)
            if abs(sigmas[0] - 1) < 1e-6:
                sigmas[0] -= 1e-6  # σ = 1 is α = 0: λ = -∞
            timesteps = sigmas * T
        else:
            timesteps, sigmas = multistep_schedule(c, self.alphas_cumprod, n, respacing(c))
            if c.use_flow_sigmas and c.use_karras_sigmas:  # the Karras σ/α as a flow σ
                sigmas = sigmas / (sigmas + 1)
                timesteps = sigmas * T
        sigma_last = 0.0
        if c.final_sigmas_type == "sigma_min":  # the last σ of the schedule, or of training
            sigma_last = (sigmas[-1] if respaced or c.use_flow_sigmas
                          else sigmas_from_alphas_cumprod(self.alphas_cumprod)[0].item())
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [sigma_last]]).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(timesteps)
        self._reset_history()

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """No scaling: the network sees x_t itself."""
        return sample

    def convert_model_output(self, model_output: torch.Tensor, sample: torch.Tensor):
        """The network's output as x̂_0 (predict_x0, thresholded if asked) or as ε̂."""
        c = self.config
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[self.step_index])
        if not c.predict_x0:
            return predict_epsilon(model_output, sample, alpha_t, sigma_t, c.prediction_type)
        x0 = predict_x0(model_output, sample, alpha_t, sigma_t, c.prediction_type)
        if c.thresholding:
            x0 = dynamic_threshold(x0, c.dynamic_thresholding_ratio, c.sample_max_value)
        return x0

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: Optional[torch.Generator] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """Correct x_i with the new prediction (UniC), then predict x_{i+1} (UniP).

        UniPC draws no noise; `generator` is accepted so every scheduler takes the same call.
        """
        check_ready(self)
        self.step_index = current_step_index(self, timestep)
        i, N, c = self.step_index, len(self.timesteps), self.config

        # 1. UniC (Alg. 1): redo x_{i-1} -> x_i with m_i too (free: the network just saw x_i);
        #    it uses the history before m_i joins it, and the previous step's order
        m = self.convert_model_output(model_output, sample)
        if i > 0 and (i - 1) not in c.disable_corrector and self.last_sample is not None:
            sample = self._corrector(m, self.last_sample, self.this_order)

        # 2. history, and the order: warm up, and lower it for the last steps
        self.model_outputs = self.model_outputs[1:] + [m]
        order = min(c.solver_order, N - i) if c.lower_order_final else c.solver_order
        self.this_order = min(order, self.lower_order_nums + 1)
        self.last_sample = sample

        # 3. UniP (Alg. 2): predict x_{i+1}
        prev_sample = self._predictor(sample, self.this_order)
        self.lower_order_nums = min(self.lower_order_nums + 1, c.solver_order)
        self.step_index += 1
        return SchedulerOutput(prev_sample).returned(return_dict)

    def _terms(self, t: int, order: int):
        """Shared by UniP and UniC for a step s0 = t-1 -> t: the r_k, D_k/r_k, B(h), R and b."""
        s0, m = t - 1, self.model_outputs
        h = self._lambda(t) - self._lambda(s0)
        rks, D1s = [], []
        for k in range(1, order):  # earlier steps s0 - k and their predictions
            rk = (self._lambda(s0 - k) - self._lambda(s0)) / h
            rks.append(rk)
            D1s.append((m[-(k + 1)] - m[-1]) / rk)
        rks = torch.stack(rks + [torch.ones(())])
        hh = -h if self.config.predict_x0 else h
        h_phi_1 = torch.expm1(hh)  # h φ_1(h) = e^h - 1
        B_h = hh if self.config.solver_type == "bh1" else torch.expm1(hh)
        h_phi_k, factorial, R, b = h_phi_1 / hh - 1, 1, [], []
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial / B_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial  # h φ_{i+2} = h φ_{i+1} / h - 1/(i+1)!
        D1s = torch.stack(D1s, dim=1) if D1s else None  # K x (B, C, H, W) -> (B, K, C, H, W)
        return h_phi_1, B_h, torch.stack(R), torch.stack(b), D1s

    def _base(self, t: int, x: torch.Tensor, h_phi_1):
        """The first-order (DDIM-like) step s0 -> t and the scale c_m of the correction terms."""
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[t])
        alpha_s0, sigma_s0 = self._alpha_sigma(self.sigmas[t - 1])
        if self.config.predict_x0:  # x_t = σ_t/σ_s x_s - α_t (e^-h - 1) x̂_0
            return sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * self.model_outputs[-1], alpha_t
        return alpha_t / alpha_s0 * x - sigma_t * h_phi_1 * self.model_outputs[-1], sigma_t

    def _predictor(self, x: torch.Tensor, order: int) -> torch.Tensor:
        """UniP-p: x_{i+1} = base - c_m B(h) Σ_k a_k D_k/r_k, with R a = b on the first p-1 rows."""
        t = self.step_index + 1
        h_phi_1, B_h, R, b, D1s = self._terms(t, order)
        x_t, c_m = self._base(t, x, h_phi_1)
        if D1s is None:  # order 1: the DDIM-like step alone
            return x_t.to(x.dtype)
        rhos_p = (torch.ones(1, dtype=x.dtype) * 0.5 if order == 2
                  else torch.linalg.solve(R[:-1, :-1], b[:-1]).to(x.dtype)).to(x.device)
        return (x_t - c_m * B_h * torch.einsum("k,bk...->b...", rhos_p, D1s)).to(x.dtype)

    def _corrector(self, m_t: torch.Tensor, x: torch.Tensor, order: int) -> torch.Tensor:
        """UniC-p: redo the step x_{i-1} -> x_i, now also using the new prediction m_t at x_i."""
        t = self.step_index
        h_phi_1, B_h, R, b, D1s = self._terms(t, order)
        x_t, c_m = self._base(t, x, h_phi_1)
        rhos_c = (torch.ones(1, dtype=x.dtype) * 0.5 if order == 1
                  else torch.linalg.solve(R, b).to(x.dtype)).to(x.device)
        corr = 0 if D1s is None else torch.einsum("k,bk...->b...", rhos_c[:-1], D1s)
        return (x_t - c_m * B_h * (corr + rhos_c[-1] * (m_t - self.model_outputs[-1]))).to(x.dtype)

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
