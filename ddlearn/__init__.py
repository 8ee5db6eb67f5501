"""ddlearn: diffusion models from scratch, with the names and checkpoint layout of diffusers."""

import os

__version__ = "0.1.0"


def _is_truthy(value) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


#: The one switch notebooks read to shrink epochs, steps and image counts in CI (DDLEARN_QUICK=1).
QUICK = _is_truthy(os.environ.get("DDLEARN_QUICK"))
