"""Chapter 05's exercise checkers: the reference answer passes, typical wrong answers fail with the
hint that names the mistake, and an untouched stub says "not implemented"."""

import pytest

from ddlearn.checks import ExerciseError, ch05


# --------------------------------------------------------------------------------------------------
# Reference answers (what the notebook's solution cells contain)
# --------------------------------------------------------------------------------------------------
def classifier_free_guidance(noise_pred, guidance_scale):
    eps_uncond, eps_text = noise_pred.chunk(2)
    return eps_uncond + guidance_scale * (eps_text - eps_uncond)


def encode_latents(vae, images):
    z = vae.encode(2 * images - 1).latent_dist.mode()
    return z * vae.config.scaling_factor


def decode_latents(vae, latents):
    x = vae.decode(latents / vae.config.scaling_factor).sample
    return (x / 2 + 0.5).clamp(0, 1)


def img2img_timesteps(scheduler, num_inference_steps, strength):
    scheduler.set_timesteps(num_inference_steps)
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    t_start = (num_inference_steps - init_timestep) * scheduler.order
    return scheduler.timesteps[t_start:]


def stub(*args):
    raise NotImplementedError  # your code here


# --------------------------------------------------------------------------------------------------
# Typical wrong answers
# --------------------------------------------------------------------------------------------------
def cfg_swapped(noise_pred, guidance_scale):
    eps_text, eps_uncond = noise_pred.chunk(2)
    return eps_uncond + guidance_scale * (eps_text - eps_uncond)


def cfg_direction_only(noise_pred, guidance_scale):
    eps_uncond, eps_text = noise_pred.chunk(2)
    return guidance_scale * (eps_text - eps_uncond)


def cfg_not_split(noise_pred, guidance_scale):
    return guidance_scale * noise_pred


def encode_unscaled(vae, images):
    return vae.encode(2 * images - 1).latent_dist.mode()


def encode_without_pixel_range(vae, images):
    return vae.encode(images).latent_dist.mode() * vae.config.scaling_factor


def encode_returns_distribution(vae, images):
    return vae.encode(2 * images - 1).latent_dist


def decode_multiplies(vae, latents):
    x = vae.decode(latents * vae.config.scaling_factor).sample
    return (x / 2 + 0.5).clamp(0, 1)


def decode_without_clamp(vae, latents):
    return vae.decode(latents / vae.config.scaling_factor).sample / 2 + 0.5


def img2img_first_steps(scheduler, num_inference_steps, strength):
    scheduler.set_timesteps(num_inference_steps)
    return scheduler.timesteps[:int(num_inference_steps * strength)]


def img2img_rounded(scheduler, num_inference_steps, strength):
    scheduler.set_timesteps(num_inference_steps)
    t_start = (num_inference_steps - round(num_inference_steps * strength)) * scheduler.order
    return scheduler.timesteps[t_start:]


def img2img_without_order(scheduler, num_inference_steps, strength):
    scheduler.set_timesteps(num_inference_steps)
    return scheduler.timesteps[num_inference_steps - int(num_inference_steps * strength):]


def img2img_skips_strength(scheduler, num_inference_steps, strength):
    scheduler.set_timesteps(num_inference_steps)
    return scheduler.timesteps[int(num_inference_steps * strength) * scheduler.order:]


CHECKS = [(ch05.check_classifier_free_guidance, classifier_free_guidance),
          (ch05.check_encode_latents, encode_latents),
          (ch05.check_decode_latents, decode_latents),
          (ch05.check_img2img_timesteps, img2img_timesteps)]


@pytest.mark.parametrize("check, answer", CHECKS)
def test_reference_answer_passes(check, answer, capsys):
    check(answer)  # a wrong answer raises ExerciseError
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, words", [
    (ch05.check_classifier_free_guidance, cfg_swapped, "halves are swapped"),
    (ch05.check_classifier_free_guidance, cfg_direction_only, "guidance *direction*"),
    (ch05.check_classifier_free_guidance, cfg_not_split, "noise_pred.chunk(2)"),
    (ch05.check_encode_latents, encode_unscaled, "raw VAE latents z"),
    (ch05.check_encode_latents, encode_without_pixel_range, "pixels in [-1, 1]"),
    (ch05.check_encode_latents, encode_returns_distribution, "return a tensor"),
    (ch05.check_decode_latents, decode_multiplies, "(you multiplied)"),
    (ch05.check_decode_latents, decode_without_clamp, "clamp the result"),
    (ch05.check_img2img_timesteps, img2img_first_steps, "*first* steps"),
    (ch05.check_img2img_timesteps, img2img_rounded, "round down"),
    (ch05.check_img2img_timesteps, img2img_without_order, "scheduler.order"),
    (ch05.check_img2img_timesteps, img2img_skips_strength, "(1 - strength)"),
])
def test_typical_mistake_gets_its_hint(check, wrong, words):
    with pytest.raises(ExerciseError) as error:
        check(wrong)
    assert words in str(error.value)


@pytest.mark.parametrize("check", [check for check, _ in CHECKS])
def test_stub_says_not_implemented(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(stub)


def test_forgetting_return_is_reported():
    with pytest.raises(ExerciseError, match="forget `return`"):
        ch05.check_classifier_free_guidance(lambda noise_pred, w: None)
