"""Checkers for chapter 04 (training a diffusion model): your function against ddlearn.losses.

    from ddlearn.checks import ch04
    ch04.check_training_loss(loss)          # ‖ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)‖²  (DDPM eq. 14)
    ch04.check_logit_normal_timesteps(fn)   # t = round(sigmoid(n) (T-1)), n ~ N(0, 1)
    ch04.check_velocity(velocity)           # v = √ᾱ_t ε - √(1-ᾱ_t) x_0  (Salimans & Ho 2022)
    ch04.check_ema_update(ema_update)       # θ_ema ← d θ_ema + (1-d) θ, in place

Each check runs seeded cases through the `reference_*` answer and through yours (calling ddlearn's
own `diffusion_loss`, `sample_timesteps`, `target_for` or `EMA` fails: `ddlearn.checks.runner`),
and when yours is off it names the usual mistake your numbers match (the wrong target, a missing
sigmoid, a flipped sign, swapped weights). The loss must carry the model's gradients; the
timesteps must come from the generator given, with the exact frequencies of round(sigmoid(n) (T-1)).
"""

import math

import torch
import torch.nn.functional as F

from ddlearn import losses
from ddlearn.checks import ExerciseError, compare_with_mistakes, guard, randn, run_check, tiny_unet
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.training import EMA


# --------------------------------------------------------------------------------------------------
# Exercise 1: the training loss of one batch
# --------------------------------------------------------------------------------------------------
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
            schedule = rng.choice(("linear", "scaled_linear", "squaredcos_cap_v2"))
            kind, T = rng.choice((DDPMScheduler, DDIMScheduler)), rng.choice((100, 500, 1000))
            t = [rng.randrange(T) for _ in range(rng.randint(1, 4))]
            size, seed = rng.choice((4, 8)), rng.randrange(10_000)
            return lambda: case(schedule, t, seed, size, dtype, kind, T, channels=(8, 16))
        return [draw(torch.float32), draw(torch.float64)]

    return run_check("training_loss", fn,
                     lambda: case("linear", [0, 500, 999, 250], seed=0),
                     lambda: case("squaredcos_cap_v2", [10, 700], seed=2),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_training_loss)


# --------------------------------------------------------------------------------------------------
# Exercise 2: logit-normal timesteps
# --------------------------------------------------------------------------------------------------
def reference_logit_normal_timesteps(batch_size, num_train_timesteps, generator):
    """The answer the cells below use while yours is not solved: t = round(sigmoid(n) (T-1))."""
    n = torch.randn(batch_size, generator=generator)               # n ~ N(0, 1)
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def frequencies(cdf, edges):
    """P(u in each bin [edges[k], edges[k+1])) for u in (0, 1) with the given CDF."""
    bins = zip(edges[:-1], edges[1:], strict=True)
    return torch.tensor([cdf(b) - cdf(a) for a, b in bins], dtype=torch.double)


def logit_normal_cdf(u):
    """P(sigmoid(n) < u) = Φ(logit(u)) for n ~ N(0, 1)."""
    return 0.0 if u <= 0 else 1.0 if u >= 1 else \
        0.5 * (1 + math.erf(math.log(u / (1 - u)) / math.sqrt(2)))


def check_logit_normal_timesteps(fn, hidden=False):
    """fn(batch_size, num_train_timesteps, generator) -> t (B,) int64 in [0, T-1], logit-normal.

    Hidden cases: other batch sizes, T and seeds."""
    explain = lambda error: ("pass the generator by keyword: torch.randn(batch_size, "
                             "generator=generator)." if isinstance(error, TypeError) else None)
    yours = guard("logit_normal", fn, losses.sample_timesteps, losses.flow_sigmas,
                  reference_logit_normal_timesteps, explain=explain)

    def draw(batch_size, T, seed):
        t = yours(batch_size, T, torch.Generator().manual_seed(seed))
        if not torch.is_tensor(t):
            raise ExerciseError(f"logit_normal: return a tensor, got {type(t).__name__}")
        if t.shape != (batch_size,):
            raise ExerciseError(f"logit_normal: shape {tuple(t.shape)}, expected "
                                f"({batch_size},): one timestep per image.")
        if t.dtype != torch.long:
            raise ExerciseError(f"logit_normal: dtype {t.dtype}; timesteps index "
                                "alphas_cumprod, so round and convert: `.round().long()`.")
        if t.min() < 0 or t.max() > T - 1:
            raise ExerciseError(f"logit_normal: values from {t.min()} to {t.max()}, but "
                                f"t must lie in 0..{T - 1}. Squash n ~ N(0, 1) into (0, 1) "
                                f"with torch.sigmoid, then scale by (T - 1), not T.")
        return t

    def reproducible(batch_size, T, seed):
        with torch.random.fork_rng(devices=[]):  # torch's global generator, changed in between
            torch.manual_seed(seed + 1)
            first = draw(batch_size, T, seed)
            torch.manual_seed(seed + 2)
            again, other = draw(batch_size, T, seed), draw(batch_size, T, seed + 1)
        if not torch.equal(first, again):
            raise ExerciseError("logit_normal: the same seeded generator gave other t on a second "
                                "call: draw from the `generator` you are given, "
                                "torch.randn(batch_size, generator=generator), not torch's global "
                                "one, so that a training run can be repeated.")
        if torch.equal(first, other):
            raise ExerciseError("logit_normal: generators with different seeds gave the same t: "
                                "draw from the `generator` you are given (do not seed your own).")

    def distributed(T, seed, n=20_000):
        """Exact frequencies of each t (small T), which rounding and truncating tell apart."""
        counts = torch.bincount(draw(n, T, seed), minlength=T).double() / n
        rounding = [0.0] + [(k + 0.5) / (T - 1) for k in range(T - 1)] + [1.0]
        expected = frequencies(logit_normal_cdf, rounding)
        uniform = "they look uniform: draw n = torch.randn(batch_size, generator=generator), " \
                  "not torch.rand"
        mistakes = {
            "you truncated: .long() alone rounds down, so t = T-1 hardly ever comes up; "
            "round first: (torch.sigmoid(n) * (T - 1)).round().long()":
                frequencies(logit_normal_cdf, [k / (T - 1) for k in range(T)] + [1.0]),
            uniform: frequencies(lambda u: min(max(u, 0.0), 1.0), rounding),
            uniform + " (nor torch.randint)": torch.full((T,), 1 / T, dtype=torch.double),
        }
        if (counts - expected).abs().max() < 0.02:  # 0.02: > 5 standard errors of a frequency
            return
        for hint, wrong in mistakes.items():
            if (counts - wrong).abs().max() < 0.02:
                raise ExerciseError(f"logit_normal: with T = {T}, {hint}.")
        show = lambda p: ", ".join(f"{v:.3f}" for v in p.tolist())
        raise ExerciseError(f"logit_normal: with T = {T}, your t = 0..{T - 1} come up with "
                            f"frequencies {show(counts)}; round(sigmoid(n) (T-1)) gives "
                            f"{show(expected)}. t = (torch.sigmoid(n) * (T - 1)).round().long(), "
                            f"n = torch.randn(batch_size, generator=generator).")

    def hidden_cases(rng):
        b, T, seed = rng.randint(4, 40), rng.choice((20, 200, 2000)), rng.randrange(10_000)
        small_T, other_seed = rng.choice((4, 6, 8)), rng.randrange(10_000)
        return [lambda: reproducible(b, T, seed), lambda: distributed(small_T, other_seed)]

    return run_check("logit_normal", fn,
                     lambda: reproducible(8, 1000, seed=0),
                     lambda: reproducible(64, 50, seed=3),
                     lambda: distributed(5, seed=1),
                     hidden=hidden, hidden_cases=hidden_cases,
                     reference=reference_logit_normal_timesteps)


# --------------------------------------------------------------------------------------------------
# Exercise 3: the v-prediction target
# --------------------------------------------------------------------------------------------------
def reference_velocity(x0, noise, alphas_cumprod, t):
    """The answer the cells below use while yours is not solved: v = √ᾱ_t ε - √(1-ᾱ_t) x_0."""
    alpha_bar = alphas_cumprod[t].view(-1, *[1] * (x0.ndim - 1))  # (B,) -> (B, 1, 1, 1)
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0


def check_velocity(fn, hidden=False):
    """fn(x0, noise, alphas_cumprod, t) -> v = √ᾱ_t ε - √(1-ᾱ_t) x_0 for a batch.

    Hidden cases: other schedules, batch sizes, image sizes and float64."""
    explain = lambda error: ("alphas_cumprod[t] has shape (B,): reshape it to (B, 1, 1, 1)."
                             if "size of tensor" in str(error) else None)
    yours = guard("velocity", fn, losses.target_for, DDPMScheduler.get_velocity, reference_velocity,
                  explain=explain)

    def case(beta_schedule, t, seed, size=8, dtype=torch.float32):
        scheduler = DDPMScheduler(beta_schedule=beta_schedule, prediction_type="v_prediction")
        abar, t = scheduler.alphas_cumprod.to(dtype), torch.tensor(t)
        x0 = randn(len(t), 3, size, size, seed=seed).to(dtype)
        noise = randn(len(t), 3, size, size, seed=seed + 1).to(dtype)
        expected = losses.target_for(scheduler, x0, noise, t)
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
        compare_with_mistakes("velocity", yours(x0.clone(), noise.clone(), abar.clone(),
                                                t.clone()), expected, mistakes,
                  "v = √ᾱ_t ε - √(1-ᾱ_t) x_0 with ᾱ_t = alphas_cumprod[t].view(-1, 1, 1, 1).")

    def hidden_cases(rng):
        def draw(dtype):
            schedule = rng.choice(("linear", "scaled_linear", "squaredcos_cap_v2"))
            t = [rng.randrange(1000) for _ in range(rng.randint(1, 5))]
            size, seed = rng.choice((4, 6, 16)), rng.randrange(10_000)
            return lambda: case(schedule, t, seed, size, dtype)
        return [draw(torch.float32), draw(torch.float64)]

    return run_check("velocity", fn,
                     lambda: case("linear", [0, 400, 999], seed=0),
                     lambda: case("squaredcos_cap_v2", [5, 500], seed=2),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_velocity)


# --------------------------------------------------------------------------------------------------
# Exercise 4: the EMA update
# --------------------------------------------------------------------------------------------------
def reference_ema_update(ema_params, params, decay):
    """The answer the cells below use while yours is not solved: θ_ema ← d θ_ema + (1-d) θ."""
    for ema_p, p in zip(ema_params, params, strict=True):
        ema_p.lerp_(p, 1 - decay)                   # = decay * ema_p + (1 - decay) * p


def check_ema_update(fn, hidden=False):
    """fn(ema_params, params, decay) updates each tensor of ema_params in place.

    Hidden cases: more tensors, other shapes, decays and float64."""
    in_place = "`e.mul_(decay).add_(p, alpha=1 - decay)` or `e.lerp_(p, 1 - decay)`"
    explain = lambda error: (f"ema_params and params are lists of tensors: loop over "
                             f"zip(ema_params, params) and update each, {in_place}."
                             if "list" in str(error) else None)
    yours = guard("ema_update", fn, EMA.update, reference_ema_update, explain=explain)

    def case(decay, seed, shapes=((4, 3), (5,)), dtype=torch.float32):
        params = [randn(*shape, seed=seed + i).to(dtype) for i, shape in enumerate(shapes)]
        ema = [randn(*shape, seed=seed + 50 + i).to(dtype) for i, shape in enumerate(shapes)]
        before = [e.clone() for e in ema]
        with torch.no_grad():
            returned = yours(ema, [p.clone() for p in params], decay)
        if all(torch.equal(e, b) for e, b in zip(ema, before, strict=True)):
            extra = (f" You returned new tensors: update the ones you were given, e.g. {in_place}."
                     if returned is not None else f" (`e = ...` only renames; {in_place} changes "
                     f"the tensor itself.)")
            raise ExerciseError(f"ema_update: the EMA tensors did not change.{extra}")
        for i, (e, b, p) in enumerate(zip(ema, before, params, strict=True)):
            mistakes = {"the weights are swapped: keep `decay` of the *EMA* and mix in only "
                        "(1 - decay) of the new weights.": decay * p + (1 - decay) * b,
                        "you copied the new weights; the EMA moves only (1 - decay) of the way "
                        "towards them.": p}
            compare_with_mistakes(f"ema_update[{i}]", e, decay * b + (1 - decay) * p, mistakes,
                      "θ_ema ← decay·θ_ema + (1 - decay)·θ, in place, for every tensor.")

    def hidden_cases(rng):
        def draw(dtype):
            shapes = [tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 4)))
                      for _ in range(rng.randint(3, 5))]
            decay = rng.choice((0.5, 0.95, 0.9999, round(rng.uniform(0.8, 0.99), 3)))
            seed = rng.randrange(10_000)
            return lambda: case(decay, seed, shapes, dtype)
        return [draw(torch.float32), draw(torch.float64)]

    return run_check("ema_update", fn, lambda: case(0.9, seed=0), lambda: case(0.999, seed=5),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_ema_update)
