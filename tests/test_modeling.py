"""Model checkpoints: diffusers layout, key/shape checks, safetensors only, atomic saves."""

import time

import pytest
import torch
from model_harness import assert_close, randomise

import ddlearn.models.weights as weights
from ddlearn.config import register_to_config
from ddlearn.hub import HubOfflineError
from ddlearn.models.modeling import ModelMixin


class TinyNet(ModelMixin):
    @register_to_config
    def __init__(self, in_channels: int = 3, hidden: int = 8):
        super().__init__()
        self.conv_in = torch.nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.conv_out = torch.nn.Conv2d(hidden, in_channels, 3, padding=1)

    def forward(self, x):
        return self.conv_out(torch.relu(self.conv_in(x)))


@pytest.fixture
def saved(tmp_path):
    model = randomise(TinyNet(hidden=6))
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_save_pretrained_writes_diffusers_layout(saved):
    _, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json",
                                                       "diffusion_pytorch_model.safetensors"]


def test_round_trip_gives_identical_outputs(saved):
    model, folder = saved
    loaded = TinyNet.from_pretrained(folder)
    x = torch.randn(2, 3, 8, 8)
    assert loaded.config.hidden == model.config.hidden == 6
    assert torch.equal(loaded(x), model(x))
    assert not loaded.training  # from_pretrained returns an eval-mode model, as diffusers does


def test_torch_dtype_and_subfolder(saved, tmp_path):
    model, folder = saved
    model.save_pretrained(tmp_path / "pipe" / "unet")
    loaded = TinyNet.from_pretrained(tmp_path / "pipe", subfolder="unet", torch_dtype=torch.float64)
    assert loaded.dtype == torch.float64


def test_config_that_does_not_match_the_weights_reports_shapes_by_name(saved):
    _, folder = saved
    TinyNet(hidden=5).save_config(folder)  # config.json now disagrees with the safetensors file
    expected = r"shape mismatches: conv_in.weight: checkpoint \(6, 3, 3, 3\)"
    with pytest.raises(ValueError, match=expected):
        TinyNet.from_pretrained(folder)


def test_missing_and_unexpected_keys_are_named(saved):
    _, folder = saved
    state = weights.load_weights(folder, TinyNet.weights_name)
    state["extra.weight"] = state.pop("conv_out.bias")
    with pytest.raises(ValueError) as err:
        weights.check_state_dict(TinyNet(hidden=6), state)
    assert "missing keys: conv_out.bias" in str(err.value)
    assert "unexpected keys: extra.weight" in str(err.value)


def test_missing_weights_file_is_a_clear_error(saved):
    _, folder = saved
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights file diffusion_pytorch_model"):
        TinyNet.from_pretrained(folder)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_corrupt_safetensors_is_a_clear_error(saved, damage):
    _, folder = saved
    weights = folder / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 40)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        TinyNet.from_pretrained(folder)


def test_legacy_bin_with_only_tensors_loads_with_weights_only(saved):
    model, folder = saved
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    torch.save(model.state_dict(), folder / "diffusion_pytorch_model.bin")
    loaded = TinyNet.from_pretrained(folder)
    assert torch.equal(loaded.conv_in.weight, model.conv_in.weight)


class Payload:  # an arbitrary object: unpickling it could run code, so it must be refused
    pass


def test_pickle_bin_with_objects_is_refused(saved):
    model, folder = saved
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    evil = {"state": model.state_dict(), "evil": Payload()}
    torch.save(evil, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="refuses to unpickle"):
        TinyNet.from_pretrained(folder)


def test_failed_save_leaves_old_file_and_no_partial_file(saved, monkeypatch):
    model, folder = saved
    before = (folder / "diffusion_pytorch_model.safetensors").read_bytes()

    def crash_halfway(state, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(weights, "save_file", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        TinyNet(hidden=6).save_pretrained(folder)
    assert (folder / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["config.json",
                                                       "diffusion_pytorch_model.safetensors"]


def test_offline_hub_id_fails_fast_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    start = time.perf_counter()
    with pytest.raises(HubOfflineError) as err:
        TinyNet.from_pretrained("google/ddpm-cat-256", subfolder="unet")
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert "google/ddpm-cat-256" in message and "local folder" in message
    assert "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback


def test_path_that_is_neither_folder_nor_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a Hub id"):
        TinyNet.from_pretrained(str(tmp_path / "nope" / "deeper" / "x"))


def test_quick_flag_parsing():
    from ddlearn import _is_truthy

    assert [_is_truthy(v) for v in ["1", "true", "yes", "0", "", "false", None]] == \
        [True, True, True, False, False, False, False]


def test_pre_0_14_attention_names_load(tmp_path):
    """google/ddpm-cat-256 and other early checkpoints call the projections query/key/value."""
    from diffusers import UNet2DModel as DiffusersUNet
    from safetensors.torch import save_file

    from ddlearn import UNet2DModel

    reference = randomise(DiffusersUNet(sample_size=8, block_out_channels=(16, 32),
                                        norm_num_groups=8, layers_per_block=1,
                                        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                        up_block_types=("AttnUpBlock2D", "UpBlock2D")))
    reference.save_pretrained(tmp_path)
    legacy = {k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
              .replace(".to_out.0.", ".proj_attn."): v.contiguous()
              for k, v in reference.state_dict().items()}
    assert any(".query." in k for k in legacy)
    save_file(legacy, tmp_path / "diffusion_pytorch_model.safetensors")
    ours = UNet2DModel.from_pretrained(tmp_path)
    x = torch.randn(1, 3, 8, 8)
    # max error 1e-5: no looser anywhere than torch.testing.assert_close(rtol=1e-4, atol=1e-5)
    assert_close(ours(x, 5).sample, reference(x, 5).sample, rtol=0, atol=1e-5)
