"""Learning a textual inversion (Gal et al. 2022, eq. 2), as diffusers' training script does it.

    ids = add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "<cat-toy>", "toy")
    ... train E_tok with the diffusion loss; after each step:
    restore_other_embeddings(pipe.text_encoder, orig, ids)      # only v* moves
    save_textual_inversion("out/", "<cat-toy>", learned_embeds(pipe.text_encoder, ids))

The notation (S*, v*, E_tok) is in `loader.py`. Reference: diffusers
examples/textual_inversion/textual_inversion.py (its placeholder-token set-up and save_progress).
"""

from pathlib import Path

import torch

from ddlearn.models.weights import save_weights
from ddlearn.textual_inversion.files import WEIGHTS_NAME, check_new_tokens
from ddlearn.textual_inversion.loader import vector_names


def add_placeholder_token(tokenizer, text_encoder, token: str, initializer_token=None,
                          num_vectors: int = 1) -> list:
    """Add S* (and S*_1, ... for num_vectors > 1), grow E_tok, start each new row at the
    initializer word's embedding (None: transformers' mean init). Returns the new token ids."""
    if num_vectors < 1:
        raise ValueError(f"num_vectors must be 1 or more, not {num_vectors}")
    names = vector_names(token, num_vectors)
    check_new_tokens(tokenizer, [names])
    if initializer_token is not None:
        init_ids = tokenizer.encode(initializer_token, add_special_tokens=False)
        if len(init_ids) != 1:
            raise ValueError(f"initializer_token {initializer_token!r} is {len(init_ids)} tokens "
                             f"{tokenizer.convert_ids_to_tokens(init_ids)}; pick a word the "
                             f"tokenizer keeps whole (one token)")
    tokenizer.add_tokens(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    text_encoder.resize_token_embeddings(len(tokenizer))
    if initializer_token is not None:
        weight = text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            weight[ids] = weight[init_ids[0]].clone()  # (d,) broadcast to (n, d)
    return ids


def restore_other_embeddings(text_encoder, orig: torch.Tensor, trainable_ids):
    """After each optimizer step, put back every row of E_tok but the trainable ones (the
    caption's own words get gradients too, and AdamW's weight decay moves every row)."""
    weight = text_encoder.get_input_embeddings().weight
    frozen = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    frozen[list(trainable_ids)] = False
    with torch.no_grad():
        weight[frozen] = orig.to(weight.device, weight.dtype)[frozen]


def learned_embeds(text_encoder, token_ids) -> torch.Tensor:
    """The rows v* of `token_ids`, (n, d), detached."""
    return text_encoder.get_input_embeddings().weight[list(token_ids)].detach().clone()


def save_textual_inversion(save_path_or_dir, token: str, embeds: torch.Tensor) -> Path:
    """Write {token: (n, d)} with metadata {"format": "pt"}, as diffusers' `save_progress`, to a
    .safetensors path or to <folder>/learned_embeds.safetensors; atomically."""
    path = Path(save_path_or_dir)
    if path.suffix in (".bin", ".pt"):
        raise ValueError(f"{path.name}: ddlearn writes safetensors only (a pickle can run code "
                         f"when loaded); name the file {path.stem}.safetensors")
    if path.suffix != ".safetensors":
        path = path / WEIGHTS_NAME
    embeds = embeds.detach().reshape(-1, embeds.shape[-1])  # always (n, d), as the script writes
    return save_weights(path, {token: embeds}, {"format": "pt"})
