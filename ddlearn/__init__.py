"""ddlearn: diffusion models from scratch, with the names and checkpoint layout of Hugging Face diffusers."""

import os

__version__ = "0.1.0"

#: The one switch notebooks read to shrink epochs, steps and image counts in CI (DDLEARN_QUICK=1).
QUICK = os.environ.get("DDLEARN_QUICK", "0").strip().lower() not in ("", "0", "false", "no", "off")
