"""diffusers' LoRA file, `pytorch_lora_weights.safetensors`: finding, reading, checking, writing it.

What diffusers' `lora_state_dict`, `save_lora_weights` and `load_lora_adapter` do with the file
(diffusers `loaders/lora_base.py`, `loaders/peft.py`). One file holds every component's LoRA:

    unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight    A (r, in)
    unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight    B (out, r)
    text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight      (transformers 5
                                                                       writes no `text_model.`)
    header: {"format": "pt", "lora_adapter_metadata": '{"unet.lora_alpha": 8, "unet.r": 4, ...}'}

The metadata (written when the caller passes `unet_lora_adapter_metadata`, a LoraConfig's
`to_dict()`) gives α per module; without it diffusers takes α = r (scaling 1), and so does
ddlearn. Older diffusers names are read too: `to_q.lora.down.weight` (its training scripts'),
`q_proj.lora_linear_layer.up.weight`, `attn1.processor.to_q_lora.down.weight`.

Loading is strict and checked before anything changes: every key must name a Linear layer of the
model, with fitting shapes. kohya-ss / A1111 files (`lora_unet_...`) are refused, saying how to
convert them with diffusers.
"""

import json
import re
import warnings
from collections import Counter
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ddlearn.hub import HubOfflineError, is_offline
from ddlearn.lora.config import LoraConfig
from ddlearn.lora.injection import add_lora_layers, check_no_adapter, set_peft_model_state_dict
from ddlearn.models.weights import save_weights

LORA_WEIGHT_NAME_SAFE = "pytorch_lora_weights.safetensors"
LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")


# ---- the file ------------------------------------------------------------------------------------
def find_lora_file(source, weight_name=None, subfolder=None, **hub_options) -> Path:
    """A LoRA file itself, a folder holding one (`weight_name`, else diffusers' guess), or a Hub
    id (its `weight_name`, default pytorch_lora_weights.safetensors, downloaded)."""
    local = Path(source).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        folder = local / subfolder if subfolder else local
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if weight_name is None:  # diffusers' guess: its own name first, else any .safetensors
            guesses = [f for f in found if f.endswith(".safetensors") and not any(
                s in f for s in ("scheduler", "optimizer", "checkpoint"))]
            weight_name = LORA_WEIGHT_NAME_SAFE if LORA_WEIGHT_NAME_SAFE in guesses else \
                next(iter(guesses), LORA_WEIGHT_NAME_SAFE)
            if len(guesses) > 1 and weight_name != LORA_WEIGHT_NAME_SAFE:
                warnings.warn(f"{folder} holds several .safetensors files; loading {weight_name}"
                              f" (pass weight_name= to choose)", stacklevel=3)
        if weight_name not in found:
            raise FileNotFoundError(f"no LoRA file {weight_name} in {folder}; it holds "
                                    f"{', '.join(found) or 'nothing'}. Pass weight_name=<file> "
                                    f"or the file's own path")
        return folder / weight_name
    name = str(source)
    if name.count("/") != 1 or name.startswith((".", "/")) or " " in name:
        raise FileNotFoundError(f"{name!r} is neither an existing file or folder nor a Hub id "
                                f"like 'org/name'")
    return download(name, weight_name or LORA_WEIGHT_NAME_SAFE, subfolder, hub_options)


def download(repo_id: str, filename: str, subfolder, hub_options: dict) -> Path:
    """One file of a Hub repo through huggingface_hub (from its cache when offline)."""
    from huggingface_hub import hf_hub_download  # imported late: only needed for Hub ids

    keep = ("revision", "cache_dir", "token", "force_download", "local_files_only")
    options = {k: v for k, v in hub_options.items() if k in keep}
    offline = is_offline() or options.get("local_files_only")
    try:
        return Path(hf_hub_download(repo_id, filename, subfolder=subfolder,
                                    **{**options, "local_files_only": bool(offline)}))
    except Exception as e:  # noqa: BLE001 - any failure here means "could not get the file"
        reason = "offline and it is not in the local cache" if offline else type(e).__name__
        raise HubOfflineError(f"cannot load {filename} of Hub id '{repo_id}' ({reason}). Download"
                              f" it once while online (`huggingface-cli download {repo_id} "
                              f"{filename}`), or pass a local file or folder") from None


def read_lora_file(path: Path) -> tuple:
    """-> (state_dict, adapter metadata or None), from a safetensors file only."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path.name} is not a safetensors file: ddlearn reads LoRA weights from "
                         f"safetensors only (a pickled .bin can run code when loaded). Convert a "
                         f"trusted one: safetensors.torch.save_file(torch.load(path, "
                         f"weights_only=True), '{LORA_WEIGHT_NAME_SAFE}')")
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            state_dict = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); "
                         f"save the LoRA again with save_lora_weights") from None
    raw = header.get(LORA_ADAPTER_METADATA_KEY)
    return state_dict, (json.loads(raw) if raw else None)


def write_lora_file(folder, state_dict: dict, weight_name=None, metadata=None) -> Path:
    """Write atomically with the header {"format": "pt"} and, given `metadata` ({"unet.r": 4,
    ...}), diffusers' `lora_adapter_metadata` JSON."""
    if Path(folder).is_file():
        raise ValueError(f"save_directory {folder} is a file; give a folder")
    header = {"format": "pt"}
    if metadata:
        plain = {k: sorted(v) if isinstance(v, set) else v for k, v in metadata.items()}
        header[LORA_ADAPTER_METADATA_KEY] = json.dumps(plain, indent=2, sort_keys=True)
    return save_weights(Path(folder) / (weight_name or LORA_WEIGHT_NAME_SAFE), state_dict, header)


# ---- keys ----------------------------------------------------------------------------------------
def check_not_kohya(state_dict: dict):
    kohya = [k for k in state_dict if k.startswith(KOHYA_PREFIXES)]
    if kohya:
        raise ValueError(f"this is a kohya-ss / A1111 LoRA file (keys like {kohya[0]}); ddlearn "
                         f"reads diffusers-format LoRA files. Convert it with diffusers: "
                         f"pipe.load_lora_weights(file) on a diffusers pipeline, then "
                         f"StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers="
                         f"get_peft_model_state_dict(pipe.unet, adapter_name='default_0'), "
                         f"unet_lora_adapter_metadata=pipe.unet.peft_config['default_0'].to_dict()"
                         f") (and the same for text_encoder), which keeps its alphas")


def split_components(state_dict: dict, metadata, components) -> dict:
    """{component: (its keys without the `unet.` prefix, its metadata)}; a key of no component
    is an error (diffusers would skip it silently)."""
    check_not_kohya(state_dict)
    parts = {c: ({}, {}) for c in components}
    for key, value in state_dict.items():
        component, _, rest = key.partition(".")
        if component not in parts:
            raise ValueError(f"LoRA key {key!r} names no component: diffusers-format LoRA files "
                             f"prefix every key with {' or '.join(c + '.' for c in components)}"
                             f" (a file saved by unet.save_lora_adapter has none: pass "
                             f"{{'unet.' + k: v for k, v in state_dict.items()}})")
        parts[component][0][rest] = value
    for key, value in (metadata or {}).items():
        component, _, rest = key.partition(".")
        if component in parts:
            parts[component][1][rest] = value
    return {c: (sd, md or None) for c, (sd, md) in parts.items() if sd}


#: older diffusers key names -> peft's (diffusers utils/state_dict_utils.py), applied in order
LEGACY_NAMES = [(r"\.processor\.", "."), (r"\.to_out_lora\.", ".to_out.0.lora."),
                (r"\.(to_[qkv])_lora\.", r".\1.lora."),
                (r"\.lora(_linear_layer)?\.down\.", ".lora_A."),
                (r"\.lora(_linear_layer)?\.up\.", ".lora_B.")]
CLIP_NAMES = [(r"self_attn\.to_([qkv])\.", r"self_attn.\1_proj."),
              (r"self_attn\.to_out\.0\.", "self_attn.out_proj.")]


def to_peft_key(key: str, model: nn.Module, text_encoder: bool) -> str:
    for pattern, new in LEGACY_NAMES + (CLIP_NAMES if text_encoder else []):
        key = re.sub(pattern, new, key)
    if hasattr(model, "text_model") and not key.startswith("text_model."):
        key = f"text_model.{key}"  # CLIP: transformers 5 leaves `text_model.` out of its paths
    return key


def lora_targets(model: nn.Module, state_dict: dict, metadata=None, component="unet") -> dict:
    """{module path: (A, B, α)} for one component's keys, after every check; nothing changes."""
    check_no_adapter(model)
    kind = type(model).__name__
    # 1. peft names, grouped per module: {path: {"A": A, "B": B}}
    pairs = {}
    for key, value in state_dict.items():
        found = re.fullmatch(r"(.+)\.lora_([AB])\.weight",
                             to_peft_key(key, model, component == "text_encoder"))
        if found is None:
            raise ValueError(f"{component}.{key} is not a LoRA matrix: ddlearn reads diffusers-"
                             f"format keys <module>.lora_A.weight and <module>.lora_B.weight")
        pairs.setdefault(found[1], {})[found[2]] = value
    # 2. each names a Linear layer of this model, and the shapes fit it
    modules = dict(model.named_modules())
    missing = [path for path in pairs if not isinstance(modules.get(path), nn.Linear)]
    if missing:
        raise ValueError(f"this LoRA file was made for another model: e.g. {component}.{missing[0]}"
                         f" has no Linear layer in this {kind} ({len(missing)} of its "
                         f"{len(pairs)} layers have none)")
    config = LoraConfig(**metadata) if metadata else None
    targets = {}
    for path, ab in pairs.items():
        layer, short = modules[path], ".".join(path.split(".")[-2:])
        if set(ab) != {"A", "B"}:
            raise ValueError(f"{component}.{path} has lora_{''.join(ab)} but no "
                             f"lora_{'AB'.strip(''.join(ab))}: the LoRA file is incomplete")
        A, B = ab["A"], ab["B"]
        if A.ndim != 2 or A.shape[1] != layer.in_features:
            raise ValueError(f"lora_A of {short} is {tuple(A.shape)} but this model's {short} "
                             f"takes {layer.in_features} inputs: made for another model")
        if tuple(B.shape) != (layer.out_features, A.shape[0]):
            raise ValueError(f"lora_B of {short} is {tuple(B.shape)} but this model's {short} "
                             f"gives {layer.out_features} outputs (rank {A.shape[0]} from lora_A):"
                             f" made for another model")
        alpha = config.rank_and_alpha(path)[1] if config else A.shape[0]  # no metadata: α = r
        targets[path] = (A, B, alpha)
    return targets


def load_lora_into_model(model: nn.Module, targets: dict, adapter_name: str):
    """Wrap the layers of `targets` (r from A, α from lora_targets) and copy A and B in."""
    rank = lambda path: targets[path][0].shape[0]
    r = Counter(map(rank, targets)).most_common(1)[0][0]
    alpha = Counter(t[2] for t in targets.values()).most_common(1)[0][0]
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=sorted(targets),
                        rank_pattern={p: rank(p) for p in targets if rank(p) != r},
                        alpha_pattern={p: t[2] for p, t in targets.items() if t[2] != alpha})
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave no trace
        add_lora_layers(model, {p: (rank(p), t[2]) for p, t in targets.items()}, config,
                        adapter_name)
    set_peft_model_state_dict(model, {f"{p}.lora_{x}.weight": t[i] for p, t in targets.items()
                                      for i, x in enumerate("AB")}, adapter_name)
