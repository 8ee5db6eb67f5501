"""Textual inversion: a new word for a concept, learned as one new row of CLIP's token table.

Mirrors diffusers' `TextualInversionLoaderMixin` (diffusers/loaders/textual_inversion.py). The
files it reads: `files.py`; the helpers of diffusers' training script
(examples/textual_inversion/textual_inversion.py): `training.py`.

Gal et al. add a pseudo-word S* ("<cat-toy>") to the tokenizer. Its embedding v*, a new row of the
text encoder's token table E_tok, is the only thing trained: the UNet, the VAE and the rest of the
text encoder stay frozen. The loss is the usual diffusion loss (eq. 1) on 3-5 images of the
concept, captioned "a photo of S*", minimised over v* alone:

    v* = argmin_v  E_{z~E(x), y, ε~N(0, I), t} || ε - ε_θ(z_t, t, c_θ(y)) ||²       (eq. 2)

| code                             | paper  | meaning                                          |
|----------------------------------|--------|--------------------------------------------------|
| `token` ("<cat-toy>")            | S*     | the pseudo-word, a token added to the tokenizer  |
| `embeds`, rows of E_tok          | v*     | its embedding: (d,), or (n, d) for n vectors     |
| `text_encoder(ids)[0]`           | c_θ(y) | the caption's embeddings, (B, T, d)              |
| `initializer_token` ("toy")      |        | a word whose embedding v* starts from            |

n vectors are n tokens S*, S*_1, ..., S*_{n-1}; `maybe_convert_prompt` writes "S*" in a prompt as
"S* S*_1 ...". Files: diffusers' `learned_embeds.safetensors` {S*: (n, d)}; A1111's (the
stable-diffusion-webui) `.pt` {"string_to_param": {"*": (n, d)}, "name": S*} or safetensors
{"emb_params": (n, d)}. Training, as diffusers' script does it:

    ids = add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "<cat-toy>", "toy")
    for model in (pipe.unet, pipe.vae, pipe.text_encoder): model.requires_grad_(False)
    table = pipe.text_encoder.get_input_embeddings().requires_grad_(True)
    optimizer, orig = torch.optim.AdamW(table.parameters(), lr=5e-4), table.weight.detach().clone()
    for batch in loader:  # eq. 2's loss, backward, optimizer.step(), zero_grad(); then
        restore_other_embeddings(pipe.text_encoder, orig, ids)  # only v* moves
    save_textual_inversion("out/", "<cat-toy>", learned_embeds(pipe.text_encoder, ids))

Reference: Gal et al. 2022, "An Image is Worth One Word: Personalizing Text-to-Image Generation
using Textual Inversion" (eq. 1, the latent diffusion loss; eq. 2, textual inversion).
"""


import json
import re

import torch
from torch import nn

from ddlearn.options import hub_options, unexpected
from ddlearn.textual_inversion.files import check_new_tokens, read_embeddings, token_and_embeds


class TextualInversionLoaderMixin:
    """diffusers' pipeline methods for textual inversion; they use `self.tokenizer` and
    `self.text_encoder` unless others are passed."""

    def maybe_convert_prompt(self, prompt, tokenizer):
        """"a S* cat" -> "a S* S*_1 S*_2 cat" for a 3-vector S* (a str or a list of str)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        converted = [expand_multi_vector_tokens(p, tokenizer) for p in prompts]
        return converted[0] if isinstance(prompt, str) else converted

    def load_textual_inversion(self, pretrained_model_name_or_path, token=None, tokenizer=None,
                               text_encoder=None, **kwargs):
        """Add the token(s) of a folder or Hub id (`weight_name`, default learned_embeds), a file,
        a state dict or a tensor, or of a list of these with a list of tokens, and their rows."""
        tokenizer, text_encoder = components(self, tokenizer, text_encoder)
        hub = hub_options(kwargs)  # cache_dir, revision, ...; the Hub token is `hf_token`
        if "hf_token" in kwargs:
            hub["token"] = kwargs.pop("hf_token")
        files = {k: kwargs.pop(k, None) for k in ("weight_name", "subfolder", "use_safetensors")}
        if kwargs:
            raise unexpected(f"{type(self).__name__}.load_textual_inversion", next(iter(kwargs)),
                             ["token", "tokenizer", "text_encoder", "hf_token", *files], True)
        # 1. one state dict (or tensor) per source; one (k, d) tensor may carry k tokens
        sources = pretrained_model_name_or_path
        sources = sources if isinstance(sources, list) else [sources]
        tokens = token if isinstance(token, list) else [token] * len(sources)
        states = [read_embeddings(s, hub=hub, **files) for s in sources]
        if len(tokens) > 1 and len(states) == 1 and isinstance(states[0], torch.Tensor):
            states = list(states[0])  # (k, d) -> k vectors (d,)
        if len(tokens) != len(states):
            raise ValueError(f"{len(states)} embeddings but {len(tokens)} tokens: give one token "
                             f"per embedding (token=[...]), or token=None to use the files' own")
        # 2. (name, vector (d,)) for each vector: S*, S*_1, ..., all checked before any change
        groups, vectors, d = [], [], text_encoder.get_input_embeddings().weight.shape[1]
        for state, tok in zip(states, tokens, strict=True):
            tok, embeds = token_and_embeds(state, tok)
            if embeds.shape[1] != d:
                raise ValueError(f"the embedding for {tok!r} has size {embeds.shape[1]}: it was "
                                 f"made for another text encoder ({embeds.shape[1]} vs {d}, this "
                                 f"one's hidden size; SD 1.x uses 768, SD 2.x 1024)")
            groups.append(vector_names(tok, len(embeds)))
            vectors += list(embeds)
        check_new_tokens(tokenizer, groups)
        names = [name for group in groups for name in group]
        # 3. grow E_tok, then add each token and write its row (diffusers' order)
        text_encoder.resize_token_embeddings(len(tokenizer) + len(names))
        weight = text_encoder.get_input_embeddings().weight
        for name, vector in zip(names, vectors, strict=True):
            tokenizer.add_tokens(name)
            weight.data[tokenizer.convert_tokens_to_ids(name)] = vector

    def unload_textual_inversion(self, tokens=None, tokenizer=None, text_encoder=None):
        """Remove loaded tokens (all, or those named, each with its S*_1, ...; diffusers leaves
        those behind) from the tokenizer, and their rows from E_tok."""
        tokenizer, text_encoder = components(self, tokenizer, text_encoder)
        added = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if not t.special}
        wanted = set(added)
        if tokens:
            tokens = [tokens] if isinstance(tokens, str) else tokens
            ours = lambda name: any(re.fullmatch(rf"{re.escape(t)}(_\d+)?", name) for t in tokens)
            wanted = set(filter(ours, added))
            if not wanted:
                raise ValueError(f"none of {tokens} is loaded; loaded tokens: {sorted(added)}")
        if not hasattr(tokenizer, "backend_tokenizer"):
            raise NotImplementedError("unload_textual_inversion needs a fast tokenizer "
                                      "(transformers 5's CLIPTokenizer, or CLIPTokenizerFast)")
        # 1. the tokenizer, as diffusers: its Rust backend rebuilt without them (the remaining
        # added tokens are renumbered in order after the base vocabulary)
        from tokenizers import Tokenizer  # transformers' own dependency

        state = json.loads(tokenizer.backend_tokenizer.to_str())
        state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] not in wanted]
        tokenizer._tokenizer = Tokenizer.from_str(json.dumps(state))
        # 2. E_tok without their rows, the others in order
        removed = {added[n] for n in wanted}
        weight = text_encoder.get_input_embeddings().weight
        keep = [i for i in range(weight.shape[0]) if i not in removed]
        kept = nn.Embedding.from_pretrained(weight.detach()[keep], freeze=not weight.requires_grad)
        text_encoder.set_input_embeddings(kept)


def components(pipe, tokenizer, text_encoder) -> tuple:
    tokenizer = tokenizer or getattr(pipe, "tokenizer", None)
    text_encoder = text_encoder or getattr(pipe, "text_encoder", None)
    if tokenizer is None or text_encoder is None:
        raise ValueError("textual inversion needs a tokenizer and a text encoder: the pipeline's "
                         "(self.tokenizer, self.text_encoder) or tokenizer=..., text_encoder=...")
    return tokenizer, text_encoder


def expand_multi_vector_tokens(prompt: str, tokenizer) -> str:
    """Write each multi-vector S* in `prompt` as "S* S*_1 ... S*_{n-1}" (diffusers'
    `_maybe_convert_prompt`); an already expanded prompt stays as it is."""
    added = tokenizer.added_tokens_encoder
    for token in set(tokenizer.tokenize(prompt)):
        names = [token] if token in added else []
        while names and f"{token}_{len(names)}" in added:
            names.append(f"{token}_{len(names)}")
        if len(names) > 1:
            expanded = " ".join(names)
            pattern = rf"{re.escape(expanded)}|{re.escape(token)}(?!_\d)"
            prompt = re.sub(pattern, lambda m, e=expanded: e, prompt)  # e: taken literally
    return prompt


def vector_names(token: str, n: int) -> list:
    """The n tokens of an n-vector embedding: S*, S*_1, ..., S*_{n-1}."""
    return [token] + [f"{token}_{i}" for i in range(1, n)]

