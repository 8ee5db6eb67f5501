"""peft's LoraConfig: which Linear layers get a LoRA update, its rank r and its α.

What `unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v",
"to_out.0"]))` reads (peft `tuners/lora/config.py`). A saved diffusers LoRA carries the same keys
as its metadata (`to_dict()`), and a peft LoraConfig is taken as it is (`as_lora_config`).

| option              | meaning                                                                |
|---------------------|------------------------------------------------------------------------|
| `r`                 | the rank of ΔW = B A (r >= 1)                                          |
| `lora_alpha`        | α: the update is scaled by α/r                                         |
| `target_modules`    | list: names matching a module path's end (`to_q`); str: a regex, or     |
|                     | "all-linear"                                                           |
| `init_lora_weights` | True: A kaiming-uniform, "gaussian": A ~ N(0, 1/r²); B = 0 in both     |
| `rank_pattern`      | {regex: r} overriding r for the modules it matches; `alpha_pattern` α  |
"""

import difflib
import numbers
import re

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
