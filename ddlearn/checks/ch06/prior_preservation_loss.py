"""Chapter 06, exercise 2: DreamBooth's prior-preservation loss.

`prior_preservation_loss(model_pred, target, prior_loss_weight)`: the batch holds the instance
examples first and the class examples after them (B + B). Split both tensors in two halves along
the batch and return MSE(instance half) + λ · MSE(class half) (Ruiz et al. 2023, eq. 2; diffusers'
train_dreambooth.py). It may not call `ddlearn.dreambooth.prior_preservation_loss`. The check names
the usual mistakes (λ on the wrong half, one MSE over the whole batch, a sum, halves split along
the channels) and wants a 0-dim tensor that carries gradients. Hidden cases: other λ (0 included),
batch and latent shapes, float64.
"""

import torch
import torch.nn.functional as F

from ddlearn import dreambooth
from ddlearn.checks import (
    ExerciseError,
    check_dtype,
    compare_with_mistakes,
    guard,
    randn,
    run_check,
)


def reference_prior_preservation_loss(model_pred, target, prior_loss_weight=1.0):
    """The answer the cells below use while yours is not solved."""
    pred, pred_prior = torch.chunk(model_pred, 2, dim=0)  # (2B, ...) -> 2 x (B, ...)
    target, target_prior = torch.chunk(target, 2, dim=0)
    return F.mse_loss(pred, target) + prior_loss_weight * F.mse_loss(pred_prior, target_prior)


def check_prior_preservation_loss(fn, hidden=False):
    """fn(model_pred, target, prior_loss_weight) -> MSE(instances) + λ·MSE(class images).

    Hidden cases: other λ (0 included), batch and latent shapes, float64."""
    yours = guard("prior_preservation_loss", fn, dreambooth.prior_preservation_loss,
                  reference_prior_preservation_loss)

    @torch.enable_grad()
    def case(half, shape, weight, seed, dtype=torch.float32):
        pred = randn(2 * half, *shape, seed=seed).to(dtype).requires_grad_(True)
        target = randn(2 * half, *shape, seed=seed + 1).to(dtype)
        expected = reference_prior_preservation_loss(pred.detach(), target, weight)
        p, q = pred.detach().chunk(2), target.chunk(2)
        pc, qc = pred.detach().chunk(2, dim=1), target.chunk(2, dim=1)
        mistakes = {
            "λ weighs the wrong half: the instance examples come first, the class examples (the "
            "prior) second: mse(first) + λ·mse(second).":
                F.mse_loss(p[1], q[1]) + weight * F.mse_loss(p[0], q[0]),
            "one MSE over the whole batch gives both halves the same weight; split with "
            "torch.chunk(x, 2, dim=0) and weigh the prior half by λ.":
                F.mse_loss(pred.detach(), target),
            "you summed the squared errors; use F.mse_loss's mean.":
                F.mse_loss(p[0], q[0], reduction="sum") + weight * F.mse_loss(p[1], q[1],
                                                                              reduction="sum"),
            "the halves are along the batch (dim=0), not the channels.":
                F.mse_loss(pc[0], qc[0]) + weight * F.mse_loss(pc[1], qc[1]),
            "only the prior term is there: add the instance MSE.": weight * F.mse_loss(p[1], q[1]),
        }
        mistakes = {m: w for m, w in mistakes.items() if not torch.allclose(w, expected)}
        loss = yours(pred, target.clone(), weight)
        if isinstance(loss, (float, int)):
            raise ExerciseError("prior_preservation_loss: you returned a Python number; "
                                "loss.backward() needs the tensor: no .item().")
        if torch.is_tensor(loss) and loss.dim() > 0:
            raise ExerciseError(f"prior_preservation_loss: return one number (a 0-dim tensor), "
                                f"got shape {tuple(loss.shape)}.")
        check_dtype("prior_preservation_loss", loss, dtype)
        compare_with_mistakes("prior_preservation_loss", loss, expected, mistakes,
                              "pred, pred_prior = model_pred.chunk(2); target, target_prior = "
                              "target.chunk(2); mse(pred, target) + λ·mse(pred_prior, "
                              "target_prior)")
        if not loss.requires_grad:
            raise ExerciseError("prior_preservation_loss: the value is right, but it carries no "
                                "gradient: no torch.no_grad(), .detach() or .item().")

    def hidden_cases(rng):
        def draw(dtype):
            half, weight = rng.choice((1, 2, 5)), rng.choice((0.0, 0.5, 1.0, 3.0))
            shape, seed = rng.choice(((4, 8, 8), (4, 4, 4), (3, 6, 2))), rng.randrange(10_000)
            return lambda: case(half, shape, weight, seed, dtype)
        return [draw(torch.float32), draw(torch.float64), draw(torch.float32)]

    return run_check("prior_preservation_loss", fn,
                     lambda: case(2, (4, 8, 8), 1.0, seed=0),
                     lambda: case(3, (4, 4, 4), 0.5, seed=3),
                     hidden=hidden, hidden_cases=hidden_cases,
                     reference=reference_prior_preservation_loss)
