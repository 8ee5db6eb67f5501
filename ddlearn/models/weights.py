"""Checkpoint files on disk: safetensors in, safetensors out, with diffusers' file names.

What `ModelMixin.from_pretrained` / `save_pretrained` (modeling.py) do with the files:
`save_weights` writes one safetensors file atomically; `load_weights` reads it (a legacy
`.bin` only with `torch.load(weights_only=True)`, which refuses anything but tensors);
`with_variant` gives diffusers' variant names (`diffusion_pytorch_model.fp16.safetensors`);
`check_state_dict` names every missing, unexpected or wrongly shaped key before loading.

Reference: diffusers `models/model_loading_utils.py` and `utils/constants.py` (file names).
"""

import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ddlearn.files import atomic_write


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


def save_weights(path, state_dict: dict, metadata=None) -> Path:
    """Write a state dict to one safetensors file, atomically (`ddlearn.files.atomic_write`).

    safetensors stores plain CPU tensors laid out contiguously, so each is detached, made
    contiguous and moved to the CPU first. `metadata` is the file header's string-to-string
    dict: diffusers writes {"format": "pt"}."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata))


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
