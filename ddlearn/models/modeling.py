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

from ddlearn.config import ConfigMixin
from ddlearn.files import atomic_write
from ddlearn.hub import resolve_folder


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

    def save_pretrained(self, save_directory) -> Path:
        folder = Path(save_directory)
        self.save_config(folder)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        write = lambda tmp: save_file(state, tmp, {"format": "pt"})
        atomic_write(folder / self.weights_name, write)
        return folder

    @classmethod
    def from_pretrained(cls, path_or_repo_id, subfolder=None, torch_dtype=None):
        folder = resolve_folder(path_or_repo_id, subfolder)
        model = cls.from_config(cls.load_config(folder))
        state = convert_legacy_attention_keys(load_weights(folder, cls.weights_name))
        check_state_dict(model, state, source=folder)
        model.load_state_dict(state, strict=True)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        return model.eval()


def load_weights(folder: Path, weights_name: str) -> dict:
    """Read the safetensors file in `folder`; a legacy `.bin` only through `weights_only=True`."""
    path = folder / weights_name
    legacy = path.with_suffix(".bin")
    if not path.exists() and legacy.exists():
        try:
            return torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{legacy} is a pickle file that holds more than tensors, so ddlearn "
                             f"refuses to unpickle it (it could run code). Convert it to "
                             f"safetensors with a trusted tool first ({type(e).__name__})."
                             ) from None
    if not path.exists():
        raise FileNotFoundError(f"no weights file {weights_name} in {folder}; save the model with "
                                f"`.save_pretrained(dir)` or download the checkpoint again")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is truncated or corrupt ({str(e).splitlines()[0]}); "
                         f"delete it and save or download the checkpoint again") from None


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
