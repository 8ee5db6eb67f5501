"""Chapter 07's checks are honest: the notebook's solutions pass the public and the hidden cases;
answers that call ddlearn's own implementation, or that only fit the public cases, fail; a wrong
answer gets its hint; in keep-going mode a failing check hands back the reference answer."""

import pytest
import torch
import torch.nn.functional as F

import ddlearn.checks.runner as runner
from ddlearn.checks import ExerciseError, ch07
from ddlearn.models import transformer_sd3
from ddlearn.schedulers.common import add_noise
from ddlearn.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler


# the notebook's solution cells
def flow_noised(x0, noise, sigma):
    sigma = sigma.view(-1, *[1] * (x0.ndim - 1))  # (B,) -> (B, 1, 1, 1)
    return (1 - sigma) * x0 + sigma * noise


def velocity_target(x0, noise):
    return noise - x0  # d/dσ [(1 - σ) x0 + σ ε]


def euler_step(velocity, sigma, sigma_next, sample):
    return sample + (sigma_next - sigma) * velocity


def patchify(latents, p):
    B, C, h, w = latents.shape
    x = latents.reshape(B, C, h // p, p, w // p, p)  # split rows and columns into patches
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h/p, w/p, p, p, C)
    return x.reshape(B, (h // p) * (w // p), p * p * C)


def patchify_unfold(latents, p):  # another right answer: torch's im2col, then reordered
    B, C, h, w = latents.shape
    patches = F.unfold(latents, kernel_size=p, stride=p)  # (B, C·p·p, N)
    return patches.view(B, C, p * p, -1).permute(0, 3, 2, 1).reshape(B, -1, p * p * C)


SOLUTIONS = [(ch07.check_flow_noised, flow_noised), (ch07.check_velocity_target, velocity_target),
             (ch07.check_euler_step, euler_step), (ch07.check_patchify, patchify),
             (ch07.check_patchify, patchify_unfold)]


@pytest.mark.parametrize("check, solution", SOLUTIONS)
@pytest.mark.parametrize("hidden", [False, True, 7, 123])
def test_solution_passes(check, solution, hidden, capsys):
    assert check(solution, hidden=hidden) is solution
    assert "✅" in capsys.readouterr().out


def scheduler_at(sigma):
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(sigmas=sigma.tolist())
    return scheduler


def euler_by_scheduler(velocity, sigma, sigma_next, sample):
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(sigmas=[sigma, sigma_next] if sigma_next > 0 else [sigma])
    return scheduler.step(velocity, scheduler.timesteps[0], sample).prev_sample


# answers that call ddlearn's implementation of the exercise
CHEATS = [
    (ch07.check_flow_noised, lambda x0, noise, sigma: scheduler_at(sigma).scale_noise(
        x0, scheduler_at(sigma).timesteps, noise), "scale_noise"),
    (ch07.check_flow_noised, lambda x0, noise, sigma: add_noise(
        x0, noise, 1 - sigma.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)), "add_noise"),
    (ch07.check_flow_noised, lambda *args: ch07.reference_flow_noised(*args),
     "reference_flow_noised"),
    (ch07.check_velocity_target, lambda *args: ch07.reference_velocity_target(*args),
     "reference_velocity_target"),
    (ch07.check_euler_step, euler_by_scheduler, "FlowMatchEulerDiscreteScheduler.step"),
    (ch07.check_euler_step, lambda *args: ch07.reference_euler_step(*args),
     "reference_euler_step"),
    (ch07.check_patchify, transformer_sd3.patchify, "patchify"),
    (ch07.check_patchify, lambda z, p: transformer_sd3.patchify(z, p), "patchify"),
    (ch07.check_patchify, lambda *args: ch07.reference_patchify(*args), "reference_patchify"),
]


@pytest.mark.parametrize("check, cheat, name", CHEATS)
def test_calling_ddlearn_fails(check, cheat, name):
    with pytest.raises(ExerciseError, match="ddlearn's own") as error:
        check(cheat)
    assert name in str(error.value)


# answers that fit only the public cases
def flow_noised_images_only(x0, noise, sigma):  # assumes (B, C, H, W)
    sigma = sigma.view(-1, 1, 1, 1)
    return (1 - sigma) * x0 + sigma * noise


def velocity_target_float32(x0, noise):
    return noise.float() - x0.float()


def euler_step_float32(velocity, sigma, sigma_next, sample):
    return sample.float() + (sigma_next - sigma) * velocity.float()


def patchify_float32(latents, p):
    return patchify(latents.float(), p)


@pytest.mark.parametrize("check, answer", [(ch07.check_flow_noised, flow_noised_images_only),
                                           (ch07.check_velocity_target, velocity_target_float32),
                                           (ch07.check_euler_step, euler_step_float32),
                                           (ch07.check_patchify, patchify_float32)])
@pytest.mark.parametrize("hidden", [True, 7])
def test_public_only_answer_fails_hidden(check, answer, hidden):
    check(answer)
    with pytest.raises(ExerciseError):
        check(answer, hidden=hidden)


def test_float32_answer_is_told_to_keep_the_dtype():
    with pytest.raises(ExerciseError, match="keep the inputs' dtype"):
        ch07.check_velocity_target(velocity_target_float32, hidden=True)


# wrong answers and their hints
def flow_noised_unbroadcast(x0, noise, sigma):
    return (1 - sigma) * x0 + sigma * noise


def euler_step_viewed(velocity, sigma, sigma_next, sample):
    return sample + (sigma_next - sigma).view(-1, 1, 1, 1) * velocity


def patchify_view(latents, p):
    B, C, h, w = latents.shape
    x = latents.reshape(B, C, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.view(B, -1, p * p * C)


def patchify_wrong_reshape(latents, p):
    B, C, h, w = latents.shape
    return latents.reshape(B, C, h // p, w // p, p * p * 2).permute(0, 2, 3, 4, 1)


def patchify_five_indices(latents, p):
    B, C, h, w = latents.shape
    x = latents.reshape(B, C, h // p, p, w // p, p).permute(0, 2, 4, 3, 5)
    return x.reshape(B, -1, p * p * C)


def patchify_true_division(latents, p):
    B, C, h, w = latents.shape
    x = latents.reshape(B, C, h / p, p, w / p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, -1, p * p * C)


@pytest.mark.parametrize("check, wrong, words", [
    (ch07.check_flow_noised, flow_noised_unbroadcast, "view it as (B, 1, 1, 1)"),
    (ch07.check_euler_step, euler_step_viewed, "plain Python floats"),
    (ch07.check_patchify, patchify_view, "use .reshape, not .view"),
    (ch07.check_patchify, patchify_wrong_reshape, "reshape to (B, C, h/p, p, w/p, p)"),
    (ch07.check_patchify, patchify_five_indices, "six indices"),
    (ch07.check_patchify, patchify_true_division, "h // p"),
])
def test_wrong_answer_gets_its_hint(check, wrong, words):
    with pytest.raises(ExerciseError) as error:
        check(wrong)
    assert words in str(error.value)


def test_unbroadcast_sigma_is_named_even_when_it_broadcasts():
    """With B == W, sigma (B,) lines up with the last axis silently; the hint still names it."""
    silent = 0
    for seed in range(40):
        with pytest.raises(ExerciseError) as error:
            ch07.check_flow_noised(flow_noised_unbroadcast, hidden=seed)
        assert "view it as (B, 1, 1, 1)" in str(error.value)
        silent += "your code raised" not in str(error.value)
    assert silent > 0  # some seeds did draw B == W


def test_references_give_the_solutions_results():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 6, 4, generator=g), torch.randn(3, 4, 6, 4, generator=g)
    sigma = torch.tensor([0.8, 0.3, 0.0])
    equal = lambda a, b: torch.testing.assert_close(a, b, rtol=0, atol=0)
    equal(ch07.reference_flow_noised(x0, noise, sigma), flow_noised(x0, noise, sigma))
    equal(ch07.reference_velocity_target(x0, noise), velocity_target(x0, noise))
    points = torch.randn(2000, 2, generator=g)  # the chapter's sampling loop: 2-D points
    equal(ch07.reference_euler_step(points, 0.7, 0.4, points), euler_step(points, 0.7, 0.4, points))
    equal(ch07.reference_patchify(x0, 2), patchify(x0, 2))


@pytest.mark.parametrize("check, reference, wrong", [
    (ch07.check_flow_noised, ch07.reference_flow_noised, flow_noised_unbroadcast),
    (ch07.check_velocity_target, ch07.reference_velocity_target, lambda x0, noise: x0 - noise),
    (ch07.check_euler_step, ch07.reference_euler_step, euler_step_viewed),
    (ch07.check_patchify, ch07.reference_patchify, patchify_view),
])
def test_keep_going_returns_the_reference(check, reference, wrong, monkeypatch, capsys):
    monkeypatch.setattr(runner, "KEEP_GOING", True)
    assert check(wrong) is reference
    assert "❌" in capsys.readouterr().err
