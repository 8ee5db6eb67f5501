"""Flow matching's Euler sampler: follow a velocity field from noise (σ = 1) to data (σ = 0).

Mirrors `diffusers.FlowMatchEulerDiscreteScheduler`, the sampler of Stable Diffusion 3 and Flux:
same config keys and defaults, timesteps, σ's, `scale_noise` and `step`.

Flow matching (rectified flow) trains the network on the straight path from data to noise,

    x_σ = (1 - σ) x_0 + σ ε,    σ ∈ [0, 1],

to predict its velocity u = dx_σ/dσ = ε - x_0 (diffusers' sign). Sampling integrates
dx/dσ = u_θ(x, σ) from σ = 1 down to 0; one Euler step is x_{i+1} = x_i + (σ_{i+1} - σ_i) u_θ.
If the paths were really straight, one step would land exactly.

| code           | paper (SD3)      | meaning                                                      |
|----------------|------------------|--------------------------------------------------------------|
| `sigmas[i]`    | t_i              | noise level of step i: 1 = pure noise, 0 = data; σ_N = 0     |
| `timesteps[i]` | 1000 t_i         | what the network is told                                     |
| `shift`        | s = √(m/n)       | eq. (23): σ' = sσ / (1 + (s-1)σ), more steps at high noise   |
| `mu`           | log s            | dynamic shifting: μ from the image size (`calculate_shift`)  |
| `model_output` | v_Θ = ε̂ - x̂_0    | the predicted velocity                                       |

References: Lipman et al. 2023, "Flow Matching for Generative Modeling", §4.1 (the optimal
transport path, eq. 20-23); Liu et al. 2023, "Flow Straight and Fast" (rectified flow); Esser et
al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis" (SD3), §2 and
§5.3.2 eq. (23) (timestep shift); Black Forest Labs' Flux (shift from the image size).
"""

from typing import List, Optional

import numpy as np
import torch

from ddlearn.config import register_to_config
from ddlearn.noise import randn_tensor
from ddlearn.schedulers.base import SchedulerMixin
from ddlearn.schedulers.common import (
    SchedulerOutput,
    add_noise,
    check_choice,
    check_timestep_value,
    current_step_index,
    predict_x0,
    sigmas_at,
)
from ddlearn.schedulers.schedules import (
    check_sigma_options,
    respaced_sigmas,
    respacing,
    shifted_sigmas,
    stretch_to_terminal,
    time_shift,
)


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
                    base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """μ for dynamic shifting, linear in the number of latent tokens (diffusers' Flux pipeline):
    base_shift at base_seq_len tokens, max_shift at max_seq_len. Bigger images, more noise."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + (base_shift - m * base_seq_len)


class FlowMatchEulerDiscreteScheduler(SchedulerMixin):
    """Euler steps along the predicted velocity, σ_i -> σ_{i+1} (SD3, Flux)."""

    compatible_family = "flow_match_euler"  # diffusers lists only the class itself

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0,
                 use_dynamic_shifting: bool = False, base_shift: Optional[float] = 0.5,
                 max_shift: Optional[float] = 1.15, base_image_seq_len: int = 256,
                 max_image_seq_len: int = 4096, invert_sigmas: bool = False,
                 shift_terminal: Optional[float] = None, use_karras_sigmas: bool = False,
                 use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False,
                 time_shift_type: str = "exponential", stochastic_sampling: bool = False):
        check_sigma_options(self.config)
        check_choice("time_shift_type", time_shift_type, ("exponential", "linear"))
        T = num_train_timesteps
        # until set_timesteps: σ = 1, (T-1)/T, ..., 1/T (shifted), as diffusers
        sigmas = torch.from_numpy(np.linspace(1, T, T, dtype=np.float32)[::-1].copy()) / T
        if not use_dynamic_shifting:
            sigmas = shifted_sigmas(sigmas, shift)
        self.timesteps, self.sigmas = sigmas * T, sigmas
        self.shift = shift  # set_shift changes it
        self.sigma_min, self.sigma_max = sigmas[-1].item(), sigmas[0].item()

    def set_shift(self, shift: float):
        self.shift = shift

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None,
                      sigmas: Optional[List[float]] = None, mu: Optional[float] = None,
                      timesteps: Optional[List[float]] = None):
        """N σ's from σ_max to σ_min (or yours), shifted (by `shift`, or by μ), optionally
        stretched to `shift_terminal` and re-placed (Karras / exponential / beta); then σ_N."""
        c, T = self.config, self.config.num_train_timesteps
        if c.use_dynamic_shifting and mu is None:
            raise ValueError("use_dynamic_shifting=True needs set_timesteps(..., mu=...): compute "
                             "it from the image size with calculate_shift(image_seq_len)")
        lengths = {len(x) for x in (sigmas, timesteps) if x is not None}
        if len(lengths) > 1 or (num_inference_steps is not None and lengths
                                and lengths != {num_inference_steps}):
            raise ValueError("sigmas, timesteps and num_inference_steps must agree in length")
        n = num_inference_steps if num_inference_steps is not None else lengths.pop()
        for name, values in (("sigmas", sigmas), ("timesteps", timesteps)):
            if values is not None and np.any(np.diff(np.asarray(values, dtype=np.float64)) >= 0):
                raise ValueError(f"{name} must decrease, from noise to data; got {list(values)}")
        self.num_inference_steps = n
        given_timesteps = timesteps is not None

        # 1. the unshifted σ's: yours, from your timesteps, or evenly from σ_max to σ_min
        if given_timesteps:
            timesteps = np.array(timesteps).astype(np.float32)
        if sigmas is None:
            if timesteps is None:
                timesteps = np.linspace(self.sigma_max * T, self.sigma_min * T, n)
            sigmas = timesteps / T
        else:
            sigmas = np.array(sigmas).astype(np.float32)
        # 2. shift (SD3 eq. 23), or the resolution-dependent shift e^μ; stretch; re-place
        sigmas = (time_shift(mu, sigmas, c.time_shift_type) if c.use_dynamic_shifting
                  else shifted_sigmas(sigmas, self.shift))
        if c.shift_terminal:
            sigmas = stretch_to_terminal(sigmas, c.shift_terminal)
        respaced = respaced_sigmas(c, respacing(c), sigmas, n)
        sigmas = torch.from_numpy(sigmas if respaced is None else respaced).to(torch.float32)
        # 3. the timesteps the network sees, and σ_N: 0 (data), or 1 with invert_sigmas
        timesteps = (torch.from_numpy(timesteps).to(torch.float32) if given_timesteps
                     else sigmas * T)
        last = torch.zeros(1)
        if c.invert_sigmas:
            sigmas = 1.0 - sigmas
            timesteps, last = sigmas * T, torch.ones(1)
        self.timesteps = timesteps.to(device)
        self.sigmas = torch.cat([sigmas, last])
        self.step_index = self.begin_index = None

    def scale_noise(self, sample: torch.Tensor, timestep, noise: torch.Tensor) -> torch.Tensor:
        """The forward process: x_σ = (1 - σ) x_0 + σ ε, σ of each timestep (B,) in the
        schedule (img2img: from begin_index)."""
        sigma = sigmas_at(self, torch.as_tensor(timestep), sample)
        return add_noise(sample, noise, 1.0 - sigma, sigma)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
             s_noise: float = 1.0, generator: Optional[torch.Generator] = None,
             per_token_timesteps: Optional[torch.Tensor] = None,
             return_dict: bool = True) -> SchedulerOutput:
        """One Euler step σ_i -> σ_{i+1} along the predicted velocity. (diffusers takes the
        s_churn, s_tmin, s_tmax, s_noise of Euler's signature and ignores them; so does this.)"""
        check_timestep_value(timestep)
        if per_token_timesteps is not None:  # (diffusers' video models give tokens own σ's)
            raise NotImplementedError("FlowMatchEulerDiscreteScheduler.step: per_token_timesteps "
                                      "is a diffusers feature ddlearn does not implement; every "
                                      "token shares the step's σ")
        self.step_index = current_step_index(self, timestep)
        sample = sample.to(torch.float32)  # upcast, as diffusers does
        sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]

        if self.config.stochastic_sampling:
            # 1'. jump to x̂_0 = x - σ u, then noise it afresh to σ_{i+1}
            x0 = predict_x0(model_output, sample, 1 - sigma, sigma, "flow_prediction")
            noise = randn_tensor(sample.shape, generator, device=sample.device, dtype=sample.dtype)
            prev_sample = (1.0 - sigma_next) * x0 + sigma_next * noise
        else:
            # 1. Euler: x_{i+1} = x_i + (σ_{i+1} - σ_i) u_θ(x_i, σ_i)
            prev_sample = sample + (sigma_next - sigma) * model_output
        self.step_index += 1
        return SchedulerOutput(prev_sample.to(model_output.dtype)).returned(return_dict)
