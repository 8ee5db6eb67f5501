"""Chapter 02's checks: the notebook's solutions pass the public and hidden cases; answers that call
ddlearn's own implementation, hard-code the public cases or make a usual mistake fail, each with
its hint; and in keep-going mode a failing answer is replaced by the reference answer."""

import numpy as np
import pytest
import torch

from ddlearn.checks import ExerciseError, ch02, runner, tiny_unet
from ddlearn.pipelines.ddpm import DDIMPipeline, DDPMPipeline
from ddlearn.schedulers import common
from ddlearn.schedulers.ddim import DDIMScheduler
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.schedulers.euler import EulerDiscreteScheduler
from ddlearn.schedulers.schedules import spaced_timesteps


# the notebook's solution cells -------------------------------------------------------------------
def predict_x0(x_t, eps, alpha_prod_t):
    return (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()  # DDPM eq. (15)


def timesteps(num_inference_steps, num_train_timesteps, spacing):
    n, T = num_inference_steps, num_train_timesteps
    if spacing == "leading":
        steps = np.arange(0, n) * (T // n)
    elif spacing == "trailing":
        steps = np.round(np.arange(T, 0, -T / n)) - 1
    else:  # "linspace"
        steps = np.round(np.linspace(0, T - 1, n))
    return np.sort(steps)[::-1].astype(np.int64)  # descending: from noise to image


@torch.no_grad()
def sample(unet, scheduler, x_T, num_inference_steps, generator=None):
    scheduler.set_timesteps(num_inference_steps)
    x = x_T * scheduler.init_noise_sigma  # σ_max for σ-space samplers, 1 for DDPM/DDIM
    for t in scheduler.timesteps:
        noise_pred = unet(scheduler.scale_model_input(x, t), t).sample
        x = scheduler.step(noise_pred, t, x, generator=generator).prev_sample
    return x


SOLUTIONS = [(ch02.check_predict_x0, predict_x0), (ch02.check_timesteps, timesteps),
             (ch02.check_sample, sample)]


@pytest.mark.parametrize("hidden", [False, True, 7])
@pytest.mark.parametrize("check, solution", SOLUTIONS, ids=lambda x: getattr(x, "__name__", x))
def test_solution_passes_public_and_hidden_cases(check, solution, hidden, capsys):
    assert check(solution, hidden=hidden) is solution
    assert "✅" in capsys.readouterr().out


# answers that call ddlearn's own implementation ---------------------------------------------------
def trailing_answer(wrong):
    """The solution, with `wrong(n, T)` as its 'trailing' recipe."""
    return lambda n, T, spacing: wrong(n, T) if spacing == "trailing" else timesteps(n, T, spacing)


def timesteps_by_scheduler(n, T, spacing):
    scheduler = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    scheduler.set_timesteps(n)
    return scheduler.timesteps


def predict_x0_by_step(x_t, eps, alpha_prod_t):
    scheduler = DDPMScheduler(clip_sample=False)
    scheduler.alphas_cumprod = torch.full((1000,), alpha_prod_t.item())
    return scheduler.step(eps, 10, x_t).pred_original_sample


def sample_by_pipeline(unet, scheduler, x_T, n, generator=None):
    return DDPMPipeline(unet, scheduler)(len(x_T), generator, n, output_type="pt").images


def sample_by_ddim_pipeline(unet, scheduler, x_T, n, generator=None):
    pipe = DDIMPipeline(unet, scheduler)
    return pipe(len(x_T), generator, num_inference_steps=n, output_type="pt").images


CALLS_DDLEARN = [
    (ch02.check_predict_x0, lambda *args: ch02.reference_predict_x0(*args), "reference_"),
    (ch02.check_predict_x0, predict_x0_by_step, "DDPMScheduler.step"),
    (ch02.check_predict_x0, lambda x_t, eps, a: common.predict_x0(eps, x_t, a.sqrt(),
                                                                  (1 - a).sqrt(), "epsilon"),
     "predict_x0"),
    (ch02.check_timesteps, lambda *args: ch02.reference_timesteps(*args), "reference_"),
    (ch02.check_timesteps, lambda *args: spaced_timesteps(*args), "spaced_timesteps"),
    (ch02.check_timesteps, timesteps_by_scheduler, "DDIMScheduler.set_timesteps"),
    (ch02.check_sample, lambda *args: ch02.reference_sample(*args), "reference_sample"),
    (ch02.check_sample, sample_by_pipeline, "DDPMPipeline.__call__"),
    (ch02.check_sample, sample_by_ddim_pipeline, "DDIMPipeline.__call__"),
]


@pytest.mark.parametrize("check, answer, qualname", CALLS_DDLEARN)
def test_calling_ddlearn_own_implementation_fails(check, answer, qualname):
    with pytest.raises(ExerciseError, match="ddlearn's own") as error:
        check(answer)
    assert qualname in str(error.value)


# answers that hard-code the public cases ----------------------------------------------------------
PUBLIC_TIMESTEPS = {(n, T, s): timesteps(n, T, s) for n, T in ((10, 1000), (6, 1000), (7, 1000),
                                                                (3, 50)) for s in ch02.SPACINGS}


@torch.no_grad()
def sample_for_euler_only(unet, scheduler, x_T, num_inference_steps, generator=None):
    """Scales only when the scheduler is Euler: the public schedulers, not Heun or LMS."""
    scheduler.set_timesteps(num_inference_steps)
    euler = isinstance(scheduler, EulerDiscreteScheduler)
    x = x_T * scheduler.init_noise_sigma if euler else x_T
    for t in scheduler.timesteps:
        noise_pred = unet(scheduler.scale_model_input(x, t) if euler else x, t).sample
        x = scheduler.step(noise_pred, t, x, generator=generator).prev_sample
    return x


HARD_CODED = [
    (ch02.check_predict_x0, lambda x_t, eps, a: predict_x0(x_t.float(), eps.float(), a.float())),
    (ch02.check_timesteps, lambda n, T, spacing: PUBLIC_TIMESTEPS[n, T, spacing]),
    (ch02.check_sample, sample_for_euler_only),
]


@pytest.mark.parametrize("check, answer", HARD_CODED)
def test_hard_coded_answer_passes_public_but_not_hidden(check, answer):
    check(answer)
    for hidden in (True, 7):
        with pytest.raises(ExerciseError):
            check(answer, hidden=hidden)


# usual mistakes, each with its own hint -----------------------------------------------------------
down = lambda n, T: np.arange(T, 0, -T / n)
MISTAKES = [
    (ch02.check_predict_x0, lambda x_t, eps, a: (x_t - (1 - a).sqrt() * eps) / a,
     "you divided by ᾱ_t"),
    (ch02.check_predict_x0, lambda x_t, eps, a: (x_t - (1 - a.item()).sqrt() * eps) / a.sqrt(),
     "0-d tensor"),
    (ch02.check_timesteps, trailing_answer(lambda n, T: np.floor(down(n, T)) - 1),
     "you rounded them down (np.floor"),
    (ch02.check_timesteps, trailing_answer(lambda n, T: (down(n, T) - 1).astype(int)),
     "astype(int) all round down"),
    (ch02.check_timesteps, trailing_answer(lambda n, T: np.ceil(down(n, T)) - 1), "not up"),
    (ch02.check_timesteps, trailing_answer(lambda n, T: np.arange(T, 0, -round(T / n)) - 1),
     "you rounded the step size T / n first"),
    (ch02.check_timesteps, trailing_answer(lambda n, T: np.arange(T, 0, -(T // n))[:n] - 1),
     "the whole number T // n (the 'leading' stride)"),
    (ch02.check_timesteps, trailing_answer(lambda n, T: np.round(down(n, T))), "ends at T-1"),
    (ch02.check_timesteps, lambda n, T, spacing: (np.round(np.arange(n) * T / n)[::-1]
                                                  if spacing == "leading" else
                                                  timesteps(n, T, spacing)),
     "you stepped by T / n and rounded"),
    (ch02.check_timesteps, lambda n, T, spacing: [t for t in range(T, 0, -T / n)],
     "np.arange accepts a float step"),
]


@pytest.mark.parametrize("check, wrong, words", MISTAKES)
def test_usual_mistake_gets_its_own_hint(check, wrong, words):
    with pytest.raises(ExerciseError) as error:
        check(wrong)
    assert words in str(error.value)
    assert "more than one mistake" not in str(error.value)


def test_trailing_mistakes_with_equal_numbers_share_a_message_true_of_each():
    """For 3 of 1000 steps, rounding up and rounding the step first give the same numbers."""
    messages = list(ch02.timesteps._timestep_mistakes(3, 1000, "trailing"))
    shared = [m for m in messages if "more than one mistake" in m]
    assert len(shared) == 1 and "np.ceil" in shared[0] and "step size" in shared[0]
    assert len(messages) == 3  # off by one, floor, and the shared one


def loop(step_output=True, unet_output=True, generator_by_name=True, set_timesteps=True):
    @torch.no_grad()
    def wrong_sample(unet, scheduler, x_T, num_inference_steps, generator=None):
        if set_timesteps:
            scheduler.set_timesteps(num_inference_steps)
        x = x_T * scheduler.init_noise_sigma
        for t in scheduler.timesteps[:num_inference_steps]:
            out = unet(scheduler.scale_model_input(x, t), t)
            out = out.sample if unet_output else out
            kwargs = {"generator": generator} if generator_by_name else {}
            x = scheduler.step(out, t, x, *([] if generator_by_name else [generator]), **kwargs)
            x = x.prev_sample if step_output else x
        return x

    return wrong_sample


@pytest.mark.parametrize("wrong, words", [
    (loop(unet_output=False), "unet(...).sample"),
    (loop(step_output=False), "its `.prev_sample`"),
    (loop(generator_by_name=False), "generator=generator"),
    (loop(set_timesteps=False), "set_timesteps(num_inference_steps)"),
])
def test_sampling_loop_errors_get_a_hint(wrong, words):
    with pytest.raises(ExerciseError) as error:
        ch02.check_sample(wrong)
    assert words in str(error.value)


# the reference answers and keep-going mode --------------------------------------------------------
def test_reference_answers_equal_the_solutions_on_the_notebook_inputs():
    scheduler = DDPMScheduler()
    x_t, eps = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    abar_t = scheduler.alphas_cumprod[500]  # a 0-d tensor, as cell "x0_hat = predict_x0(...)"
    assert torch.equal(ch02.reference_predict_x0(x_t, eps, abar_t), predict_x0(x_t, eps, abar_t))
    for n, T, spacing in [(10, 1000, s) for s in ch02.SPACINGS] + [(25, 500, "trailing")]:
        assert np.array_equal(ch02.reference_timesteps(n, T, spacing), timesteps(n, T, spacing))
    unet = tiny_unet((8, 16), layers_per_block=1, seed=0)
    x_T = torch.randn(2, 3, 16, 16)
    for scheduler_cls in (DDPMScheduler, EulerDiscreteScheduler):  # the notebook: Euler, no gen.
        generator = lambda: torch.Generator().manual_seed(0)
        ours = ch02.reference_sample(unet, scheduler_cls(), x_T, 3, generator())
        torch.testing.assert_close(ours, sample(unet, scheduler_cls(), x_T, 3, generator()))


@pytest.mark.parametrize("check, reference, wrong", [
    (ch02.check_predict_x0, ch02.reference_predict_x0, lambda x_t, eps, a: x_t),
    (ch02.check_timesteps, ch02.reference_timesteps, lambda n, T, spacing: np.arange(n)),
    (ch02.check_sample, ch02.reference_sample, lambda unet, scheduler, x_T, *args: x_T),
])
def test_keep_going_returns_the_reference_and_reports(check, reference, wrong, monkeypatch,
                                                      capsys):
    monkeypatch.setattr(runner, "KEEP_GOING", True)
    assert check(wrong) is reference
    assert "❌" in capsys.readouterr().err
