"""Chapter 03's checks: the notebook's solutions pass the public and hidden cases; answers that call
ddlearn's own implementation, hard-code the public cases or make a usual mistake fail, each with
its hint; and in keep-going mode a failing answer is replaced by the reference answer."""

import pytest
import torch

from ddlearn.checks import ExerciseError, ch03, runner
from ddlearn.schedulers import common
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.euler import EulerDiscreteScheduler
from ddlearn.schedulers.euler_ancestral import EulerAncestralDiscreteScheduler


# the notebook's solution cells -------------------------------------------------------------------
def add_noise(x0, noise, alphas_cumprod, t):
    """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, with ᾱ_t = alphas_cumprod[t] for each image of the batch."""
    abar_t = alphas_cumprod[t].view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * noise


def ddim_step(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    """One DDIM step (eq. 12, η = 0): x_t -> x_{t-1} through the predicted x_0."""
    x0_hat = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    return alpha_prod_t_prev.sqrt() * x0_hat + (1 - alpha_prod_t_prev).sqrt() * eps


def euler_step(eps, x, sigma, sigma_next):
    """One Euler step of dx/dσ = ε̂ from σ to sigma_next."""
    derivative = eps  # (x - x̂_0) / σ with x̂_0 = x - σ ε̂
    return x + (sigma_next - sigma) * derivative


SOLUTIONS = [(ch03.check_add_noise, add_noise), (ch03.check_ddim_step, ddim_step),
             (ch03.check_euler_step, euler_step)]


@pytest.mark.parametrize("hidden", [False, True, 7])
@pytest.mark.parametrize("check, solution", SOLUTIONS, ids=lambda x: getattr(x, "__name__", x))
def test_solution_passes_public_and_hidden_cases(check, solution, hidden, capsys):
    assert check(solution, hidden=hidden) is solution
    assert "✅" in capsys.readouterr().out


def test_solutions_pass_many_hidden_draws():
    for seed in range(20):
        for check, solution in SOLUTIONS:
            check(solution, hidden=seed)


# answers that call ddlearn's own implementation ---------------------------------------------------
def add_noise_by_scheduler(scheduler_cls):
    def answer(x0, noise, alphas_cumprod, t):
        scheduler = scheduler_cls()
        scheduler.alphas_cumprod = alphas_cumprod
        return scheduler.add_noise(x0, noise, t)

    return answer


def ddim_step_by_scheduler(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    scheduler = DDIMScheduler(clip_sample=False)
    scheduler.set_timesteps(10)
    return scheduler.step(eps, 900, x_t).prev_sample


def euler_step_by_scheduler(eps, x, sigma, sigma_next):
    scheduler = EulerDiscreteScheduler()
    scheduler.set_timesteps(10)
    return scheduler.step(eps, scheduler.timesteps[0], x).prev_sample


CALLS_DDLEARN = [
    (ch03.check_add_noise, lambda *args: ch03.reference_add_noise(*args), "reference_add_noise"),
    (ch03.check_add_noise, add_noise_by_scheduler(DDPMScheduler), "DDPMScheduler.add_noise"),
    (ch03.check_add_noise, add_noise_by_scheduler(DDIMScheduler), "DDIMScheduler.add_noise"),
    (ch03.check_add_noise, lambda x0, noise, abar, t: common.add_noise(
        x0, noise, *common.alpha_bar_coefficients(abar, t, x0)), "alpha_bar_coefficients"),
    (ch03.check_ddim_step, lambda *args: ch03.reference_ddim_step(*args), "reference_ddim_step"),
    (ch03.check_ddim_step, ddim_step_by_scheduler, "DDIMScheduler.step"),
    (ch03.check_euler_step, lambda *args: ch03.reference_euler_step(*args), "reference_euler"),
    (ch03.check_euler_step, euler_step_by_scheduler, "EulerDiscreteScheduler.step"),
]


@pytest.mark.parametrize("check, answer, qualname", CALLS_DDLEARN)
def test_calling_ddlearn_own_implementation_fails(check, answer, qualname):
    with pytest.raises(ExerciseError, match="ddlearn's own") as error:
        check(answer)
    assert qualname in str(error.value)


def test_every_scheduler_add_noise_is_forbidden():
    assert EulerAncestralDiscreteScheduler in ch03.NOISING and DDPMScheduler in ch03.NOISING


# answers that hard-code the public cases ----------------------------------------------------------
float32 = lambda solution: lambda *args: solution(*[a.float() if torch.is_tensor(a)
                                                    and a.is_floating_point() else a
                                                    for a in args])
HARD_CODED = [
    (ch03.check_add_noise, float32(add_noise)),
    (ch03.check_add_noise, lambda x0, noise, abar, t: add_noise(x0, noise, abar, t)
     .view(len(t), 3, 8, 8)),  # the public image size
    (ch03.check_add_noise, lambda x0, noise, abar, t: add_noise(  # the public schedules
        x0, noise, DDPMScheduler(beta_schedule="linear" if abar[-1] > 1e-5 else
                                 "squaredcos_cap_v2").alphas_cumprod.to(x0.dtype), t)),
    (ch03.check_ddim_step, float32(ddim_step)),
    (ch03.check_euler_step, float32(euler_step)),
]


@pytest.mark.parametrize("check, answer", HARD_CODED)
def test_hard_coded_answer_passes_public_but_not_hidden(check, answer):
    check(answer)
    for hidden in (True, 7):
        with pytest.raises(ExerciseError):
            check(answer, hidden=hidden)


# usual mistakes ---------------------------------------------------------------------------------
def ddim_step_no_sqrt(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    x0_hat = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    return alpha_prod_t_prev * x0_hat + (1 - alpha_prod_t_prev).sqrt() * eps


MISTAKES = [
    (ch03.check_add_noise, lambda x0, noise, abar, t: abar[t].sqrt() * x0, "(B, 1, 1, 1)"),
    (ch03.check_add_noise, lambda x0, noise, abar, t: add_noise(noise, x0, abar, t), "swapped"),
    (ch03.check_ddim_step, lambda eps, x_t, a, a_prev: ddim_step(eps, x_t, a, a_prev.item()),
     "keep the coefficients tensors"),
    (ch03.check_ddim_step, ddim_step_no_sqrt, "without the square root"),
    (ch03.check_euler_step, lambda eps, x, sigma, sigma_next: x - sigma * eps, "x̂_0 = x - σ ε̂"),
]


@pytest.mark.parametrize("check, wrong, words", MISTAKES)
def test_usual_mistake_gets_its_hint(check, wrong, words):
    with pytest.raises(ExerciseError) as error:
        check(wrong)
    assert words in str(error.value)


# the reference answers and keep-going mode --------------------------------------------------------
def test_reference_answers_equal_the_solutions_on_the_notebook_inputs():
    """The later cells call ddim_step and euler_step with 0-d tensors and one (1, 3, 64, 64)."""
    x, eps = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    abar = DDPMScheduler().alphas_cumprod
    t = torch.tensor([300])
    assert torch.equal(ch03.reference_add_noise(x, eps, abar, t), add_noise(x, eps, abar, t))
    a_t, a_prev = abar[580], abar[560]
    assert torch.equal(ch03.reference_ddim_step(eps, x, a_t, a_prev),
                       ddim_step(eps, x, a_t, a_prev))
    sigma, sigma_next = (((1 - a) / a).sqrt() for a in (a_t, a_prev))  # σ = √((1-ᾱ)/ᾱ)
    assert torch.equal(ch03.reference_euler_step(eps, x, sigma, sigma_next),
                       euler_step(eps, x, sigma, sigma_next))


@pytest.mark.parametrize("check, reference, wrong", [
    (ch03.check_add_noise, ch03.reference_add_noise, lambda x0, noise, abar, t: x0),
    (ch03.check_ddim_step, ch03.reference_ddim_step, lambda eps, x_t, a, a_prev: x_t),
    (ch03.check_euler_step, ch03.reference_euler_step, lambda eps, x, s, s_next: x),
])
def test_keep_going_returns_the_reference_and_reports(check, reference, wrong, monkeypatch,
                                                      capsys):
    monkeypatch.setattr(runner, "KEEP_GOING", True)
    assert check(wrong) is reference
    assert "❌" in capsys.readouterr().err
