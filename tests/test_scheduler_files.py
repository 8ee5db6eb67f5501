"""Schedulers load and save like diffusers' ones: from_pretrained / save_pretrained, and configs
that travel through several `from_config` swaps keep what the first one set (clip_sample=False)."""

import json
import time

import diffusers
import pytest

import ddlearn
from ddlearn.hub import HubOfflineError

SD_DDIM = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
               clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def public(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def test_save_pretrained_then_from_pretrained_here_and_in_diffusers(tmp_path):
    ddlearn.DDIMScheduler(**SD_DDIM).save_pretrained(tmp_path / "scheduler")
    ours = ddlearn.DDIMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    theirs = diffusers.DDIMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert ours.config == ddlearn.DDIMScheduler(**SD_DDIM).config
    assert public(theirs.config) == public(ours.config)
    overridden = ddlearn.DDIMScheduler.from_pretrained(tmp_path / "scheduler",
                                                       timestep_spacing="trailing")
    assert overridden.config.timestep_spacing == "trailing"


@pytest.mark.parametrize("path", [["EulerDiscreteScheduler", "DDIMScheduler"],
                                  ["DPMSolverMultistepScheduler", "DDPMScheduler"],
                                  ["UniPCMultistepScheduler", "EulerAncestralDiscreteScheduler",
                                   "DDIMScheduler"]])
def test_swaps_keep_the_first_schedulers_settings_as_in_diffusers(path, tmp_path):
    """SD 2's DDIM config through other schedulers and back: diffusers keeps clip_sample=False
    along the way (a DDIM/DDPM rebuilt with the default True would clip the latents)."""
    ours, theirs = ddlearn.DDIMScheduler(**SD_DDIM), diffusers.DDIMScheduler(**SD_DDIM)
    for name in path:
        ours = getattr(ddlearn, name).from_config(ours.config)
        theirs = getattr(diffusers, name).from_config(theirs.config)
        assert public(ours.config) == {k: v for k, v in public(theirs.config).items()
                                       if k in public(ours.config)}, name
    assert ours.config.clip_sample is False and ours.config.steps_offset == 1
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "scheduler_config.json").read_text())["clip_sample"] is False


def test_offline_hub_id_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    start = time.perf_counter()
    with pytest.raises(HubOfflineError, match="stabilityai/stable-diffusion-2-1"):
        ddlearn.DDIMScheduler.from_pretrained("stabilityai/stable-diffusion-2-1",
                                              subfolder="scheduler")
    assert time.perf_counter() - start < 2.0
