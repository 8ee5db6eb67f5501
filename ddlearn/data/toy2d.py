"""2-D Gaussian mixtures whose noised marginals, and so whose exact score, are known in closed form.

Diffusing a mixture Σ_k w_k N(μ_k, s² I) with the DDPM forward process x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε
gives again a mixture, p_t = Σ_k w_k N(√ᾱ_t μ_k, v_t I) with v_t = ᾱ_t s² + 1 - ᾱ_t. Its score is

    ∇log p_t(x) = Σ_k r_k(x) (√ᾱ_t μ_k - x) / v_t,  r_k = softmax_k(log w_k - |x - √ᾱ_t μ_k|²/2v_t),

and the network a perfect training would give is ε*(x_t, t) = E[ε | x_t] = -√(1-ᾱ_t) ∇log p_t(x_t)
(Tweedie). Plugging ε* into a scheduler measures the *sampler's* error alone, with no network error.
Under flow matching's path x_σ = (1 - σ) x_0 + σ ε the marginals are mixtures too, and the exact
velocity u*(x, σ) = E[ε - x_0 | x_σ] = -(x + σ ∇log p_σ(x)) / (1 - σ) has a closed form
(`velocity`). No counterpart in diffusers: it is the test bench for `ddlearn.schedulers`.
`ToyDenoiser` is a small network for the same points, trained in chapter 07 both ways (DDPM's ε,
flow matching's velocity) to compare the two objectives at one budget.

| code           | paper  | meaning                                                           |
|----------------|--------|-------------------------------------------------------------------|
| `means`, `std` | μ_k, s | component centres (K, 2) and the shared standard deviation        |
| `weights`      | w_k    | mixture weights, summing to 1                                     |
| `alpha_bar_t`  | ᾱ_t    | signal kept at step t; σ_t = √((1-ᾱ_t)/ᾱ_t), so ᾱ_t = 1/(1 + σ_t²) |
| `var_t`        | v_t    | variance of each noised component                                 |

References: Ho et al. 2020 (DDPM) eq. (4); Song et al. 2021 (score SDE) eq. (7) and Efron 2011
(Tweedie's formula) for ε* = -√(1-ᾱ) ∇log p_t; Bonneel et al. 2015 for the sliced Wasserstein
distance.
"""

import math
from typing import Callable, NamedTuple, Optional

import torch
from torch import nn

from ddlearn.models.embeddings import Timesteps, timestep_batch


class GaussianMixture2D:
    """Σ_k w_k N(μ_k, s² I) in 2-D; `noised(ᾱ_t)` is its marginal under the forward process."""

    def __init__(self, means, std: float, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.ndim != 2 or self.means.shape[1] != 2:
            raise ValueError(f"means must have shape (K, 2), got {tuple(self.means.shape)}")
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.std = float(std)
        K = self.means.shape[0]
        w = torch.ones(K) if weights is None else torch.as_tensor(weights)
        self.weights = w.to(torch.float64) / w.sum()

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n points (n, 2) float32: pick a component k ~ w, then μ_k + s · N(0, I)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.std * z).float()

    def noised(self, alpha_bar_t: float) -> "GaussianMixture2D":
        """Marginal p_t of x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε: means √ᾱ_t μ_k, variance ᾱ_t s²+1-ᾱ_t."""
        var_t = alpha_bar_t * self.std**2 + 1 - alpha_bar_t
        return GaussianMixture2D(alpha_bar_t**0.5 * self.means, var_t**0.5, self.weights)

    def _logits(self, x, alpha_bar_t, scale=None, var_t=None):
        """(N, 2) -> (N, K) log w_k - |x - a μ_k|² / 2v_t, the means a μ (K, 2) and v_t; by
        default a = √ᾱ_t and v_t = ᾱ_t s² + 1 - ᾱ_t (DDPM), or the given `scale` and `var_t`."""
        if scale is None:
            scale, var_t = alpha_bar_t**0.5, alpha_bar_t * self.std**2 + 1 - alpha_bar_t
        mu_t = scale * self.means
        sq_dist = ((x[:, None, :] - mu_t[None]) ** 2).sum(-1)  # (N, 1, 2) - (1, K, 2) -> (N, K)
        return self.weights.log() - sq_dist / (2 * var_t), mu_t, var_t

    def log_prob(self, x: torch.Tensor, alpha_bar_t: float = 1.0) -> torch.Tensor:
        """log p_t(x) for x (N, 2) -> (N,); ᾱ_t = 1 is the data distribution itself."""
        logits, _, var_t = self._logits(x.double(), alpha_bar_t)
        return torch.logsumexp(logits, dim=1) - math.log(2 * math.pi * var_t)

    def score(self, x: torch.Tensor, alpha_bar_t: float = 1.0) -> torch.Tensor:
        """∇_x log p_t(x) = Σ_k r_k (√ᾱ μ_k - x) / v_t for x (N, 2), in float64."""
        logits, mu_t, var_t = self._logits(x.double(), alpha_bar_t)
        r = torch.softmax(logits, dim=1)  # (N, K) responsibilities
        return (r @ mu_t - x.double()) / var_t

    def flow_noised(self, sigma: float) -> "GaussianMixture2D":
        """Marginal of flow matching's x_σ = (1 - σ) x_0 + σ ε: means (1 - σ) μ_k, variance
        (1 - σ)² s² + σ²."""
        return GaussianMixture2D((1 - sigma) * self.means,
                                 ((1 - sigma) ** 2 * self.std**2 + sigma**2) ** 0.5, self.weights)

    def velocity(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """The exact flow-matching velocity u*(x, σ) = E[ε - x_0 | x_σ = x] for x (N, 2).

        Within component k, x_0 and ε are jointly Gaussian with x_σ (a = 1 - σ, v = a²s² + σ²):
        E[x_0 | x, k] = μ_k + (a s²/v)(x - a μ_k) and E[ε | x, k] = (σ/v)(x - a μ_k), so
        u_k = ((σ - a s²)/v)(x - a μ_k) - μ_k, averaged with the responsibilities r_k(x).
        """
        a = 1 - sigma
        var = a**2 * self.std**2 + sigma**2
        logits, mu_t, _ = self._logits(x.double(), None, scale=a, var_t=var)
        r = torch.softmax(logits, dim=1)  # (N, K)
        # (N, 1, 2) - (1, K, 2) -> (N, K, 2): the velocity each component would give
        u_k = (sigma - a * self.std**2) / var * (x.double()[:, None] - mu_t[None]) - self.means
        return (r[..., None] * u_k).sum(1)

    def exact_velocity_model(self, scheduler) -> Callable:
        """A `model(sample, timestep) -> u*` for a flow-matching scheduler's loop, at the σ the
        scheduler is at (`scheduler.sigmas[scheduler.step_index]`)."""
        def model(sample: torch.Tensor, timestep) -> torch.Tensor:
            sigma = _current_sigma(scheduler, timestep)
            return self.velocity(sample, sigma).to(sample.dtype)

        return model

    def exact_eps_model(self, alphas_cumprod: torch.Tensor, scheduler=None) -> Callable:
        """A `model(sample, timestep) -> ε*` to drop into a scheduler loop in place of a network.

        Which noise level is `sample` at? With `scheduler` given, the one the scheduler itself
        assumes: its current σ (`scheduler.sigmas[scheduler.step_index]`), so that fractional or
        rounded timesteps (Euler, Heun, LMS; Karras σ in DPM-Solver/UniPC) cost no error and only
        the solver's own discretisation remains. Schedulers without `sigmas` (DDPM, DDIM, PNDM) and
        `scheduler=None` read ᾱ off the timestep, interpolating log σ between integer steps (the
        inverse of `sigma_to_t`): that is what a network conditioned on t alone can know.
        """
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        log_sigmas = 0.5 * torch.log((1 - abar) / abar)

        def model(sample: torch.Tensor, timestep) -> torch.Tensor:
            sigma = None if scheduler is None else _current_sigma(scheduler, timestep)
            if sigma is None:
                t = float(timestep)
                lo = min(int(math.floor(t)), len(abar) - 2)
                frac = t - lo
                sigma = math.exp((1 - frac) * log_sigmas[lo] + frac * log_sigmas[lo + 1])
            alpha_bar_t = 1.0 / (1.0 + sigma**2)
            eps = -((1 - alpha_bar_t) ** 0.5) * self.score(sample, alpha_bar_t)
            return eps.to(sample.dtype)

        return model


def _current_sigma(scheduler, timestep) -> Optional[float]:
    """σ of the step the scheduler is at, or None when it does not work in σ."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None:
        return None
    i = getattr(scheduler, "step_index", None)
    if i is None:  # before the first step(): the first occurrence of this timestep
        i = int((scheduler.timesteps == torch.as_tensor(timestep)).nonzero()[0, 0])
    return float(sigmas[i])


def ring_of_gaussians(n: int = 8, radius: float = 2.0, std: float = 0.15) -> GaussianMixture2D:
    """n equal-weight Gaussians on a circle of `radius`: the classic 2-D diffusion toy."""
    angles = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    return GaussianMixture2D(radius * torch.stack([angles.cos(), angles.sin()], dim=1), std)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_proj: int = 64, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between point clouds a (N, 2) and b (M, 2).

    Project on n_proj directions (evenly spaced angles, randomly rotated by `seed`), match the
    sorted projections (1-D optimal transport) and average |gap| over points and directions.
    (W1 rather than W2: a few tail points make the squared version noisy at N = 20k.)
    """
    offset = torch.rand(1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    angles = math.pi * (torch.arange(n_proj, dtype=torch.float64) + offset) / n_proj
    theta = torch.stack([angles.cos(), angles.sin()], dim=1)  # (P, 2) unit directions
    pa = (a.double() @ theta.T).sort(dim=0).values  # (N, 2) @ (2, P) -> (N, P)
    pb = (b.double() @ theta.T).sort(dim=0).values
    if pa.shape[0] != pb.shape[0]:  # compare the same quantiles of both
        q = (torch.arange(min(len(pa), len(pb)), dtype=torch.float64) + 0.5) / min(len(pa), len(pb))
        pa, pb = torch.quantile(pa, q, dim=0), torch.quantile(pb, q, dim=0)
    return float((pa - pb).abs().mean())


class ToyDenoiserOutput(NamedTuple):
    sample: torch.Tensor  # (B, 2): the prediction (ε, v or x_0, as it was trained)


class ToyDenoiser(nn.Module):
    """An MLP on 2-D points: [x_t, sinusoids(t)] -> (B, 2). Called like a UNet (`model(x, t)
    .sample`), so `diffusion_loss`, `flow_matching_loss` and every scheduler take it as they take
    a UNet. t is a DDPM timestep in [0, 1000) or a flow-matching σ · 1000: one scale for both."""

    def __init__(self, hidden: int = 128, num_layers: int = 3, time_channels: int = 32):
        super().__init__()
        self.time_proj = Timesteps(time_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        widths = [2 + time_channels] + [hidden] * num_layers
        layers = []
        for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, 2))

    def forward(self, sample: torch.Tensor, timestep) -> ToyDenoiserOutput:
        t = self.time_proj(timestep_batch(timestep, sample)).to(sample.dtype)  # (B, channels)
        return ToyDenoiserOutput(self.net(torch.cat([sample, t], dim=1)))
