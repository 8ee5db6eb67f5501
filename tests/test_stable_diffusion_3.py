"""ddlearn's StableDiffusion3Pipeline vs diffusers': the same folder (two CLIPs with projection,
no T5, an 8x VAE with 16 latent channels, the MMDiT, flow-matching Euler) gives the same images
for the same seed and arguments; each library loads the folder the other wrote."""

import diffusers
import pytest
import torch
import transformers
from model_harness import assert_close, randomise

import ddlearn
from ddlearn.data.tokenizer import build_clip_tokenizer

CAPTIONS = ["a blue butterfly with orange spots", "a red moth", "green stripes"]
TOLERANCE = 2e-3  # max pixel difference, images in [0, 1]


def clip(vocab_size, width, seed):
    return randomise(transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
        projection_dim=width, bos_token_id=0, eos_token_id=1, pad_token_id=1)), seed)


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd3")
    tokenizer = build_clip_tokenizer(CAPTIONS, folder / "tokenizer", model_max_length=16)
    transformer = randomise(diffusers.SD3Transformer2DModel(
        sample_size=4, patch_size=1, in_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
        pooled_projection_dim=48, out_channels=16, pos_embed_max_size=8), seed=1)
    vae = randomise(diffusers.AutoencoderKL(
        latent_channels=16, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=1.5, shift_factor=0.1,
        use_quant_conv=False, use_post_quant_conv=False), seed=2)
    diffusers.StableDiffusion3Pipeline(
        transformer=transformer, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae, text_encoder=clip(len(tokenizer), 32, 3), tokenizer=tokenizer,
        text_encoder_2=clip(len(tokenizer), 16, 4), tokenizer_2=tokenizer,
        text_encoder_3=None, tokenizer_3=None).save_pretrained(folder)
    return folder


def images_of(pipe, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images


def pair(folder):
    """(ddlearn's, diffusers') pipelines from one folder; diffusers' own save leaves T5 out of
    model_index.json, so it is declined when loading, as diffusers' docs do to drop T5."""
    return (ddlearn.StableDiffusion3Pipeline.from_pretrained(folder),
            diffusers.StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None,
                                                               tokenizer_3=None))


CALLS = {
    "defaults": dict(prompt="a red moth", num_inference_steps=3),
    "batch, negatives, 2 per prompt": dict(
        prompt=["a blue butterfly with orange spots", "a red moth"],
        negative_prompt=["green stripes", ""], num_images_per_prompt=2, num_inference_steps=3,
        guidance_scale=5.0),
    "no guidance, 48 px, T5 length 8": dict(prompt="green stripes", guidance_scale=1.0,
                                            height=48, width=32, num_inference_steps=2,
                                            max_sequence_length=8),
    "prompt_2, clip_skip, sigmas": dict(prompt="a red moth", prompt_2="green stripes",
                                        clip_skip=1, sigmas=[1.0, 0.6, 0.3]),
    "skip-layer guidance": dict(prompt="a red moth", num_inference_steps=6,
                                skip_guidance_layers=[0], skip_layer_guidance_stop=0.9),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_matches_diffusers(sd3_folder, call):
    ours, theirs = pair(sd3_folder)
    assert isinstance(ours.transformer, ddlearn.SD3Transformer2DModel)
    assert isinstance(ours.text_encoder_2, ddlearn.CLIPTextModelWithProjection)
    assert ours.vae_scale_factor == 8 and ours.text_encoder_3 is None
    assert_close(images_of(ours, **call), images_of(theirs, **call), rtol=0, atol=TOLERANCE,
                 what="images")


def test_encode_prompt_matches_diffusers(sd3_folder):
    ours, theirs = pair(sd3_folder)
    kwargs = dict(prompt=["a red moth", "green stripes"], prompt_2=None, prompt_3=None,
                  negative_prompt="a blue butterfly with orange spots", num_images_per_prompt=2,
                  max_sequence_length=5)
    with torch.no_grad():
        for a, b in zip(ours.encode_prompt(**kwargs), theirs.encode_prompt(**kwargs),
                        strict=True):
            assert_close(a, b, rtol=1e-5, what="encode_prompt output")
    c = ours.encode_prompt("a red moth", None, None, max_sequence_length=5)[0]
    assert c.shape == (1, 16 + 5, 64)  # CLIP's 16 tokens + T5's 5 (zeros), joint_attention_dim


def test_prompt_embeds_and_latents_give_the_same_image(sd3_folder):
    ours, theirs = pair(sd3_folder)
    c, c_neg, y, y_neg = ours.encode_prompt("a red moth", None, None)
    latents = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(5))
    call = dict(prompt_embeds=c, negative_prompt_embeds=c_neg, pooled_prompt_embeds=y,
                negative_pooled_prompt_embeds=y_neg, latents=latents, num_inference_steps=3)
    assert_close(images_of(ours, **call), images_of(theirs, **call), rtol=0, atol=TOLERANCE)
    assert_close(images_of(ours, **call),
                 images_of(ours, prompt="a red moth", latents=latents, num_inference_steps=3),
                 rtol=0, atol=1e-6)


def test_ddlearn_saved_folder_loads_in_diffusers(sd3_folder, tmp_path):
    ours = ddlearn.DiffusionPipeline.from_pretrained(sd3_folder)  # class from model_index.json
    assert type(ours) is ddlearn.StableDiffusion3Pipeline
    ours.save_pretrained(tmp_path)
    theirs = diffusers.StableDiffusion3Pipeline.from_pretrained(tmp_path, text_encoder_3=None,
                                                                tokenizer_3=None)
    call = dict(prompt="a blue butterfly with orange spots", num_inference_steps=2)
    assert_close(images_of(ours, **call), images_of(theirs, **call), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("change,error,message", [
    (dict(height=36), ValueError, "multiples of 8"),
    (dict(max_sequence_length=600), ValueError, "512"),
    (dict(guidance_scale=float("nan")), ValueError, "guidance_scale"),
    (dict(prompt=None), ValueError, "exactly one of `prompt` and `prompt_embeds`"),
    (dict(negative_prompt=["a", "b"]), ValueError, "negative_prompt has 2 entries"),
    (dict(latents=torch.zeros(1, 4, 4, 4)), ValueError, "latents has shape"),
    (dict(joint_attention_kwargs={"scale": 0.5}), NotImplementedError, "joint_attention_kwargs"),
    (dict(ip_adapter_image="x"), NotImplementedError, "ip_adapter_image"),
    (dict(num_inference_step=3), TypeError, "num_inference_steps"),
])
def test_bad_input_gets_a_clear_error(sd3_folder, change, error, message):
    pipe = ddlearn.StableDiffusion3Pipeline.from_pretrained(sd3_folder)
    with pytest.raises(error, match=message):
        pipe(**{"prompt": "a red moth", "num_inference_steps": 1, **change})


def test_a_t5_encoder_is_refused_with_what_to_do(sd3_folder):
    pipe = ddlearn.StableDiffusion3Pipeline.from_pretrained(sd3_folder)
    with pytest.raises(NotImplementedError, match="text_encoder_3=None"):
        ddlearn.StableDiffusion3Pipeline(**{**pipe.components, "text_encoder_3": object()})
