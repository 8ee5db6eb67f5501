"""Chapter 04, exercise 1: the training loss of one batch.

`training_loss(model, scheduler, x0, noise, t)` returns ‖ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)‖²,
averaged (DDPM eq. 14): `F.mse_loss(model(scheduler.add_noise(x0, noise, t), t).sample, noise)`.
It may not call `losses.diffusion_loss`, `flow_matching_loss` or `target_for`; the check names the
usual mistakes (x_0 or x_t as the target, the clean images fed to the model, a sum for the mean)
and wants a 0-dim tensor that carries the model's gradients, without calling backward itself.
Hidden cases: other schedules, scheduler classes, T, batch sizes, image sizes and float64.
"""

import torch
import torch.nn.functional as F

from ddlearn import losses
from ddlearn.checks import ExerciseError, compare_with_mistakes, guard, randn, run_check, tiny_unet
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.schedules import BETA_SCHEDULES


def reference_training_loss(model, scheduler, x0, noise, t):
    """The answer the cells below use while yours is not solved: ‖ε - ε_θ(x_t, t)‖², averaged."""
    x_t = scheduler.add_noise(x0, noise, t)         # √ᾱ_t x_0 + √(1-ᾱ_t) ε
    noise_pred = model(x_t, t).sample
    return F.mse_loss(noise_pred, noise)


def explain_training_loss(error):
    if "UNet2DOutput" in str(error) or "tuple" in str(error):
        return ("The UNet returns a UNet2DOutput; the prediction is its `.sample`: "
                "model(x_t, t).sample")
    if "double" in str(error).lower():
        return "Keep x0's dtype (float64 here, as the model is): no .float() on the inputs."
    return None


def require_gradients(loss, model, reference_grads):
    """The right value must also carry the gradients that loss.backward() in the next cell needs."""
    if not loss.requires_grad:
        raise ExerciseError("training_loss: the value is right, but it was computed under "
                            "no_grad / detached: the loss must carry gradients for "
                            "loss.backward(). No torch.no_grad(), .detach() or .item().")
    if any(p.grad is not None for p in model.parameters()):
        raise ExerciseError("training_loss: return the loss without calling loss.backward(); "
                            "the training loop does that.")
    loss.backward()
    if not all(torch.allclose(p.grad, g, rtol=1e-3, atol=1e-6)
               for p, g in zip(model.parameters(), reference_grads, strict=True)):
        raise ExerciseError("training_loss: the value is right but its gradients are not: "
                            "compute it from model(x_t, t).sample, nothing detached.")


def check_training_loss(fn, hidden=False):
    """fn(model, scheduler, x0, noise, t) -> the scalar MSE between ε_θ(x_t, t) and ε, with grads.

    Hidden cases: other schedules, scheduler classes, T, batch sizes, image sizes and float64."""
    yours = guard("training_loss", fn, losses.diffusion_loss, losses.flow_matching_loss,
                  losses.target_for, reference_training_loss, explain=explain_training_loss)

    @torch.enable_grad()  # as in the training loop, even if the check runs under no_grad
    def case(beta_schedule, t, seed, size=8, dtype=torch.float32, kind=DDPMScheduler, T=1000,
             channels=(16, 32)):
        model = tiny_unet(channels, seed=seed).to(dtype)
        scheduler, t = kind(T, beta_schedule=beta_schedule), torch.tensor(t)
        x0 = randn(len(t), 3, size, size, seed=seed).to(dtype)
        noise = randn(len(t), 3, size, size, seed=seed + 1).to(dtype)
        x_t = scheduler.add_noise(x0, noise, t)
        prediction = model(x_t, t).sample
        expected = F.mse_loss(prediction, noise)
        expected.backward()  # the reference's gradients, to compare yours with
        reference_grads = [p.grad for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        prediction, expected = prediction.detach(), expected.detach()
        with torch.no_grad():
            mistakes = {
                "you compared the prediction with x_0; an ε-prediction model (DDPM) is trained "
                "to recover the *noise*: F.mse_loss(noise_pred, noise).":
                    F.mse_loss(prediction, x0),
                "you compared the prediction with the noisy x_t; the target is the noise ε that "
                "went into it.": F.mse_loss(prediction, x_t),
                "the model must see the *noisy* images: x_t = scheduler.add_noise(x0, noise, t), "
                "then model(x_t, t).": F.mse_loss(model(x0, t).sample, noise),
                "you summed the squared errors; F.mse_loss averages them (reduction='mean').":
                    F.mse_loss(prediction, noise, reduction="sum"),
            }
        loss = yours(model, scheduler, x0.clone(), noise.clone(), t.clone())
        if isinstance(loss, (float, int)):
            raise ExerciseError("training_loss: you returned a Python number; .item() gives a "
                                "float, but loss.backward() in the next cell needs the tensor. "
                                "Return F.mse_loss(...) itself.")
        if torch.is_tensor(loss) and loss.dim() > 0:
            raise ExerciseError(f"training_loss: return one number (a 0-dim tensor), got shape "
                                f"{tuple(loss.shape)}; F.mse_loss averages over everything.")
        compare_with_mistakes("training_loss", loss, expected, mistakes,
                  "x_t = scheduler.add_noise(x0, noise, t); noise_pred = model(x_t, t).sample; "
                  "loss = F.mse_loss(noise_pred, noise).")
        require_gradients(loss, model, reference_grads)

    def hidden_cases(rng):
        def draw(dtype):
            schedule = rng.choice(BETA_SCHEDULES)
            kind, T = rng.choice((DDPMScheduler, DDIMScheduler)), rng.choice((100, 500, 1000))
            t = [rng.randrange(T) for _ in range(rng.randint(1, 4))]
            size, seed = rng.choice((4, 8)), rng.randrange(10_000)
            return lambda: case(schedule, t, seed, size, dtype, kind, T, channels=(8, 16))
        return [draw(torch.float32), draw(torch.float64)]

    return run_check("training_loss", fn,
                     lambda: case("linear", [0, 500, 999, 250], seed=0),
                     lambda: case("squaredcos_cap_v2", [10, 700], seed=2),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_training_loss)
