"""Saving and loading models in the diffusers checkpoint layout: `config.json` + safetensors.

Mirrors `diffusers.ModelMixin.from_pretrained / save_pretrained`, nanoGPT-style: build the model
from its config, then copy the state dict key for key, after checking that keys and shapes
match exactly.

    unet = UNet2DModel.from_pretrained("data/models/ddpm-butterflies-32", subfolder="unet")
    unet.save_pretrained("my-unet/")  # -> config.json, diffusion_pytorch_model.safetensors

Weights load from safetensors only (a pickle can run code when unpickled). A legacy `.bin` is read
with `torch.load(weights_only=True)`, which refuses anything but tensors. Saves are atomic.
The files themselves (names, variants, key checks) are `weights.py`'s.

Every model also takes LoRA adapters as diffusers' `PeftAdapterMixin` does (`add_adapter`,
`fuse_lora`, `unload_lora`, ...; the layers are `ddlearn/lora/`'s). `save_pretrained` refuses a
model that holds LoRA layers: their keys belong in a LoRA file (`save_lora_weights`), or, fused
and unloaded, in the weights themselves.
"""

from pathlib import Path

import torch

from ddlearn.config import ConfigMixin, init_parameters
from ddlearn.hub import resolve_folder
from ddlearn.lora import inject_adapter_in_model, lora_layers
from ddlearn.models.weights import (
    check_shard_size,
    check_state_dict,
    convert_legacy_attention_keys,
    load_weights,
    save_weights,
    with_variant,
)
from ddlearn.options import hub_options, refuse_unsupported, unexpected


class ModelMixin(torch.nn.Module, ConfigMixin):
    """Base of every ddlearn model: config, from_pretrained, save_pretrained, device, dtype.

    `only_supported` lists the diffusers config keys a model implements at one value only
    ({key: value}, or {key: {values}}): that value is accepted, in a config file or as an
    argument, and any other raises NotImplementedError naming the key, never silently ignored.
    """

    config_name = "config.json"
    weights_name = "diffusion_pytorch_model.safetensors"
    only_supported: dict = {}
    library = "diffusers"  # whose class this one mirrors (the text encoder: transformers)

    def __init__(self):
        super().__init__()
        if hasattr(self, "_config"):  # arguments of __init__ itself (UNet2DModel(act_fn=...))
            self.check_supported(self.config)

    @classmethod
    def check_supported(cls, config):
        for key, supported in cls.only_supported.items():
            if key not in config:
                continue
            value = config[key]
            value = tuple(value) if isinstance(value, list) else value  # JSON has no tuples
            if isinstance(value, tuple) and len(set(value)) == 1:
                value = value[0]  # one value per level, all the same: [False] * 4
            allowed = supported if isinstance(supported, set) else {supported}
            if not any(value == a for a in allowed):
                shown = " or ".join(sorted(repr(a) for a in allowed))
                raise NotImplementedError(
                    f"{cls.__name__}: config {key}={config[key]!r} is a {cls.library} option "
                    f"ddlearn implements only as {key}={shown}; use {cls.library} for this model")

    @classmethod
    def extract_init_kwargs(cls, config, **overrides) -> dict:
        """As ConfigMixin's, after refusing any `only_supported` key set to another value; those
        keys that are not arguments of this model are then dropped without a warning."""
        cls.check_supported({**dict(config), **overrides})
        params = init_parameters(cls)
        keep = lambda d: {k: v for k, v in dict(d).items()
                          if k in params or k not in cls.only_supported}
        return super().extract_init_kwargs(keep(config), **keep(overrides))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, save_directory, is_main_process: bool = True,
                        safe_serialization: bool = True, variant=None, max_shard_size=None,
                        **kwargs) -> Path:
        """Write config.json and the weights (`<weights_name>` with the variant, e.g.
        diffusion_pytorch_model.fp16.safetensors), atomically, as diffusers does."""
        where = f"{type(self).__name__}.save_pretrained"
        refuse_unsupported(where, kwargs)
        if kwargs:
            raise unexpected(where, next(iter(kwargs)), ["is_main_process", "safe_serialization",
                                                         "variant", "max_shard_size"])
        if not safe_serialization:
            raise NotImplementedError(f"{where}: safe_serialization=False would write a pickle, "
                                      f"which can run code when loaded; ddlearn saves safetensors")
        layers = lora_layers(self)
        if layers:  # diffusers writes them, as keys no model loader expects
            raise ValueError(f"{where}: this model holds {len(layers)} LoRA layers (e.g. "
                             f"{layers[0][0]}). Save the LoRA alone with "
                             f"pipe.save_lora_weights(dir, unet_lora_layers="
                             f"get_peft_model_state_dict(unet)), or merge it into the weights "
                             f"first: pipe.fuse_lora(); pipe.unload_lora_weights()")
        state = self.state_dict()
        check_shard_size(where, state, max_shard_size)
        folder = Path(save_directory)
        if is_main_process:
            self.save_config(folder)
        save_weights(folder / with_variant(self.weights_name, variant), state, {"format": "pt"})
        return folder

    @classmethod
    def from_pretrained(cls, path_or_repo_id, subfolder=None, torch_dtype=None,
                        use_safetensors=None, variant=None, output_loading_info: bool = False,
                        **kwargs):
        """Build the model from `config.json`, then copy in the weights key for key.

        Takes diffusers' arguments (see `ddlearn.options`): Hub options go to huggingface_hub,
        other keywords are config overrides (`in_channels=9`). Torch's global random state is
        left as it was, as in diffusers: `torch.manual_seed(0)` before loading still fixes what
        comes after."""
        where = f"{cls.__name__}.from_pretrained"
        hub = hub_options(kwargs)
        refuse_unsupported(where, kwargs)
        for name in kwargs:
            if name not in init_parameters(cls):
                raise unexpected(where, name, ["subfolder", "torch_dtype", "use_safetensors",
                                               "variant", "output_loading_info",
                                               *init_parameters(cls)], loading=True)
        if torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
            raise TypeError(f"{where}: torch_dtype must be a torch.dtype such as torch.float16, "
                            f"not {torch_dtype!r}")
        folder = resolve_folder(path_or_repo_id, subfolder, variant, **hub)
        with torch.random.fork_rng(devices=[]):  # the random init is thrown away: no trace
            model = cls.from_config(cls.load_config(folder), **kwargs)
        state = cls.convert_state_dict(load_weights(folder, cls.weights_name, variant,
                                                    use_safetensors))
        check_state_dict(model, state, source=folder)
        model.load_state_dict(state, strict=True)
        model = (model.to(torch_dtype) if torch_dtype is not None else model).eval()
        if output_loading_info:  # strict loading: nothing is ever missing or mismatched
            return model, {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [],
                           "error_msgs": []}
        return model

    @classmethod
    def convert_state_dict(cls, state: dict) -> dict:
        """Rename keys of older checkpoints to today's names (subclasses add their own)."""
        return convert_legacy_attention_keys(state)

    # ---- LoRA adapters (ddlearn/lora/), as diffusers' PeftAdapterMixin ------------------------
    def add_adapter(self, adapter_config, adapter_name: str = "default"):
        """Wrap the Linear layers `adapter_config.target_modules` names in LoRA layers (B = 0, so
        the model is unchanged until trained); only A and B then require grad. One per model."""
        inject_adapter_in_model(adapter_config, self, adapter_name)

    def active_adapters(self) -> list:
        return list(getattr(self, "peft_config", {})) if lora_layers(self) else []

    def disable_adapters(self):
        """The base model alone, h = W0 x (a fused LoRA is unfused first, as in peft)."""
        for _, layer in self._lora_layers_or_raise():
            layer.unmerge()
            layer.enabled = False

    def enable_adapters(self):
        for _, layer in self._lora_layers_or_raise():
            layer.enabled = True

    def fuse_lora(self, lora_scale: float = 1.0, safe_fusing: bool = False, adapter_names=None):
        """W' = W0 + s·(α/r)·B A in every LoRA layer, after s <- s·lora_scale (kept, as in
        diffusers, until set_adapters or unload)."""
        layers = self._lora_layers_or_raise()
        if any(layer.merged for _, layer in layers):
            raise RuntimeError(f"{type(self).__name__}: the LoRA is already fused; fusing again "
                               f"would add it twice: unfuse_lora() first")
        for _, layer in layers:
            layer.scale *= lora_scale
            layer.merge(safe_merge=safe_fusing)

    def unfuse_lora(self):
        """W0 back in every fused LoRA layer."""
        for _, layer in lora_layers(self):
            layer.unmerge()

    def unload_lora(self):
        """Plain nn.Linear layers again, holding the same W (still W' if fused) and b."""
        for path, layer in lora_layers(self):
            plain = torch.nn.Linear(layer.in_features, layer.out_features,
                                    bias=layer.bias is not None, device="meta")
            plain.weight, plain.bias = layer.weight, layer.bias
            self.set_submodule(path, plain)
        self.__dict__.pop("peft_config", None)

    def _lora_layers_or_raise(self) -> list:
        layers = lora_layers(self)
        if not layers:
            raise ValueError(f"{type(self).__name__} has no LoRA adapter: add one with "
                             f"add_adapter(LoraConfig(...)) or pipe.load_lora_weights(...)")
        return layers
