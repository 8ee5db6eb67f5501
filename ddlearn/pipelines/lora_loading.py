"""LoRA on a Stable Diffusion pipeline: load, scale, fuse, unfuse, unload, save, as diffusers.

Mirrors `diffusers.loaders.StableDiffusionLoraLoaderMixin` and the `LoraBaseMixin` methods it
inherits, in one flat class that StableDiffusionPipeline (and so img2img, inpainting) inherits:

    pipe = StableDiffusionPipeline.from_pretrained("data/models/tiny-sd-butterflies")
    pipe.load_lora_weights("my-lora/")        # its pytorch_lora_weights.safetensors
    pipe("a butterfly", cross_attention_kwargs={"scale": 0.5})      # s = 0.5 for this call
    pipe.fuse_lora(lora_scale=0.7)            # W' = W0 + 0.7·(α/r)·B A in every LoRA layer
    pipe.unfuse_lora()                        # W0 again; s stays 0.7, as in diffusers
    pipe.unload_lora_weights()                # plain Linear layers again

The layer and its notation are in `ddlearn/lora/layer.py`, the file in `ddlearn/lora/files.py`.
One LoRA per pipeline at a time (diffusers can mix several with set_adapters): unload it, or fuse
and then unload it, before loading another. Fusing twice is an error (diffusers skips the second
merge but still rescales the layers by its lora_scale, so that its unfuse then subtracts the
wrong ΔW).
"""

import warnings

from torch import nn

from ddlearn.lora import lora_layers
from ddlearn.lora.files import (
    find_lora_file,
    load_lora_into_model,
    lora_targets,
    read_lora_file,
    split_components,
    write_lora_file,
)
from ddlearn.options import hub_options, refuse, unexpected

PICKLE = "ddlearn reads and writes LoRA weights as safetensors only (a pickle can run code)"


class StableDiffusionLoraLoaderMixin:
    """LoRA layers in `unet` and `text_encoder` (diffusers' StableDiffusionLoraLoaderMixin)."""

    _lora_loadable_modules = ["unet", "text_encoder"]
    unet_name, text_encoder_name = "unet", "text_encoder"

    # ---- loading ---------------------------------------------------------------------------------
    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name=None,
                          hotswap: bool = False, **kwargs):
        """Load a LoRA (a file, a folder, a Hub id or a state dict) into unet and text_encoder.
        Every key is checked against its model before any layer changes."""
        where = f"{type(self).__name__}.load_lora_weights"
        refuse(where, "unload_lora_weights() first, then load the new LoRA", hotswap=hotswap)
        kwargs.pop("low_cpu_mem_usage", None)  # no effect: A and B are small
        state_dict, _, metadata = self.lora_state_dict(pretrained_model_name_or_path_or_dict,
                                                       return_lora_metadata=True, **kwargs)
        if not state_dict:
            raise ValueError(f"{where}: the LoRA holds no weights")
        parts = split_components(state_dict, metadata, self._lora_loadable_modules)
        # 1. every component checked first, so that a bad file leaves the pipeline as it was
        plans = {name: lora_targets(getattr(self, name), sd, md, name)
                 for name, (sd, md) in parts.items()}
        # 2. then the layers wrapped and A, B copied in (diffusers names the first "default_0")
        for name, targets in plans.items():
            load_lora_into_model(getattr(self, name), targets, adapter_name or "default_0")

    @classmethod
    def lora_state_dict(cls, pretrained_model_name_or_path_or_dict, **kwargs):
        """(state_dict, network_alphas) as diffusers returns them, and the adapter metadata too
        with return_lora_metadata=True. network_alphas is None: diffusers fills it only from
        kohya-format files, which ddlearn refuses."""
        where = f"{cls.__name__}.lora_state_dict"
        return_metadata = kwargs.pop("return_lora_metadata", False)
        weight_name, subfolder = kwargs.pop("weight_name", None), kwargs.pop("subfolder", None)
        if kwargs.pop("use_safetensors", None) is False:
            raise NotImplementedError(f"{where}: use_safetensors=False; {PICKLE}")
        kwargs.pop("unet_config", None)  # diffusers uses it for SDXL kohya files only
        hub = hub_options(kwargs)
        if kwargs:
            raise unexpected(where, next(iter(kwargs)), ["weight_name", "subfolder",
                                                         "use_safetensors", "adapter_name",
                                                         "return_lora_metadata"], loading=True)
        source = pretrained_model_name_or_path_or_dict
        if isinstance(source, dict):
            state_dict, metadata = dict(source), None
        else:
            state_dict, metadata = read_lora_file(find_lora_file(source, weight_name, subfolder,
                                                                 **hub))
        split_components(state_dict, None, cls._lora_loadable_modules)  # refuses kohya keys
        return (state_dict, None, metadata) if return_metadata else (state_dict, None)

    # ---- saving ----------------------------------------------------------------------------------
    @classmethod
    def save_lora_weights(cls, save_directory, unet_lora_layers=None,
                          text_encoder_lora_layers=None, is_main_process: bool = True,
                          weight_name=None, save_function=None, safe_serialization: bool = True,
                          unet_lora_adapter_metadata=None, text_encoder_lora_adapter_metadata=None):
        """Write `unet.<key>` and `text_encoder.<key>` of the given LoRA state dicts (or modules)
        to save_directory/pytorch_lora_weights.safetensors, with the metadata (LoraConfig dicts)
        diffusers reads α from."""
        where = f"{cls.__name__}.save_lora_weights"
        refuse(where, "ddlearn writes the file itself, atomically", save_function=save_function)
        if not safe_serialization:
            raise NotImplementedError(f"{where}: safe_serialization=False; {PICKLE}")
        layers = {"unet": unet_lora_layers, "text_encoder": text_encoder_lora_layers}
        metadata = {"unet": unet_lora_adapter_metadata,
                    "text_encoder": text_encoder_lora_adapter_metadata}
        if not any(layers.values()):
            raise ValueError("You must pass at least one of `unet_lora_layers` or "
                             "`text_encoder_lora_layers`.")
        as_dict = lambda d: d.state_dict() if isinstance(d, nn.Module) else \
            d.to_dict() if hasattr(d, "to_dict") else d
        state = {f"{c}.{k}": v for c, d in layers.items() if d for k, v in as_dict(d).items()}
        packed = {f"{c}.{k}": v for c, d in metadata.items() if d and layers[c]
                  for k, v in as_dict(d).items()}
        if is_main_process:
            return write_lora_file(save_directory, state, weight_name, packed)

    # ---- fusing, scaling, unloading --------------------------------------------------------------
    def fuse_lora(self, components=("unet", "text_encoder"), lora_scale: float = 1.0,
                  safe_fusing: bool = False, adapter_names=None, **kwargs):
        """W' = W0 + lora_scale·s·(α/r)·B A in every LoRA layer of `components`; s stays
        multiplied by lora_scale, as in diffusers."""
        models = self._lora_components(components, "fuse_lora", kwargs)
        self._check_adapter_names(adapter_names)
        fused = [name for name, m in models.items() if any(l.merged for _, l in lora_layers(m))]
        if fused:
            raise RuntimeError(f"the LoRA is already fused into {', '.join(fused)}: fusing again "
                               f"would add it twice; call unfuse_lora() first")
        if not models:
            raise ValueError(f"nothing to fuse: no LoRA is loaded in {', '.join(components)}; "
                             f"load one with load_lora_weights(...) first")
        for model in models.values():
            model.fuse_lora(lora_scale, safe_fusing=safe_fusing)

    def unfuse_lora(self, components=("unet", "text_encoder"), **kwargs):
        """W0 back in every fused LoRA layer of `components` (a warning if none was fused)."""
        models = self._lora_components(components, "unfuse_lora", kwargs)
        if not any(l.merged for m in models.values() for _, l in lora_layers(m)):
            warnings.warn("no LoRA is fused: nothing to unfuse", stacklevel=2)
        for model in models.values():
            model.unfuse_lora()

    def unload_lora_weights(self):
        """Plain Linear layers again in unet and text_encoder (a fused LoRA stays in W)."""
        for model in self._lora_components(self._lora_loadable_modules).values():
            model.unload_lora()

    def set_adapters(self, adapter_names, adapter_weights=None):
        """s of the loaded adapter: one number, or {"unet": w, "text_encoder": w}."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        self._check_adapter_names(names)
        weights = adapter_weights if isinstance(adapter_weights, list) else [adapter_weights]
        if len(weights) != len(names):
            raise ValueError(f"Length of adapter names {len(names)} is not equal to the length of "
                             f"the weights {len(weights)}")
        for name, model in self._lora_components(self._lora_loadable_modules).items():
            weight = weights[0].get(name) if isinstance(weights[0], dict) else weights[0]
            if isinstance(weight, dict):
                raise NotImplementedError("block-wise LoRA weights ({'down': ..., 'up': ...}) "
                                          "are a diffusers feature ddlearn does not implement")
            for _, layer in lora_layers(model):
                layer.scale = 1.0 if weight is None else float(weight)

    def disable_lora(self):
        for model in self._lora_components(self._lora_loadable_modules).values():
            model.disable_adapters()

    def enable_lora(self):
        for model in self._lora_components(self._lora_loadable_modules).values():
            model.enable_adapters()

    def get_list_adapters(self) -> dict:
        """{component: [adapter names]}, e.g. {"unet": ["default_0"]}."""
        return {name: model.active_adapters() for name, model in
                self._lora_components(self._lora_loadable_modules).items()}

    def get_active_adapters(self) -> list:
        return next(iter(self.get_list_adapters().values()), [])

    # ---- helpers ---------------------------------------------------------------------------------
    def _lora_components(self, components, where: str = "", kwargs=None) -> dict:
        """{name: model} of the `components` that hold LoRA layers; checks diffusers' options."""
        for old in ("fuse_unet", "fuse_text_encoder", "unfuse_unet", "unfuse_text_encoder"):
            if (kwargs or {}).pop(old, None) is not None:
                warnings.warn(f"{where}: {old} is deprecated and ignored, as in diffusers; pass "
                              f"components=[...]", FutureWarning, stacklevel=3)
        if kwargs:
            raise unexpected(f"{type(self).__name__}.{where}", next(iter(kwargs)),
                             ["components", "lora_scale", "safe_fusing", "adapter_names"])
        if not components:
            raise ValueError("`components` cannot be an empty list.")
        for name in components:
            if name not in self._lora_loadable_modules:
                raise ValueError(f"{name} is not found in self._lora_loadable_modules="
                                 f"{self._lora_loadable_modules}")
        models = {name: getattr(self, name, None) for name in components}
        return {n: m for n, m in models.items() if m is not None and lora_layers(m)}

    def _check_adapter_names(self, names):
        present = {a for m in self._lora_components(self._lora_loadable_modules).values()
                   for a in m.active_adapters()}
        missing = set(names or []) - present
        if missing:
            raise ValueError(f"Adapter name(s) {missing} not in the list of present adapters: "
                             f"{present}.")
