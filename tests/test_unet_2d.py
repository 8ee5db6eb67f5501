"""UNet2DModel and its blocks against diffusers: same config, same (random) weights, same inputs.

Every parameter, GroupNorm affines included, is randomised so that a wrongly wired norm or a
swapped key cannot hide behind an identity initialisation. Checkpoints travel both ways:
diffusers save_pretrained -> ddlearn from_pretrained, and ddlearn save_pretrained -> diffusers.
"""

import diffusers
import pytest
import torch
from diffusers.models.attention_processor import Attention as RefAttention
from diffusers.models.resnet import ResnetBlock2D as RefResnetBlock2D
from model_harness import assert_close, assert_round_trip, randomise

from ddlearn.config import init_parameters
from ddlearn.models.attention import Attention
from ddlearn.models.embeddings import get_timestep_embedding
from ddlearn.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from ddlearn.models.unet_2d import UNet2DModel

NI = NotImplementedError  # a diffusers option ddlearn leaves out

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_ch,out_ch,temb", [(32, 32, 16), (32, 64, 16), (64, 32, None)])
def test_resnet_block_matches_diffusers(in_ch, out_ch, temb):
    ref = randomise(RefResnetBlock2D(in_channels=in_ch, out_channels=out_ch, temb_channels=temb,
                                     groups=8, eps=1e-6, output_scale_factor=2.0))
    ours = ResnetBlock2D(in_ch, out_ch, temb_channels=temb, groups=8, eps=1e-6,
                         output_scale_factor=2.0)
    x = torch.randn(2, in_ch, 8, 8)
    t = None if temb is None else torch.randn(2, temb)
    assert_round_trip(ref, ours, lambda block: block(x, t))


@pytest.mark.parametrize("spatial,cross", [(True, False), (False, False), (False, True)])
def test_attention_matches_diffusers(spatial, cross):
    kwargs = dict(heads=4, dim_head=8, cross_attention_dim=24 if cross else None)
    if spatial:  # the UNet/VAE flavour: GroupNorm, biases, residual, output rescale
        kwargs.update(bias=True, norm_num_groups=8, eps=1e-6, residual_connection=True,
                      rescale_output_factor=2.0)
    x = torch.randn(2, 32, 4, 6) if spatial else torch.randn(2, 10, 32)
    context = torch.randn(2, 7, 24) if cross else None
    assert_round_trip(randomise(RefAttention(32, **kwargs)), Attention(32, **kwargs),
                      lambda attention: attention(x, context))


def test_down_and_upsample_match_diffusers():
    from diffusers.models.downsampling import Downsample2D as RefDown
    from diffusers.models.upsampling import Upsample2D as RefUp

    x = torch.randn(2, 8, 9, 9)
    for padding in (0, 1):  # 0: the VAE encoder's asymmetric (0, 1, 0, 1) pad
        ref = randomise(RefDown(8, use_conv=True, out_channels=16, padding=padding, name="op"))
        ours = Downsample2D(8, use_conv=True, out_channels=16, padding=padding)
        assert_round_trip(ref, ours, lambda down: down(x))
    assert_close(Downsample2D(8, use_conv=False)(x), RefDown(8, use_conv=False)(x))
    assert_round_trip(randomise(RefUp(8, use_conv=True, out_channels=4)),
                      Upsample2D(8, use_conv=True, out_channels=4),
                      lambda up: (up(x), up(x, output_size=(19, 17))))


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding as ref

    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    for flip, shift, dim in [(True, 0, 32), (False, 1, 32), (True, 1, 33)]:
        assert_close(get_timestep_embedding(t, dim, flip, shift), ref(t, dim, flip, shift),
                     rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# UNet2DModel: checkpoints both ways, outputs equal
# --------------------------------------------------------------------------------------------------
DOWN, ATTN_DOWN, UP, ATTN_UP = "DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"
CONFIGS = {  # name -> (config, input size)
    "tiny": (dict(block_out_channels=(8, 16), down_block_types=(DOWN, ATTN_DOWN),
                  up_block_types=(ATTN_UP, UP), layers_per_block=1, norm_num_groups=4,
                  attention_head_dim=4, center_input_sample=True, mid_block_scale_factor=1.4),
             16),
    # the course's butterflies UNet, full width
    "butterflies": (dict(sample_size=32, block_out_channels=(64, 128, 128, 256),
                         down_block_types=(DOWN, DOWN, ATTN_DOWN, ATTN_DOWN),
                         up_block_types=(ATTN_UP, ATTN_UP, UP, UP)), 32),
    # google/ddpm-cat-256's layout (attention at the 16 px level of 256 px) at 1/8 of the width
    "ddpm-cat-256/8": (dict(block_out_channels=(16, 16, 32, 32, 64, 64),
                            down_block_types=(DOWN, DOWN, DOWN, DOWN, ATTN_DOWN, DOWN),
                            up_block_types=(UP, ATTN_UP, UP, UP, UP, UP), attention_head_dim=None,
                            norm_num_groups=8, norm_eps=1e-6, downsample_padding=0, freq_shift=1,
                            flip_sin_to_cos=False), 64),
    # google/ddpm-cifar10-32's layout at 1/4 of the width
    "ddpm-cifar10-32/4": (dict(block_out_channels=(32, 64, 64, 64),
                               down_block_types=(DOWN, ATTN_DOWN, DOWN, DOWN),
                               up_block_types=(UP, UP, ATTN_UP, UP), attention_head_dim=None,
                               norm_num_groups=8, norm_eps=1e-6, downsample_padding=0,
                               freq_shift=1, flip_sin_to_cos=False), 32),
    "class-conditional": (dict(block_out_channels=(16, 32), down_block_types=(DOWN, ATTN_DOWN),
                               up_block_types=(ATTN_UP, UP), layers_per_block=1, norm_num_groups=8,
                               num_class_embeds=5, in_channels=1, out_channels=2), 8),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_unet_2d_checkpoints_load_both_ways_with_equal_outputs(name, tmp_path):
    config, size = CONFIGS[name]
    ref = randomise(diffusers.UNet2DModel(**config), seed=1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, ref.config.in_channels, size, size, generator=g)
    labels = torch.tensor([0, 4]) if ref.config.num_class_embeds else None
    timesteps = (981, torch.tensor(17.5), torch.tensor([3, 500]), 10)
    forward = lambda unet: tuple(unet(x, t, class_labels=labels).sample for t in timesteps)
    assert_round_trip(ref, UNet2DModel, forward, folder=tmp_path)


def test_unet_2d_gradients_match_diffusers():
    """A training step sees the same gradients (dropout off): the backward pass is wired alike."""
    config, size = CONFIGS["tiny"]
    x, t = torch.randn(2, 3, size, size), torch.tensor([5, 900])
    ref, ours = randomise(diffusers.UNet2DModel(**config), seed=3), UNet2DModel(**config)
    assert_round_trip(ref, ours, lambda unet: unet(x, t).sample)
    for model in (ref, ours):
        model(x, t).sample.square().mean().backward()
    ref_grads = {name: p.grad for name, p in ref.named_parameters()}
    largest = max(g.abs().max().item() for g in ref_grads.values())
    for name, p in ours.named_parameters():  # (some are ~0 in exact arithmetic: conv bias -> norm)
        assert_close(p.grad, ref_grads[name], rtol=1e-4, atol=1e-6 * largest, what=name)


# --------------------------------------------------------------------------------------------------
# Errors a learner can act on
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return UNet2DModel(**CONFIGS["tiny"][0]).eval()


@pytest.mark.parametrize("shape,timestep,match", [
    ((2, 4, 16, 16), 1, "in_channels"),
    ((2, 3, 16), 1, r"\(B, 3, H, W\)"),
    ((2, 3, 15, 16), 1, "multiples of 2"),
    ((2, 3, 16, 16), torch.tensor([1, 2, 3]), r"shape \(\) / \(1,\) / \(2,\)"),
    ((2, 3, 16, 16), torch.ones(2, 1), r"shape \(\) / \(1,\) / \(2,\)"),
])
def test_unet_2d_bad_inputs(tiny, shape, timestep, match):
    with pytest.raises(ValueError, match=match):
        tiny(torch.randn(shape), timestep)


def test_unet_2d_class_labels_errors(tiny):
    conditional = UNet2DModel(**CONFIGS["class-conditional"][0])
    with pytest.raises(ValueError, match="class_labels"):
        conditional(torch.randn(1, 1, 8, 8), 3)
    with pytest.raises(ValueError, match="unconditional"):
        tiny(torch.randn(1, 3, 16, 16), 3, class_labels=torch.tensor([1]))


@pytest.mark.parametrize("override, match, error", [  # a diffusers option left out, or a mistake
    (dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D")), "AttnDownBlock2D", NI),
    (dict(up_block_types=("AttnUpBlock2D", "SkipUpBlock2D")), "UpBlock2D", NI),
    (dict(time_embedding_type="fourier"), "positional", NI),
    (dict(resnet_time_scale_shift="scale_shift"), "default", NI),
    (dict(class_embed_type="timestep"), "class_embed_type", NI),
    (dict(downsample_type="resnet"), "downsample_type", NI),
    (dict(act_fn="gelu"), "act_fn", NI),
    (dict(block_out_channels=(8, 16, 32)), "one entry per level", ValueError),
])
def test_unet_2d_rejects_unsupported_configs(override, match, error):
    with pytest.raises(error, match=match):
        UNet2DModel.from_config({**CONFIGS["tiny"][0], **override})
    if error is NI and set(override) <= set(init_parameters(UNet2DModel)):  # as an argument too
        with pytest.raises(error, match=match):
            UNet2DModel(**{**CONFIGS["tiny"][0], **override})


def test_unet_2d_accepts_diffusers_default_config_keys_silently(tmp_path):
    """A config.json written by diffusers (time_embedding_dim: null, mid_block_type, ...) loads
    without warnings; our saved config.json loads in diffusers to the same architecture."""
    import warnings

    diffusers.UNet2DModel(**CONFIGS["tiny"][0]).save_config(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = UNet2DModel.from_config(UNet2DModel.load_config(tmp_path))
    assert ours.config.attention_head_dim == 4
