"""Textual-inversion files: diffusers' {S*: (n, d)} and A1111's, found locally or on the Hub.

| file                                | keys                                       | written by |
|-------------------------------------|--------------------------------------------|------------|
| `learned_embeds.safetensors` / .bin | {S*: (n, d)} or {S*: (d,)}                 | diffusers  |
| `<name>.pt`                         | {"string_to_param": {"*": (n, d)}, "name"} | A1111      |
| `<name>.safetensors`                | {"emb_params": (n, d)}                     | A1111      |

`check_new_tokens` refuses a token the tokenizer already has, before anything changes.
"""

from pathlib import Path

import torch
from safetensors.torch import load_file

from ddlearn.hub import HubOfflineError, is_offline

WEIGHTS_NAME = "learned_embeds.safetensors"
LEGACY_WEIGHTS_NAME = "learned_embeds.bin"  # tried after the safetensors file, as diffusers does


def read_embeddings(source, weight_name=None, subfolder=None, use_safetensors=None, hub=None):
    """A state dict or tensor as it is; else the file `source`, or `weight_name` (by default
    learned_embeds.safetensors, then learned_embeds.bin) in the folder or Hub repo `source`."""
    if isinstance(source, (dict, torch.Tensor)):
        return source
    names = [WEIGHTS_NAME] * (use_safetensors is not False) + \
        [LEGACY_WEIGHTS_NAME] * (use_safetensors is not True)
    names = [weight_name] if weight_name else names
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        found = [folder / n for n in names if (folder / n).is_file()]
        if not found:
            raise FileNotFoundError(f"no {' or '.join(names)} in {folder}; pass weight_name= to "
                                    f"load another file of that folder")
        path = found[0]
    elif not path.is_file():
        name = str(source)
        if name.count("/") != 1 or name.startswith((".", "/")) or " " in name:
            raise FileNotFoundError(f"{name!r} is neither a file, a folder, nor a Hub id like "
                                    f"'sd-concepts-library/cat-toy'")
        path = download(name, names, subfolder, hub or {})
    return read_file(path)


def download(repo_id: str, names: list, subfolder, hub: dict) -> Path:
    """The first of `names` in a Hub repo, through huggingface_hub's cache (only the cache when
    HF_HUB_OFFLINE=1), or one HubOfflineError as ddlearn.hub gives for models."""
    from huggingface_hub import hf_hub_download  # imported late: only needed for Hub ids

    hub = {**hub, "local_files_only": True} if is_offline() else hub
    for name in names:
        try:
            return Path(hf_hub_download(repo_id, name, subfolder=subfolder, **hub))
        except Exception as e:  # noqa: BLE001 - any failure means "could not get this file"
            reason = f"{type(e).__name__}: {(str(e) or 'no details').splitlines()[0]}"
    if is_offline():
        reason = "offline and it is not in the local cache"
    raise HubOfflineError(f"cannot load textual inversion {' or '.join(names)} of Hub id "
                          f"'{repo_id}' ({reason}). Download it once while online "
                          f"(`huggingface-cli download {repo_id}`), or pass a local file or folder")


def read_file(path: Path) -> dict:
    """safetensors, or a .pt/.bin through torch.load(weights_only=True): tensors, numbers and
    strings only, so a file can never run code (A1111's .pt files load this way)."""
    try:
        return load_file(path)
    except Exception:  # noqa: BLE001 - not safetensors: try the PyTorch format, as diffusers
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path} is neither a safetensors file nor a PyTorch .pt/.bin of tensors "
                         f"({type(e).__name__}); a textual inversion file holds diffusers' "
                         f"{{token: tensor}} or A1111's string_to_param / emb_params") from None


def token_and_embeds(state, token=None) -> tuple:
    """-> (S*, (n, d) tensor) from any of the formats; a given `token` overrides the file's."""
    if isinstance(state, torch.Tensor):
        embeds = state
    elif "string_to_param" in state:  # A1111 .pt; its token is "name"
        token, embeds = token or state.get("name"), state["string_to_param"]["*"]
    elif "emb_params" in state:  # A1111 safetensors (diffusers would call the token emb_params)
        embeds = state["emb_params"]
    elif len(state) == 1:  # diffusers
        loaded, embeds = next(iter(state.items()))
        token = token or loaded
    else:
        raise ValueError(f"not a textual inversion: keys {sorted(state)[:6]}; expected diffusers' "
                         f"{{token: tensor}}, or A1111's string_to_param or emb_params (SDXL "
                         f"files hold one per text encoder: pass state_dict['clip_l'], token=...)")
    if token is None:
        raise ValueError("this embedding (a tensor or an A1111 file) does not name its token; "
                         "pass the word to write in prompts, e.g. token='<my-concept>'")
    return token, embeds.detach().reshape(-1, embeds.shape[-1])  # (d,) or (n, d) -> (n, d)


def check_new_tokens(tokenizer, groups: list):
    """Each embedding's tokens [S*, S*_1, ...] new and given once, and no S*_n after them that
    `maybe_convert_prompt` would add to S* (diffusers checks S*_1)."""
    vocab, names = tokenizer.get_vocab(), [name for group in groups for name in group]
    for group in groups:
        for name in group + [f"{group[0]}_{len(group)}"]:
            if names.count(name) > 1:
                raise ValueError(f"token {name!r} is given twice; give each embedding its own")
            if name in vocab:
                loaded = name in tokenizer.added_tokens_encoder
                fix = f"or unload it first: pipe.unload_textual_inversion({group[0]!r})" \
                    if loaded else "it is one of the tokenizer's own words"
                raise ValueError(f"token {name!r} is already in the tokenizer's vocabulary (id "
                                 f"{vocab[name]}); pick another (token='<my-concept>'), {fix}")

