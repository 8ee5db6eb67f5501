"""FlowMatchEulerDiscreteScheduler against diffusers: same config, same noise, same numbers.

Whole sampling loops on each option (shift, dynamic shifting with mu, shift_terminal, Karras /
exponential / beta σ, invert_sigmas, stochastic sampling), your own sigmas and timesteps, the
forward process `scale_noise`, steps before `set_timesteps`, and the clear errors.
"""

import inspect

import diffusers
import pytest
import torch
from diffusers.pipelines.flux.pipeline_flux import calculate_shift as diffusers_calculate_shift
from scheduler_harness import assert_scaled_close

import ddlearn
from ddlearn.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler, calculate_shift

OURS, THEIRS = FlowMatchEulerDiscreteScheduler, diffusers.FlowMatchEulerDiscreteScheduler


def velocity(x, t):
    """A fixed smooth function of (x_σ, t) standing in for a trained network u_θ(x_σ, t)."""
    return 0.3 * x + torch.sin(x) * torch.as_tensor(t, dtype=x.dtype) / 1000


def run(scheduler, steps=None, dtype=torch.float32, seed=0, set_kwargs=None, stochastic=False):
    """set_timesteps, then x_1 ~ N(0, I) and the Euler loop; -> the schedule and every x."""
    scheduler.set_timesteps(steps, **(set_kwargs or {}))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    generator = torch.Generator().manual_seed(7) if stochastic else None
    samples = []
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, t), t, x, generator=generator).prev_sample
        samples.append(x)
    return scheduler, samples


def check(config, steps=10, **kw):
    ours, ours_samples = run(OURS(**config), steps, **kw)
    theirs, theirs_samples = run(THEIRS(**config), steps, **kw)
    assert_scaled_close(ours.timesteps, theirs.timesteps, what="timesteps")
    assert_scaled_close(ours.sigmas, theirs.sigmas, what="sigmas")
    for i, (a, b) in enumerate(zip(ours_samples, theirs_samples, strict=True)):
        assert a.dtype == b.dtype, f"step {i}: dtype"
        assert_scaled_close(a, b, what=f"step {i}")


OPTIONS = [
    {}, {"shift": 3.0}, {"shift": 0.5}, {"num_train_timesteps": 100, "shift": 2.0},
    {"shift": 3.0, "shift_terminal": 0.1}, {"invert_sigmas": True},
    {"use_karras_sigmas": True, "shift": 3.0}, {"use_exponential_sigmas": True},
    {"use_beta_sigmas": True, "shift": 3.0},
]


@pytest.mark.parametrize("steps", [1, 4, 10, 28])
@pytest.mark.parametrize("config", OPTIONS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())
                         or "default")
def test_loop_matches_diffusers(config, steps):
    if steps == 1 and "shift_terminal" in config:  # σ = 1 alone cannot be stretched
        with pytest.raises(ValueError, match="shift_terminal"):
            OURS(**config).set_timesteps(steps)
        with pytest.raises((IndexError, ValueError)):  # diffusers: NaN timesteps, then fails
            run(THEIRS(**config), steps)
        return
    check(config, steps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_loop_matches_diffusers_in_each_dtype(dtype):
    check({"shift": 3.0}, 20, dtype=dtype)


@pytest.mark.parametrize("config, mu", [
    ({"use_dynamic_shifting": True}, 0.8),
    ({"use_dynamic_shifting": True}, calculate_shift(64 * 64 // 4)),
    ({"use_dynamic_shifting": True, "time_shift_type": "linear"}, 2.0),
    ({"use_dynamic_shifting": True, "shift_terminal": 0.05}, 1.1),
])
def test_dynamic_shifting_with_mu_matches_diffusers(config, mu):
    check(config, 12, set_kwargs={"mu": mu})


def test_stochastic_sampling_matches_diffusers_and_depends_on_the_seed():
    check({"stochastic_sampling": True}, 10, stochastic=True)
    _, a = run(OURS(stochastic_sampling=True), 10, stochastic=True)
    scheduler = OURS(stochastic_sampling=True)
    scheduler.set_timesteps(10)
    x = torch.zeros(1, 3, 4, 4)
    t = scheduler.timesteps[0]
    first = scheduler.step(x, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    scheduler.set_timesteps(10)
    second = scheduler.step(x, t, x, generator=torch.Generator().manual_seed(2)).prev_sample
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("set_kwargs", [
    {"sigmas": [1.0, 0.8, 0.5, 0.3, 0.1]},
    {"timesteps": [1000.0, 750.0, 500.0, 250.0]},
    {"sigmas": [1.0, 0.6, 0.2], "timesteps": [1000.0, 600.0, 200.0]},
], ids=["sigmas", "timesteps", "both"])
def test_your_own_sigmas_or_timesteps_match_diffusers(set_kwargs):
    check({"shift": 3.0}, None, set_kwargs=set_kwargs)


def test_set_shift_matches_diffusers():
    ours, theirs = OURS(), THEIRS()
    ours.set_shift(3.0)
    theirs.set_shift(3.0)
    assert ours.shift == theirs.shift == 3.0
    ours.set_timesteps(8)
    theirs.set_timesteps(8)
    assert_scaled_close(ours.sigmas, theirs.sigmas, what="sigmas")


@pytest.mark.parametrize("begin_index", [None, 3])
def test_scale_noise_is_diffusers_forward_process(begin_index):
    ours, theirs = OURS(shift=3.0), THEIRS(shift=3.0)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(10)
        if begin_index is not None:
            scheduler.set_begin_index(begin_index)
    t = theirs.timesteps[[0, 4, 9]] if begin_index is None else theirs.timesteps[[3, 3, 3]]
    expected = theirs.scale_noise(x0, t, noise)
    assert_scaled_close(ours.scale_noise(x0, t, noise), expected, what="scale_noise")
    sigma = theirs.sigmas[[0, 4, 9] if begin_index is None else [3, 3, 3]].view(3, 1, 1, 1)
    assert_scaled_close(expected, (1 - sigma) * x0 + sigma * noise, what="x = (1-σ) x0 + σ ε")


def test_steps_before_set_timesteps_as_diffusers():
    """Right after construction both have T training σ's (no final 0) and step along them."""
    ours, theirs = OURS(shift=3.0), THEIRS(shift=3.0)
    assert_scaled_close(ours.timesteps, theirs.timesteps, what="timesteps")
    assert_scaled_close(ours.sigmas, theirs.sigmas, what="sigmas")
    x = y = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in theirs.timesteps[:5]:
        x = ours.step(velocity(x, t), t, x).prev_sample
        y = theirs.step(velocity(y, t), t, y).prev_sample
        assert_scaled_close(x, y, what=f"t={float(t)}")


def test_takes_every_diffusers_key_with_its_default_and_loads_its_config(tmp_path):
    theirs_params = inspect.signature(THEIRS.__init__).parameters
    ours_params = inspect.signature(OURS.__init__).parameters
    for name, parameter in theirs_params.items():
        assert name in ours_params, f"FlowMatchEulerDiscreteScheduler lacks {name!r}"
        assert ours_params[name].default == parameter.default, name
    THEIRS(shift=3.0, use_dynamic_shifting=True).save_pretrained(tmp_path)
    ours = OURS.from_pretrained(tmp_path)
    assert ours.config.shift == 3.0 and ours.config.use_dynamic_shifting
    rebuilt = OURS(**dict(THEIRS(shift=2.0).config))
    assert rebuilt.config.shift == 2.0


def test_compatibles_and_order_as_diffusers():
    ours, theirs = OURS(), THEIRS()
    assert {c.__name__ for c in ours.compatibles} == {c.__name__ for c in theirs.compatibles}
    assert "FlowMatchEulerDiscreteScheduler" not in {
        c.__name__ for c in ddlearn.DDPMScheduler().compatibles}
    assert ours.order == theirs.order and len(ours) == len(theirs)


@pytest.mark.parametrize("image_seq_len", [256, 1024, 4096, 300])
def test_calculate_shift_is_diffusers(image_seq_len):
    assert calculate_shift(image_seq_len) == pytest.approx(diffusers_calculate_shift(image_seq_len))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="mu"):
        OURS(use_dynamic_shifting=True).set_timesteps(10)
    with pytest.raises(ValueError, match="sigmas must decrease"):
        OURS().set_timesteps(sigmas=[0.2, 0.5, 1.0])
    with pytest.raises(ValueError, match="timesteps must decrease"):
        OURS().set_timesteps(timesteps=[500.0, 500.0, 100.0])
    with pytest.raises(ValueError, match="agree in length"):
        OURS().set_timesteps(4, sigmas=[1.0, 0.5])
    with pytest.raises(ValueError, match="time_shift_type"):
        OURS(time_shift_type="cosine")
    scheduler = OURS()
    scheduler.set_timesteps(4)
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="not an integer"):
        scheduler.step(x, 0, x)
    with pytest.raises(NotImplementedError, match="per_token_timesteps"):
        scheduler.step(x, scheduler.timesteps[0], x, per_token_timesteps=torch.ones(1, 16))


# --------------------------------------------------------------------------------------------------
# The objective: conditional flow matching, as diffusers' SD3 training script computes it
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distribution", ["logit_normal", "mode", "uniform"])
def test_flow_sigmas_are_diffusers_timestep_density(distribution):
    from diffusers.training_utils import compute_density_for_timestep_sampling

    from ddlearn.losses import flow_sigmas

    theirs = compute_density_for_timestep_sampling(
        distribution if distribution != "uniform" else "none", 64, logit_mean=0.3, logit_std=0.8,
        mode_scale=1.29, generator=torch.Generator().manual_seed(3))
    ours = flow_sigmas(64, torch.Generator().manual_seed(3), distribution, logit_mean=0.3,
                       logit_std=0.8, mode_scale=1.29)
    assert torch.equal(ours, theirs)


class TinyVelocityNet(torch.nn.Module):
    """u_θ(x, t): a convolution plus a learned function of t, enough to have gradients."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.scale = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x, timestep):  # diffusers' name: flow_matching_loss passes it by keyword
        t = timestep.view(-1, 1, 1, 1)
        return type("Out", (), {"sample": self.conv(x) + self.scale * t / 1000})


@pytest.mark.parametrize("shift, distribution", [(1.0, "logit_normal"), (3.0, "logit_normal"),
                                                 (3.0, "uniform")])
def test_flow_matching_loss_is_diffusers_sd3_recipe(shift, distribution):
    """train_dreambooth_sd3.py: u from the density, t = timesteps[u·T], σ = sigmas at t,
    x_σ = (1 - σ) x_0 + σ ε, target ε - x_0, MSE. Same noise and u on both sides."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    from ddlearn.losses import flow_matching_loss
    from ddlearn.noise import randn_tensor

    torch.manual_seed(0)
    model = TinyVelocityNet()
    x0 = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    loss = flow_matching_loss(model, OURS(shift=shift), x0, torch.Generator().manual_seed(5),
                              distribution)
    loss.backward()
    assert model.scale.grad is not None and model.conv.weight.grad.abs().sum() > 0

    g, scheduler = torch.Generator().manual_seed(5), THEIRS(shift=shift)
    noise = randn_tensor(x0.shape, g)
    u = compute_density_for_timestep_sampling(
        distribution if distribution != "uniform" else "none", 4, logit_mean=0.0, logit_std=1.0,
        generator=g)
    timesteps = scheduler.timesteps[(u * scheduler.config.num_train_timesteps).long()]
    steps = [(scheduler.timesteps == t).nonzero().item() for t in timesteps]
    sigma = scheduler.sigmas[steps].view(-1, 1, 1, 1)
    noisy = (1.0 - sigma) * x0 + sigma * noise
    expected = torch.mean((model(noisy, timesteps).sample.float() - (noise - x0)) ** 2)
    assert_scaled_close(loss.detach(), expected.detach(), what="flow matching loss")


# --------------------------------------------------------------------------------------------------
# FlowMatchHeunDiscreteScheduler: the same path, EDM's 2nd-order Heun steps
# --------------------------------------------------------------------------------------------------
HEUN = (ddlearn.FlowMatchHeunDiscreteScheduler, diffusers.FlowMatchHeunDiscreteScheduler)


def heun_loop(scheduler, steps, step_kwargs=None):
    scheduler.set_timesteps(steps)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    kwargs = dict(step_kwargs or {})
    if kwargs.get("s_churn"):
        kwargs["generator"] = torch.Generator().manual_seed(3)
    samples = []
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, t), t, x, **kwargs).prev_sample
        samples.append(x)
    return scheduler, samples


@pytest.mark.parametrize("steps", [1, 2, 5, 12])
@pytest.mark.parametrize("config, step_kwargs", [
    ({}, None), ({"shift": 3.0}, None), ({"num_train_timesteps": 100}, None),
    ({"shift": 3.0}, {"s_churn": 2.0, "s_tmin": 0.05, "s_tmax": 0.9}),
], ids=["default", "shift3", "T100", "churn"])
def test_flow_heun_loop_matches_diffusers(config, step_kwargs, steps):
    ours, ours_samples = heun_loop(HEUN[0](**config), steps, step_kwargs)
    theirs, theirs_samples = heun_loop(HEUN[1](**config), steps, step_kwargs)
    assert ours.order == theirs.order == 2 and len(ours.timesteps) == 2 * steps - 1
    assert_scaled_close(ours.timesteps, theirs.timesteps, what="timesteps")
    assert_scaled_close(ours.sigmas, theirs.sigmas, what="sigmas")
    for i, (a, b) in enumerate(zip(ours_samples, theirs_samples, strict=True)):
        assert_scaled_close(a, b, what=f"call {i}")


def test_flow_heun_takes_diffusers_keys_scale_noise_and_compatibles():
    ours, theirs = (cls(shift=2.0) for cls in HEUN)
    theirs_params = inspect.signature(HEUN[1].__init__).parameters
    ours_params = inspect.signature(HEUN[0].__init__).parameters
    assert {k: p.default for k, p in theirs_params.items() if k != "self"} == \
        {k: p.default for k, p in ours_params.items() if k != "self"}
    assert {c.__name__ for c in ours.compatibles} == {c.__name__ for c in theirs.compatibles}
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(6)
    t = theirs.timesteps[3]
    assert_scaled_close(ours.scale_noise(x0, t, noise), theirs.scale_noise(x0, t, noise),
                        what="scale_noise")
