"""Putting LoRA layers into a model, and their state dict: peft's inject_adapter_in_model.

`inject_adapter_in_model(config, model)` (what diffusers' `model.add_adapter` calls) swaps each
nn.Linear that `config.target_modules` names for a `LoRALinear` around it and freezes every other
weight. `get_peft_model_state_dict` / `set_peft_model_state_dict` read and write the A and B
matrices under peft's keys without the adapter name (`...attn1.to_q.lora_A.weight`);
`convert_state_dict_to_diffusers` renames them as diffusers' older LoRA scripts saved them.
One adapter per model.

References: peft `tuners/tuners_utils.py` (inject_adapter_in_model), `utils/save_and_load.py`;
diffusers `utils/state_dict_utils.py`.
"""

import torch
from torch import nn

from ddlearn.lora.config import LoraConfig, as_lora_config
from ddlearn.lora.layer import LoRALinear, lora_layers


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
