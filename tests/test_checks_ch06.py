"""Chapter 06's checks are honest: the notebook's solutions pass the public and the hidden cases;
an answer that calls ddlearn's own implementation or fits only the public cases fails; each
usual mistake gets its own hint; keep-going mode hands back the reference."""

import pytest
import torch
import torch.nn.functional as F

import ddlearn.checks.runner
from ddlearn import dreambooth, lora
from ddlearn.checks import ExerciseError, ch06


# --------------------------------------------------------------------------------------------------
# The notebook's solution cells, and other correct answers
# --------------------------------------------------------------------------------------------------
def lora_forward(x, weight, bias, lora_A, lora_B, lora_alpha, r, scale=1.0):
    h = F.linear(x, weight, bias)                            # W₀ x + b
    return h + scale * (lora_alpha / r) * F.linear(F.linear(x, lora_A), lora_B)


def lora_forward_matmul(x, weight, bias, lora_A, lora_B, lora_alpha, r, scale=1.0):
    h = x @ (weight + scale * lora_alpha / r * lora_B @ lora_A).T
    return h if bias is None else h + bias


def prior_preservation_loss(model_pred, target, prior_loss_weight):
    pred, pred_prior = model_pred.chunk(2)
    target, target_prior = target.chunk(2)
    return F.mse_loss(pred, target) + prior_loss_weight * F.mse_loss(pred_prior, target_prior)


def prior_loss_by_index(model_pred, target, prior_loss_weight):
    b = len(model_pred) // 2
    inst = ((model_pred[:b] - target[:b]) ** 2).mean()
    return inst + prior_loss_weight * ((model_pred[b:] - target[b:]) ** 2).mean()


def merge_lora(weight, lora_A, lora_B, lora_alpha, r, scale=1.0):
    return weight + scale * (lora_alpha / r) * (lora_B @ lora_A)


def merge_lora_einsum(weight, lora_A, lora_B, lora_alpha, r, scale=1.0):
    update = torch.einsum("or,ri->oi", lora_B, lora_A)
    return weight.clone().add_(update, alpha=scale * lora_alpha / r)


CHECKS = {ch06.check_lora_forward: (lora_forward, lora_forward_matmul),
          ch06.check_prior_preservation_loss: (prior_preservation_loss, prior_loss_by_index),
          ch06.check_merge_lora: (merge_lora, merge_lora_einsum)}
SOLUTIONS = [pytest.param(check, answer, id=f"{check.__name__}-{answer.__name__}")
             for check, answers in CHECKS.items() for answer in answers]


@pytest.mark.parametrize("hidden", [False, True, 7])
@pytest.mark.parametrize("check, answer", SOLUTIONS)
def test_solution_passes_public_and_hidden_cases(check, answer, hidden, capsys):
    assert check(answer, hidden=hidden) is answer
    assert "✅" in capsys.readouterr().out


def test_references_agree_with_the_library():
    """The checks' references are what ddlearn's LoRALinear and DreamBooth loss compute."""
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    layer = lora.LoRALinear(base, r=3, lora_alpha=6)
    torch.nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(4, 6)
    args = (layer.weight, layer.bias, layer.lora_A.weight, layer.lora_B.weight, 6, 3)
    torch.testing.assert_close(layer(x), ch06.reference_lora_forward(x, *args))
    merged = ch06.reference_merge_lora(*[a.detach() for a in (layer.weight, *args[2:4])], 6, 3)
    layer.merge()
    torch.testing.assert_close(layer.weight.detach(), merged)
    pred, target = torch.randn(4, 4, 2, 2), torch.randn(4, 4, 2, 2)
    torch.testing.assert_close(dreambooth.prior_preservation_loss(pred, target, 0.7),
                               ch06.reference_prior_preservation_loss(pred, target, 0.7))


# --------------------------------------------------------------------------------------------------
# Answers that call ddlearn's own implementation
# --------------------------------------------------------------------------------------------------
def forward_through_library(x, weight, bias, lora_A, lora_B, lora_alpha, r, scale=1.0):
    base = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer = lora.LoRALinear(base.to(x.dtype), r=r, lora_alpha=lora_alpha)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
        layer.lora_A.weight.copy_(lora_A)
        layer.lora_B.weight.copy_(lora_B)
    layer.set_scale(scale)
    return layer(x)


CHEATS = {
    ch06.check_lora_forward: [forward_through_library, ch06.reference_lora_forward],
    ch06.check_prior_preservation_loss: [dreambooth.prior_preservation_loss,
                                         ch06.reference_prior_preservation_loss],
    ch06.check_merge_lora: [ch06.reference_merge_lora],
}


@pytest.mark.parametrize("check, cheat", [pytest.param(c, f, id=f"{c.__name__}-{i}")
                                          for c, fs in CHEATS.items() for i, f in enumerate(fs)])
def test_calling_ddlearns_implementation_fails(check, cheat):
    with pytest.raises(ExerciseError, match="ddlearn's own"):
        check(cheat)


# --------------------------------------------------------------------------------------------------
# Answers that fit only the public cases, and wrong answers with their hints
# --------------------------------------------------------------------------------------------------
def forward_float32(x, weight, bias, lora_A, lora_B, lora_alpha, r, scale=1.0):
    return lora_forward(x.float(), weight.float(), None if bias is None else bias.float(),
                        lora_A.float(), lora_B.float(), lora_alpha, r, scale)


def forward_always_bias(x, weight, bias, lora_A, lora_B, lora_alpha, r, scale=1.0):
    return lora_forward(x, weight, bias if bias is not None else torch.zeros(1), lora_A, lora_B,
                        lora_alpha, r, scale if scale in (1.0, 0.5) else 1.0)


def prior_loss_fixed_weight(model_pred, target, prior_loss_weight):
    return prior_preservation_loss(model_pred, target, 1.0 if prior_loss_weight > 0.75 else 0.5)


def merge_in_place(weight, lora_A, lora_B, lora_alpha, r, scale=1.0):
    return weight.add_(scale * lora_alpha / r * lora_B @ lora_A)


@pytest.mark.parametrize("check, answer", [
    (ch06.check_lora_forward, forward_float32),
    (ch06.check_lora_forward, forward_always_bias),
    (ch06.check_prior_preservation_loss, prior_loss_fixed_weight)])
def test_answer_fitting_public_cases_fails_hidden(check, answer):
    check(answer)
    for hidden in (True, 7, 11):
        with pytest.raises(ExerciseError):
            check(answer, hidden=hidden)


WRONG = [
    (ch06.check_lora_forward, lambda x, W, b, A, B, a, r, s=1.0: F.linear(x, W, b)
     + s * F.linear(F.linear(x, A), B), "not scaled by α/r"),
    (ch06.check_lora_forward, lambda x, W, b, A, B, a, r, s=1.0: F.linear(x, W, b)
     + s * r / a * F.linear(F.linear(x, A), B), "not r/α"),
    (ch06.check_lora_forward, lambda x, W, b, A, B, a, r, s=1.0: s * a / r
     * F.linear(F.linear(x, A), B), "base layer's output"),
    (ch06.check_lora_forward, lambda x, W, b, A, B, a, r, s=1.0: F.linear(x, W, b)
     + a / r * F.linear(F.linear(x, A), B), "scale s"),
    (ch06.check_lora_forward, lambda x, W, b, A, B, a, r, s=1.0: F.linear(x, W, b)
     + x @ A @ B, "Shapes"),
    (ch06.check_prior_preservation_loss, lambda p, t, w: F.mse_loss(p, t), "whole batch"),
    (ch06.check_prior_preservation_loss, lambda p, t, w: prior_preservation_loss(
        p.flip(0), t.flip(0), w), "wrong half"),
    (ch06.check_prior_preservation_loss, lambda p, t, w: prior_preservation_loss(
        p, t, w).item(), "Python number"),
    (ch06.check_prior_preservation_loss, lambda p, t, w: prior_preservation_loss(
        p.detach(), t, w), "no gradient"),
    (ch06.check_merge_lora, lambda W, A, B, a, r, s=1.0: W + s * B @ A, "not scaled by α/r"),
    (ch06.check_merge_lora, lambda W, A, B, a, r, s=1.0: s * a / r * B @ A, "W₀ is missing"),
    (ch06.check_merge_lora, merge_in_place, "in place"),
    (ch06.check_merge_lora, lambda W, A, B, a, r, s=1.0: W + s * a / r * A.T @ B.T, "B @ A"),
]


@pytest.mark.parametrize("check, answer, words", WRONG)
def test_wrong_answer_gets_its_hint(check, answer, words):
    with pytest.raises(ExerciseError, match=words):
        check(answer)


@pytest.mark.parametrize("check", list(CHECKS))
def test_keep_going_returns_the_reference(check, monkeypatch, capsys):
    monkeypatch.setattr(ddlearn.checks.runner, "KEEP_GOING", True)

    def unsolved(*args):
        raise NotImplementedError

    returned = check(unsolved)
    assert returned.__name__.startswith("reference_")
    assert "not implemented yet" in capsys.readouterr().err
