"""ddlearn's UNet2DConditionModel and Transformer2DModel against diffusers': same config, same
random weights (every parameter randomised, norms included), same inputs -> same outputs;
checkpoints written by either library load in the other; bad inputs and unsupported configs
raise ValueErrors."""

import warnings

import diffusers
import pytest
import torch
from model_harness import assert_close, assert_round_trip, assert_same_keys, randomise

from ddlearn.models.transformer_2d import Transformer2DModel
from ddlearn.models.unet_2d_condition import UNet2DConditionModel

NI = NotImplementedError  # a diffusers option ddlearn leaves out

TINY = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
            attention_head_dim=4, center_input_sample=True, flip_sin_to_cos=False, freq_shift=1)
# SD 1.5's block layout (3 x CrossAttnDown + Down, mid, Up + 3 x CrossAttnUp) at a small width
SD15_SMALL = dict(sample_size=16, block_out_channels=(32, 64, 64, 64), layers_per_block=2,
                  norm_num_groups=8, cross_attention_dim=24, attention_head_dim=8)
# SD 2.1's: linear projections, a head count per level, upcast attention
SD21_SMALL = dict(SD15_SMALL, use_linear_projection=True, attention_head_dim=(2, 4, 8, 8),
                  upcast_attention=True, cross_attention_dim=32)


def inputs(config: dict, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    size = config["sample_size"]
    sample = torch.randn(batch, 4, size, size, generator=g)
    context = torch.randn(batch, 7, config["cross_attention_dim"], generator=g)
    return sample, torch.tensor([3, 901])[:batch], context


@pytest.mark.parametrize("config", [TINY, SD15_SMALL, SD21_SMALL], ids=["tiny", "sd15", "sd21"])
def test_unet_matches_diffusers_both_ways(config, tmp_path):
    ref = randomise(diffusers.UNet2DConditionModel(**config))
    sample, t, context = inputs(config)
    # (a plain number as timestep is broadcast over the batch)
    forward = lambda unet: (unet(sample, t, context).sample, unet(sample, 500, context).sample)
    assert_round_trip(ref, UNet2DConditionModel, forward, folder=tmp_path)


@pytest.mark.filterwarnings("ignore:.*Transformer2DModelOutput:FutureWarning")
@pytest.mark.parametrize("linear", [False, True])
def test_transformer_2d_matches_diffusers(linear):
    ref = randomise(diffusers.Transformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=16, norm_num_groups=4,
        cross_attention_dim=12, use_linear_projection=linear))
    ours = Transformer2DModel(2, 8, in_channels=16, norm_num_groups=4, cross_attention_dim=12,
                              use_linear_projection=linear)
    x, context = torch.randn(2, 16, 4, 6), torch.randn(2, 5, 12)
    assert_round_trip(ref, ours, lambda model: model(x, encoder_hidden_states=context))


@pytest.fixture(scope="module")
def tiny_unet():
    return randomise(UNet2DConditionModel(**TINY))


@pytest.mark.parametrize("make_args, message", [
    (lambda s, c: (s[:, :3], 1, c), "in_channels"),
    (lambda s, c: (s[..., :7], 1, c), "multiples of 2"),
    (lambda s, c: (s, torch.tensor([1, 2, 3]), c), "timestep"),
    (lambda s, c: (s, torch.ones(2, 1), c), "timestep"),
    (lambda s, c: (s, 1, None), "encoder_hidden_states is required"),
    (lambda s, c: (s, 1, c[..., :5]), "cross_attention_dim"),
    (lambda s, c: (s, 1, c[:1]), "batch"),
])
def test_bad_inputs_raise_clear_errors(tiny_unet, make_args, message):
    sample, _, context = inputs(TINY)
    with pytest.raises(ValueError, match=message):
        tiny_unet(*make_args(sample, context))


@pytest.mark.parametrize("override, message, error", [  # a diffusers option left out, or a mistake
    (dict(transformer_layers_per_block=2), "transformer_layers_per_block", NI),
    (dict(only_cross_attention=True), "only_cross_attention", NI),
    (dict(dual_cross_attention=True), "dual_cross_attention", NI),
    (dict(num_attention_heads=4), "num_attention_heads", NI),
    (dict(down_block_types=("AttnDownBlock2D", "DownBlock2D")), "CrossAttnDownBlock2D", NI),
    (dict(attention_head_dim=(4, 4, 4)), "attention_head_dim", ValueError),
    (dict(class_embed_type="timestep"), "class_embed_type", NI),
])
def test_unsupported_configs_are_refused(override, message, error):
    with pytest.raises(error, match=message):
        UNet2DConditionModel.from_config({**TINY, **override})


# the real unet/config.json files of SD 1.5 and SD 2.1 (runwayml / stabilityai), verbatim keys
SD15_CONFIG = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
    "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"],
}
SD21_CONFIG = {
    **SD15_CONFIG, "_diffusers_version": "0.10.0.dev0", "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024, "dual_cross_attention": False, "num_class_embeds": None,
    "only_cross_attention": False, "sample_size": 96, "use_linear_projection": True,
    "upcast_attention": True,
}


@pytest.mark.parametrize("config", [SD15_CONFIG, SD21_CONFIG], ids=["sd15", "sd21"])
def test_real_sd_configs_are_accepted_without_warnings(config):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kwargs = UNet2DConditionModel.extract_init_kwargs(config)
    assert kwargs["cross_attention_dim"] == config["cross_attention_dim"]


@pytest.mark.slow
def test_full_sd15_unet_matches_diffusers():
    """SD 1.5 at full size (860M parameters): same keys and shapes, one 64x64 forward."""
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = diffusers.UNet2DConditionModel(**{k: v for k, v in SD15_CONFIG.items()
                                            if not k.startswith("_")}).eval().to(device)
    ours = UNet2DConditionModel.from_config(SD15_CONFIG).eval().to(device)
    assert_same_keys(ours, ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    sample = torch.randn(1, 4, 64, 64, device=device)
    context = torch.randn(1, 77, 768, device=device)
    with torch.no_grad():
        assert_close(ours(sample, 981, context).sample, ref(sample, 981, context).sample)
