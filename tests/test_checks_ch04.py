"""Chapter 04's exercise checkers: the reference answer passes, typical wrong answers fail with the
hint that names the mistake, and an untouched stub says "not implemented"."""

import pytest
import torch
import torch.nn.functional as F

from ddlearn.checks import ExerciseError, ch04


# --------------------------------------------------------------------------------------------------
# Reference answers (what the notebook's solution cells contain)
# --------------------------------------------------------------------------------------------------
def training_loss(model, scheduler, x0, noise, t):
    x_t = scheduler.add_noise(x0, noise, t)
    return F.mse_loss(model(x_t, t).sample, noise)


def logit_normal(batch_size, num_train_timesteps, generator):
    n = torch.randn(batch_size, generator=generator)
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def logit_normal_other_rng(batch_size, num_train_timesteps, generator):
    """Correct, but draws through torch.distributions: other numbers, same distribution."""
    n = torch.distributions.Normal(0.0, 1.0).sample((batch_size,))
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def velocity(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t].view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
    return abar_t.sqrt() * noise - (1 - abar_t).sqrt() * x0


def ema_update(ema_params, params, decay):
    for e, p in zip(ema_params, params, strict=True):
        e.mul_(decay).add_(p, alpha=1 - decay)


def stub(*args):
    raise NotImplementedError  # your code here


# --------------------------------------------------------------------------------------------------
# Typical wrong answers
# --------------------------------------------------------------------------------------------------
def loss_on_x0(model, scheduler, x0, noise, t):
    return F.mse_loss(model(scheduler.add_noise(x0, noise, t), t).sample, x0)


def loss_without_noising(model, scheduler, x0, noise, t):
    return F.mse_loss(model(x0, t).sample, noise)


def loss_without_sample(model, scheduler, x0, noise, t):
    return F.mse_loss(model(scheduler.add_noise(x0, noise, t), t), noise)


def loss_per_pixel(model, scheduler, x0, noise, t):
    return F.mse_loss(model(scheduler.add_noise(x0, noise, t), t).sample, noise, reduction="none")


def logit_normal_float(batch_size, num_train_timesteps, generator):
    return torch.sigmoid(torch.randn(batch_size, generator=generator)) * (num_train_timesteps - 1)


def logit_normal_no_sigmoid(batch_size, num_train_timesteps, generator):
    return (torch.randn(batch_size, generator=generator) * (num_train_timesteps - 1)).long()


def uniform_not_logit_normal(batch_size, num_train_timesteps, generator):
    u = torch.rand(batch_size, generator=generator)
    return (u * (num_train_timesteps - 1)).round().long()


def velocity_flipped(x0, noise, alphas_cumprod, t):
    return -velocity(x0, noise, alphas_cumprod, t)


def velocity_no_broadcast(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t]
    return abar_t.sqrt() * noise - (1 - abar_t).sqrt() * x0


def ema_swapped(ema_params, params, decay):
    for e, p in zip(ema_params, params, strict=True):
        e.copy_((1 - decay) * e + decay * p)


def ema_not_in_place(ema_params, params, decay):
    return [decay * e + (1 - decay) * p for e, p in zip(ema_params, params, strict=True)]


@pytest.mark.parametrize("check, answer", [(ch04.check_training_loss, training_loss),
                                           (ch04.check_logit_normal_timesteps, logit_normal),
                                           (ch04.check_logit_normal_timesteps,
                                            logit_normal_other_rng),
                                           (ch04.check_velocity, velocity),
                                           (ch04.check_ema_update, ema_update)])
def test_reference_answer_passes(check, answer, capsys):
    torch.manual_seed(0)
    check(answer)  # a wrong answer raises ExerciseError
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, words", [
    (ch04.check_training_loss, loss_on_x0, "recover the *noise*"),
    (ch04.check_training_loss, loss_without_noising, "must see the *noisy* images"),
    (ch04.check_training_loss, loss_without_sample, ".sample"),
    (ch04.check_training_loss, loss_per_pixel, "one number"),
    (ch04.check_logit_normal_timesteps, logit_normal_float, ".round().long()"),
    (ch04.check_logit_normal_timesteps, logit_normal_no_sigmoid, "torch.sigmoid"),
    (ch04.check_logit_normal_timesteps, uniform_not_logit_normal, "look uniform"),
    (ch04.check_velocity, velocity_flipped, "sign is flipped"),
    (ch04.check_velocity, velocity_no_broadcast, "(B, 1, 1, 1)"),
    (ch04.check_ema_update, ema_swapped, "weights are swapped"),
    (ch04.check_ema_update, ema_not_in_place, "returned new tensors"),
])
def test_typical_mistake_is_named(check, wrong, words):
    with pytest.raises(ExerciseError, match=None) as error:
        check(wrong)
    assert words in str(error.value)


@pytest.mark.parametrize("check", [ch04.check_training_loss, ch04.check_logit_normal_timesteps,
                                   ch04.check_velocity, ch04.check_ema_update])
def test_untouched_stub_says_not_implemented(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(stub)


# --------------------------------------------------------------------------------------------------
# The min-SNR loss the chapter trains with (appended to ddlearn.training for chapter 04)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_match_diffusers_training_scripts(prediction_type):
    from diffusers import DDPMScheduler as DiffusersDDPM
    from diffusers.training_utils import compute_snr

    from ddlearn.schedulers.ddpm import DDPMScheduler
    from ddlearn.training import min_snr_weights

    config = dict(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    t = torch.tensor([0, 3, 50, 300, 700, 999])
    snr = compute_snr(DiffusersDDPM(**config), t)  # diffusers' train_text_to_image.py recipe
    expected = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    expected = expected / (snr if prediction_type == "epsilon" else snr + 1)
    ours = min_snr_weights(DDPMScheduler(**config), t, snr_gamma=5.0)
    assert torch.allclose(ours.float(), expected, rtol=1e-5)


def test_min_snr_loss_without_clipping_is_the_plain_loss():
    """γ = ∞ makes every ε weight SNR/SNR = 1: the same draws and the same number as
    diffusion_loss."""
    from ddlearn.schedulers.ddpm import DDPMScheduler
    from ddlearn.training import diffusion_loss, min_snr_loss

    model, scheduler = ch04._tiny_unet(), DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    x0 = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = diffusion_loss(model, scheduler, x0, torch.Generator().manual_seed(1))
        weighted = min_snr_loss(model, scheduler, x0, torch.Generator().manual_seed(1),
                                snr_gamma=float("inf"))
    assert torch.allclose(plain, weighted, rtol=1e-5)
