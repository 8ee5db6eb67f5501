"""Argument checks at a pipeline's door: one clear error naming the argument, before any work.

diffusers checks a few arguments (`check_inputs`) and leaves the rest to fail deep inside a
reshape ("'int' object is not iterable"), or to give a silently wrong result. ddlearn's
pipelines check every argument with these helpers first. The rule: what diffusers accepts is
accepted, with the same result (numpy ints and floats included); an error only where diffusers
breaks or silently does something wrong. Each helper returns the value as plain Python, so the
rest of the pipeline sees an `int` or a `float` whatever the caller typed.
"""

import inspect
import math
import numbers

import torch

from ddlearn.options import refuse, unexpected

#: arguments diffusers' Stable Diffusion pipelines take and ddlearn's do not implement
NOT_IMPLEMENTED_CALL = ("timesteps", "sigmas", "clip_skip", "ip_adapter_image",
                        "ip_adapter_image_embeds", "callback", "callback_steps",
                        "padding_mask_crop", "masked_image_latents")

IMAGE_OUTPUT_TYPES = {"pil": "PIL images", "np": "a numpy array (B, H, W, C)",
                      "pt": "a torch tensor (B, C, H, W)"}
LATENT_OUTPUT_TYPE = {"latent": "the final latents, not decoded"}


def check_count(name: str, value, minimum: int = 1, whole_floats: bool = False) -> int:
    """A whole number >= minimum: an int or a numpy integer (and 5.0 if `whole_floats`)."""
    if whole_floats and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number (an int), got {type(value).__name__} "
                        f"{value!r}")
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return int(value)


def check_steps(num_inference_steps) -> int:
    """Denoising steps: an int >= 1 (given 10.0, diffusers' schedulers fail inside step())."""
    return check_count("num_inference_steps", num_inference_steps)


def check_number(name: str, value, low: float = None, high: float = None,
                 meaning: str = "") -> float:
    """A finite real number (int, float, numpy scalar) in [low, high]; `meaning` ends errors."""
    meaning = f" ({meaning})" if meaning else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}{meaning}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value} is not a finite number{meaning}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low:g}, {high:g}]" if low is not None and high is not None else \
            f">= {low:g}" if low is not None else f"<= {high:g}"
        raise ValueError(f"{name}={value} must be {bounds}{meaning}")
    return value


def check_generator(generator, batch_size: int, one_list_for_all: bool = False):
    """None, one torch.Generator, or a list with one generator per image of the batch."""
    if generator is None:
        return
    for g in generator if isinstance(generator, list) else [generator]:
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, e.g. "
                            f"torch.Generator().manual_seed(0), or a list of them (one per "
                            f"image); got {type(g).__name__} {g!r}")
    if isinstance(generator, list) and len(generator) != batch_size \
            and not (one_list_for_all and len(generator) == 1):
        raise ValueError(f"generator is a list of {len(generator)} generators but the batch has "
                         f"{batch_size} images; pass one generator, or exactly one per image")


def check_output_type(output_type, allowed: dict = IMAGE_OUTPUT_TYPES):
    if output_type not in allowed:
        choices = ", ".join(f"{k!r} ({v})" for k, v in allowed.items())
        raise ValueError(f"output_type must be one of {choices}; got {output_type!r}")


def check_tensor(name: str, value, shape: tuple = None, why: str = "") -> torch.Tensor:
    """A torch tensor of `shape` (None: any) holding no NaN or inf."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        why = f" ({why})" if why else ""
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}{why}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return value


def check_prompts(name: str, prompt) -> list:
    """A string or a (non-empty) list of strings -> list of strings."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if isinstance(prompt, (list, tuple)) and not prompt:
        raise ValueError(f"{name} is an empty list; give at least one string")
    found = type(prompt).__name__ if not isinstance(prompt, (list, tuple)) else \
        f"a list holding {type(next(p for p in prompt if not isinstance(p, str))).__name__}"
    raise TypeError(f"{name} must be a string or a list of strings, got {found}: {prompt!r}")


def check_flag(name: str, value, allow_none: bool = False):
    if not (isinstance(value, bool) or (allow_none and value is None)):
        allowed = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name} must be {allowed}, got {value!r}")


def check_callback(callback):
    if callback is not None and not callable(callback):
        raise TypeError(f"callback_on_step_end must be a function (pipe, step, timestep, "
                        f"callback_kwargs) -> dict, or None; got {type(callback).__name__}")


def check_call_extras(pipeline, kwargs: dict) -> None:
    """diffusers' `__call__` arguments ddlearn lacks: NotImplementedError naming the one set
    (None is fine); the tensor inputs of a step callback may only be ["latents"]; anything else
    is a typo, a TypeError with the closest accepted name."""
    where = f"{type(pipeline).__name__}.__call__"
    inputs = kwargs.pop("callback_on_step_end_tensor_inputs", None)
    if inputs not in (None, ["latents"], ("latents",)):
        raise NotImplementedError(f"{where}: callback_on_step_end_tensor_inputs={inputs!r}; "
                                  f"ddlearn's step callback sees only 'latents'")
    for name in NOT_IMPLEMENTED_CALL:
        refuse(where, "see the pipeline's signature for what ddlearn implements",
               **{name: kwargs.pop(name, None)})
    if kwargs:
        accepted = inspect.signature(type(pipeline).__call__).parameters
        raise unexpected(where, next(iter(kwargs)), [n for n in accepted if n not in
                                                     ("self", "kwargs")])


def check_text_inputs(pipe, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                      num_images_per_prompt, generator, output_type, return_dict,
                      callback_on_step_end) -> int:
    """A text-to-image pipeline's arguments, each checked; -> the batch size (prompts x images)."""
    if (prompt is None) == (prompt_embeds is None):
        raise ValueError("pass exactly one of `prompt` and `prompt_embeds`")
    if negative_prompt is not None and negative_prompt_embeds is not None:
        raise ValueError("pass at most one of `negative_prompt` and `negative_prompt_embeds`")
    d = pipe.unet.config.cross_attention_dim
    if prompt is not None:
        n_prompts = len(check_prompts("prompt", prompt))
        embeds_shape = (n_prompts, pipe.tokenizer.model_max_length, d)
    else:
        embeds_shape = tuple(check_tensor("prompt_embeds", prompt_embeds).shape)
        if len(embeds_shape) != 3 or embeds_shape[-1] != d:
            raise ValueError(f"prompt_embeds has shape {embeds_shape}, expected (prompts, "
                             f"tokens, {d}): the text encoder's output (cross_attention_dim)")
        n_prompts = embeds_shape[0]
    if negative_prompt is not None:
        negative = check_prompts("negative_prompt", negative_prompt)
        if not isinstance(negative_prompt, str) and len(negative) != n_prompts:
            raise ValueError(f"negative_prompt has {len(negative)} entries but the batch has "
                             f"{n_prompts} prompts; give one per prompt, or a single string")
    if negative_prompt_embeds is not None:
        check_tensor("negative_prompt_embeds", negative_prompt_embeds, embeds_shape,
                     "the shape of the prompt's embeddings")
    batch_size = n_prompts * check_count("num_images_per_prompt", num_images_per_prompt)
    check_generator(generator, batch_size)
    check_output_type(output_type, {**IMAGE_OUTPUT_TYPES, **LATENT_OUTPUT_TYPE})
    check_flag("return_dict", return_dict)
    check_callback(callback_on_step_end)
    return batch_size


def check_image_size(height, width, vae_factor: int, unet_factor: int, multiple_of: int = 8,
                     name: str = "height and width") -> tuple:
    """Whole numbers, multiples of `multiple_of` (diffusers asks for 8) and of what the VAE and
    the UNet divide them by."""
    height = check_count("height", height, whole_floats=True)
    width = check_count("width", width, whole_floats=True)
    multiple = math.lcm(multiple_of, vae_factor * unet_factor)
    if height % multiple or width % multiple:
        diffusers = "diffusers asks for multiples of 8, " if multiple_of == 8 else ""
        raise ValueError(f"{name} must be multiples of {multiple}, got {height}x{width}: "
                         f"{diffusers}the VAE divides them by {vae_factor} and the UNet halves "
                         f"the latents {unet_factor.bit_length() - 1} more times")
    return height, width
