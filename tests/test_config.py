"""ddlearn.config mirrors diffusers' ConfigMixin: record, freeze, save, load, warn, reject."""

import json
import warnings
from typing import Optional, Tuple

import pytest

from ddlearn.config import ConfigMixin, FrozenConfig, register_to_config


class ToyScheduler(ConfigMixin):
    config_name = "scheduler_config.json"

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_schedule: str = "linear", trained_betas: Optional[list] = None,
                 block_out_channels: Tuple[int, ...] = (32, 64)):
        self.built_with = beta_start


class NeedsChannels(ConfigMixin):
    @register_to_config
    def __init__(self, in_channels: int, out_channels: int = 3):
        pass


def test_config_records_given_and_default_arguments():
    s = ToyScheduler(beta_start=0.00085)
    assert s.config.beta_start == 0.00085 and s.config["beta_start"] == 0.00085
    assert s.config.num_train_timesteps == 1000  # defaults are recorded too
    assert s.built_with == 0.00085  # __init__ still ran
    assert isinstance(s.config, FrozenConfig)


def test_config_is_frozen():
    s = ToyScheduler()
    with pytest.raises(TypeError, match="frozen"):
        s.config["beta_start"] = 1.0
    with pytest.raises(TypeError, match="frozen"):
        s.config.beta_start = 1.0


def public(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def test_save_then_load_round_trip_writes_diffusers_json(tmp_path):
    s = ToyScheduler(beta_schedule="scaled_linear", block_out_channels=(8, 16, 16))
    path = s.save_config(tmp_path)
    data = json.loads(path.read_text())
    assert path.name == "scheduler_config.json"
    assert data["_class_name"] == "ToyScheduler"
    assert data["block_out_channels"] == [8, 16, 16]
    again = ToyScheduler.from_config(ToyScheduler.load_config(tmp_path))
    assert public(again.config) == public(s.config)
    assert public(ToyScheduler.from_config(tmp_path).config) == public(s.config)  # a folder too
    assert "_use_default_values" not in data  # in-memory bookkeeping only, as in diffusers


def test_from_config_overrides_keys():
    s = ToyScheduler.from_config(ToyScheduler().config, beta_start=0.5)
    assert s.config.beta_start == 0.5


def test_underscore_keys_are_dropped_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = ToyScheduler.from_config({"_class_name": "ToyScheduler", "_diffusers_version": "0.99.0",
                                      "beta_start": 0.002})
    assert "_diffusers_version" not in s.config and s.config.beta_start == 0.002


def test_unknown_keys_give_one_warning_naming_them():
    with pytest.warns(UserWarning) as record:
        s = ToyScheduler.from_config({"beta_start": 0.002, "brand_new_option": 1, "another": "x"})
    assert len(record) == 1
    message = str(record[0].message)
    assert "brand_new_option" in message and "another" in message
    assert s.built_with == 0.002  # the known key is used; the unknown ones are not,
    assert s.config["brand_new_option"] == 1  # but ride along, as in diffusers: a save keeps them


def test_config_of_another_class_loads_without_warning():
    # swapping schedulers: DDPM's config has keys DDIM lacks; that is expected, not a problem
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ToyScheduler.from_config({"_class_name": "OtherScheduler", "variance_type": "fixed_small"})


def test_missing_required_key_names_it():
    with pytest.raises(ValueError, match="in_channels"):
        NeedsChannels.from_config({"out_channels": 3})


@pytest.mark.parametrize("key, value", [("num_train_timesteps", "1000"), ("beta_start", "small"),
                                        ("beta_schedule", 3), ("num_train_timesteps", 10.5),
                                        ("block_out_channels", 64)])
def test_wrong_type_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        ToyScheduler.from_config({key: value})


def test_int_is_a_fine_float_and_none_is_fine_for_optional():
    s = ToyScheduler(beta_start=1, trained_betas=None)
    assert s.config.beta_start == 1


def test_load_config_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        ToyScheduler.load_config(tmp_path)
    (tmp_path / "scheduler_config.json").write_text("{ not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ToyScheduler.load_config(tmp_path)


class OtherToy(ConfigMixin):
    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085):
        pass


def test_swapping_class_keeps_the_targets_defaults_for_keys_never_set():
    assert OtherToy.from_config(ToyScheduler().config).config.beta_start == 0.00085
    assert OtherToy.from_config(ToyScheduler(beta_start=0.5).config).config.beta_start == 0.5
    assert ToyScheduler.from_config(ToyScheduler().config).config.beta_start == 0.0001


def test_keys_another_class_does_not_take_ride_along_as_in_diffusers(tmp_path):
    """A -> B -> A: B keeps A's extra keys in its config (unused), saves them, hands them back."""
    toy = ToyScheduler(beta_schedule="scaled_linear", block_out_channels=(8, 16))
    other = OtherToy.from_config(toy.config)
    assert "block_out_channels" in other.config and other.config.block_out_channels == [8, 16]
    back = ToyScheduler.from_config(other.save_config(tmp_path))  # via the JSON file
    assert back.config.block_out_channels == [8, 16]
    assert back.config.beta_schedule == "scaled_linear"
