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

One file per exercise: `training_loss.py`, `logit_normal_timesteps.py`, `velocity.py`,
`ema_update.py`.
"""

from ddlearn.checks.ch04.ema_update import check_ema_update, reference_ema_update
from ddlearn.checks.ch04.logit_normal_timesteps import (
    check_logit_normal_timesteps,
    reference_logit_normal_timesteps,
)
from ddlearn.checks.ch04.training_loss import check_training_loss, reference_training_loss
from ddlearn.checks.ch04.velocity import check_velocity, reference_velocity

__all__ = [
    "reference_training_loss",
    "check_training_loss",
    "reference_logit_normal_timesteps",
    "check_logit_normal_timesteps",
    "reference_velocity",
    "check_velocity",
    "reference_ema_update",
    "check_ema_update",
]
