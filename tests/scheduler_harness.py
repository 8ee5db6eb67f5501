"""Shared test helper: run a full sampling loop in ddlearn and in diffusers side by side.

Both schedulers get the same config, the same initial noise (from a seed) and the same deterministic
"model" (`fake_model`), so every intermediate tensor must agree. Typical use:

    from scheduler_harness import assert_same_loop   # pytest puts tests/ on sys.path
    assert_same_loop(DDIMScheduler, diffusers.DDIMScheduler, {"beta_schedule": "linear"}, steps=10)

`step_seed` seeds a `torch.Generator` passed to `step(..., generator=)` of both schedulers
(stochastic samplers: DDPM, DDIM with eta > 0, Euler ancestral, ...).

Every compared tensor must be finite on both sides: a NaN in both libraries is a shared bug, not
an agreement (`assert_scaled_close(..., allow_nonfinite=True)` where a test expects one).
"""

from typing import Optional

import torch

ATTRIBUTES = ("timesteps", "sigmas", "alphas_cumprod", "init_noise_sigma")


def fake_model(sample: torch.Tensor, t) -> torch.Tensor:
    """A fixed smooth function of (x_t, t) standing in for a trained network ε_θ(x_t, t)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    c = torch.cos(t / 100).to(sample.dtype)
    return 0.1 * sample * c + 0.05 * torch.sin(sample)


def assert_scaled_close(actual, expected, rtol: float = 1e-5, what: str = "",
                        allow_nonfinite: bool = False):
    """allclose with rtol and an atol relative to the tensor's scale (rtol * max |expected|).

    A NaN or inf on either side fails (an inf would make the tolerance infinite, a NaN would make
    it NaN); a test that expects them passes `allow_nonfinite=True`, and then they must sit at the
    same places on both sides.
    """
    actual = torch.as_tensor(actual).detach().cpu().to(torch.float64)
    expected = torch.as_tensor(expected).detach().cpu().to(torch.float64)
    assert actual.shape == expected.shape, \
        f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if not allow_nonfinite:
        for side, x in (("actual (ours)", actual), ("expected (reference)", expected)):
            bad = (~torch.isfinite(x)).sum().item()
            assert bad == 0, f"{what}: {side} has {bad} NaN/inf value(s) of {x.numel()}"
    finite = expected[torch.isfinite(expected)]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-2),
                               equal_nan=allow_nonfinite, msg=lambda m: f"{what}: {m}")


def run_loop(scheduler, steps: int, shape, dtype=torch.float32, seed: int = 0,
             step_kwargs: Optional[dict] = None, step_seed: Optional[int] = None,
             model=fake_model) -> dict:
    """set_timesteps(steps), then x_T = noise · init_noise_sigma and the usual denoising loop.

    `model(sample, t)` stands in for the network (default `fake_model`).
    Returns a dict of lists: "timesteps" (floats), "scaled" (scale_model_input outputs),
    "model_output", "prev_sample", "pred_original_sample" (None where the scheduler gives none).
    """
    scheduler.set_timesteps(steps)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    sample = noise * scheduler.init_noise_sigma
    kwargs = dict(step_kwargs or {})
    if step_seed is not None:
        kwargs["generator"] = torch.Generator().manual_seed(step_seed)
    record = {"timesteps": [], "scaled": [], "model_output": [], "prev_sample": [],
              "pred_original_sample": []}
    for t in scheduler.timesteps:
        scaled = scheduler.scale_model_input(sample, t)
        model_output = model(scaled, t)
        out = scheduler.step(model_output, t, sample, **kwargs)
        sample = out.prev_sample
        record["timesteps"].append(float(t))
        record["scaled"].append(scaled)
        record["model_output"].append(model_output)
        record["prev_sample"].append(sample)
        record["pred_original_sample"].append(getattr(out, "pred_original_sample", None))
    return record


def assert_same_attributes(ours, theirs, names=ATTRIBUTES, rtol: float = 1e-5):
    """Every attribute in `names` that diffusers' scheduler has must exist on ours and match."""
    for name in names:
        expected = getattr(theirs, name, None)
        if expected is None:
            continue
        assert hasattr(ours, name), f"{type(ours).__name__} lacks attribute {name!r}"
        assert_scaled_close(getattr(ours, name), expected, rtol, what=name)


def assert_same_loop(ours_cls, theirs_cls, config: dict, steps: int = 10, batch: int = 1,
                     dtype=torch.float32, step_kwargs: Optional[dict] = None,
                     step_seed: Optional[int] = None, shape=(3, 8, 8), seed: int = 0,
                     rtol: float = 1e-5, model=fake_model) -> tuple:
    """Build both schedulers from `config`, run both loops, compare every recorded tensor.

    Compares timesteps, sigmas, alphas_cumprod, init_noise_sigma after set_timesteps, then at every
    step the scale_model_input output, prev_sample and pred_original_sample (when diffusers gives
    one). Returns (ours_record, theirs_record, ours_scheduler, theirs_scheduler).
    """
    ours, theirs = ours_cls(**config), theirs_cls(**config)
    assert_same_attributes(ours, theirs, ("alphas_cumprod",), rtol)
    full_shape = (batch, *shape)
    args = dict(steps=steps, shape=full_shape, dtype=dtype, seed=seed, step_kwargs=step_kwargs,
                step_seed=step_seed, model=model)
    theirs_record = run_loop(theirs, **args)
    ours_record = run_loop(ours, **args)
    theirs_check, ours_check = theirs_cls(**config), ours_cls(**config)
    theirs_check.set_timesteps(steps)
    ours_check.set_timesteps(steps)
    assert_same_attributes(ours_check, theirs_check, ATTRIBUTES, rtol)
    assert_same_records(ours_record, theirs_record, rtol)
    return ours_record, theirs_record, ours, theirs


def assert_same_records(ours_record: dict, theirs_record: dict, rtol: float = 1e-5):
    """Compare two `run_loop` records: timesteps exactly, then each step's tensors."""
    assert ours_record["timesteps"] == theirs_record["timesteps"], "timesteps differ"
    for i, t in enumerate(theirs_record["timesteps"]):
        where = f"step {i} (t={t})"
        assert ours_record["prev_sample"][i].dtype == theirs_record["prev_sample"][i].dtype, \
            f"{where}: prev_sample dtype"
        assert_scaled_close(ours_record["scaled"][i], theirs_record["scaled"][i], rtol,
                            f"{where} scale_model_input")
        assert_scaled_close(ours_record["prev_sample"][i], theirs_record["prev_sample"][i], rtol,
                            f"{where} prev_sample")
        expected_x0 = theirs_record["pred_original_sample"][i]
        if expected_x0 is not None:
            assert ours_record["pred_original_sample"][i] is not None, f"{where}: no pred x_0"
            assert_scaled_close(ours_record["pred_original_sample"][i], expected_x0, rtol,
                                f"{where} pred_original_sample")
