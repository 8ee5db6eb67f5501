"""The exercise checkers of every chapter (`ddlearn.checks.ch01` ... `ch07`), one table each.

Every exercise is tested the same way: each reference answer (what the notebook's solution cell
contains) passes; each typical wrong answer fails with the hint that names its mistake; an
untouched stub says "not implemented"; an answer that returns None (or does nothing) is told so.
A row of a table is an `Exercise`; the promises that do not fit that shape (a checker's reference
is what a pipeline computes, ...) follow the tables.
"""

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddlearn.checks import ExerciseError, ch01, ch02, ch03, ch04, ch05, ch07, tiny_unet
from ddlearn.pipelines.ddpm import DDIMPipeline, DDPMPipeline
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.euler import EulerDiscreteScheduler


@dataclass
class Exercise:
    """One checker and the answers it is tested with."""

    check: Callable
    answers: tuple  # reference answers: each must pass
    mistakes: dict = field(default_factory=dict)  # wrong answer -> words its hint must contain
    returns_none: str = "forget `return`"  # words the message for `lambda *args: None` contains


def stub(*args):
    raise NotImplementedError  # your code here


# --------------------------------------------------------------------------------------------------
# Chapter 01: postprocess, seeded noise, parameters per block
# --------------------------------------------------------------------------------------------------
def postprocess(images):
    images = (images / 2 + 0.5).clamp(0, 1)  # [-1, 1] -> [0, 1]
    images = images.permute(0, 2, 3, 1).numpy()  # (B, C, H, W) -> (B, H, W, C)
    return (images * 255).round().astype(np.uint8)


def seeded_noise(seeds, shape):
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(s))
                      for s in seeds])


def params_per_block(unet):
    counts = {}
    for name, child in unet.named_children():
        if isinstance(child, torch.nn.ModuleList):
            for i, block in enumerate(child):
                counts[f"{name}.{i}"] = sum(p.numel() for p in block.parameters())
        else:
            counts[name] = sum(p.numel() for p in child.parameters())
    return counts


# typical wrong answers
def postprocess_truncates(images):
    images = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return (images * 255).astype(np.uint8)


def postprocess_no_permute(images):
    return ((images / 2 + 0.5).clamp(0, 1) * 255).round().numpy().astype(np.uint8)


def postprocess_float(images):
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def postprocess_no_shift(images):
    return (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def seeded_noise_one_generator(seeds, shape):
    return torch.randn((len(seeds), *shape), generator=torch.Generator().manual_seed(seeds[0]))


def seeded_noise_list(seeds, shape):
    return [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]


def params_not_expanded(unet):
    return {name: sum(p.numel() for p in child.parameters())
            for name, child in unet.named_children()}


def params_counts_tensors(unet):
    return {name: len(list(unet.get_submodule(name).parameters()))
            for name in params_per_block(unet)}


CH01 = [
    Exercise(ch01.check_postprocess, (postprocess,), {
        postprocess_truncates: "round first",
        postprocess_no_permute: "channels-first",
        postprocess_float: "expected uint8",
        postprocess_no_shift: "not [0, 1]",
    }),
    Exercise(ch01.check_seeded_noise, (seeded_noise,), {
        seeded_noise_one_generator: "one generator",
        seeded_noise_list: "torch.cat",
    }),
    Exercise(ch01.check_params_per_block, (params_per_block,), {
        params_not_expanded: "nn.ModuleLists",
        params_counts_tensors: "p.numel()",
    }, returns_none="expected a dict {name: count}"),
]


# --------------------------------------------------------------------------------------------------
# Chapter 02: predicted x_0, timestep spacings, the sampling loop
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


# typical wrong answers
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


CH02 = [
    Exercise(ch02.check_predict_x0, (predict_x0,), {
        predict_x0_no_sqrt: "you divided by ᾱ_t",
        predict_x0_plus: "minus sign",
    }),
    Exercise(ch02.check_timesteps, (timesteps,), {
        timesteps_ascending: "must be descending",
        timesteps_trailing_off_by_one: "ends at T-1",
        timesteps_linspace_truncated: "don't truncate",
        timesteps_float: "not whole numbers",
    }),
    Exercise(ch02.check_sample, (sample,), {
        sample_no_init_noise_sigma: "init_noise_sigma",
        sample_no_scale_model_input: "scale_model_input(x, t)",
    }),
]


# --------------------------------------------------------------------------------------------------
# Chapter 03: add_noise, one DDIM step, one Euler step
# --------------------------------------------------------------------------------------------------
def add_noise(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t].view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * noise


def ddim_step(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    x0_hat = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    return alpha_prod_t_prev.sqrt() * x0_hat + (1 - alpha_prod_t_prev).sqrt() * eps


def euler_step(eps, x, sigma, sigma_next):
    return x + (sigma_next - sigma) * eps


# typical wrong answers
def add_noise_variances(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar_t * x0 + (1 - abar_t) * noise


def add_noise_one_minus_sqrt(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar_t.sqrt() * x0 + (1 - abar_t.sqrt()) * noise


def add_noise_no_broadcast(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t]  # (B,) against (B, C, H, W): a shape error
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * noise


def ddim_step_wrong_direction(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    x0_hat = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    return alpha_prod_t_prev.sqrt() * x0_hat + (1 - alpha_prod_t).sqrt() * eps


def ddim_step_returns_x0(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    return (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()


def euler_step_wrong_sign(eps, x, sigma, sigma_next):
    return x + (sigma - sigma_next) * eps


def euler_step_scaled(eps, x, sigma, sigma_next):
    return x / (sigma**2 + 1) ** 0.5 + (sigma_next - sigma) * eps


def euler_step_off_by_a_bit(eps, x, sigma, sigma_next):
    return euler_step(eps, x, sigma, sigma_next) * 1.01


CH03 = [
    Exercise(ch03.check_add_noise, (add_noise,), {
        add_noise_variances: "square roots",
        add_noise_one_minus_sqrt: "not 1-√ᾱ_t",
        add_noise_no_broadcast: "(B, 1, 1, 1)",
    }),
    Exercise(ch03.check_ddim_step, (ddim_step,), {
        ddim_step_wrong_direction: "ᾱ of the *previous* step",
        ddim_step_returns_x0: "you returned x̂_0 itself",
    }),
    Exercise(ch03.check_euler_step, (euler_step,), {
        euler_step_wrong_sign: "*down* in σ",
        euler_step_scaled: "scale_model_input",
        euler_step_off_by_a_bit: "x_next = x + (σ_next - σ) d",  # no known mistake: the rule
    }),
]


# --------------------------------------------------------------------------------------------------
# Chapter 04: the training loss, logit-normal timesteps, velocity, EMA
# --------------------------------------------------------------------------------------------------
def training_loss(model, scheduler, x0, noise, t):
    x_t = scheduler.add_noise(x0, noise, t)
    return F.mse_loss(model(x_t, t).sample, noise)


def logit_normal(batch_size, num_train_timesteps, generator):
    n = torch.randn(batch_size, generator=generator)
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def logit_normal_other_rng(batch_size, num_train_timesteps, generator):
    """Correct, but draws n = Φ⁻¹(u) from uniforms: other numbers, same distribution."""
    u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    n = 2 ** 0.5 * torch.erfinv(2 * u - 1)
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def velocity(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t].view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
    return abar_t.sqrt() * noise - (1 - abar_t).sqrt() * x0


def ema_update(ema_params, params, decay):
    for e, p in zip(ema_params, params, strict=True):
        e.mul_(decay).add_(p, alpha=1 - decay)


# typical wrong answers
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


CH04 = [
    Exercise(ch04.check_training_loss, (training_loss,), {
        loss_on_x0: "recover the *noise*",
        loss_without_noising: "must see the *noisy* images",
        loss_without_sample: ".sample",
        loss_per_pixel: "one number",
    }),
    Exercise(ch04.check_logit_normal_timesteps, (logit_normal, logit_normal_other_rng), {
        logit_normal_float: ".round().long()",
        logit_normal_no_sigmoid: "torch.sigmoid",
        uniform_not_logit_normal: "look uniform",
    }, returns_none="return a tensor"),
    Exercise(ch04.check_velocity, (velocity,), {
        velocity_flipped: "sign is flipped",
        velocity_no_broadcast: "(B, 1, 1, 1)",
    }),
    Exercise(ch04.check_ema_update, (ema_update,), {
        ema_swapped: "weights are swapped",
        ema_not_in_place: "returned new tensors",
    }, returns_none="did not change"),  # the answer updates in place: None is doing nothing
]


# --------------------------------------------------------------------------------------------------
# Chapter 05: classifier-free guidance, VAE latents, img2img timesteps
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


# typical wrong answers
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


CH05 = [
    Exercise(ch05.check_classifier_free_guidance, (classifier_free_guidance,), {
        cfg_swapped: "halves are swapped",
        cfg_direction_only: "guidance *direction*",
        cfg_not_split: "noise_pred.chunk(2)",
    }),
    Exercise(ch05.check_encode_latents, (encode_latents,), {
        encode_unscaled: "raw VAE latents z",
        encode_without_pixel_range: "pixels in [-1, 1]",
        encode_returns_distribution: "return a tensor",
    }),
    Exercise(ch05.check_decode_latents, (decode_latents,), {
        decode_multiplies: "(you multiplied)",
        decode_without_clamp: "clamp the result",
    }),
    Exercise(ch05.check_img2img_timesteps, (img2img_timesteps,), {
        img2img_first_steps: "*first* steps",
        img2img_rounded: "round down",
        img2img_without_order: "scheduler.order",
        img2img_skips_strength: "(1 - strength)",
    }),
]


# --------------------------------------------------------------------------------------------------
# Chapter 07: the flow-matching path, its velocity, the Euler step, patchify
# --------------------------------------------------------------------------------------------------
def flow_noised(x0, noise, sigma):
    sigma = sigma.view(-1, *[1] * (x0.ndim - 1))  # (B,) -> (B, 1, 1, 1)
    return (1 - sigma) * x0 + sigma * noise


def flow_noised_swapped(x0, noise, sigma):
    sigma = sigma.view(-1, 1, 1, 1)
    return sigma * x0 + (1 - sigma) * noise


def flow_noised_vp(x0, noise, sigma):
    sigma = sigma.view(-1, 1, 1, 1)
    return (1 - sigma).sqrt() * x0 + sigma.sqrt() * noise


def flow_noised_unbroadcast(x0, noise, sigma):
    return (1 - sigma) * x0 + sigma * noise


def velocity_target(x0, noise):
    return noise - x0


def velocity_target_flipped(x0, noise):
    return x0 - noise


def euler_step(velocity, sigma, sigma_next, sample):
    return sample + (sigma_next - sigma) * velocity


def euler_step_backwards(velocity, sigma, sigma_next, sample):
    return sample + (sigma - sigma_next) * velocity


def euler_step_by_sigma_next(velocity, sigma, sigma_next, sample):
    return sample + sigma_next * velocity


def patchify(latents, p):
    B, C, h, w = latents.shape
    x = latents.reshape(B, C, h // p, p, w // p, p)  # split rows and columns into patches
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h/p, w/p, p, p, C)
    return x.reshape(B, (h // p) * (w // p), p * p * C)


def patchify_unfold(latents, p):  # torch's own im2col, then (row, column, channel) order
    B, C, h, w = latents.shape
    patches = F.unfold(latents, kernel_size=p, stride=p)  # (B, C·p·p, N)
    return patches.view(B, C, p * p, -1).permute(0, 3, 2, 1).reshape(B, -1, p * p * C)


def patchify_channels_first(latents, p):
    B, C, h, w = latents.shape
    x = latents.reshape(B, C, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, -1, C * p * p)


def patchify_column_major(latents, p):
    B, C, h, w = latents.shape
    x = latents.reshape(B, C, h // p, p, w // p, p).permute(0, 4, 2, 3, 5, 1)
    return x.reshape(B, -1, p * p * C)


def patchify_no_grouping(latents, p):
    B, C, h, w = latents.shape
    return latents.permute(0, 2, 3, 1).reshape(B, -1, p * p * C)


CH07 = [
    Exercise(ch07.check_flow_noised, (flow_noised,), {
        flow_noised_swapped: "swapped the weights",
        flow_noised_vp: "variance-preserving",
        flow_noised_unbroadcast: "view it as (B, 1, 1, 1)",
    }),
    Exercise(ch07.check_velocity_target, (velocity_target,), {
        velocity_target_flipped: "sign is flipped",
    }),
    Exercise(ch07.check_euler_step, (euler_step,), {
        euler_step_backwards: "wrong way",
        euler_step_by_sigma_next: "*change* in σ",
    }),
    Exercise(ch07.check_patchify, (patchify, patchify_unfold), {
        patchify_channels_first: "channel first",
        patchify_column_major: "column by column",
        patchify_no_grouping: "without grouping",
    }),
]


EXERCISES = CH01 + CH02 + CH03 + CH04 + CH05 + CH07


def named(exercise: Exercise, *rest) -> str:
    """A readable test id: `ch03.check_euler_step-euler_step_scaled`."""
    chapter = exercise.check.__module__.rsplit(".", 1)[-1]
    return "-".join([f"{chapter}.{exercise.check.__name__}", *(f.__name__ for f in rest)])


ANSWERS = [pytest.param(e.check, answer, id=named(e, answer))
           for e in EXERCISES for answer in e.answers]
MISTAKES = [pytest.param(e.check, wrong, words, id=named(e, wrong))
            for e in EXERCISES for wrong, words in e.mistakes.items()]
CHECKS = [pytest.param(e.check, id=named(e)) for e in EXERCISES]
RETURNS_NONE = [pytest.param(e.check, e.returns_none, id=named(e)) for e in EXERCISES]


# --------------------------------------------------------------------------------------------------
# The shape every exercise shares
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check, answer", ANSWERS)
def test_reference_answer_passes(check, answer, capsys):
    torch.manual_seed(0)  # (an answer drawing from torch's global generator sees fixed numbers)
    check(answer)  # a wrong answer raises ExerciseError
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, words", MISTAKES)
def test_typical_mistake_gets_its_hint(check, wrong, words):
    with pytest.raises(ExerciseError) as error:
        check(wrong)
    assert words in str(error.value)


@pytest.mark.parametrize("check", CHECKS)
def test_untouched_stub_says_not_implemented(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(stub)


@pytest.mark.parametrize("check, words", RETURNS_NONE)
def test_returning_none_is_reported(check, words):
    with pytest.raises(ExerciseError) as error:
        check(lambda *args: None)
    assert words in str(error.value)


# --------------------------------------------------------------------------------------------------
# Promises of one chapter
# --------------------------------------------------------------------------------------------------
def test_seeded_noise_is_what_a_pipeline_draws_from_a_list_of_generators():
    """Chapter 01's promise: image i of a batch made with one generator per seed is the image a
    batch of one makes with seeds[i] (DDIM, η = 0: the start noise is the only randomness)."""
    unet = tiny_unet((8, 16), layers_per_block=1, seed=0).eval()
    pipe = DDIMPipeline(unet, DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    generators = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]
    batch = pipe(3, generators([10, 11, 12]), num_inference_steps=3, output_type="pt").images
    alone = pipe(1, generators([11]), num_inference_steps=3, output_type="pt").images
    torch.testing.assert_close(batch[1:2], alone)


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, EulerDiscreteScheduler])
def test_reference_loop_is_the_pipeline(scheduler_cls):
    """Chapter 02's check_sample compares with ch02.sample: what DDPMPipeline computes."""
    unet = tiny_unet((8, 16), layers_per_block=1, seed=0).eval()
    scheduler = scheduler_cls(beta_schedule="squaredcos_cap_v2")
    pipe = DDPMPipeline(unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(2, torch.Generator().manual_seed(0), num_inference_steps=4,
                  output_type="pt").images
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn((2, 3, 16, 16), generator=generator)
    x_0 = ch02.sample(unet, scheduler_cls.from_config(scheduler.config), x_T, 4, generator)
    torch.testing.assert_close(images, (x_0 / 2 + 0.5).clamp(0, 1))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_match_diffusers_training_scripts(prediction_type):
    """Chapter 04 trains with min-SNR weights (ddlearn.training): diffusers' recipe."""
    from diffusers import DDPMScheduler as DiffusersDDPM
    from diffusers.training_utils import compute_snr

    from ddlearn.losses import min_snr_weights

    config = dict(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    t = torch.tensor([0, 3, 50, 300, 700, 999])
    snr = compute_snr(DiffusersDDPM(**config), t)  # diffusers' train_text_to_image.py recipe
    expected = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    expected = expected / (snr if prediction_type == "epsilon" else snr + 1)
    ours = min_snr_weights(DDPMScheduler(**config), t, snr_gamma=5.0)
    assert torch.allclose(ours.float(), expected, rtol=1e-5)
