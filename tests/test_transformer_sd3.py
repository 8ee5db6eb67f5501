"""ddlearn's SD3Transformer2DModel (MMDiT) vs diffusers': same weights, same inputs -> same
velocity, in memory and through checkpoints, both ways; and the clear errors."""

import diffusers
import pytest
import torch
from model_harness import assert_round_trip, randomise

from ddlearn import SD3Transformer2DModel
from ddlearn.models.embeddings import get_2d_sincos_pos_embed

TINY = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
            num_attention_heads=4, joint_attention_dim=40, caption_projection_dim=32,
            pooled_projection_dim=24, out_channels=4, pos_embed_max_size=12)


def inputs(batch=2, height=8, width=8, tokens=7, config=TINY, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(batch, config["in_channels"], height, width,
                                          generator=g),
                encoder_hidden_states=torch.randn(batch, tokens, config["joint_attention_dim"],
                                                  generator=g),
                pooled_projections=torch.randn(batch, config["pooled_projection_dim"],
                                               generator=g),
                timestep=torch.rand(batch, generator=g) * 1000)


@pytest.mark.parametrize("overrides,size", [
    ({}, (8, 8)),
    ({}, (6, 10)),  # not square, smaller than sample_size: a crop of the position grid
    (dict(patch_size=1, num_layers=1), (4, 8)),  # one block: the text-reading-only last block
    (dict(out_channels=6, num_layers=2), (8, 8)),
    (dict(sample_size=4, pos_embed_max_size=6, num_attention_heads=8, attention_head_dim=4),
     (12, 12)),
])
def test_matches_diffusers_both_ways(tmp_path, overrides, size):
    config = {**TINY, **overrides}
    x = inputs(height=size[0], width=size[1], config=config)
    forward = lambda model: model(**x)
    reference = randomise(diffusers.SD3Transformer2DModel(**config), seed=1)
    assert_round_trip(reference, SD3Transformer2DModel(**config), forward)
    assert_round_trip(reference, SD3Transformer2DModel, forward, folder=tmp_path)


def test_skip_layers_and_a_python_number_timestep_match_diffusers():
    reference = randomise(diffusers.SD3Transformer2DModel(**TINY), seed=2)
    ours = SD3Transformer2DModel(**TINY)
    ours.load_state_dict(reference.state_dict())
    x = inputs(batch=1)
    with torch.no_grad():
        for kwargs in (dict(skip_layers=[1]), dict(timestep=torch.tensor([250.0]))):
            expected = reference(**{**x, **kwargs}).sample
            torch.testing.assert_close(ours.eval()(**{**x, **kwargs}).sample, expected)


def test_position_grid_is_diffusers():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed as reference

    for grid, base in ((4, 4), (6, 2), (9, 16)):
        torch.testing.assert_close(get_2d_sincos_pos_embed(32, grid, base_size=base),
                                   reference(32, grid, base_size=base, output_type="pt"))


def test_output_is_the_velocity_shape_and_the_last_block_reads_text_only():
    model = SD3Transformer2DModel(**TINY)
    out = model(**inputs()).sample
    assert out.shape == (2, 4, 8, 8)
    assert model.transformer_blocks[-1].attn.to_add_out is None
    assert model.transformer_blocks[0].attn.to_add_out is not None


@pytest.mark.parametrize("change,message", [
    (dict(hidden_states=torch.zeros(2, 4, 7, 8)), "multiples of patch_size=2"),
    (dict(hidden_states=torch.zeros(2, 3, 8, 8)), r"\(B, 4, h, w\)"),
    (dict(hidden_states=torch.zeros(2, 4, 26, 26)), "pos_embed_max_size"),
    (dict(encoder_hidden_states=torch.zeros(2, 7, 32)), "joint_attention_dim"),
    (dict(encoder_hidden_states=None), "encoder_hidden_states is required"),
    (dict(pooled_projections=torch.zeros(2, 12)), "pooled_projection_dim"),
    (dict(pooled_projections=torch.zeros(1, 24)), "B = 2"),
    (dict(timestep=None), "timestep is required"),
])
def test_bad_input_gets_a_clear_error(change, message):
    with pytest.raises(ValueError, match=message):
        SD3Transformer2DModel(**TINY)(**{**inputs(), **change})


def test_sd35_options_are_refused_by_name_and_the_defaults_accepted():
    SD3Transformer2DModel.from_config({**TINY, "dual_attention_layers": [], "qk_norm": None})
    with pytest.raises(NotImplementedError, match="dual_attention_layers"):
        SD3Transformer2DModel.from_config({**TINY, "dual_attention_layers": [0]})
    with pytest.raises(NotImplementedError, match="qk_norm"):
        SD3Transformer2DModel(**TINY, qk_norm="rms_norm")
    with pytest.raises(ValueError, match="caption_projection_dim"):
        SD3Transformer2DModel(**{**TINY, "caption_projection_dim": 48})
    with pytest.raises(NotImplementedError, match="block_controlnet_hidden_states"):
        SD3Transformer2DModel(**TINY)(**inputs(), block_controlnet_hidden_states=[torch.zeros(1)])
