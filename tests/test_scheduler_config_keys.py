"""Every config key diffusers' nine schedulers take, checked key by key against diffusers.

What this file proves, for DDPM, DDIM, PNDM, Euler, Euler ancestral, Heun, LMS, DPM-Solver and
UniPC (diffusers is the oracle, scheduler_harness.py the loop comparison):

1. our `__init__` takes every parameter of diffusers' `__init__`, with an equal default (one test
   per class and key, so a key a later diffusers adds fails by name);
2. `Ours(**dict(theirs.config))` (bookkeeping keys such as `_use_default_values` included)
   constructs, records diffusers' values and samples as diffusers, for the default config and for
   every option of 3.;
3. the options below sample as diffusers (whole loops, 10 and 25 steps, 1e-5 relative);
4. the keys we take only at diffusers' default refuse any other value with a NotImplementedError
   naming key and value, accept the default silently, and a key that only acts together with one of
   them (time_shift_type) is accepted, since the result is the same;
5. `step` before `set_timesteps`: the classes whose diffusers loop runs on the construction-time
   schedule give diffusers' tensors; the others are a ValueError naming set_timesteps.
"""

import functools
import importlib.util
import inspect
import warnings

import diffusers
import pytest
import torch
from scheduler_harness import (
    ATTRIBUTES,
    assert_same_attributes,
    assert_same_loop,
    assert_same_records,
    assert_scaled_close,
    fake_model,
    run_loop,
)

import ddlearn

CLASSES = {
    "ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler", "lms": "LMSDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler", "unipc": "UniPCMultistepScheduler",
}
PAIRS = {name: (getattr(ddlearn, cls), getattr(diffusers, cls)) for name, cls in CLASSES.items()}
HAVE_SCIPY = importlib.util.find_spec("scipy") is not None
SIGMA_RANGE = {"sigma_min": 0.02, "sigma_max": 5.0}
SIGMA_MIN = {"final_sigmas_type": "sigma_min"}
COSINE = {"beta_schedule": "squaredcos_cap_v2"}
FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
DPM_ALGORITHMS = [{}, {"algorithm_type": "sde-dpmsolver++"},
                  {"algorithm_type": "dpmsolver", **SIGMA_MIN}]  # diffusers refuses it with "zero"


def init_defaults(cls) -> dict:
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def same_value(ours, theirs) -> bool:
    """`==`, except that a list and a tuple with equal items are equal (`[]` vs `()`)."""
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)):
        return len(ours) == len(theirs) and all(map(same_value, ours, theirs))
    return ours == theirs


def is_stochastic(name, config) -> bool:
    return name in ("ddpm", "euler_a") or config.get("algorithm_type") == "sde-dpmsolver++"


def learned_variance_model(sample, t):
    """(B, 2C, H, W): ε, then a variance channel block; DPM-Solver reads `model_output[:, :3]`."""
    eps = fake_model(sample, t)
    return torch.cat([eps, torch.tanh(3 * eps)], dim=1)


def model_for(config):
    return learned_variance_model if config.get("variance_type") else fake_model


def check(name, config, steps=10, **kw):
    """assert_same_loop with the seed and the model the config calls for; beta sigmas need scipy
    (without it diffusers raises an ImportError naming scipy, and so must we)."""
    ours_cls, theirs_cls = PAIRS[name]
    if config.get("use_beta_sigmas") and not HAVE_SCIPY:
        with pytest.raises(ImportError, match="scipy"):
            ours_cls(**config)
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers deprecates "dpmsolver"
        return assert_same_loop(ours_cls, theirs_cls, config, steps=steps, batch=2,
                                step_seed=1234 if is_stochastic(name, config) else None,
                                model=model_for(config), **kw)


# --------------------------------------------------------------------------------------------------
# 1. The signature: every diffusers key, with diffusers' default
# --------------------------------------------------------------------------------------------------
KEYS = [(name, key) for name, (_, theirs_cls) in PAIRS.items() for key in init_defaults(theirs_cls)]


@pytest.mark.parametrize("name, key", KEYS, ids=[f"{CLASSES[n]}-{k}" for n, k in KEYS])
def test_init_takes_every_diffusers_key_with_its_default(name, key):
    ours_cls, theirs_cls = PAIRS[name]
    expected, ours = init_defaults(theirs_cls)[key], init_defaults(ours_cls)
    assert key in ours, f"{ours_cls.__name__}.__init__ lacks {key!r} (diffusers: {expected!r})"
    assert same_value(ours[key], expected), \
        f"{ours_cls.__name__}: default {key}={ours[key]!r}, diffusers' is {expected!r}"


# --------------------------------------------------------------------------------------------------
# 3. Options, each against diffusers' whole loop (and, in 2., built from diffusers' config)
# --------------------------------------------------------------------------------------------------
EXP, BETA = {"use_exponential_sigmas": True}, {"use_beta_sigmas": True}
OPTIONS = [
    ("euler", {"interpolation_type": "log_linear"}),
    ("euler", {"interpolation_type": "log_linear", "timestep_spacing": "trailing"}),
    ("euler", EXP), ("euler", BETA),
    ("euler", {**EXP, **SIGMA_RANGE}), ("euler", {**BETA, **SIGMA_RANGE}),
    ("euler", {**EXP, "sigma_max": 5.0}), ("euler", {**BETA, "sigma_min": 0.02}),
    ("euler", {"timestep_type": "continuous", "prediction_type": "v_prediction"}),
    ("euler", {"timestep_type": "continuous"}),  # ε-prediction: timesteps stay discrete
    *[(n, option) for n in ("heun", "lms") for option in (EXP, BETA)],
    *[("dpm", option) for option in (EXP, BETA, {**EXP, **SIGMA_MIN}, {"use_lu_lambdas": True},
                                     {"use_lu_lambdas": True, **COSINE})],
    *[("dpm", {"lambda_min_clipped": lam, **extra}) for lam, extra in (
        (-5.1, COSINE), (-5.1, {**COSINE, "timestep_spacing": "trailing"}),
        (-5.1, {**COSINE, "timestep_spacing": "leading"}), (-5.1, {}), (-4.0, {}))],
    *[("dpm", {**algorithm, **option}) for algorithm in DPM_ALGORITHMS for option in (
        {"variance_type": "learned_range"}, {"variance_type": "learned"}, SIGMA_MIN,
        {"euler_at_final": True, **SIGMA_MIN}, {"lower_order_final": False, **SIGMA_MIN},
        {"lower_order_final": False})],
    *[("dpm", {**FLOW, "flow_shift": shift}) for shift in (1.0, 3.0)],
    *[("unipc", option) for option in (EXP, BETA, {**EXP, **SIGMA_MIN}, {**BETA, **SIGMA_MIN},
                                       SIGMA_MIN, {"lower_order_final": False, **SIGMA_MIN})],
    *[("unipc", {**FLOW, "flow_shift": shift, **extra}) for shift in (1.0, 3.0)
      for extra in ({}, SIGMA_MIN)],
    *[("unipc", {**FLOW, "shift_terminal": 0.1, **extra}) for extra in ({}, {"flow_shift": 3.0})],
    ("unipc", {**FLOW, "use_karras_sigmas": True}),
]
OPTIONS = list({repr(o): o for o in OPTIONS}.values())  # dpmsolver's grid repeats its SIGMA_MIN


def option_id(name, config):
    return f"{name}-{'-'.join(f'{k}={v}' for k, v in config.items()) or 'default'}"


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name, config", OPTIONS, ids=[option_id(*o) for o in OPTIONS])
def test_option_matches_diffusers(name, config, steps):
    check(name, config, steps=steps)


BUILT = [(name, {}) for name in PAIRS] + OPTIONS


@pytest.mark.parametrize("name, config", BUILT, ids=[option_id(*o) for o in BUILT])
def test_built_from_diffusers_config_matches_diffusers(name, config):
    """`Ours(**dict(theirs.config))`: diffusers' config carries `_use_default_values`, which
    diffusers' own `__init__` ignores (it drops every `_`-prefixed key)."""
    ours_cls, theirs_cls = PAIRS[name]
    if config.get("use_beta_sigmas") and not HAVE_SCIPY:
        pytest.skip("beta sigmas without scipy: test_option_matches_diffusers checks the error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        theirs = theirs_cls(**config)
        theirs_cls(**theirs.config)  # the diffusers side of the claim
    given = dict(theirs.config)
    assert "_use_default_values" in given
    ours = ours_cls(**given)
    for key, value in given.items():
        if not key.startswith("_"):
            assert same_value(ours.config.get(key), value), \
                f"config[{key!r}]: ours {ours.config.get(key)!r}, diffusers' {value!r}"
    args = dict(steps=10, shape=(2, 3, 8, 8), model=model_for(config),
                step_seed=1234 if is_stochastic(name, config) else None)
    ours_record, theirs_record = run_loop(ours, **args), run_loop(theirs, **args)
    assert_same_attributes(ours, theirs, ATTRIBUTES)
    assert_same_records(ours_record, theirs_record)


# --------------------------------------------------------------------------------------------------
# 4. Keys taken only at diffusers' default
# --------------------------------------------------------------------------------------------------
SOLVER_P = "<a DPMSolverMultistepScheduler>"  # built on each side from its own library
DEFAULT_ONLY = [  # (name, config, key): diffusers acts on key's value here, we do not implement it
    ("unipc", {"solver_p": SOLVER_P}, "solver_p"),
]


def resolve(config, library):
    return {k: (library.DPMSolverMultistepScheduler() if v == SOLVER_P else v)
            for k, v in config.items()}


@pytest.mark.parametrize("name, config, key", DEFAULT_ONLY,
                         ids=[option_id(n, c) for n, c, _ in DEFAULT_ONLY])
def test_key_not_implemented_is_refused_by_name(name, config, key):
    ours_cls, theirs_cls = PAIRS[name]
    theirs = theirs_cls(**resolve(config, diffusers))  # diffusers takes it and acts on it
    theirs.set_timesteps(10, **({"mu": 0.5} if key == "use_dynamic_shifting" else {}))
    assert len(theirs.timesteps) == 10
    with pytest.raises(NotImplementedError) as info:
        ours_cls(**resolve(config, ddlearn))
    message, value = str(info.value), config[key]
    assert key in message, message
    if value != SOLVER_P:
        assert repr(value) in message or str(value) in message, message


DEFAULT_ONLY_KEYS = [("unipc", "solver_p")]


@pytest.mark.parametrize("name, key", DEFAULT_ONLY_KEYS)
def test_key_not_implemented_is_accepted_silently_at_diffusers_default(name, key):
    default = init_defaults(PAIRS[name][1])[key]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy's, raised inside diffusers
        check(name, {key: default})


INERT = [  # diffusers reads time_shift_type only with use_dynamic_shifting=True (and a mu),
    # flow_shift only with use_flow_sigmas=True: alone they change nothing, so they are accepted
    *[(n, {"time_shift_type": "linear"}) for n in ("dpm", "unipc")],
    ("unipc", {"time_shift_type": "linear", **FLOW}),
    *[(n, {"flow_shift": 3.0}) for n in ("dpm", "unipc")],
]


@pytest.mark.parametrize("name, config", INERT, ids=[option_id(*o) for o in INERT])
def test_key_that_acts_only_with_another_is_accepted_alone(name, config):
    check(name, config)


def test_shift_terminal_without_flow_sigmas_is_an_error_in_both():
    with pytest.raises(ValueError, match="shift_terminal"):
        diffusers.UniPCMultistepScheduler(shift_terminal=0.1)
    with pytest.raises((ValueError, NotImplementedError), match="shift_terminal"):
        ddlearn.UniPCMultistepScheduler(shift_terminal=0.1)


def test_dynamic_shifting_needs_mu_in_unipc_only_as_in_diffusers():
    """UniPC's set_timesteps demands mu once use_dynamic_shifting=True; DPM-Solver's takes it
    then (and from then on uses flow_shift = e^mu)."""
    for library in (diffusers, ddlearn):
        with pytest.raises(ValueError, match="mu"):
            library.UniPCMultistepScheduler(use_dynamic_shifting=True).set_timesteps(10)
        library.DPMSolverMultistepScheduler(use_dynamic_shifting=True, **FLOW).set_timesteps(10)


MU = [  # dynamic shifting (Flux): the shift comes with set_timesteps(mu=...)
    ("dpm", {"use_dynamic_shifting": True, **FLOW}, 0.8),
    ("unipc", {"use_dynamic_shifting": True, **FLOW}, 0.8),
    ("unipc", {"use_dynamic_shifting": True, "time_shift_type": "linear", **FLOW}, 2.0),
    ("unipc", {"use_dynamic_shifting": True, "shift_terminal": 0.1, **FLOW}, 0.5),
    ("unipc", {"use_dynamic_shifting": True}, 0.8),  # mu demanded, but VP σ ignore it
]


@pytest.mark.parametrize("name, config, mu", MU, ids=[option_id(n, c) for n, c, _ in MU])
def test_dynamic_shifting_with_mu_matches_diffusers(name, config, mu):
    ours, theirs = (cls(**config) for cls in PAIRS[name])
    for scheduler in (ours, theirs):  # run_loop calls set_timesteps(steps): add the mu
        scheduler.set_timesteps = functools.partial(scheduler.set_timesteps, mu=mu)
    args = dict(steps=12, shape=(2, 3, 8, 8))
    assert_same_records(run_loop(ours, **args), run_loop(theirs, **args))
    assert_scaled_close(ours.sigmas, theirs.sigmas, what="sigmas")


# --------------------------------------------------------------------------------------------------
# 5. step() before set_timesteps()
# --------------------------------------------------------------------------------------------------
# diffusers 0.42.1 steps these along their construction-time schedule: DDPM's T-1..0, Euler's,
# Euler ancestral's and LMS's 1000 training σ's, Heun's 1999 timesteps (its __init__ calls
# set_timesteps(1000)). DDIM, DPM-Solver and UniPC raise a ValueError; PNDM's timesteps are None
# (its step is a TypeError there).
STEPS_BEFORE_SET_TIMESTEPS = {"ddpm", "euler", "euler_a", "heun", "lms"}


def loop_without_set_timesteps(scheduler, name) -> dict:
    """run_loop's loop over `scheduler.timesteps` as constructed (t = 999 where they are None)."""
    timesteps = scheduler.timesteps if scheduler.timesteps is not None else torch.tensor([999])
    sample = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    sample = sample * scheduler.init_noise_sigma
    kwargs = {"generator": torch.Generator().manual_seed(1234)} if is_stochastic(name, {}) else {}
    record = {"timesteps": [], "scaled": [], "prev_sample": [], "pred_original_sample": []}
    for t in timesteps:
        scaled = scheduler.scale_model_input(sample, t)
        out = scheduler.step(fake_model(scaled, t), t, sample, **kwargs)
        sample = out.prev_sample
        record["timesteps"].append(float(t))
        record["scaled"].append(scaled)
        record["prev_sample"].append(sample)
        record["pred_original_sample"].append(getattr(out, "pred_original_sample", None))
    return record


@pytest.mark.parametrize("name", list(PAIRS))
def test_step_before_set_timesteps_as_diffusers(name):
    ours_cls, theirs_cls = PAIRS[name]
    ours, theirs = ours_cls(), theirs_cls()
    if theirs.timesteps is None:
        assert ours.timesteps is None
    else:
        assert ours.timesteps is not None, "timesteps right after construction: None"
        what = (f"timesteps right after construction: {ours.timesteps.dtype} "
                f"{tuple(ours.timesteps.shape)}, diffusers' {theirs.timesteps.dtype} "
                f"{tuple(theirs.timesteps.shape)}")
        assert ours.timesteps.dtype == theirs.timesteps.dtype, what
        assert ours.timesteps.shape == theirs.timesteps.shape, what
        assert torch.equal(ours.timesteps, theirs.timesteps), what
    try:
        expected = loop_without_set_timesteps(theirs, name)
    except (ValueError, TypeError):
        expected = None
    assert (expected is not None) == (name in STEPS_BEFORE_SET_TIMESTEPS), \
        "diffusers changed which schedulers step before set_timesteps"
    if expected is None:
        with pytest.raises(ValueError, match="set_timesteps"):
            loop_without_set_timesteps(ours, name)
        return
    assert_same_attributes(ours_cls(), theirs_cls(), ("sigmas", "init_noise_sigma"))
    assert_same_records(loop_without_set_timesteps(ours, name), expected)


SWAPS = [(target, variance) for target in ("dpm", "unipc", "euler")
         for variance in ("fixed_small", "fixed_large")] + [("dpm", "learned_range")]


@pytest.mark.parametrize("target, variance_type", SWAPS)
def test_swap_from_a_ddpm_config_with_its_variance_type_matches_diffusers(variance_type, target):
    """A DDPM pipeline's config names its variance_type; swapped in, DPM-Solver shares the key
    (a fixed variance changes nothing there, as in diffusers; a learned one drops the variance
    channels) and the others keep it unused."""
    ours_cls, theirs_cls = PAIRS[target]
    config = {"variance_type": variance_type, "beta_schedule": "squaredcos_cap_v2"}
    ours = ours_cls.from_config(ddlearn.DDPMScheduler(**config).config)
    theirs = theirs_cls.from_config(diffusers.DDPMScheduler(**config).config)
    model = learned_variance_model if variance_type.startswith("learned") else fake_model
    args = dict(steps=10, shape=(2, 3, 8, 8), model=model)
    assert_same_records(run_loop(ours, **args), run_loop(theirs, **args))


FOREIGN = [  # (source, its option, target without that key): diffusers' target ignores it
    ("euler", {"use_karras_sigmas": True}, "euler_a"),
    ("euler", {"use_exponential_sigmas": True}, "euler_a"),
    ("euler", {"interpolation_type": "log_linear"}, "heun"),
    ("euler", {"interpolation_type": "log_linear"}, "lms"),
    ("euler", {"timestep_type": "continuous", "prediction_type": "v_prediction"}, "lms"),
    ("dpm", {"use_lu_lambdas": True}, "unipc"),
    ("dpm", {"lambda_min_clipped": -4.0}, "unipc"),
    ("ddpm", {"clip_sample": True, "thresholding": True}, "dpm"),
]


@pytest.mark.parametrize("source, option, target", FOREIGN,
                         ids=[f"{s}-{option_id(t, o)}" for s, o, t in FOREIGN])
def test_a_foreign_option_kept_in_a_swapped_config_changes_nothing(source, option, target):
    """Keys the target does not take stay in its config (diffusers' hidden keys) and must not
    switch anything on there: Euler's Karras σ in Euler ancestral, DDPM's clipping in DPM."""
    ours = PAIRS[target][0].from_config(PAIRS[source][0](**option).config)
    theirs = PAIRS[target][1].from_config(PAIRS[source][1](**option).config)
    step_seed = 1234 if is_stochastic(target, {}) else None
    args = dict(steps=10, shape=(2, 3, 8, 8), step_seed=step_seed)
    assert_same_records(run_loop(ours, **args), run_loop(theirs, **args))
