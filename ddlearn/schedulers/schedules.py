"""How the schedulers choose their schedule: β and ᾱ, the timesteps to visit, the σ at each.

Pure functions shared by the schedulers' `__init__` and `set_timesteps`, in the order they are
used: 1. the training noise schedule β_1..β_T; 2. which of the T timesteps a sampler visits; 3.
the σ schedules of the σ samplers (Euler, Heun, LMS) and of the multistep solvers (DPM-Solver,
UniPC): interpolated, Karras, exponential, beta, even in λ, or flow matching's shifted σ.

| code                | paper             | meaning                                             |
|---------------------|-------------------|-----------------------------------------------------|
| `betas[t]`          | β_t               | variance of the noise added at forward step t       |
| `alphas_cumprod[t]` | ᾱ_t = Π (1 - β_s) | signal kept: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (DDPM (4)) |
| `sigmas[i]`         | σ_i = σ_t/α_t     | √((1-ᾱ_t)/ᾱ_t) at the i-th inference timestep       |
| `rho`               | ρ                 | Karras' exponent (7)                                |
| `shift`, `mu`       | s, μ              | flow matching's timestep shift, e^μ when dynamic    |

References: Nichol & Dhariwal 2021 eq. (17) (cosine schedule); Lin et al. 2023, "Common
Diffusion Noise Schedules and Sample Steps are Flawed", Table 2 (spacings) and Alg. 1 (zero
terminal SNR); Karras et al. 2022 ("EDM") eq. (5); Lu et al. 2022 ("DPM-Solver", λ-uniform
steps); Lee et al. 2024, "Beta Sampling is All You Need" (beta σ); Esser et al. 2024 ("SD3")
eq. (23) (shift).
"""

import math
from typing import Optional

import numpy as np
import torch

from ddlearn.schedulers.common import check_choice

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


# 1. β and ᾱ -----------------------------------------------------------------------------------
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
    return 1 - torch.cat([abar[0:1], abar[1:] / abar[:-1]])


# 2. timestep spacing ----------------------------------------------------------------------------
def spaced_timesteps(n: int, T: int, spacing: str, steps_offset: int = 0, *, points=None,
                     last=None, integer: bool = True) -> np.ndarray:
    """t_1 > ... > t_n by one of Lin et al. 2023's spacings (Table 2): "linspace" (both ends),
    "leading" (multiples of a stride, from 0, + steps_offset), "trailing" (ends at T-1).

    `points`: how many points linspace/leading lay out before keeping the first n (the multistep
    solvers lay out n + 1 and drop t = 0); `last`: one past the largest (T, or less when
    DPM-Solver clips λ); `integer=False`: the σ samplers' float timesteps (linspace unrounded).
    """
    if not 1 <= n <= T:
        raise ValueError(f"num_inference_steps={n} must be between 1 and num_train_timesteps={T}: "
                         f"a sampler cannot take more steps than the model was trained on")
    points, last = points or n, last or T
    if spacing == "linspace":
        t = np.linspace(0, last - 1, points)[::-1][:n]
        return t.round().astype(np.int64) if integer else t.astype(np.float32)
    if spacing == "leading":
        t = (np.arange(0, points) * (last // points))[::-1][:n] + steps_offset
    else:
        check_choice("timestep_spacing", spacing, TIMESTEP_SPACINGS)
        t = np.arange(last, 0, -T / n).round() - 1
    return t.astype(np.int64 if integer else np.float32)


def check_distinct_timesteps(timesteps: np.ndarray, timestep_spacing: str):
    """A multistep solver divides by the step h = λ_{i+1} - λ_i: a repeated timestep makes h = 0."""
    if len(np.unique(timesteps)) < len(timesteps):
        raise ValueError(f"num_inference_steps={len(timesteps)} with timestep_spacing="
                         f"{timestep_spacing!r} rounds two steps to the same timestep, and a step "
                         f"of size zero gives NaN (diffusers returns NaN or fails); take fewer "
                         f"steps, or use timestep_spacing='trailing' or use_karras_sigmas=True")


# 3. σ schedules ---------------------------------------------------------------------------------
def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1-ᾱ_t)/ᾱ_t) for every training step, small to large."""
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def respacing(config) -> Optional[str]:
    """The σ placement a config asks for: "karras", "exponential", "beta", or None (interpolate
    the training σ). Only for classes whose own keys include all three flags: a flag kept from
    another scheduler's config must not switch it on (diffusers' Euler ancestral has none)."""
    for kind in ("karras", "exponential", "beta"):
        if config[f"use_{kind}_sigmas"]:
            return kind
    return None


def respaced_sigmas(config, kind: Optional[str], sigmas: np.ndarray, n: int):
    """n σ's from σ_max down to σ_min placed by `kind`, or None to keep `sigmas`.

    Karras (EDM eq. 5, ρ = 7), exponential (even in log σ), beta-distributed (Lee et al. 2024,
    α = β = 0.6). The range is the config's sigma_min/sigma_max where it has them (also as keys
    kept from another scheduler's config, as diffusers reads them), else the ends of `sigmas`
    (descending).
    """
    low = config.get("sigma_min") if config.get("sigma_min") is not None else sigmas[-1].item()
    high = config.get("sigma_max") if config.get("sigma_max") is not None else sigmas[0].item()
    if kind == "karras":
        rho, ramp = 7.0, np.linspace(0, 1, n)
        return (high ** (1 / rho) + ramp * (low ** (1 / rho) - high ** (1 / rho))) ** rho
    if kind == "exponential":
        return np.exp(np.linspace(math.log(high), math.log(low), n))
    if kind == "beta":
        import scipy.stats  # checked by check_sigma_options
        ppf = [scipy.stats.beta.ppf(u, 0.6, 0.6) for u in 1 - np.linspace(0, 1, n)]
        return np.array([low + p * (high - low) for p in ppf])
    return None


def check_sigma_options(config):
    """At most one σ placement; scipy for beta σ; a sensible [sigma_min, sigma_max]."""
    chosen = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
              if config.get(k)]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} are all set: choose one σ schedule")
    if config.get("use_beta_sigmas"):
        try:
            import scipy.stats  # noqa: F401
        except ImportError:
            raise ImportError("use_beta_sigmas=True needs scipy: pip install scipy") from None
    low, high = config.get("sigma_min"), config.get("sigma_max")
    if any(s is not None and s <= 0 for s in (low, high)) or (None not in (low, high)
                                                             and low >= high):
        raise ValueError(f"sigma_min={low}, sigma_max={high}: a σ schedule needs 0 < sigma_min "
                         f"< sigma_max; pass None to keep the training range")


def sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """The (fractional) training timestep whose σ equals `sigma`, interpolating in log σ."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low_idx = np.cumsum((dists >= 0), axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    low, high = log_sigmas[low_idx], log_sigmas[low_idx + 1]
    w = np.clip((low - log_sigma) / (low - high), 0, 1)
    return ((1 - w) * low_idx + w * (low_idx + 1)).reshape(sigma.shape)


def sigma_schedule(config, alphas_cumprod, n: int, timesteps=None, respace=None,
                   log_linear=False):
    """-> (timesteps, σ's) of n steps for the σ samplers (Euler, Heun, LMS): timesteps by the
    config's spacing (or yours), the training σ interpolated at them (`log_linear`: n + 1 σ's
    even in log σ, as diffusers), then σ placed by `respace` (see `respacing`) and their
    timesteps."""
    train_sigmas = sigmas_from_alphas_cumprod(alphas_cumprod).numpy()  # small to large
    if timesteps is None:  # not rounded: σ is interpolated between training steps
        timesteps = spaced_timesteps(n, config.num_train_timesteps, config.timestep_spacing,
                                     config.steps_offset, integer=False)
    timesteps = np.asarray(timesteps, dtype=np.float32)
    if log_linear:
        log_sigmas = torch.linspace(np.log(train_sigmas[-1]), np.log(train_sigmas[0]), n + 1)
        sigmas = log_sigmas.exp().numpy()
    else:
        sigmas = np.interp(timesteps, np.arange(0, len(train_sigmas)), train_sigmas)
    respaced = respaced_sigmas(config, respace, sigmas, n)
    if respaced is None:
        return timesteps, sigmas
    return sigma_to_t(respaced, np.log(train_sigmas)), respaced


def multistep_schedule(config, alphas_cumprod, n: int, respace=None, last=None,
                       round_respaced=True):
    """-> (timesteps, σ's) of n steps for DPM-Solver and UniPC: n of n + 1 spaced timesteps (t = 0
    dropped) and their interpolated σ; or σ placed by `respace` over the training range (also
    "lu": even in λ = -log σ, Lu et al. 2022), with the timesteps of those σ (rounded for
    Karras and λ when `round_respaced`, as diffusers)."""
    train_sigmas = sigmas_from_alphas_cumprod(alphas_cumprod).numpy()  # small to large
    log_sigmas = np.log(train_sigmas)
    timesteps = spaced_timesteps(n, config.num_train_timesteps, config.timestep_spacing,
                                 config.steps_offset, points=n + 1, last=last)
    if respace == "lu":
        ramp = np.linspace(0, 1, n)  # log σ from high to low, evenly
        respaced = np.exp(log_sigmas[-1] + ramp * (log_sigmas[0] - log_sigmas[-1]))
    else:
        respaced = respaced_sigmas(config, respace, train_sigmas[::-1], n)
    if respaced is None:
        check_distinct_timesteps(timesteps, config.timestep_spacing)
        return timesteps, np.interp(timesteps, np.arange(0, len(train_sigmas)), train_sigmas)
    timesteps = sigma_to_t(respaced, log_sigmas)
    rounded = respace in ("karras", "lu") and round_respaced
    return (timesteps.round() if rounded else timesteps), respaced


def shifted_sigmas(sigmas, shift: float):
    """Flow matching's timestep shift (Esser et al. 2024, "SD3", eq. 23): σ' = s σ / (1 + (s-1) σ);
    s > 1 spends more of the steps at high noise."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def time_shift(mu: float, sigmas, kind: str = "exponential"):
    """The resolution-dependent shift of dynamic shifting (Flux): σ' = e^μ / (e^μ + 1/σ - 1), or
    with kind="linear", μ / (μ + 1/σ - 1)."""
    shift = math.exp(mu) if kind == "exponential" else mu
    return shift / (shift + (1 / sigmas - 1))


def stretch_to_terminal(sigmas, terminal: float):
    """Stretch a flow schedule so that its last σ is `terminal` (diffusers' shift_terminal):
    1 - σ scaled so that 1 - σ_last = 1 - terminal."""
    one_minus = 1 - sigmas
    if one_minus[-1] == 0:  # one step, at σ = 1: nothing to stretch (diffusers divides by 0)
        raise ValueError(f"shift_terminal={terminal} needs a schedule that ends below σ = 1; "
                         f"take at least 2 steps")
    return 1 - one_minus / (one_minus[-1] / (1 - terminal))


def init_noise_sigma(sigmas: torch.Tensor, timestep_spacing: str) -> torch.Tensor:
    """Std of x_T for the σ samplers: σ_max, or √(σ_max² + 1) when "leading" never reaches T-1."""
    if timestep_spacing in ("linspace", "trailing"):
        return sigmas.max()
    return (sigmas.max() ** 2 + 1) ** 0.5
