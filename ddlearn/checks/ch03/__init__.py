"""Checkers for chapter 03 (writing schedulers): your function against ddlearn's schedulers.

    from ddlearn.checks import ch03
    ch03.check_add_noise(add_noise)      # x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε          (DDPM eq. 4)
    ch03.check_ddim_step(ddim_step)      # one deterministic DDIM step, η = 0    (DDIM eq. 12)
    ch03.check_euler_step(euler_step)    # one Euler step of dx/dσ = ε̂ in σ-space (EDM Alg. 2)

Each check runs seeded cases through the matching ddlearn scheduler (`add_noise`, `step`) and
through your function, which may not call those (see `ddlearn.checks.runner`); `hidden=True` runs
other schedules, step counts, shapes and float64. When yours is off, it tries the usual mistakes
(ᾱ where √ᾱ is meant, the wrong ᾱ in a coefficient, a flipped sign) and names the one your
numbers match. `reference_*` are the answers the notebook uses below a check that fails in
keep-going mode.

One file per exercise: `add_noise.py`, `ddim_step.py`, `euler_step.py`; what several of them use is
in `common.py`.
"""

from ddlearn.checks.ch03.add_noise import NOISING, check_add_noise, reference_add_noise
from ddlearn.checks.ch03.ddim_step import check_ddim_step, reference_ddim_step
from ddlearn.checks.ch03.euler_step import check_euler_step, reference_euler_step

__all__ = [
    "reference_add_noise",
    "check_add_noise",
    "NOISING",
    "reference_ddim_step",
    "check_ddim_step",
    "reference_euler_step",
    "check_euler_step",
]
