"""Checkers for chapter 07 (flow matching and diffusion transformers).

    from ddlearn.checks import ch07
    ch07.check_flow_noised(fn)     # x_σ = (1 - σ) x_0 + σ ε            (the straight path)
    ch07.check_velocity_target(fn) # v = ε - x_0                         (diffusers' sign)
    ch07.check_euler_step(fn)      # x_{σ'} = x_σ + (σ' - σ) v           (one ODE step)
    ch07.check_patchify(fn)        # (B, C, h, w) -> (B, N, p·p·C), the order SD3 unpatchifies

Each check runs seeded cases through ddlearn's reference (`FlowMatchEulerDiscreteScheduler`'s
`scale_noise` and `step`, `flow_matching_loss`'s target, `transformer_sd3.patchify`) and through
your function, which may not call those: it fails if it does. When yours is off, the check tries
the usual mistakes (σ and 1 - σ swapped, the sign of the velocity, the step's direction, channels
first) and names the one your numbers match. `hidden=True` runs other cases (other shapes, dtypes,
σ's, shifts and patch sizes); in keep-going mode a failing check returns `reference_<x>` (see
`ddlearn.checks.runner`).

One file per exercise: `flow_noised.py`, `velocity_target.py`, `euler_step.py`, `patchify.py`; what
several of them use is in `common.py`.
"""

from ddlearn.checks.ch07.euler_step import check_euler_step, reference_euler_step
from ddlearn.checks.ch07.flow_noised import check_flow_noised, reference_flow_noised
from ddlearn.checks.ch07.patchify import check_patchify, reference_patchify
from ddlearn.checks.ch07.velocity_target import check_velocity_target, reference_velocity_target

__all__ = [
    "reference_flow_noised",
    "check_flow_noised",
    "reference_velocity_target",
    "check_velocity_target",
    "reference_euler_step",
    "check_euler_step",
    "reference_patchify",
    "check_patchify",
]
