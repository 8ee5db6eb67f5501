"""What one `step()` of several schedulers computes the same way, as pure functions.

Each scheduler file holds its whole story (`__init__`, `set_timesteps`, `scale_model_input`,
`step`); what two or more of their steps share is here: 1. the network's output -> x̂_0 or ε̂,
the forward process `add_noise`, thresholding; 2. where in the schedule a step is. What they
share in choosing the schedule (β, timesteps, σ) is in `schedules.py`.

One forward process, two ways of writing it: VP, x_t = α_t x_0 + σ_t ε (DDPM, DDIM, PNDM with
α_t = √ᾱ_t, σ_t = √(1-ᾱ_t); DPM-Solver and UniPC with α_t = 1/√(1+σ²), σ_t = σ α_t, or flow
matching's α_t = 1 - σ_t), and the σ form x_t/α_t = x_0 + σ ε of Karras et al. (Euler, Euler
ancestral, Heun, LMS).

| code               | paper         | meaning                                                  |
|--------------------|---------------|----------------------------------------------------------|
| `sigma`            | σ = σ_t/α_t   | noise-to-signal ratio √((1-ᾱ_t)/ᾱ_t)                     |
| `alpha_t, sigma_t` | α_t, σ_t      | coefficients of x_0 and ε in x_t                         |
| `c_skip`, `c_out`  | c_skip, c_out | D(x; σ) = c_skip x + c_out F(x) (EDM Table 1)            |

References: Ho et al. 2020 ("DDPM") eq. (4), (15); Karras et al. 2022 ("EDM") eq. (7) and
Table 1; Salimans & Ho 2022 §4 (v-prediction); Saharia et al. 2022 (Imagen) §2.3 (dynamic
thresholding); Lipman et al. 2023 (flow matching).
"""

from typing import NamedTuple, Optional

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
FLOW_PREDICTION_TYPES = (*PREDICTION_TYPES, "flow_prediction")  # DPM-Solver, UniPC


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


# 1. the network's output, and the forward process -------------------------------------------------
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


# 2. where in the schedule -------------------------------------------------------------------------
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
