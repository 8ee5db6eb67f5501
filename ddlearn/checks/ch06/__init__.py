"""Checkers for chapter 06 (teaching the tiny SD a new butterfly): yours against ddlearn's.

    from ddlearn.checks import ch06
    ch06.check_lora_forward(lora_forward)                  # W₀x + b + s(α/r)·B A x  (LoRA eq. 3)
    ch06.check_prior_preservation_loss(loss)               # mse(instance) + λ mse(prior)
    ch06.check_merge_lora(merge_lora)                      # W' = W₀ + s(α/r)·B A

Each check runs seeded cases through the `reference_*` answer and through yours (calling
ddlearn's own `LoRALinear`, its `merge` or `dreambooth.prior_preservation_loss` fails: see
`ddlearn.checks.runner`), and when yours is off it names the usual mistake your numbers match.

One file per exercise: `lora_forward.py`, `prior_preservation_loss.py`, `merge_lora.py`.
"""

from ddlearn.checks.ch06.lora_forward import check_lora_forward, reference_lora_forward
from ddlearn.checks.ch06.merge_lora import check_merge_lora, reference_merge_lora
from ddlearn.checks.ch06.prior_preservation_loss import (
    check_prior_preservation_loss,
    reference_prior_preservation_loss,
)

__all__ = [
    "reference_lora_forward",
    "check_lora_forward",
    "reference_prior_preservation_loss",
    "check_prior_preservation_loss",
    "reference_merge_lora",
    "check_merge_lora",
]
