"""What several schedulers compute the same way, as pure functions; and what `step()` returns.

Each scheduler file holds its whole story (`__init__`, `set_timesteps`, `scale_model_input`,
`step`); whatever two or more of them share is a function here, in the order a sampler uses it:
1. β and ᾱ; 2. timestep spacing; 3. σ schedules; 4. the network's output -> x̂_0 or ε̂, and
`add_noise`; 5. where in the schedule a step is, and thresholding.

One forward process, two ways of writing it: VP, x_t = α_t x_0 + σ_t ε (DDPM, DDIM, PNDM with
α_t = √ᾱ_t, σ_t = √(1-ᾱ_t); DPM-Solver and UniPC with α_t = 1/√(1+σ²), σ_t = σ α_t), and the
σ form x_t/α_t = x_0 + σ ε of Karras et al. (Euler, Euler ancestral, Heun, LMS).

| code                | paper             | meaning                                             |
|---------------------|-------------------|-----------------------------------------------------|
| `betas[t]`          | β_t               | variance of the noise added at forward step t       |
| `alphas_cumprod[t]` | ᾱ_t = Π (1 - β_s) | signal kept: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (DDPM (4)) |
| `sigma`             | σ = σ_t/α_t       | noise-to-signal ratio √((1-ᾱ_t)/ᾱ_t)                |
| `alpha_t, sigma_t`  | α_t, σ_t          | VP coefficients, α_t² + σ_t² = 1                    |
| `c_skip`, `c_out`   | c_skip, c_out     | D(x; σ) = c_skip x + c_out F(x) (EDM Table 1)       |

References: Ho et al. 2020 ("DDPM") eq. (4), (15); Nichol & Dhariwal 2021 eq. (17) (cosine
schedule); Lin et al. 2023, Table 2 (spacings) and Alg. 1 (zero terminal SNR); Karras et al.
2022 ("EDM") eq. (5) and Table 1; Salimans & Ho 2022 §4 (v-prediction); Saharia et al. 2022
(Imagen) §2.3 (dynamic thresholding); Lipman et al. 2023 (flow matching: α_t = 1 - σ_t).
"""

import math
from typing import NamedTuple, Optional

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


class SchedulerOutput(NamedTuple):
    """What `step()` returns; unpacks like a tuple: `prev_sample, pred_x0 = scheduler.step(...)`."""

    prev_sample: torch.Tensor
    pred_original_sample: Optional[torch.Tensor] = None

    def returned(self, return_dict: bool = True):
        """Itself, or with `return_dict=False` the plain tuple diffusers returns."""
        return self if return_dict else tuple(v for v in self if v is not None)


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(choices)}")


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


def respaced_sigmas(config, sigmas: np.ndarray, n: int) -> Optional[np.ndarray]:
    """n σ's from σ_max down to σ_min, placed as the config asks, or None to keep `sigmas`.

    Karras (EDM eq. 5, ρ = 7), exponential (even in log σ) or beta-distributed (Lee et al.
    2024, α = β = 0.6). The range is the config's sigma_min/sigma_max where it has them (also
    as keys kept from another scheduler's config, as diffusers reads them), else the ends of
    `sigmas` (descending).
    """
    low = config.get("sigma_min") if config.get("sigma_min") is not None else sigmas[-1].item()
    high = config.get("sigma_max") if config.get("sigma_max") is not None else sigmas[0].item()
    if config.get("use_karras_sigmas"):
        rho, ramp = 7.0, np.linspace(0, 1, n)
        return (high ** (1 / rho) + ramp * (low ** (1 / rho) - high ** (1 / rho))) ** rho
    if config.get("use_exponential_sigmas"):
        return np.exp(np.linspace(math.log(high), math.log(low), n))
    if config.get("use_beta_sigmas"):
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


def sigma_schedule(config, alphas_cumprod, n: int, timesteps=None):
    """-> (timesteps, σ's) of n steps for the σ samplers (Euler, Heun, LMS): timesteps by the
    config's spacing (or yours), the training σ interpolated at them (or, "log_linear", n + 1 σ's
    even in log σ, as diffusers), then Karras / exponential / beta σ and their timesteps if
    the config asks."""
    train_sigmas = sigmas_from_alphas_cumprod(alphas_cumprod).numpy()  # small to large
    if timesteps is None:  # not rounded: σ is interpolated between training steps
        timesteps = spaced_timesteps(n, config.num_train_timesteps, config.timestep_spacing,
                                     config.steps_offset, integer=False)
    timesteps = np.asarray(timesteps, dtype=np.float32)
    if config.get("interpolation_type") == "log_linear":
        log_sigmas = torch.linspace(np.log(train_sigmas[-1]), np.log(train_sigmas[0]), n + 1)
        sigmas = log_sigmas.exp().numpy()
    else:
        sigmas = np.interp(timesteps, np.arange(0, len(train_sigmas)), train_sigmas)
    respaced = respaced_sigmas(config, sigmas, n)
    if respaced is None:
        return timesteps, sigmas
    return sigma_to_t(respaced, np.log(train_sigmas)), respaced


def multistep_schedule(config, alphas_cumprod, n: int, last=None, round_respaced=True):
    """-> (timesteps, σ's) of n steps for DPM-Solver and UniPC: n of n + 1 spaced timesteps (t = 0
    dropped) and their interpolated σ; or Karras / exponential / beta σ, or σ even in λ = -log σ
    (`use_lu_lambdas`, Lu et al. 2022), over the training range, with the timesteps of those σ
    (rounded for Karras and λ when `round_respaced`, as diffusers)."""
    train_sigmas = sigmas_from_alphas_cumprod(alphas_cumprod).numpy()  # small to large
    log_sigmas = np.log(train_sigmas)
    timesteps = spaced_timesteps(n, config.num_train_timesteps, config.timestep_spacing,
                                 config.steps_offset, points=n + 1, last=last)
    if config.get("use_lu_lambdas") and not config.get("use_karras_sigmas"):
        ramp = np.linspace(0, 1, n)  # log σ from high to low, evenly
        respaced = np.exp(log_sigmas[-1] + ramp * (log_sigmas[0] - log_sigmas[-1]))
    else:
        respaced = respaced_sigmas(config, train_sigmas[::-1], n)
    if respaced is None:
        check_distinct_timesteps(timesteps, config.timestep_spacing)
        return timesteps, np.interp(timesteps, np.arange(0, len(train_sigmas)), train_sigmas)
    timesteps = sigma_to_t(respaced, log_sigmas)
    rounded = config.get("use_karras_sigmas") or config.get("use_lu_lambdas")
    return (timesteps.round() if rounded and round_respaced else timesteps), respaced


def init_noise_sigma(sigmas: torch.Tensor, timestep_spacing: str) -> torch.Tensor:
    """Std of x_T for the σ samplers: σ_max, or √(σ_max² + 1) when "leading" never reaches T-1."""
    if timestep_spacing in ("linspace", "trailing"):
        return sigmas.max()
    return (sigmas.max() ** 2 + 1) ** 0.5


# 4. the network's output, and the forward process -------------------------------------------------
def alpha_sigma(sigma, flow: bool = False):
    """(α_t, σ_t) from the ratio σ = σ_t/α_t: VP, α_t = 1/√(1+σ²); or flow matching's straight
    path x_t = (1 - σ) x_0 + σ ε, where `sigma` is σ_t itself."""
    if flow:
        return 1 - sigma, sigma
    alpha_t = 1 / ((sigma**2 + 1) ** 0.5)
    return alpha_t, sigma * alpha_t


def predict_x0(model_output, sample, alpha_t, sigma_t, prediction_type: str) -> torch.Tensor:
    """x̂_0 from x_t = α_t x_0 + σ_t ε and the network's ε̂ (DDPM eq. 15), v̂ = α_t ε - σ_t x_0,
    x̂_0 itself, or a flow velocity u = ε - x_0."""
    if prediction_type == "epsilon":
        return (sample - sigma_t * model_output) / alpha_t
    if prediction_type == "v_prediction":
        return alpha_t * sample - sigma_t * model_output
    if prediction_type == "flow_prediction":
        return sample - sigma_t * model_output
    return model_output  # "sample"


def predict_epsilon(model_output, sample, alpha_t, sigma_t, prediction_type: str) -> torch.Tensor:
    """ε̂ from x_t = α_t x_0 + σ_t ε and the network's ε̂, v̂ or x̂_0."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return alpha_t * model_output + sigma_t * sample
    return (sample - alpha_t * model_output) / sigma_t  # "sample"


def denoise(model_output, sample, sigma, prediction_type: str) -> torch.Tensor:
    """D(x; σ) = c_skip x + c_out F(x) for x = x_0 + σ ε (EDM eq. 7, Table 1): the x̂_0 of the σ
    samplers, whose network saw x/√(σ²+1)."""
    if prediction_type == "epsilon":  # F = ε̂: c_skip = 1, c_out = -σ
        return sample - sigma * model_output
    if prediction_type == "v_prediction":  # F = v̂: c_skip = 1/(σ²+1), c_out = -σ/√(σ²+1)
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
    return model_output  # "sample": c_skip = 0, c_out = 1


def add_noise(original_samples, noise, alpha_t, sigma_t) -> torch.Tensor:
    """x_t = α_t x_0 + σ_t ε (DDPM eq. 4: α_t = √ᾱ_t); α_t = 1 gives the σ form x_0 + σ ε."""
    return alpha_t * original_samples + sigma_t * noise


def alpha_bar_coefficients(alphas_cumprod, timesteps, x):
    """(√ᾱ_t, √(1-ᾱ_t)) at training `timesteps` (B,), shaped (B, 1, 1, 1) in x's dtype."""
    abar = alphas_cumprod.to(device=x.device, dtype=x.dtype)
    abar_t = broadcast_to(abar[timesteps.to(x.device)], x)
    return abar_t**0.5, (1 - abar_t) ** 0.5


def broadcast_to(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) so per-sample coefficients multiply a batch of images."""
    values = values.flatten()
    return values.reshape(values.shape[0], *([1] * (x.ndim - 1)))


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen's dynamic thresholding (§2.3), per sample: s = the `ratio` quantile of |x̂_0|,
    clamped to [1, max_value]; x̂_0 <- clamp(x̂_0, -s, s) / s."""
    dtype, (B, *rest) = x0.dtype, x0.shape
    flat = x0.reshape(B, -1)  # (B, C, H, W) -> (B, C*H*W)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # quantile needs float32/64
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)
    return (torch.clamp(flat, -s, s) / s).reshape(B, *rest).to(dtype)


# 5. where in the schedule -------------------------------------------------------------------------
def index_for_timestep(schedule: torch.Tensor, timestep) -> int:
    """Where `timestep` sits in `schedule`: the 2nd match if it appears twice (img2img)."""
    matches = (schedule == torch.as_tensor(timestep).to(schedule.device)).nonzero()
    if len(matches) == 0:
        raise ValueError(f"timestep {timestep} is not one of scheduler.timesteps; loop over "
                         f"`scheduler.timesteps` and pass those values to step()")
    return matches[1 if len(matches) > 1 else 0].item()


def check_ready(scheduler):
    """DDIM, PNDM, DPM-Solver and UniPC need `set_timesteps` first, as in diffusers."""
    if scheduler.num_inference_steps is None:
        raise ValueError(f"{type(scheduler).__name__}.step() was called before set_timesteps(); "
                         f"call `scheduler.set_timesteps(num_inference_steps)` first")


def check_timestep_value(timestep):
    """The σ samplers look σ up by the timestep's value: an integer loop index is a mistake."""
    if isinstance(timestep, int) or (torch.is_tensor(timestep)
                                     and not timestep.is_floating_point()):
        raise ValueError("pass a value of `scheduler.timesteps` as timestep, not an integer "
                         "index (e.g. from enumerate)")


def current_step_index(scheduler, timestep) -> int:
    """The step a stateful sampler is at: its counter once the loop has begun; at the first
    call, `begin_index` if a pipeline set one (img2img), else where `timestep` sits."""
    if scheduler.step_index is not None:
        return scheduler.step_index
    if scheduler.begin_index is not None:
        return scheduler.begin_index
    return index_for_timestep(scheduler.timesteps, timestep)


def sigmas_at(scheduler, timesteps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """σ of each of `timesteps` (B,) in the inference schedule, as (B, 1, 1, 1) in x's dtype:
    found in the schedule before a loop starts, else the current step's (inpainting), as
    diffusers does."""
    if scheduler.begin_index is None:
        steps = [index_for_timestep(scheduler.timesteps, t) for t in timesteps.flatten()]
    else:
        at = scheduler.step_index if scheduler.step_index is not None else scheduler.begin_index
        steps = [at] * timesteps.numel()
    return broadcast_to(scheduler.sigmas.to(device=x.device, dtype=x.dtype)[steps], x)
