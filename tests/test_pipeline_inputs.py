"""Every pipeline's door: bad arguments get one clear error naming them before any model runs;
every input variant diffusers accepts is accepted too, with diffusers' result.

The oracle is diffusers on the same shipped checkpoints (`ddpm-butterflies-32`,
`tiny-sd-butterflies`), with two or three steps to stay fast.
"""

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

import ddlearn
from ddlearn.data import shipped_model

TOLERANCE = 2e-3  # max difference, images in [0, 1]
PROMPTS = ["a red butterfly", "a blue butterfly with yellow spots"]


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def call(pipe, **kwargs):
    """Seeded call, np output unless asked otherwise."""
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    kwargs.setdefault("output_type", "np")
    return pipe(**kwargs)


def assert_close(ours, theirs, tolerance=TOLERANCE):
    ours = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    theirs = theirs.detach().cpu().numpy() if isinstance(theirs, torch.Tensor) \
        else np.asarray(theirs)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= tolerance


def butterfly_image(size=32, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


def centre_mask(size=32) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.float32)
    mask[8:24, 8:24] = 1
    return mask


# ---- the pipelines, ours and diffusers', on the shipped checkpoints ----------------------------
@pytest.fixture(scope="module")
def ddpm():
    folder = shipped_model("ddpm-butterflies-32")
    return (quiet(ddlearn.DDPMPipeline.from_pretrained(folder)),
            quiet(diffusers.DDPMPipeline.from_pretrained(folder)))


@pytest.fixture(scope="module")
def ddim():
    folder = shipped_model("ddpm-butterflies-32")
    return (quiet(ddlearn.DDIMPipeline.from_pretrained(folder)),
            quiet(diffusers.DDIMPipeline.from_pretrained(folder)))


@pytest.fixture(scope="module")
def sd():
    folder = shipped_model("tiny-sd-butterflies")
    ours = quiet(ddlearn.StableDiffusionPipeline.from_pretrained(folder))
    theirs = quiet(diffusers.StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False))
    return ours, theirs


@pytest.fixture(scope="module")
def img2img(sd):
    ours, theirs = sd
    return (quiet(ddlearn.StableDiffusionImg2ImgPipeline(**ours.components)),
            quiet(diffusers.StableDiffusionImg2ImgPipeline(**theirs.components)))


@pytest.fixture(scope="module")
def inpaint(sd):
    ours, theirs = sd
    return (quiet(ddlearn.StableDiffusionInpaintPipeline(**ours.components)),
            quiet(diffusers.StableDiffusionInpaintPipeline(**theirs.components)))


# ---- bad input: one clear error, before any model runs -----------------------------------------
def assert_refused(pipe, error, match, **kwargs):
    """`error` matching `match`, raised before the UNet, VAE or text encoder ran once."""
    calls = []
    hooks = [module.register_forward_pre_hook(lambda *args: calls.append(1))
             for module in pipe._modules()]
    try:
        with pytest.raises(error, match=match):
            pipe(**kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    assert not calls, "the error came after a model had already run"


G = torch.Generator  # shorthand in the tables below
NAN, INF = float("nan"), float("inf")

DDPM_BAD = [
    (dict(batch_size=0), ValueError, r"batch_size=0 must be at least 1"),
    (dict(batch_size=2.5), TypeError, r"batch_size must be a whole number"),
    (dict(batch_size="4"), TypeError, r"batch_size must be a whole number"),
    (dict(batch_size=True), TypeError, r"batch_size must be a whole number"),
    (dict(num_inference_steps=0), ValueError, r"num_inference_steps=0 must be at least 1"),
    (dict(num_inference_steps=2.5), TypeError, r"num_inference_steps must be a whole number"),
    (dict(num_inference_steps=3.0), TypeError,  # diffusers breaks inside scheduler.step
     r"num_inference_steps must be a whole number \(an int\), got float 3.0"),
    (dict(generator=0), TypeError, r"generator must be a torch.Generator.*manual_seed"),
    (dict(batch_size=3, generator=[G(), G()]), ValueError,
     r"generator is a list of 2 generators but the batch has 3"),
    (dict(generator=(G(),)), TypeError, r"generator must be a torch.Generator"),
    (dict(output_type="jpeg"), ValueError, r"output_type must be one of 'pil'.*got 'jpeg'"),
    (dict(output_type="latent"), ValueError, r"output_type must be one of"),
    (dict(return_dict="no"), TypeError, r"return_dict must be True or False"),
]

DDIM_BAD = DDPM_BAD + [
    (dict(eta=NAN), ValueError, r"eta=nan is not a finite number"),
    (dict(eta=1.5), ValueError, r"eta=1.5 must be in \[0, 1\]"),
    (dict(eta="0"), TypeError, r"eta must be a number"),
    (dict(batch_size=2, generator=[G()]), ValueError,  # diffusers' DDIMPipeline refuses it too
     r"generator is a list of 1 generators but the batch has 2"),
    (dict(use_clipped_model_output="yes"), TypeError, r"use_clipped_model_output must be"),
]


@pytest.mark.parametrize("kwargs, error, match", DDPM_BAD)
def test_ddpm_refuses_bad_input(ddpm, kwargs, error, match):
    assert_refused(ddpm[0], error, match, **kwargs)


@pytest.mark.parametrize("kwargs, error, match", DDIM_BAD)
def test_ddim_refuses_bad_input(ddim, kwargs, error, match):
    assert_refused(ddim[0], error, match, **kwargs)


TEXT_BAD = [  # every SD pipeline checks these the same way
    (dict(prompt=123), TypeError, r"prompt must be a string or a list of strings, got int"),
    (dict(prompt=["a red moth", 7]), TypeError, r"prompt must be .*a list holding int"),
    (dict(prompt=[]), ValueError, r"prompt is an empty list"),
    (dict(prompt=None), ValueError, r"exactly one of `prompt` and `prompt_embeds`"),
    (dict(prompt_embeds=torch.zeros(1, 16, 32)), ValueError,
     r"exactly one of `prompt` and `prompt_embeds`"),
    (dict(negative_prompt=5), TypeError, r"negative_prompt must be a string or a list"),
    (dict(prompt=PROMPTS, negative_prompt=["a"]), ValueError,
     r"negative_prompt has 1 entries but the batch has 2 prompts"),
    (dict(negative_prompt="x", negative_prompt_embeds=torch.zeros(1, 16, 64)), ValueError,
     r"at most one of `negative_prompt` and `negative_prompt_embeds`"),
    (dict(negative_prompt_embeds=torch.zeros(1, 8, 64)), ValueError,
     r"negative_prompt_embeds has shape \(1, 8, 64\), expected \(1, 16, 64\)"),
    (dict(num_images_per_prompt=0), ValueError, r"num_images_per_prompt=0 must be at least 1"),
    (dict(num_images_per_prompt=1.5), TypeError, r"num_images_per_prompt must be a whole"),
    (dict(num_inference_steps=0), ValueError, r"num_inference_steps=0 must be at least 1"),
    (dict(num_inference_steps="5"), TypeError, r"num_inference_steps must be a whole number"),
    (dict(guidance_scale=NAN), ValueError, r"guidance_scale=nan is not a finite number"),
    (dict(guidance_scale=INF), ValueError, r"guidance_scale=inf is not a finite number"),
    (dict(guidance_scale="7.5"), TypeError, r"guidance_scale must be a number"),
    (dict(guidance_scale=None), TypeError, r"guidance_scale must be a number"),
    (dict(eta=-0.1), ValueError, r"eta=-0.1 must be in \[0, 1\]"),
    (dict(generator=42), TypeError, r"generator must be a torch.Generator"),
    (dict(num_images_per_prompt=2, generator=[G()]), ValueError,
     r"generator is a list of 1 generators but the batch has 2 images"),
    (dict(output_type="PIL"), ValueError, r"output_type must be one of .*'latent'"),
    (dict(return_dict=None), TypeError, r"return_dict must be True or False"),
    (dict(callback_on_step_end="print"), TypeError, r"callback_on_step_end must be a function"),
    # diffusers' arguments ddlearn does not implement are named, typos get the closest name
    (dict(clip_skip=2), NotImplementedError, r"clip_skip=2 is a diffusers feature"),
    (dict(timesteps=[999, 500]), NotImplementedError, r"timesteps is a diffusers feature"),
    # cross_attention_kwargs carries the LoRA scale s only (diffusers' processors take more)
    (dict(cross_attention_kwargs={"ip_adapter_masks": None}), NotImplementedError,
     r"cross_attention_kwargs \['ip_adapter_masks'\] go to diffusers' attention processors"),
    (dict(cross_attention_kwargs={"scale": "0.5"}), TypeError,
     r"cross_attention_kwargs\['scale'\] must be a finite number"),
    (dict(callback_on_step_end_tensor_inputs=["prompt_embeds"]), NotImplementedError,
     r"callback_on_step_end_tensor_inputs=\['prompt_embeds'\]; .* sees only 'latents'"),
    (dict(guidence_scale=3.0), TypeError, r"'guidence_scale'; did you mean 'guidance_scale'"),
]

SD_BAD = TEXT_BAD + [
    (dict(prompt_embeds=torch.zeros(1, 16, 32), prompt=None), ValueError,
     r"prompt_embeds has shape \(1, 16, 32\), expected \(prompts, tokens, 64\)"),
    (dict(prompt_embeds=torch.full((1, 16, 64), NAN), prompt=None), ValueError,
     r"prompt_embeds contains NaN"),
    (dict(height=40), ValueError, r"height and width must be multiples of 16, got 40x32"),
    (dict(width=36), ValueError,
     r"height and width must be multiples of 16, got 32x36: diffusers asks for multiples of 8"),
    (dict(height=-32), ValueError, r"height=-32 must be at least 1"),
    (dict(height=32.5), TypeError, r"height must be a whole number"),
    (dict(latents=torch.zeros(1, 4, 4, 4)), ValueError,
     r"latents has shape \(1, 4, 4, 4\), expected \(1, 4, 8, 8\)"),
    (dict(latents=torch.full((1, 4, 8, 8), NAN)), ValueError, r"latents contains NaN"),
    (dict(latents=np.zeros((1, 4, 8, 8))), TypeError, r"latents must be a torch.Tensor"),
    (dict(guidance_rescale=NAN), ValueError, r"guidance_rescale=nan is not a finite number"),
    (dict(guidance_rescale=-0.5), ValueError, r"guidance_rescale=-0.5 must be >= 0"),
]

IMAGE_BAD = [  # img2img and inpainting
    (dict(image=None), ValueError, r"image is missing"),
    (dict(image="butterfly.png"), TypeError, r"image must be a PIL image.*got str"),
    (dict(image=[butterfly_image(), "b.png"]), TypeError, r"image must be a PIL image"),
    (dict(image=np.full((32, 32, 3), NAN, np.float32)), ValueError, r"image contains NaN"),
    (dict(image=np.full((32, 32, 3), 200.0, np.float32)), ValueError,
     r"image values should be in \[0, 1\]"),
    (dict(image=butterfly_image(24)), ValueError,
     r"image height and width must be multiples of 16, got 24x24"),
    (dict(image=[butterfly_image(), butterfly_image()], prompt=["a"] * 3), ValueError,
     r"image holds 2 images but the batch has 3"),
    (dict(strength=1.5), ValueError, r"strength=1.5 must be in \[0, 1\]"),
    (dict(strength=NAN), ValueError, r"strength=nan is not a finite number"),
    (dict(strength=0.1, num_inference_steps=5), ValueError, r"strength=0.1 .* leaves no step"),
]


def sd_call(**kwargs):
    return {"prompt": "a red butterfly", "num_inference_steps": 2, **kwargs}


@pytest.mark.parametrize("kwargs, error, match", SD_BAD)
def test_stable_diffusion_refuses_bad_input(sd, kwargs, error, match):
    assert_refused(sd[0], error, match, **sd_call(**kwargs))


@pytest.mark.parametrize("kwargs, error, match", TEXT_BAD + IMAGE_BAD)
def test_img2img_refuses_bad_input(img2img, kwargs, error, match):
    assert_refused(img2img[0], error, match, **sd_call(**{"image": butterfly_image(), **kwargs}))


MASK_BAD = [
    (dict(mask_image=None), ValueError, r"mask_image is missing"),
    (dict(mask_image="mask.png"), TypeError, r"mask_image must be a PIL image.*got str"),
    (dict(mask_image=Image.new("L", (16, 16))), ValueError,
     r"mask_image is \(16, 16\) but the image is \(32, 32\)"),
    (dict(mask_image=np.full((32, 32), NAN, np.float32)), ValueError,
     r"mask_image contains NaN"),
    (dict(mask_image=np.zeros((2, 1, 32, 32), np.float32)), ValueError,
     r"mask_image has shape \(2, 1, 32, 32\); give one mask"),
    (dict(height=64, width=64), ValueError, r"height x width = 64x64 but the image is 32x32"),
    (dict(image=torch.zeros(1, 4, 8, 8)), ValueError, r"image has 4 channels, so it looks like"),
]


@pytest.mark.parametrize("kwargs, error, match", TEXT_BAD + IMAGE_BAD + MASK_BAD)
def test_inpaint_refuses_bad_input(inpaint, kwargs, error, match):
    call_kwargs = sd_call(**{"image": butterfly_image(), "mask_image": centre_mask(), **kwargs})
    assert_refused(inpaint[0], error, match, **call_kwargs)


# ---- accepted input: what diffusers takes, with diffusers' result ------------------------------
DDPM_ACCEPTED = {
    "numpy ints": dict(batch_size=np.int64(2), num_inference_steps=np.int32(3)),
    "one generator in a list, any batch": dict(batch_size=2, num_inference_steps=2,
                                               generator=gens(1)),
    "one generator per image": dict(batch_size=2, num_inference_steps=2, generator=gens(2)),
    "tensor output": dict(num_inference_steps=2, output_type="pt"),
}


@pytest.mark.parametrize("name", DDPM_ACCEPTED)
def test_ddpm_accepts_what_diffusers_accepts(ddpm, name):
    kwargs = DDPM_ACCEPTED[name]
    ours = call(ddpm[0], **kwargs).images
    generator = kwargs.get("generator")  # a list is consumed: give diffusers fresh copies
    theirs_kwargs = {**kwargs, "generator": gens(len(generator))} if generator else kwargs
    assert_close(ours, call(ddpm[1], **theirs_kwargs).images)


DDIM_ACCEPTED = {
    "numpy eta, generator list": dict(batch_size=2, num_inference_steps=3, eta=np.float64(0.5)),
    "clipped model output": dict(num_inference_steps=2, use_clipped_model_output=True),
}


@pytest.mark.parametrize("name", DDIM_ACCEPTED)
def test_ddim_accepts_what_diffusers_accepts(ddim, name):
    kwargs = DDIM_ACCEPTED[name]
    batch = kwargs.get("batch_size", 1)
    ours = call(ddim[0], generator=gens(batch), **kwargs).images
    assert_close(ours, call(ddim[1], generator=gens(batch), **kwargs).images)


@pytest.mark.parametrize("pipeline", ["ddpm", "ddim"])
def test_return_dict_false_gives_diffusers_tuple(pipeline, request):
    ours, theirs = request.getfixturevalue(pipeline)
    a = call(ours, num_inference_steps=2, return_dict=False)
    b = call(theirs, num_inference_steps=2, return_dict=False)
    assert type(a) is tuple and len(a) == len(b) == 1
    assert_close(a[0], b[0])


SD_ACCEPTED = {
    "one prompt": dict(prompt="a red butterfly"),
    "a list of prompts, a list of negatives": dict(prompt=PROMPTS,
                                                   negative_prompt=["", "a green butterfly"]),
    "numpy ints and floats": dict(prompt=PROMPTS, num_inference_steps=np.int64(2),
                                  num_images_per_prompt=np.int64(2), guidance_scale=np.float32(3)),
    "a generator per image": dict(prompt=PROMPTS, num_images_per_prompt=2, generator=gens(4)),
    "guidance_scale=1: no guidance": dict(prompt=PROMPTS, guidance_scale=1),
    "guidance_scale below 1: no guidance": dict(prompt="a red butterfly", guidance_scale=0.5),
    "height and width": dict(prompt="a blue butterfly", height=48, width=32),
    "whole float height and width": dict(prompt="a blue butterfly", height=48.0, width=32.0),
    "eta with DDIM": dict(prompt="a red butterfly", eta=0.5),
    "guidance_rescale": dict(prompt="a red butterfly", guidance_rescale=0.7),
    "latents out": dict(prompt=PROMPTS, output_type="latent"),
    "tensor out": dict(prompt="a red butterfly", output_type="pt"),
}


def fresh(kwargs):
    """The same call with fresh generators (a generator list is consumed by the first call)."""
    generator = kwargs.get("generator")
    return {**kwargs, "generator": gens(len(generator))} if isinstance(generator, list) else kwargs


@pytest.mark.parametrize("name", SD_ACCEPTED)
def test_stable_diffusion_accepts_what_diffusers_accepts(sd, name):
    kwargs = {"num_inference_steps": 2, **SD_ACCEPTED[name]}
    ours = call(sd[0], **fresh(kwargs)).images
    theirs = call(sd[1], **fresh(kwargs)).images
    assert_close(ours, theirs)
    if kwargs.get("output_type") == "latent":
        assert isinstance(ours, torch.Tensor) and ours.shape == (2, 4, 8, 8)


def test_stable_diffusion_prompt_embeds_match_diffusers(sd):
    ours, theirs = sd
    with torch.no_grad():
        embeds, negative = theirs.encode_prompt(PROMPTS, "cpu", 1, True,
                                                ["", "a green butterfly"])
    mine = ours.encode_prompt(PROMPTS, 1, True, ["", "a green butterfly"])
    assert_close(mine[0], embeds, 1e-4)
    assert_close(mine[1], negative, 1e-4)
    kwargs = dict(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=2,
                  num_images_per_prompt=2, guidance_scale=4.0)
    assert_close(call(ours, **kwargs).images, call(theirs, **kwargs).images)


def test_stable_diffusion_return_dict_false_gives_diffusers_tuple(sd):
    a = call(sd[0], prompt="a red butterfly", num_inference_steps=2, return_dict=False)
    b = call(sd[1], prompt="a red butterfly", num_inference_steps=2, return_dict=False)
    assert type(a) is tuple and len(a) == len(b) == 2 and a[1] is None and b[1] is None
    assert_close(a[0], b[0])
    output = call(sd[0], prompt="a red butterfly", num_inference_steps=2)
    assert output.nsfw_content_detected is None and output.images is output[0]


def image_inputs():
    image = butterfly_image()
    array = np.asarray(image, dtype=np.float32) / 255  # (H, W, C) in [0, 1]
    return {"PIL": image, "[0, 1] array": array, "list of PIL": [image],
            "[0, 1] tensor": torch.from_numpy(array).permute(2, 0, 1)[None]}


IMG2IMG_ACCEPTED = {
    **{f"image as {k}": dict(image=v) for k, v in image_inputs().items()},
    "numpy strength": dict(image=butterfly_image(), strength=np.float64(0.6)),
    "a generator per image": dict(image=butterfly_image(), prompt=PROMPTS,
                                  num_images_per_prompt=2, generator=gens(4)),
    "two images, two prompts": dict(image=[butterfly_image(seed=1), butterfly_image(seed=2)],
                                    prompt=PROMPTS),
    "latents out": dict(image=butterfly_image(), output_type="latent"),
    "eta: a stochastic DDIM": dict(image=butterfly_image(), eta=0.7),
}


@pytest.mark.parametrize("name", IMG2IMG_ACCEPTED)
def test_img2img_accepts_what_diffusers_accepts(img2img, name):
    kwargs = {"prompt": "a blue butterfly", "num_inference_steps": 4, "strength": 0.75,
              **IMG2IMG_ACCEPTED[name]}
    assert_close(call(img2img[0], **fresh(kwargs)).images,
                 call(img2img[1], **fresh(kwargs)).images)


def test_img2img_takes_latents_as_the_image_as_diffusers_does(img2img):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    kwargs = dict(prompt="a blue butterfly", image=latents, num_inference_steps=4, strength=0.5)
    assert_close(call(img2img[0], **kwargs).images, call(img2img[1], **kwargs).images)


INPAINT_ACCEPTED = {
    "PIL mask": dict(mask_image=Image.fromarray((centre_mask() * 255).astype(np.uint8))),
    "array mask, height and width": dict(mask_image=centre_mask(), height=32, width=32),
    "a generator per image": dict(mask_image=centre_mask(), prompt=PROMPTS, generator=gens(2)),
    "strength below 1": dict(mask_image=centre_mask(), strength=0.7),
    "eta: a stochastic DDIM": dict(mask_image=centre_mask(), eta=0.7),
    "eta, a generator per image": dict(mask_image=centre_mask(), prompt=PROMPTS,
                                       num_images_per_prompt=2, eta=0.7, generator=gens(4)),
    "latents out": dict(mask_image=centre_mask(), output_type="latent"),
}


@pytest.mark.parametrize("name", INPAINT_ACCEPTED)
def test_inpaint_accepts_what_diffusers_accepts(inpaint, name):
    kwargs = {"prompt": "a blue butterfly", "image": butterfly_image(), "num_inference_steps": 3,
              **INPAINT_ACCEPTED[name]}
    theirs_kwargs = {"height": 32, "width": 32, **kwargs}  # diffusers defaults to 512 x 512
    assert_close(call(inpaint[0], **fresh(kwargs)).images,
                 call(inpaint[1], **fresh(theirs_kwargs)).images)


def test_every_bad_input_table_names_its_argument():
    """Each match pattern names the argument it is about (the learner reads that name first)."""
    for kwargs, _, match in DDIM_BAD + SD_BAD + IMAGE_BAD + MASK_BAD:
        assert any(name in match for name in kwargs), (kwargs, match)
