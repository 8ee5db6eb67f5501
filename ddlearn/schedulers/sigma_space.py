"""What the σ-space samplers (Euler, Euler ancestral, Heun, LMS) share: their σ schedule.

They integrate in x/√ᾱ = x_0 + σ ε (Karras et al. 2022, "EDM"), where σ_t = √((1-ᾱ_t)/ᾱ_t), from
σ_max down to σ_N = 0, and scale their input by 1/√(σ²+1) so the network sees the unit-variance x_t
it was trained on. Timesteps are floats: σ is interpolated between training steps.

| code             | paper | meaning                                                          |
|------------------|-------|------------------------------------------------------------------|
| `sigmas[i]`      | σ_i   | noise level at the i-th inference timestep; `sigmas[-1]` = 0     |
| `timesteps[i]`   | t_i   | the (float) training timestep whose σ is σ_i                     |

References: Karras et al. 2022, eq. (5) (Karras σ); Lin et al. 2023, Table 2 (timestep spacings)
and Alg. 1 (zero terminal SNR).
"""

import numpy as np
import torch

from ddlearn.schedulers.common import (
    TIMESTEP_SPACINGS,
    SchedulerMixin,
    check_choice,
    check_num_inference_steps,
    index_for_timestep,
    karras_sigmas,
    sigma_to_t,
    sigmas_from_alphas_cumprod,
)


def sigma_timesteps(num_inference_steps: int, num_train_timesteps: int, timestep_spacing: str,
                    steps_offset: int = 0) -> np.ndarray:
    """Float timesteps t_1 > ... > t_N of the σ-space samplers.

    Lin et al. 2023, Table 2: "linspace" keeps both ends, "leading" starts at 0,
    "trailing" ends at T-1.
    """
    n, T = num_inference_steps, num_train_timesteps
    if timestep_spacing == "linspace":  # not rounded: σ is interpolated between training steps
        return np.linspace(0, T - 1, n, dtype=np.float32)[::-1].copy()
    if timestep_spacing == "leading":
        return (np.arange(0, n) * (T // n)).round()[::-1].astype(np.float32) + steps_offset
    check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
    return np.arange(T, 0, -T / n).round().astype(np.float32) - 1  # "trailing"


class SigmaSchedulerMixin(SchedulerMixin):
    """What the σ-space schedulers (Euler, Euler ancestral, Heun, LMS) share."""

    def _init_schedule(self, betas, rescale_betas_zero_snr=False, timesteps_dtype=torch.float32):
        """ᾱ from β, and the σ's and timesteps of every training step (used until set_timesteps)."""
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        if rescale_betas_zero_snr:
            self.alphas_cumprod[-1] = 2**-24  # ᾱ_T = 0 would make σ_T infinite
        train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)  # σ from large to small
        self.sigmas = torch.cat([train_sigmas.flip(0), torch.zeros(1)])
        T = len(betas)
        self.timesteps = torch.arange(T - 1, -1, -1, dtype=timesteps_dtype)

    def _sigma_schedule(self, n: int, karras=False, sigma_min=None, sigma_max=None):
        """-> (timesteps, σ's) of n inference steps: timesteps by `config.timestep_spacing` and
        the training σ interpolated at them; with `karras`, EDM eq. (5) over [σ_min, σ_max]
        (default: the schedule's ends) and the timesteps of those σ."""
        c = self.config
        check_num_inference_steps(n, c.num_train_timesteps)
        timesteps = sigma_timesteps(n, c.num_train_timesteps, c.timestep_spacing, c.steps_offset)
        train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod).numpy()
        sigmas = np.interp(timesteps, np.arange(0, len(train_sigmas)), train_sigmas)
        if karras:
            low = sigmas[-1].item() if sigma_min is None else sigma_min
            high = sigmas[0].item() if sigma_max is None else sigma_max
            sigmas = karras_sigmas(low, high, len(timesteps))
            timesteps = sigma_to_t(sigmas, np.log(train_sigmas))
        return timesteps, sigmas

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        """x_t / √(σ² + 1): the unit-variance input the network was trained on (EDM c_in)."""
        if self.step_index is None:
            self.step_index = index_for_timestep(self.timesteps, timestep)
        return sample / ((self.sigmas[self.step_index] ** 2 + 1) ** 0.5)

    @staticmethod
    def _check_timestep_value(timestep):
        """step() looks σ up by the timestep's value: an integer loop index is a mistake."""
        if isinstance(timestep, int) or (torch.is_tensor(timestep)
                                         and not timestep.is_floating_point()):
            raise ValueError("pass a value of `scheduler.timesteps` as timestep, not an integer "
                             "index (e.g. from enumerate)")

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        """Std of x_T: σ_max, or √(σ_max² + 1) when "leading" spacing never reaches t = T-1."""
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return self.sigmas.max()
        return (self.sigmas.max() ** 2 + 1) ** 0.5
