"""Chapter 03's exercise checkers: the reference answer passes, typical wrong answers fail with the
hint that names the mistake, and an untouched stub says "not implemented"."""

import pytest

from ddlearn.checks import ExerciseError, ch03


# --------------------------------------------------------------------------------------------------
# Reference answers (what the notebook's solution cells contain)
# --------------------------------------------------------------------------------------------------
def add_noise(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t].view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * noise


def ddim_step(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    x0_hat = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    return alpha_prod_t_prev.sqrt() * x0_hat + (1 - alpha_prod_t_prev).sqrt() * eps


def euler_step(eps, x, sigma, sigma_next):
    return x + (sigma_next - sigma) * eps


def stub(*args):
    raise NotImplementedError  # your code here


# --------------------------------------------------------------------------------------------------
# Typical wrong answers
# --------------------------------------------------------------------------------------------------
def add_noise_variances(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar_t * x0 + (1 - abar_t) * noise


def add_noise_one_minus_sqrt(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar_t.sqrt() * x0 + (1 - abar_t.sqrt()) * noise


def add_noise_no_broadcast(x0, noise, alphas_cumprod, t):
    abar_t = alphas_cumprod[t]  # (B,) against (B, C, H, W): a shape error
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * noise


def ddim_step_wrong_direction(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    x0_hat = (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    return alpha_prod_t_prev.sqrt() * x0_hat + (1 - alpha_prod_t).sqrt() * eps


def ddim_step_returns_x0(eps, x_t, alpha_prod_t, alpha_prod_t_prev):
    return (x_t - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()


def euler_step_wrong_sign(eps, x, sigma, sigma_next):
    return x + (sigma - sigma_next) * eps


def euler_step_scaled(eps, x, sigma, sigma_next):
    return x / (sigma**2 + 1) ** 0.5 + (sigma_next - sigma) * eps


@pytest.mark.parametrize("check, answer", [(ch03.check_add_noise, add_noise),
                                           (ch03.check_ddim_step, ddim_step),
                                           (ch03.check_euler_step, euler_step)])
def test_reference_answer_passes(check, answer, capsys):
    check(answer)  # a wrong answer raises ExerciseError
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, words", [
    (ch03.check_add_noise, add_noise_variances, "square roots"),
    (ch03.check_add_noise, add_noise_one_minus_sqrt, "not 1-√ᾱ_t"),
    (ch03.check_add_noise, add_noise_no_broadcast, "(B, 1, 1, 1)"),
    (ch03.check_ddim_step, ddim_step_wrong_direction, "ᾱ of the *previous* step"),
    (ch03.check_ddim_step, ddim_step_returns_x0, "you returned x̂_0 itself"),
    (ch03.check_euler_step, euler_step_wrong_sign, "*down* in σ"),
    (ch03.check_euler_step, euler_step_scaled, "scale_model_input"),
])
def test_typical_mistake_gets_its_hint(check, wrong, words):
    with pytest.raises(ExerciseError) as error:
        check(wrong)
    assert words in str(error.value)


@pytest.mark.parametrize("check", [ch03.check_add_noise, ch03.check_ddim_step,
                                   ch03.check_euler_step])
def test_stub_says_not_implemented(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(stub)


def test_an_unrecognised_error_still_fails_with_the_general_hint():
    def off_by_a_bit(eps, x, sigma, sigma_next):
        return euler_step(eps, x, sigma, sigma_next) * 1.01

    with pytest.raises(ExerciseError, match="x_next = x \\+ \\(σ_next - σ\\) d"):
        ch03.check_euler_step(off_by_a_bit)


def test_forgetting_return_is_reported():
    with pytest.raises(ExerciseError, match="forget `return`"):
        ch03.check_ddim_step(lambda eps, x_t, a_t, a_prev: None)
