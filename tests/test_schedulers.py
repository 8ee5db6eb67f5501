"""DDPM, DDIM, PNDM, LMS and Heun schedulers against diffusers: same config, same noise, same seeds.

Each comparison runs a whole sampling loop in both libraries (see scheduler_harness.py) and
checks timesteps, sigmas, alphas_cumprod, every scale_model_input output, every prev_sample and
pred_original_sample to 1e-5 relative.
"""

import json
import warnings

import diffusers
import pytest
import torch
from scheduler_harness import (
    assert_same_loop,
    assert_same_records,
    assert_scaled_close,
    fake_model,
    run_loop,
)

from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.heun import HeunDiscreteScheduler
from ddlearn.schedulers.lms import LMSDiscreteScheduler
from ddlearn.schedulers.pndm import PNDMScheduler

PAIRS = {
    "ddpm": (DDPMScheduler, diffusers.DDPMScheduler),
    "ddim": (DDIMScheduler, diffusers.DDIMScheduler),
    "pndm": (PNDMScheduler, diffusers.PNDMScheduler),
    "lms": (LMSDiscreteScheduler, diffusers.LMSDiscreteScheduler),
    "heun": (HeunDiscreteScheduler, diffusers.HeunDiscreteScheduler),
}
STOCHASTIC = ("ddpm", "ddim")  # their step() takes a generator; give both the same seed


def check(name, config=None, steps=10, batch=2, dtype=torch.float32, step_kwargs=None, **kw):
    ours_cls, theirs_cls = PAIRS[name]
    step_seed = 1234 if name in STOCHASTIC else None
    return assert_same_loop(ours_cls, theirs_cls, config or {}, steps=steps, batch=batch,
                            dtype=dtype, step_kwargs=step_kwargs, step_seed=step_seed, **kw)


# --------------------------------------------------------------------------------------------------
# Whole sampling loops: the steps x batch x dtype grid on diffusers' defaults ...
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("steps", [10, 25, 50])
@pytest.mark.parametrize("name", list(PAIRS))
def test_default_config_loop_matches_diffusers(name, steps, batch, dtype):
    check(name, steps=steps, batch=batch, dtype=dtype)


# ... then one option at a time around the defaults
ALL = list(PAIRS)
AXES = [
    *[(n, {"beta_schedule": b}, None) for n in ALL for b in ("scaled_linear", "squaredcos_cap_v2")],
    *[(n, {"trained_betas": torch.linspace(1e-4, 0.03, 1000).tolist()}, None) for n in ALL],
    *[(n, {"prediction_type": p}, None) for n in ALL for p in ("v_prediction", "sample")
      if (n, p) != ("pndm", "sample")],
    *[(n, {"timestep_spacing": s}, None) for n in ALL for s in ("linspace", "leading", "trailing")],
    *[(n, {"timestep_spacing": "leading", "steps_offset": 1}, None) for n in ALL],
    ("ddpm", {"clip_sample": False}, None),
    ("ddpm", {"clip_sample_range": 0.5}, None),
    ("ddim", {"clip_sample": False}, None),
    ("ddim", {"clip_sample_range": 0.5}, None),
    ("heun", {"clip_sample": True, "clip_sample_range": 0.5}, None),
    ("ddpm", {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5},
     None),
    ("ddim", {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5},
     None),
    ("ddim", {"set_alpha_to_one": False}, None),
    ("pndm", {"set_alpha_to_one": True}, None),
    ("ddpm", {"variance_type": "fixed_large"}, None),
    ("lms", {"use_karras_sigmas": True}, None),
    ("heun", {"use_karras_sigmas": True}, None),
    ("heun", {"use_karras_sigmas": True, "beta_schedule": "scaled_linear"}, None),
    *[(n, {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction",
           "timestep_spacing": "trailing"}, None) for n in STOCHASTIC],
    ("pndm", {"skip_prk_steps": True}, None),
    ("pndm", {"skip_prk_steps": True, "timestep_spacing": "trailing"}, None),
    ("ddim", {}, {"eta": 0.5}),
    ("ddim", {"clip_sample_range": 0.5}, {"eta": 1.0, "use_clipped_model_output": True}),
    ("ddim", {"clip_sample_range": 0.5}, {"use_clipped_model_output": True}),
    ("lms", {}, {"order": 2}),
]


@pytest.mark.parametrize("skip_prk_steps", [False, True])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
def test_pndm_fewest_steps_match_diffusers_or_are_a_clear_error(steps, skip_prk_steps):
    """The Runge-Kutta warm-up needs N >= 4 (N + 9 model calls); diffusers fails below that."""
    config = {"skip_prk_steps": skip_prk_steps}
    if skip_prk_steps or steps >= 4:
        check("pndm", config, steps=steps)
        return
    with pytest.raises(ValueError, match="operands could not be broadcast"):
        diffusers.PNDMScheduler(**config).set_timesteps(steps)
    with pytest.raises(ValueError, match=f"num_inference_steps={steps}.*skip_prk_steps=True"):
        PNDMScheduler(**config).set_timesteps(steps)


def axis_id(name, config, step_kwargs):
    options = {**config, **(step_kwargs or {})}
    return "-".join([name] + [f"{k}={'list' if isinstance(v, list) else v}"
                              for k, v in options.items()])


@pytest.mark.parametrize("name, config, step_kwargs", AXES, ids=[axis_id(*a) for a in AXES])
def test_option_matches_diffusers(name, config, step_kwargs):
    # σ-space samplers: diffusers' LMS (scipy quad per coefficient) is slow; Heun calls twice
    check(name, config, steps=10 if name in ("lms", "heun") else 25, step_kwargs=step_kwargs)


def test_ddpm_learned_range_variance_matches_diffusers():
    def model(sample, t):  # ε and the variance interpolation v in [-1, 1]: (B, 2C, H, W)
        eps = fake_model(sample, t)
        return torch.cat([eps, torch.tanh(3 * eps)], dim=1)

    check("ddpm", {"variance_type": "learned_range"}, steps=25, model=model)


def test_stochastic_steps_depend_on_the_generator_seed():
    """Same seed gave diffusers' samples above; another seed must give other samples."""
    for name, kwargs in (("ddpm", {}), ("ddim", {"eta": 1.0})):
        records = [run_loop(PAIRS[name][0](), 10, (1, 3, 8, 8), step_kwargs=kwargs, step_seed=s)
                   for s in (0, 0, 1)]
        assert torch.equal(records[0]["prev_sample"][-1], records[1]["prev_sample"][-1])
        assert not torch.allclose(records[0]["prev_sample"][-1], records[2]["prev_sample"][-1])


def test_order_and_len_match_diffusers():
    for ours_cls, theirs_cls in PAIRS.values():
        assert ours_cls.order == theirs_cls.order
        assert len(ours_cls(num_train_timesteps=500)) == len(theirs_cls(num_train_timesteps=500))


# --------------------------------------------------------------------------------------------------
# Configs: round trips, diffusers' files, swapping schedulers
# --------------------------------------------------------------------------------------------------
EXPLICIT_DDPM_CONFIG = {  # every key given, as in a scheduler_config.json
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "trained_betas": None, "variance_type": "fixed_small",
    "clip_sample": False, "prediction_type": "v_prediction", "thresholding": False,
    "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0,
    "timestep_spacing": "trailing", "steps_offset": 1, "rescale_betas_zero_snr": False,
}


def compare_built(ours, theirs, steps=10, stochastic=False):
    args = dict(steps=steps, shape=(2, 3, 8, 8), step_seed=7 if stochastic else None)
    assert_same_records(run_loop(ours, **args), run_loop(theirs, **args))


@pytest.mark.parametrize("name", list(PAIRS))
def test_save_config_then_from_config_gives_same_scheduler(name, tmp_path):
    ours_cls = PAIRS[name][0]
    config = {"beta_schedule": "scaled_linear", "timestep_spacing": "trailing"}
    scheduler = ours_cls(**config)
    path = scheduler.save_config(tmp_path)
    assert json.loads(path.read_text())["_class_name"] == ours_cls.__name__
    reloaded = ours_cls.from_config(tmp_path)
    assert reloaded.config == scheduler.config
    args = dict(steps=10, shape=(1, 3, 8, 8), step_seed=3 if name in STOCHASTIC else None)
    first, second = run_loop(scheduler, **args), run_loop(reloaded, **args)
    assert all(torch.equal(a, b) for a, b in zip(first["prev_sample"], second["prev_sample"],
                                                  strict=True))


@pytest.mark.parametrize("name", list(PAIRS))
def test_loads_scheduler_config_written_by_diffusers(name, tmp_path):
    ours_cls, theirs_cls = PAIRS[name]
    theirs = theirs_cls(beta_schedule="scaled_linear", prediction_type="v_prediction",
                        timestep_spacing="leading", steps_offset=1)
    theirs.save_config(tmp_path)
    on_disk = json.loads((tmp_path / "scheduler_config.json").read_text())
    unknown = {k for k in on_disk if not k.startswith("_")} - set(ours_cls(**{}).config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = ours_cls.from_config(tmp_path)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if unknown:  # e.g. LMS/Heun's use_beta_sigmas: named in the one warning
        assert len(messages) == 1 and all(k in messages[0] for k in unknown), messages
    else:
        assert messages == []
    theirs = theirs_cls.from_config(theirs_cls.load_config(tmp_path))
    compare_built(ours, theirs, stochastic=name in STOCHASTIC)


@pytest.mark.parametrize("target", list(PAIRS))
def test_swap_from_ddpm_config_matches_diffusers(target):
    """`pipe.scheduler = Other.from_config(pipe.scheduler.config)`, config read from a file."""
    ours_cls, theirs_cls = PAIRS[target]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # keys only DDPM has are dropped silently
        ours = ours_cls.from_config(DDPMScheduler(**EXPLICIT_DDPM_CONFIG).config)
    theirs = theirs_cls.from_config(diffusers.DDPMScheduler(**EXPLICIT_DDPM_CONFIG).config)
    ours_config = {k: v for k, v in ours.config.items() if not k.startswith("_")}
    assert {k: v for k, v in theirs.config.items() if k in ours_config} == ours_config
    compare_built(ours, theirs, stochastic=target in STOCHASTIC)


def test_swap_keeps_target_defaults_for_keys_never_set():
    ours = HeunDiscreteScheduler.from_config(DDPMScheduler(beta_schedule="scaled_linear").config)
    theirs = diffusers.HeunDiscreteScheduler.from_config(
        diffusers.DDPMScheduler(beta_schedule="scaled_linear").config)
    assert ours.config.beta_start == theirs.config.beta_start  # Heun's 0.00085, not DDPM's 1e-4


# --------------------------------------------------------------------------------------------------
# Forward process helpers
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_add_noise_and_get_velocity_match_diffusers(name, dtype):
    ours_cls, theirs_cls = PAIRS[name]
    ours = ours_cls(beta_schedule="scaled_linear")
    theirs = theirs_cls(beta_schedule="scaled_linear")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 8, 8, generator=g, dtype=dtype)
    noise = torch.randn(4, 3, 8, 8, generator=g, dtype=dtype)
    if name in ("lms", "heun"):  # σ-based: timesteps must come from the inference schedule
        ours.set_timesteps(10)
        theirs.set_timesteps(10)
        timesteps = theirs.timesteps[[0, 3, 4, -1]]
    else:
        timesteps = torch.tensor([0, 250, 999, 500])
    expected = theirs.add_noise(x0, noise, timesteps)
    assert_scaled_close(ours.add_noise(x0, noise, timesteps), expected, what="add_noise")
    if hasattr(theirs, "get_velocity"):
        expected = theirs.get_velocity(x0, noise, timesteps)
        assert_scaled_close(ours.get_velocity(x0, noise, timesteps), expected, what="get_velocity")


# --------------------------------------------------------------------------------------------------
# Clear errors
# --------------------------------------------------------------------------------------------------
def test_ddpm_steps_along_the_training_schedule_before_set_timesteps_as_diffusers():
    """diffusers' DDPMScheduler needs no set_timesteps: its timesteps start as T-1 .. 0 (the
    quicktour and the basic training tutorial step it so)."""
    ours, theirs = (cls() for cls in PAIRS["ddpm"])
    assert torch.equal(ours.timesteps, theirs.timesteps)
    x_ours = x_theirs = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for i, t in enumerate(theirs.timesteps[-5:]):
        eps = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(i))
        x_ours = ours.step(eps, t, x_ours, generator=torch.Generator().manual_seed(i)).prev_sample
        x_theirs = theirs.step(eps, t, x_theirs,
                               generator=torch.Generator().manual_seed(i)).prev_sample
    assert torch.allclose(x_ours, x_theirs, atol=1e-6)


@pytest.mark.parametrize("name", ["ddim", "pndm"])
def test_step_before_set_timesteps_is_a_clear_error_where_diffusers_refuses_it(name):
    """(DDPM, LMS and Heun step along the training schedule, as diffusers: see
    test_scheduler_config_keys.py.)"""
    x = torch.zeros(1, 3, 8, 8)
    ours, theirs = (cls() for cls in PAIRS[name])
    with pytest.raises(ValueError, match="set_timesteps"):
        ours.step(x, 999, x)
    with pytest.raises((ValueError, TypeError)):  # diffusers' PNDM: len(None)
        theirs.step(x, 999, x)


@pytest.mark.parametrize("name", list(PAIRS))
def test_bad_config_values_are_clear_errors(name):
    ours_cls = PAIRS[name][0]
    with pytest.raises(ValueError, match="num_inference_steps"):
        ours_cls(num_train_timesteps=100).set_timesteps(101)
    for key, value in (("beta_schedule", "cosine"), ("prediction_type", "noise"),
                       ("timestep_spacing", "uniform")):
        with pytest.raises(ValueError, match=f"{key}.*choose one of"):
            ours_cls(**{key: value})


def test_scheduler_specific_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="variance_type"):
        DDPMScheduler(variance_type="learned_log")
    with pytest.raises(ValueError, match="prediction_type"):
        PNDMScheduler(prediction_type="sample")  # PNDM's transfer needs ε
    scheduler = DDPMScheduler(variance_type="learned_range")
    scheduler.set_timesteps(10)
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="learned_range.*channels"):
        scheduler.step(x, scheduler.timesteps[0], x)
    scheduler = DDPMScheduler()
    scheduler.set_timesteps(10)
    with pytest.raises(ValueError, match="not one of scheduler.timesteps"):
        scheduler.step(x, 5, x)  # a loop index, not a timestep


# --------------------------------------------------------------------------------------------------
# The harness itself: a NaN or inf on either side fails the comparison
# --------------------------------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("actual, expected", [
    ([NAN, 3.0], [NAN, 3.0]), ([NAN, 3.0], [1.0, 3.0]), ([1.0, 3.0], [NAN, 3.0]),
    ([1.0, INF], [1.0, INF]), ([3.0, INF], [1.0, INF]), ([1.0, 3.0], [1.0, INF])])
def test_harness_fails_on_nan_or_inf(actual, expected):
    with pytest.raises(AssertionError, match="NaN/inf"):
        assert_scaled_close(torch.tensor(actual), torch.tensor(expected), what="x")


def test_harness_compares_expected_nan_and_inf_by_position():
    same = torch.tensor([NAN, INF, 2.0])
    assert_scaled_close(same, same.clone(), what="x", allow_nonfinite=True)
    for other in ([NAN, INF, 3.0], [1.0, INF, 2.0], [NAN, 7.0, 2.0]):
        with pytest.raises(AssertionError):  # an inf no longer makes the tolerance infinite
            assert_scaled_close(torch.tensor(other), same, what="x", allow_nonfinite=True)
