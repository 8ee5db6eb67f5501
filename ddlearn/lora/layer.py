"""LoRA: a trainable low-rank update beside each frozen Linear layer, as peft adds it for diffusers.

Mirrors peft's `tuners.lora.Linear` and diffusers' `scale_lora_layers` / `unscale_lora_layers`.
Which layers get one: `config.py`; putting them into a model and their state dict:
`injection.py`; diffusers' file: `files.py`.

Hu et al. 2021, eq. 3: the pretrained W0 stays frozen and the layer learns ΔW = B A of rank r,

    h = W0 x + ΔW x = W0 x + s · (α/r) · B A x          (eq. 3, with the α/r scaling of Sec. 4.1)

| code            | paper | meaning                                                            |
|-----------------|-------|--------------------------------------------------------------------|
| `weight`        | W0    | (out, in), frozen; its state-dict key is unchanged (`to_q.weight`) |
| `lora_A.weight` | A     | (r, in): kaiming-uniform (a=√5) as nn.Linear, or N(0, 1/r²)         |
| `lora_B.weight` | B     | (out, r): zeros, so at step 0 the model is the pretrained one      |
| `r`             | r     | the rank, r << min(in, out): r·(in + out) numbers train, not in·out |
| `lora_alpha`    | α     | `scaling` = α/r: a new r needs no new learning rate                |
| `scale`         | s     | run-time weight: cross_attention_kwargs={"scale": s}, set_adapters |

Fusing (Sec. 4.1, "no additional inference latency"): `merge()` writes W' = W0 + s (α/r) B A into
`weight`, so h = W' x is one matmul again; `unmerge()` puts W0 back, exactly (merge keeps a copy).
State-dict keys are peft's without the adapter name: `....attn1.to_q.lora_A.weight`.

References: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3, Sec. 4.1;
peft `tuners/lora/layer.py` and `tuners/tuners_utils.py`; diffusers `utils/peft_utils.py` and
`utils/state_dict_utils.py`.
"""

import contextlib
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Linear):
    """A Linear layer W0 and its LoRA update: h = W0 x + b + s·(α/r)·B A x (eq. 3).

    A subclass of nn.Linear holding the wrapped layer's own `weight` and `bias` (the same
    Parameters), so the model's keys stay `to_q.weight`, with `to_q.lora_A.weight` beside it."""

    def __init__(self, base: nn.Linear, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                 init_lora_weights=True):
        nn.Module.__init__(self)  # not nn.Linear's: W0 and b are the base layer's, not new ones
        self.in_features, self.out_features = base.in_features, base.out_features
        self.register_parameter("weight", base.weight)  # W0 (out, in)
        self.register_parameter("bias", base.bias)  # b (out,) or None
        self.r, self.lora_alpha, self.scaling = r, lora_alpha, lora_alpha / r
        self.scale, self.merged, self.enabled = 1.0, False, True
        # made as peft makes them (a seed gives peft's numbers), then moved to W0's device, dtype
        A, B = nn.Linear(self.in_features, r, bias=False), nn.Linear(r, self.out_features, False)
        if init_lora_weights is True:
            nn.init.kaiming_uniform_(A.weight, a=math.sqrt(5))
        elif init_lora_weights == "gaussian":
            nn.init.normal_(A.weight, std=1 / r)
        if init_lora_weights is not False:  # False keeps nn.Linear's random B (for tests)
            nn.init.zeros_(B.weight)  # ΔW = B A = 0: training starts from the pretrained model
        self.lora_A = A.to(self.weight.device, self.weight.dtype)  # (in -> r)
        self.lora_B = B.to(self.weight.device, self.weight.dtype)  # (r -> out)
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.register_buffer("weight_before_merge", None, persistent=False)  # W0 while merged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.weight, self.bias)  # W0 x + b  (W' x + b once merged)
        if self.merged or not self.enabled:
            return h
        return h + self.lora_B(self.lora_A(self.lora_dropout(x))) * (self.scale * self.scaling)

    def set_scale(self, scale: float):
        """s, the run-time weight of the update (1 by default; 0 gives the base layer alone)."""
        self.scale = float(scale)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = s·(α/r)·B A: (out, r) @ (r, in) -> (out, in), half precision computed in float32."""
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        B, A = self.lora_B.weight.to(dtype), self.lora_A.weight.to(dtype)
        return ((B @ A) * (self.scale * self.scaling)).to(self.weight.dtype)

    @torch.no_grad()
    def merge(self, safe_merge: bool = False):
        """weight <- W' = W0 + s·(α/r)·B A: the same outputs from one matmul (Sec. 4.1)."""
        if self.merged:
            raise RuntimeError("this LoRA is already merged into the weight (W' = W0 + s(α/r) B A);"
                               " merging again would add B A twice: unmerge() first")
        merged = self.weight + self.delta_weight()
        if safe_merge and not torch.isfinite(merged).all():
            raise ValueError("the merged weight holds NaN or inf: this LoRA is broken (nothing was "
                             "merged)")
        self.weight_before_merge = self.weight.detach().clone()
        self.weight.copy_(merged)
        self.merged = True

    @torch.no_grad()
    def unmerge(self):
        """weight <- W0, exactly (merge kept it); a no-op when not merged, as in peft."""
        if self.merged:
            self.weight.copy_(self.weight_before_merge)
            self.weight_before_merge, self.merged = None, False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, lora_alpha={self.lora_alpha}"


# ---- a model's LoRA layers -----------------------------------------------------------------------
def lora_layers(model: nn.Module) -> list:
    """(path, layer) of every LoRALinear in `model`, in module order."""
    return [(path, m) for path, m in model.named_modules() if isinstance(m, LoRALinear)]


# ---- the scale s ---------------------------------------------------------------------------------
def scale_lora_layers(model: nn.Module, weight: float):
    """s <- s·weight in every LoRA layer (undo with unscale_lora_layers), as diffusers."""
    if weight != 1.0:
        for _, layer in lora_layers(model):
            layer.scale *= weight


def unscale_lora_layers(model: nn.Module, weight=None):
    """s <- s / weight; weight 0 resets s to 1 (s·0 cannot be divided back), as diffusers."""
    if weight is not None and weight != 1.0:
        for _, layer in lora_layers(model):
            layer.scale = layer.scale / weight if weight != 0 else 1.0


@contextlib.contextmanager
def scaled_lora_layers(model: nn.Module, weight: float):
    """Within the block, every LoRA update of `model` is `weight` times larger (diffusers'
    apply_lora_scale around a forward)."""
    scale_lora_layers(model, weight)
    try:
        yield
    finally:
        unscale_lora_layers(model, weight)


def lora_scale_from(cross_attention_kwargs, where: str) -> float:
    """s from cross_attention_kwargs={"scale": s} (1 without it). Other keys are for diffusers'
    attention processors, which ddlearn does not have."""
    if cross_attention_kwargs is None:
        return 1.0
    if not isinstance(cross_attention_kwargs, dict):
        raise TypeError(f"{where}: cross_attention_kwargs must be a dict such as {{'scale': 0.5}}"
                        f", got {type(cross_attention_kwargs).__name__}")
    others = sorted(set(cross_attention_kwargs) - {"scale"})
    if others:
        raise NotImplementedError(f"{where}: cross_attention_kwargs {others} go to diffusers' "
                                  f"attention processors, which ddlearn does not have; ddlearn "
                                  f"reads only 'scale' (the LoRA scale s)")
    scale = cross_attention_kwargs.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise TypeError(f"{where}: cross_attention_kwargs['scale'] must be a finite number (the "
                        f"LoRA scale s: 0 = no LoRA, 1 = full), got {scale!r}")
    return float(scale)
