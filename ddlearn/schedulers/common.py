"""What every scheduler shares: beta schedules, the forward process q(x_t | x_0), sigma helpers.

Three families build on `SchedulerMixin`, each with what its members share in one file:
`alpha_space.py` (DDPM, DDIM, PNDM: step x_t at integer timesteps), `sigma_space.py` (Euler, Euler
ancestral, Heun, LMS: integrate in σ) and `lambda_space.py` (DPM-Solver, UniPC: multistep in λ).

Notation (Ho et al. 2020, "DDPM"; Karras et al. 2022, "EDM"):

| code                | paper         | meaning                                                 |
|---------------------|---------------|---------------------------------------------------------|
| `betas[t]`          | β_t           | variance of the noise added at forward step t           |
| `alphas[t]`         | α_t = 1 - β_t |                                                         |
| `alphas_cumprod[t]` | ᾱ_t = Π α_s   | signal kept: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε                |
| `sigmas`            | σ_t           | noise/signal √((1-ᾱ_t)/ᾱ_t): x_t/√ᾱ_t = x_0 + σ_t ε     |

References: DDPM eq. (4) for q(x_t|x_0); Nichol & Dhariwal 2021 eq. (17) for the cosine schedule;
Lin et al. 2023 "Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1
(zero terminal SNR);
EDM eq. (5) for Karras sigmas.
"""

import math
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch

from ddlearn.config import ConfigMixin, init_parameters
from ddlearn.hub import resolve_folder
from ddlearn.noise import randn_tensor
from ddlearn.options import hub_options, refuse_unsupported, unexpected

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


class SchedulerOutput(NamedTuple):
    """What `step()` returns; unpacks like a tuple: `prev_sample, pred_x0 = scheduler.step(...)`."""

    prev_sample: torch.Tensor
    pred_original_sample: Optional[torch.Tensor] = None

    def returned(self, return_dict: bool = True):
        """Itself, or with `return_dict=False` the plain tuple diffusers returns:
        `(prev_sample, pred_original_sample)`, or `(prev_sample,)` for schedulers without x̂_0."""
        if return_dict:
            return self
        return tuple(v for v in self if v is not None)


# --------------------------------------------------------------------------------------------------
# Beta schedules
# --------------------------------------------------------------------------------------------------
def make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas=None,
               rescale_betas_zero_snr=False) -> torch.Tensor:
    """β_1..β_T as float32, exactly as diffusers computes them."""
    T = num_train_timesteps
    if trained_betas is not None:
        betas = torch.tensor(trained_betas, dtype=torch.float32)
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":  # linear in √β: Stable Diffusion's schedule
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    elif beta_schedule == "squaredcos_cap_v2":  # ᾱ(t) = cos²((t + s)/(1 + s) · π/2), s = 0.008
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999)
                              for i in range(T)], dtype=torch.float32)
    else:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}; choose one of {BETA_SCHEDULES}")
    return rescale_zero_terminal_snr(betas) if rescale_betas_zero_snr else betas


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale √ᾱ_t so that √ᾱ_T = 0 (pure noise at t=T), √ᾱ_1 unchanged (Alg. 1)."""
    sqrt_abar = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar**2
    alphas = torch.cat([abar[0:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(choices)}")


def check_num_inference_steps(num_inference_steps: int, num_train_timesteps: int):
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps={num_inference_steps} must be between 1 and "
                         f"num_train_timesteps={num_train_timesteps}: a sampler cannot take more "
                         f"steps than the model was trained on")


# --------------------------------------------------------------------------------------------------
# Sigma helpers for the σ-space schedulers (Euler, Heun, LMS, DPM-Solver, UniPC)
# --------------------------------------------------------------------------------------------------
def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """EDM eq. (5): σ_i = (σ_max^(1/ρ) + i/(n-1) (σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ."""
    ramp = np.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """The (fractional) training timestep whose σ equals `sigma`, interpolating in log σ."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low_idx = np.cumsum((dists >= 0), axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low, high = log_sigmas[low_idx], log_sigmas[high_idx]
    w = np.clip((low - log_sigma) / (low - high), 0, 1)
    return ((1 - w) * low_idx + w * high_idx).reshape(sigma.shape)


def broadcast_to(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) so per-sample coefficients multiply a batch of images."""
    values = values.flatten()
    return values.reshape(values.shape[0], *([1] * (x.ndim - 1)))


# --------------------------------------------------------------------------------------------------
# The base every scheduler builds on
# --------------------------------------------------------------------------------------------------
class SchedulerMixin(ConfigMixin):
    """Shared contract: `config`, `from_config`, `from_pretrained`, `save_pretrained`, `add_noise`,
    `get_velocity`, `len(scheduler)`.

    Subclasses set `self.alphas_cumprod` in `__init__` and `self.timesteps` in `set_timesteps`.
    """

    config_name = "scheduler_config.json"
    order = 1
    num_inference_steps = None

    def __len__(self):
        return self.config.num_train_timesteps

    @classmethod
    def from_pretrained(cls, path_or_repo_id, subfolder=None, return_unused_kwargs=False,
                        **kwargs):
        """Read `scheduler_config.json` from a folder or a Hub id, as diffusers does, e.g.
        `DDIMScheduler.from_pretrained(model_id, subfolder="scheduler")`. Hub options go to
        huggingface_hub; other keywords override config keys (`timestep_spacing="trailing"`)."""
        where = f"{cls.__name__}.from_pretrained"
        hub = hub_options(kwargs)
        refuse_unsupported(where, kwargs)
        for name in kwargs:
            if name not in init_parameters(cls):
                raise unexpected(where, name, ["subfolder", "return_unused_kwargs",
                                               *init_parameters(cls)], loading=True)
        folder = resolve_folder(path_or_repo_id, subfolder, **hub)
        scheduler = cls.from_config(cls.load_config(folder), **kwargs)
        return (scheduler, {}) if return_unused_kwargs else scheduler

    def save_pretrained(self, save_directory, push_to_hub: bool = False) -> Path:
        """Write `<save_directory>/scheduler_config.json` (atomically); returns its path."""
        refuse_unsupported(f"{type(self).__name__}.save_pretrained", {"push_to_hub": push_to_hub})
        return self.save_config(save_directory)

    @classmethod
    def compatible_classes(cls) -> tuple:
        """Every ddlearn scheduler: any of them can be built from another's config."""
        found, todo = [], [SchedulerMixin]
        while todo:
            subclasses = todo.pop().__subclasses__()
            found += [c for c in subclasses if "step" in vars(c)]
            todo += subclasses
        return tuple(found)

    @property
    def compatibles(self) -> list:
        """The schedulers that can be built from this one's config, itself included (as in
        diffusers): `pipe.scheduler = Other.from_config(pipe.scheduler.config)`."""
        return list(self.compatible_classes())

    def _check_ready(self):
        if self.num_inference_steps is None:
            raise ValueError(f"{type(self).__name__}.step() was called before set_timesteps(); "
                             f"call `scheduler.set_timesteps(num_inference_steps)` first")

    def add_noise(self, original_samples, noise, timesteps) -> torch.Tensor:
        """Forward process, DDPM eq. (4): x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε."""
        abar = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)
        abar_t = broadcast_to(abar[timesteps.to(original_samples.device)], original_samples)
        return abar_t**0.5 * original_samples + (1 - abar_t) ** 0.5 * noise

    def get_velocity(self, sample, noise, timesteps) -> torch.Tensor:
        """v-prediction target (Salimans & Ho 2022, §4): v = √ᾱ_t ε - √(1-ᾱ_t) x_0."""
        abar = self.alphas_cumprod.to(device=sample.device, dtype=sample.dtype)
        abar_t = broadcast_to(abar[timesteps.to(sample.device)], sample)
        return abar_t**0.5 * noise - (1 - abar_t) ** 0.5 * sample


# --------------------------------------------------------------------------------------------------
# Shared by several samplers
# --------------------------------------------------------------------------------------------------
def index_for_timestep(schedule: torch.Tensor, timestep) -> int:
    """Where `timestep` sits in `schedule`: the 2nd match if it appears twice (img2img)."""
    matches = (schedule == torch.as_tensor(timestep).to(schedule.device)).nonzero()
    if len(matches) == 0:
        raise ValueError(f"timestep {timestep} is not one of scheduler.timesteps; loop over "
                         f"`scheduler.timesteps` and pass those values to step()")
    return matches[1 if len(matches) > 1 else 0].item()


def sigmas_at(scheduler, timesteps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """σ of each of `timesteps` (B,) in the inference schedule, as (B, 1, 1, 1) in x's dtype."""
    steps = [index_for_timestep(scheduler.timesteps, t) for t in timesteps.flatten()]
    return broadcast_to(scheduler.sigmas.to(device=x.device, dtype=x.dtype)[steps], x)


def randn_like_output(x: torch.Tensor, generator=None, dtype=None) -> torch.Tensor:
    """N(0, I) noise shaped like x, drawn exactly as diffusers' `randn_tensor` draws it (one
    generator, or a list with one per sample)."""
    return randn_tensor(x.shape, generator, device=x.device, dtype=dtype or x.dtype)


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, §2.3) of a predicted x_0, per sample.

    s = the `ratio` quantile of |x_0|, clamped to [1, max_value]; x_0 <- clamp(x_0, -s, s) / s.
    """
    dtype, (B, *rest) = x0.dtype, x0.shape
    flat = x0.reshape(B, -1)  # (B, C, H, W) -> (B, C*H*W)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # quantile needs float32/64
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)
    return (torch.clamp(flat, -s, s) / s).reshape(B, *rest).to(dtype)


# --------------------------------------------------------------------------------------------------
# The Karras σ range, and σ from ᾱ
# --------------------------------------------------------------------------------------------------
def check_sigma_range(sigma_min: Optional[float], sigma_max: Optional[float]):
    """The config's Karras σ range, when given, must be 0 < sigma_min < sigma_max."""
    given = [s for s in (sigma_min, sigma_max) if s is not None]
    if any(s <= 0 for s in given) or (len(given) == 2 and sigma_min >= sigma_max):
        raise ValueError(f"sigma_min={sigma_min}, sigma_max={sigma_max}: the Karras σ schedule "
                         f"needs 0 < sigma_min < sigma_max; pass None to keep the training range")


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1-ᾱ_t)/ᾱ_t) for every training step: the noise level in x_t/√ᾱ_t = x_0 + σ_t ε."""
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
