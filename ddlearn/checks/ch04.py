"""Checkers for chapter 04 (training a diffusion model): your function against ddlearn.losses.

    from ddlearn.checks import ch04
    ch04.check_training_loss(loss)          # ‖ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)‖²  (DDPM eq. 14)
    ch04.check_logit_normal_timesteps(fn)   # t = round(sigmoid(n) (T-1)), n ~ N(0, 1)
    ch04.check_velocity(velocity)           # v = √ᾱ_t ε - √(1-ᾱ_t) x_0  (Salimans & Ho 2022)
    ch04.check_ema_update(ema_update)       # θ_ema ← d θ_ema + (1-d) θ, in place

Each check runs a few seeded cases through ddlearn's reference (`diffusion_loss`'s pieces,
`sample_timesteps`, `target_for`, `EMA`) and through your function, and when yours is off it tries
the usual mistakes (the wrong target, a missing sigmoid, a flipped sign, swapped weights) and names
the one your numbers match.
"""

import torch
import torch.nn.functional as F

from ddlearn.checks import ExerciseError, compare_with_mistakes, randn, run_check, tiny_unet
from ddlearn.losses import sample_timesteps, target_for
from ddlearn.schedulers.ddpm import DDPMScheduler


# --------------------------------------------------------------------------------------------------
# Exercise 1: the training loss of one batch
# --------------------------------------------------------------------------------------------------
def check_training_loss(fn):
    """fn(model, scheduler, x0, noise, t) -> the scalar MSE between ε_θ(x_t, t) and ε."""
    model = tiny_unet()

    def case(beta_schedule, t, seed):
        scheduler = DDPMScheduler(beta_schedule=beta_schedule)
        t = torch.tensor(t)
        x0, noise = randn(len(t), 3, 8, 8, seed=seed), randn(len(t), 3, 8, 8, seed=seed + 1)
        with torch.no_grad():
            x_t = scheduler.add_noise(x0, noise, t)
            prediction = model(x_t, t).sample
            expected = F.mse_loss(prediction, noise)
            mistakes = {
                "you compared the prediction with x_0; an ε-prediction model (DDPM) is trained "
                "to recover the *noise*: F.mse_loss(noise_pred, noise).":
                    F.mse_loss(prediction, x0),
                "you compared the prediction with the noisy x_t; the target is the noise ε that "
                "went into it.": F.mse_loss(prediction, x_t),
                "the model must see the *noisy* images: x_t = scheduler.add_noise(x0, noise, t), "
                "then model(x_t, t).": F.mse_loss(model(x0, t).sample, noise),
            }
            try:
                yours = fn(model, scheduler, x0.clone(), noise.clone(), t.clone())
            except (AttributeError, TypeError) as error:
                if "UNet2DOutput" not in str(error) and "tuple" not in str(error):
                    raise
                raise ExerciseError(f"training_loss: your code raised `{error}`. The UNet returns "
                                    "a UNet2DOutput; the prediction is its `.sample`: "
                                    "model(x_t, t).sample") from None
        if torch.is_tensor(yours) and yours.dim() > 0:
            raise ExerciseError(f"training_loss: return one number (a 0-dim tensor), got shape "
                                f"{tuple(yours.shape)}; F.mse_loss averages over everything.")
        compare_with_mistakes("training_loss", yours, expected, mistakes,
                  "x_t = scheduler.add_noise(x0, noise, t); noise_pred = model(x_t, t).sample; "
                  "loss = F.mse_loss(noise_pred, noise).")

    return run_check("training_loss", fn,
                     lambda: case("linear", [0, 500, 999, 250], seed=0),
                     lambda: case("squaredcos_cap_v2", [10, 700], seed=2))


# --------------------------------------------------------------------------------------------------
# Exercise 2: logit-normal timesteps
# --------------------------------------------------------------------------------------------------
def check_logit_normal_timesteps(fn):
    """fn(batch_size, num_train_timesteps, generator) -> t (B,) int64 in [0, T-1], logit-normal."""

    def case(batch_size, T, seed):
        yours = fn(batch_size, T, torch.Generator().manual_seed(seed))
        expected = sample_timesteps(batch_size, T, torch.Generator().manual_seed(seed),
                                    "logit_normal")
        if not torch.is_tensor(yours):
            raise ExerciseError(f"logit_normal: return a tensor, got {type(yours).__name__}")
        if yours.shape != expected.shape:
            raise ExerciseError(f"logit_normal: shape {tuple(yours.shape)}, expected "
                                f"({batch_size},): one timestep per image.")
        if yours.dtype != torch.long:
            raise ExerciseError(f"logit_normal: dtype {yours.dtype}; timesteps index "
                                "alphas_cumprod, so round and convert: `.round().long()`.")
        if yours.min() < 0 or yours.max() > T - 1:
            raise ExerciseError(f"logit_normal: values from {yours.min()} to {yours.max()}, but "
                                f"t must lie in 0..{T - 1}. Squash n ~ N(0, 1) into (0, 1) "
                                f"with torch.sigmoid, then scale by (T - 1), not T.")
        if torch.equal(yours, expected):
            return
        # Another correct recipe (other RNG calls) gives other numbers: compare the distribution.
        many = fn(20_000, T, torch.Generator().manual_seed(seed + 1)).double()
        reference = sample_timesteps(20_000, T, torch.Generator().manual_seed(seed + 1),
                                     "logit_normal").double()
        quantiles = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.double)
        gap = (many.quantile(quantiles) - reference.quantile(quantiles)).abs().max() / T
        if gap > 0.02:
            middle = ((many > 0.25 * T) & (many < 0.75 * T)).double().mean().item()
            hint = ("they look uniform: draw n = torch.randn(batch_size, generator=generator), "
                    "not torch.rand" if abs(middle - 0.5) < 0.03 else
                    "the logit-normal puts ~68 % of t in the middle half; "
                    "t = (torch.sigmoid(n) * (T - 1)).round().long()")
            raise ExerciseError(f"logit_normal: your timesteps' quantiles differ from the "
                                f"logit-normal's by {gap:.0%} of T; {hint}.")

    return run_check("logit_normal", fn,
                     lambda: case(8, 1000, seed=0),
                     lambda: case(64, 50, seed=3))


# --------------------------------------------------------------------------------------------------
# Exercise 3: the v-prediction target
# --------------------------------------------------------------------------------------------------
def check_velocity(fn):
    """fn(x0, noise, alphas_cumprod, t) -> v = √ᾱ_t ε - √(1-ᾱ_t) x_0 for a batch."""

    def case(beta_schedule, t, seed):
        scheduler = DDPMScheduler(beta_schedule=beta_schedule, prediction_type="v_prediction")
        abar, t = scheduler.alphas_cumprod, torch.tensor(t)
        x0, noise = randn(len(t), 3, 8, 8, seed=seed), randn(len(t), 3, 8, 8, seed=seed + 1)
        expected = target_for(scheduler, x0, noise, t)
        a = abar[t].view(-1, 1, 1, 1)
        mistakes = {
            "the sign is flipped: v = √ᾱ_t·ε - √(1-ᾱ_t)·x_0 (noise first).":
                (1 - a).sqrt() * x0 - a.sqrt() * noise,
            "the coefficients are swapped: ε gets √ᾱ_t and x_0 gets √(1-ᾱ_t).":
                (1 - a).sqrt() * noise - a.sqrt() * x0,
            "you returned x_t (a plus sign): v has a minus, v = √ᾱ_t ε - √(1-ᾱ_t) x_0.":
                a.sqrt() * noise + (1 - a).sqrt() * x0,
            "the coefficients are square roots: √ᾱ_t and √(1-ᾱ_t).": a * noise - (1 - a) * x0,
        }
        try:
            yours = fn(x0.clone(), noise.clone(), abar.clone(), t.clone())
        except RuntimeError as error:
            if "size of tensor" not in str(error):
                raise
            raise ExerciseError(f"velocity: your code raised `{error}`. alphas_cumprod[t] has "
                                "shape (B,): reshape it to (B, 1, 1, 1).") from None
        compare_with_mistakes("velocity", yours, expected, mistakes,
                  "v = √ᾱ_t ε - √(1-ᾱ_t) x_0 with ᾱ_t = alphas_cumprod[t].view(-1, 1, 1, 1).")

    return run_check("velocity", fn,
                     lambda: case("linear", [0, 400, 999], seed=0),
                     lambda: case("squaredcos_cap_v2", [5, 500], seed=2))


# --------------------------------------------------------------------------------------------------
# Exercise 4: the EMA update
# --------------------------------------------------------------------------------------------------
def check_ema_update(fn):
    """fn(ema_params, params, decay) updates each tensor of ema_params in place."""

    def case(decay, seed):
        params = [randn(4, 3, seed=seed), randn(5, seed=seed + 1)]
        ema = [randn(4, 3, seed=seed + 2), randn(5, seed=seed + 3)]
        before = [e.clone() for e in ema]
        with torch.no_grad():
            returned = fn(ema, [p.clone() for p in params], decay)
        if all(torch.equal(e, b) for e, b in zip(ema, before, strict=True)):
            extra = (" You returned new tensors: update the ones you were given, e.g. "
                     "`e.mul_(decay).add_(p, alpha=1 - decay)` or `e.lerp_(p, 1 - decay)`."
                     if returned is not None else "")
            raise ExerciseError(f"ema_update: the EMA tensors did not change.{extra}")
        for i, (e, b, p) in enumerate(zip(ema, before, params, strict=True)):
            mistakes = {"the weights are swapped: keep `decay` of the *EMA* and mix in only "
                        "(1 - decay) of the new weights.": decay * p + (1 - decay) * b,
                        "you copied the new weights; the EMA moves only (1 - decay) of the way "
                        "towards them.": p}
            compare_with_mistakes(f"ema_update[{i}]", e, decay * b + (1 - decay) * p, mistakes,
                      "θ_ema ← decay·θ_ema + (1 - decay)·θ, in place.")

    return run_check("ema_update", fn, lambda: case(0.9, seed=0), lambda: case(0.999, seed=5))
