"""Chapter 05, exercise 1: latent scaling, into and out of the VAE's latent space.

`encode_latents(vae, images)` maps images (B, 3, H, W) in [0, 1] to s · Enc(2x - 1), the posterior
mean times `vae.config.scaling_factor` s; `decode_latents(vae, latents)` maps scaled latents back
to Dec(z / s) / 2 + 1/2, clamped to [0, 1]. Both are checked against `VAEWrapper` on the shipped
tiny SD's VAE and synthetic butterflies, and may not call it (nor the pipelines' `encode_image`,
`decode_latents`). The checks name the usual mistakes (s forgotten or inverted, no [-1, 1] map, no
clamp). Hidden cases: the shipped VAE at other batch and image sizes, and small random VAEs with
other latent channels and scaling factors, in float32 and float64.
"""

from functools import lru_cache, partial

import numpy as np
import torch

from ddlearn.checks import compare_with_mistakes, guard, randn, run_check
from ddlearn.checks.ch05.common import matches
from ddlearn.data import shipped_model
from ddlearn.data.butterflies import make_butterfly
from ddlearn.models.vae import AutoencoderKL
from ddlearn.models.vae_wrapper import VAEWrapper
from ddlearn.pipelines.stable_diffusion import StableDiffusionPipeline
from ddlearn.pipelines.stable_diffusion_img2img import StableDiffusionImg2ImgPipeline


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
            if matches(latents, expected):
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
            if matches(images, expected):
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
