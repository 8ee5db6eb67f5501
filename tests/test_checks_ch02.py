"""Chapter 02's exercise checkers: the reference answer passes, typical wrong answers fail with the
hint that names the mistake, and an untouched stub says "not implemented"."""

import re

import numpy as np
import pytest
import torch

from ddlearn.checks import ExerciseError, ch01, ch02
from ddlearn.pipelines.ddpm import DDPMPipeline
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.euler import EulerDiscreteScheduler


# --------------------------------------------------------------------------------------------------
# Reference answers (what the notebook's solution cells contain)
# --------------------------------------------------------------------------------------------------
def predict_x0(x_t, eps, alpha_prod_t):
    return (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()


def timesteps(num_inference_steps, num_train_timesteps, spacing):
    n, T = num_inference_steps, num_train_timesteps
    if spacing == "leading":
        steps = np.arange(0, n) * (T // n)
    elif spacing == "trailing":
        steps = np.round(np.arange(T, 0, -T / n)) - 1
    else:
        steps = np.linspace(0, T - 1, n).round()
    return np.sort(steps)[::-1].astype(np.int64)


@torch.no_grad()
def sample(unet, scheduler, x_T, num_inference_steps, generator=None):
    scheduler.set_timesteps(num_inference_steps)
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = unet(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x


def stub(*args):
    raise NotImplementedError  # your code here


# --------------------------------------------------------------------------------------------------
# Typical wrong answers
# --------------------------------------------------------------------------------------------------
def predict_x0_no_sqrt(x_t, eps, alpha_prod_t):
    return (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t


def predict_x0_plus(x_t, eps, alpha_prod_t):
    return (x_t + (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()


def timesteps_ascending(n, T, spacing):
    return timesteps(n, T, spacing)[::-1]


def timesteps_trailing_off_by_one(n, T, spacing):
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / n)).astype(np.int64)
    return timesteps(n, T, spacing)


def timesteps_linspace_truncated(n, T, spacing):
    if spacing == "linspace":
        return np.linspace(0, T - 1, n)[::-1].astype(np.int64)
    return timesteps(n, T, spacing)


def timesteps_float(n, T, spacing):
    if spacing == "linspace":
        return np.linspace(0, T - 1, n)[::-1].copy()
    return timesteps(n, T, spacing)


@torch.no_grad()
def sample_no_init_noise_sigma(unet, scheduler, x_T, num_inference_steps, generator=None):
    return sample(unet, scheduler, x_T / scheduler.init_noise_sigma, num_inference_steps,
                  generator)


@torch.no_grad()
def sample_no_scale_model_input(unet, scheduler, x_T, num_inference_steps, generator=None):
    scheduler.set_timesteps(num_inference_steps)
    x = x_T * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x, generator=generator).prev_sample
    return x


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check, answer", [
    (ch02.check_predict_x0, predict_x0),
    (ch02.check_timesteps, timesteps),
    (ch02.check_sample, sample),
])
def test_reference_answer_passes(check, answer, capsys):
    check(answer)  # a wrong answer raises ExerciseError
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, message", [
    (ch02.check_predict_x0, predict_x0_no_sqrt, "you divided by ᾱ_t"),
    (ch02.check_predict_x0, predict_x0_plus, "minus sign"),
    (ch02.check_timesteps, timesteps_ascending, "must be descending"),
    (ch02.check_timesteps, timesteps_trailing_off_by_one, "ends at T-1"),
    (ch02.check_timesteps, timesteps_linspace_truncated, "don't truncate"),
    (ch02.check_timesteps, timesteps_float, "not whole numbers"),
    (ch02.check_sample, sample_no_init_noise_sigma, "init_noise_sigma"),
    (ch02.check_sample, sample_no_scale_model_input, "scale_model_input(x, t)"),
])
def test_typical_mistake_gets_its_hint(check, wrong, message):
    with pytest.raises(ExerciseError, match=re.escape(message)):
        check(wrong)


@pytest.mark.parametrize("check", [ch02.check_predict_x0, ch02.check_timesteps,
                                   ch02.check_sample])
def test_stub_says_not_implemented(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(stub)


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, EulerDiscreteScheduler])
def test_reference_loop_is_the_pipeline(scheduler_cls):
    """The checker's reference is what DDPMPipeline computes for the same seed."""
    unet = ch01._tiny_unet((8, 16), layers_per_block=1, seed=0).eval()
    scheduler = scheduler_cls(beta_schedule="squaredcos_cap_v2")
    pipe = DDPMPipeline(unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(2, torch.Generator().manual_seed(0), num_inference_steps=4,
                  output_type="pt").images
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn((2, 3, 16, 16), generator=generator)
    x_0 = ch02.sample(unet, scheduler_cls.from_config(scheduler.config), x_T, 4, generator)
    torch.testing.assert_close(images, (x_0 / 2 + 0.5).clamp(0, 1))
