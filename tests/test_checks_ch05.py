"""Chapter 05's checks: the notebook's solutions pass the public and hidden cases, answers that call
ddlearn's own implementation or hard-code the public cases fail, and each usual mistake gets its
own hint (img2img's recipes must not collide), and keep-going hands back the reference."""

import math
from types import SimpleNamespace

import pytest
import torch

import ddlearn.checks.runner as runner
from ddlearn.checks import ExerciseError, ch05
from ddlearn.data.transforms import denormalize
from ddlearn.models.vae_wrapper import VAEWrapper
from ddlearn.pipelines.stable_diffusion import StableDiffusionPipeline
from ddlearn.pipelines.stable_diffusion_img2img import StableDiffusionImg2ImgPipeline

SHIPPED_SCALE = 0.8785690665245056  # the shipped tiny SD's vae.config.scaling_factor


# --------------------------------------------------------------------------------------------------
# The notebook's solutions, copied from its solution cells
# --------------------------------------------------------------------------------------------------
def encode_latents(vae, images):
    z = vae.encode(2 * images - 1).latent_dist.mode()  # [0, 1] -> [-1, 1] -> posterior mean
    return z * vae.config.scaling_factor


def decode_latents(vae, latents):
    x = vae.decode(latents / vae.config.scaling_factor).sample  # in [-1, 1]
    return (x / 2 + 0.5).clamp(0, 1)


def classifier_free_guidance(noise_pred, guidance_scale):
    eps_uncond, eps_text = noise_pred.chunk(2)  # (2B, 4, h, w) -> 2 x (B, 4, h, w)
    return eps_uncond + guidance_scale * (eps_text - eps_uncond)


def img2img_timesteps(scheduler, num_inference_steps, strength):
    scheduler.set_timesteps(num_inference_steps)
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    t_start = (num_inference_steps - init_timestep) * scheduler.order
    return scheduler.timesteps[t_start:]


SOLUTIONS = [(ch05.check_encode_latents, encode_latents),
             (ch05.check_decode_latents, decode_latents),
             (ch05.check_classifier_free_guidance, classifier_free_guidance),
             (ch05.check_img2img_timesteps, img2img_timesteps)]
REFERENCES = [ch05.reference_encode_latents, ch05.reference_decode_latents,
              ch05.reference_classifier_free_guidance, ch05.reference_img2img_timesteps]


def message(check, fn, hidden=False) -> str:
    with pytest.raises(ExerciseError) as error:
        check(fn, hidden=hidden)
    return str(error.value)


@pytest.mark.parametrize("hidden", [False, True, 7])
@pytest.mark.parametrize("check, solution", SOLUTIONS)
def test_solution_passes(check, solution, hidden, capsys):
    with torch.no_grad():  # as the notebook's check cell for the VAE
        assert check(solution, hidden=hidden) is solution
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("check, reference", [(check, reference) for (check, _), reference
                                               in zip(SOLUTIONS, REFERENCES, strict=True)])
def test_calling_the_reference_is_forbidden(check, reference):
    assert "ddlearn's own" in message(check, lambda *args: reference(*args))


@pytest.mark.parametrize("check, cheat", [
    (ch05.check_encode_latents, lambda vae, images: VAEWrapper(vae).encode(images)),
    (ch05.check_encode_latents, lambda vae, images: StableDiffusionImg2ImgPipeline.encode_image(
        SimpleNamespace(vae=vae), 2 * images - 1, len(images), None)),
    (ch05.check_decode_latents, lambda vae, z: VAEWrapper(vae).decode(z, output_type="pt")),
    (ch05.check_decode_latents, lambda vae, z: denormalize(
        StableDiffusionPipeline.decode_latents(SimpleNamespace(vae=vae), z))),
    (ch05.check_img2img_timesteps, lambda scheduler, n, strength:
        StableDiffusionImg2ImgPipeline.get_timesteps(
            SimpleNamespace(scheduler=scheduler, device="cpu"), n, strength)),
])
def test_calling_ddlearns_implementation_is_forbidden(check, cheat):
    assert "ddlearn's own" in message(check, cheat)


def test_references_equal_the_solutions():
    vae, images = ch05.latents._vae(), ch05.latents._butterflies([1, 2])
    with torch.no_grad():
        latents = encode_latents(vae, images)
        torch.testing.assert_close(ch05.reference_encode_latents(vae, images), latents)
        torch.testing.assert_close(ch05.reference_decode_latents(vae, latents),
                                   decode_latents(vae, latents))
    noise_pred = torch.randn(6, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(ch05.reference_classifier_free_guidance(noise_pred, 7.5),
                               classifier_free_guidance(noise_pred, 7.5))
    for make, n, strength in [(ch05.PNDM, 25, 0.6), (ch05.HEUN, 10, 0.37), (ch05.DDIM, 7, 1.0)]:
        torch.testing.assert_close(ch05.reference_img2img_timesteps(make(), n, strength),
                                   img2img_timesteps(make(), n, strength))


def test_keep_going_returns_the_reference(monkeypatch, capsys):
    monkeypatch.setattr(runner, "KEEP_GOING", True)
    wrong = lambda noise_pred, guidance_scale: noise_pred.chunk(2)[1]
    used = ch05.check_classifier_free_guidance(wrong)
    assert used is ch05.reference_classifier_free_guidance
    assert "❌ classifier_free_guidance" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Answers that hard-code the public cases pass them, and fail the hidden ones
# --------------------------------------------------------------------------------------------------
def encode_fixed_scale(vae, images):
    return vae.encode(2 * images - 1).latent_dist.mode() * SHIPPED_SCALE


def decode_fixed_scale(vae, latents):
    return (vae.decode(latents / SHIPPED_SCALE).sample / 2 + 0.5).clamp(0, 1)


def cfg_fixed_shape(noise_pred, guidance_scale):
    eps_uncond, eps_text = noise_pred.view(2, -1, 4, 8, 8)  # the public latents only
    return eps_uncond + guidance_scale * (eps_text - eps_uncond)


def cfg_float32(noise_pred, guidance_scale):
    eps_uncond, eps_text = noise_pred.float().chunk(2)
    return eps_uncond + guidance_scale * (eps_text - eps_uncond)


def img2img_order_of_heun_only(scheduler, n, strength):
    scheduler.set_timesteps(n)
    order = 2 if type(scheduler).__name__ == "HeunDiscreteScheduler" else 1
    return scheduler.timesteps[(n - int(n * strength)) * order:]


@pytest.mark.parametrize("check, answer, words", [
    (ch05.check_encode_latents, encode_fixed_scale, "scaling"),
    (ch05.check_decode_latents, decode_fixed_scale, "scaling"),
    (ch05.check_classifier_free_guidance, cfg_fixed_shape, "noise_pred.chunk(2)"),
    (ch05.check_classifier_free_guidance, cfg_float32, "compute in noise_pred's dtype"),
    (ch05.check_img2img_timesteps, img2img_order_of_heun_only, "scheduler.order"),
])
def test_hard_coded_answer_fails_hidden(check, answer, words):
    with torch.no_grad():
        check(answer)
        for hidden in (True, 7):
            assert words in message(check, answer, hidden)


# --------------------------------------------------------------------------------------------------
# The usual mistakes get their hints
# --------------------------------------------------------------------------------------------------
def encode_output_object(vae, images):
    return vae.encode(2 * images - 1) * vae.config.scaling_factor


def encode_in_float32(vae, images):
    return encode_latents(vae, images.float())


def decode_output_object(vae, latents):
    return (vae.decode(latents / vae.config.scaling_factor) / 2 + 0.5).clamp(0, 1)


def decode_unscaled(vae, latents):
    return (vae.decode(latents).sample / 2 + 0.5).clamp(0, 1)


def decode_without_pixel_range(vae, latents):
    return vae.decode(latents / vae.config.scaling_factor).sample.clamp(0, 1)


def cfg_from_conditional(noise_pred, guidance_scale):
    eps_uncond, eps_text = noise_pred.chunk(2)
    return eps_text + guidance_scale * (eps_text - eps_uncond)


def cfg_unpacked(noise_pred, guidance_scale):
    eps_uncond, eps_text = noise_pred
    return eps_uncond + guidance_scale * (eps_text - eps_uncond)


@pytest.mark.parametrize("check, wrong, hidden, words", [
    (ch05.check_encode_latents, encode_output_object, False, "its .latent_dist"),
    (ch05.check_encode_latents, encode_in_float32, True, "Keep the inputs' dtype"),
    (ch05.check_decode_latents, decode_output_object, False, "its tensor .sample"),
    (ch05.check_decode_latents, decode_unscaled, True, "not the latents themselves"),
    (ch05.check_decode_latents, decode_without_pixel_range, True, "x / 2 + 0.5"),
    (ch05.check_classifier_free_guidance, cfg_from_conditional, True, "start from the uncond"),
    (ch05.check_classifier_free_guidance, cfg_unpacked, False, "unpacking the tensor"),
])
def test_vae_and_guidance_mistakes(check, wrong, hidden, words):
    with torch.no_grad():
        assert words in message(check, wrong, hidden)


def img2img_recipe(rounding=int, offset=0, use_order=True, part="end", set_timesteps=True):
    """A wrong recipe for img2img_timesteps, one way off the solution."""
    def answer(scheduler, n, strength):
        if set_timesteps:
            scheduler.set_timesteps(n)
        init, order = rounding(n * strength), scheduler.order if use_order else 1
        timesteps, t_start = scheduler.timesteps, max((n - init) * order + offset, 0)
        return {"end": timesteps[t_start:], "first": timesteps[:init * order],
                "skip strength": timesteps[init * order:], "whole": timesteps}[part]
    return answer


IMG2IMG_MISTAKES = {  # recipe -> words of its own hint
    "ceil": (img2img_recipe(rounding=math.ceil), "up (math.ceil)"),
    "round": (img2img_recipe(rounding=round), "to the nearest integer"),
    "one late": (img2img_recipe(offset=1), "one entry too late"),
    "one early": (img2img_recipe(offset=-1), "one entry too early"),
    "no order": (img2img_recipe(use_order=False), "multiply by scheduler.order"),
    "first steps": (img2img_recipe(part="first"), "*first* steps"),
    "skip strength": (img2img_recipe(part="skip strength"), "(1 - strength)"),
    "no slice": (img2img_recipe(part="whole"), "the whole schedule"),
    "first steps, no order": (img2img_recipe(part="first", use_order=False), "*first* steps"),
}


@pytest.mark.parametrize("hidden", [False, True, 7])
@pytest.mark.parametrize("name", list(IMG2IMG_MISTAKES))
def test_each_img2img_mistake_gets_its_own_hint(name, hidden):
    wrong, words = IMG2IMG_MISTAKES[name]
    text = message(ch05.check_img2img_timesteps, wrong, hidden)
    assert words in text
    assert not any(other in text for _, other in IMG2IMG_MISTAKES.values() if other != words)


@pytest.mark.parametrize("hidden", [False, True])
def test_forgetting_set_timesteps_is_named(hidden):
    text = message(ch05.check_img2img_timesteps, img2img_recipe(set_timesteps=False), hidden)
    assert "call scheduler.set_timesteps(num_inference_steps) first" in text


def test_probes_tell_every_two_recipes_apart():
    """Every two wrong recipes (and the right one) differ on at least one probe."""
    def outputs(hint):
        results = []
        for make, n, strength in ch05.PROBES:
            scheduler = make()
            scheduler.set_timesteps(n)
            recipes = ch05.img2img_timesteps._wrong_recipes(scheduler, n, strength)
            results.append(recipes[hint] if hint else scheduler.timesteps[
                (n - int(n * strength)) * scheduler.order:])
        return results

    scheduler = ch05.DDIM()
    scheduler.set_timesteps(10)
    hints = [None, *ch05.img2img_timesteps._wrong_recipes(scheduler, 10, 0.5)]
    for i, a in enumerate(hints):
        for b in hints[i + 1:]:
            assert not all(ch05.common.matches(x, y)
                           for x, y in zip(outputs(a), outputs(b), strict=True))
