"""LoRA (Hu et al. 2021) as peft adds it for diffusers, written from scratch.

    from ddlearn.lora import LoraConfig                 # as: from peft import LoraConfig
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v",
                                                                   "to_out.0"]))

| file           | what it holds                                                           |
|----------------|-------------------------------------------------------------------------|
| `layer.py`     | the layer h = W0 x + b + s·(α/r)·B A x, merging, the scale s (the paper) |
| `config.py`    | LoraConfig: which layers, r, α                                          |
| `injection.py` | inject_adapter_in_model, peft's state-dict helpers                      |
| `files.py`     | diffusers' pytorch_lora_weights.safetensors (read by the pipelines)     |
"""

from ddlearn.lora.config import LoraConfig, as_lora_config
from ddlearn.lora.injection import (
    PEFT_TO_DIFFUSERS,
    add_lora_layers,
    check_no_adapter,
    convert_state_dict_to_diffusers,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    linear_names,
    set_peft_model_state_dict,
)
from ddlearn.lora.layer import (
    LoRALinear,
    lora_layers,
    lora_scale_from,
    scale_lora_layers,
    scaled_lora_layers,
    unscale_lora_layers,
)

__all__ = ["LoraConfig", "as_lora_config", "LoRALinear", "lora_layers", "inject_adapter_in_model",
           "add_lora_layers", "check_no_adapter", "linear_names", "get_peft_model_state_dict",
           "set_peft_model_state_dict", "PEFT_TO_DIFFUSERS", "convert_state_dict_to_diffusers",
           "scale_lora_layers", "unscale_lora_layers", "scaled_lora_layers", "lora_scale_from"]
