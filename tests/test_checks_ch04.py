"""Chapter 04's checks are honest: the notebook's solutions pass the public and the hidden cases;
an answer that calls ddlearn's own implementation, hard-codes the public cases, or breaks what the
notebook's next cells need (a loss that carries gradients, timesteps from the generator) fails,
with a hint that names the problem; a failing answer in keep-going mode hands back the reference.
"""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import ddlearn.checks.runner
from ddlearn.checks import ExerciseError, ch04, tiny_unet
from ddlearn.losses import diffusion_loss, flow_sigmas, sample_timesteps, target_for
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.training import EMA


# --------------------------------------------------------------------------------------------------
# The notebook's solution cells
# --------------------------------------------------------------------------------------------------
def training_loss(model, scheduler, x0, noise, t):
    x_t = scheduler.add_noise(x0, noise, t)         # the noisy images
    noise_pred = model(x_t, t).sample               # the model's guess of the noise
    return F.mse_loss(noise_pred, noise)


def ema_update(ema_params, params, decay):
    for ema_p, p in zip(ema_params, params, strict=True):
        ema_p.lerp_(p, 1 - decay)                   # = decay * ema_p + (1 - decay) * p


def velocity(x0, noise, alphas_cumprod, t):
    alpha_bar = alphas_cumprod[t].view(-1, 1, 1, 1)     # (B,) -> (B, 1, 1, 1)
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0


def logit_normal_timesteps(batch_size, num_train_timesteps, generator):
    n = torch.randn(batch_size, generator=generator)
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


# other correct answers
def loss_written_out(model, scheduler, x0, noise, t):
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1).to(x0.dtype)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return ((model(x_t, t).sample - noise) ** 2).mean()


def ema_mul_add(ema_params, params, decay):
    for e, p in zip(ema_params, params, strict=True):
        e.mul_(decay).add_(p, alpha=1 - decay)


def logit_normal_torch_normal(batch_size, num_train_timesteps, generator):
    n = torch.normal(0.0, 1.0, (batch_size,), generator=generator)
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def logit_normal_inverse_cdf(batch_size, num_train_timesteps, generator):
    """Other numbers than torch.randn's, the same distribution: n = Φ⁻¹(u)."""
    u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
    n = math.sqrt(2) * torch.erfinv(2 * u - 1)
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


CHECKS = {ch04.check_training_loss: (training_loss, loss_written_out),
          ch04.check_ema_update: (ema_update, ema_mul_add),
          ch04.check_velocity: (velocity,),
          ch04.check_logit_normal_timesteps: (logit_normal_timesteps, logit_normal_torch_normal,
                                              logit_normal_inverse_cdf)}
SOLUTIONS = [pytest.param(check, answer, id=f"{check.__name__}-{answer.__name__}")
             for check, answers in CHECKS.items() for answer in answers]


@pytest.mark.parametrize("hidden", [False, True, 7])
@pytest.mark.parametrize("check, answer", SOLUTIONS)
def test_solution_passes_public_and_hidden_cases(check, answer, hidden, capsys):
    assert check(answer, hidden=hidden) is answer
    assert "✅" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Answers that call ddlearn's own implementation
# --------------------------------------------------------------------------------------------------
def ema_through_EMA_class(ema_params, params, decay):
    ema = EMA.__new__(EMA)
    ema.decay, ema.num_updates = decay, 10**9  # no warm-up: d = decay
    ema.model = SimpleNamespace(parameters=lambda: ema_params)
    ema.update(SimpleNamespace(parameters=lambda: params))


CHEATS = {
    ch04.check_training_loss: [
        lambda m, s, x0, noise, t: diffusion_loss(m, s, x0, torch.Generator().manual_seed(0)),
        lambda m, s, x0, noise, t: F.mse_loss(m(s.add_noise(x0, noise, t), t).sample,
                                              target_for(s, x0, noise, t)),
        lambda *args: ch04.reference_training_loss(*args)],
    ch04.check_logit_normal_timesteps: [
        lambda b, T, g: sample_timesteps(b, T, g, "logit_normal"),
        lambda b, T, g: (flow_sigmas(b, g) * (T - 1)).round().long(),
        lambda *args: ch04.reference_logit_normal_timesteps(*args)],
    ch04.check_velocity: [
        lambda x0, noise, abar, t: target_for(
            DDPMScheduler(prediction_type="v_prediction"), x0, noise, t),
        lambda *args: ch04.reference_velocity(*args)],
    ch04.check_ema_update: [ema_through_EMA_class,
                            lambda *args: ch04.reference_ema_update(*args)],
}


@pytest.mark.parametrize("check, cheat", [pytest.param(c, f, id=f"{c.__name__}-{i}")
                                          for c, fs in CHEATS.items() for i, f in enumerate(fs)])
def test_calling_ddlearns_implementation_fails(check, cheat):
    with pytest.raises(ExerciseError, match="ddlearn's own"):
        check(cheat)


# --------------------------------------------------------------------------------------------------
# Answers that hard-code the public cases: they pass those, the hidden ones catch them
# --------------------------------------------------------------------------------------------------
def loss_only_float32(model, scheduler, x0, noise, t):
    x_t = scheduler.add_noise(x0, noise, t).float()
    return F.mse_loss(model(x_t, t).sample, noise)


def logit_normal_public_T_only(batch_size, num_train_timesteps, generator):
    scale = {1000: 999, 50: 49, 5: 4}[num_train_timesteps]
    return (torch.sigmoid(torch.randn(batch_size, generator=generator)) * scale).round().long()


def velocity_8_pixels_only(x0, noise, alphas_cumprod, t):
    alpha_bar = alphas_cumprod[t].view(-1, 1, 1, 1).expand(-1, 3, 8, 8)
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0


def ema_first_two_tensors_only(ema_params, params, decay):
    for i in range(2):
        ema_params[i].lerp_(params[i], 1 - decay)


HARD_CODED = [(ch04.check_training_loss, loss_only_float32, "Keep x0's dtype"),
              (ch04.check_logit_normal_timesteps, logit_normal_public_T_only, "KeyError"),
              (ch04.check_velocity, velocity_8_pixels_only, "must match the size"),
              (ch04.check_ema_update, ema_first_two_tensors_only, "values differ")]


@pytest.mark.parametrize("check, answer, words", HARD_CODED)
def test_hard_coded_answer_passes_public_but_fails_hidden(check, answer, words):
    check(answer)
    for hidden in (True, 7):
        with pytest.raises(ExerciseError, match=words):
            check(answer, hidden=hidden)


# --------------------------------------------------------------------------------------------------
# Wrong answers a learner writes, and the hint each gets
# --------------------------------------------------------------------------------------------------
def loss_item(model, scheduler, x0, noise, t):
    return training_loss(model, scheduler, x0, noise, t).item()


def loss_no_grad(model, scheduler, x0, noise, t):
    with torch.no_grad():
        return training_loss(model, scheduler, x0, noise, t)


def loss_detached(model, scheduler, x0, noise, t):
    return training_loss(model, scheduler, x0, noise, t).detach()


def loss_prediction_detached(model, scheduler, x0, noise, t):
    return F.mse_loss(model(scheduler.add_noise(x0, noise, t), t).sample.detach(), noise)


def loss_calls_backward(model, scheduler, x0, noise, t):
    loss = training_loss(model, scheduler, x0, noise, t)
    loss.backward()
    return loss


def loss_summed(model, scheduler, x0, noise, t):
    x_t = scheduler.add_noise(x0, noise, t)
    return F.mse_loss(model(x_t, t).sample, noise, reduction="sum")


def loss_gradient_free(model, scheduler, x0, noise, t):
    loss = training_loss(model, scheduler, x0, noise, t).detach()
    return loss + 0 * sum(p.sum() for p in model.parameters())


def loss_without_sample(model, scheduler, x0, noise, t):
    return F.mse_loss(model(scheduler.add_noise(x0, noise, t), t), noise)


def logit_normal_global_rng(batch_size, num_train_timesteps, generator):
    n = torch.randn(batch_size)  # the generator is ignored: not reproducible
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def logit_normal_distributions(batch_size, num_train_timesteps, generator):
    n = torch.distributions.Normal(0.0, 1.0).sample((batch_size,))
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def logit_normal_own_seed(batch_size, num_train_timesteps, generator):
    n = torch.randn(batch_size, generator=torch.Generator().manual_seed(0))
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def logit_normal_truncated(batch_size, num_train_timesteps, generator):
    n = torch.randn(batch_size, generator=generator)
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).long()


def logit_normal_randint(batch_size, num_train_timesteps, generator):
    return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator)


def logit_normal_wide(batch_size, num_train_timesteps, generator):
    n = 2 * torch.randn(batch_size, generator=generator)  # std 2, not 1
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def logit_normal_generator_positional(batch_size, num_train_timesteps, generator):
    n = torch.randn(batch_size, generator)
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def ema_rebinds(ema_params, params, decay):
    for e, p in zip(ema_params, params, strict=True):
        e = decay * e + (1 - decay) * p  # noqa: F841 (the mistake: a new tensor, then dropped)


def ema_on_the_lists(ema_params, params, decay):
    ema_params.mul_(decay).add_(params, alpha=1 - decay)


MISTAKES = [
    (ch04.check_training_loss, loss_item, ".item() gives a float"),
    (ch04.check_training_loss, loss_no_grad, "computed under no_grad / detached: the loss must "
                                             "carry gradients for loss.backward()"),
    (ch04.check_training_loss, loss_detached, "computed under no_grad / detached"),
    (ch04.check_training_loss, loss_prediction_detached, "computed under no_grad / detached"),
    (ch04.check_training_loss, loss_calls_backward, "without calling loss.backward()"),
    (ch04.check_training_loss, loss_summed, "averages them"),
    (ch04.check_training_loss, loss_gradient_free, "its gradients are not"),
    (ch04.check_training_loss, loss_without_sample, ".sample"),
    (ch04.check_logit_normal_timesteps, logit_normal_global_rng, "same seeded generator"),
    (ch04.check_logit_normal_timesteps, logit_normal_distributions, "same seeded generator"),
    (ch04.check_logit_normal_timesteps, logit_normal_own_seed, "different seeds gave the same"),
    (ch04.check_logit_normal_timesteps, logit_normal_truncated, "you truncated"),
    (ch04.check_logit_normal_timesteps, logit_normal_randint, "look uniform"),
    (ch04.check_logit_normal_timesteps, logit_normal_wide, "come up with frequencies"),
    (ch04.check_logit_normal_timesteps, logit_normal_generator_positional, "by keyword"),
    (ch04.check_ema_update, ema_rebinds, "only renames"),
    (ch04.check_ema_update, ema_on_the_lists, "lists of tensors"),
]


@pytest.mark.parametrize("check, wrong, words", MISTAKES, ids=[m[1].__name__ for m in MISTAKES])
def test_wrong_answer_gets_its_hint(check, wrong, words):
    torch.manual_seed(0)
    with pytest.raises(ExerciseError) as error:
        check(wrong)
    assert words in str(error.value)


# --------------------------------------------------------------------------------------------------
# The references: what the solutions compute, for the inputs the notebook's later cells pass
# --------------------------------------------------------------------------------------------------
def test_reference_training_loss_is_the_solution_and_carries_gradients():
    model = tiny_unet()
    for scheduler in (DDPMScheduler(beta_schedule="squaredcos_cap_v2"), DDIMScheduler()):
        g = torch.Generator().manual_seed(0)
        x0, noise = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
        t = torch.randint(0, 1000, (3,), generator=g)
        grads = []
        for fn in (training_loss, ch04.reference_training_loss):
            model.zero_grad(set_to_none=True)
            loss = fn(model, scheduler, x0, noise, t)
            loss.backward()
            grads.append([p.grad.clone() for p in model.parameters()])
            assert loss.dim() == 0
        assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_reference_timesteps_are_the_solutions_and_sample_timesteps():
    for batch_size, T in [(20_000, 1000), (8, 50)]:
        expected = logit_normal_timesteps(batch_size, T, torch.Generator().manual_seed(3))
        ours = ch04.reference_logit_normal_timesteps(batch_size, T,
                                                     torch.Generator().manual_seed(3))
        library = sample_timesteps(batch_size, T, torch.Generator().manual_seed(3), "logit_normal")
        assert torch.equal(ours, expected) and torch.equal(library, expected)


def test_reference_velocity_and_ema_are_the_solutions():
    abar = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod
    x0, noise = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    t = torch.tensor([10, 500, 990])
    assert torch.equal(ch04.reference_velocity(x0, noise, abar, t), velocity(x0, noise, abar, t))
    ema, model = [torch.randn(4, 3), torch.randn(5)], [torch.randn(4, 3), torch.randn(5)]
    mine = [e.clone() for e in ema]
    ch04.reference_ema_update(ema, model, 0.995)
    ema_update(mine, model, 0.995)
    assert all(torch.equal(a, b) for a, b in zip(ema, mine, strict=True))


# --------------------------------------------------------------------------------------------------
# Keep-going mode: a failing answer prints ❌ and the notebook continues with the reference
# --------------------------------------------------------------------------------------------------
KEEP_GOING = [(ch04.check_training_loss, loss_item, ch04.reference_training_loss),
              (ch04.check_logit_normal_timesteps, logit_normal_truncated,
               ch04.reference_logit_normal_timesteps),
              (ch04.check_velocity, lambda x0, noise, abar, t: -velocity(x0, noise, abar, t),
               ch04.reference_velocity),
              (ch04.check_ema_update, ema_rebinds, ch04.reference_ema_update)]


@pytest.mark.parametrize("check, wrong, reference", KEEP_GOING,
                         ids=[k[0].__name__ for k in KEEP_GOING])
def test_keep_going_hands_back_the_reference(check, wrong, reference, monkeypatch, capsys):
    monkeypatch.setattr(ddlearn.checks.runner, "KEEP_GOING", True)
    assert check(wrong) is reference
    assert "❌" in capsys.readouterr().err
