"""Euler, Euler ancestral, DPM-Solver and UniPC schedulers against diffusers.

Same config, same initial noise, same generator seeds: each comparison runs a whole sampling loop
in both libraries (scheduler_harness.py) and checks timesteps, sigmas, alphas_cumprod,
init_noise_sigma, every scale_model_input output, every prev_sample and pred_original_sample to
1e-5 relative; the harness fails on a NaN or inf on either side.
"""

import json
import warnings

import diffusers
import pytest
import torch
from scheduler_harness import assert_same_loop, assert_scaled_close, run_loop

import ddlearn
from ddlearn.config import init_parameters
from ddlearn.schedulers.dpm_solver import DPMSolverMultistepScheduler
from ddlearn.schedulers.euler import EulerDiscreteScheduler
from ddlearn.schedulers.euler_ancestral import EulerAncestralDiscreteScheduler
from ddlearn.schedulers.unipc import UniPCMultistepScheduler

PAIRS = {
    "euler": (EulerDiscreteScheduler, diffusers.EulerDiscreteScheduler),
    "euler_a": (EulerAncestralDiscreteScheduler, diffusers.EulerAncestralDiscreteScheduler),
    "dpm": (DPMSolverMultistepScheduler, diffusers.DPMSolverMultistepScheduler),
    "unipc": (UniPCMultistepScheduler, diffusers.UniPCMultistepScheduler),
}
SIGMA_MIN = {"final_sigmas_type": "sigma_min"}
SIGMA_RANGE = {"sigma_min": 0.02, "sigma_max": 5.0}  # benchmarks/sampler_accuracy.md's choice


def is_stochastic(name, config, step_kwargs=None):
    return (name == "euler_a" or config.get("algorithm_type") == "sde-dpmsolver++"
            or (step_kwargs or {}).get("s_churn", 0) > 0)


def check(name, config=None, steps=10, batch=2, dtype=torch.float32, step_kwargs=None, **kw):
    """Whole loop vs diffusers; stochastic samplers get the same generator seed on both sides."""
    config = config or {}
    ours_cls, theirs_cls = PAIRS[name]
    step_seed = 1234 if is_stochastic(name, config, step_kwargs) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers deprecates "dpmsolver"
        result = assert_same_loop(ours_cls, theirs_cls, config, steps=steps, batch=batch,
                                  dtype=dtype, step_kwargs=step_kwargs, step_seed=step_seed, **kw)
    return result


# --------------------------------------------------------------------------------------------------
# Whole sampling loops: steps x batch x dtype on diffusers' defaults ...
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("steps", [10, 25, 50])
@pytest.mark.parametrize("name", list(PAIRS))
def test_default_config_loop_matches_diffusers(name, steps, batch, dtype):
    check(name, steps=steps, batch=batch, dtype=dtype)


# ... then one option at a time around the defaults, at 10 steps (lower_order_final acts below
# 15) and 25
ALL, MULTI = list(PAIRS), ("dpm", "unipc")
AXES = [
    *[(n, {"beta_schedule": b}, None) for n in ALL for b in ("scaled_linear", "squaredcos_cap_v2")],
    *[(n, {"trained_betas": torch.linspace(1e-4, 0.03, 1000).tolist()}, None) for n in ALL],
    *[(n, {"prediction_type": p}, None) for n in ALL for p in ("v_prediction", "sample")
      if (n, p) != ("euler_a", "sample")],
    *[(n, {"timestep_spacing": s}, None) for n in ALL for s in ("leading", "trailing")],
    *[(n, {"timestep_spacing": "leading", "steps_offset": 1}, None) for n in ALL],
    *[(n, {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction",
           "timestep_spacing": "trailing"}, None) for n in ALL],
    *[(n, {"use_karras_sigmas": True, "beta_schedule": "scaled_linear"}, None)
      for n in ("euler", "dpm", "unipc")],
    *[(n, {"final_sigmas_type": "sigma_min"}, None) for n in ("euler", "dpm", "unipc")],
    ("unipc", {"use_karras_sigmas": True, **SIGMA_MIN}, None),
    ("euler", {"use_karras_sigmas": True, **SIGMA_MIN}, None),
    *[(n, {"use_karras_sigmas": True, **SIGMA_RANGE}, None) for n in ("euler", "unipc")],
    *[(n, {"use_karras_sigmas": True, "sigma_max": 5.0, "beta_schedule": "scaled_linear"}, None)
      for n in ("euler", "unipc")],
    ("unipc", {"use_karras_sigmas": True, "sigma_min": 0.02, **SIGMA_MIN}, None),
    ("euler", {"sigma_min": 0.02, "sigma_max": 5.0}, None),  # without Karras σ: no effect
    ("euler", {}, {"s_churn": 1.0}),
    ("euler", {"beta_schedule": "scaled_linear"}, {"s_churn": 20.0, "s_tmin": 0.5, "s_tmax": 8.0,
                                                   "s_noise": 1.003}),
    *[(n, {"solver_order": k}, None) for n in MULTI for k in (1, 3)],
    *[(n, {"lower_order_final": False, "solver_order": k, **SIGMA_MIN}, None)
      for n in MULTI for k in (2, 3)],
    *[(n, {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5,
           "prediction_type": "sample"}, None) for n in MULTI],
    ("dpm", {"lower_order_final": False}, None),
    ("dpm", {"lower_order_final": False, "solver_order": 3}, None),
    ("dpm", {"solver_type": "heun"}, None),
    ("dpm", {"euler_at_final": True, **SIGMA_MIN}, None),
    *[("dpm", {"algorithm_type": "dpmsolver", **SIGMA_MIN, **extra}, None)
      for extra in ({}, {"solver_type": "heun"}, {"solver_order": 3}, {"solver_order": 1},
                    {"prediction_type": "v_prediction"}, {"prediction_type": "sample"},
                    {"thresholding": True, "sample_max_value": 1.5})],
    *[("dpm", {"algorithm_type": "sde-dpmsolver++", **extra}, None)
      for extra in ({}, {"solver_type": "heun"}, {"solver_order": 3}, {"solver_order": 1},
                    SIGMA_MIN, {"use_karras_sigmas": True})],
    ("unipc", {"solver_type": "bh1", **SIGMA_MIN}, None),
    ("unipc", {"solver_type": "bh1", "solver_order": 3, **SIGMA_MIN}, None),
    *[("unipc", {"predict_x0": False, **SIGMA_MIN, **extra}, None)
      for extra in ({}, {"solver_order": 3}, {"prediction_type": "v_prediction"},
                    {"prediction_type": "sample"}, {"solver_type": "bh1"})],
    ("unipc", {"disable_corrector": [0, 2, 3]}, None),
    ("unipc", {"disable_corrector": [0], "solver_order": 3}, None),
]


def axis_id(name, config, step_kwargs):
    options = {**config, **(step_kwargs or {})}
    return f"{name}-{'-'.join(f'{k}={v}' for k, v in options.items())}"[:70]


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name, config, step_kwargs", AXES, ids=[axis_id(*a) for a in AXES])
def test_option_matches_diffusers(name, config, step_kwargs, steps):
    check(name, config, steps=steps, step_kwargs=step_kwargs)


@pytest.mark.parametrize("name, config, step_kwargs", [
    ("euler_a", {}, None), ("euler", {}, {"s_churn": 1.0}),
    ("dpm", {"algorithm_type": "sde-dpmsolver++"}, None)])
def test_stochastic_steps_depend_on_the_generator_seed(name, config, step_kwargs):
    """Same seed gave diffusers' samples above; another seed must give other samples."""
    records = [run_loop(PAIRS[name][0](**config), 10, (1, 3, 8, 8), step_kwargs=step_kwargs,
                        step_seed=s) for s in (0, 0, 1)]
    assert torch.equal(records[0]["prev_sample"][-1], records[1]["prev_sample"][-1])
    assert not torch.allclose(records[0]["prev_sample"][-1], records[2]["prev_sample"][-1])


@pytest.mark.parametrize("name", list(PAIRS))
def test_starting_mid_schedule_matches_diffusers(name):
    """img2img: noise x_0 to timesteps[3] with add_noise, then denoise from there."""
    ours, theirs = (cls(beta_schedule="scaled_linear") for cls in PAIRS[name])
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    samples = []
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(20)
        timesteps = scheduler.timesteps[3:]
        sample = scheduler.add_noise(x0, noise, timesteps[:1].repeat(2))
        gen = torch.Generator().manual_seed(5)
        for t in timesteps:
            model_output = 0.1 * scheduler.scale_model_input(sample, t)
            kwargs = {"generator": gen} if name == "euler_a" else {}
            sample = scheduler.step(model_output, t, sample, **kwargs).prev_sample
        samples.append(sample)
    assert_scaled_close(samples[0], samples[1], what="img2img sample")


def test_order_and_len_match_diffusers():
    for ours_cls, theirs_cls in PAIRS.values():
        assert ours_cls.order == theirs_cls.order
        assert len(ours_cls(num_train_timesteps=500)) == len(theirs_cls(num_train_timesteps=500))


# --------------------------------------------------------------------------------------------------
# Configs: round trips, diffusers' files, swapping schedulers
# --------------------------------------------------------------------------------------------------
SD15_SCHEDULER_CONFIG = {  # runwayml/stable-diffusion-v1-5, scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False,
}


def assert_same_shared_config(ours, theirs):
    """Every key of ours (but `_class_name` and the like) has diffusers' value."""
    public = {k: v for k, v in ours.config.items() if not k.startswith("_")}
    assert {k: v for k, v in theirs.config.items() if k in public} == public


def compare_built(name, ours, theirs, steps=10):
    step_seed = 7 if is_stochastic(name, dict(ours.config)) else None
    args = dict(steps=steps, shape=(2, 3, 8, 8), step_seed=step_seed)
    ours_record, theirs_record = run_loop(ours, **args), run_loop(theirs, **args)
    for i, (a, b) in enumerate(zip(ours_record["prev_sample"], theirs_record["prev_sample"],
                                   strict=True)):
        assert_scaled_close(a, b, what=f"step {i}")
    assert ours_record["timesteps"] == theirs_record["timesteps"]


@pytest.mark.parametrize("name", list(PAIRS))
def test_save_config_then_from_config_gives_same_scheduler(name, tmp_path):
    ours_cls = PAIRS[name][0]
    scheduler = ours_cls(beta_schedule="scaled_linear", timestep_spacing="trailing")
    path = scheduler.save_config(tmp_path)
    assert json.loads(path.read_text())["_class_name"] == ours_cls.__name__
    reloaded = ours_cls.from_config(tmp_path)
    assert reloaded.config == scheduler.config
    args = dict(steps=10, shape=(1, 3, 8, 8), step_seed=3)
    first, second = run_loop(scheduler, **args), run_loop(reloaded, **args)
    assert all(torch.equal(a, b) for a, b in zip(first["prev_sample"], second["prev_sample"],
                                                  strict=True))


DIFFUSERS_WRITTEN = {
    "euler": {"use_karras_sigmas": True, "prediction_type": "v_prediction"},
    "euler_a": {"prediction_type": "v_prediction", "timestep_spacing": "leading"},
    "dpm": {"solver_order": 3, "use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"},
    "unipc": {"solver_order": 3, "disable_corrector": [1], "timestep_spacing": "trailing"},
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_loads_scheduler_config_written_by_diffusers(name, tmp_path):
    ours_cls, theirs_cls = PAIRS[name]
    theirs_cls(beta_schedule="scaled_linear", **DIFFUSERS_WRITTEN[name]).save_config(tmp_path)
    on_disk = json.loads((tmp_path / "scheduler_config.json").read_text())
    # keys another ddlearn scheduler takes are diffusers' "hidden" keys: kept without a word
    known = set().union(*(init_parameters(c) for c in ours_cls.compatible_classes()))
    unknown = {k for k in on_disk if not k.startswith("_")} - known
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = ours_cls.from_config(tmp_path)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if unknown:  # e.g. use_beta_sigmas, lambda_min_clipped: named in the one warning
        assert len(messages) == 1 and all(k in messages[0] for k in unknown), messages
    else:
        assert messages == []
    compare_built(name, ours, theirs_cls.from_config(theirs_cls.load_config(tmp_path)))


@pytest.mark.parametrize("name", list(PAIRS))
def test_swap_from_stable_diffusion_pndm_config_matches_diffusers(name, tmp_path):
    """`pipe.scheduler = Cls.from_config(pipe.scheduler.config)` with SD 1.5's real config file."""
    (tmp_path / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_CONFIG))
    ours_cls, theirs_cls = PAIRS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a config of another class: its extra keys are expected
        ours = ours_cls.from_config(tmp_path)
    theirs = theirs_cls.from_config(theirs_cls.load_config(tmp_path))
    assert_same_shared_config(ours, theirs)
    compare_built(name, ours, theirs)


@pytest.mark.parametrize("source, target", [("dpm", "unipc"), ("unipc", "dpm"),
                                            ("euler", "euler_a"), ("euler_a", "euler"),
                                            ("dpm", "euler"), ("unipc", "euler_a")])
def test_swap_between_these_schedulers_matches_diffusers(source, target):
    """Explicit non-default values, so diffusers' tracking of defaulted keys plays no part."""
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
              "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
    if source in MULTI:
        config["solver_order"] = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = PAIRS[target][0].from_config(PAIRS[source][0](**config).config)
    theirs = PAIRS[target][1].from_config(PAIRS[source][1](**config).config)
    assert_same_shared_config(ours, theirs)
    compare_built(target, ours, theirs)


# --------------------------------------------------------------------------------------------------
# Forward process
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_add_noise_matches_diffusers(name, dtype):
    ours, theirs = (cls(beta_schedule="scaled_linear") for cls in PAIRS[name])
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 8, 8, generator=g, dtype=dtype)
    noise = torch.randn(4, 3, 8, 8, generator=g, dtype=dtype)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    timesteps = theirs.timesteps[[0, 3, 4, -1]]  # σ-based: from the inference schedule
    expected = theirs.add_noise(x0, noise, timesteps)
    assert_scaled_close(ours.add_noise(x0, noise, timesteps), expected, what="add_noise")


# --------------------------------------------------------------------------------------------------
# Clear errors
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dpm", "unipc"])
def test_step_before_set_timesteps_is_a_clear_error_where_diffusers_refuses_it(name):
    """(Euler and Euler ancestral step along the training σ's, as diffusers: see
    test_scheduler_config_keys.py.)"""
    x = torch.zeros(1, 3, 8, 8)
    for scheduler in (cls() for cls in PAIRS[name]):
        with pytest.raises(ValueError, match="set_timesteps"):
            scheduler.step(x, scheduler.timesteps[0], x)


@pytest.mark.parametrize("name", list(PAIRS))
def test_bad_config_values_are_clear_errors(name):
    ours_cls = PAIRS[name][0]
    with pytest.raises(ValueError, match="num_inference_steps"):
        ours_cls(num_train_timesteps=100).set_timesteps(101)
    for key, value in (("beta_schedule", "cosine"), ("prediction_type", "noise"),
                       ("timestep_spacing", "uniform")):
        with pytest.raises(ValueError, match=f"{key}.*choose one of"):
            ours_cls(**{key: value})


@pytest.mark.parametrize("cls, config, match", [
    (DPMSolverMultistepScheduler, {"algorithm_type": "dpm"}, "algorithm_type.*choose one of"),
    (DPMSolverMultistepScheduler, {"solver_type": "bh3"}, "solver_type.*choose one of"),
    (DPMSolverMultistepScheduler, {"solver_order": 4}, "solver_order.*choose one of"),
    (DPMSolverMultistepScheduler, {"final_sigmas_type": "one"}, "final_sigmas_type"),
    (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver"}, "final_sigmas_type='sigma_min'"),
    (UniPCMultistepScheduler, {"solver_type": "bh3"}, "solver_type.*choose one of"),
    (UniPCMultistepScheduler, {"solver_type": "bh1"}, "final_sigmas_type='sigma_min'"),
    (UniPCMultistepScheduler, {"predict_x0": False}, "final_sigmas_type='sigma_min'"),
    (UniPCMultistepScheduler, {"lower_order_final": False}, "final_sigmas_type='sigma_min'"),
    (EulerDiscreteScheduler, {"final_sigmas_type": "one"}, "final_sigmas_type"),
    (EulerAncestralDiscreteScheduler, {"prediction_type": "sample"}, "EulerDiscreteScheduler"),
])
def test_scheduler_specific_bad_configs_are_clear_errors(cls, config, match):
    with pytest.raises(ValueError, match=match):
        cls(**config)


def test_nan_configs_rejected_by_unipc_do_give_nan_in_diffusers():
    """Why UniPC refuses these: diffusers' last step to σ = 0 is non-finite with them."""
    for config in ({"solver_type": "bh1"}, {"predict_x0": False}):
        record = run_loop(diffusers.UniPCMultistepScheduler(**config), 10, (1, 3, 8, 8))
        assert not torch.isfinite(record["prev_sample"][-1]).all()


@pytest.mark.parametrize("name", ["euler", "unipc"])
@pytest.mark.parametrize("config", [{"sigma_min": 0.0}, {"sigma_max": -1.0},
                                    {"sigma_min": 5.0, "sigma_max": 0.02}])
def test_bad_karras_sigma_range_is_a_clear_error(name, config):
    with pytest.raises(ValueError, match="0 < sigma_min < sigma_max"):
        PAIRS[name][0](use_karras_sigmas=True, **config)


# T = 100 training steps: "linspace" and "leading" round 100 inference steps onto 99 timesteps
REPEATS = [{"num_train_timesteps": 100, "timestep_spacing": s} for s in ("linspace", "leading")]


@pytest.mark.parametrize("config", REPEATS, ids=["linspace", "leading"])
@pytest.mark.parametrize("name", MULTI)
def test_repeated_timestep_is_a_clear_error(name, config):
    scheduler = PAIRS[name][0](**config)
    scheduler.set_timesteps(99)  # the most steps these spacings can take without repeats
    with pytest.raises(ValueError, match="same timestep.*trailing"):
        scheduler.set_timesteps(100)


@pytest.mark.parametrize("config", REPEATS, ids=["linspace", "leading"])
@pytest.mark.parametrize("name", MULTI)
def test_repeated_timestep_breaks_diffusers(name, config):
    """Why we refuse: diffusers' step of size h = 0 gives NaN ("linspace") or runs past the end."""
    try:
        record = run_loop(PAIRS[name][1](**config), 100, (1, 2, 4, 4))
    except (IndexError, AssertionError):  # "leading": every t is 0, the loop starts at the 2nd
        assert config["timestep_spacing"] == "leading"
        return
    assert not torch.isfinite(record["prev_sample"][-1]).all()


@pytest.mark.parametrize("name", MULTI)
@pytest.mark.parametrize("config, steps", [
    ({"num_train_timesteps": 100, "use_karras_sigmas": True}, 100),  # repeated t, distinct σ
    ({"num_train_timesteps": 100}, 99), ({"num_train_timesteps": 100,
                                          "timestep_spacing": "trailing"}, 100)])
def test_many_steps_without_a_zero_step_match_diffusers(name, config, steps):
    check(name, config, steps=steps, batch=1, shape=(2, 4, 4))


def test_swapping_a_sigma_range_config_matches_diffusers():
    """UniPC -> Euler keeps sigma_min/sigma_max; DPM has no such keys, but reads them from the
    foreign config they stay in, as diffusers' does."""
    config = {"use_karras_sigmas": True, "beta_schedule": "scaled_linear", **SIGMA_RANGE}
    ours = EulerDiscreteScheduler.from_config(UniPCMultistepScheduler(**config).config)
    theirs = diffusers.EulerDiscreteScheduler.from_config(
        diffusers.UniPCMultistepScheduler(**config).config)
    assert_same_shared_config(ours, theirs)
    compare_built("euler", ours, theirs)
    ours = DPMSolverMultistepScheduler.from_config(UniPCMultistepScheduler(**config).config)
    theirs = diffusers.DPMSolverMultistepScheduler.from_config(
        diffusers.UniPCMultistepScheduler(**config).config)
    compare_built("dpm", ours, theirs)


@pytest.mark.parametrize("cls, key, value", [
    ("DPMSolverMultistepScheduler", "algorithm_type", "deis"),
    ("DPMSolverMultistepScheduler", "solver_type", "logrho"),
    ("DPMSolverMultistepScheduler", "solver_type", "bh1"),
    ("UniPCMultistepScheduler", "solver_type", "midpoint"),
    ("UniPCMultistepScheduler", "solver_type", "logrho")])
def test_other_solvers_settings_are_rewritten_as_diffusers_does(cls, key, value):
    """DEIS's and the other solver's settings: diffusers records its nearest own one."""
    theirs_cls = getattr(diffusers, cls)
    config = {key: value, "final_sigmas_type": "sigma_min"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        theirs = theirs_cls(**config)
    ours = getattr(ddlearn, cls)(**config)
    assert ours.config[key] == theirs.config[key]


@pytest.mark.parametrize("name", ["euler", "euler_a"])
def test_integer_index_as_timestep_is_a_clear_error(name):
    scheduler = PAIRS[name][0]()
    scheduler.set_timesteps(10)
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="scheduler.timesteps"):
        scheduler.step(x, 0, x)
    with pytest.raises(ValueError, match="not one of scheduler.timesteps"):
        scheduler.step(x, torch.tensor(3.5), x)
