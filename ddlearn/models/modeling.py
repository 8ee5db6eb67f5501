"""Saving and loading models in the diffusers checkpoint layout: `config.json` + safetensors.

Mirrors `diffusers.ModelMixin.from_pretrained / save_pretrained`, nanoGPT-style: build the model
from its config, then copy the state dict key for key, after checking that keys and shapes
match exactly.

    unet = UNet2DModel.from_pretrained("data/models/ddpm-butterflies-32", subfolder="unet")
    unet.save_pretrained("my-unet/")  # -> config.json, diffusion_pytorch_model.safetensors

Weights load from safetensors only (a pickle can run code when unpickled). A legacy `.bin` is read
with `torch.load(weights_only=True)`, which refuses anything but tensors. Saves are atomic.
"""

import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ddlearn.config import ConfigMixin, init_parameters
from ddlearn.files import atomic_write
from ddlearn.hub import resolve_folder
from ddlearn.options import hub_options, refuse_unsupported, unexpected


class ModelMixin(torch.nn.Module, ConfigMixin):
    """Base of every ddlearn model: config, from_pretrained, save_pretrained, device, dtype."""

    config_name = "config.json"
    weights_name = "diffusion_pytorch_model.safetensors"

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
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        check_shard_size(where, state, max_shard_size)
        folder = Path(save_directory)
        if is_main_process:
            self.save_config(folder)
        write = lambda tmp: save_file(state, tmp, {"format": "pt"})
        atomic_write(folder / with_variant(self.weights_name, variant), write)
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


def with_variant(weights_name: str, variant=None) -> str:
    """diffusion_pytorch_model.safetensors -> diffusion_pytorch_model.fp16.safetensors."""
    if not variant:
        return weights_name
    stem, ext = weights_name.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def check_shard_size(where: str, state: dict, max_shard_size):
    """diffusers splits a checkpoint bigger than `max_shard_size` ("10GB", "500MB" or bytes);
    ddlearn writes one file, so it refuses only when a split would be needed."""
    if max_shard_size is None:
        return
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    if isinstance(max_shard_size, str):
        number, unit = re.fullmatch(r"\s*([\d.]+)\s*([KMG]i?B)\s*", max_shard_size, re.I).groups()
        max_shard_size = float(number) * units[unit.upper()]
    size = sum(t.numel() * t.element_size() for t in state.values())
    if size > max_shard_size:
        raise NotImplementedError(f"{where}: the weights ({size / 1e6:.0f} MB) exceed "
                                  f"max_shard_size, and ddlearn does not write sharded files; "
                                  f"raise max_shard_size or leave it out")


def load_weights(folder: Path, weights_name: str, variant=None, use_safetensors=None) -> dict:
    """Read the safetensors file in `folder`; a legacy `.bin` only through `weights_only=True`.

    `use_safetensors=True` insists on the safetensors file, False asks for the `.bin`, None
    (the default) takes the safetensors file and falls back to the `.bin`, as in diffusers."""
    path = folder / with_variant(weights_name, variant)
    legacy = folder / with_variant(LEGACY_WEIGHTS.get(weights_name, weights_name), variant)
    legacy = legacy.with_suffix(".bin")
    if use_safetensors is False or (use_safetensors is None and not path.exists()
                                    and legacy.exists()):
        if not legacy.exists():
            raise FileNotFoundError(f"use_safetensors=False asks for {legacy.name}, which is not "
                                    f"in {folder}; leave use_safetensors out to load {path.name}")
        try:
            return torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{legacy} is a pickle file that holds more than tensors, so ddlearn "
                             f"refuses to unpickle it (it could run code). Convert it to "
                             f"safetensors with a trusted tool first ({type(e).__name__})."
                             ) from None
    if not path.exists():
        asked = " (use_safetensors=True)" if use_safetensors else ""
        raise FileNotFoundError(f"no weights file {path.name} in {folder}{asked}; save the model "
                                f"with `.save_pretrained(dir)` or download the checkpoint again")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is truncated or corrupt ({str(e).splitlines()[0]}); "
                         f"delete it and save or download the checkpoint again") from None


# transformers names its pickled weights pytorch_model.bin (diffusers: diffusion_pytorch_model.bin)
LEGACY_WEIGHTS = {"model.safetensors": "pytorch_model.safetensors"}
LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def convert_legacy_attention_keys(state: dict) -> dict:
    """Checkpoints saved before diffusers 0.14 (google/ddpm-cat-256, ...) name the attention
    projections query/key/value/proj_attn; today's names are to_q/to_k/to_v/to_out.0."""
    pattern = re.compile(r"(attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
    rename = lambda k: pattern.sub(lambda m: f"{m[1]}.{LEGACY_ATTENTION[m[2]]}.{m[3]}", k)
    return {rename(k): v for k, v in state.items()}


def check_state_dict(model: torch.nn.Module, state: dict, source="checkpoint"):
    """Raise one ValueError naming every missing, unexpected or wrongly shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("shape mismatches", wrong)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ValueError(f"{type(model).__name__} weights from {source} do not match its config "
                         f"({'; '.join(problems)}). Is config.json from the same checkpoint?")
