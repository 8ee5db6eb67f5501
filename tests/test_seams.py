"""The seams a diffusers user types or sees: loading and saving arguments, `return_dict`, printing,
torch's global random state, and hidden config keys — each against diffusers itself."""

import inspect
import json
import warnings

import diffusers
import huggingface_hub
import pytest
import torch

import ddlearn
from ddlearn.data import shipped_model

DDPM = shipped_model("ddpm-butterflies-32")
TINY_SD = shipped_model("tiny-sd-butterflies")
SCHEDULERS = ["DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
              "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler",
              "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- from_pretrained / save_pretrained arguments -----------------------------------------------
def test_model_loading_arguments_from_the_tutorials():
    plain = ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet")
    same = ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet", use_safetensors=True,
                                               low_cpu_mem_usage=True, device_map=None)
    assert same_weights(plain, same)
    half = ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet", torch_dtype=torch.float16)
    theirs = diffusers.UNet2DModel.from_pretrained(DDPM, subfolder="unet",
                                                   torch_dtype=torch.float16)
    assert half.dtype == torch.float16 and same_weights(half, theirs)
    wider = ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet", sample_size=64)
    assert wider.config.sample_size == 64 and same_weights(plain, wider)
    model, info = ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet",
                                                      output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []


def test_variants_cross_between_the_libraries(tmp_path):
    theirs = diffusers.UNet2DModel.from_pretrained(DDPM, subfolder="unet")
    theirs.save_pretrained(tmp_path / "d", variant="fp16")
    assert (tmp_path / "d" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    ours = ddlearn.UNet2DModel.from_pretrained(tmp_path / "d", variant="fp16")
    assert same_weights(ours, theirs)
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        ddlearn.UNet2DModel.from_pretrained(tmp_path / "d")  # as diffusers: no plain file there
    ours.save_pretrained(tmp_path / "o", variant="ema")
    back = diffusers.UNet2DModel.from_pretrained(tmp_path / "o", variant="ema")
    assert same_weights(ours, back)


def test_use_safetensors_false_asks_for_the_bin_as_in_diffusers():
    with pytest.raises(EnvironmentError):
        diffusers.UNet2DModel.from_pretrained(DDPM, subfolder="unet", use_safetensors=False)
    with pytest.raises(FileNotFoundError, match="use_safetensors=False"):
        ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet", use_safetensors=False)


@pytest.mark.parametrize("call, error, words", [
    (lambda: ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet", device_map="auto"),
     NotImplementedError, "device_map='auto'"),
    (lambda: ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet", use_safetensor=True),
     TypeError, "did you mean 'use_safetensors'"),
    (lambda: ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet", torch_dtype="fp16"),
     TypeError, "torch_dtype must be a torch.dtype"),
    (lambda: ddlearn.DDPMScheduler.from_pretrained(DDPM, subfolder="scheduler", clip=False),
     TypeError, "unexpected keyword argument 'clip'"),
    (lambda: ddlearn.DDPMPipeline.from_pretrained(DDPM, custom_pipeline="x"),
     NotImplementedError, "custom_pipeline"),
    (lambda: ddlearn.DDPMPipeline.from_pretrained(DDPM, unet2=None),
     TypeError, "did you mean 'unet'"),
    (lambda: ddlearn.StableDiffusionPipeline.from_pretrained(TINY_SD, safety_checker=object()),
     NotImplementedError, "no safety_checker"),
])
def test_arguments_ddlearn_cannot_honour_are_named(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_saving_arguments(tmp_path):
    unet = ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet")
    unet.save_pretrained(tmp_path / "a", safe_serialization=True, max_shard_size="10GB")
    with pytest.raises(NotImplementedError, match="safe_serialization=False"):
        unet.save_pretrained(tmp_path / "b", safe_serialization=False)
    with pytest.raises(NotImplementedError, match="sharded"):
        unet.save_pretrained(tmp_path / "c", max_shard_size="1MB")
    with pytest.raises(NotImplementedError, match="push_to_hub"):
        ddlearn.DDPMPipeline.from_pretrained(DDPM).save_pretrained(tmp_path / "d",
                                                                   push_to_hub=True)


def test_hub_options_reach_huggingface_hub(monkeypatch):
    seen = {}

    def snapshot_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(DDPM)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    ddlearn.UNet2DModel.from_pretrained("google/ddpm-cat-256", subfolder="unet", revision="v1",
                                        cache_dir="/tmp/hf", use_auth_token="t")
    assert seen["repo_id"] == "google/ddpm-cat-256" and seen["revision"] == "v1"
    assert seen["cache_dir"] == "/tmp/hf" and seen["token"] == "t"
    assert seen["local_files_only"]  # the tests run with HF_HUB_OFFLINE=1


def test_pipeline_loading_arguments_and_components():
    scheduler = ddlearn.DDIMScheduler(num_train_timesteps=1000)
    pipe = ddlearn.DDPMPipeline.from_pretrained(DDPM, scheduler=scheduler, use_safetensors=True)
    assert pipe.scheduler is scheduler
    sd = ddlearn.StableDiffusionPipeline.from_pretrained(
        TINY_SD, safety_checker=None, requires_safety_checker=False,
        torch_dtype={"unet": torch.float16, "default": torch.float32})
    assert sd.unet.dtype == torch.float16 and sd.vae.dtype == torch.float32


def test_pipeline_to_takes_diffusers_forms():
    pipe = ddlearn.DDPMPipeline.from_pretrained(DDPM)
    assert pipe.to(torch.float16).dtype == torch.float16
    assert pipe.to("cpu", torch.float32).dtype == torch.float32
    assert pipe.to(device="cpu", dtype=torch.float16).unet.dtype == torch.float16
    assert pipe.to(torch_dtype=torch.float32).dtype == torch.float32
    with pytest.raises(TypeError, match="a device"):
        pipe.to(3)


# ---- return_dict ---------------------------------------------------------------------------------
def test_models_return_tuples_with_return_dict_false():
    unet = ddlearn.UNet2DModel.from_pretrained(DDPM, subfolder="unet")
    x = torch.randn(1, 3, 32, 32)
    (eps,) = unet(x, 10, return_dict=False)
    assert torch.equal(eps, unet(x, 10).sample)
    sd = ddlearn.StableDiffusionPipeline.from_pretrained(TINY_SD)
    theirs = diffusers.StableDiffusionPipeline.from_pretrained(TINY_SD, safety_checker=None)
    ids = sd.tokenizer(["a red butterfly"], padding="max_length", return_tensors="pt",
                       max_length=sd.tokenizer.model_max_length).input_ids
    ours_text, theirs_text = sd.text_encoder(ids, return_dict=False), \
        theirs.text_encoder(ids, return_dict=False)
    assert len(ours_text) == len(theirs_text) == 2
    assert torch.allclose(ours_text[0], theirs_text[0], atol=1e-5)
    z = torch.randn(1, 4, 8, 8)
    a = sd.unet(z, 5, ours_text[0], return_dict=False)
    b = theirs.unet(z, 5, theirs_text[0], return_dict=False)
    assert len(a) == len(b) == 1 and torch.allclose(a[0], b[0], atol=1e-5)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    (posterior,) = sd.vae.encode(image, return_dict=False)
    (decoded,) = sd.vae.decode(posterior.mode(), return_dict=False)
    (theirs_decoded,) = theirs.vae.decode(posterior.mode(), return_dict=False)
    assert torch.allclose(decoded, theirs_decoded, atol=1e-5)
    with pytest.raises(NotImplementedError, match="added_cond_kwargs"):
        sd.unet(z, 5, ours_text[0], added_cond_kwargs={"text_embeds": z})


@pytest.mark.parametrize("name", SCHEDULERS)
def test_scheduler_step_return_dict_false_gives_diffusers_tuple(name):
    ours, theirs = getattr(ddlearn, name)(), getattr(diffusers, name)()
    for s in (ours, theirs):
        s.set_timesteps(10)
    x, eps = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    t = theirs.timesteps[0]
    # DDPM and Euler a draw noise; only the stochastic ones take a generator in diffusers
    noise = lambda: {"generator": torch.Generator().manual_seed(0)} \
        if "generator" in inspect.signature(theirs.step).parameters else {}
    a = ours.step(eps, t, ours.scale_model_input(x, t), return_dict=False, **noise())
    b = theirs.step(eps, t, theirs.scale_model_input(x, t), return_dict=False, **noise())
    assert isinstance(a, tuple) and len(a) == len(b)
    assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(a, b, strict=True))


# ---- printing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler"])
def test_print_scheduler_shows_class_and_json_config_as_diffusers(name):
    ours, theirs = getattr(ddlearn, name)(), getattr(diffusers, name)()
    head, _, body = repr(ours).partition(" ")
    assert head == name and repr(theirs).startswith(f"{name} {{")
    ours_json, theirs_json = json.loads(body), json.loads(repr(theirs).partition(" ")[2])
    assert ours_json["_class_name"] == name
    shared = set(ours_json) & set(theirs_json) - {"_class_name"}
    assert len(shared) >= 8 and all(ours_json[k] == theirs_json[k] for k in shared)


def test_print_pipeline_shows_its_component_table_as_diffusers():
    ours = json.loads(repr(ddlearn.StableDiffusionPipeline.from_pretrained(TINY_SD)).partition(
        " ")[2])
    theirs = json.loads(repr(diffusers.StableDiffusionPipeline.from_pretrained(
        TINY_SD, safety_checker=None)).partition(" ")[2])
    for key in ("_class_name", "_name_or_path", "unet", "vae", "text_encoder", "tokenizer",
                "scheduler"):
        assert ours[key] == theirs[key], key


# ---- side effects --------------------------------------------------------------------------------
def test_from_pretrained_leaves_the_global_random_state_alone():
    def seeded_load_then_sample(library):
        torch.manual_seed(0)
        pipe = library.DDPMPipeline.from_pretrained(DDPM)
        pipe.set_progress_bar_config(disable=True)
        return pipe(num_inference_steps=3, output_type="np").images

    torch.manual_seed(0)
    expected = torch.randn(3)
    torch.manual_seed(0)
    ddlearn.StableDiffusionPipeline.from_pretrained(TINY_SD)
    assert torch.equal(torch.randn(3), expected)
    ours, theirs = seeded_load_then_sample(ddlearn), seeded_load_then_sample(diffusers)
    assert abs(ours - theirs).max() < 1e-4


def test_swapped_scheduler_reloads_silently_and_keeps_hidden_keys(tmp_path):
    ddpm = ddlearn.DDPMScheduler.from_pretrained(DDPM, subfolder="scheduler")
    ddim = ddlearn.DDIMScheduler.from_config(ddpm.config)
    ddim.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = ddlearn.DDIMScheduler.from_pretrained(tmp_path)
    theirs = diffusers.DDIMScheduler.from_pretrained(tmp_path)
    assert again.config["variance_type"] == theirs.config["variance_type"]
    with pytest.warns(UserWarning, match="not_a_key"):
        ddlearn.DDIMScheduler.from_config({**ddim.config, "not_a_key": 1})


def test_compatibles_are_diffusers_compatibles():
    ours = {c.__name__ for c in ddlearn.DDPMScheduler().compatibles}
    theirs = {c.__name__ for c in diffusers.DDPMScheduler().compatibles}
    assert ours == set(SCHEDULERS) and ours <= theirs
