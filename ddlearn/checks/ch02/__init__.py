"""Checkers for chapter 02 (deconstructing the pipeline): your function against ddlearn's pieces.

    from ddlearn.checks import ch02
    ch02.check_predict_x0(predict_x0)   # x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t         (DDPM eq. 15)
    ch02.check_timesteps(timesteps)     # "leading", "trailing", "linspace"  (Lin et al. 2023, T. 2)
    ch02.check_sample(sample)           # the sampling loop, for any scheduler

Each check runs seeded cases through ddlearn (`common.predict_x0`, `spaced_timesteps`, the loop of
`DDPMPipeline`) and through your function, which may not call those (see `ddlearn.checks.runner`);
`hidden=True` runs other schedules, shapes, dtypes, step counts and schedulers. When yours is off,
it tries the usual mistakes and names the one your numbers match. `reference_*` are the answers
the notebook uses below a check that fails in keep-going mode.

One file per exercise: `predict_x0.py`, `timesteps.py`, `sampling_loop.py`; what several of them use
is in `common.py`.
"""

from ddlearn.checks.ch02.predict_x0 import check_predict_x0, reference_predict_x0
from ddlearn.checks.ch02.sampling_loop import check_sample, reference_sample, sample
from ddlearn.checks.ch02.timesteps import SPACINGS, check_timesteps, reference_timesteps

__all__ = [
    "reference_predict_x0",
    "check_predict_x0",
    "reference_timesteps",
    "check_timesteps",
    "SPACINGS",
    "reference_sample",
    "check_sample",
    "sample",
]
