"""The exact-score toy: closed forms checked against autograd, the forward process and a sampler."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from ddlearn.data.toy2d import GaussianMixture2D, ring_of_gaussians, sliced_wasserstein

N = 4000  # for moments
N_SWD = 20_000  # for distances: at 20k samples two true sets are ≈ 0.012 ± 0.004 apart (SW1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def linear_alphas_cumprod():
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), dim=0)


@pytest.mark.parametrize("alpha_bar_t", [1.0, 0.9, 0.3, 0.01])
def test_score_is_the_gradient_of_log_prob(alpha_bar_t):
    toy = GaussianMixture2D([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]], std=0.3, weights=[1, 2, 3])
    x = (2 * torch.randn(64, 2, generator=gen(0), dtype=torch.float64)).requires_grad_()
    (grad,) = torch.autograd.grad(toy.log_prob(x, alpha_bar_t).sum(), x)
    torch.testing.assert_close(toy.score(x.detach(), alpha_bar_t), grad, rtol=1e-9, atol=1e-9)


def test_log_prob_integrates_to_one():
    toy = ring_of_gaussians()
    grid = torch.linspace(-4, 4, 401, dtype=torch.float64)
    xy = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1).reshape(-1, 2)
    mass = toy.log_prob(xy, 0.7).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass.item() - 1) < 1e-3


@pytest.mark.parametrize("alpha_bar_t", [0.95, 0.5, 0.05])
def test_noised_marginal_matches_the_forward_process(alpha_bar_t):
    toy = ring_of_gaussians()
    x0, eps = toy.sample(N_SWD, gen(1)), torch.randn(N_SWD, 2, generator=gen(2))
    x_t = alpha_bar_t**0.5 * x0 + (1 - alpha_bar_t) ** 0.5 * eps  # DDPM eq. (4)
    closed_form = toy.noised(alpha_bar_t).sample(N_SWD, gen(3))
    var_t = alpha_bar_t * toy.std**2 + 1 - alpha_bar_t
    unscaled_means = GaussianMixture2D(toy.means, var_t**0.5).sample(N_SWD, gen(3))  # forgot √ᾱ
    assert sliced_wasserstein(x_t, closed_form) < 0.03
    if alpha_bar_t < 0.9:  # the √ᾱ on the means matters once it is far from 1
        assert sliced_wasserstein(x_t, unscaled_means) > 0.1


def test_exact_eps_is_the_conditional_mean_of_the_noise():
    """ε* = E[ε | x_t]: its error is uncorrelated with it, and it beats any rescaling of itself."""
    toy, abar = ring_of_gaussians(), linear_alphas_cumprod()
    model = toy.exact_eps_model(abar)
    for t in (5, 100, 600):
        x0, eps = toy.sample(N, gen(4)), torch.randn(N, 2, generator=gen(5))
        x_t = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * eps
        eps_star = model(x_t, torch.tensor(t))
        assert torch.isfinite(eps_star).all() and eps_star.dtype == x_t.dtype
        assert abs(((eps - eps_star) * eps_star).mean().item()) < 0.02
        mse = ((eps - eps_star) ** 2).mean()
        for scale in (0.9, 1.1):
            assert mse < ((eps - scale * eps_star) ** 2).mean()


def test_exact_eps_at_small_t_recovers_the_clean_point():
    """At t = 0 (σ ≈ 0.01 ≪ s = 0.15) the x_0 predicted from ε* is almost x_t itself."""
    toy, abar = ring_of_gaussians(), linear_alphas_cumprod()
    x0 = toy.sample(N, gen(6))
    x_t = abar[0].sqrt() * x0 + (1 - abar[0]).sqrt() * torch.randn(N, 2, generator=gen(7))
    eps_star = toy.exact_eps_model(abar)(x_t, torch.tensor(0))
    x0_pred = (x_t - (1 - abar[0]).sqrt() * eps_star) / abar[0].sqrt()
    assert (x0_pred - x0).pow(2).sum(1).mean().sqrt() < 0.015


def test_fractional_timesteps_interpolate_log_sigma_or_use_the_schedulers_sigma():
    toy, abar = ring_of_gaussians(), linear_alphas_cumprod()
    x = torch.randn(8, 2, generator=gen(8))
    log_sigma = 0.5 * torch.log((1 - abar.double()) / abar.double())
    sigma = math.exp(0.75 * log_sigma[10] + 0.25 * log_sigma[11])  # t = 10.25
    expected = -((1 - 1 / (1 + sigma**2)) ** 0.5) * toy.score(x, 1 / (1 + sigma**2))
    torch.testing.assert_close(toy.exact_eps_model(abar)(x, torch.tensor(10.25)), expected.float())

    scheduler = EulerDiscreteScheduler(beta_schedule="linear", use_karras_sigmas=True)
    scheduler.set_timesteps(7)
    model = toy.exact_eps_model(scheduler.alphas_cumprod, scheduler=scheduler)
    for t in scheduler.timesteps[:3]:
        scheduled = scheduler.scale_model_input(x, t)
        sigma = scheduler.sigmas[scheduler.step_index].item()
        expected = -((1 - 1 / (1 + sigma**2)) ** 0.5) * toy.score(scheduled, 1 / (1 + sigma**2))
        torch.testing.assert_close(model(scheduled, t), expected.float())
        scheduler.step(model(scheduled, t), t, x)


def test_sliced_wasserstein_small_for_same_and_large_for_shifted():
    toy = ring_of_gaussians()
    a, b = toy.sample(N_SWD, gen(9)), toy.sample(N_SWD, gen(10))
    shift = torch.tensor([0.3, 0.0])
    assert sliced_wasserstein(a, b) < 0.03
    # a shift d moves every 1-D projection by |d·θ|, whose mean over directions is 2|d|/π
    assert sliced_wasserstein(a + shift, b) == pytest.approx(2 * 0.3 / math.pi, abs=0.03)
    assert sliced_wasserstein(a, b[: N_SWD // 2]) < 0.03  # unequal sizes: compared by quantiles


def test_ddim_with_exact_eps_reaches_the_true_distribution_and_clipping_does_not():
    toy = ring_of_gaussians()
    reference, x_T = toy.sample(N_SWD, gen(11)), torch.randn(N_SWD, 2, generator=gen(12))
    distances = {}
    for clip in (False, True):
        scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=clip)
        scheduler.set_timesteps(50)
        model, x = toy.exact_eps_model(scheduler.alphas_cumprod), x_T
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t), t, x).prev_sample
        distances[clip] = sliced_wasserstein(x, reference)
    assert distances[False] < 0.03
    assert distances[True] > 0.3  # the ring has radius 2: clipping x_0 to [-1, 1] destroys it


@pytest.mark.parametrize("sigma", [0.02, 0.3, 0.7, 0.98])
def test_flow_velocity_is_the_score_formula_by_autograd(sigma):
    """u*(x, σ) = E[ε - x_0 | x_σ] = -(x + σ ∇log p_σ(x)) / (1 - σ) for x_σ = (1-σ) x_0 + σ ε,
    with the score of the flow marginal taken by autograd of its log density."""
    toy = GaussianMixture2D([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]], std=0.3, weights=[1, 2, 3])
    x = (2 * torch.randn(64, 2, generator=gen(13), dtype=torch.float64)).requires_grad_(True)
    score, = torch.autograd.grad(toy.flow_noised(sigma).log_prob(x).sum(), x)
    expected = -(x.detach() + sigma * score) / (1 - sigma)
    torch.testing.assert_close(toy.velocity(x.detach(), sigma), expected, rtol=1e-9, atol=1e-9)


def test_flow_velocity_at_pure_noise_is_x_minus_the_data_mean():
    toy = GaussianMixture2D([[2.0, 0.0], [-1.0, 1.5]], std=0.3, weights=[1, 3])
    x = torch.randn(8, 2, generator=gen(14), dtype=torch.float64)
    mean = (toy.weights[:, None] * toy.means).sum(0)
    torch.testing.assert_close(toy.velocity(x, 1.0), x - mean)


def test_flow_euler_with_the_exact_velocity_reaches_the_true_distribution():
    """diffusers' FlowMatchEulerDiscreteScheduler, fed u*: the sampler's error alone."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    toy = ring_of_gaussians()
    reference, x = toy.sample(N_SWD, gen(15)), torch.randn(N_SWD, 2, generator=gen(16))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(50)
    model = toy.exact_velocity_model(scheduler)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t), t, x).prev_sample
    assert sliced_wasserstein(x, reference) < 0.03


def test_flow_euler_on_ddims_noise_levels_is_ddim():
    """One flow Euler step lands on (1-σ') x̂_0 + σ' ε̂: DDIM's η = 0 update in other coordinates.
    On the same signal-to-noise ratios, from the same (rescaled) start, the samples agree, so the
    gap between the two in benchmarks/sampler_accuracy.md is the noise-level schedule."""
    from ddlearn.schedulers.ddim import DDIMScheduler as OurDDIM
    from ddlearn.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler

    toy, x_T = ring_of_gaussians(), torch.randn(2000, 2, generator=gen(17))
    ddim = OurDDIM(clip_sample=False)
    ddim.set_timesteps(8)
    model, x = toy.exact_eps_model(ddim.alphas_cumprod), x_T
    for t in ddim.timesteps:
        x = ddim.step(model(x, t), t, x).prev_sample
    abar = ddim.alphas_cumprod[ddim.timesteps].double()
    sigmas = 1 / (1 + (abar / (1 - abar)).sqrt())  # (1-σ)²/σ² = ᾱ/(1-ᾱ)
    flow = FlowMatchEulerDiscreteScheduler()
    flow.set_timesteps(sigmas=sigmas.tolist())
    velocity, y = toy.exact_velocity_model(flow), (x_T * sigmas[0] / (1 - abar[0]).sqrt()).float()
    for t in flow.timesteps:
        y = flow.step(velocity(y, t), t, y).prev_sample
    torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-4)
