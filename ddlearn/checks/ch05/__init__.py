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

One file per exercise: `latents.py`, `classifier_free_guidance.py`, `img2img_timesteps.py`; what
several of them use is in `common.py`.
"""

from ddlearn.checks.ch05.classifier_free_guidance import (
    check_classifier_free_guidance,
    reference_classifier_free_guidance,
)
from ddlearn.checks.ch05.img2img_timesteps import (
    DDIM,
    HEUN,
    PNDM,
    PROBES,
    check_img2img_timesteps,
    reference_img2img_timesteps,
)
from ddlearn.checks.ch05.latents import (
    check_decode_latents,
    check_encode_latents,
    reference_decode_latents,
    reference_encode_latents,
)

__all__ = [
    "reference_encode_latents",
    "reference_decode_latents",
    "check_encode_latents",
    "check_decode_latents",
    "reference_classifier_free_guidance",
    "check_classifier_free_guidance",
    "reference_img2img_timesteps",
    "check_img2img_timesteps",
    "DDIM",
    "HEUN",
    "PNDM",
    "PROBES",
]
