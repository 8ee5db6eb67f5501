"""Where checkpoints come from: a local folder, or a Hub id ("org/name") fetched by huggingface_hub.

ddlearn runs offline by default (shipped checkpoints in `data/models/`). When a Hub id is asked for:
- online, `huggingface_hub.snapshot_download` fetches only what ddlearn reads (JSON, tokenizer
  files and one weights file per folder, safetensors preferred) into the usual HF cache;
- offline (`HF_HUB_OFFLINE=1`) it uses the cache if the id was downloaded before, and otherwise
  raises one `HubOfflineError` at once, naming the id and saying how to get it. No retries, no long
  traceback.
"""

import os
from pathlib import Path

_TEXT_FILES = ["*.json", "*.txt"]


class HubOfflineError(OSError):
    """A Hub id was requested but cannot be fetched (offline, or the Hub is unreachable)."""


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def resolve_folder(path_or_repo_id, subfolder=None, variant=None, **hub_options) -> Path:
    """A local folder for `path_or_repo_id` (+ `subfolder`), downloaded first if it is a Hub id.

    `hub_options` (`revision`, `cache_dir`, `token`, `local_files_only`, ...) go to
    huggingface_hub; a local folder ignores them, as in diffusers. `variant` ("fp16") picks which
    weights file to download."""
    local = Path(path_or_repo_id).expanduser()
    if local.exists():
        folder = local / subfolder if subfolder else local
        if not folder.is_dir():
            raise FileNotFoundError(f"{local} has no subfolder {subfolder!r}")
        return folder
    name = str(path_or_repo_id)
    if name.count("/") != 1 or name.startswith((".", "/")) or " " in name:
        raise FileNotFoundError(f"{name!r} is neither an existing folder nor a Hub id like "
                                "'org/name'")
    root = Path(_snapshot(name, subfolder, variant, hub_options))
    return root / subfolder if subfolder else root


def _snapshot(repo_id: str, subfolder, variant, hub_options: dict) -> str:
    from huggingface_hub import snapshot_download  # imported late: only needed for Hub ids

    prefix = f"{subfolder}/" if subfolder else ""
    offline = is_offline() or hub_options.get("local_files_only")
    try:
        if offline:
            return snapshot_download(repo_id, **{**hub_options, "local_files_only": True})
        patterns = _patterns_for(repo_id, prefix, variant, hub_options)
        return snapshot_download(repo_id, allow_patterns=patterns, **hub_options)
    except Exception as e:  # noqa: BLE001 - any failure here means "could not get the files"
        reason = ("offline and it is not in the local cache" if offline else
                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no details'}")
        raise HubOfflineError(
            f"cannot load Hub id '{repo_id}' ({reason}). Download it once while online "
            f"(`huggingface-cli download {repo_id}`), or pass a local folder instead, e.g. the "
            f"shipped checkpoints in ddlearn's data/models/."
        ) from None


def _patterns_for(repo_id: str, prefix: str, variant, hub_options: dict) -> list:
    """JSON/text files, plus one weights file per folder: safetensors if present, else the .bin
    (the `variant`'s file, e.g. diffusion_pytorch_model.fp16.safetensors, when one is asked)."""
    from huggingface_hub import HfApi

    listing = {k: v for k, v in hub_options.items() if k in ("revision", "token")}
    files = [f for f in HfApi().list_repo_files(repo_id, **listing) if f.startswith(prefix)]
    patterns = [prefix + p for p in _TEXT_FILES]
    weight_names = ["diffusion_pytorch_model", "model", "pytorch_model"]
    if variant:
        weight_names = [f"{w}.{variant}" for w in weight_names]
    folders = {os.path.dirname(f) for f in files}
    for folder in folders:
        stem = f"{folder}/" if folder else ""
        for ext in ("safetensors", "bin"):
            found = [f"{stem}{w}.{ext}" for w in weight_names if f"{stem}{w}.{ext}" in files]
            if found:
                patterns.append(found[0])
                break
    return patterns
