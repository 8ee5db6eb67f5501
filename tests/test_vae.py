"""ddlearn's AutoencoderKL and VAEWrapper against diffusers' AutoencoderKL and VaeImageProcessor:
same config, same random weights (norms included), same images and generator -> same posterior,
samples, KL and reconstructions; checkpoints load both ways; clear errors for bad inputs."""

import diffusers
import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from model_harness import (
    assert_close,
    assert_round_trip,
    assert_same_keys,
    randomise,
    save_and_load,
)
from PIL import Image

from ddlearn.models.vae import AutoencoderKL
from ddlearn.models.vae_wrapper import VAEWrapper

NI = NotImplementedError  # a diffusers option ddlearn leaves out

TINY = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            sample_size=16, scaling_factor=0.5)
THREE_LEVELS = dict(block_out_channels=(16, 32, 32), layers_per_block=2, norm_num_groups=8,
                    down_block_types=("DownEncoderBlock2D",) * 3,
                    up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=3, sample_size=24)

# SD3's layout: 8x downsampling (4 levels), 16 latent channels, a shift, no quant convs
SD3_LAYOUT = dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8,
                  down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, sample_size=32,
                  scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                  use_post_quant_conv=False)


@pytest.fixture(scope="module", params=[TINY, THREE_LEVELS, SD3_LAYOUT],
                ids=["tiny", "3-levels", "sd3-layout"])
def pair(request, tmp_path_factory):
    """(diffusers VAE, ddlearn VAE loaded from the diffusers checkpoint, config)."""
    ref = randomise(diffusers.AutoencoderKL(**request.param))
    ours = save_and_load(ref, AutoencoderKL, tmp_path_factory.mktemp("vae"))
    return ref, ours, request.param


def images(config, batch=2):
    size = config["sample_size"]
    return torch.rand(batch, 3, size, size - 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_encode_decode_match_diffusers(pair):
    ref, ours, config = pair
    x = images(config)
    with torch.no_grad():
        q_ref, q = ref.encode(x).latent_dist, ours.encode(x).latent_dist
        for name in ("mean", "logvar", "std"):
            assert_close(getattr(q, name), getattr(q_ref, name))
        assert_close(q.kl(), q_ref.kl())
        z_ref = q_ref.sample(torch.Generator().manual_seed(3))
        assert_close(q.sample(torch.Generator().manual_seed(3)), z_ref)
        assert_close(ours.decode(z_ref).sample, ref.decode(z_ref).sample)
        f = 2 ** (len(config["block_out_channels"]) - 1)
        assert z_ref.shape[-2:] == (x.shape[-2] // f, x.shape[-1] // f)
        for posterior in (False, True):
            expected = ref(x, sample_posterior=posterior,
                           generator=torch.Generator().manual_seed(4)).sample
            got = ours(x, sample_posterior=posterior, generator=torch.Generator().manual_seed(4))
            assert_close(got.sample, expected)


def test_checkpoint_loads_in_diffusers(pair, tmp_path):
    ref, _, config = pair
    x = images(config)
    _, back = assert_round_trip(ref, AutoencoderKL, lambda vae: vae(x).sample, folder=tmp_path)
    assert back.config.scaling_factor == config.get("scaling_factor", 0.18215)


def test_wrapper_matches_diffusers_image_processor(pair):
    ref, ours, config = pair
    f = 2 ** (len(config["block_out_channels"]) - 1)
    processor = VaeImageProcessor(vae_scale_factor=f)
    rng = np.random.default_rng(0)
    size = config["sample_size"]
    pils = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in "ab"]
    wrapper, scale = VAEWrapper(ours), ref.config.scaling_factor
    shift = ref.config.shift_factor or 0.0  # SD3's pipelines centre the latents first
    with torch.no_grad():
        expected = (ref.encode(processor.preprocess(pils)).latent_dist.mode() - shift) * scale
        latents = wrapper.encode(pils)
        assert_close(latents, expected)
        # the same images as a uint8 array, a [0, 1] float array and a [0, 1] tensor
        array = np.stack([np.asarray(p) for p in pils])
        assert_close(wrapper.encode(array), expected)
        assert_close(wrapper.encode(array / 255.0), expected)
        assert_close(wrapper.encode(torch.from_numpy(array).permute(0, 3, 1, 2) / 255), expected)
        # a posterior sample when a generator is given
        sampled = ref.encode(processor.preprocess(pils)).latent_dist.sample(
            torch.Generator().manual_seed(5))
        sampled = (sampled - shift) * scale
        assert_close(wrapper.encode(pils, generator=torch.Generator().manual_seed(5)), sampled)

        decoded = processor.postprocess(ref.decode(expected / scale + shift).sample,
                                        output_type="pil")
        ours_pil = wrapper.decode(latents)
        ours_pt = wrapper.decode(latents, output_type="pt")
    assert [p.size for p in ours_pil] == [p.size for p in decoded]
    # uint8 rounding may flip by 1 where a value sits on a .5 boundary
    assert max(np.abs(np.asarray(a, int) - np.asarray(b, int)).max()
               for a, b in zip(ours_pil, decoded, strict=True)) <= 1
    assert ours_pt.min() >= 0 and ours_pt.max() <= 1 and ours_pt.shape[1] == 3


@pytest.fixture(scope="module")
def wrapper():
    return VAEWrapper(randomise(AutoencoderKL(**TINY)))


@pytest.mark.parametrize("bad, message", [
    (torch.rand(1, 4, 16, 16), "3 channels"),
    (np.zeros((16, 16, 1), np.uint8), "3 channels"),
    (torch.rand(1, 3, 15, 16), "multiples of 2"),
    (torch.rand(1, 3, 16, 16) * 2 - 1, r"\[0, 1\]"),
    ("cat.png", "PIL image"),
])
def test_wrapper_bad_inputs(wrapper, bad, message):
    with pytest.raises(ValueError, match=message):
        wrapper.encode(bad)


def test_wrapper_decode_bad_inputs(wrapper):
    with pytest.raises(ValueError, match="latent_channels"):
        wrapper.decode(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="output_type"):
        wrapper.decode(torch.zeros(1, 4, 4, 4), output_type="jpg")


@pytest.mark.parametrize("override, message, error", [  # a diffusers option left out, or a mistake
    (dict(latents_mean=[0.0] * 4), "latents_mean", NI),
    (dict(mid_block_add_attention=False), "mid_block_add_attention", NI),
    (dict(act_fn="gelu"), "act_fn", NI),
    (dict(down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
     "DownEncoderBlock2D", NI),
    (dict(down_block_types=("DownEncoderBlock2D",)), "DownEncoderBlock2D", ValueError),
])
def test_unsupported_configs_are_refused(override, message, error):
    with pytest.raises(error, match=message):
        AutoencoderKL.from_config({**TINY, **override})


# stable-diffusion-v1-5 vae/config.json
SD15_VAE = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4,
}


@pytest.mark.slow
def test_full_sd15_vae_matches_diffusers():
    """SD 1.5's VAE at full size (84M parameters): same keys and shapes, a 64x64 round trip."""
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = diffusers.AutoencoderKL(**{k: v for k, v in SD15_VAE.items() if k[0] != "_"})
    ref, ours = ref.eval().to(device), AutoencoderKL.from_config(SD15_VAE).eval().to(device)
    assert_same_keys(ours, ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64, device=device) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x).latent_dist.mode()
        assert z.shape == (1, 4, 8, 8)
        assert_close(z, ref.encode(x).latent_dist.mode())
        assert_close(ours.decode(z).sample, ref.decode(z).sample)
