"""LoRA (ddlearn/lora/, pipelines/lora_loading.py) against diffusers + peft: the
same layer, the same files, the same images, both ways; fusing; and one test per clear error."""

import json
import warnings

import diffusers
import numpy as np
import peft
import pytest
import torch
from diffusers.utils import convert_state_dict_to_diffusers as diffusers_convert
from model_harness import assert_close
from safetensors import safe_open
from safetensors.torch import save_file

import ddlearn
from ddlearn import lora
from ddlearn.data import shipped_model

TOLERANCE = 2e-3  # max pixel difference, images in [0, 1]
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
CLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
FOLDER = shipped_model("tiny-sd-butterflies")
TO_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def images_of(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe("a blue butterfly", num_inference_steps=3, output_type="np",
                generator=torch.Generator().manual_seed(0), **kwargs).images


def assert_same_images(ours, theirs):
    assert_close(ours, theirs, rtol=0, atol=TOLERANCE, what="images")


def ours_pipe():
    return ddlearn.StableDiffusionPipeline.from_pretrained(FOLDER)


def theirs_pipe():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return diffusers.StableDiffusionPipeline.from_pretrained(FOLDER, safety_checker=None)


def randomise_lora_B(model, std, seed):
    """B = 0 makes a LoRA a no-op; random B makes it change the images."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def diffusers_lora(tmp_path_factory):
    """A UNet + text-encoder LoRA made with diffusers + peft, saved by diffusers four ways."""
    pipe = theirs_pipe()
    torch.manual_seed(0)
    pipe.unet.add_adapter(peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                                          target_modules=UNET_TARGETS))
    text_config = peft.LoraConfig(r=2, lora_alpha=4, init_lora_weights="gaussian",
                                  target_modules=CLIP_TARGETS)
    peft.inject_adapter_in_model(text_config, pipe.text_encoder)
    randomise_lora_B(pipe.unet, 0.1, seed=1)
    randomise_lora_B(pipe.text_encoder, 0.3, seed=2)
    unet = peft.get_peft_model_state_dict(pipe.unet)
    text = peft.get_peft_model_state_dict(pipe.text_encoder)
    root = tmp_path_factory.mktemp("diffusers-lora")
    save = diffusers.StableDiffusionPipeline.save_lora_weights
    save(root / "metadata", unet_lora_layers=unet, text_encoder_lora_layers=text,
         unet_lora_adapter_metadata=pipe.unet.peft_config["default"].to_dict(),
         text_encoder_lora_adapter_metadata=text_config.to_dict())
    save(root / "unet, no metadata", unet_lora_layers=unet)  # diffusers then takes α = r
    save(root / "text encoder", text_encoder_lora_layers=text,
         text_encoder_lora_adapter_metadata=text_config.to_dict())
    save(root / "script names", unet_lora_layers=diffusers_convert(unet),  # lora.down / up
         text_encoder_lora_layers=diffusers_convert(text))
    return root


# ---- the layer -----------------------------------------------------------------------------------
def test_layer_matches_peft_lora_linear():
    base = torch.nn.Sequential(torch.nn.Linear(12, 10))
    theirs = peft.inject_adapter_in_model(peft.LoraConfig(r=3, lora_alpha=6, target_modules=["0"]),
                                          torch.nn.Sequential(torch.nn.Linear(12, 10)))
    theirs[0].base_layer.load_state_dict(base[0].state_dict())
    ours = lora.inject_adapter_in_model(lora.LoraConfig(r=3, lora_alpha=6, target_modules=["0"]),
                                        base)
    randomise_lora_B(theirs, 0.5, seed=3)
    ours[0].lora_A.weight.data.copy_(theirs[0].lora_A["default"].weight)
    ours[0].lora_B.weight.data.copy_(theirs[0].lora_B["default"].weight)
    x = torch.randn(5, 12)
    assert_close(ours(x), theirs(x))
    lora.scale_lora_layers(ours, 0.5)
    theirs[0].scale_layer(0.5)
    assert_close(ours(x), theirs(x))
    ours[0].merge()
    theirs[0].merge()
    assert_close(ours[0].weight, theirs[0].base_layer.weight, atol=1e-7)
    assert_close(ours(x), theirs(x))


def test_add_adapter_initialises_and_freezes_as_peft():
    ours = ours_pipe().unet
    theirs = theirs_pipe().unet
    for init in ("gaussian", True):
        for unet, config in ((ours, lora.LoraConfig), (theirs, peft.LoraConfig)):
            unet.unload_lora()
            torch.manual_seed(0)
            unet.add_adapter(config(r=4, lora_alpha=8, init_lora_weights=init,
                                    target_modules=UNET_TARGETS))
        expected = {k.replace(".default", ""): v for k, v in theirs.state_dict().items()
                    if "lora_" in k}
        got = lora.get_peft_model_state_dict(ours)
        assert got.keys() == expected.keys()
        for key in got:  # B = 0; A drawn from the same distribution as peft's (the order in
            # which modules are visited differs from diffusers', so not the same numbers)
            if "lora_B" in key:
                assert not got[key].any() and not expected[key].any()
            else:
                ratio = got[key].std() / expected[key].std()
                assert 0.75 < ratio < 1.33, (key, init, float(ratio))
    trainable = lambda m: sorted(n.replace(".default", "") for n, p in m.named_parameters()
                                 if p.requires_grad)
    assert trainable(ours) == trainable(theirs) == sorted(got)


# ---- files: diffusers -> ddlearn -> diffusers -------------------------------------------------
@pytest.mark.parametrize("kind", ["metadata", "unet, no metadata", "text encoder",
                                  "script names"])
def test_diffusers_lora_gives_the_same_images_in_ddlearn(diffusers_lora, kind):
    ours, theirs = ours_pipe(), theirs_pipe()
    before = images_of(ours)
    ours.load_lora_weights(diffusers_lora / kind)
    theirs.load_lora_weights(diffusers_lora / kind)
    assert np.abs(images_of(ours) - before).max() > 0.05  # the LoRA does change the images
    assert_same_images(images_of(ours), images_of(theirs))
    half = {"cross_attention_kwargs": {"scale": 0.5}}  # s = 0.5 in the UNet and text encoder
    assert_same_images(images_of(ours, **half), images_of(theirs, **half))
    assert ours.get_list_adapters() == theirs.get_list_adapters()


def test_ddlearn_lora_gives_the_same_images_in_diffusers(tmp_path):
    ours = ours_pipe()
    ours.unet.add_adapter(lora.LoraConfig(r=4, lora_alpha=16, target_modules=UNET_TARGETS))
    text_config = lora.LoraConfig(r=2, lora_alpha=2, target_modules=CLIP_TARGETS)
    lora.inject_adapter_in_model(text_config, ours.text_encoder)  # by module names only
    randomise_lora_B(ours.unet, 0.1, seed=4)
    randomise_lora_B(ours.text_encoder, 0.3, seed=5)
    ours.save_lora_weights(tmp_path, lora.get_peft_model_state_dict(ours.unet),
                           lora.get_peft_model_state_dict(ours.text_encoder),
                           unet_lora_adapter_metadata=ours.unet.peft_config["default"],
                           text_encoder_lora_adapter_metadata=text_config.to_dict())
    theirs = theirs_pipe()
    theirs.load_lora_weights(tmp_path)
    assert_same_images(images_of(ours), images_of(theirs))
    half = {"cross_attention_kwargs": {"scale": 0.5}}
    assert_same_images(images_of(ours, **half), images_of(theirs, **half))


def test_saved_file_has_diffusers_keys_and_metadata(tmp_path):
    ours, theirs = ours_pipe(), theirs_pipe()
    ours.unet.add_adapter(lora.LoraConfig(r=4, lora_alpha=8, target_modules=UNET_TARGETS))
    ours.text_encoder.add_adapter(lora.LoraConfig(r=4, lora_alpha=8, target_modules=CLIP_TARGETS))
    theirs.unet.add_adapter(peft.LoraConfig(r=4, lora_alpha=8, target_modules=UNET_TARGETS))
    peft.inject_adapter_in_model(peft.LoraConfig(r=4, lora_alpha=8, target_modules=CLIP_TARGETS),
                                 theirs.text_encoder)
    metadata = peft.LoraConfig(r=4, lora_alpha=8, target_modules=UNET_TARGETS).to_dict()
    ours.save_lora_weights(tmp_path / "ours", lora.get_peft_model_state_dict(ours.unet),
                           lora.get_peft_model_state_dict(ours.text_encoder),
                           unet_lora_adapter_metadata=metadata)
    theirs.save_lora_weights(tmp_path / "theirs", peft.get_peft_model_state_dict(theirs.unet),
                             peft.get_peft_model_state_dict(theirs.text_encoder),
                             unet_lora_adapter_metadata=metadata)
    files = []
    for who in ("ours", "theirs"):
        with safe_open(tmp_path / who / "pytorch_lora_weights.safetensors", "pt") as f:
            # transformers 5 leaves `text_model.` out of CLIP's paths; ddlearn keeps it
            files.append(({k.replace("text_model.", "") for k in f.keys()}, f.metadata()))
    (our_keys, our_header), (their_keys, their_header) = files
    assert our_keys == their_keys and len(our_keys) == 2 * (88 + 12)
    assert our_header["format"] == their_header["format"] == "pt"
    ours_metadata, theirs_metadata = (json.loads(h["lora_adapter_metadata"])
                                      for h in (our_header, their_header))
    for side in (ours_metadata, theirs_metadata):  # a set, written in no particular order
        side["unet.target_modules"] = sorted(side["unet.target_modules"])
    assert ours_metadata == theirs_metadata
    for model_ours, model_theirs in ((ours.unet, theirs.unet),
                                     (ours.text_encoder, theirs.text_encoder)):
        ours_sd = lora.convert_state_dict_to_diffusers(lora.get_peft_model_state_dict(model_ours))
        theirs_sd = diffusers_convert(peft.get_peft_model_state_dict(model_theirs))
        assert {k.replace("text_model.", "") for k in ours_sd} == set(theirs_sd)


def test_one_training_step_changes_only_lora_weights():
    unet = ours_pipe().unet
    unet.add_adapter(lora.LoraConfig(r=4, target_modules=UNET_TARGETS))
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    x, text = torch.randn(1, 4, 8, 8), torch.randn(1, 16, 64)
    assert_close(unet(x, 10, text).sample, ours_pipe().unet(x, 10, text).sample)  # B = 0
    optimizer = torch.optim.SGD([p for p in unet.parameters() if p.requires_grad], lr=1.0)
    unet(x, 10, text).sample.square().mean().backward()
    optimizer.step()
    changed = {k for k, v in unet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(".lora_B." in k for k in changed)  # A's gradient is B^T (...) = 0


# ---- fusing --------------------------------------------------------------------------------------
def test_fuse_unfuse_and_unload_as_diffusers(diffusers_lora, tmp_path):
    ours, theirs = ours_pipe(), theirs_pipe()
    w0 = ours.unet.get_submodule(TO_Q).weight.detach().clone()
    for pipe in (ours, theirs):
        pipe.load_lora_weights(diffusers_lora / "metadata")
    unfused = images_of(ours)
    for pipe in (ours, theirs):
        pipe.fuse_lora()
    assert not torch.allclose(ours.unet.get_submodule(TO_Q).weight, w0)
    assert_same_images(images_of(ours), unfused)  # W' x = W0 x + (α/r) B A x
    with pytest.raises(RuntimeError, match="already fused into unet, text_encoder"):
        ours.fuse_lora()
    for pipe in (ours, theirs):
        pipe.unfuse_lora()
    assert_close(ours.unet.get_submodule(TO_Q).weight, w0, rtol=0, atol=1e-6)
    with pytest.warns(UserWarning, match="no LoRA is fused"):
        ours.unfuse_lora()
    for pipe in (ours, theirs):  # lora_scale 0.7 stays in the layers after unfusing, as diffusers
        pipe.fuse_lora(lora_scale=0.7)
    assert_same_images(images_of(ours), images_of(theirs))
    for pipe in (ours, theirs):
        pipe.unfuse_lora()
    assert_same_images(images_of(ours), images_of(theirs))
    with pytest.raises(ValueError, match="holds 88 LoRA layers.*fuse_lora"):
        ours.unet.save_pretrained(tmp_path / "unet")
    for pipe in (ours, theirs):  # keep the fused LoRA in the weights, save the plain model
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    assert ours.get_list_adapters() == {} and not lora.lora_layers(ours.unet)
    ours.save_pretrained(tmp_path / "fused")
    fused = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path / "fused",
                                                              safety_checker=None)
    assert_same_images(images_of(fused), images_of(theirs))


def test_set_adapters_and_disable_lora_as_diffusers(diffusers_lora):
    ours, theirs = ours_pipe(), theirs_pipe()
    plain = images_of(ours)
    for pipe in (ours, theirs):
        pipe.load_lora_weights(diffusers_lora / "metadata", adapter_name="butterfly")
        pipe.set_adapters("butterfly", adapter_weights=0.5)
    assert ours.get_active_adapters() == theirs.get_active_adapters() == ["butterfly"]
    assert_same_images(images_of(ours), images_of(theirs))
    for pipe in (ours, theirs):
        pipe.set_adapters(["butterfly"], adapter_weights=[{"unet": 0.3}])  # text encoder: 1
    assert_same_images(images_of(ours), images_of(theirs))
    for pipe in (ours, theirs):
        pipe.disable_lora()
    assert_same_images(images_of(ours), plain)
    ours.enable_lora()
    theirs.enable_lora()
    assert_same_images(images_of(ours), images_of(theirs))
    with pytest.raises(ValueError, match=r"Adapter name\(s\) \{'other'\} not in the list"):
        ours.set_adapters("other")


def test_peft_config_objects_are_accepted():
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=UNET_TARGETS)
    unet = ours_pipe().unet
    unet.add_adapter(config)  # peft's own config, as diffusers tutorials pass it
    assert len(lora.lora_layers(unet)) == 88 and unet.get_submodule(TO_Q).scaling == 2.0
    assert lora.LoraConfig(**config.to_dict()).to_dict()["target_modules"] == sorted(UNET_TARGETS)


# ---- clear errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("r", [0, -1, 2.5])
def test_rank_must_be_a_positive_whole_number(r):
    with pytest.raises(ValueError, match=rf"r={r} is the rank of B A and must be a whole number"):
        lora.LoraConfig(r=r)


def test_config_errors():
    unet = ours_pipe().unet
    with pytest.raises(ValueError, match=r"matches no module of UNet2DConditionModel; its Linear "
                                         r"layers are named .*to_q, to_k, to_v, to_out.0"):
        unet.add_adapter(lora.LoraConfig(target_modules=["to_qq"]))
    with pytest.raises(NotImplementedError, match="conv1, a Conv2d; ddlearn's LoRA wraps"):
        unet.add_adapter(lora.LoraConfig(target_modules=[r"down_blocks.0.resnets.0.conv1"]))
    with pytest.raises(NotImplementedError, match="use_dora=True is a peft option"):
        lora.LoraConfig(use_dora=True)
    with pytest.raises(TypeError, match="did you mean 'lora_alpha'"):
        lora.LoraConfig(lora_aplha=16)
    unet.add_adapter(lora.LoraConfig(target_modules=["to_q"]))
    with pytest.raises(NotImplementedError, match="already holds a LoRA adapter .default."):
        unet.add_adapter(lora.LoraConfig(target_modules=["to_k"]), adapter_name="second")
    with pytest.raises(NotImplementedError, match=r"cross_attention_kwargs \['gligen'\] go to "):
        unet(torch.randn(1, 4, 8, 8), 1, torch.randn(1, 16, 64),
             cross_attention_kwargs={"gligen": {}})


def test_file_errors(diffusers_lora, tmp_path):
    pipe = ours_pipe()
    state, _ = pipe.lora_state_dict(diffusers_lora / "metadata")
    elsewhere = {k.replace("attn1.to_q", "attn3.to_q"): v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"made for another model: e.g. unet.down_blocks.0.*attn3."
                                         r"to_q has no Linear layer in this UNet2DConditionModel"):
        pipe.load_lora_weights(elsewhere)
    wide = {**state, f"unet.{TO_Q}.lora_A.weight": torch.zeros(4, 320)}
    with pytest.raises(ValueError, match=r"lora_A of attn1.to_q is \(4, 320\) but this model's "
                                         r"attn1.to_q takes 64 inputs: made for another model"):
        pipe.load_lora_weights(wide)
    assert not lora.lora_layers(pipe.unet) and not lora.lora_layers(pipe.text_encoder)
    kohya = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 64)}
    with pytest.raises(ValueError, match="kohya-ss / A1111 LoRA file.*Convert it with diffusers"):
        pipe.load_lora_weights(kohya)
    save_file({"x": torch.zeros(1)}, tmp_path / "weights.safetensors")
    with pytest.raises(FileNotFoundError, match="no LoRA file pytorch_lora_weights.safetensors in"
                                                ".* it holds weights.safetensors"):
        pipe.load_lora_weights(tmp_path, weight_name="pytorch_lora_weights.safetensors")
    (tmp_path / "lora.bin").write_bytes(b"not a pickle we would open")
    with pytest.raises(ValueError, match="lora.bin is not a safetensors file"):
        pipe.load_lora_weights(tmp_path / "lora.bin")
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        pipe.load_lora_weights(tmp_path / "broken.safetensors")
    pipe.load_lora_weights(state)
    with pytest.raises(NotImplementedError, match="already holds a LoRA adapter"):
        pipe.load_lora_weights(state)
    with pytest.raises(NotImplementedError, match=r"cross_attention_kwargs \['foo'\]"):
        images_of(pipe, cross_attention_kwargs={"foo": 1})
