"""ddlearn: diffusion models from scratch, with the names and checkpoint layout of diffusers."""

import os

__version__ = "0.1.0"


def _is_truthy(value) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


#: The one switch notebooks read to shrink epochs, steps and image counts in CI (DDLEARN_QUICK=1).
QUICK = _is_truthy(os.environ.get("DDLEARN_QUICK"))

from ddlearn.models import *  # noqa: E402,F403
from ddlearn.models import __all__ as _models  # noqa: E402
from ddlearn.pipelines import *  # noqa: E402,F403
from ddlearn.pipelines import __all__ as _pipelines  # noqa: E402
from ddlearn.schedulers import *  # noqa: E402,F403
from ddlearn.schedulers import __all__ as _schedulers  # noqa: E402

__all__ = ["QUICK", *_models, *_schedulers, *_pipelines]
