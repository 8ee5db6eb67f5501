"""Checkers for chapter 05 (Stable Diffusion internals): your function against ddlearn's pipeline.

    from ddlearn.checks import ch05
    ch05.check_encode_latents(encode_latents)      # images in [0, 1] -> s · Enc(2x - 1)
    ch05.check_decode_latents(decode_latents)      # scaled latents -> Dec(z / s) / 2 + 1/2, clamped
    ch05.check_classifier_free_guidance(cfg)       # ε̂ = ε_∅ + w (ε_c - ε_∅)  (Ho & Salimans eq. 6)
    ch05.check_img2img_timesteps(img2img_timesteps)  # the tail of the schedule img2img runs

The expected numbers come from ddlearn's own code, which your function may not call: `VAEWrapper`
(on the shipped tiny SD's VAE and synthetic butterflies) and
`StableDiffusionImg2ImgPipeline.get_timesteps`. Hidden cases (`hidden=True`) use other batch and
image sizes, small random VAEs with other latent channels, scaling factors and float64, other
shapes, guidance scales (1 and 0) and dtypes, other schedulers and step counts. When yours is off,
each check tries the usual mistakes and names the one your numbers match.
"""

import math
from functools import lru_cache, partial
from types import SimpleNamespace

import numpy as np
import torch

from ddlearn import schedulers
from ddlearn.checks import ExerciseError, compare, compare_with_mistakes, guard, randn, run_check
from ddlearn.data import shipped_model
from ddlearn.data.butterflies import make_butterfly
from ddlearn.models.vae import AutoencoderKL
from ddlearn.models.vae_wrapper import VAEWrapper
from ddlearn.pipelines.stable_diffusion import StableDiffusionPipeline
from ddlearn.pipelines.stable_diffusion_img2img import StableDiffusionImg2ImgPipeline

SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
PNDM = partial(schedulers.PNDMScheduler, skip_prk_steps=True, **SD_BETAS)  # SD 1.x's scheduler
DDIM = partial(schedulers.DDIMScheduler, **SD_BETAS)
HEUN = partial(schedulers.HeunDiscreteScheduler, **SD_BETAS)


def _matches(yours, expected) -> bool:
    """Whether `yours` passes compare() (a tensor of the same shape and values)."""
    try:
        compare("", yours, expected)
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Exercise 1: latent scaling
# --------------------------------------------------------------------------------------------------
def reference_encode_latents(vae, images):
    """The answer the cells below use while yours is not solved: s · (mean of q(z | 2x - 1))."""
    z = vae.encode(2 * images - 1).latent_dist.mode()  # [0, 1] -> [-1, 1] -> posterior mean
    return z * vae.config.scaling_factor


def reference_decode_latents(vae, latents):
    """The answer the cells below use while yours is not solved: Dec(latents / s) in [0, 1]."""
    x = vae.decode(latents / vae.config.scaling_factor).sample  # in [-1, 1]
    return (x / 2 + 0.5).clamp(0, 1)


@lru_cache(maxsize=1)
def _vae() -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(shipped_model("tiny-sd-butterflies"), subfolder="vae")


def _random_vae(seed, latent_channels, scaling_factor, dtype) -> AutoencoderKL:
    """A small untrained VAE (2 levels: H/2 × W/2 latents) with another config."""
    with torch.random.fork_rng(devices=[]):  # leaves torch's global generator as it was
        torch.manual_seed(seed)
        return AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=4,
                             down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2,
                             latent_channels=latent_channels,
                             scaling_factor=scaling_factor).to(dtype).eval()


def _butterflies(seeds, size=32) -> torch.Tensor:
    """Synthetic butterflies as a (B, 3, size, size) tensor in [0, 1]."""
    arrays = [np.asarray(make_butterfly(seed, size)[0], dtype=np.float32) / 255 for seed in seeds]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def _hidden_vaes(rng) -> list:
    """(vae, images) for hidden cases: the shipped VAE at another batch and size, and two small
    random VAEs with other latent channels and scaling factors, in float32 and float64."""
    seeds = lambda: rng.sample(range(10_000), rng.randint(1, 3))
    pairs = [(_vae(), _butterflies(seeds(), rng.choice((16, 24, 40))))]
    for dtype in (torch.float32, torch.float64):
        vae = _random_vae(rng.randrange(1000), rng.choice((3, 4, 8)), rng.choice((0.3, 0.5, 2.5)),
                          dtype)
        pairs.append((vae, _butterflies(seeds(), rng.choice((8, 12, 16))).to(dtype)))
    return pairs


def _explain_vae(output_hint):
    """explain= for the VAE exercises: the VAE's output objects, and dtypes."""
    def explain(error):
        text = str(error)
        if any(word in text for word in ("Output", "Distribution", "sequence")):
            return output_hint
        if "should be the same" in text or "expected scalar type" in text:
            return ("Keep the inputs' dtype, which is the VAE's (float64 in some cases): no "
                    ".float() or .double().")
        return None
    return explain


def check_encode_latents(fn, hidden=False):
    """fn(vae, images) -> scaled latents: images (B, 3, H, W) in [0, 1], the posterior mean."""
    yours = guard("encode_latents", fn, reference_encode_latents, VAEWrapper.encode,
                  StableDiffusionImg2ImgPipeline.encode_image, explain=_explain_vae(
                      "vae.encode(x) returns an AutoencoderKLOutput: the posterior is its "
                      ".latent_dist, and the tensor you want is its mean, .latent_dist.mode()."))

    def case(vae, images):
        with torch.no_grad():
            expected = VAEWrapper(vae).encode(images)
            latents = yours(vae, images.clone())
            if _matches(latents, expected):
                return
            s = vae.config.scaling_factor
            mistakes = {
                "these are the raw VAE latents z; the diffusion model works on z · "
                "scaling_factor (`vae.config.scaling_factor`).": expected / s,
                "multiply by the scaling factor when encoding (you divided).": expected / s / s,
                "the VAE expects pixels in [-1, 1]: map x ↦ 2x - 1 before `vae.encode`.":
                    vae.encode(images).latent_dist.mode() * s,
            }
        compare_with_mistakes("encode_latents", latents, expected, mistakes,
                  "z = vae.encode(2 · images - 1).latent_dist.mode() (the mean; .sample() adds "
                  "noise), then return z · vae.config.scaling_factor.")

    hidden_cases = lambda rng: [partial(case, vae, x) for vae, x in _hidden_vaes(rng)]
    return run_check("encode_latents", fn, lambda: case(_vae(), _butterflies([4, 9])),
                     lambda: case(_vae(), _butterflies([14])), hidden=hidden,
                     hidden_cases=hidden_cases, reference=reference_encode_latents)


def check_decode_latents(fn, hidden=False):
    """fn(vae, latents) -> images (B, 3, H, W) in [0, 1] from scaled latents."""
    yours = guard("decode_latents", fn, reference_decode_latents, VAEWrapper.decode,
                  StableDiffusionPipeline.decode_latents, explain=_explain_vae(
                      "vae.decode(z) returns a DecoderOutput: the image is its tensor .sample."))

    def case(vae, latents):
        with torch.no_grad():
            expected = VAEWrapper(vae).decode(latents, output_type="pt")
            images = yours(vae, latents.clone())
            if _matches(images, expected):
                return
            s, to_01 = vae.config.scaling_factor, lambda x: (x / 2 + 0.5).clamp(0, 1)
            x = vae.decode(latents / s).sample
            mistakes = {
                "divide by the scaling factor before `vae.decode` (you multiplied): "
                "z = latents / scaling_factor.": to_01(vae.decode(latents * s).sample),
                "the latents are scaled: decode z = latents / vae.config.scaling_factor, not "
                "the latents themselves.": to_01(vae.decode(latents).sample),
                "the decoder returns pixels in [-1, 1]: map them to [0, 1] with x / 2 + 0.5 "
                "(then clamp).": x.clamp(0, 1),
                "clamp the result to [0, 1]: the decoder can overshoot a little.": x / 2 + 0.5,
            }
        compare_with_mistakes("decode_latents", images, expected, mistakes,
                  "x = vae.decode(latents / vae.config.scaling_factor).sample is in [-1, 1]; "
                  "return (x / 2 + 0.5).clamp(0, 1).")

    hidden_cases = lambda rng: [partial(case, vae, VAEWrapper(vae).encode(x))
                                for vae, x in _hidden_vaes(rng)]
    return run_check("decode_latents", fn,
                     lambda: case(_vae(), VAEWrapper(_vae()).encode(_butterflies([4, 9]))),
                     lambda: case(_vae(), 1.5 * randn(1, 4, 8, 8, seed=3)),  # overshoots: clamp
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_decode_latents)


# --------------------------------------------------------------------------------------------------
# Exercise 2: classifier-free guidance
# --------------------------------------------------------------------------------------------------
def reference_classifier_free_guidance(noise_pred, guidance_scale):
    """The answer the cells below use while yours is not solved: ε_∅ + w (ε_c - ε_∅)."""
    eps_uncond, eps_text = noise_pred.chunk(2)  # (2B, 4, h, w) -> 2 x (B, 4, h, w)
    return eps_uncond + guidance_scale * (eps_text - eps_uncond)


def check_classifier_free_guidance(fn, hidden=False):
    """fn(noise_pred, guidance_scale) -> ε̂, where noise_pred = UNet output on the doubled batch
    (2B, 4, h, w): the B unconditional (empty prompt) predictions first, then the B conditional.

    Hidden cases: other batch sizes, channels and latent sizes, float64, w = 1 and w = 0."""
    def explain(error):
        if "unpack" in str(error):
            return ("split the batch with `noise_pred.chunk(2)`: unpacking the tensor itself goes "
                    "over its 2B rows.")
        if "invalid for input of size" in str(error):
            return "noise_pred.chunk(2) splits any (2B, C, h, w): do not hard-code B, C, h or w."
        return None
    yours = guard("classifier_free_guidance", fn, reference_classifier_free_guidance,
                  StableDiffusionPipeline.denoise, explain=explain)

    def case(batch, w, seed, shape=(4, 8, 8), dtype=torch.float32):
        noise_pred = randn(2 * batch, *shape, seed=seed).to(dtype)
        eps_uncond, eps_text = noise_pred.chunk(2)  # (2B, 4, h, w) -> 2 x (B, 4, h, w)
        expected = eps_uncond + w * (eps_text - eps_uncond)
        mistakes = {  # (at w = 0 the first and the last are both ε_c: w = 0 comes last)
            "the halves are swapped: the pipeline stacks [∅, c], so `noise_pred.chunk(2)` gives "
            "(ε_∅, ε_c) in that order.": eps_text + w * (eps_uncond - eps_text),
            "you returned only w (ε_c - ε_∅), the guidance *direction*; add it to the "
            "unconditional prediction ε_∅.": w * (eps_text - eps_uncond),
            "start from the unconditional ε_∅, not the conditional ε_c: "
            "ε̂ = ε_∅ + w (ε_c - ε_∅), so w = 1 gives exactly ε_c.":
                eps_text + w * (eps_text - eps_uncond),
        }
        guided = yours(noise_pred.clone(), w)
        if torch.is_tensor(guided) and guided.dtype != dtype:
            raise ExerciseError(f"classifier_free_guidance: dtype {guided.dtype}, expected "
                                f"{dtype}: compute in noise_pred's dtype (no .float(), no new "
                                f"float32 tensors).")
        compare_with_mistakes("classifier_free_guidance", guided, expected, mistakes,
                  "Split the batch with `noise_pred.chunk(2)` into (ε_∅, ε_c) and return "
                  "ε_∅ + guidance_scale · (ε_c - ε_∅), shape (B, 4, h, w).")

    def hidden_cases(rng):
        shape = lambda: (rng.choice((4, 16)), rng.choice((4, 6, 12)), rng.choice((4, 10)))
        scales = [round(rng.uniform(1.5, 12.0), 2), 1.0, 0.0]  # 0 last: it hides two mistakes
        dtypes = [torch.float32, torch.float64, torch.float64]
        return [partial(case, rng.randint(1, 4), w, rng.randrange(10_000), shape(), dtype)
                for w, dtype in zip(scales, dtypes, strict=True)]

    return run_check("classifier_free_guidance", fn,
                     lambda: case(2, 7.5, seed=0),
                     lambda: case(3, 3.0, seed=1),
                     lambda: case(1, 1.0, seed=2),  # w = 1: plain conditional prediction
                     hidden=hidden, hidden_cases=hidden_cases,
                     reference=reference_classifier_free_guidance)


# --------------------------------------------------------------------------------------------------
# Exercise 3: where img2img starts
# --------------------------------------------------------------------------------------------------
def reference_img2img_timesteps(scheduler, num_inference_steps, strength):
    """The answer the cells below use while yours is not solved: timesteps[t_start:]."""
    scheduler.set_timesteps(num_inference_steps)
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    t_start = (num_inference_steps - init_timestep) * scheduler.order
    return scheduler.timesteps[t_start:]


SET_TIMESTEPS = ("call scheduler.set_timesteps(num_inference_steps) first: before that, "
                 "scheduler.timesteps is None (PNDM) or all num_train_timesteps training "
                 "timesteps (DDIM, Euler, Heun...), not the n-step schedule.")
# inputs that tell every two recipes below apart: n · strength whole, a bit above, a bit below
PROBES = [(DDIM, 10, 0.5), (DDIM, 10, 0.33), (HEUN, 10, 0.33), (HEUN, 10, 0.37)]


def _wrong_recipes(scheduler, n, strength) -> dict:
    """The usual wrong recipes, on a scheduler whose set_timesteps(n) ran: hint -> timesteps."""
    timesteps, order, init = scheduler.timesteps, scheduler.order, int(n * strength)
    t_start = (n - init) * order
    down = "round down, as diffusers does: init_timestep = int(num_inference_steps · strength)."
    off = "return timesteps[t_start:], with t_start = (n - init_timestep) · scheduler.order."
    return {
        "you kept the *first* steps of the schedule (the noisiest); img2img skips them and runs "
        "the last ones: timesteps[t_start:].": timesteps[:init * order],
        f"you rounded n · strength up (math.ceil); {down}":
            timesteps[(n - math.ceil(n * strength)) * order:],
        f"you rounded n · strength to the nearest integer; {down}":
            timesteps[(n - round(n * strength)) * order:],
        f"you start one entry too late (one timestep too few): {off}": timesteps[t_start + 1:],
        f"you start one entry too early (one timestep too many): {off}":
            timesteps[max(t_start - 1, 0):],
        "t_start counts skipped *entries* of scheduler.timesteps: multiply by scheduler.order "
        "(2 for Heun, whose schedule visits most timesteps twice).": timesteps[n - init:],
        "you skipped strength of the schedule; img2img skips (1 - strength) of it: "
        "t_start = num_inference_steps - init_timestep.": timesteps[init * order:],
        f"you returned the whole schedule; img2img runs only its end: {off}": timesteps,
    }


def _named_mistake(yours, returned, make_scheduler, n, strength):
    """The hint of the wrong recipe that gives what you returned here; when several do, the one
    that also gives your answers on the most probes."""
    def recipes(make_scheduler, n, strength):
        scheduler = make_scheduler()
        scheduler.set_timesteps(n)
        return _wrong_recipes(scheduler, n, strength)

    def yours_on(make_scheduler, n, strength):
        try:
            return yours(make_scheduler(), n, strength)
        except ExerciseError:
            return None

    candidates = [hint for hint, wrong in recipes(make_scheduler, n, strength).items()
                  if _matches(returned, wrong)]
    if len(candidates) < 2:
        return candidates[0] if candidates else None
    answers = [(yours_on(*probe), recipes(*probe)) for probe in PROBES]
    return max(candidates, key=lambda hint: sum(_matches(answer, wrong[hint])
                                                for answer, wrong in answers))


def check_img2img_timesteps(fn, hidden=False):
    """fn(scheduler, num_inference_steps, strength) -> the timesteps img2img denoises through
    (after calling scheduler.set_timesteps(num_inference_steps) itself). Each case hands fn a
    fresh scheduler. Hidden cases: other schedulers (order 1 and 2), step counts, strengths."""
    def explain(error):
        if "NoneType" in str(error):
            return SET_TIMESTEPS
        if "slice indices" in str(error):
            return "t_start must be an int: init_timestep = int(num_inference_steps · strength)."
        return None
    yours = guard("img2img_timesteps", fn, reference_img2img_timesteps,
                  StableDiffusionImg2ImgPipeline.get_timesteps, explain=explain)

    def case(make_scheduler, n, strength):
        pipe = SimpleNamespace(scheduler=make_scheduler(), device="cpu")
        expected = StableDiffusionImg2ImgPipeline.get_timesteps(pipe, n, strength)
        returned = yours(make_scheduler(), n, strength)
        if torch.is_tensor(returned) and len(returned) > len(pipe.scheduler.timesteps):
            raise ExerciseError(f"img2img_timesteps: you returned {len(returned)} timesteps, "
                                f"more than the whole {n}-step schedule has: {SET_TIMESTEPS}")
        hint = None if _matches(returned, expected) else \
            _named_mistake(yours, returned, make_scheduler, n, strength)
        if hint:
            raise ExerciseError(f"img2img_timesteps: {hint}")
        compare("img2img_timesteps", returned, expected,
                "init_timestep = int(n · strength), t_start = (n - init_timestep) · "
                "scheduler.order, return scheduler.timesteps[t_start:].")

    def hidden_cases(rng):
        order_1 = [partial(cls, num_train_timesteps=rng.choice((500, 1000)), **SD_BETAS) for cls in
                   (schedulers.DDIMScheduler, schedulers.EulerDiscreteScheduler,
                    schedulers.LMSDiscreteScheduler, schedulers.DPMSolverMultistepScheduler,
                    schedulers.UniPCMultistepScheduler)]
        makers = rng.sample(order_1, 2) + [  # and always PNDM and both order-2 schedulers
            PNDM, HEUN, partial(schedulers.FlowMatchHeunDiscreteScheduler, shift=3.0)]
        return [partial(case, make, rng.randint(5, 40), round(rng.uniform(0.2, 0.95), 2))
                for make in makers]

    return run_check("img2img_timesteps", fn,
                     lambda: case(PNDM, 25, 0.6),
                     lambda: case(DDIM, 10, 0.35),  # 3.5 -> 3
                     lambda: case(HEUN, 10, 0.5),  # order 2
                     hidden=hidden, hidden_cases=hidden_cases,
                     reference=reference_img2img_timesteps)
