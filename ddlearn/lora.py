"""LoRA: a trainable low-rank update beside each frozen Linear layer, as peft adds it for diffusers.

Mirrors peft's `LoraConfig`, `tuners.lora.Linear`, `inject_adapter_in_model`,
`get_peft_model_state_dict` and `set_peft_model_state_dict` (what diffusers' `unet.add_adapter`
and its LoRA training scripts call), and diffusers' `convert_state_dict_to_diffusers`,
`scale_lora_layers` and `unscale_lora_layers`. One adapter per model.

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
import difflib
import math
import numbers
import re

import torch
import torch.nn.functional as F
from torch import nn

IMPLEMENTED = ("r", "lora_alpha", "target_modules", "lora_dropout", "init_lora_weights", "bias",
               "rank_pattern", "alpha_pattern")
#: peft LoraConfig keys that describe the run, not the layers: accepted with any value
PEFT_BOOKKEEPING = ("task_type", "peft_type", "auto_mapping", "peft_version", "revision",
                    "base_model_name_or_path", "inference_mode", "megatron_core",
                    "qalora_group_size")


class LoraConfig:
    """peft's LoraConfig, with the options diffusers' LoRA scripts pass. peft's other options
    (use_dora, use_rslora, modules_to_save, ...) are accepted at their defaults (None, False, {}),
    as a saved config holds them, and refused at any other value."""

    def __init__(self, r: int = 8, lora_alpha: float = 8, target_modules=None,
                 lora_dropout: float = 0.0, init_lora_weights=True, bias: str = "none",
                 rank_pattern=None, alpha_pattern=None, **peft_options):
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r <= 0:
            raise ValueError(f"LoraConfig: r={r!r} is the rank of B A and must be a whole number "
                             f">= 1 (4, 8 or 16 are usual); r=0 would train nothing")
        if isinstance(lora_alpha, bool) or not isinstance(lora_alpha, numbers.Real):
            raise TypeError(f"LoraConfig: lora_alpha must be a number (α, scaling = α/r), "
                            f"got {lora_alpha!r}")
        if not 0 <= lora_dropout < 1:
            raise ValueError(f"LoraConfig: lora_dropout={lora_dropout!r} must be in [0, 1)")
        if not any(init_lora_weights is v for v in (True, False)) and init_lora_weights != \
                "gaussian":
            raise NotImplementedError(f"LoraConfig: init_lora_weights={init_lora_weights!r}; "
                                      f"ddlearn implements True, 'gaussian' and False")
        if bias != "none":
            raise NotImplementedError(f"LoraConfig: bias={bias!r}; ddlearn's LoRA trains A and B "
                                      f"only (bias='none')")
        for name, value in peft_options.items():
            if name in PEFT_BOOKKEEPING or value is None or value is False or value in ({}, []):
                continue
            close = difflib.get_close_matches(name, IMPLEMENTED, n=1)
            if close:
                raise TypeError(f"LoraConfig got an unexpected keyword argument {name!r}; "
                                f"did you mean {close[0]!r}?")
            raise NotImplementedError(f"LoraConfig: {name}={value!r} is a peft option ddlearn's "
                                      f"LoRA does not implement; it takes {', '.join(IMPLEMENTED)}")
        self.r, self.lora_alpha, self.lora_dropout = int(r), lora_alpha, float(lora_dropout)
        self.target_modules = target_modules if target_modules is None or \
            isinstance(target_modules, str) else set(target_modules)
        self.init_lora_weights, self.bias = init_lora_weights, bias
        self.rank_pattern, self.alpha_pattern = dict(rank_pattern or {}), dict(alpha_pattern or {})

    def matches(self, path: str) -> bool:
        """peft's rule: a string is a regex over the whole module path ("all-linear": every
        Linear); a list entry matches the path itself or its end after a dot (`to_q`)."""
        if isinstance(self.target_modules, str):
            return self.target_modules == "all-linear" or bool(
                re.fullmatch(self.target_modules, path))
        return any(path == t or path.endswith(f".{t}") for t in self.target_modules)

    def rank_and_alpha(self, path: str) -> tuple:
        """(r, α) of one module: entries of rank_pattern / alpha_pattern override (peft's rule)."""
        pick = lambda patterns, default: next(
            (v for k, v in patterns.items() if re.match(rf"(.*\.)?({k})$", path)), default)
        return pick(self.rank_pattern, self.r), pick(self.alpha_pattern, self.lora_alpha)

    def to_dict(self) -> dict:
        """peft's key names, JSON-ready: what save_lora_weights' *_lora_adapter_metadata takes."""
        targets = self.target_modules
        targets = sorted(targets) if isinstance(targets, set) else targets
        return {"peft_type": "LORA", "r": self.r, "lora_alpha": self.lora_alpha,
                "target_modules": targets, "lora_dropout": self.lora_dropout,
                "init_lora_weights": self.init_lora_weights, "bias": self.bias,
                "rank_pattern": self.rank_pattern, "alpha_pattern": self.alpha_pattern,
                "use_dora": False, "use_rslora": False}

    def __repr__(self):
        return f"LoraConfig({', '.join(f'{k}={self.to_dict()[k]!r}' for k in IMPLEMENTED)})"


def as_lora_config(config) -> LoraConfig:
    """A ddlearn LoraConfig, or anything with peft's `to_dict()` (peft's own LoraConfig)."""
    if isinstance(config, LoraConfig):
        return config
    if hasattr(config, "to_dict"):
        return LoraConfig(**config.to_dict())
    raise TypeError(f"expected a LoraConfig (ddlearn.lora.LoraConfig or peft's), got "
                    f"{type(config).__name__}")


# ---- the layer -----------------------------------------------------------------------------------
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


def linear_names(model: nn.Module, limit: int = 10) -> str:
    """The distinct short names of a model's Linear layers (to_q, to_out.0, ...), for errors."""
    names = []
    for path, m in model.named_modules():
        parts = path.split(".")
        short = ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]
        if isinstance(m, nn.Linear) and short not in names:
            names.append(short)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_no_adapter(model: nn.Module):
    if lora_layers(model):
        raise NotImplementedError(f"{type(model).__name__} already holds a LoRA adapter "
                                  f"({', '.join(getattr(model, 'peft_config', {}))}) and ddlearn "
                                  f"keeps one per model: unload it first (pipe.unload_lora_weights"
                                  f"() or model.unload_lora(); fuse_lora() before keeps it)")


def inject_adapter_in_model(peft_config, model: nn.Module, adapter_name: str = "default"):
    """Wrap every nn.Linear that `target_modules` names in a LoRALinear and freeze the rest, as
    peft's inject_adapter_in_model. Returns the model."""
    config, kind = as_lora_config(peft_config), type(model).__name__
    if config.target_modules is None:
        raise ValueError(f"LoraConfig needs target_modules, the Linear layers to adapt; "
                         f"{kind}'s are named {linear_names(model)}")
    every_linear = config.target_modules == "all-linear"
    matched = [(path, m) for path, m in model.named_modules() if path and config.matches(path)
               and (isinstance(m, nn.Linear) or not every_linear)]
    if not matched:
        raise ValueError(f"target_modules={config.target_modules!r} matches no module of {kind}; "
                         f"its Linear layers are named {linear_names(model)} (an entry matches "
                         f"the end of a module path; a string is a regex over the whole path)")
    for path, m in matched:
        if not isinstance(m, nn.Linear):
            error = NotImplementedError if isinstance(m, (nn.Conv2d, nn.Embedding)) else ValueError
            raise error(f"target_modules matches {path}, a {type(m).__name__}; ddlearn's LoRA "
                        f"wraps nn.Linear layers only ({kind}'s: {linear_names(model)})")
    return add_lora_layers(model, {path: config.rank_and_alpha(path) for path, _ in matched},
                           config, adapter_name)


def add_lora_layers(model: nn.Module, targets: dict, config: LoraConfig, adapter_name: str):
    """Replace each Linear of `targets` ({path: (r, α)}) by a LoRALinear around it; afterwards
    only the LoRA parameters require grad, as after peft's injection."""
    check_no_adapter(model)
    for path, (r, alpha) in targets.items():
        model.set_submodule(path, LoRALinear(model.get_submodule(path), r, alpha,
                                             config.lora_dropout, config.init_lora_weights))
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_A." in name or ".lora_B." in name)
    model.peft_config = {adapter_name: config}
    return model


def get_peft_model_state_dict(model: nn.Module, state_dict=None, adapter_name: str = "default"):
    """{path.lora_A.weight: A, path.lora_B.weight: B}: peft's keys without the adapter name."""
    names = list(getattr(model, "peft_config", {}))
    if names and adapter_name not in names:
        raise ValueError(f"{type(model).__name__} holds the adapter {names[0]!r}, not "
                         f"{adapter_name!r}; pass adapter_name={names[0]!r}")
    state = model.state_dict() if state_dict is None else state_dict
    return {f"{path}.lora_{x}.weight": state[f"{path}.lora_{x}.weight"]
            for path, _ in lora_layers(model) for x in "AB"}


def set_peft_model_state_dict(model: nn.Module, peft_model_state_dict: dict,
                              adapter_name: str = "default"):
    """Copy A and B in (keys as get_peft_model_state_dict gives them), strictly: every key used,
    every LoRA layer filled, shapes equal. Returns None (nothing is ever left out)."""
    own = get_peft_model_state_dict(model, adapter_name=adapter_name)
    given = peft_model_state_dict
    problems = [f"unexpected {k}" for k in given if k not in own]
    problems += [f"missing {k}" for k in own if k not in given]
    problems += [f"{k}: {tuple(given[k].shape)} vs the model's {tuple(v.shape)}"
                 for k, v in own.items() if k in given and given[k].shape != v.shape]
    if problems:
        raise ValueError(f"LoRA weights do not fit {type(model).__name__}'s LoRA layers: "
                         f"{'; '.join(problems[:6])}" + (" ..." if len(problems) > 6 else ""))
    with torch.no_grad():
        for key, value in given.items():
            own[key].copy_(value)


#: peft -> diffusers names, first match wins (diffusers' PEFT_TO_DIFFUSERS)
PEFT_TO_DIFFUSERS = {
    **{f".{p}.lora_{x}": f".{p}.lora_linear_layer.{d}" for p in ("q_proj", "k_proj", "v_proj",
                                                                 "out_proj")
       for x, d in (("B", "up"), ("A", "down"))},
    **{f"{p}.lora_{x}": f"{p}.lora.{d}" for p in ("to_k", "to_q", "to_v", "to_out.0")
       for x, d in (("A", "down"), ("B", "up"))},
}


def convert_state_dict_to_diffusers(state_dict: dict, original_type=None, **kwargs) -> dict:
    """peft keys -> diffusers' (`to_q.lora.down.weight`, `q_proj.lora_linear_layer.up.weight`),
    what diffusers' LoRA scripts save; other layers keep peft's names, as in diffusers."""
    if str(getattr(original_type, "value", original_type)) not in ("None", "peft") or kwargs:
        raise NotImplementedError("ddlearn converts peft state dicts only (original_type=None)")
    out = {}
    for key, value in state_dict.items():
        key = key.replace(".processor.", ".")
        old = next((p for p in PEFT_TO_DIFFUSERS if p in key), None)
        out[key.replace(old, PEFT_TO_DIFFUSERS[old]) if old else key] = value
    return out


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
